//! Channel streams in JetStream: one shared stream over `<prefix>.history.>`, one subject per
//! channel, and per-channel offsets kept contiguous with optimistic concurrency.
//!
//! Why one stream and not one per channel: a JetStream stream is a server object (a Raft group
//! in a clustered server) and applications have many short-lived channels (one per user or per
//! document). One stream with a per-subject limit costs the server one object whatever the
//! number of channels. Its sequence is shared by all channels, so each record carries the
//! channel's own offset and epoch, and a publish is accepted only if the channel's last record
//! is still the one the publisher read (`Nats-Expected-Last-Subject-Sequence`). Within a node,
//! writes to one channel take turns ([`crate::queue`]), so only another node can win the race;
//! the loser reads again and retries after a short jittered pause, a bounded number of times
//! (`append_attempts`). Each record also carries the stream sequence of the channel's previous
//! record, so a read walks back from the top exactly as far as it needs.
//!
//! Bounds: the stream keeps at most `history_max_per_channel` records per channel and drops
//! records older than `history_max_age` (storage bounds, from the largest namespace). A
//! channel's own `history_size` and `history_ttl` travel in each record and are applied on
//! read, so namespaces with different bounds share the stream. Idempotency keys use
//! JetStream's duplicate detection (`Nats-Msg-Id`, window `idempotent_window`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use herald_hub::Clock;
use herald_hub::broker::{BrokerError, ErrorKind, HistoryQuery, HistorySlice, PublishOptions, PublishOutcome};
use herald_proto::{Publication, StreamPosition};
use parking_lot::Mutex;
use prost::Message;
use rand::Rng;

use crate::queue::{AppendQueues, QueueFull, Turn};
use crate::subject::{Names, subject_token};
use crate::wire::Record;
use crate::{NatsConfig, metrics};

/// Cached channel tops kept before the cache is cleared (it only saves a read per publish).
const TOP_CACHE_MAX: usize = 16_384;

/// A record and its stream sequence.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) record: Record,
}

/// The history stream of one node's connection.
pub(crate) struct History {
    js: jetstream::Context,
    stream: stream::Stream<()>,
    names: Names,
    clock: Arc<dyn Clock>,
    /// channel → last record this node wrote: saves the read before the next append; a stale
    /// entry costs one rejected publish.
    tops: Mutex<HashMap<String, Stored>>,
    /// Per-channel turns of the writes of this node.
    queues: AppendQueues,
    /// Tries of a write that other nodes keep beating (at least 1).
    attempts: usize,
}

/// The pause before retry `retry` (1-based) of a write another node beat: 1 ms doubling up to
/// 32 ms, plus up to as much again at random so that the losers do not collide again in step.
pub(crate) fn conflict_delay(retry: usize) -> Duration {
    let base = 1u64 << retry.saturating_sub(1).min(5);
    Duration::from_micros(rand::rng().random_range(base * 1000..=base * 2000))
}

