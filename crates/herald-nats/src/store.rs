//! Where a [`crate::NatsBroker`] keeps history and idempotency keys: JetStream (a NATS-only
//! cluster), or another engine (mixed mode: Redis) that appends a publication and gives it its
//! offset and epoch in one atomic step, after which the broker sends it over core NATS with
//! that position. Delivery order and gap repair work the same way over both: each node hands
//! publications to the hub in offset order and fills a gap by reading the store.

use std::sync::Arc;

use herald_hub::broker::{Broker, BrokerError, HistoryQuery, HistorySlice, PublishOptions, PublishOutcome};
use herald_proto::{Publication, StreamPosition};

use crate::history::History;
use crate::queue::Turn;

pub(crate) enum Store {
    JetStream(Box<History>),
    /// An engine used for its history and idempotency keys only (its own PUB/SUB is off), and
    /// the meta TTL its position reads keep: reading a position creates the channel's epoch in
    /// Redis, and a channel without history must not keep that key forever.
    External(Arc<dyn Broker>, std::time::Duration),
}

impl Store {
    /// This node's turn to append to the channel (JetStream; `None` for an external store,
    /// which gives offsets atomically itself). Hold it until the publication is sent, so that
    /// nodes receive the channel's publications in offset order.
    pub(crate) async fn turn(&self, channel: &str) -> Result<Option<Turn>, BrokerError> {
        match self {
            Store::JetStream(h) => h.turn(channel).await.map(Some),
            Store::External(..) => Ok(None),
        }
    }

    /// Appends a publication (in the channel's [`Store::turn`]); the stored publication and
    /// its epoch, unless an idempotency key suppressed it.
    pub(crate) async fn append(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<(PublishOutcome, Option<(Publication, String)>), BrokerError> {
        match self {
            Store::JetStream(h) => h.append(channel, publication, opts).await,
            Store::External(engine, _) => {
                let mut stored = publication.clone();
                let outcome = engine.publish(channel, publication, opts).await?;
                if outcome.suppressed {
                    return Ok((outcome, None));
                }
                let epoch = match &outcome.position {
                    Some(p) => {
                        stored.offset = p.offset;
                        // Like every engine: the first publication of a stream names its epoch.
                        if p.offset == 1 {
                            stored.epoch = p.epoch.clone();
                        }
                        p.epoch.clone()
                    }
                    None => String::new(),
                };
                Ok((outcome, Some((stored, epoch))))
            }
        }
    }

    /// The channel's position now (`None`: no stream yet).
    pub(crate) async fn top(&self, channel: &str) -> Result<Option<StreamPosition>, BrokerError> {
        match self {
            Store::JetStream(h) => {
                Ok(h.top(channel).await?.map(|t| StreamPosition { offset: t.record.offset, epoch: t.record.epoch }))
            }
            Store::External(engine, meta_ttl) => {
                let q = HistoryQuery { limit: 0, meta_ttl: *meta_ttl, ..Default::default() };
                Ok(Some(engine.history(channel, q).await?.top))
            }
        }
    }

    /// Publications after `after` in offset order with their `exclude_client` (unknown to an
    /// external store: empty); empty when the epoch changed or nothing is newer.
    pub(crate) async fn read_after(
        &self,
        channel: &str,
        after: &StreamPosition,
    ) -> Result<Vec<(Publication, String)>, BrokerError> {
        match self {
            Store::JetStream(h) => h.read_after(channel, after).await,
            Store::External(engine, _) => {
                let q = HistoryQuery { since: Some(after.clone()), limit: -1, ..Default::default() };
                let slice = engine.history(channel, q).await?;
                if slice.top.epoch != after.epoch {
                    return Ok(Vec::new());
                }
                Ok(slice
                    .publications
                    .into_iter()
                    .filter(|p| p.offset > after.offset)
                    .map(|p| (p, String::new()))
                    .collect())
            }
        }
    }

    pub(crate) async fn read(&self, channel: &str, q: &HistoryQuery) -> Result<HistorySlice, BrokerError> {
        match self {
            Store::JetStream(h) => h.read(channel, q).await,
            Store::External(engine, _) => engine.history(channel, q.clone()).await,
        }
    }

    pub(crate) async fn remove(&self, channel: &str) -> Result<(), BrokerError> {
        match self {
            Store::JetStream(h) => h.remove(channel).await,
            Store::External(engine, _) => engine.remove_history(channel).await,
        }
    }

    /// Whether the store answers (JetStream's health is the NATS connection's).
    pub(crate) fn healthy(&self) -> bool {
        match self {
            Store::JetStream(_) => true,
            Store::External(engine, _) => engine.healthy(),
        }
    }

    /// Whether idempotency keys of publications without history are kept here too.
    pub(crate) fn keeps_idempotency(&self) -> bool {
        matches!(self, Store::External(..))
    }
}
