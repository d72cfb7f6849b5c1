//! Token buckets: the sans-IO rate limiter every Herald limit uses (client commands here; new
//! connections and the server API in `herald-server`). Time is passed in (milliseconds from any
//! monotonic or wall clock), so tests drive it by hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

/// A rate: `rate` tokens per second, at most `burst` saved up. `rate == 0` means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rate {
    pub rate: u32,
    pub burst: u32,
}

impl Rate {
    pub fn enabled(&self) -> bool {
        self.rate > 0
    }

    /// The bucket size: `burst`, or one second of `rate` when `burst` is 0.
    fn capacity_milli(&self) -> u64 {
        u64::from(if self.burst == 0 { self.rate } else { self.burst }) * 1000
    }
}

/// One bucket. Tokens are counted in thousandths so refilling needs no floating point: `rate`
/// tokens per second is `rate` thousandths per millisecond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    milli: u64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: &Rate, now_ms: i64) -> Self {
        TokenBucket { milli: rate.capacity_milli(), last_ms: now_ms }
    }

    fn refill(&mut self, rate: &Rate, now_ms: i64) {
        // A clock that goes back (wall time) refills nothing rather than draining.
        let elapsed = now_ms.saturating_sub(self.last_ms).max(0) as u64;
        self.last_ms = self.last_ms.max(now_ms);
        let cap = rate.capacity_milli();
        self.milli = self.milli.saturating_add(elapsed.saturating_mul(u64::from(rate.rate))).min(cap);
    }

    /// Takes one token at `now_ms`: `false` when the bucket is empty (the request is over the
    /// rate). Always `true` for a disabled rate.
    pub fn take(&mut self, rate: &Rate, now_ms: i64) -> bool {
        if !rate.enabled() {
            return true;
        }
        self.refill(rate, now_ms);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// Whether the bucket is full again at `now_ms`: it then remembers nothing an equal fresh
    /// bucket would not, so a bounded table may drop it.
    pub fn is_full(&mut self, rate: &Rate, now_ms: i64) -> bool {
        self.refill(rate, now_ms);
        self.milli >= rate.capacity_milli()
    }
}

/// `client.command_rate_limit`: commands per second per connection (Herald's own option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommandRateLimit {
    /// Commands per second (0: no limit). Pongs are not counted.
    pub rate: u32,
    /// Commands a connection may send at once (0: one second of `rate`).
    pub burst: u32,
    /// Refusals in a row (error 111 each) after which the connection is closed with 3013.
    pub disconnect_after: u32,
    /// Commands per second of all the connections of one user on this node (0: no limit;
    /// anonymous connections are not counted per user).
    pub user_rate: u32,
    /// Commands one user may send at once (0: one second of `user_rate`).
    pub user_burst: u32,
}

impl Default for CommandRateLimit {
    fn default() -> Self {
        CommandRateLimit { rate: 0, burst: 0, disconnect_after: 20, user_rate: 0, user_burst: 0 }
    }
}

impl CommandRateLimit {
    pub fn rate(&self) -> Rate {
        Rate { rate: self.rate, burst: self.burst }
    }

    pub fn user_rate(&self) -> Rate {
        Rate { rate: self.user_rate, burst: self.user_burst }
    }

    /// Whether commands are counted at all.
    pub fn enabled(&self) -> bool {
        self.rate > 0 || self.user_rate > 0
    }
}

/// A bucket shared by every connection of a user.
pub type SharedBucket = Arc<Mutex<TokenBucket>>;

/// The per-user buckets of a node. An entry lives while a connection of its user holds it
/// (a `Weak` here), so the table is bounded by the users connected; dead entries are swept when
/// the table has doubled since the last sweep.
#[derive(Debug, Default)]
pub struct UserBuckets {
    map: Mutex<(UserTable, usize)>,
}

/// Users to their buckets (held by their connections), and the size after the last sweep.
type UserTable = HashMap<Arc<str>, Weak<Mutex<TokenBucket>>>;

