//! The broker contract: what an engine does for a node, and how it hands deliveries back.
//! An engine is PUB/SUB between nodes plus channel streams (history with offset and epoch)
//! ([`Broker`]) and presence storage ([`PresenceManager`]). [`MemoryBroker`] and
//! [`MemoryPresence`] are the single-node engines; network engines (Redis, NATS) live in their
//! own crates and implement the same traits without touching hub internals.
//!
//! Every operation returns a boxed future so that engines doing network I/O fit the same
//! traits, and fails with a typed [`BrokerError`]. The memory engine's futures are always ready.
//!
//! Delivery: an engine hands what arrives for this node to the [`BrokerHandler`] registered
//! with [`Broker::set_handler`], from whatever task receives it (the publishing task for the
//! memory engine, a reader task for a network engine). The node registers a sink that reaches
//! only the hub's indexes, never the node, so an engine may call it under its own locks.
//!
//! Ordering contract: an engine delivers the publications of one channel in offset order, one
//! call at a time. Handlers do not block and never call back into the engine.

mod delivery;
mod memory;
mod presence;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::{ClientInfo, Publication, StreamPosition};

pub(crate) use delivery::Delivery;
pub use memory::MemoryBroker;
pub use presence::MemoryPresence;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What kind of failure a [`BrokerError`] is; callers decide on it (retry, report, give up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The engine cannot be reached or its connection was lost.
    Unavailable,
    /// The engine did not answer in time.
    Timeout,
    /// The engine refused the request or answered outside its protocol.
    Rejected,
    /// A bug or broken invariant inside the engine.
    Internal,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "engine unavailable",
            ErrorKind::Timeout => "engine timed out",
            ErrorKind::Rejected => "rejected by the engine",
            ErrorKind::Internal => "internal engine error",
        }
    }
}

/// An engine failure: its kind, what failed, and the underlying cause if any. Clients see it
/// as error 100.
#[derive(Debug, Clone)]
pub struct BrokerError {
    kind: ErrorKind,
    /// The operation that failed, e.g. "redis history read".
    what: std::borrow::Cow<'static, str>,
    /// Shared so that the error stays `Clone` for engines that fan one failure out.
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl BrokerError {
    /// A failure of `kind` while doing `what`.
    pub fn new(kind: ErrorKind, what: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        BrokerError { kind, what: what.into(), source: None }
    }

    /// Attaches the underlying cause (an I/O or client-library error).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl std::fmt::Display for BrokerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.kind.describe())?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

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

/// Receives what the engine delivers to this node. Called from the engine's delivering task;
/// implementations neither block nor call back into the engine.
pub trait BrokerHandler: Send + Sync {
    fn handle_publication(&self, channel: &str, publication: &Publication, exclude_client: Option<uuid::Uuid>);
    fn handle_join(&self, channel: &str, info: &ClientInfo);
    fn handle_leave(&self, channel: &str, info: &ClientInfo);
    /// A control message published by a node with [`Broker::publish_control`]; it may be this
    /// node's own when the engine echoes to the sender, so the payload names its sender.
    /// A node outside a cluster has no commands to take from others and ignores them.
    fn handle_control(&self, _payload: Bytes) {}
    /// The engine's PUB/SUB connection was lost and is back: publications of the channels for
    /// which `affected` answers true may have been missed meanwhile. The node makes their local
    /// subscribers recover (or resubscribe). Called from the engine's task, under no engine lock.
    fn handle_reconnect(&self, _affected: &dyn Fn(&str) -> bool) {}
}

/// PUB/SUB between nodes plus channel streams.
pub trait Broker: Send + Sync + 'static {
    /// Registers the node's delivery sink; the node calls it once, before any other operation.
    /// An engine serves one node: a second registration is rejected.
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError>;
    /// Appends to the channel stream (when `opts` asks for history) and delivers to every node
    /// subscribed to the channel.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>>;
    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Sends a node-to-node control message (cluster commands on users of other nodes, node
    /// heartbeats) to the node with uid `node`, or to every node when `None`. The payload's
    /// format belongs to the hub; engines carry it as is. The sender applies a command to its
    /// own connections itself, so delivering back to the sender is allowed but not required.
    fn publish_control<'a>(&'a self, node: Option<&'a str>, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>>;
    /// Whether control messages really travel between nodes (and back to the sender when it
    /// names itself): the node runs its cluster layer (heartbeats, the node registry, the
    /// delivery probe behind `/health`) only over such an engine. False for the memory engine.
    fn delivers_control(&self) -> bool {
        false
    }
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
    /// Whether the engine can currently serve requests (its connection is up). Cheap and
    /// non-blocking: the engine's last known state, for health checks.
    fn healthy(&self) -> bool;
}

/// Presence storage.
pub trait PresenceManager: Send + Sync + 'static {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>>;
    /// (clients, distinct users).
    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>>;
    /// Whether the storage can currently serve requests, as for [`Broker::healthy`].
    fn healthy(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_names_what_failed_and_why() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let e = BrokerError::new(ErrorKind::Unavailable, "redis publish").with_source(io);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.what(), "redis publish");
        assert_eq!(e.to_string(), "redis publish: engine unavailable: reset by peer");
        assert!(std::error::Error::source(&e).is_some());
        let t = BrokerError::new(ErrorKind::Timeout, "nats history read");
        assert_eq!(t.to_string(), "nats history read: engine timed out");
        assert!(std::error::Error::source(&t).is_none());
    }
}
