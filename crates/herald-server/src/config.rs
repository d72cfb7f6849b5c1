//! Herald's configuration: the Centrifugo v6 nested layout and option names, so a Centrifugo
//! config file can be reused (only the environment prefix changes: `HERALD_` instead of
//! `CENTRIFUGO_`).
//!
//! Sources, highest priority first: command-line flags, `HERALD_*` environment variables, the
//! config file (JSON, YAML or TOML by extension), defaults. See `loader.rs`.

use std::time::Duration;

use herald_hub::HubConfig;
use herald_hub::config::{ChannelConfig, ClientConfig, NamedProxy, RpcConfig};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub http_server: HttpServerConfig,
    pub http_api: HttpApiConfig,
    pub client: ClientConfig,
    pub channel: ChannelConfig,
    /// RPC namespaces and the RPC proxy.
    pub rpc: RpcConfig,
    /// Named logic-layer proxies.
    pub proxies: Vec<NamedProxy>,
    /// Lifecycle webhooks (Herald's own section), sent to a named proxy.
    pub webhooks: herald_hub::webhook::WebhookConfig,
    pub websocket: WebsocketConfig,
    pub sse: StreamTransportConfig,
    pub http_stream: StreamTransportConfig,
    pub emulation: EmulationConfig,
    pub uni_websocket: UniWebsocketConfig,
    pub uni_sse: StreamTransportConfig,
    pub uni_http_stream: StreamTransportConfig,
    pub uni_long_poll: LongPollConfig,
    pub engine: EngineConfig,
    pub broker: BrokerConfig,
    pub presence_manager: PresenceManagerConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    pub prometheus: PrometheusConfig,
    pub health: HealthConfig,
    pub node: NodeConfig,
    pub runtime: RuntimeConfig,
    /// Address lists and trusted proxies (Herald's own section).
    pub access: crate::edge::AccessConfig,
    /// Herald's own rate limits.
    pub limits: crate::edge::LimitsConfig,
    /// Gateway routes to the logic layer's HTTP APIs (Herald's own section).
    pub gateway: crate::edge::gateway::GatewayConfig,
    /// The admin console (off by default).
    pub admin: AdminConfig,
    /// OpenTelemetry span export (the `otlp` cargo feature).
    pub opentelemetry: OpenTelemetryConfig,
}

impl Config {
    /// Herald's own endpoints: (config key, path, enabled). Routes and the echo endpoint must
    /// not take their paths.
    pub fn endpoints(&self) -> Vec<(&'static str, &str, bool)> {
        vec![
            ("http_api.handler_prefix", self.http_api.handler_prefix.as_str(), !self.http_api.disabled),
            ("websocket.handler_prefix", self.websocket.handler_prefix.as_str(), !self.websocket.disabled),
            ("prometheus.handler_prefix", self.prometheus.handler_prefix.as_str(), self.prometheus.enabled),
            ("health.handler_prefix", self.health.handler_prefix.as_str(), self.health.enabled),
            ("sse.handler_prefix", self.sse.path(SSE_PATH), self.sse.enabled),
            ("http_stream.handler_prefix", self.http_stream.path(HTTP_STREAM_PATH), self.http_stream.enabled),
            (
                "emulation.handler_prefix",
                self.emulation.handler_prefix.as_str(),
                self.sse.enabled || self.http_stream.enabled,
            ),
            ("uni_websocket.handler_prefix", self.uni_websocket.handler_prefix.as_str(), self.uni_websocket.enabled),
            ("uni_sse.handler_prefix", self.uni_sse.path(UNI_SSE_PATH), self.uni_sse.enabled),
            (
                "uni_http_stream.handler_prefix",
                self.uni_http_stream.path(UNI_HTTP_STREAM_PATH),
                self.uni_http_stream.enabled,
            ),
            ("uni_long_poll.handler_prefix", self.uni_long_poll.handler_prefix.as_str(), self.uni_long_poll.enabled),
        ]
    }

    /// The part the hub needs.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            client: self.client.clone(),
            channel: self.channel.clone(),
            rpc: self.rpc.clone(),
            proxies: self.proxies.clone(),
            webhooks: self.webhooks.clone(),
        }
    }
}

