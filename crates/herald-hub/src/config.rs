//! Configuration of channels, clients and tokens, in the Centrifugo v6 layout and option names
//! (so a Centrifugo config file can be reused). The server's top-level config embeds these.
//!
//! Defaults follow Centrifugo's. Every struct accepts missing keys (serde defaults); unknown keys
//! are reported by the server's loader, not rejected here.

use std::time::Duration;

use herald_auth::TokenConfig;
use serde::{Deserialize, Serialize};

pub use crate::proxy::config::{
    ChannelProxyConfig, ClientProxyConfig, HttpProxyOptions, NamedProxy, ProxyOptions, RpcConfig, RpcNamespace,
    RpcOptions, ToggledProxy,
};

/// Options of a channel namespace (or of channels without a namespace).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelOptions {
    /// Keep presence (who is subscribed) for channels of this namespace.
    pub presence: bool,
    /// Emit join and leave events when clients subscribe and unsubscribe.
    pub join_leave: bool,
    /// Push join/leave events to every subscriber, not only to those who asked.
    pub force_push_join_leave: bool,
    /// Publications kept in history per channel (needs `history_ttl` too).
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(with = "crate::duration")]
    pub history_ttl: Duration,
    /// How long a stream's position (offset and epoch) outlives its last publication. Zero
    /// means `channel.history_meta_ttl`.
    #[serde(with = "crate::duration")]
    pub history_meta_ttl: Duration,
    pub force_positioning: bool,
    pub allow_positioning: bool,
    pub force_recovery: bool,
    pub allow_recovery: bool,
    /// `stream` (default) or `cache` (recover only the latest publication).
    pub force_recovery_mode: RecoveryMode,
    pub allow_subscribe_for_client: bool,
    pub allow_subscribe_for_anonymous: bool,
    pub allow_publish_for_subscriber: bool,
    pub allow_publish_for_client: bool,
    pub allow_publish_for_anonymous: bool,
    pub allow_history_for_subscriber: bool,
    pub allow_history_for_client: bool,
    pub allow_history_for_anonymous: bool,
    pub allow_presence_for_subscriber: bool,
    pub allow_presence_for_client: bool,
    pub allow_presence_for_anonymous: bool,
    /// Allow `name#user1,user2` channels, subscribable by the listed users without a token.
    pub allow_user_limited_channels: bool,
    /// Regular expression the channel name (after the namespace) must match.
    pub channel_regex: String,
    /// Ask a backend whether a client may subscribe (instead of the `allow_subscribe_*`
    /// options), for subscriptions without a token to channels that are not user-limited.
    pub subscribe_proxy_enabled: bool,
    /// A name from `proxies`; empty means `channel.proxy.subscribe`.
    pub subscribe_proxy_name: String,
    /// Ask a backend whether a client may publish (instead of the `allow_publish_*` options).
    pub publish_proxy_enabled: bool,
    pub publish_proxy_name: String,
    /// Ask a backend to extend subscriptions that have an expiry.
    pub sub_refresh_proxy_enabled: bool,
    pub sub_refresh_proxy_name: String,
    /// Publications per second into this namespace's channels on this node, client and server
    /// API together (Herald's own option; 0: no limit). More are answered 111.
    pub publication_rate_limit: u32,
}

impl ChannelOptions {
    /// History is on when both size and TTL are set.
    pub fn history_enabled(&self) -> bool {
        self.history_size > 0 && !self.history_ttl.is_zero()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    #[default]
    Stream,
    Cache,
}

/// A named namespace: `name` plus its channel options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub name: String,
    #[serde(flatten)]
    pub options: ChannelOptions,
}

/// The `channel` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelConfig {
    pub without_namespace: ChannelOptions,
    pub namespaces: Vec<Namespace>,
    pub max_length: usize,
    pub private_prefix: String,
    pub namespace_boundary: String,
    pub user_boundary: String,
    pub user_separator: String,
    #[serde(with = "crate::duration")]
    pub history_meta_ttl: Duration,
    /// Default subscribe, publish and sub_refresh proxies.
    pub proxy: ChannelProxyConfig,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            without_namespace: ChannelOptions::default(),
            namespaces: Vec::new(),
            max_length: 255,
            private_prefix: "$".into(),
            namespace_boundary: ":".into(),
            user_boundary: "#".into(),
            user_separator: ",".into(),
            history_meta_ttl: Duration::from_secs(720 * 3600),
            proxy: ChannelProxyConfig::default(),
        }
    }
}

/// `client.subscribe_to_user_personal_channel`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersonalChannelConfig {
    pub enabled: bool,
    pub personal_channel_namespace: String,
}

