//! The narrow ports a [`crate::session::Session`] works through instead of reaching into the
//! node: who a client is ([`Authenticator`], answering with an [`Identity`]), the engine
//! (`node::Engine`: broker and presence), the registry of local sessions and subscriptions
//! (`Registry`), the clock and timers (`Time`), and the channel and client rules.
//!
//! `Ports` bundles references to them; the node hands one out per command. Traits only where a
//! second implementation is expected: the authenticator (JWT today, a backend deciding connects
//! later) and the engine traits of [`crate::broker`].

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use herald_auth::{SubOptions, SubscribeClaims, TokenError};
use herald_proto::{ConnectRequest, DisconnectReason, Encoding, ErrorCode};
use uuid::Uuid;

use crate::broker::BoxFuture;
use crate::channel::Channels;
use crate::clock::Clock;
use crate::config::ClientConfig;
use crate::conn::ConnectionInfo;
use crate::hub::{Hub, UserLimitReached};
use crate::link::ClientLink;
use crate::node::{Engine, Live, Node};
use crate::timer::TimerWheel;

/// Why a command, or a connect, is refused: an error reply the client may recover from, or a
/// disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Error(ErrorCode),
    Disconnect(DisconnectReason),
    /// An application error a backend answered with (code 400–1999), passed to the client.
    Backend(BackendError),
}

/// An error reply decided by a backend: its own code, message and temporary flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    pub code: u32,
    pub message: String,
    pub temporary: bool,
}

impl From<ErrorCode> for Refusal {
    fn from(e: ErrorCode) -> Self {
        Refusal::Error(e)
    }
}

impl From<DisconnectReason> for Refusal {
    fn from(d: DisconnectReason) -> Self {
        Refusal::Disconnect(d)
    }
}

/// Who a connecting client is and what its credentials grant, as decided by an
/// [`Authenticator`] (a connection token today; a backend's connect answer later).
///
/// The session applies it: it resolves and authorizes the channels, enforces the limits,
/// registers the connection and answers the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// User id; `""` is an anonymous user.
    pub user: String,
    /// Unix seconds when the connection expires, `None` = never. Capped at a year from now; a
    /// time already past refuses the connect with error 110.
    pub expire_at: Option<i64>,
    /// Connection info (`ClientInfo.conn_info`, seen by other clients in presence and
    /// join/leave).
    pub info: Bytes,
    /// `ConnectResult.data`, sent to this client only.
    pub data: Bytes,
    /// Server-side subscriptions to create. Ignored when `subs` is not empty.
    pub channels: Vec<String>,
    /// Server-side subscriptions with per-channel info, data and option overrides.
    pub subs: BTreeMap<String, SubOptions>,
    /// Private connection meta (raw JSON; empty: none), sent to proxies that include it.
    pub meta: Bytes,
    /// The connection is extended by the refresh proxy at `expire_at` instead of by the client.
    pub server_refresh: bool,
}

/// A connect as the transport and the client presented it.
#[derive(Debug, Clone, Copy)]
pub struct ConnectAttempt<'a> {
    /// The id the connection will have.
    pub client: Uuid,
    pub conn: &'a ConnectionInfo,
    pub request: &'a ConnectRequest,
    /// Unix seconds.
    pub now: i64,
    /// The client's protocol.
    pub encoding: Encoding,
    /// Client HTTP headers the transport kept for the connect proxy (lower-case names).
    pub headers: &'a [(String, String)],
}

/// Decides who clients are. Connect is asynchronous so that a backend can answer it; token
/// checks for `refresh` and subscriptions are local and synchronous.
pub trait Authenticator: Send + Sync {
    /// The identity of a connecting client, or why it may not connect.
    fn connect<'a>(&'a self, attempt: ConnectAttempt<'a>) -> BoxFuture<'a, Result<Identity, Refusal>>;

    /// The identity carried by the token of a client `refresh` command. The session checks that
    /// it is the connection's user and applies `expire_at` and `info`.
    fn refresh_token(&self, token: &str, now: i64) -> Result<Identity, TokenError>;

    /// The claims of a subscription token (subscribe and sub_refresh commands).
    fn subscription_token(&self, token: &str, now: i64) -> Result<SubscribeClaims, TokenError>;
}