/// `http_server`: where clients and the API connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpServerConfig {
    /// Interface to bind; empty means all interfaces.
    pub address: String,
    pub port: u16,
    /// Largest accepted HTTP request head (request line + headers), bytes.
    pub max_request_head_size: usize,
    /// Time allowed to send a complete request head, counted from its first byte; applies to
    /// every request on a keep-alive connection (slow-loris guard).
    #[serde(with = "herald_hub::duration")]
    pub request_head_timeout: Duration,
    /// How long a keep-alive HTTP connection may wait, after an answer, for the first byte of
    /// its next request before it is closed. Not applied to WebSocket connections.
    #[serde(with = "herald_hub::duration")]
    pub idle_timeout: Duration,
    /// File descriptors kept free for everything but client connections: new connections are
    /// accepted and closed at once while the open ones reach the process's file limit
    /// (`RLIMIT_NOFILE`) minus this reserve.
    pub file_limit_reserve: usize,
    /// `http_server.tls`: TLS on the listening port (every endpoint), and on the internal port
    /// when there is one.
    pub tls: TlsConfig,
    /// A second port for the server API, `/metrics`, `/health` and the admin endpoints, which are
    /// then no longer served on `port` (Centrifugo v6). Unset: everything on `port`. `0` picks a
    /// free port (tests). Centrifugo writes it as a string: `"9000"` is accepted too.
    #[serde(deserialize_with = "port_or_string")]
    pub internal_port: Option<u16>,
    /// Interface of the internal port; empty means `address`.
    pub internal_address: String,
}

/// `9000`, `"9000"`, or `""` / `null` for none.
fn port_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Port {
        Number(u16),
        Text(String),
    }
    match Option::<Port>::deserialize(d)? {
        None => Ok(None),
        Some(Port::Number(n)) => Ok(Some(n)),
        Some(Port::Text(t)) if t.trim().is_empty() => Ok(None),
        Some(Port::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a port number (0-65535), got {t:?}"))),
    }
}

/// `http_server.tls` (Centrifugo v6 names). `cert_pem` and `key_pem` each hold a PEM text, its
/// base64 encoding, or the path of a PEM file; files are read again when they change
/// (`crate::tls`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub enabled: bool,
    /// The certificate chain, leaf first.
    pub cert_pem: String,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// CA certificate(s) of client certificates: TLS clients are asked for one, a certificate
    /// presented is verified against these (a bad one fails the handshake), and the server API
    /// answers only connections that presented a valid one (client endpoints stay open).
    pub client_ca_pem: String,
    /// Herald's own: offer HTTP/2 in ALPN. The server API, `/emulation`, `/health`, `/metrics`,
    /// admin and gateway routes answer over it; the SSE, HTTP-streaming and long-polling
    /// transports need HTTP/1.1 and answer 505 over HTTP/2, so leave this off when browsers
    /// use them on this port (WebSocket clients open HTTP/1.1 connections by themselves).
    pub http2: bool,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            address: String::new(),
            port: 8000,
            max_request_head_size: 16 * 1024,
            request_head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            file_limit_reserve: 64,
            tls: TlsConfig::default(),
            internal_port: None,
            internal_address: String::new(),
        }
    }
}

/// `http_api`: the server API under `/api`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpApiConfig {
    /// Key required in `X-API-Key` (or `Authorization: apikey KEY`, or `?api_key=`).
    pub key: String,
    /// Accept requests without a key (development only).
    pub insecure: bool,
    /// Turn the server API off.
    pub disabled: bool,
    pub handler_prefix: String,
    /// Largest accepted request body, bytes.
    pub max_body_size: usize,
    /// Most commands in one `batch`: with `max_body_size` it bounds the work and the answer a
    /// single request can make a worker build.
    pub max_batch_commands: usize,
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        HttpApiConfig {
            key: String::new(),
            insecure: false,
            disabled: false,
            handler_prefix: "/api".into(),
            max_body_size: 10 * 1024 * 1024,
            max_batch_commands: 1000,
        }
    }
}

/// `websocket`: the bidirectional WebSocket transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebsocketConfig {
    pub disabled: bool,
    pub handler_prefix: String,
    /// Largest client message (frame payload or assembled message), bytes. Above it the
    /// connection is closed with 1009.
    pub message_size_limit: usize,
    /// Test-only: a path where WebSocket messages are echoed back through the real frame codec
    /// and transport, for the Autobahn conformance suite (`scripts/autobahn.sh`). Empty (the
    /// default) means off; it needs no token and runs no client protocol, so never set it on a
    /// production node.
    pub echo_endpoint_for_conformance_tests: String,
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        WebsocketConfig {
            disabled: false,
            handler_prefix: "/connection/websocket".into(),
            message_size_limit: 65536,
            echo_endpoint_for_conformance_tests: String::new(),
        }
    }
}

