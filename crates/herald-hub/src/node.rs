//! The node: configuration, indexes, engines and the authenticator in one place, plus the
//! operations behind the server API (publish, broadcast, server-side subscribe, disconnect,
//! presence, history, channels, info).
//!
//! A [`crate::session::Session`] takes a `&Node` for every command and works through the
//! `Ports` the node hands out; transports hold an `Arc<Node>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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
use crate::config::{ChannelOptions, ConfigError, HubConfig};
use crate::hub::Hub;
use crate::link::{ClientLink, Control, ServerSubscribe};
use crate::metrics;
use crate::ports::{Authenticator, Ports, Time};
use crate::timer::TimerWheel;

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

/// The node.
pub struct Node {
    cfg: HubConfig,
    channels: Channels,
    /// Shared with the engine's delivery sink, which reaches the hub without the node.
    hub: Arc<Hub>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceManager>,
    auth: Box<dyn Authenticator>,
    time: Time,
    identity: NodeIdentity,
    user_buckets: crate::limits::UserBuckets,
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
        let channels = Channels::new(cfg.channel.clone())?;
        let auth = Box::new(JwtAuthenticator::new(&cfg.client)?);
        if let Some(ns) = cfg
            .client
            .subscribe_to_user_personal_channel
            .enabled
            .then_some(())
            .and(Some(&cfg.client.subscribe_to_user_personal_channel.personal_channel_namespace))
            && channels.namespace(ns).is_none()
        {
            return Err(ConfigError::new(
                "client.subscribe_to_user_personal_channel.personal_channel_namespace",
                format!("namespace {ns:?} is not configured"),
            ));
        }
        let c = &cfg.client;
        if !c.ping_interval.is_zero() && !c.pong_timeout.is_zero() && c.pong_timeout >= c.ping_interval {
            return Err(ConfigError::new("client.pong_timeout", "must be shorter than client.ping_interval"));
        }
        let time = Time::new(clock, TimerWheel::new(secs(c.ping_interval), secs(c.pong_timeout)));
        let hub = Arc::new(Hub::new(c.queue_max_size.clamp(1024, 1 << 20) / 64));
        broker
            .set_handler(Arc::new(Delivery::new(hub.clone())))
            .map_err(|e| ConfigError::new("engine", e.to_string()))?;
        let user_buckets = crate::limits::UserBuckets::default();
        Ok(Arc::new(Node { hub, cfg, channels, broker, presence, auth, time, identity, user_buckets }))
    }

    pub(crate) fn user_buckets(&self) -> &crate::limits::UserBuckets {
        &self.user_buckets
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    pub fn channels(&self) -> &Channels {
        &self.channels
    }

    /// The local indexes of connections and subscriptions.
    pub fn hub(&self) -> &Hub {
        &self.hub
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

    /// The ports a session works through for one command.
    pub(crate) fn ports(&self) -> Ports<'_> {
        Ports::new(self, &*self.auth)
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
        if options.history_meta_ttl.is_zero() { self.cfg.channel.history_meta_ttl } else { options.history_meta_ttl }
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

    /// The channel rules clients get (`Channels::check`), answered as API errors: 107 for an
    /// empty, too long, NUL-carrying or invalid name, 102 for an unknown namespace.
    fn api_resolve<'a>(&'a self, channel: &'a str) -> Result<Resolved<'a>, ErrorCode> {
        self.api_check(channel).map_err(ChannelError::code)
    }

    /// The channel rules clients get, for a channel named in a server API call: what is wrong
    /// with it, counted like every refusal. The API checks first with this so that its answer
    /// can say why (the `api_*` operations check again and answer only the code).
    pub fn api_check<'a>(&'a self, channel: &'a str) -> Result<Resolved<'a>, ChannelError> {
        self.channels.check(channel).inspect_err(|e| {
            metrics::channel_refused("api", e.label());
            tracing::debug!(error = %e, len = channel.len(), "server API channel refused");
        })
    }

    /// Server API `publish`.
    pub async fn api_publish(&self, channel: &str, req: &ApiPublish) -> Result<PublishOutcome, ErrorCode> {
        if req.data.is_empty() {
            return Err(ERROR_BAD_REQUEST);
        }
        let resolved = self.api_resolve(channel)?;
        if !resolved.ns.admit_publication(self.time.now_ms()) {
            return Err(ERROR_TOO_MANY_REQUESTS);
        }
        let mut opts = self.publish_options(resolved.options());
        if req.skip_history {
            opts.history_size = 0;
        }
        if !req.idempotency_key.is_empty() {
            opts.idempotency_key = Some(req.idempotency_key.clone());
        }
        if !req.exclude_client.is_empty() {
            opts.exclude_client = Some(Uuid::parse_str(&req.exclude_client).map_err(|_| ERROR_BAD_REQUEST)?);
        }
        let publication = Publication { data: req.data.clone(), tags: req.tags.clone(), ..Default::default() };
        self.publish_with(channel, publication, &opts).await
    }

    fn targets(&self, target: &Target) -> Vec<Arc<dyn ClientLink>> {
        let mut links = self.hub.user_links(&target.user);
        if !target.client.is_empty() {
            links.retain(|l| l.id().to_string() == target.client);
        }
        links
    }

    /// Server API `subscribe`: server-side subscription of a user's live connections.
    pub fn api_subscribe(&self, target: &Target, sub: ServerSubscribe) -> Result<(), ErrorCode> {
        self.api_resolve(&sub.channel)?;
        for link in self.targets(target) {
            link.control(Control::Subscribe(Box::new(sub.clone())));
        }
        Ok(())
    }

    /// Server API `unsubscribe` (empty channel: all channels).
    pub fn api_unsubscribe(&self, target: &Target, channel: &str) -> Result<(), ErrorCode> {
        if !channel.is_empty() {
            self.api_resolve(channel)?;
        }
        for link in self.targets(target) {
            link.control(Control::Unsubscribe { channel: channel.to_owned(), code: UNSUBSCRIBE_SERVER });
        }
        Ok(())
    }

    /// Server API `disconnect`: closes the user's connections except the whitelisted ones.
    pub fn api_disconnect(&self, target: &Target, whitelist: &[String], reason: DisconnectReason) {
        for link in self.targets(target) {
            let id = link.id().to_string();
            if !whitelist.contains(&id) {
                link.close(reason.clone());
            }
        }
    }

    /// Server API `refresh`.
    pub fn api_refresh(&self, target: &Target, expired: bool, expire_at: Option<i64>, info: Option<Bytes>) {
        for link in self.targets(target) {
            link.control(Control::Refresh { expired, expire_at, info: info.clone() });
        }
    }

    /// Server API `presence`.
    pub async fn api_presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, ErrorCode> {
        let resolved = self.api_resolve(channel)?;
        if !resolved.options().presence {
            return Err(ERROR_NOT_AVAILABLE);
        }
        let map = self.presence.presence(channel).await.map_err(|e| engine_failure("presence", channel, e))?;
        Ok(map.into_iter().collect())
    }

    /// Server API `presence_stats`: (clients, users).
    pub async fn api_presence_stats(&self, channel: &str) -> Result<(u32, u32), ErrorCode> {
        let resolved = self.api_resolve(channel)?;
        if !resolved.options().presence {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.presence.presence_stats(channel).await.map_err(|e| engine_failure("presence stats", channel, e))
    }

    /// Server API `history` (no limit cap, unlike the client command).
    pub async fn api_history(
        &self,
        channel: &str,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistorySlice, ErrorCode> {
        let resolved = self.api_resolve(channel)?;
        if !resolved.options().history_enabled() {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.read_history(channel, resolved.options(), limit, since, reverse).await
    }

    /// History read shared by the API and the client command.
    pub(crate) async fn read_history(
        &self,
        channel: &str,
        options: &ChannelOptions,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistorySlice, ErrorCode> {
        if reverse && since.as_ref().is_some_and(|s| s.offset == 0) {
            return Err(ERROR_BAD_REQUEST);
        }
        let since_epoch = since.as_ref().map(|s| s.epoch.clone()).unwrap_or_default();
        let query = HistoryQuery { since, limit, reverse, meta_ttl: self.meta_ttl(options) };
        let slice = self.broker.history(channel, query).await.map_err(|e| engine_failure("history", channel, e))?;
        if !since_epoch.is_empty() && since_epoch != slice.top.epoch {
            return Err(ERROR_UNRECOVERABLE_POSITION);
        }
        Ok(slice)
    }

    /// Server API `history_remove`.
    pub async fn api_history_remove(&self, channel: &str) -> Result<(), ErrorCode> {
        let resolved = self.api_resolve(channel)?;
        if !resolved.options().history_enabled() {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.broker.remove_history(channel).await.map_err(|e| engine_failure("history remove", channel, e))
    }

    /// Server API `channels`: channels with local subscribers matching a glob pattern
    /// (`*` any run of characters, `?` one character; empty pattern: all).
    pub fn api_channels(&self, pattern: &str) -> Result<BTreeMap<String, usize>, ErrorCode> {
        let matcher = if pattern.is_empty() { None } else { Some(glob(pattern).ok_or(ERROR_BAD_REQUEST)?) };
        Ok(self
            .hub
            .channels()
            .into_iter()
            .filter(|(name, _)| matcher.as_ref().is_none_or(|m| m.is_match(name)))
            .collect())
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
fn glob(pattern: &str) -> Option<regex::Regex> {
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
    use super::glob;

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
