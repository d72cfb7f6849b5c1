//! The broker: what makes a cluster. Publishing into channel streams (history with offset and
//! epoch), node interest in channels, and join/leave events. [`MemoryBroker`] is the
//! single-node engine; Redis and NATS brokers implement the same trait in `herald-cluster`.
//!
//! Every method returns a boxed future so that engines doing network I/O fit the same trait.
//! The memory engine's futures are always ready.
//!
//! Ordering contract: a broker delivers publications of one channel to the
//! [`BrokerHandler`] in offset order. The memory engine goes further: it appends to history and
//! calls the handler under the same per-channel lock, so a history read never sees a
//! publication that the handler has not been given yet.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use herald_proto::{ClientInfo, Publication, StreamPosition};
use rand::Rng;

use crate::clock::Clock;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broker failure (network, engine). Clients see it as error 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError(pub String);

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broker error: {}", self.0)
    }
}

impl std::error::Error for BrokerError {}

/// How to store a publication.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Publications to keep (0: no history).
    pub history_size: usize,
    pub history_ttl: Duration,
    pub history_meta_ttl: Duration,
    /// Dedupe key: a second publish with the same key within the window is not delivered and
    /// returns the first one's position.
    pub idempotency_key: Option<String>,
    /// Do not deliver to this client (Herald's `exclude_client`).
    pub exclude_client: Option<uuid::Uuid>,
}

/// The result of a publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PublishOutcome {
    /// Stream position of the publication when history is on.
    pub position: Option<StreamPosition>,
    /// True when an idempotency key matched an earlier publish (nothing was delivered).
    pub suppressed: bool,
}

/// A history query.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub since: Option<StreamPosition>,
    /// Maximum publications: 0 returns only the stream position, negative means all.
    pub limit: i64,
    pub reverse: bool,
    /// Meta TTL of the stream (kept alive by reads).
    pub meta_ttl: Duration,
}

/// Publications plus the stream top.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistorySlice {
    pub publications: Vec<Publication>,
    pub top: StreamPosition,
}

/// Receives what the broker delivers to this node.
pub trait BrokerHandler: Send + Sync {
    fn handle_publication(&self, channel: &str, publication: &Publication, exclude_client: Option<uuid::Uuid>);
    fn handle_join(&self, channel: &str, info: &ClientInfo);
    fn handle_leave(&self, channel: &str, info: &ClientInfo);
}

/// PUB/SUB between nodes plus channel streams.
pub trait Broker: Send + Sync + 'static {
    /// Registers the node's handler (called once at start).
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>);
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>>;
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// This node has a first local subscriber of `channel`.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// This node's last local subscriber of `channel` left.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn history<'a>(&'a self, channel: &'a str, query: HistoryQuery)
    -> BoxFuture<'a, Result<HistorySlice, BrokerError>>;
    /// Drops the publications of a stream, keeping its position.
    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Periodic housekeeping (expiry); `now_ms` is Unix milliseconds.
    fn housekeep(&self, _now_ms: i64) {}
}

/// Presence storage.
pub trait PresenceManager: Send + Sync + 'static {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>>;
    /// (clients, distinct users).
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>>;
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

const SHARDS: usize = 64;

fn shard_of<K: Hash + ?Sized>(hasher: &std::collections::hash_map::RandomState, key: &K) -> usize {
    (hasher.hash_one(key) as usize) % SHARDS
}

/// A 4-letter random epoch, like the Go memory engine's.
fn new_epoch() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..4).map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char).collect()
}

/// One channel stream: the latest publications plus the position.
#[derive(Debug)]
struct Stream {
    epoch: String,
    top: u64,
    items: VecDeque<Publication>,
    /// When the items are dropped (history TTL after the last publish), Unix ms.
    items_expire_at: i64,
    /// When the whole stream (and so its epoch) is dropped, Unix ms.
    remove_at: i64,
}

impl Stream {
    fn new(now: i64, meta_ttl: Duration) -> Self {
        Stream { epoch: new_epoch(), top: 0, items: VecDeque::new(), items_expire_at: 0, remove_at: now + ms(meta_ttl) }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition { offset: self.top, epoch: self.epoch.clone() }
    }