/// `sse`, `http_stream`, `uni_sse`, `uni_http_stream`: one HTTP streaming transport. Off by
/// default, as in Centrifugo; `handler_prefix` empty means the transport's default path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamTransportConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest request body (the connect request or command batch), bytes; 413 above it. 0 means
    /// the default, 65536.
    pub max_request_body_size: usize,
}

impl StreamTransportConfig {
    pub fn body_limit(&self) -> usize {
        if self.max_request_body_size == 0 { 65536 } else { self.max_request_body_size }
    }

    /// The configured path, or `default`.
    pub fn path<'a>(&'a self, default: &'a str) -> &'a str {
        if self.handler_prefix.is_empty() { default } else { &self.handler_prefix }
    }
}

/// `emulation`: the endpoint where SSE and HTTP-streaming clients send their commands. Served
/// when `sse` or `http_stream` is enabled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulationConfig {
    pub handler_prefix: String,
    /// Largest `/emulation` body, bytes; 413 above it.
    pub max_request_body_size: usize,
}

impl Default for EmulationConfig {
    fn default() -> Self {
        EmulationConfig { handler_prefix: "/emulation".into(), max_request_body_size: 65536 }
    }
}

/// `uni_websocket`: the unidirectional WebSocket transport. Off by default, as in Centrifugo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UniWebsocketConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest client message (the connect request), bytes; close 1009 above it.
    pub message_size_limit: usize,
}

impl Default for UniWebsocketConfig {
    fn default() -> Self {
        UniWebsocketConfig {
            enabled: false,
            handler_prefix: "/connection/uni_websocket".into(),
            message_size_limit: 65536,
        }
    }
}

/// `uni_long_poll`: HTTP long-polling (not a Centrifugo transport). Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LongPollConfig {
    pub enabled: bool,
    pub handler_prefix: String,
    /// Largest connect request (POST body or `cf_connect`), bytes; 413 above it.
    pub max_request_body_size: usize,
    /// How long a poll is held when nothing is waiting for the client; it then answers an
    /// empty batch.
    #[serde(with = "herald_hub::duration")]
    pub poll_timeout: Duration,
    /// How long a session lives without a poll (after the last poll ended) before it is closed
    /// (presence left, user connection freed).
    #[serde(with = "herald_hub::duration")]
    pub session_ttl: Duration,
}

impl Default for LongPollConfig {
    fn default() -> Self {
        LongPollConfig {
            enabled: false,
            handler_prefix: "/connection/uni_long_poll".into(),
            max_request_body_size: 65536,
            poll_timeout: Duration::from_secs(25),
            session_ttl: Duration::from_secs(30),
        }
    }
}

/// Default paths of the streaming transports (Centrifugo's).
pub const SSE_PATH: &str = "/connection/sse";
pub const HTTP_STREAM_PATH: &str = "/connection/http_stream";
pub const UNI_SSE_PATH: &str = "/connection/uni_sse";
pub const UNI_HTTP_STREAM_PATH: &str = "/connection/uni_http_stream";

/// `engine`: where channels, history and presence live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// `memory` (single node) or `redis` (a cluster of nodes over Redis).
    #[serde(rename = "type")]
    pub kind: String,
    pub redis: RedisEngineConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { kind: "memory".into(), redis: RedisEngineConfig::default() }
    }
}

