//! The node: configuration, indexes, engines and the authenticator in one place, the cluster
//! layer's ticks and node info; the operations behind the server API (publish, server-side
//! subscribe, disconnect, refresh, presence, history, channels) are in [`api`].
//!
//! A [`crate::session::Session`] takes a `&Node` for every command and works through the
//! `Ports` the node hands out; transports hold an `Arc<Node>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use bytes::Bytes;
use herald_proto::codes::*;
use herald_proto::{ClientInfo, DisconnectReason, ErrorCode, Publication, StreamPosition};
use uuid::Uuid;

use crate::auth::JwtAuthenticator;
use crate::broker::{
    Broker, BrokerError, Delivery, HistoryQuery, HistorySlice, MemoryBroker, MemoryPresence, PresenceManager,
    PublishOptions, PublishOutcome,
};
use crate::channel::{ChannelError, Channels, Resolved};
use crate::clock::Clock;
use crate::cluster::{self, Cluster, Command, NodeInfo, RemoteSubscribe};
use crate::config::{ChannelOptions, ConfigError, HubConfig};
use crate::hub::Hub;
use crate::link::{ClientLink, Control, ServerSubscribe};
use crate::metrics;
use crate::ports::{Authenticator, Time};
use crate::proxy::{Backend, Proxies, ProxyAuthenticator, ProxyPort};
use crate::timer::TimerWheel;

mod api;
mod emulation;
mod survey;

pub use emulation::EmulationForward;

/// Identity of this node.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub uid: String,
    pub name: String,
    pub version: String,
}

/// Counters reported by the `info` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    pub num_clients: usize,
    pub num_users: usize,
    pub num_channels: usize,
    pub num_subs: usize,
    pub uptime_secs: u64,
}

/// A publish through the server API.
#[derive(Debug, Clone, Default)]
pub struct ApiPublish {
    pub data: Bytes,
    pub skip_history: bool,
    pub tags: BTreeMap<String, String>,
    pub idempotency_key: String,
    /// Client id not to deliver to.
    pub exclude_client: String,
}

/// Which connections of a user an API action targets.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub user: String,
    /// Only this client id (empty: all of the user's connections).
    pub client: String,
}

/// What a configuration reload replaces: the configuration the node reads while running, the
/// channel rules, the logic-layer proxies with the client that reaches them, and the
/// authenticator (token keys, the connect proxy), checked together.
pub(crate) struct Live {
    cfg: HubConfig,
    channels: Channels,
    backend: Arc<Backend>,
    auth: Box<dyn Authenticator>,
}

impl Live {
    fn build(cfg: HubConfig, port: Option<Arc<dyn ProxyPort>>) -> Result<Live, ConfigError> {
        let backend = Arc::new(Backend::new(Proxies::compile(&cfg)?, port));
        let channels = Channels::new(cfg.channel.clone())?;
        let jwt = JwtAuthenticator::new(&cfg.client)?;
        let auth: Box<dyn Authenticator> = if backend.table().connect().is_some() {
            Box::new(ProxyAuthenticator::new(jwt, backend.clone()))
        } else {
            Box::new(jwt)
        };
        let c = &cfg.client;
        let personal = &c.subscribe_to_user_personal_channel;
        if personal.enabled && channels.namespace(&personal.personal_channel_namespace).is_none() {
            return Err(ConfigError::new(
                "client.subscribe_to_user_personal_channel.personal_channel_namespace",
                format!("namespace {:?} is not configured", personal.personal_channel_namespace),
            ));
        }
        if ![crate::config::LIMIT_REFUSE_NEW, crate::config::LIMIT_EVICT_OLDEST]
            .contains(&c.user_connection_limit_mode.as_str())
        {
            return Err(ConfigError::new(
                "client.user_connection_limit_mode",
                format!("{:?} is not one of refuse_new, evict_oldest", c.user_connection_limit_mode),
            ));
        }
        Ok(Live { cfg, channels, backend, auth })
    }

    pub(crate) fn config(&self) -> &HubConfig {
        &self.cfg
    }