    fn read(&self, q: &HistoryQuery) -> Vec<Publication> {
        let limit = if q.limit < 0 { usize::MAX } else { q.limit as usize };
        if limit == 0 || self.items.is_empty() {
            return Vec::new();
        }
        let first = self.items.front().map(|p| p.offset).unwrap_or(0);
        match (&q.since, q.reverse) {
            (None, false) => self.items.iter().take(limit).cloned().collect(),
            (None, true) => self.items.iter().rev().take(limit).cloned().collect(),
            (Some(since), false) => {
                if since.offset >= self.top {
                    return Vec::new();
                }
                let start = (since.offset + 1).max(first);
                let idx = (start - first) as usize;
                self.items.iter().skip(idx).take(limit).cloned().collect()
            }
            (Some(since), true) => {
                let Some(start) = since.offset.checked_sub(1) else { return Vec::new() };
                if start < first || start > self.top {
                    return Vec::new();
                }
                let idx = (start - first) as usize;
                self.items.iter().take(idx + 1).rev().take(limit).cloned().collect()
            }
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

#[derive(Debug, Default)]
struct ChannelState {
    stream: Option<Stream>,
    /// idempotency key → (position, expires at ms)
    idempotent: HashMap<String, (Option<StreamPosition>, i64)>,
}

impl ChannelState {
    /// Drops what has expired; true when nothing is left.
    fn expire(&mut self, now: i64) -> bool {
        if let Some(s) = &mut self.stream {
            if s.remove_at <= now {
                self.stream = None;
            } else if s.items_expire_at != 0 && s.items_expire_at <= now {
                s.items.clear();
                s.items_expire_at = 0;
            }
        }
        self.idempotent.retain(|_, (_, exp)| *exp > now);
        self.stream.is_none() && self.idempotent.is_empty()
    }

    fn stream_for_read(&mut self, now: i64, meta_ttl: Duration) -> &mut Stream {
        self.expire(now);
        let s = self.stream.get_or_insert_with(|| Stream::new(now, meta_ttl));
        s.remove_at = s.remove_at.max(now + ms(meta_ttl));
        s
    }
}

type ChannelMap = HashMap<String, Arc<Mutex<ChannelState>>>;

/// Single-node broker: history streams and delivery in process.
pub struct MemoryBroker {
    shards: Box<[Mutex<ChannelMap>]>,
    hasher: std::collections::hash_map::RandomState,
    handler: RwLock<Option<Weak<dyn BrokerHandler>>>,
    clock: Arc<dyn Clock>,
    idempotent_ttl: Duration,
}

impl MemoryBroker {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            handler: RwLock::new(None),
            clock,
            idempotent_ttl: Duration::from_secs(300),
        }
    }

    fn handler(&self) -> Option<Arc<dyn BrokerHandler>> {
        self.handler.read().expect("handler lock").as_ref().and_then(Weak::upgrade)
    }

    fn channel(&self, channel: &str, create: bool) -> Option<Arc<Mutex<ChannelState>>> {
        let mut shard = self.shards[shard_of(&self.hasher, channel)].lock().expect("broker shard");
        if let Some(c) = shard.get(channel) {
            return Some(c.clone());
        }
        if !create {
            return None;
        }
        let c = Arc::new(Mutex::new(ChannelState::default()));
        shard.insert(channel.to_owned(), c.clone());
        Some(c)
    }

    fn publish_sync(&self, channel: &str, mut publication: Publication, opts: &PublishOptions) -> PublishOutcome {
        let now = self.clock.now_ms();
        let history = opts.history_size > 0 && !opts.history_ttl.is_zero();
        let needs_state = history || opts.idempotency_key.is_some();
        let handler = self.handler();
        if !needs_state {
            if let Some(h) = handler {
                h.handle_publication(channel, &publication, opts.exclude_client);
            }
            return PublishOutcome::default();
        }
        let state = self.channel(channel, true).expect("created");
        let mut state = state.lock().expect("channel state");
        state.expire(now);
        if let Some(key) = &opts.idempotency_key
            && let Some((position, _)) = state.idempotent.get(key)
        {
            return PublishOutcome { position: position.clone(), suppressed: true };
        }
        let mut position = None;
        if history {
            let meta_ttl = opts.history_meta_ttl;
            let stream = state.stream.get_or_insert_with(|| Stream::new(now, meta_ttl));
            stream.top += 1;
            publication.offset = stream.top;
            if stream.top == 1 {
                publication.epoch = stream.epoch.clone();
            }
            stream.items.push_back(publication.clone());
            while stream.items.len() > opts.history_size {
                stream.items.pop_front();
            }
            stream.items_expire_at = now + ms(opts.history_ttl);
            stream.remove_at = stream.remove_at.max(now + ms(meta_ttl)).max(stream.items_expire_at);
            position = Some(stream.position());
        }
        if let Some(key) = &opts.idempotency_key {
            state.idempotent.insert(key.clone(), (position.clone(), now + ms(self.idempotent_ttl)));
        }
        // Deliver under the channel lock: history readers see only delivered publications.
        if let Some(h) = handler {
            h.handle_publication(channel, &publication, opts.exclude_client);
        }
        PublishOutcome { position, suppressed: false }
    }

    fn history_sync(&self, channel: &str, q: &HistoryQuery) -> HistorySlice {
        let now = self.clock.now_ms();
        let state = self.channel(channel, true).expect("created");
        let mut state = state.lock().expect("channel state");
        let stream = state.stream_for_read(now, q.meta_ttl);
        HistorySlice { publications: stream.read(q), top: stream.position() }
    }

    /// Channels with state (for tests and metrics).
    pub fn num_channels(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("broker shard").len()).sum()
    }
}

