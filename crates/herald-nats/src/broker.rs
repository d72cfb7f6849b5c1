//! [`NatsBroker`]: the [`Broker`] over NATS. Publications, joins and leaves travel on core
//! subjects, one per channel (`<prefix>.client.<channel>`), which a node subscribes to only
//! while it has local subscribers; control messages on `<prefix>.control` and
//! `<prefix>.node.<uid>`; history in JetStream (see [`crate::history`]).
//!
//! Core NATS is at most once, and two nodes publishing to one channel may have their
//! publications cross on the wire. So each subscribed channel has a task that keeps the last
//! offset it delivered and hands publications to the hub in offset order, once: an older or
//! repeated offset is dropped, and a gap (a lost or late message, or a reconnect) is filled
//! from the stream before going on. After a reconnect every task reads what it missed.
//!
//! The stream is JetStream, or in mixed mode another engine's history (Redis): see
//! [`crate::store`].

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_hub::Clock;
use herald_hub::broker::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ErrorKind, HistoryQuery, HistorySlice, PublishOptions,
    PublishOutcome,
};
use herald_proto::{ClientInfo, Publication, StreamPosition};
use prost::Message;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::history::{History, error};
use crate::store::Store;
use crate::subject::{Names, kv_segment};
use crate::wire::{self, Envelope};
use crate::{NatsConfig, NatsConnection, metrics};

/// Attempts of a catch-up read after a reconnect (JetStream may still be recovering its
/// streams when the connection is back), 250 ms apart.
const CATCH_UP_ATTEMPTS: usize = 40;

struct Shared {
    client: async_nats::Client,
    names: Names,
    history: Store,
    /// Idempotency keys of publications without history (JetStream only; an external store
    /// keeps them itself).
    idempotency: Option<kv::Store>,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    resync: watch::Receiver<u64>,
    /// `write_timeout`: the longest a request may take.
    timeout: std::time::Duration,
}

type Slot = Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>;

/// The NATS broker of one node.
pub struct NatsBroker {
    shared: Arc<Shared>,
    /// channel → its slot: the task delivering it while subscribed. Each slot's async lock
    /// serializes subscribe and unsubscribe of one channel; channels do not wait for each other.
    subs: parking_lot::Mutex<HashMap<String, Slot>>,
    control: JoinHandle<()>,
}

impl Drop for NatsBroker {
    fn drop(&mut self) {
        self.control.abort();
        for slot in self.subs.lock().values() {
            if let Ok(task) = slot.try_lock()
                && let Some(task) = task.as_ref()
            {
                task.abort();
            }
        }
    }
}