    pub(crate) fn channels(&self) -> &Channels {
        &self.channels
    }

    pub(crate) fn auth(&self) -> &dyn Authenticator {
        &*self.auth
    }

    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }
}

/// A part of the reloadable configuration ([`Node::config`], [`Node::channels`]) as it was
/// when taken: a reload meanwhile does not change it, and it keeps its snapshot alive.
pub struct Held<T: ?Sized> {
    live: Arc<Live>,
    get: fn(&Live) -> &T,
}

impl<T: ?Sized> std::ops::Deref for Held<T> {
    type Target = T;

    fn deref(&self) -> &T {
        (self.get)(&self.live)
    }
}

/// The node.
pub struct Node {
    /// The parts a configuration reload replaces ([`Node::reconfigure`]). A command takes a
    /// reference once (`Node::live`); a replaced snapshot is freed when the last command in
    /// flight that holds it ends.
    live: ArcSwap<Live>,
    /// Shared with the engine's delivery sink, which reaches the hub without the node.
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceManager>,
    time: Time,
    identity: NodeIdentity,
    /// Live nodes and the delivery probe; shared with the engine's delivery sink.
    cluster: Arc<Cluster>,
    /// When this node last announced itself (Unix ms).
    last_heartbeat: std::sync::atomic::AtomicI64,
    /// Publications per second, as announced.
    publication_rate: std::sync::Mutex<cluster::Rate>,
    user_buckets: crate::limits::UserBuckets,
    /// Lifecycle webhooks: the checked section and, once the server installs it, the sink.
    hooks: crate::webhook::Hooks,
    /// Resident memory in bytes, as the server last measured it (`set_rss`); 0 unknown.
    rss: std::sync::atomic::AtomicU64,
}

impl Node {
    /// Builds a node with the memory engine. Errors name the offending config key.
    pub fn new(cfg: HubConfig, identity: NodeIdentity, clock: Arc<dyn Clock>) -> Result<Arc<Node>, ConfigError> {
        let broker = Arc::new(MemoryBroker::new(clock.clone()));
        Node::with_engines(cfg, identity, clock, broker, Arc::new(MemoryPresence::default()))
    }

    /// Builds a node with the given engines and registers the hub's delivery sink with the broker.
    pub fn with_engines(
        cfg: HubConfig,
        identity: NodeIdentity,
        clock: Arc<dyn Clock>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceManager>,
    ) -> Result<Arc<Node>, ConfigError> {
        Node::with_parts(cfg, identity, clock, broker, presence, None)
    }

