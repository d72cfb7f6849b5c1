//! Per-address token buckets with a bounded table (`limits.address_table_size` entries).
//!
//! An attacker with many addresses must not grow memory without bound: when the table is full,
//! buckets that are full again (their address has been quiet for a whole burst) are dropped,
//! at most once a second; if it is still full, every address not in the table shares one
//! overflow bucket of the same rate, so new addresses are limited together rather than not at
//! all (known addresses keep their own buckets). Memory: about 48 bytes per entry.
//!
//! The table is generic over its key: gateway routes keep one per route keyed by user id too.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use herald_hub::limits::{Rate, TokenBucket};

pub struct AddressBuckets<K = IpAddr> {
    map: HashMap<K, TokenBucket>,
    max: usize,
    overflow: Option<TokenBucket>,
    last_sweep_ms: i64,
    /// The gauge of entries and the counter of overflows.
    metrics: (&'static str, &'static str),
}

impl<K: Hash + Eq> AddressBuckets<K> {
    pub fn new(max: usize) -> Self {
        Self::with_metrics(max, ("herald_limit_address_table_entries", "herald_limit_address_table_overflows_total"))
    }

    /// A table reporting under other metric names: (entries gauge, overflows counter).
    pub fn with_metrics(max: usize, metrics: (&'static str, &'static str)) -> Self {
        AddressBuckets { map: HashMap::new(), max: max.max(1), overflow: None, last_sweep_ms: i64::MIN, metrics }
    }

    /// Addresses with a bucket of their own.
    pub fn tracked(&self) -> usize {
        self.map.len()
    }

    /// Takes a token for `ip` (the key) at `now_ms`: `false` when it is over `rate`.
    pub fn take(&mut self, rate: &Rate, ip: K, now_ms: i64) -> bool {
        if !rate.enabled() {
            return true;
        }
        if let Some(bucket) = self.map.get_mut(&ip) {
            return bucket.take(rate, now_ms);
        }
        if self.map.len() >= self.max && now_ms.saturating_sub(self.last_sweep_ms) >= 1000 {
            self.last_sweep_ms = now_ms;
            self.map.retain(|_, b| !b.is_full(rate, now_ms));
            metrics::gauge!(self.metrics.0).set(self.map.len() as f64);
        }
        if self.map.len() < self.max {
            let mut bucket = TokenBucket::full(rate, now_ms);
            let ok = bucket.take(rate, now_ms);
            self.map.insert(ip, bucket);
            metrics::gauge!(self.metrics.0).set(self.map.len() as f64);
            return ok;
        }
        metrics::counter!(self.metrics.1).increment(1);
        self.overflow.get_or_insert_with(|| TokenBucket::full(rate, now_ms)).take(rate, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn each_address_has_its_own_rate() {
        let rate = Rate { rate: 1, burst: 2 };
        let mut t = AddressBuckets::new(10);
        assert!(t.take(&rate, ip(1), 0) && t.take(&rate, ip(1), 0));
        assert!(!t.take(&rate, ip(1), 0), "third from the same address");
        assert!(t.take(&rate, ip(2), 0), "another address is not affected");
        assert!(t.take(&rate, ip(1), 1000));
    }

    #[test]
    fn the_table_is_bounded_and_overflow_is_shared() {
        let rate = Rate { rate: 1, burst: 1 };
        let mut t = AddressBuckets::new(3);
        for n in 0..3 {
            assert!(t.take(&rate, ip(n), 0));
        }
        // Full, nobody quiet yet: the new addresses share one bucket.
        assert!(t.take(&rate, ip(100), 0));
        assert!(!t.take(&rate, ip(101), 0), "overflow bucket used up");
        assert_eq!(t.tracked(), 3);
        for n in 200..10_000 {
            t.take(&rate, ip(n), 500);
        }
        assert_eq!(t.tracked(), 3, "never more than the bound");
        // A second later the old buckets are full again and are swept for newcomers.
        assert!(t.take(&rate, ip(50), 1000));
        assert!(!t.take(&rate, ip(50), 1000), "it has its own bucket now");
        assert_eq!(t.tracked(), 1);
    }
}
