//! Stable-toolchain smoke run of the `jwt` fuzz target in `/fuzz` (cargo-fuzz needs nightly).
//!
//! Feeds the shared harness (included with `#[path]`) valid claims and tokens, mutations of
//! them and random bytes, from a fixed seed so failures reproduce. A panic fails the test; the
//! failing input is printed first.

use std::panic::{AssertUnwindSafe, catch_unwind};

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/jwt.rs"]
mod harness;

use harness::{NOW, Verifiers, jwt, signed};

/// Claims that verify, as connection tokens and as subscription tokens.
const CONNECT: &[&str] = &[
    r#"{"sub":"42"}"#,
    r#"{"sub":"","exp":1900000000,"info":{"name":"A\n B"},"meta":{"k":[1,2,{"x":null}]}}"#,
    r#"{"sub":"u","expire_at":0,"b64info":"aGVsbG8=","channels":["a","b:c"]}"#,
    r#"{"sub":"u","subs":{"news":{"info":[1],"b64data":"AAEC","override":{"presence":{"value":true}}}}}"#,
    r#"{"sub":"u","aud":["x","fuzz-aud"],"iss":"fuzz-iss","nbf":1700000000,"iat":1700000000,"jti":"j"}"#,
    r#"{"sub":"u","aud":"fuzz-aud","iss":"fuzz-iss","channel":"","unknown":{"deep":[[[[]]]]}}"#,
];
const SUBSCRIBE: &[&str] = &[
    r#"{"sub":"42","channel":"news"}"#,
    r#"{"sub":"u","channel":"$private","client":"c1","data":{"a":"b"},"b64info":"eA==","exp":1900000000}"#,
    r#"{"sub":"u","channel":"x","aud":"fuzz-aud","iss":"fuzz-iss","override":{"join_leave":{"value":false}}}"#,
];
/// Claims that must be rejected.
const REJECTED: &[&str] = &[
    r#"{"sub":42}"#,
    r#"{"sub":"u","exp":1}"#,
    r#"{"sub":"u","nbf":1900000000}"#,
    r#"{"sub":"u","b64info":"not base64!"}"#,
    r#"["sub","u"]"#,
    r#"{"sub":"u"} trailing"#,
    r#"{"sub":"u","channels":"a"}"#,
];

const INTERESTING: &[u8] = &[0x00, 0x7F, 0x80, 0xFF, b'{', b'}', b'[', b']', b'"', b'\\', b'.', b'=', b'-', b'_'];

/// xorshift64*: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(3) {
        let len = out.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(len + 1);
                out.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let start = rng.below(len);
                let end = start + 1 + rng.below((len - start).min(8));
                out.drain(start..end);
            }
            4 if len > 0 => out.truncate(rng.below(len)),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                out.truncate(cut);
                out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
        }
    }
    out
}

#[test]
fn seeds_reach_the_claims_parser() {
    let v = harness::Verifiers::new();
    let plain = herald_auth::TokenVerifier::new(
        &herald_auth::TokenConfig { hmac_secret_key: harness::SECRET.into(), ..Default::default() },
        "client.token",
    )
    .unwrap();
    for claims in CONNECT {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_connect(&token, NOW).is_ok(), "connect seed rejected: {claims}");
        jwt(&v, claims.as_bytes());
    }
    for claims in SUBSCRIBE {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_subscribe(&token, NOW).is_ok(), "subscribe seed rejected: {claims}");
        jwt(&v, claims.as_bytes());
    }
    for claims in REJECTED {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_connect(&token, NOW).is_err(), "accepted: {claims}");
        assert!(plain.verify_subscribe(&token, NOW).is_err(), "accepted: {claims}");
    }
}

#[test]
fn jwt_smoke() {
    let v = Verifiers::new();
    let claims: Vec<Vec<u8>> = CONNECT.iter().chain(SUBSCRIBE).chain(REJECTED).map(|c| c.as_bytes().to_vec()).collect();
    // Whole signed tokens too, so that mutations hit the header, the dots and the signature.
    let mut seeds: Vec<Vec<u8>> = claims.iter().map(|c| signed(c).into_bytes()).collect();
    seeds.extend(claims);
    let mut rng = Rng(0x6a77_7473_6d6f_6b65);
    let mut inputs = seeds.clone();
    for _ in 0..3_000 {
        let base = &seeds[rng.below(seeds.len())];
        inputs.push(mutate(&mut rng, base, &seeds));
    }
    for _ in 0..500 {
        let len = rng.below(200);
        inputs.push((0..len).map(|_| rng.next() as u8).collect());
    }
    for input in &inputs {
        if catch_unwind(AssertUnwindSafe(|| jwt(&v, input))).is_err() {
            panic!("jwt: target panicked on input {input:?}");
        }
    }
}
