//! The logic layer behind the gateway: backend endpoints that decide connects, refreshes,
//! subscriptions, publications and RPC calls (Centrifugo's "proxy" events, same JSON shapes).
//!
//! - `config`: the options in Centrifugo v6 names;
//! - [`Proxies`]: the compiled table (every endpoint checked at start, names resolved);
//! - [`ProxyPort`]: the port the HTTP client implements in `herald-server` (this crate does no
//!   I/O); [`Backend`] builds request bodies, calls the port and maps answers;
//! - `wire`: request and answer shapes; `connect`: the [`ProxyAuthenticator`].
//!
//! A proxied command awaits the backend inside its own connection's task: other connections
//! keep running, and the waiting state lives in the boxed command future, not in the idle
//! connection.

pub mod config;
pub(crate) mod connect;
pub(crate) mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::broker::BoxFuture;
use crate::config::{ChannelOptions, ConfigError, HubConfig};
use crate::metrics;
use config::ProxyOptions;

pub use connect::ProxyAuthenticator;
pub(crate) use wire::Decision;
pub use wire::{APP_DISCONNECT_CODES, APP_ERROR_CODES, MAX_REASON_BYTES};

/// The proxy events, named as in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    SubRefresh,
    Rpc,
    /// A batch of lifecycle webhook events (`webhook`).
    Webhook,
}

impl ProxyKind {
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect",
            ProxyKind::Refresh => "refresh",
            ProxyKind::Subscribe => "subscribe",
            ProxyKind::Publish => "publish",
            ProxyKind::SubRefresh => "sub_refresh",
            ProxyKind::Rpc => "rpc",
            ProxyKind::Webhook => "webhook",
        }
    }
}

/// One endpoint, checked and ready to call.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    /// Index in [`Proxies::specs`].
    pub id: usize,
    /// Metric label: the event for the default proxies, the name for `proxies[]` entries.
    pub label: String,
    /// Config key of the endpoint, for messages.
    pub key: String,
    pub endpoint: String,
    pub timeout: Duration,
    /// Lower-case names of client HTTP headers to forward (connect).
    pub http_headers: Vec<String>,
    /// Lower-case names of the connect command's emulated `headers` to forward.
    pub emulated_headers: Vec<String>,
    /// Added to every request; forwarded client headers of the same name win.
    pub static_headers: Vec<(String, String)>,
    pub include_meta: bool,
    pub binary: bool,
    pub max_response_size: usize,
    /// `http.tls`, for an `https://` endpoint.
    pub tls: config::ClientTlsOptions,
}

/// Every configured proxy, compiled from the config.
#[derive(Debug, Default)]
pub struct Proxies {
    specs: Vec<ProxySpec>,
    connect: Option<usize>,
    refresh: Option<usize>,
    subscribe: Option<usize>,
    publish: Option<usize>,
    sub_refresh: Option<usize>,
    rpc: Option<usize>,
    named: HashMap<String, usize>,
    rpc_without: Option<usize>,
    rpc_namespaces: HashMap<String, Option<usize>>,
    rpc_boundary: String,
}