impl UserBuckets {
    /// The bucket of `user`, made full at `now_ms` if no connection of theirs holds one.
    pub fn get(&self, user: &Arc<str>, rate: &Rate, now_ms: i64) -> SharedBucket {
        let mut guard = self.map.lock().expect("user buckets");
        let (map, swept_at) = &mut *guard;
        if let Some(bucket) = map.get(user).and_then(Weak::upgrade) {
            return bucket;
        }
        if map.len() >= (*swept_at * 2).max(1024) {
            map.retain(|_, w| w.strong_count() > 0);
            *swept_at = map.len();
        }
        let bucket = Arc::new(Mutex::new(TokenBucket::full(rate, now_ms)));
        map.insert(user.clone(), Arc::downgrade(&bucket));
        bucket
    }

    /// Users with an entry (live or not yet swept).
    pub fn entries(&self) -> usize {
        self.map.lock().expect("user buckets").0.len()
    }
}

/// A connection's command budget: its own bucket, its user's, and the refusals in a row.
#[derive(Debug, Clone)]
pub struct CommandBudget {
    bucket: TokenBucket,
    user: Option<SharedBucket>,
    refused: u32,
}

/// What a command over the rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverRate {
    /// Error 111 "too many requests".
    Refuse,
    /// Close with 3013 "too many requests": it went on after `disconnect_after` refusals.
    Disconnect,
}

impl CommandBudget {
    pub fn new(limit: &CommandRateLimit, now_ms: i64) -> Self {
        CommandBudget { bucket: TokenBucket::full(&limit.rate(), now_ms), user: None, refused: 0 }
    }

    /// A budget that also draws on its user's shared bucket.
    pub fn with_user(limit: &CommandRateLimit, now_ms: i64, user: SharedBucket) -> Self {
        CommandBudget { user: Some(user), ..CommandBudget::new(limit, now_ms) }
    }

    fn take(&mut self, limit: &CommandRateLimit, now_ms: i64) -> bool {
        if !self.bucket.take(&limit.rate(), now_ms) {
            return false;
        }
        match &self.user {
            Some(user) => user.lock().expect("user bucket").take(&limit.user_rate(), now_ms),
            None => true,
        }
    }