impl NatsBroker {
    /// Sets up the history stream and the idempotency bucket and subscribes to the control
    /// subjects of this node (`cfg.node_uid`).
    pub async fn open(
        conn: &NatsConnection,
        cfg: &NatsConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<NatsBroker, BrokerError> {
        let names = Names::new(&cfg.prefix);
        let js = async_nats::jetstream::new(conn.client.clone());
        let history = History::open(js.clone(), names.clone(), cfg, clock).await?;
        let idempotency = crate::presence::open_bucket(&js, &names.idempotency_bucket(), cfg.idempotent_window, cfg)
            .await
            .map_err(|e| error(ErrorKind::Unavailable, "nats idempotency bucket setup", std::io::Error::other(e)))?;
        NatsBroker::start(conn, cfg, names, Store::JetStream(Box::new(history)), Some(idempotency)).await
    }

    /// Mixed mode: publications over core NATS, history and idempotency keys in `store` (an
    /// engine whose own PUB/SUB is off, e.g. Redis). JetStream is not needed.
    pub async fn open_with_store(
        conn: &NatsConnection,
        cfg: &NatsConfig,
        store: Arc<dyn Broker>,
    ) -> Result<NatsBroker, BrokerError> {
        let names = Names::new(&cfg.prefix);
        NatsBroker::start(conn, cfg, names, Store::External(store, cfg.history_max_age), None).await
    }

    async fn start(
        conn: &NatsConnection,
        cfg: &NatsConfig,
        names: Names,
        history: Store,
        idempotency: Option<kv::Store>,
    ) -> Result<NatsBroker, BrokerError> {
        let shared = Arc::new(Shared {
            client: conn.client.clone(),
            names,
            history,
            idempotency,
            handler: OnceLock::new(),
            resync: conn.resync.clone(),
            timeout: cfg.write_timeout,
        });
        let mut all = subscribe(&shared.client, shared.names.control()).await?;
        let mut mine = subscribe(&shared.client, shared.names.node(&cfg.node_uid)).await?;
        let weak = Arc::downgrade(&shared);
        let control = tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    m = all.next() => m,
                    m = mine.next() => m,
                };
                let (Some(m), Some(shared)) = (m, weak.upgrade()) else { return };
                if let Some(h) = shared.handler.get() {
                    h.handle_control(m.payload);
                }
            }
        });
        Ok(NatsBroker { shared, subs: parking_lot::Mutex::new(HashMap::new()), control })
    }

    fn connected(&self) -> Result<(), BrokerError> {
        if self.healthy() {
            Ok(())
        } else {
            Err(BrokerError::new(ErrorKind::Unavailable, "nats publish (not connected)"))
        }
    }

    async fn send(&self, subject: String, payload: Bytes, what: &'static str) -> Result<(), BrokerError> {
        self.connected()?;
        self.shared.client.publish(subject, payload).await.map_err(|e| error(ErrorKind::Unavailable, what, e))
    }

    async fn publish_inner(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<PublishOutcome, BrokerError> {
        let history = opts.history_size > 0 && !opts.history_ttl.is_zero();
        let exclude_client = opts.exclude_client.map(|u| u.to_string()).unwrap_or_default();
        // An external store takes idempotency keys of publications without history too.
        let stored_first = history || (opts.idempotency_key.is_some() && self.shared.history.keeps_idempotency());
        if stored_first {
            // Fail fast while cut off rather than queue an append whose outcome nobody learns.
            self.connected()?;
            // Held until the publication is sent: this node's appends to the channel do not
            // race each other, and leave in offset order.
            let _turn = self.shared.history.turn(channel).await?;
            let (outcome, stored) = self.shared.history.append(channel, publication, opts).await?;
            if let Some((publication, epoch)) = stored {
                let env = Envelope {
                    kind: wire::KIND_PUBLICATION,
                    publication: Some(publication),
                    exclude_client,
                    epoch,
                    info: None,
                };
                // Stored already: a node that misses this message fills the gap from the stream.
                if let Err(e) = self.send(self.shared.names.client(channel), env.encode_bytes(), "nats publish").await {
                    tracing::warn!(channel, "publication stored but not sent to other nodes now: {e}");
                }
            }
            return Ok(outcome);
        }
        if let (Some(key), Some(idempotency)) = (&opts.idempotency_key, &self.shared.idempotency) {
            self.connected()?;
            let k = format!("{}.{}", kv_segment(channel), kv_segment(key));
            match idempotency.create(&k, Bytes::new()).await {
                Ok(_) => {}
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    return Ok(PublishOutcome { position: None, suppressed: true });
                }
                Err(e) => return Err(error(ErrorKind::Unavailable, "nats idempotency key", e)),
            }
        }
        let env = Envelope {
            kind: wire::KIND_PUBLICATION,
            publication: Some(publication),
            exclude_client,
            ..Default::default()
        };
        self.send(self.shared.names.client(channel), env.encode_bytes(), "nats publish").await?;
        Ok(PublishOutcome::default())
    }
}

impl NatsBroker {
    /// Subscribes on NATS and starts the channel's delivery task.
    async fn start_channel(&self, channel: &str) -> Result<JoinHandle<()>, BrokerError> {
        // Fail fast while cut off: the channel's lock must not wait for a reconnect.
        self.connected()?;
        let client = &self.shared.client;
        let sub = subscribe(client, self.shared.names.client(channel)).await?;
        // The server has the subscription once the flush returns: anything stored after the
        // top read below reaches this node.
        match tokio::time::timeout(self.shared.timeout, client.flush()).await {
            Ok(r) => r.map_err(|e| error(ErrorKind::Unavailable, "nats subscribe", e))?,
            Err(_) => return Err(BrokerError::new(ErrorKind::Timeout, "nats subscribe")),
        }
        let last = self.shared.history.top(channel).await?;
        let task = ChannelTask { shared: self.shared.clone(), channel: channel.to_owned(), last };
        Ok(tokio::spawn(task.run(sub, self.shared.resync.clone())))
    }

    /// Forgets an empty slot nobody else holds. Others clone slots only under the map lock, so
    /// the count checked here cannot grow meanwhile.
    fn release(&self, channel: &str, slot: &Slot) {
        let mut subs = self.subs.lock();
        let ours = subs.get(channel).is_some_and(|s| Arc::ptr_eq(s, slot));
        if ours && Arc::strong_count(slot) == 2 && slot.try_lock().is_ok_and(|g| g.is_none()) {
            subs.remove(channel);
        }
    }