fn valid_proxy_name(name: &str) -> bool {
    name.len() >= 2 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Proxies {
    /// Checks and compiles the proxy options; errors name the key to fix.
    pub fn compile(cfg: &HubConfig) -> Result<Proxies, ConfigError> {
        let mut p = Proxies { rpc_boundary: cfg.rpc.namespace_boundary.clone(), ..Default::default() };
        for (i, named) in cfg.proxies.iter().enumerate() {
            let key = format!("proxies[{i}]");
            if !valid_proxy_name(&named.name) {
                return Err(ConfigError::new(format!("{key}.name"), "must match ^[-a-zA-Z0-9_.]{2,}$"));
            }
            if p.named.contains_key(&named.name) {
                return Err(ConfigError::new(format!("{key}.name"), format!("{:?} is used twice", named.name)));
            }
            let id = p.add(&named.proxy, named.name.clone(), &key, true)?.expect("required");
            p.named.insert(named.name.clone(), id);
        }
        let client = &cfg.client.proxy;
        if client.connect.enabled {
            p.connect = p.add(&client.connect.proxy, "connect".into(), "client.proxy.connect", true)?;
        }
        if client.refresh.enabled {
            p.refresh = p.add(&client.refresh.proxy, "refresh".into(), "client.proxy.refresh", true)?;
        }
        let channel = &cfg.channel.proxy;
        p.subscribe = p.add(&channel.subscribe, "subscribe".into(), "channel.proxy.subscribe", false)?;
        p.publish = p.add(&channel.publish, "publish".into(), "channel.proxy.publish", false)?;
        p.sub_refresh = p.add(&channel.sub_refresh, "sub_refresh".into(), "channel.proxy.sub_refresh", false)?;
        p.rpc = p.add(&cfg.rpc.proxy, "rpc".into(), "rpc.proxy", false)?;
        let sections = std::iter::once(("channel.without_namespace".to_owned(), &cfg.channel.without_namespace)).chain(
            cfg.channel.namespaces.iter().enumerate().map(|(i, ns)| (format!("channel.namespaces[{i}]"), &ns.options)),
        );
        for (key, o) in sections {
            for kind in [ProxyKind::Subscribe, ProxyKind::Publish, ProxyKind::SubRefresh] {
                p.check_channel_route(&key, o, kind)?;
            }
        }
        p.rpc_without = p.rpc_route("rpc.without_namespace", &cfg.rpc.without_namespace)?;
        for (i, ns) in cfg.rpc.namespaces.iter().enumerate() {
            let key = format!("rpc.namespaces[{i}]");
            let route = p.rpc_route(&key, &ns.options)?;
            p.rpc_namespaces.insert(ns.name.clone(), route);
        }
        Ok(p)
    }

    fn add(
        &mut self,
        o: &ProxyOptions,
        label: String,
        key: &str,
        required: bool,
    ) -> Result<Option<usize>, ConfigError> {
        let endpoint_key = format!("{key}.endpoint");
        if o.endpoint.is_empty() {
            return if required { Err(ConfigError::new(endpoint_key, "must be set")) } else { Ok(None) };
        }
        if o.endpoint.starts_with("grpc://") {
            return Err(ConfigError::new(endpoint_key, "GRPC proxies are not implemented; use an http:// endpoint"));
        }
        let https = o.endpoint.starts_with("https://");
        if !o.endpoint.starts_with("http://") && !https {
            return Err(ConfigError::new(endpoint_key, "must be an http:// or https:// URL"));
        }
        if o.http.tls.enabled && !https {
            // Options that would secure nothing: the endpoint is plain HTTP.
            return Err(ConfigError::new(format!("{key}.http.tls.enabled"), "needs an https:// endpoint"));
        }
        if o.timeout.is_zero() {
            return Err(ConfigError::new(format!("{key}.timeout"), "must be greater than zero"));
        }
        if o.max_response_size == 0 {
            return Err(ConfigError::new(format!("{key}.max_response_size"), "must be greater than zero"));
        }
        let lower = |names: &[String]| names.iter().map(|h| h.to_ascii_lowercase()).collect::<Vec<_>>();
        let mut static_headers: Vec<(String, String)> =
            o.static_http_headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
        for (k, v) in &o.http.static_headers {
            let k = k.to_ascii_lowercase();
            static_headers.retain(|(name, _)| *name != k);
            static_headers.push((k, v.clone()));
        }
        let id = self.specs.len();
        self.specs.push(ProxySpec {
            id,
            label,
            key: endpoint_key,
            endpoint: o.endpoint.clone(),
            timeout: o.timeout,
            http_headers: lower(&o.http_headers),
            emulated_headers: lower(&o.emulated_headers),
            static_headers,
            include_meta: o.include_connection_meta,
            binary: o.binary_encoding,
            max_response_size: o.max_response_size,
            tls: o.http.tls.clone(),
        });
        Ok(Some(id))
    }

    fn check_channel_route(&self, key: &str, o: &ChannelOptions, kind: ProxyKind) -> Result<(), ConfigError> {
        let (enabled, name) = channel_switch(o, kind);
        if !enabled {
            return Ok(());
        }
        if self.channel_route(o, kind).is_some() {
            return Ok(());
        }
        let event = kind.name();
        if name.is_empty() {
            Err(ConfigError::new(
                format!("{key}.{event}_proxy_enabled"),
                format!("needs channel.proxy.{event}.endpoint or {event}_proxy_name"),
            ))
        } else {
            Err(ConfigError::new(format!("{key}.{event}_proxy_name"), format!("no proxy named {name:?} in proxies")))
        }
    }

    fn rpc_route(&self, key: &str, o: &config::RpcOptions) -> Result<Option<usize>, ConfigError> {
        if !o.proxy_enabled {
            return Ok(None);
        }
        if o.proxy_name.is_empty() {
            return self.rpc.map(Some).ok_or_else(|| {
                ConfigError::new(format!("{key}.proxy_enabled"), "needs rpc.proxy.endpoint or proxy_name")
            });
        }
        self.named.get(&o.proxy_name).map(|id| Some(*id)).ok_or_else(|| {
            ConfigError::new(format!("{key}.proxy_name"), format!("no proxy named {:?} in proxies", o.proxy_name))
        })
    }

    /// Every compiled endpoint, by id.
    pub fn specs(&self) -> &[ProxySpec] {
        &self.specs
    }

    /// An entry of `proxies[]` by name.
    pub fn named(&self, name: &str) -> Option<&ProxySpec> {
        self.named.get(name).map(|i| &self.specs[*i])
    }

    pub fn connect(&self) -> Option<&ProxySpec> {
        self.connect.map(|i| &self.specs[i])
    }

    pub fn refresh(&self) -> Option<&ProxySpec> {
        self.refresh.map(|i| &self.specs[i])
    }

    /// The proxy a namespace sends `kind` to, when it turned that proxy on.
    pub fn channel_route(&self, o: &ChannelOptions, kind: ProxyKind) -> Option<&ProxySpec> {
        let (enabled, name) = channel_switch(o, kind);
        if !enabled {
            return None;
        }
        let id = if name.is_empty() {
            match kind {
                ProxyKind::Subscribe => self.subscribe,
                ProxyKind::Publish => self.publish,
                ProxyKind::SubRefresh => self.sub_refresh,
                _ => None,
            }
        } else {
            self.named.get(name).copied()
        };
        id.map(|i| &self.specs[i])
    }

    /// The proxy an RPC method goes to: `ns:name` by its namespace, others by
    /// `rpc.without_namespace`. `None`: no backend serves it.
    pub fn rpc_route_for(&self, method: &str) -> Option<&ProxySpec> {
        let id = match method.split_once(self.rpc_boundary.as_str()) {
            Some((ns, _)) if !self.rpc_boundary.is_empty() => self.rpc_namespaces.get(ns).copied().flatten(),
            _ => self.rpc_without,
        };
        id.map(|i| &self.specs[i])
    }

    /// Lower-case names of the client HTTP headers a transport must keep for the connect
    /// proxy (allow-listed ones and `traceparent`); empty when there is no connect proxy.
    pub fn connect_header_names(&self) -> Vec<String> {
        let Some(spec) = self.connect() else { return Vec::new() };
        let mut names = spec.http_headers.clone();
        if !names.iter().any(|n| n == "traceparent") {
            names.push("traceparent".into());
        }
        names
    }
}

fn channel_switch(o: &ChannelOptions, kind: ProxyKind) -> (bool, &str) {
    match kind {
        ProxyKind::Subscribe => (o.subscribe_proxy_enabled, &o.subscribe_proxy_name),
        ProxyKind::Publish => (o.publish_proxy_enabled, &o.publish_proxy_name),
        ProxyKind::SubRefresh => (o.sub_refresh_proxy_enabled, &o.sub_refresh_proxy_name),
        _ => (false, ""),
    }
}

/// One call for the port to make: POST `body` (JSON) to the spec's endpoint.
#[derive(Debug)]
pub struct ProxyRequest<'a> {
    pub spec: &'a ProxySpec,
    pub kind: ProxyKind,
    pub body: Vec<u8>,
    /// Client headers to forward (lower-case names) for connect; for the calls after it, the
    /// connection's `traceparent` alone. A `traceparent` is continued rather than forwarded as is.
    pub headers: &'a [(String, String)],
    /// The client's address, sent as `X-Forwarded-For`.
    pub peer: IpAddr,
}