/// The local registry of sessions and subscriptions (the hub), as a session uses it.
#[derive(Clone, Copy)]
pub(crate) struct Registry<'a> {
    hub: &'a Hub,
    /// Connections one user may have on this node (0: no limit).
    user_connection_limit: usize,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(hub: &'a Hub, user_connection_limit: usize) -> Self {
        Registry { hub, user_connection_limit }
    }

    /// See [`Hub::add_pending`]: true when the node must subscribe to the channel.
    pub(crate) fn add_pending(&self, channel: &str, link: &Arc<dyn ClientLink>, flags: u8) -> bool {
        self.hub.add_pending(channel, link, flags)
    }

    pub(crate) fn activate(&self, channel: &str, link: &Arc<dyn ClientLink>, after: u64) {
        self.hub.activate(channel, link, after)
    }

    /// See [`Hub::remove`]: true when the node may drop its interest in the channel.
    pub(crate) fn remove(&self, channel: &str, link: &Arc<dyn ClientLink>) -> bool {
        self.hub.remove(channel, link)
    }

    /// Registers a connection of `user`, within the per-user connection limit.
    pub(crate) fn add_user(&self, user: &str, link: &Arc<dyn ClientLink>) -> Result<(), UserLimitReached> {
        self.hub.add_user(user, link, self.user_connection_limit)
    }

    pub(crate) fn remove_user(&self, user: &str, link: &Arc<dyn ClientLink>) {
        self.hub.remove_user(user, link)
    }
}

/// The node's clock and timer wheel, and the tick arithmetic between them.
pub(crate) struct Time {
    clock: Arc<dyn Clock>,
    timers: TimerWheel,
    /// Clock reading when the node started (tick 1).
    start_ms: i64,
}

impl Time {
    pub(crate) fn new(clock: Arc<dyn Clock>, timers: TimerWheel) -> Self {
        let start_ms = clock.now_ms();
        Time { clock, timers, start_ms }
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.clock.now_secs()
    }

    pub(crate) fn timers(&self) -> &TimerWheel {
        &self.timers
    }

    /// Seconds since the node started (the timer wheel's clock), starting at 1.
    pub(crate) fn tick(&self) -> u32 {
        ((self.clock.now_ms() - self.start_ms).max(0) / 1000) as u32 + 1
    }

    /// Converts a Unix time in seconds into a wheel tick.
    pub(crate) fn tick_at(&self, unix_secs: i64) -> u32 {
        let delta = unix_secs - self.clock.now_secs();
        (self.tick() as i64 + delta).clamp(1, u32::MAX as i64) as u32
    }

    pub(crate) fn uptime_secs(&self) -> u64 {
        ((self.clock.now_ms() - self.start_ms).max(0) / 1000) as u64
    }
}

/// What a session is given for one command.
///
/// A view of the node rather than a bundle of references: per-command futures carry it, and
/// at 32 bytes it keeps the boxed command batch in a small allocator size class (a bundle of
/// every port was 112 bytes). `live` is the reloadable part as it was when the command began,
/// so one command sees one configuration.
#[derive(Clone, Copy)]
pub(crate) struct Ports<'a> {
    pub(crate) auth: &'a dyn Authenticator,
    node: &'a Node,
    live: &'a Live,
}

impl<'a> Ports<'a> {
    /// The ports of one command, over the snapshot of the reloadable part it runs with.
    pub(crate) fn new(node: &'a Node, live: &'a Live) -> Self {
        Ports { auth: live.auth(), node, live }
    }

    pub(crate) fn engine(&self) -> Engine<'a> {
        self.node.engine()
    }

    pub(crate) fn registry(&self) -> Registry<'a> {
        let c = &self.live.config().client;
        // Evicting the oldest connections is decided by the node, never refused by the hub.
        let limit =
            if c.user_connection_limit_mode == crate::config::LIMIT_EVICT_OLDEST { 0 } else { c.user_connection_limit };
        Registry::new(self.node.hub(), limit)
    }

    pub(crate) fn time(&self) -> &'a Time {
        self.node.time()
    }

    pub(crate) fn channels(&self) -> &'a Channels {
        self.live.channels()
    }

    /// The `client` config section: limits, pings, expiry grace periods.
    pub(crate) fn rules(&self) -> &'a ClientConfig {
        &self.live.config().client
    }

    /// The per-user command buckets (`client.command_rate_limit.user_rate`).
    pub(crate) fn user_buckets(&self) -> &'a crate::limits::UserBuckets {
        self.node.user_buckets()
    }

    /// This node's id (the `node` of emulation connect results).
    pub(crate) fn node_uid(&self) -> &'a str {
        &self.node.identity().uid
    }

    /// The hub, kept by a traced session to record its replies.
    pub(crate) fn hub(&self) -> Arc<Hub> {
        self.node.hub_arc()
    }

    /// The logic-layer proxies.
    /// Where a lifecycle event of `kind` goes, when webhooks report it.
    pub(crate) fn lifecycle(&self, kind: crate::webhook::EventKind) -> Option<&'a dyn crate::webhook::LifecycleSink> {
        self.node.hooks().sink(kind)
    }

    pub(crate) fn backend(&self) -> &'a crate::proxy::Backend {
        self.live.backend()
    }

    /// Server version sent in connect replies.
    pub(crate) fn version(&self) -> &'a str {
        &self.node.identity().version
    }
}