    /// Channels this node is subscribed to on NATS.
    pub fn num_channels(&self) -> usize {
        self.subs.lock().len()
    }
}

async fn subscribe(client: &async_nats::Client, subject: String) -> Result<async_nats::Subscriber, BrokerError> {
    client.subscribe(subject).await.map_err(|e| error(ErrorKind::Unavailable, "nats subscribe", e))
}

/// Delivers one channel to the hub in offset order (see the module docs).
struct ChannelTask {
    shared: Arc<Shared>,
    channel: String,
    /// The last publication with an offset handed to the hub (or the stream top at subscribe).
    last: Option<StreamPosition>,
}

impl ChannelTask {
    async fn run(mut self, mut sub: async_nats::Subscriber, mut resync: watch::Receiver<u64>) {
        resync.mark_unchanged();
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => self.on_message(&m.payload).await,
                    None => return,
                },
                changed = resync.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.catch_up().await;
                }
            }
        }
    }

    fn handler(&self) -> Option<&dyn BrokerHandler> {
        self.shared.handler.get().map(|h| &**h)
    }

    async fn on_message(&mut self, payload: &[u8]) {
        let Ok(env) = Envelope::decode(payload) else {
            metrics::malformed();
            return;
        };
        let Some(h) = self.handler() else { return };
        match (env.kind, env.publication, env.info) {
            (wire::KIND_PUBLICATION, Some(p), _) if p.offset == 0 => {
                h.handle_publication(&self.channel, &p, wire::parse_exclude(&env.exclude_client));
            }
            (wire::KIND_PUBLICATION, Some(p), _) => self.on_positioned(p, env.epoch, env.exclude_client).await,
            (wire::KIND_JOIN, _, Some(info)) => h.handle_join(&self.channel, &info),
            (wire::KIND_LEAVE, _, Some(info)) => h.handle_leave(&self.channel, &info),
            _ => metrics::malformed(),
        }
    }

    fn deliver(&mut self, p: &Publication, epoch: &str, exclude: &str) {
        if let Some(h) = self.shared.handler.get() {
            h.handle_publication(&self.channel, p, wire::parse_exclude(exclude));
        }
        self.last = Some(StreamPosition { offset: p.offset, epoch: epoch.to_owned() });
    }

    async fn on_positioned(&mut self, p: Publication, epoch: String, exclude: String) {
        match admit(self.last.as_ref(), p.offset, &epoch) {
            Admit::Drop => return,
            Admit::Deliver => {}
            Admit::FillFrom(from) => {
                self.fill_from(&from).await;
                if self.last.as_ref().is_some_and(|l| l.epoch == epoch && p.offset <= l.offset) {
                    return;
                }
            }
        }
        self.deliver(&p, &epoch, &exclude);
    }

    /// Delivers what the stream holds after `last`; false when the stream could not be read.
    async fn fill_from(&mut self, last: &StreamPosition) -> bool {
        match self.shared.history.read_after(&self.channel, last).await {
            Ok(items) => {
                metrics::gap_fill(items.len());
                for (p, exclude) in items {
                    if self.last.as_ref().is_none_or(|l| p.offset > l.offset) {
                        self.deliver(&p, &last.epoch, &exclude);
                    }
                }
                true
            }
            Err(e) => {
                tracing::warn!(channel = %self.channel, "cannot fill a gap in delivery from the stream: {e}");
                false
            }
        }
    }

    /// After a reconnect: delivers what was published while this node was cut off. A channel
    /// that never delivered a positioned publication (no history) cannot be repaired: its local
    /// subscribers are told to resubscribe (2500), so nothing is missed silently.
    async fn catch_up(&mut self) {
        let last = match self.last.clone() {
            Some(last) if last.offset > 0 => last,
            _ => {
                if let Some(h) = self.handler() {
                    let channel = self.channel.as_str();
                    h.handle_reconnect(&|c| c == channel);
                }
                return;
            }
        };
        for _ in 0..CATCH_UP_ATTEMPTS {
            if self.fill_from(&last).await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// What a channel task does with a positioned publication that arrives on the core subject.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Delivered already (an older or repeated offset).
    Drop,
    /// The next one: hand it to the hub.
    Deliver,
    /// Publications before it are missing: read the stream after this position first.
    FillFrom(StreamPosition),
}

/// Decides from the last delivered position. Without one (nothing was stored when the node
/// subscribed) or in a new epoch, the channel's offsets start at 1 after the subscription: a
/// first arrival with a higher offset means another node's earlier publication is still on the
/// wire, and delivering this one first would make that one look old and drop it.
fn admit(last: Option<&StreamPosition>, offset: u64, epoch: &str) -> Admit {
    let delivered = match last {
        Some(l) if l.epoch == epoch => l.offset,
        _ => 0,
    };
    if offset <= delivered {
        Admit::Drop
    } else if offset == delivered + 1 {
        Admit::Deliver
    } else {
        Admit::FillFrom(StreamPosition { offset: delivered, epoch: epoch.to_owned() })
    }
}

impl Broker for NatsBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError> {
        self.shared.handler.set(handler).map_err(|_| {
            BrokerError::new(ErrorKind::Rejected, "nats broker handler registration (already serving a node)")
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = self.publish_inner(channel, publication, opts).await;
            metrics::publish_latency(opts.history_size > 0, start.elapsed());
            r
        })
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        let env = Envelope { kind: wire::KIND_JOIN, info: Some(info), ..Default::default() };
        Box::pin(self.send(self.shared.names.client(channel), env.encode_bytes(), "nats publish join"))
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        let env = Envelope { kind: wire::KIND_LEAVE, info: Some(info), ..Default::default() };
        Box::pin(self.send(self.shared.names.client(channel), env.encode_bytes(), "nats publish leave"))
    }

    /// Control messages reach every node (`<prefix>.control`) or one (`<prefix>.node.<uid>`, the
    /// sender included: that is the delivery probe), which turns on the cluster layer.
    fn delivers_control(&self) -> bool {
        true
    }

    fn publish_control<'a>(&'a self, node: Option<&'a str>, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        let subject = match node {
            Some(uid) => self.shared.names.node(uid),
            None => self.shared.names.control(),
        };
        Box::pin(self.send(subject, payload, "nats publish control"))
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let slot = self.subs.lock().entry(channel.to_owned()).or_default().clone();
            let mut guard = slot.lock().await;
            if guard.is_some() {
                return Ok(());
            }
            let result = self.start_channel(channel).await;
            match result {
                Ok(task) => *guard = Some(task),
                Err(e) => {
                    drop(guard);
                    self.release(channel, &slot);
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let Some(slot) = self.subs.lock().get(channel).cloned() else { return Ok(()) };
            // Dropping the task drops its subscriber, which unsubscribes on the server.
            if let Some(task) = slot.lock().await.take() {
                task.abort();
            }
            self.release(channel, &slot);
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistorySlice, BrokerError>> {
        Box::pin(async move { self.shared.history.read(channel, &query).await })
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.shared.history.remove(channel))
    }

    fn healthy(&self) -> bool {
        self.shared.client.connection_state() == async_nats::connection::State::Connected
            && self.shared.history.healthy()
    }
}