/// `engine.redis`: the Redis engine (used when `engine.type` is `redis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisEngineConfig {
    /// `redis://[user:password@]host:port[/db]`, one or a list; with several, channels are
    /// spread over the instances by consistent hashing (each instance is independent).
    #[serde(deserialize_with = "one_or_many")]
    pub address: Vec<String>,
    /// Seed nodes of one Redis Cluster (`host:port` or `redis://`/`rediss://` URLs), one or a
    /// list: when given, `address` must be left out; Herald starts as long as one seed answers
    /// and discovers the other nodes from it.
    #[serde(deserialize_with = "one_or_many")]
    pub cluster_address: Vec<String>,
    /// Prefix of every key and PUB/SUB channel name.
    pub prefix: String,
    #[serde(with = "herald_hub::duration")]
    pub connect_timeout: Duration,
    /// Deadline of every Redis command.
    #[serde(with = "herald_hub::duration")]
    pub io_timeout: Duration,
    /// How long a presence entry lives in Redis unless its node refreshes it (a dead node's
    /// entries vanish after this).
    #[serde(with = "herald_hub::duration")]
    pub presence_ttl: Duration,
    /// TLS to Redis: `rediss://` addresses use it, and `enabled` turns `redis://` addresses and
    /// Sentinel masters into TLS connections too.
    pub tls: RedisTlsConfig,
    /// Sentinel's own credentials (for a `redis+sentinel://` address that does not give
    /// `sentinel_user`/`sentinel_password` itself).
    pub sentinel_user: String,
    pub sentinel_password: String,
    /// TLS to the sentinels themselves (the same options as `tls`), for a `redis+sentinel://`
    /// address; the master's connection follows `tls`.
    pub sentinel_tls: RedisTlsConfig,
}

/// `engine.redis.tls` (Centrifugo v6 names). PEM values hold a PEM text, its base64 encoding or
/// the path of a PEM file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisTlsConfig {
    pub enabled: bool,
    /// Client certificate (mutual TLS), with `key_pem`.
    pub cert_pem: String,
    pub key_pem: String,
    /// CA the servers' certificates must chain to (default: the system's roots).
    pub server_ca_pem: String,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
    /// Not supported (refused): the certificate must name the address's host.
    pub server_name: String,
    /// A server-side option, meaningless towards Redis (refused).
    pub client_ca_pem: String,
}

/// `broker`: a broker shared by a cluster of nodes, instead of the engine's pub/sub and history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    pub enabled: bool,
    /// `nats`.
    #[serde(rename = "type")]
    pub kind: String,
    pub nats: NatsBrokerConfig,
}

/// `broker.nats`: NATS with JetStream (history in a stream; presence in a key-value bucket
/// unless `presence_manager` names another one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NatsBrokerConfig {
    /// `nats://host:port`, or several comma-separated.
    pub url: String,
    /// Prefix of the subjects, stream and buckets, so that clusters can share a NATS server.
    pub prefix: String,
    #[serde(with = "herald_hub::duration")]
    pub dial_timeout: Duration,
    /// How long a request to NATS (history append or read, presence) may take.
    #[serde(with = "herald_hub::duration")]
    pub write_timeout: Duration,
    /// `file` (history survives a NATS restart) or `memory`.
    pub history_storage: String,
    /// JetStream replicas of the history stream and the buckets (≤ the NATS cluster size).
    pub replicas: usize,
    /// Presence entries of a node that stopped refreshing them expire after this.
    #[serde(with = "herald_hub::duration")]
    pub presence_ttl: Duration,
    /// Tries of a history append that other nodes keep beating to the channel's next offset
    /// (this node's own appends to a channel take turns and never race each other).
    pub append_attempts: usize,
    /// Publications with history that may wait for one channel's append turn on this node;
    /// more are refused.
    pub append_queue_per_channel: usize,
    /// The same over all channels of this node.
    pub append_queue_total: usize,
}

impl Default for RedisEngineConfig {
    fn default() -> Self {
        RedisEngineConfig {
            address: vec!["redis://127.0.0.1:6379".into()],
            cluster_address: Vec::new(),
            prefix: "herald".into(),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            presence_ttl: Duration::from_secs(60),
            tls: RedisTlsConfig::default(),
            sentinel_user: String::new(),
            sentinel_password: String::new(),
            sentinel_tls: RedisTlsConfig::default(),
        }
    }
}

impl Default for NatsBrokerConfig {
    fn default() -> Self {
        NatsBrokerConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "herald".into(),
            dial_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            history_storage: "file".into(),
            replicas: 1,
            presence_ttl: Duration::from_secs(60),
            append_attempts: 16,
            append_queue_per_channel: 1000,
            append_queue_total: 10_000,
        }
    }
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `presence_manager`: where presence lives when it is not the engine's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceManagerConfig {
    pub enabled: bool,
    /// `nats` (the key-value bucket of `broker.nats`).
    #[serde(rename = "type")]
    pub kind: String,
}

