//! The single-node memory broker: channel streams (history with offset and epoch, idempotency
//! keys) in process, and delivery straight to the registered handler from the publishing task.
//!
//! Guarantees beyond the [`Broker`] contract: a publish with history or an idempotency key
//! appends to the stream and hands the publication to the handler under the same per-channel
//! lock, so publications of one channel reach the hub in offset order and a history read never
//! sees a publication not yet handed to the hub. Lock order: broker channel → hub (the handler
//! is the node's [`super::Delivery`], which takes only hub locks and never calls back here).
//! Publishes without history or key, joins and leaves are delivered without any broker lock.
//!
//! Control messages are ignored: with a single node there is no other node to tell, and the
//! sender applies its commands to its own connections itself.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use herald_proto::{ClientInfo, Publication, StreamPosition};
use rand::Rng;

use super::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ErrorKind, HistoryQuery, HistorySlice, PublishOptions,
    PublishOutcome,
};
use crate::clock::Clock;

/// An already-completed engine future (the memory engines never wait).
pub(super) fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

/// Lock shards of the memory engines' channel maps.
pub(super) const SHARDS: usize = 64;

pub(super) fn shard_of<K: Hash + ?Sized>(hasher: &std::collections::hash_map::RandomState, key: &K) -> usize {
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
    /// Set once at registration: each publish reads it with one atomic load, no lock or
    /// reference count.
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    clock: Arc<dyn Clock>,
    idempotent_ttl: Duration,
}

impl MemoryBroker {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            handler: OnceLock::new(),
            clock,
            idempotent_ttl: Duration::from_secs(300),
        }
    }

    fn handler(&self) -> Option<&dyn BrokerHandler> {
        self.handler.get().map(|h| &**h)
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
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError> {
        self.handler.set(handler).map_err(|_| {
            BrokerError::new(ErrorKind::Rejected, "memory broker handler registration (already serving a node)")
        })
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

    fn publish_control<'a>(
        &'a self,
        _node: Option<&'a str>,
        _payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
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

    fn healthy(&self) -> bool {
        true
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

    /// Records what the broker hands to the node.
    #[derive(Default)]
    struct Recorder {
        seen: Mutex<Vec<String>>,
    }

    impl BrokerHandler for Recorder {
        fn handle_publication(&self, channel: &str, p: &Publication, _exclude: Option<uuid::Uuid>) {
            self.seen.lock().unwrap().push(format!("pub {channel} {} {}", p.offset, p.epoch.len()));
        }
        fn handle_join(&self, channel: &str, info: &ClientInfo) {
            self.seen.lock().unwrap().push(format!("join {channel} {}", info.client));
        }
        fn handle_leave(&self, channel: &str, info: &ClientInfo) {
            self.seen.lock().unwrap().push(format!("leave {channel} {}", info.client));
        }
        fn handle_control(&self, _payload: Bytes) {
            self.seen.lock().unwrap().push("control".into());
        }
    }

    #[test]
    fn delivers_to_the_registered_handler_in_offset_order_and_ignores_control() {
        let b = MemoryBroker::new(Arc::new(ManualClock::new(0)));
        let rec = Arc::new(Recorder::default());
        b.set_handler(rec.clone()).unwrap();
        let mut keyed = opts(10);
        keyed.idempotency_key = Some("k".into());
        let _ = b.publish("ch", publication(1), &keyed).now_or_never();
        let _ = b.publish("ch", publication(2), &keyed).now_or_never();
        let _ = b.publish("ch", publication(3), &opts(10)).now_or_never();
        let _ = b.publish("plain", publication(4), &opts(0)).now_or_never();
        let info = ClientInfo { client: "c1".into(), ..Default::default() };
        b.publish_join("ch", info.clone()).now_or_never().unwrap().unwrap();
        b.publish_leave("ch", info).now_or_never().unwrap().unwrap();
        b.publish_control(None, Bytes::from_static(b"cmd")).now_or_never().unwrap().unwrap();
        // The suppressed duplicate is not delivered; only the first of a stream carries the epoch.
        assert_eq!(
            *rec.seen.lock().unwrap(),
            ["pub ch 1 4", "pub ch 2 0", "pub plain 0 0", "join ch c1", "leave ch c1"]
        );
        assert!(b.healthy());
    }

    #[test]
    fn serves_one_node_only() {
        let b = MemoryBroker::new(Arc::new(ManualClock::new(0)));
        b.set_handler(Arc::new(Recorder::default())).unwrap();
        let err = b.set_handler(Arc::new(Recorder::default())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
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
}