#[cfg(test)]
mod tests {
    use super::{Admit, StreamPosition, admit};

    fn at(offset: u64, epoch: &str) -> StreamPosition {
        StreamPosition { offset, epoch: epoch.to_owned() }
    }

    #[test]
    fn the_next_offset_is_delivered_and_older_ones_dropped() {
        assert_eq!(admit(Some(&at(4, "e")), 5, "e"), Admit::Deliver);
        assert_eq!(admit(Some(&at(4, "e")), 4, "e"), Admit::Drop);
        assert_eq!(admit(Some(&at(4, "e")), 2, "e"), Admit::Drop);
    }

    #[test]
    fn a_gap_is_filled_from_the_last_delivered_position() {
        assert_eq!(admit(Some(&at(4, "e")), 7, "e"), Admit::FillFrom(at(4, "e")));
    }

    #[test]
    fn a_channel_empty_at_subscribe_waits_for_offset_one() {
        // Two nodes raced for offsets 1 and 2 and the second arrived first: offset 1 must be
        // read from the stream, not dropped as old once 2 was delivered.
        assert_eq!(admit(None, 1, "e"), Admit::Deliver);
        assert_eq!(admit(None, 2, "e"), Admit::FillFrom(at(0, "e")));
    }

    #[test]
    fn a_new_epoch_starts_from_its_first_offset() {
        assert_eq!(admit(Some(&at(40, "old")), 1, "new"), Admit::Deliver);
        assert_eq!(admit(Some(&at(40, "old")), 3, "new"), Admit::FillFrom(at(0, "new")));
    }
}