/// The `client` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientConfig {
    pub token: TokenConfig,
    pub subscription_token: TokenConfig,
    /// Origin patterns (`*` wildcards) allowed to connect. Empty: only same-host origins.
    pub allowed_origins: Vec<String>,
    pub allow_anonymous_connect_without_token: bool,
    pub disallow_anonymous_connection_tokens: bool,
    /// Server ping interval. Zero disables pings.
    #[serde(with = "crate::duration")]
    pub ping_interval: Duration,
    #[serde(with = "crate::duration")]
    pub pong_timeout: Duration,
    /// Time allowed between dialing and the connect command.
    #[serde(with = "crate::duration")]
    pub stale_close_delay: Duration,
    /// Grace period after the connection expires before it is closed with 3005.
    #[serde(with = "crate::duration")]
    pub expired_close_delay: Duration,
    /// Grace period after a subscription expires before it is unsubscribed with 2501.
    #[serde(with = "crate::duration")]
    pub expired_sub_close_delay: Duration,
    /// Maximum channels one connection may subscribe to (client-side and server-side).
    pub channel_limit: usize,
    /// Maximum bytes queued to one client before it is disconnected with 3008.
    pub queue_max_size: usize,
    /// Maximum connections of one user (0: no limit), across the cluster with a network engine.
    pub user_connection_limit: usize,
    /// What happens to a connection over `user_connection_limit` (Herald's own option):
    /// `refuse_new` (the new one is closed with 3504) or `evict_oldest` (the oldest ones are
    /// closed with 3504, wherever they are; with a limit of 1, one connection per user).
    pub user_connection_limit_mode: String,
    pub history_max_publication_limit: usize,
    pub recovery_max_publication_limit: usize,
    pub subscribe_to_user_personal_channel: PersonalChannelConfig,
    /// Put the server time in connect results.
    pub connect_include_server_time: bool,
    /// Maximum commands accepted in one transport message.
    pub max_commands_per_frame: usize,
    /// The connect and refresh proxies.
    pub proxy: ClientProxyConfig,
    /// Commands per second per connection (Herald's own option; off by default).
    pub command_rate_limit: crate::limits::CommandRateLimit,
    /// Open client connections on this node (0: no limit); more get 503 before the upgrade.
    pub connection_limit: usize,
    /// New client connections per second on this node (0: no limit); more get 503.
    pub connection_rate_limit: u32,
}

/// `client.user_connection_limit_mode`: refuse the connection over the limit.
pub const LIMIT_REFUSE_NEW: &str = "refuse_new";
/// `client.user_connection_limit_mode`: close the user's oldest connections instead.
pub const LIMIT_EVICT_OLDEST: &str = "evict_oldest";

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            token: TokenConfig::default(),
            subscription_token: TokenConfig::default(),
            allowed_origins: Vec::new(),
            allow_anonymous_connect_without_token: false,
            disallow_anonymous_connection_tokens: false,
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(8),
            stale_close_delay: Duration::from_secs(10),
            expired_close_delay: Duration::from_secs(25),
            expired_sub_close_delay: Duration::from_secs(25),
            channel_limit: 128,
            queue_max_size: 1_048_576,
            user_connection_limit: 0,
            user_connection_limit_mode: LIMIT_REFUSE_NEW.into(),
            history_max_publication_limit: 300,
            recovery_max_publication_limit: 300,
            subscribe_to_user_personal_channel: PersonalChannelConfig::default(),
            connect_include_server_time: false,
            max_commands_per_frame: 256,
            proxy: ClientProxyConfig::default(),
            command_rate_limit: crate::limits::CommandRateLimit::default(),
            connection_limit: 0,
            connection_rate_limit: 0,
        }
    }
}

/// The part of the configuration the hub needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HubConfig {
    pub client: ClientConfig,
    pub channel: ChannelConfig,
    pub rpc: RpcConfig,
    /// Named proxies, referenced by `*_proxy_name`.
    pub proxies: Vec<NamedProxy>,
    /// Lifecycle webhooks (Herald's own section).
    pub webhooks: crate::webhook::WebhookConfig,
}

/// A configuration value the hub cannot run with, named by its config key (e.g.
/// `client.pong_timeout`) so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted config path of the offending value.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError { key: key.into(), problem: problem.into() }
    }

    /// From a `"key: problem"` message, the form herald-auth's verifier errors take.
    pub(crate) fn from_message(message: String) -> Self {
        match message.split_once(": ") {
            Some((key, problem)) => ConfigError::new(key, problem),
            None => ConfigError { key: String::new(), problem: message },
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() { f.write_str(&self.problem) } else { write!(f, "{}: {}", self.key, self.problem) }
    }
}

impl std::error::Error for ConfigError {}