impl Broker for MemoryBroker {
    fn set_handler(&self, handler: Weak<dyn BrokerHandler>) {
        *self.handler.write().expect("handler lock") = Some(handler);
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        ready(Ok(self.publish_sync(channel, publication, opts)))
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(h) = self.handler() {
            h.handle_join(channel, &info);
        }
        ready(Ok(()))
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(h) = self.handler() {
            h.handle_leave(channel, &info);
        }
        ready(Ok(()))
    }

    fn subscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        ready(Ok(()))
    }

    fn unsubscribe<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        ready(Ok(()))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistorySlice, BrokerError>> {
        ready(Ok(self.history_sync(channel, &query)))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        if let Some(state) = self.channel(channel, false) {
            let mut state = state.lock().expect("channel state");
            if let Some(s) = &mut state.stream {
                s.items.clear();
                s.items_expire_at = 0;
            }
        }
        ready(Ok(()))
    }

    fn housekeep(&self, now_ms: i64) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().expect("broker shard");
            // A channel busy publishing is skipped; it is checked on its next publish anyway.
            shard.retain(|_, state| match state.try_lock() {
                Ok(mut s) => !s.expire(now_ms),
                Err(_) => true,
            });
        }
    }
}

/// channel → client id → info.
type PresenceMap = HashMap<String, HashMap<String, ClientInfo>>;