    /// One command at `now_ms`: `Ok` to run it, or what to answer.
    pub fn check(&mut self, limit: &CommandRateLimit, now_ms: i64) -> Result<(), OverRate> {
        if self.take(limit, now_ms) {
            self.refused = 0;
            return Ok(());
        }
        self.refused = self.refused.saturating_add(1);
        if limit.disconnect_after > 0 && self.refused > limit.disconnect_after {
            Err(OverRate::Disconnect)
        } else {
            Err(OverRate::Refuse)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_of_one_user_share_the_user_rate() {
        let limit = CommandRateLimit { user_rate: 1, user_burst: 3, ..Default::default() };
        let users = UserBuckets::default();
        let ann: Arc<str> = Arc::from("ann");
        let mut a = CommandBudget::with_user(&limit, 0, users.get(&ann, &limit.user_rate(), 0));
        let mut b = CommandBudget::with_user(&limit, 0, users.get(&ann, &limit.user_rate(), 0));
        let bob: Arc<str> = Arc::from("bob");
        let mut c = CommandBudget::with_user(&limit, 0, users.get(&bob, &limit.user_rate(), 0));
        assert_eq!(a.check(&limit, 0), Ok(()));
        assert_eq!(b.check(&limit, 0), Ok(()));
        assert_eq!(a.check(&limit, 0), Ok(()));
        assert_eq!(b.check(&limit, 0), Err(OverRate::Refuse), "ann's fourth command, on either connection");
        assert_eq!(c.check(&limit, 0), Ok(()), "bob has his own bucket");
        assert_eq!(b.check(&limit, 1000), Ok(()));
        // Entries go with their user's last connection.
        drop((a, b, c));
        for n in 0..3000 {
            let user: Arc<str> = Arc::from(format!("u{n}"));
            drop(users.get(&user, &limit.user_rate(), 0));
        }
        assert!(users.entries() <= 2048, "{} entries", users.entries());
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rate = Rate { rate: 10, burst: 3 };
        let mut b = TokenBucket::full(&rate, 0);
        assert!((0..3).all(|_| b.take(&rate, 0)), "the burst at once");
        assert!(!b.take(&rate, 0), "the fourth at the same instant is over");
        assert!(!b.take(&rate, 99), "a token takes 100 ms at 10/s");
        assert!(b.take(&rate, 100));
        assert!(!b.take(&rate, 100));
        // A long pause refills to the burst, no more.
        assert!(b.is_full(&rate, 10_000));
        assert_eq!((0..10).filter(|_| b.take(&rate, 10_000)).count(), 3);
    }

    #[test]
    fn fractional_rates_and_a_clock_going_back() {
        let rate = Rate { rate: 3, burst: 1 };
        let mut b = TokenBucket::full(&rate, 1000);
        assert!(b.take(&rate, 1000));
        assert!(!b.take(&rate, 1333), "999 thousandths after 333 ms at 3/s");
        assert!(b.take(&rate, 1334));
        assert!(!b.take(&rate, 500), "time going back refills nothing");
        assert!(!b.take(&rate, 1667), "the bucket holds at most one token");
        assert!(b.take(&rate, 1668));
    }

    #[test]
    fn zero_burst_means_one_second_and_zero_rate_means_no_limit() {
        let rate = Rate { rate: 5, burst: 0 };
        let mut b = TokenBucket::full(&rate, 0);
        assert_eq!((0..10).filter(|_| b.take(&rate, 0)).count(), 5);
        let off = Rate::default();
        let mut b = TokenBucket::full(&off, 0);
        assert!((0..10_000).all(|_| b.take(&off, 0)));
    }

    #[test]
    fn commands_are_refused_then_the_connection_is_closed() {
        let limit = CommandRateLimit { rate: 1, burst: 2, disconnect_after: 2, ..Default::default() };
        let mut budget = CommandBudget::new(&limit, 0);
        assert_eq!(budget.check(&limit, 0), Ok(()));
        assert_eq!(budget.check(&limit, 0), Ok(()));
        assert_eq!(budget.check(&limit, 0), Err(OverRate::Refuse));
        assert_eq!(budget.check(&limit, 10), Err(OverRate::Refuse));
        assert_eq!(budget.check(&limit, 20), Err(OverRate::Disconnect));
        // A command within the rate resets the count of refusals.
        let mut budget = CommandBudget::new(&limit, 0);
        for _ in 0..2 {
            budget.check(&limit, 0).unwrap();
        }
        assert_eq!(budget.check(&limit, 0), Err(OverRate::Refuse));
        assert_eq!(budget.check(&limit, 1000), Ok(()));
        assert_eq!(budget.check(&limit, 1000), Err(OverRate::Refuse));
        assert_eq!(budget.check(&limit, 1000), Err(OverRate::Refuse));
        assert_eq!(budget.check(&limit, 1000), Err(OverRate::Disconnect));
    }
}

/// What one command pays for the limit, measured (`cargo test -p herald-hub --release --lib
/// cost_of_a_check -- --ignored --nocapture`); figures in docs/architecture.md.
#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    #[ignore = "a measurement, run in release"]
    fn cost_of_a_check() {
        let limit = CommandRateLimit { rate: 1_000_000, burst: 1_000_000, ..Default::default() };
        let mut budget = CommandBudget::new(&limit, 0);
        let n = 50_000_000i64;
        let start = std::time::Instant::now();
        let mut ok = 0u64;
        for i in 0..n {
            ok += u64::from(std::hint::black_box(&mut budget).check(&limit, i / 1000).is_ok());
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        println!("CommandBudget::check: {per:.2} ns per command ({ok} allowed)");
        assert_eq!(ok, n as u64);
        // With a user bucket too (an uncontended mutex).
        let limit = CommandRateLimit { user_rate: 1_000_000, user_burst: 1_000_000, ..limit };
        let users = UserBuckets::default();
        let mut budget = CommandBudget::with_user(&limit, 0, users.get(&Arc::from("u"), &limit.user_rate(), 0));
        let start = std::time::Instant::now();
        let mut ok = 0u64;
        for i in 0..n {
            ok += u64::from(std::hint::black_box(&mut budget).check(&limit, i / 1000).is_ok());
        }
        let per = start.elapsed().as_nanos() as f64 / n as f64;
        println!("CommandBudget::check with a user bucket: {per:.2} ns per command ({ok} allowed)");
        assert_eq!(ok, n as u64);
    }
}
