//! Choosing an upstream among the healthy ones: round robin, or a rendezvous (highest random
//! weight) hash of the caller's key, so a user sticks to one upstream and, when it is taken
//! out, only that upstream's users move (to their next-highest weight).
//!
//! The hash is FNV-1a with a 64-bit finalizer, written here so every node of a cluster (and
//! every build) sends a user to the same upstream.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    UserHash,
}

/// The next healthy upstream after the shared position `next` (`None`: none is healthy).
pub fn round_robin(next: &AtomicUsize, healthy: &[bool]) -> Option<usize> {
    let n = healthy.len();
    if n == 0 {
        return None;
    }
    let start = next.fetch_add(1, Ordering::Relaxed);
    (0..n).map(|k| (start + k) % n).find(|&i| healthy[i])
}

/// The healthy upstream (by label) with the highest weight for `key`.
pub fn rendezvous<'a>(key: &[u8], labels: impl Iterator<Item = &'a str>, healthy: &[bool]) -> Option<usize> {
    let seed = fnv1a(key, FNV_OFFSET);
    labels
        .enumerate()
        .filter(|(i, _)| healthy.get(*i).copied().unwrap_or(false))
        .max_by_key(|(_, label)| mix(fnv1a(label.as_bytes(), seed)))
        .map(|(i, _)| i)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// splitmix64's finalizer: FNV alone spreads short keys poorly in the high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAMS: [&str; 3] = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"];

    #[test]
    fn round_robin_skips_unhealthy_and_gives_none_when_all_are_out() {
        let next = AtomicUsize::new(0);
        let picks: Vec<_> = (0..6).map(|_| round_robin(&next, &[true, true, true]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4).map(|_| round_robin(&next, &[true, false, true]).unwrap()).collect();
        assert!(picks.iter().all(|&i| i != 1), "{picks:?}");
        assert!(picks.contains(&0) && picks.contains(&2));
        assert_eq!(round_robin(&next, &[false, false]), None);
        assert_eq!(round_robin(&next, &[]), None);
    }

    #[test]
    fn rendezvous_is_sticky_spread_and_moves_only_the_failed_upstreams_users() {
        let all = [true; 3];
        let mut counts = [0usize; 3];
        for u in 0..3000 {
            let key = format!("user-{u}");
            let first = rendezvous(key.as_bytes(), UPSTREAMS.into_iter(), &all).unwrap();
            assert_eq!(rendezvous(key.as_bytes(), UPSTREAMS.into_iter(), &all), Some(first), "sticky");
            counts[first] += 1;
            // Upstream 1 taken out: its users move, nobody else does.
            let without = rendezvous(key.as_bytes(), UPSTREAMS.into_iter(), &[true, false, true]).unwrap();
            if first == 1 {
                assert_ne!(without, 1);
            } else {
                assert_eq!(without, first, "{key} moved although its upstream is healthy");
            }
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "uneven spread {counts:?}");
        assert_eq!(rendezvous(b"x", UPSTREAMS.into_iter(), &[false; 3]), None);
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // FNV-1a test vectors: a changed function would move every user after an upgrade.
        assert_eq!(fnv1a(b"", FNV_OFFSET), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar", FNV_OFFSET), 0x8594_4171_f739_67e8);
    }
}