/// Single-node presence.
pub struct MemoryPresence {
    shards: Box<[Mutex<PresenceMap>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for MemoryPresence {
    fn default() -> Self {
        MemoryPresence { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: Default::default() }
    }
}

impl MemoryPresence {
    fn shard(&self, channel: &str) -> std::sync::MutexGuard<'_, PresenceMap> {
        self.shards[shard_of(&self.hasher, channel)].lock().expect("presence shard")
    }
}

impl PresenceManager for MemoryPresence {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.shard(channel).entry(channel.to_owned()).or_default().insert(info.client.clone(), info);
        ready(Ok(()))
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut shard = self.shard(channel);
        if let Some(m) = shard.get_mut(channel) {
            m.remove(client);
            if m.is_empty() {
                shard.remove(channel);
            }
        }
        ready(Ok(()))
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>> {
        ready(Ok(self.shard(channel).get(channel).cloned().unwrap_or_default()))
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>> {
        let shard = self.shard(channel);
        let stats = match shard.get(channel) {
            Some(m) => {
                let users: std::collections::HashSet<&str> = m.values().map(|i| i.user.as_str()).collect();
                (m.len() as u32, users.len() as u32)
            }
            None => (0, 0),
        };
        ready(Ok(stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn opts(size: usize) -> PublishOptions {
        PublishOptions {
            history_size: size,
            history_ttl: Duration::from_secs(60),
            history_meta_ttl: Duration::from_secs(3600),
            ..Default::default()
        }
    }

    fn publication(n: u8) -> Publication {
        Publication { data: Bytes::from(vec![b'0' + n]), ..Default::default() }
    }

    fn q(since: Option<u64>, epoch: &str, limit: i64, reverse: bool) -> HistoryQuery {
        HistoryQuery {
            since: since.map(|offset| StreamPosition { offset, epoch: epoch.into() }),
            limit,
            reverse,
            meta_ttl: Duration::from_secs(3600),
        }
    }

    fn offsets(s: &HistorySlice) -> Vec<u64> {
        s.publications.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn assigns_offsets_trims_and_reads() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let b = MemoryBroker::new(clock);
        for i in 0..5 {
            let o = b.publish("ch", publication(i), &opts(3)).now_or_never().unwrap().unwrap();
            assert_eq!(o.position.unwrap().offset, i as u64 + 1);
        }
        let all = b.history("ch", q(None, "", -1, false)).now_or_never().unwrap().unwrap();
        assert_eq!(offsets(&all), vec![3, 4, 5]);
        assert_eq!(all.top.offset, 5);
        assert_eq!(all.top.epoch.len(), 4);
        let rev = b.history("ch", q(None, "", 2, true)).now_or_never().unwrap().unwrap();
        assert_eq!(offsets(&rev), vec![5, 4]);
        let since = b.history("ch", q(Some(3), "", -1, false)).now_or_never().unwrap().unwrap();
        assert_eq!(offsets(&since), vec![4, 5]);
        // Trimmed position: reading starts at the oldest retained item (a visible gap).
        let gap = b.history("ch", q(Some(1), "", -1, false)).now_or_never().unwrap().unwrap();
        assert_eq!(offsets(&gap), vec![3, 4, 5]);
        let at_top = b.history("ch", q(Some(5), "", -1, false)).now_or_never().unwrap().unwrap();
        assert!(at_top.publications.is_empty());
        let ahead = b.history("ch", q(Some(9), "", -1, false)).now_or_never().unwrap().unwrap();
        assert!(ahead.publications.is_empty());
        let rev_since = b.history("ch", q(Some(5), "", 10, true)).now_or_never().unwrap().unwrap();
        assert_eq!(offsets(&rev_since), vec![4, 3]);
        let none = b.history("ch", q(None, "", 0, false)).now_or_never().unwrap().unwrap();
        assert!(none.publications.is_empty());
        assert_eq!(none.top.offset, 5);
    }

    #[test]
    fn first_publication_carries_epoch() {
        let b = MemoryBroker::new(Arc::new(ManualClock::new(0)));
        let _ = b.publish("ch", publication(1), &opts(10)).now_or_never();
        let h = b.history("ch", q(None, "", -1, false)).now_or_never().unwrap().unwrap();
        assert_eq!(h.publications[0].epoch, h.top.epoch);
    }

    #[test]
    fn ttl_clears_items_but_keeps_position_meta_ttl_resets_epoch() {
        let clock = Arc::new(ManualClock::new(0));
        let b = MemoryBroker::new(clock.clone());
        let _ = b.publish("ch", publication(1), &opts(10)).now_or_never();
        let _ = b.publish("ch", publication(2), &opts(10)).now_or_never();
        let epoch = b.history("ch", q(None, "", 0, false)).now_or_never().unwrap().unwrap().top.epoch;
        clock.advance(61_000);
        let h = b.history("ch", q(None, "", -1, false)).now_or_never().unwrap().unwrap();
        assert!(h.publications.is_empty());
        assert_eq!(h.top, StreamPosition { offset: 2, epoch: epoch.clone() });
        clock.advance(3_600_000 + 1);
        b.housekeep(clock.now_ms());
        let o = b.publish("ch", publication(3), &opts(10)).now_or_never().unwrap().unwrap();
        let p = o.position.unwrap();
        assert_eq!(p.offset, 1);
        assert_ne!(p.epoch, epoch);
    }

    #[test]
    fn idempotency_key_dedupes_within_window() {
        let clock = Arc::new(ManualClock::new(0));
        let b = MemoryBroker::new(clock.clone());
        let mut o = opts(10);
        o.idempotency_key = Some("k".into());
        let first = b.publish("ch", publication(1), &o).now_or_never().unwrap().unwrap();
        let second = b.publish("ch", publication(2), &o).now_or_never().unwrap().unwrap();
        assert!(second.suppressed);
        assert_eq!(first.position, second.position);
        clock.advance(301_000);
        let third = b.publish("ch", publication(3), &o).now_or_never().unwrap().unwrap();
        assert!(!third.suppressed);
        assert_eq!(third.position.unwrap().offset, 2);
    }

    #[test]
    fn remove_history_keeps_position() {
        let b = MemoryBroker::new(Arc::new(ManualClock::new(0)));
        let _ = b.publish("ch", publication(1), &opts(10)).now_or_never();
        b.remove_history("ch").now_or_never().unwrap().unwrap();
        let h = b.history("ch", q(None, "", -1, false)).now_or_never().unwrap().unwrap();
        assert!(h.publications.is_empty());
        assert_eq!(h.top.offset, 1);
    }

    #[test]
    fn presence_counts_users() {
        let p = MemoryPresence::default();
        for (c, u) in [("c1", "u1"), ("c2", "u1"), ("c3", "")] {
            let info = ClientInfo { client: c.into(), user: u.into(), ..Default::default() };
            p.add_presence("ch", info).now_or_never().unwrap().unwrap();
        }
        assert_eq!(p.presence_stats("ch").now_or_never().unwrap().unwrap(), (3, 2));
        p.remove_presence("ch", "c1").now_or_never().unwrap().unwrap();
        assert_eq!(p.presence("ch").now_or_never().unwrap().unwrap().len(), 2);
    }
}