/// `log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error` or `none`.
    pub level: String,
    /// `text` or `json`.
    pub format: String,
    /// Main log file, appended to instead of stderr; empty: stderr. Reopened on SIGHUP.
    pub file: String,
    /// Warn and error lines are also appended here (whatever `level`); empty: nowhere else.
    pub error_file: String,
    /// Access lines (one per API request and per client connection closed) in the main log.
    pub access: bool,
    /// Access lines appended here instead (implies `access`); empty: see `access`.
    pub access_file: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
            file: String::new(),
            error_file: String::new(),
            access: false,
            access_file: String::new(),
        }
    }
}

/// `shutdown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// The process exits within this time after SIGTERM/SIGINT.
    #[serde(with = "herald_hub::duration")]
    pub timeout: Duration,
    /// Clients are closed with 3001 (reconnect) spread over this window, so they do not all
    /// reconnect elsewhere at the same instant. Must be shorter than `timeout`.
    #[serde(with = "herald_hub::duration")]
    pub client_close_window: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { timeout: Duration::from_secs(30), client_close_window: Duration::from_secs(5) }
    }
}

/// `prometheus`: metrics at `GET /metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    pub enabled: bool,
    pub handler_prefix: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig { enabled: true, handler_prefix: "/metrics".into() }
    }
}

/// `health`: `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthConfig {
    pub enabled: bool,
    pub handler_prefix: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig { enabled: true, handler_prefix: "/health".into() }
    }
}

/// `runtime.scheduler`: one single-threaded runtime per worker thread (the default).
pub const THREAD_PER_CORE: &str = "thread_per_core";
/// `runtime.scheduler`: one tokio multi-thread (work-stealing) runtime.
pub const WORK_STEALING: &str = "work_stealing";

/// `runtime`: the async runtime (Herald's own section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuntimeConfig {
    /// Worker threads; 0 means one per CPU.
    pub worker_threads: usize,
    /// `thread_per_core` or `work_stealing` (docs/architecture.md, "Threads").
    pub scheduler: String,
    /// A network engine's connections (Redis, NATS) on a thread of their own, so broker replies
    /// are not read behind a worker's fan-out (docs/architecture.md, "The broker thread").
    pub broker_thread: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig { worker_threads: 0, scheduler: THREAD_PER_CORE.into(), broker_thread: true }
    }
}

impl RuntimeConfig {
    /// The number of worker threads to start: `worker_threads`, or one per CPU.
    pub fn worker_count(&self) -> usize {
        if self.worker_threads > 0 {
            self.worker_threads
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }
}

/// `node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Node name shown by the `info` API (default: host name and port).
    pub name: String,
    /// How long a cluster-wide `channels` or `connections` call waits for the other nodes'
    /// answers; nodes that did not answer by then are named in the result (Herald's own).
    #[serde(with = "herald_hub::duration")]
    pub survey_timeout: Duration,
    /// The most channels a `channels` call lists (each node lists at most as many; Herald's
    /// own): an answer travels between nodes as one engine message.
    pub survey_max_channels: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig { name: String::new(), survey_timeout: Duration::from_secs(3), survey_max_channels: 10_000 }
    }
}

/// `admin`: the web console (`crate::admin`), off by default as in Centrifugo v6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// The console's login password.
    pub password: String,
    /// Signs session cookies and CSRF tokens.
    pub secret: String,
    /// No login at all (development only; start-up warns loudly).
    pub insecure: bool,
    /// Where the console is served; empty: `/`.
    pub handler_prefix: String,
    /// How long a login lasts (Herald's own).
    #[serde(with = "herald_hub::duration")]
    pub session_ttl: Duration,
    /// Failed logins allowed per client address and minute before 429 (Herald's own).
    pub login_failures_per_minute: u32,
    /// The longest user trace `trace_user` may start (Herald's own; also bounds the API).
    #[serde(with = "herald_hub::duration")]
    pub trace_max_duration: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: false,
            password: String::new(),
            secret: String::new(),
            insecure: false,
            handler_prefix: String::new(),
            session_ttl: Duration::from_secs(8 * 3600),
            login_failures_per_minute: 10,
            trace_max_duration: Duration::from_secs(600),
        }
    }
}

/// `opentelemetry`: span export over OTLP/HTTP (`crate::telemetry::otlp`), in builds with the
/// `otlp` feature; the collector and batching are set by the standard `OTEL_*` variables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpenTelemetryConfig {
    pub enabled: bool,
    /// A span per server API call (as in Centrifugo v6).
    pub api: bool,
    /// A span per logic-layer proxy call (Herald's own).
    pub proxy: bool,
}
