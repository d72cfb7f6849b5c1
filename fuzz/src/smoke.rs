//! Stable-toolchain driver for the fuzz harnesses: runs a target on its seeds, on deterministic
//! mutations of them and on random bytes. Shared with `#[path]` by the smoke tests of
//! `herald-proto`, `herald-auth` and `herald-server` (cargo-fuzz itself needs nightly).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The committed seed files of `target` (`fuzz/seeds/<target>/`, the libFuzzer seed corpus),
/// sorted by name; `crate_dir` is the smoke test's `CARGO_MANIFEST_DIR` (`crates/<name>`).
pub fn committed_seeds(crate_dir: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(crate_dir).join("../../fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a seed file").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seeds", dir.display());
    files.iter().map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))).collect()
}

/// Bytes that matter to the parsers: JSON structure, frame-length edges, token separators.
const INTERESTING: &[u8] = &[
    0x00, 0x01, 0x7E, 0x7F, 0x80, 0x81, 0xFF, b'{', b'}', b'[', b']', b'"', b'\\', b'\n', b'\r', b':', b',', b' ',
    b'.', b'=',
];

pub fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = if rng.below(2) == 0 { INTERESTING[rng.below(INTERESTING.len())] } else { rng.byte() };
            }
            2 => {
                let i = rng.below(len + 1);
                for _ in 0..1 + rng.below(4) {
                    out.insert(i, rng.byte());
                }
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = start + 1 + rng.below((len - start).min(16));
                out.drain(start..end);
            }
            4 if len > 0 => {
                let start = rng.below(len);
                let end = start + 1 + rng.below((len - start).min(32));
                let copy = out[start..end].to_vec();
                let at = rng.below(len + 1);
                out.splice(at..at, copy);
            }
            5 if len > 0 => out.truncate(rng.below(len)),
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            7 if len > 1 => {
                let (i, j) = (rng.below(len), rng.below(len));
                out.swap(i, j);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                out.extend_from_slice(other);
            }
        }
    }
    out
}

/// Runs `target` on every seed, then on `mutated` mutations and `random` random inputs.
pub fn smoke(name: &str, seed: u64, seeds: &[Vec<u8>], mutated: usize, random: usize, target: &dyn Fn(&[u8])) {
    let mut rng = Rng(seed);
    let mut inputs: Vec<Vec<u8>> = seeds.to_vec();
    for _ in 0..mutated {
        let base = &seeds[rng.below(seeds.len())];
        let mut input = mutate(&mut rng, base, seeds);
        // Sometimes stack mutations.
        if rng.below(4) == 0 {
            input = mutate(&mut rng, &input, seeds);
        }
        inputs.push(input);
    }
    for _ in 0..random {
        let len = rng.below(300);
        inputs.push((0..len).map(|_| rng.byte()).collect());
    }
    for input in &inputs {
        if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            panic!("{name}: target panicked on input {input:?}");
        }
    }
}