/// A 4-letter random epoch, like the memory engine's.
fn new_epoch() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..4).map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char).collect()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(crate) fn error(
    kind: ErrorKind,
    what: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> BrokerError {
    metrics::error(what);
    BrokerError::new(kind, what).with_source(e)
}

impl History {
    /// Creates or updates the stream with the configured bounds.
    pub(crate) async fn open(
        js: jetstream::Context,
        names: Names,
        cfg: &NatsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<History, BrokerError> {
        let config = stream::Config {
            name: names.history_stream(),
            subjects: vec![names.history_wildcard()],
            max_messages_per_subject: cfg.history_max_per_channel,
            max_age: cfg.history_max_age,
            duplicate_window: cfg.idempotent_window.min(cfg.history_max_age),
            storage: if cfg.history_in_memory { stream::StorageType::Memory } else { stream::StorageType::File },
            num_replicas: cfg.replicas,
            ..Default::default()
        };
        js.create_or_update_stream(config).await.map_err(|e| {
            error(
                ErrorKind::Unavailable,
                "nats history stream setup (the NATS server must run JetStream: nats-server -js)",
                e,
            )
        })?;
        let stream = js
            .get_stream_no_info(names.history_stream())
            .await
            .map_err(|e| error(ErrorKind::Unavailable, "nats history stream setup", e))?;
        Ok(History {
            js,
            stream,
            names,
            clock,
            tops: Mutex::new(HashMap::new()),
            queues: AppendQueues::new(cfg.append_queue_per_channel, cfg.append_queue_total),
            attempts: cfg.append_attempts.max(1),
        })
    }

    /// Waits for this node's turn to write to the channel's subject; refused at once when too
    /// many publications wait already.
    pub(crate) async fn turn(&self, channel: &str) -> Result<Turn, BrokerError> {
        self.queues.turn(channel).await.map_err(|full| {
            let why = match full {
                QueueFull::Channel(n) => {
                    format!("{n} publications already wait for this channel (broker.nats.append_queue_per_channel)")
                }
                QueueFull::Node(n) => {
                    format!("{n} publications already wait on this node (broker.nats.append_queue_total)")
                }
            };
            metrics::error("nats history append queue full");
            BrokerError::new(ErrorKind::Rejected, format!("nats history append to {channel:?}: {why}"))
        })
    }

    /// After try `tries` of a write lost to another node: a jittered pause before the next,
    /// or the error once `attempts` tries lost.
    async fn back_off(&self, tries: usize, what: &str, channel: &str) -> Result<(), BrokerError> {
        if tries >= self.attempts {
            return Err(self.gave_up(what, channel));
        }
        metrics::append_retry();
        tokio::time::sleep(conflict_delay(tries)).await;
        Ok(())
    }

    /// The error of a write that other nodes beat `attempts` times in a row.
    fn gave_up(&self, what: &str, channel: &str) -> BrokerError {
        metrics::append_gave_up();
        metrics::error("nats history append gave up");
        BrokerError::new(
            ErrorKind::Timeout,
            format!(
                "{what} to {channel:?}: other nodes took the channel's next offset {} times in a row \
                 (broker.nats.append_attempts)",
                self.attempts
            ),
        )
    }

    /// The channel's last record, if any.
    pub(crate) async fn top(&self, channel: &str) -> Result<Option<Stored>, BrokerError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self.stream.get_last_raw_message_by_subject(&self.names.history(channel)).await {
            Ok(m) => Ok(Some(decode(m.sequence, &m.payload)?)),
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(error(ErrorKind::Unavailable, "nats history read", e)),
        }
    }

    async fn get(&self, seq: u64) -> Result<Option<Stored>, BrokerError> {
        use async_nats::jetstream::stream::RawMessageErrorKind as K;
        match self.stream.get_raw_message(seq).await {
            Ok(m) => Ok(Some(decode(m.sequence, &m.payload)?)),
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(error(ErrorKind::Unavailable, "nats history read", e)),
        }
    }

    /// Writes `record` if the channel's last record is still `expected` (0: none). `Ok(None)`:
    /// another writer came first. A duplicate idempotency key answers the original record.
    async fn write(
        &self,
        channel: &str,
        record: &Record,
        expected: u64,
        msg_id: Option<&str>,
    ) -> Result<Option<(Stored, bool)>, BrokerError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", expected.to_string().as_str());
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(self.names.history(channel), headers, record.encode_bytes())
            .await
            .map_err(|e| error(ErrorKind::Unavailable, "nats history append", e))?;
        match ack.await {
            Ok(ack) if ack.duplicate => match self.get(ack.sequence).await? {
                Some(original) => Ok(Some((original, true))),
                None => Err(BrokerError::new(ErrorKind::Internal, "nats idempotent publish: original record is gone")),
            },
            Ok(ack) => Ok(Some((Stored { seq: ack.sequence, record: record.clone() }, false))),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                metrics::append_conflict();
                Ok(None)
            }
            Err(e) if e.kind() == PublishErrorKind::TimedOut => {
                Err(error(ErrorKind::Timeout, "nats history append", e))
            }
            Err(e) => Err(error(ErrorKind::Unavailable, "nats history append", e)),
        }
    }

    fn forget(&self, channel: &str) {
        self.tops.lock().remove(channel);
    }

    fn remember(&self, channel: &str, stored: &Stored) {
        let mut tops = self.tops.lock();
        if tops.len() >= TOP_CACHE_MAX && !tops.contains_key(channel) {
            tops.clear();
        }
        let mut light = stored.clone();
        light.record.publication = None;
        tops.insert(channel.to_owned(), light);
    }

    /// Appends a publication with the channel's next offset; the caller holds the channel's
    /// [`History::turn`]. Returns the outcome and, unless an idempotency key suppressed it, the
    /// publication as stored (offset set) with its epoch.
    pub(crate) async fn append(
        &self,
        channel: &str,
        mut publication: Publication,
        opts: &PublishOptions,
    ) -> Result<(PublishOutcome, Option<(Publication, String)>), BrokerError> {
        let now = self.clock.now_ms();
        let msg_id =
            opts.idempotency_key.as_deref().map(|k| format!("{}|{}", subject_token(channel), subject_token(k)));
        let meta_ttl = if opts.history_meta_ttl.is_zero() { i64::MAX / 4 } else { ms(opts.history_meta_ttl) };
        let mut cached = self.tops.lock().get(channel).cloned();
        // Fresh reads of the top so far: a cached top that another node made stale costs one
        // more try, not an attempt.
        let mut tries = 0;
        loop {
            let from_cache = cached.is_some();
            let top = match cached.take() {
                Some(t) => Some(t),
                None => {
                    tries += 1;
                    self.top(channel).await?
                }
            };
            let (offset, epoch, prev, expected) = match &top {
                Some(t) if t.record.meta_expires_ms > now => {
                    (t.record.offset + 1, t.record.epoch.clone(), t.seq, t.seq)
                }
                Some(t) => (1, new_epoch(), 0, t.seq),
                None => (1, new_epoch(), 0, 0),
            };
            publication.offset = offset;
            publication.epoch = if offset == 1 { epoch.clone() } else { String::new() };
            let record = Record {
                offset,
                epoch: epoch.clone(),
                prev,
                expires_ms: now.saturating_add(ms(opts.history_ttl)),
                meta_expires_ms: now.saturating_add(meta_ttl.max(ms(opts.history_ttl))),
                size: opts.history_size as u64,
                exclude_client: opts.exclude_client.map(|u| u.to_string()).unwrap_or_default(),
                publication: Some(publication.clone()),
                written_ms: now,
            };
            match self.write(channel, &record, expected, msg_id.as_deref()).await {
                Ok(Some((original, true))) => {
                    let position = StreamPosition { offset: original.record.offset, epoch: original.record.epoch };
                    return Ok((PublishOutcome { position: Some(position), suppressed: true }, None));
                }
                Ok(Some((stored, false))) => {
                    self.remember(channel, &stored);
                    let position = StreamPosition { offset, epoch: epoch.clone() };
                    return Ok((
                        PublishOutcome { position: Some(position), suppressed: false },
                        Some((publication, epoch)),
                    ));
                }
                Ok(None) => {
                    self.forget(channel);
                    if !from_cache {
                        self.back_off(tries, "nats history append", channel).await?;
                    }
                }
                Err(e) => {
                    self.forget(channel);
                    return Err(e);
                }
            }
        }
    }

    /// The channel's top, creating a position marker (and so an epoch) when the stream is
    /// empty or its position expired, so that readers and later publishers share one epoch.
    async fn top_for_read(&self, channel: &str, meta_ttl: Duration) -> Result<Stored, BrokerError> {
        let meta_ttl = if meta_ttl.is_zero() { i64::MAX / 4 } else { ms(meta_ttl) };
        // Most reads find a live position and need no turn.
        let mut top = self.top(channel).await?;
        let mut turn = None;
        let mut tries = 0;
        loop {
            let now = self.clock.now_ms();
            let expected = match top {
                Some(t) if t.record.meta_expires_ms > now => return Ok(t),
                Some(t) => t.seq,
                None => 0,
            };
            if turn.is_none() {
                // Write the marker in this node's turn, then decide again on a fresh top.
                turn = Some(self.turn(channel).await?);
                top = self.top(channel).await?;
                continue;
            }
            tries += 1;
            let marker =
                Record { epoch: new_epoch(), meta_expires_ms: now.saturating_add(meta_ttl), ..Default::default() };
            if let Some((stored, _)) = self.write(channel, &marker, expected, None).await? {
                self.forget(channel);
                return Ok(stored);
            }
            self.back_off(tries, "nats history position marker", channel).await?;
            top = self.top(channel).await?;
        }
    }

    /// Records with an offset in `lo..=hi`, walking back from `top`, newest first; stops after
    /// `max` records or where the chain is broken (records dropped by the stream's bounds).
    async fn walk_back(&self, top: Stored, lo: u64, hi: u64, max: usize) -> Result<Vec<Stored>, BrokerError> {
        let mut out = Vec::new();
        let mut cur = Some(top);
        while let Some(s) = cur {
            if s.record.offset < lo || out.len() >= max {
                break;
            }
            let (prev, written) = (s.record.prev, s.record.written_ms);
            if s.record.publication.is_some() && s.record.offset <= hi {
                out.push(s);
            }
            cur = if prev == 0 { None } else { self.get(prev).await? };
            // Publications that expired before the next one was written were gone by then.
            if cur.as_ref().is_some_and(|p| p.record.publication.is_some() && p.record.expires_ms <= written) {
                break;
            }
        }
        Ok(out)
    }

    /// The lowest offset a read may serve from `top`: older ones are beyond the history size,
    /// and none is served once the history TTL has passed.
    fn visible_from(&self, top: &Record) -> Option<u64> {
        if top.publication.is_none() || top.size == 0 || top.expires_ms <= self.clock.now_ms() {
            return None;
        }
        Some(top.offset.saturating_sub(top.size) + 1)
    }

    pub(crate) async fn read(&self, channel: &str, q: &HistoryQuery) -> Result<HistorySlice, BrokerError> {
        let top = self.top_for_read(channel, q.meta_ttl).await?;
        let position = StreamPosition { offset: top.record.offset, epoch: top.record.epoch.clone() };
        let limit = if q.limit < 0 { usize::MAX } else { q.limit as usize };
        let Some(lower) = self.visible_from(&top.record).filter(|_| limit > 0) else {
            return Ok(HistorySlice { publications: Vec::new(), top: position });
        };
        let t = top.record.offset;
        let (lo, hi) = match (&q.since, q.reverse) {
            (None, _) => (lower, t),
            (Some(s), false) if s.offset >= t => return Ok(HistorySlice { publications: Vec::new(), top: position }),
            (Some(s), false) => (lower.max(s.offset + 1), t),
            (Some(s), true) => match s.offset.checked_sub(1) {
                Some(h) if h >= lower && h <= t => (lower, h),
                _ => return Ok(HistorySlice { publications: Vec::new(), top: position }),
            },
        };
        // Newest first: a reverse read stops after `limit`, a forward one needs all of lo..=hi.
        let max = if q.reverse { limit } else { usize::MAX };
        let mut records = self.walk_back(top, lo, hi, max).await?;
        if !q.reverse {
            records.reverse();
            records.truncate(limit);
        }
        let publications = records.into_iter().filter_map(|s| s.record.publication).collect();
        Ok(HistorySlice { publications, top: position })
    }

    /// Publications after `after` in offset order with their `exclude_client`, for a node
    /// filling a gap in what it received. Empty when the epoch changed or nothing is newer.
    pub(crate) async fn read_after(
        &self,
        channel: &str,
        after: &StreamPosition,
    ) -> Result<Vec<(Publication, String)>, BrokerError> {
        let Some(top) = self.top(channel).await? else { return Ok(Vec::new()) };
        if top.record.epoch != after.epoch || top.record.offset <= after.offset {
            return Ok(Vec::new());
        }
        let Some(lower) = self.visible_from(&top.record) else { return Ok(Vec::new()) };
        let t = top.record.offset;
        let mut records = self.walk_back(top, lower.max(after.offset + 1), t, usize::MAX).await?;
        records.reverse();
        Ok(records
            .into_iter()
            .filter_map(|s| {
                let epoch = s.record.epoch;
                s.record.publication.map(|mut p| {
                    p.epoch = if p.offset == 1 { epoch } else { String::new() };
                    (p, s.record.exclude_client)
                })
            })
            .collect())
    }

    /// Drops the channel's publications and keeps its position: a marker at the top offset,
    /// then a purge of everything before it.
    pub(crate) async fn remove(&self, channel: &str) -> Result<(), BrokerError> {
        let _turn = self.turn(channel).await?;
        for tries in 1.. {
            let Some(top) = self.top(channel).await? else { return Ok(()) };
            let marker = Record {
                offset: top.record.offset,
                epoch: top.record.epoch.clone(),
                meta_expires_ms: top.record.meta_expires_ms,
                size: top.record.size,
                ..Default::default()
            };
            if self.write(channel, &marker, top.seq, None).await?.is_some() {
                self.forget(channel);
                self.stream
                    .purge()
                    .filter(self.names.history(channel))
                    .keep(1)
                    .await
                    .map_err(|e| error(ErrorKind::Unavailable, "nats history purge", e))?;
                return Ok(());
            }
            self.back_off(tries, "nats history removal", channel).await?;
        }
        Err(self.gave_up("nats history removal", channel))
    }
}

fn decode(seq: u64, payload: &[u8]) -> Result<Stored, BrokerError> {
    Record::decode(payload)
        .map(|record| Stored { seq, record })
        .map_err(|e| error(ErrorKind::Internal, "nats history record decode", e))
}

#[cfg(test)]
mod tests {
    use super::conflict_delay;
    use std::time::Duration;

    #[test]
    fn conflict_delay_is_short_jittered_and_capped() {
        for retry in 1..40 {
            let base = Duration::from_millis(1 << (retry - 1).min(5));
            let d = conflict_delay(retry);
            assert!(d >= base && d <= base * 2, "retry {retry}: {d:?}");
        }
        // Jittered: 50 pauses of the same retry are not all equal.
        let first = conflict_delay(3);
        assert!((0..50).any(|_| conflict_delay(3) != first));
    }
}
