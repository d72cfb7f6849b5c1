//! Configuration of the logic-layer proxies in Centrifugo v6 names: the proxy object (endpoint,
//! timeout, header allow-lists, static headers, connection meta), `client.proxy.{connect,refresh}`,
//! `channel.proxy.{subscribe,publish,sub_refresh}`, named `proxies[]` and the `rpc` section.
//! Namespace switches (`subscribe_proxy_enabled`, ...) live in `ChannelOptions`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One backend endpoint and how to call it (Centrifugo's proxy object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyOptions {
    /// `http://host:port/path` or `https://...` (TLS options in `http.tls`). `grpc://` is refused
    /// at start-up.
    pub endpoint: String,
    /// Time allowed for the whole call (connect, request, answer); the client gets error 100
    /// (or, for refreshes, a retry later) when it passes.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// Client HTTP headers (case-insensitive names) forwarded to the connect proxy. `Cookie` is
    /// forwarded only when listed.
    pub http_headers: Vec<String>,
    /// Headers the browser SDK sends in the connect command's `headers` map (untrusted, set by
    /// the client) that are forwarded to the connect proxy. A real HTTP header of the same
    /// name wins.
    pub emulated_headers: Vec<String>,
    /// Send the connection's private `meta` (from its token or the connect proxy) in requests.
    pub include_connection_meta: bool,
    /// Send payloads as base64 (`b64data`, `encoding: "binary"`) even for JSON clients.
    pub binary_encoding: bool,
    /// `http.static_headers`: headers added to every request (client headers win).
    pub http: HttpProxyOptions,
    /// Same as `http.static_headers` (the name the v5 layout used); both are merged.
    pub static_http_headers: BTreeMap<String, String>,
    /// Herald's own: the largest answer body accepted, bytes. A larger answer counts as a
    /// failed call (`too_large`).
    pub max_response_size: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            endpoint: String::new(),
            timeout: Duration::from_secs(1),
            http_headers: Vec::new(),
            emulated_headers: Vec::new(),
            include_connection_meta: false,
            binary_encoding: false,
            http: HttpProxyOptions::default(),
            static_http_headers: BTreeMap::new(),
            max_response_size: 1 << 20,
        }
    }
}

/// `http` options of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpProxyOptions {
    pub static_headers: BTreeMap<String, String>,
    /// TLS options of an `https://` endpoint (the platform's roots when off).
    pub tls: ClientTlsOptions,
}

/// Centrifugo v6's unified TLS object as used by an outgoing connection (`http.tls` of a
/// proxy, `tls` of a gateway route). Off: `https://` is verified against the platform's roots
/// with the URL's host name. PEM values are the PEM text, its base64 or a file path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientTlsOptions {
    /// Use the options below (they are ignored while this is off, as in Centrifugo).
    pub enabled: bool,
    /// A client certificate chain presented to the backend (with `key_pem`).
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA(s) that must have signed the backend's certificate, instead of the platform's.
    pub server_ca_pem: String,
    /// A server-side option in the unified object; refused here (it verifies nothing outgoing).
    pub client_ca_pem: String,
    /// Accept any backend certificate (testing only: anyone on the path can read the calls).
    pub insecure_skip_verify: bool,
    /// The name the backend's certificate must carry (and the SNI sent), instead of the URL's host.
    pub server_name: String,
}

/// A proxy that is off unless `enabled` (`client.proxy.connect`, `client.proxy.refresh`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToggledProxy {
    pub enabled: bool,
    #[serde(flatten)]
    pub proxy: ProxyOptions,
}

/// `client.proxy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientProxyConfig {
    /// Asked when a client connects without a token.
    pub connect: ToggledProxy,
    /// Asked when a connection the connect proxy let in reaches its `expire_at`.
    pub refresh: ToggledProxy,
}

/// `channel.proxy`: the default proxies of namespaces that turn one on without a name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChannelProxyConfig {
    pub subscribe: ProxyOptions,
    pub publish: ProxyOptions,
    pub sub_refresh: ProxyOptions,
}

/// One entry of the top-level `proxies` list, referenced by `*_proxy_name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamedProxy {
    pub name: String,
    #[serde(flatten)]
    pub proxy: ProxyOptions,
}

/// RPC options of the methods without a namespace, or of one namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcOptions {
    /// Send the namespace's RPC calls to a backend.
    pub proxy_enabled: bool,
    /// A name from `proxies`; empty means `rpc.proxy`.
    pub proxy_name: String,
}

/// `rpc.namespaces[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcNamespace {
    pub name: String,
    #[serde(flatten)]
    pub options: RpcOptions,
}

/// The `rpc` section: the method `ns:name` belongs to namespace `ns`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcConfig {
    pub without_namespace: RpcOptions,
    pub namespaces: Vec<RpcNamespace>,
    pub namespace_boundary: String,
    /// The default RPC proxy.
    pub proxy: ProxyOptions,
}

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            without_namespace: RpcOptions::default(),
            namespaces: Vec::new(),
            namespace_boundary: ":".into(),
            proxy: ProxyOptions::default(),
        }
    }
}