/// Why a call brought no answer. Clients get error 100 (refreshes are retried later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyFailure {
    /// No answer within the proxy's `timeout`.
    Timeout,
    /// The endpoint could not be reached or the connection broke.
    Unavailable(String),
    /// An HTTP status other than 200.
    Status(u16),
    /// The answer body exceeded `max_response_size`.
    TooLarge,
    /// The answer was not a valid proxy answer.
    BadAnswer(String),
}

impl std::fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyFailure::Timeout => f.write_str("timed out"),
            ProxyFailure::Unavailable(e) => write!(f, "unavailable: {e}"),
            ProxyFailure::Status(s) => write!(f, "HTTP status {s}"),
            ProxyFailure::TooLarge => f.write_str("answer larger than max_response_size"),
            ProxyFailure::BadAnswer(e) => write!(f, "bad answer: {e}"),
        }
    }
}

/// The HTTP side of the proxies, implemented in `herald-server`: POSTs a body, returns the 200
/// answer's body. It records its own request counts and latencies.
pub trait ProxyPort: Send + Sync {
    fn call<'a>(&'a self, request: ProxyRequest<'a>) -> BoxFuture<'a, Result<Bytes, ProxyFailure>>;
}

/// The compiled proxies and the port that reaches them.
pub struct Backend {
    table: Proxies,
    port: Option<Arc<dyn ProxyPort>>,
}