    /// Builds a node with the given engines and the client of the logic-layer proxies
    /// (`None`: a configured proxy answers every call as unavailable).
    pub fn with_parts(
        cfg: HubConfig,
        identity: NodeIdentity,
        clock: Arc<dyn Clock>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceManager>,
        proxy: Option<Arc<dyn ProxyPort>>,
    ) -> Result<Arc<Node>, ConfigError> {
        let c = &cfg.client;
        if !c.ping_interval.is_zero() && !c.pong_timeout.is_zero() && c.pong_timeout >= c.ping_interval {
            return Err(ConfigError::new("client.pong_timeout", "must be shorter than client.ping_interval"));
        }
        let hooks =
            crate::webhook::Hooks::new(crate::webhook::Webhooks::compile(&cfg.webhooks, &Proxies::compile(&cfg)?)?);
        let clock_now = clock.now_ms();
        let cluster = Arc::new(Cluster::new(identity.uid.clone(), clock_now));
        let time = Time::new(clock.clone(), TimerWheel::new(secs(c.ping_interval), secs(c.pong_timeout)));
        let hub = Arc::new(Hub::new(c.queue_max_size.clamp(1024, 1 << 20) / 64, clock.clone()));
        hub.tracer().set_node(&identity.name);
        broker
            .set_handler(Arc::new(Delivery::new(hub.clone(), cluster.clone(), clock)))
            .map_err(|e| ConfigError::new("engine", e.to_string()))?;
        let publication_rate = std::sync::Mutex::new(cluster::Rate::new(0, clock_now));
        let live = Live::build(cfg, proxy)?;
        Ok(Arc::new(Node {
            publication_rate,
            hub,
            live: ArcSwap::from_pointee(live),
            broker,
            presence,
            time,
            identity,
            cluster,
            last_heartbeat: std::sync::atomic::AtomicI64::new(0),
            user_buckets: crate::limits::UserBuckets::default(),
            hooks,
            rss: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Lifecycle webhooks: their options and where events go.
    pub fn hooks(&self) -> &crate::webhook::Hooks {
        &self.hooks
    }

    pub(crate) fn user_buckets(&self) -> &crate::limits::UserBuckets {
        &self.user_buckets
    }

    /// The configuration in force (the parts a reload replaced included), held as it is now
    /// for as long as the caller keeps it.
    pub fn config(&self) -> Held<HubConfig> {
        Held { live: self.live.load_full(), get: Live::config }
    }

    /// The parts a reload replaces, as they are now, held until the caller drops the guard
    /// (the last holder of a replaced snapshot frees it). A guard costs what the read lock of
    /// a leaked reference did, less than an `Arc` clone: it does not touch the shared count
    /// unless a reload happens while it is held or the thread holds many
    /// (docs/benchmarks.md, "Configuration reload").
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Replaces the token keys, channel options, client limits and proxy routes with those of
    /// `cfg`, for every command from now on (commands in flight finish with the previous ones).
    /// Checked first: an error names the key and nothing changes. The caller decides which
    /// sections of `cfg` may differ from [`Node::config`]: the engines, webhooks, pings and the
    /// queue size were built from the configuration at start and keep it. The proxies' client
    /// stays: it knows the endpoints in force, so `cfg` must keep them (else
    /// [`Node::reconfigure_with`]).
    pub fn reconfigure(&self, cfg: HubConfig) -> Result<(), ConfigError> {
        let port = self.live.load().backend.port();
        self.reconfigure_with(cfg, port)
    }

    /// [`Node::reconfigure`] with the proxies of `cfg` reached through `port`, a client made
    /// for them (`None`: no proxy configured). Proxy calls in flight finish with the previous
    /// proxies and client; the next call of any connection goes to the new ones.
    pub fn reconfigure_with(&self, cfg: HubConfig, port: Option<Arc<dyn ProxyPort>>) -> Result<(), ConfigError> {
        let live = Live::build(cfg, port)?;
        self.live.store(Arc::new(live));
        Ok(())
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The channel rules in force, held as they are now for as long as the caller keeps them.
    pub fn channels(&self) -> Held<Channels> {
        Held { live: self.live.load_full(), get: Live::channels }
    }

    /// The local indexes of connections and subscriptions.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn hub_arc(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// The timer wheel transports schedule their connections' deadlines on.
    pub fn timers(&self) -> &TimerWheel {
        self.time.timers()
    }

    /// Seconds since the node started (the timer wheel's clock), starting at 1.
    pub fn tick(&self) -> u32 {
        self.time.tick()
    }

    /// Converts a Unix time in seconds into a wheel tick.
    pub fn tick_at(&self, unix_secs: i64) -> u32 {
        self.time.tick_at(unix_secs)
    }

    /// Drives timers and engine housekeeping; call about once a second.
    pub fn run_timers(&self) -> usize {
        let now = self.tick();
        let fired = crate::wake::batch(|| self.time.timers().advance(now));
        if now.is_multiple_of(5) {
            self.broker.housekeep(self.time.now_ms());
        }
        fired
    }

    pub fn stats(&self) -> NodeStats {
        NodeStats {
            num_clients: self.hub.num_clients(),
            num_users: self.hub.num_users(),
            num_channels: self.hub.num_channels(),
            num_subs: self.hub.num_subs(),
            uptime_secs: self.time.uptime_secs(),
        }
    }

    /// The logic-layer proxies.
    pub fn backend(&self) -> Held<Backend> {
        Held { live: self.live.load_full(), get: Live::backend }
    }

    pub(crate) fn time(&self) -> &Time {
        &self.time
    }

    /// The engine as sessions see it.
    pub(crate) fn engine(&self) -> Engine<'_> {
        Engine { node: self }
    }

    /// Publish options of a namespace.
    pub(crate) fn publish_options(&self, options: &ChannelOptions) -> PublishOptions {
        PublishOptions {
            history_size: if options.history_enabled() { options.history_size } else { 0 },
            history_ttl: options.history_ttl,
            history_meta_ttl: self.meta_ttl(options),
            idempotency_key: None,
            exclude_client: None,
        }
    }

    pub(crate) fn meta_ttl(&self, options: &ChannelOptions) -> Duration {
        if options.history_meta_ttl.is_zero() {
            self.live.load().cfg.channel.history_meta_ttl
        } else {
            options.history_meta_ttl
        }
    }

    /// Publishes into a channel stream and delivers it (used by client and API publishes).
    pub(crate) async fn publish_with(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<PublishOutcome, ErrorCode> {
        match self.broker.publish(channel, publication, opts).await {
            Ok(o) => {
                if !o.suppressed {
                    metrics::published();
                }
                Ok(o)
            }
            Err(e) => Err(engine_failure("publish", channel, e)),
        }
    }

    /// Whether the user's connections are counted in the presence storage (cluster-wide with a
    /// network engine) rather than only by the local hub.
    fn counts_users_in_presence(&self, user: &str) -> bool {
        let live = self.live.load();
        let c = &live.cfg.client;
        c.user_connection_limit > 0
            && !user.is_empty()
            && (self.clustered() || c.user_connection_limit_mode == crate::config::LIMIT_EVICT_OLDEST)
    }

    /// Admits a new connection of `user` under `client.user_connection_limit` across the
    /// cluster: its connections are kept as presence entries under a name no channel can have.
    /// Over the limit, either this connection is refused (3504) or the oldest ones are closed
    /// with 3504 wherever they are. Check and add are two steps, so connections racing within
    /// one round trip to the engine may both pass.
    pub(crate) async fn admit_user(&self, user: &str, client: &str) -> Result<(), DisconnectReason> {
        if !self.counts_users_in_presence(user) {
            return Ok(());
        }
        let limit = self.live.load().cfg.client.user_connection_limit;
        let key = user_key(user);
        let current = self.presence.presence(&key).await.map_err(|e| {
            tracing::warn!(error = %e, "user connection count failed");
            DISCONNECT_SERVER_ERROR
        })?;
        let mut others: Vec<(i64, String)> = current
            .into_iter()
            .filter(|(id, _)| id != client)
            .map(|(id, info)| (std::str::from_utf8(&info.chan_info).ok().and_then(|t| t.parse().ok()).unwrap_or(0), id))
            .collect();
        if others.len() >= limit {
            if self.live.load().cfg.client.user_connection_limit_mode != crate::config::LIMIT_EVICT_OLDEST {
                metrics::user_limit("refused");
                return Err(DISCONNECT_CONNECTION_LIMIT);
            }
            others.sort();
            let excess = others.len() + 1 - limit;
            for (_, id) in others.into_iter().take(excess) {
                metrics::user_limit("evicted");
                let command = Command::Disconnect {
                    user: user.to_owned(),
                    client: id.clone(),
                    whitelist: Vec::new(),
                    code: DISCONNECT_CONNECTION_LIMIT.code,
                    reason: DISCONNECT_CONNECTION_LIMIT.reason.to_string(),
                };
                cluster::apply(&self.hub, command.clone());
                let _ = self.tell_cluster(command).await;
                let _ = self.presence.remove_presence(&key, &id).await;
            }
        }
        let info = ClientInfo {
            user: user.to_owned(),
            client: client.to_owned(),
            chan_info: Bytes::from(self.time.now_ms().to_string()),
            ..Default::default()
        };
        self.presence.add_presence(&key, info).await.map_err(|e| {
            tracing::warn!(error = %e, "user connection count failed");
            DISCONNECT_SERVER_ERROR
        })
    }

    /// Forgets a connection admitted by [`Node::admit_user`].
    pub(crate) async fn release_user(&self, user: &str, client: &str) {
        if self.counts_users_in_presence(user)
            && let Err(e) = self.presence.remove_presence(&user_key(user), client).await
        {
            tracing::debug!(error = %e, "user connection release failed");
        }
    }

    /// Whether this node is part of a cluster (its engine carries control messages).
    pub fn clustered(&self) -> bool {
        self.broker.delivers_control()
    }

    /// The node clock's time, Unix ms.
    pub(crate) fn time_now_ms(&self) -> i64 {
        self.time.now_ms()
    }

    /// Records the process's resident memory (the server measures it; the hub does no I/O).
    pub fn set_rss(&self, bytes: u64) {
        self.rss.store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// What this node announces about itself.
    pub fn node_info(&self) -> NodeInfo {
        let stats = self.stats();
        NodeInfo {
            uid: self.identity.uid.clone(),
            name: self.identity.name.clone(),
            version: self.identity.version.clone(),
            num_clients: stats.num_clients,
            num_users: stats.num_users,
            num_channels: stats.num_channels,
            num_subs: stats.num_subs,
            uptime: stats.uptime_secs,
            publications_per_second: self
                .publication_rate
                .lock()
                .expect("rate")
                .sample(self.hub.num_publications(), self.time.now_ms()),
            num_msgs_in: self.hub.messages().0,
            num_msgs_out: self.hub.messages().1,
            rss: self.rss.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The live nodes of the cluster, this one first (the `info` API).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        if !self.clustered() {
            return vec![self.node_info()];
        }
        let now = self.time.now_ms();
        // This node's own entry is always fresh, whatever the engine did with its heartbeat,
        // and comes first (then the others by name), as it did before clusters.
        let own = self.node_info();
        self.cluster.node_seen(own.clone(), now);
        let mut nodes = self.cluster.nodes(now);
        nodes.retain(|n| n.uid != own.uid);
        nodes.insert(0, own);
        nodes
    }

    /// Cluster housekeeping; call about once a second. Every [`cluster::HEARTBEAT`] the node
    /// announces itself to the others and sends itself a delivery probe through the engine.
    pub async fn cluster_tick(&self) {
        use std::sync::atomic::Ordering;
        if !self.clustered() {
            return;
        }
        let now = self.time.now_ms();
        let last = self.last_heartbeat.load(Ordering::Relaxed);
        if now - last < cluster::HEARTBEAT {
            return;
        }
        self.last_heartbeat.store(now, Ordering::Relaxed);
        let uid = &self.identity.uid;
        let heartbeat = cluster::encode(uid, &Command::Node(self.node_info()));
        if let Err(e) = self.broker.publish_control(None, heartbeat).await {
            metrics::control_send_failed();
            tracing::debug!(error = %e, "node heartbeat not sent");
        }
        let probe = cluster::encode(uid, &self.cluster.next_probe(now));
        if let Err(e) = self.broker.publish_control(Some(uid), probe).await {
            metrics::control_send_failed();
            tracing::debug!(error = %e, "delivery probe not sent");
        }
    }

    /// `Err(reason)` when the node cannot serve its clients fully: the engine is unreachable
    /// or, in a cluster, does not deliver (the probe did not come back).
    pub fn health(&self) -> Result<(), String> {
        if !self.broker.healthy() {
            return Err("broker unavailable: its connection is down".into());
        }
        if !self.presence.healthy() {
            return Err("presence storage unavailable: its connection is down".into());
        }
        if self.clustered() {
            self.cluster.delivering(self.time.now_ms())?;
        }
        Ok(())
    }

    /// Closes every connection with `reason` (shutdown).
    pub fn close_all(&self, reason: DisconnectReason) -> usize {
        let links = self.hub.all_links();
        for l in &links {
            l.close(reason.clone());
        }
        links.len()
    }
}

/// The presence name under which a user's connections are counted: no channel contains NUL.
fn user_key(user: &str) -> String {
    format!("\u{0}user:{user}")
}

/// An engine failure as a client sees it (error 100), logged with what failed.
fn engine_failure(op: &'static str, channel: &str, e: BrokerError) -> ErrorCode {
    tracing::warn!(channel, error = %e, "{op} failed");
    ERROR_INTERNAL
}

/// The engine as a session sees it: the broker and presence manager, plus the publish and
/// history rules it shares with the server API.
//
// A view of the node (8 bytes) rather than a copy of its references: command futures hold it
// across awaits.
#[derive(Clone, Copy)]
pub(crate) struct Engine<'a> {
    node: &'a Node,
}

impl<'a> Engine<'a> {
    pub(crate) fn broker(self) -> &'a dyn Broker {
        &*self.node.broker
    }

    pub(crate) fn presence(self) -> &'a dyn PresenceManager {
        &*self.node.presence
    }

    pub(crate) fn publish_options(self, options: &ChannelOptions) -> PublishOptions {
        self.node.publish_options(options)
    }

    pub(crate) fn meta_ttl(self, options: &ChannelOptions) -> Duration {
        self.node.meta_ttl(options)
    }

    pub(crate) fn admit_user(
        self,
        user: &'a str,
        client: &'a str,
    ) -> impl Future<Output = Result<(), DisconnectReason>> + 'a {
        self.node.admit_user(user, client)
    }

    pub(crate) fn release_user(self, user: &'a str, client: &'a str) -> impl Future<Output = ()> + 'a {
        self.node.release_user(user, client)
    }

    // The node's futures are returned as they are: an `async fn` here would wrap them in a
    // second frame.
    pub(crate) fn publish_with(
        self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> impl Future<Output = Result<PublishOutcome, ErrorCode>> {
        self.node.publish_with(channel, publication, opts)
    }

    pub(crate) fn read_history(
        self,
        channel: &str,
        options: &ChannelOptions,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> impl Future<Output = Result<HistorySlice, ErrorCode>> {
        self.node.read_history(channel, options, limit, since, reverse)
    }
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

/// Compiles a glob (`*`, `?`, `[...]`) into an anchored regex.
pub(crate) fn glob(pattern: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                    if c == '\\' || c == '[' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                if !closed {
                    return None;
                }
                re.push(']');
            }
            '\\' => re.push_str(&regex::escape(&chars.next()?.to_string())),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Arc<Node> {
        let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
        Node::new(HubConfig::default(), identity, Arc::new(crate::clock::ManualClock::new(0))).expect("valid")
    }

    /// Reloads used to leak every replaced snapshot; now the last holder frees it.
    #[test]
    fn replaced_snapshots_are_freed_once_no_command_holds_them() {
        let node = node();
        let in_flight = node.live();
        let held = Arc::downgrade(&*in_flight);
        let mut replaced = Vec::new();
        for limit in 1..=1000 {
            replaced.push(Arc::downgrade(&*node.live()));
            let mut cfg = node.config().clone();
            cfg.client.channel_limit = limit;
            node.reconfigure(cfg).expect("valid");
        }
        let alive = replaced.iter().filter(|w| w.upgrade().is_some()).count();
        assert_eq!(alive, 1, "only the snapshot a command still holds");
        assert!(held.upgrade().is_some());
        assert_eq!(in_flight.config().client.channel_limit, HubConfig::default().client.channel_limit);
        drop(in_flight);
        assert!(held.upgrade().is_none(), "freed with its last holder");
        assert_eq!(node.config().client.channel_limit, 1000);
        // The node's own reference and the one just taken: nothing else holds the current one.
        assert_eq!(Arc::strong_count(&node.live.load_full()), 2);
    }

    #[test]
    fn glob_matches() {
        let g = glob("chat:*").unwrap();
        assert!(g.is_match("chat:room"));
        assert!(g.is_match("chat:"));
        assert!(!g.is_match("news:chat:"));
        assert!(glob("a?c").unwrap().is_match("abc"));
        assert!(glob("[ab]x").unwrap().is_match("bx"));
        assert!(!glob("[!ab]x").unwrap().is_match("bx"));
        assert!(glob("a.b").unwrap().is_match("a.b"));
        assert!(!glob("a.b").unwrap().is_match("axb"));
        assert!(glob("[ab").is_none());
    }
}