impl Backend {
    pub fn new(table: Proxies, port: Option<Arc<dyn ProxyPort>>) -> Self {
        Backend { table, port }
    }

    pub fn table(&self) -> &Proxies {
        &self.table
    }

    /// The client that reaches the proxies.
    pub fn port(&self) -> Option<Arc<dyn ProxyPort>> {
        self.port.clone()
    }

    /// Calls `spec` and reads what the backend decided.
    pub(crate) async fn call<R: for<'de> Deserialize<'de> + Default>(
        &self,
        spec: &ProxySpec,
        kind: ProxyKind,
        body: Vec<u8>,
        headers: &[(String, String)],
        peer: IpAddr,
    ) -> Result<Decision<R>, ProxyFailure> {
        let Some(port) = &self.port else {
            return Err(ProxyFailure::Unavailable("no proxy client installed".into()));
        };
        let outcome = match port.call(ProxyRequest { spec, kind, body, headers, peer }).await {
            Ok(body) => wire::decide::<R>(&body).map_err(ProxyFailure::BadAnswer),
            Err(e) => Err(e),
        };
        let label = match &outcome {
            Ok(Decision::Allow(_)) => "allow",
            Ok(Decision::Refuse(crate::ports::Refusal::Disconnect(_))) => "disconnect",
            Ok(Decision::Refuse(_)) => "error",
            Err(ProxyFailure::BadAnswer(_)) => "bad_answer",
            Err(_) => "failed",
        };
        metrics::proxy_decision(kind.name(), label);
        match &outcome {
            // A backend bug: worth a line each time.
            Err(e @ ProxyFailure::BadAnswer(_)) => {
                tracing::warn!(proxy = %spec.label, kind = kind.name(), error = %e, "proxy answer refused")
            }
            // Outages are logged by the port (throttled) and counted in metrics.
            Err(e) => tracing::debug!(proxy = %spec.label, kind = kind.name(), error = %e, "proxy call failed"),
            Ok(_) => {}
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NamedProxy, Namespace, RpcNamespace, RpcOptions};

    fn endpoint(url: &str) -> ProxyOptions {
        ProxyOptions { endpoint: url.into(), ..Default::default() }
    }

    #[test]
    fn routes_resolve_defaults_and_names() {
        let mut cfg = HubConfig::default();
        cfg.client.proxy.connect.enabled = true;
        cfg.client.proxy.connect.proxy = endpoint("http://127.0.0.1:9/connect");
        cfg.client.proxy.connect.proxy.http_headers = vec!["Cookie".into(), "Authorization".into()];
        cfg.channel.proxy.subscribe = endpoint("http://127.0.0.1:9/subscribe");
        cfg.proxies = vec![NamedProxy { name: "billing".into(), proxy: endpoint("http://127.0.0.1:9/billing") }];
        cfg.channel.without_namespace.subscribe_proxy_enabled = true;
        let mut o = ChannelOptions { publish_proxy_enabled: true, ..Default::default() };
        o.publish_proxy_name = "billing".into();
        cfg.channel.namespaces = vec![Namespace { name: "pay".into(), options: o.clone() }];
        cfg.rpc.namespaces = vec![RpcNamespace {
            name: "bill".into(),
            options: RpcOptions { proxy_enabled: true, proxy_name: "billing".into() },
        }];
        let p = Proxies::compile(&cfg).unwrap();
        assert_eq!(p.connect().unwrap().label, "connect");
        assert_eq!(p.connect_header_names(), ["cookie", "authorization", "traceparent"]);
        let sub = p.channel_route(&cfg.channel.without_namespace, ProxyKind::Subscribe).unwrap();
        assert_eq!(sub.endpoint, "http://127.0.0.1:9/subscribe");
        assert!(p.channel_route(&cfg.channel.without_namespace, ProxyKind::Publish).is_none());
        assert_eq!(p.channel_route(&o, ProxyKind::Publish).unwrap().label, "billing");
        assert_eq!(p.rpc_route_for("bill:charge").unwrap().label, "billing");
        assert!(p.rpc_route_for("other:x").is_none());
        assert!(p.rpc_route_for("plain").is_none(), "rpc.without_namespace is off");
    }

    #[test]
    fn bad_settings_name_their_key() {
        let check = |cfg: &HubConfig| Proxies::compile(cfg).expect_err("refused");
        let mut cfg = HubConfig::default();
        cfg.client.proxy.connect.enabled = true;
        assert_eq!(check(&cfg).key, "client.proxy.connect.endpoint");
        cfg.client.proxy.connect.proxy = endpoint("ftp://backend/connect");
        let e = check(&cfg);
        assert_eq!(e.key, "client.proxy.connect.endpoint");
        assert!(e.problem.contains("https://"), "{e}");
        cfg.client.proxy.connect.proxy = endpoint("https://backend/connect");
        assert!(Proxies::compile(&cfg).is_ok(), "https:// endpoints are accepted");
        cfg.client.proxy.connect.proxy = endpoint("http://backend/connect");
        cfg.client.proxy.connect.proxy.http.tls.enabled = true;
        assert_eq!(check(&cfg).key, "client.proxy.connect.http.tls.enabled", "TLS options on plain HTTP");
        cfg.client.proxy.connect.proxy = endpoint("grpc://backend:10001");
        assert!(check(&cfg).problem.contains("GRPC"));

        let mut cfg = HubConfig::default();
        cfg.channel.namespaces = vec![Namespace {
            name: "ns".into(),
            options: ChannelOptions { sub_refresh_proxy_enabled: true, ..Default::default() },
        }];
        assert_eq!(check(&cfg).key, "channel.namespaces[0].sub_refresh_proxy_enabled");
        cfg.channel.namespaces[0].options.sub_refresh_proxy_name = "nope".into();
        assert_eq!(check(&cfg).key, "channel.namespaces[0].sub_refresh_proxy_name");

        let mut cfg = HubConfig::default();
        cfg.rpc.without_namespace.proxy_enabled = true;
        assert_eq!(check(&cfg).key, "rpc.without_namespace.proxy_enabled");
        cfg.rpc.proxy = endpoint("http://127.0.0.1:9/rpc");
        cfg.rpc.proxy.timeout = Duration::ZERO;
        assert_eq!(check(&cfg).key, "rpc.proxy.timeout");

        let cfg = HubConfig {
            proxies: vec![NamedProxy { name: "x".into(), proxy: endpoint("http://h/") }],
            ..Default::default()
        };
        assert_eq!(check(&cfg).key, "proxies[0].name");
    }
}
