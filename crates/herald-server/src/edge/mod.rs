//! The edge policies in front of every endpoint: who may connect (address allow and deny lists
//! per endpoint class), what the client's address is (trusted proxies' `X-Forwarded-For` /
//! `X-Real-IP`, the PROXY protocol), and how many new client connections and server API
//! requests are admitted (connection limit, rates per node, per address and for the API).
//!
//! Everything here runs once per new connection or per HTTP request; a delivery to a connected
//! client never touches it, and a client command pays only the hub's token bucket
//! (`herald_hub::limits`). Gateway routes ([`gateway`]) have their own list and per-route buckets.

pub mod addresses;
pub mod gate;
pub mod gateway;
pub mod ipnet;
pub mod proxy_protocol;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use herald_hub::limits::{Rate, TokenBucket};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::router::Route;
use addresses::AddressBuckets;
use ipnet::{IpNet, any_contains, canonical, parse_list};

/// `access`: address lists and trusted proxies (Herald's own section).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessConfig {
    /// Networks whose `X-Forwarded-For` / `X-Real-IP` headers and PROXY protocol headers are
    /// believed. From any other peer they are ignored.
    pub trusted_proxies: Vec<String>,
    /// Expect a PROXY protocol header (v1 or v2) at the start of every connection from a
    /// trusted proxy; one without it is closed.
    pub proxy_protocol: bool,
    /// Client endpoints (WebSocket, SSE, HTTP streaming, their unidirectional forms, emulation).
    pub client: ListConfig,
    /// The server API.
    pub api: ListConfig,
    /// `/health` and `/metrics`.
    pub admin: ListConfig,
    /// Gateway routes (`gateway.routes`).
    pub gateway: ListConfig,
}

/// An allow and a deny list of CIDR networks. Deny wins; an empty allow list allows all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListConfig {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `limits`: Herald's own rate limits (Centrifugo's `client.connection_limit` and
/// `client.connection_rate_limit` are under `client`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// New client connections per second from one client address (0: no limit); more get 429.
    pub connection_rate_per_address: u32,
    /// Connections one address may open at once (0: one second of the rate).
    pub connection_burst_per_address: u32,
    /// Addresses tracked for `connection_rate_per_address` (see `edge::addresses`).
    pub address_table_size: usize,
    /// Server API requests per second with the API key (0: no limit); more get 429.
    pub api_rate: u32,
    pub api_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            connection_rate_per_address: 0,
            connection_burst_per_address: 0,
            address_table_size: 65_536,
            api_rate: 0,
            api_burst: 0,
        }
    }
}

/// An allow and a deny list, parsed.
#[derive(Debug, Default)]
pub struct Lists {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl Lists {
    fn parse(key: &str, cfg: &ListConfig) -> Result<Self, (String, String)> {
        Ok(Lists {
            allow: parse_list(&format!("{key}.allow"), &cfg.allow)?,
            deny: parse_list(&format!("{key}.deny"), &cfg.deny)?,
        })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        !any_contains(&self.deny, ip) && (self.allow.is_empty() || any_contains(&self.allow, ip))
    }
}

/// Which lists a route is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A client endpoint that opens a connection (counted by the connection limits).
    ClientConnect,
    /// `/emulation`: a client endpoint that opens nothing.
    Client,
    Api,
    Admin,
    /// A gateway route (its own policies run in `gateway::forward`).
    Gateway,
    /// Not found or refused anyway.
    Other,
}

pub fn class(route: &Route<'_>) -> Class {
    match route {
        Route::WebSocket | Route::UniWebSocket | Route::Stream(_) | Route::WebSocketEcho => Class::ClientConnect,
        // Every poll of a long-poll session is a request of its own: address lists apply, the
        // connection limits (which would count each poll as a new connection) do not.
        Route::Emulation | Route::LongPoll => Class::Client,
        Route::Api(_) => Class::Api,
        Route::Health | Route::Metrics | Route::Admin(_) => Class::Admin,
        Route::Gateway(_) => Class::Gateway,
        Route::WebSocketNotFirst | Route::NotFound => Class::Other,
    }
}

/// The key of an address in the per-address table: an IPv4 address, or an IPv6 address's /64
/// (one subscriber line usually holds a whole /64, so single IPv6 addresses cost nothing to vary).
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// The header line a refusal carries: `Retry-After: 1` for a rate or capacity refusal (429,
/// 503: the bucket refills within a second), none for a list refusal.
pub fn retry_after(status: u16) -> &'static str {
    if matches!(status, 429 | 503) { "Retry-After: 1\r\n" } else { "" }
}

/// A refusal: HTTP status and the message of its JSON body.
pub type Refused = (u16, &'static str);

/// The keys a configuration reload applies to the edge ([`Edge::reconfigure`]), and the keys
/// under them.
pub const LIVE_KEYS: &[&str] = &[
    "access.trusted_proxies",
    "access.client",
    "access.api",
    "access.admin",
    "access.gateway",
    "client.connection_limit",
    "client.connection_rate_limit",
    "limits.connection_rate_per_address",
    "limits.connection_burst_per_address",
    "limits.api_rate",
    "limits.api_burst",
];

/// The edge policies, compiled from the configuration, with their state.
pub struct Edge {
    /// The lists and limits, replaced whole by a reload; the buckets below stay (a changed rate
    /// applies to them at their next take).
    policy: RwLock<Arc<Policy>>,
    /// Framing of every accepted connection: not changed by a reload.
    pub proxy_protocol: bool,
    node_bucket: Mutex<TokenBucket>,
    api_bucket: Mutex<TokenBucket>,
    addresses: Mutex<AddressBuckets>,
    start: Instant,
}

/// What [`LIVE_KEYS`] compile to.
struct Policy {
    trusted: Vec<IpNet>,
    client: Lists,
    api: Lists,
    admin: Lists,
    gateway: Lists,
    connection_limit: usize,
    node_rate: Rate,
    address_rate: Rate,
    api_rate: Rate,
}

impl Policy {
    fn new(config: &Config) -> Result<Self, (String, String)> {
        let access = &config.access;
        let limits = &config.limits;
        Ok(Policy {
            trusted: parse_list("access.trusted_proxies", &access.trusted_proxies)?,
            client: Lists::parse("access.client", &access.client)?,
            api: Lists::parse("access.api", &access.api)?,
            admin: Lists::parse("access.admin", &access.admin)?,
            gateway: Lists::parse("access.gateway", &access.gateway)?,
            connection_limit: config.client.connection_limit,
            node_rate: Rate { rate: config.client.connection_rate_limit, burst: 0 },
            address_rate: Rate { rate: limits.connection_rate_per_address, burst: limits.connection_burst_per_address },
            api_rate: Rate { rate: limits.api_rate, burst: limits.api_burst },
        })
    }
}

impl Edge {
    /// Compiles the policies; the error names the config key and what is wrong.
    pub fn new(config: &Config) -> Result<Self, (String, String)> {
        if config.limits.address_table_size == 0 {
            return Err(("limits.address_table_size".into(), "must be at least 1".into()));
        }
        let policy = Policy::new(config)?;
        Ok(Edge {
            node_bucket: Mutex::new(TokenBucket::full(&policy.node_rate, 0)),
            api_bucket: Mutex::new(TokenBucket::full(&policy.api_rate, 0)),
            policy: RwLock::new(Arc::new(policy)),
            proxy_protocol: config.access.proxy_protocol,
            addresses: Mutex::new(AddressBuckets::new(config.limits.address_table_size)),
            start: Instant::now(),
        })
    }

    /// Replaces the lists and limits of [`LIVE_KEYS`] with those of `config`, for connections
    /// and requests from now on; on error (naming the key) nothing changes.
    pub fn reconfigure(&self, config: &Config) -> Result<(), (String, String)> {
        let policy = Arc::new(Policy::new(config)?);
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
        Ok(())
    }

    /// The policy in force; one read per connection or request.
    fn policy(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// Whether any proxy is trusted (else the forwarding headers are never read).
    pub fn has_trusted_proxies(&self) -> bool {
        !self.policy().trusted.is_empty()
    }

    /// Whether `peer` is a trusted proxy.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        any_contains(&self.policy().trusted, peer)
    }

    /// The client's address: from a trusted proxy, the last `X-Forwarded-For` entry that is
    /// not itself a trusted proxy, else `X-Real-IP`; otherwise (or when the headers do not
    /// parse) the peer.
    pub fn client_address(&self, peer: SocketAddr, headers: &[(&str, &[u8])]) -> SocketAddr {
        let policy = self.policy();
        let trusts = |ip| any_contains(&policy.trusted, ip);
        if policy.trusted.is_empty() || !trusts(peer.ip()) {
            return peer;
        }
        let value = |name: &'static str| {
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        };
        // Several X-Forwarded-For fields are one list, in order.
        let forwarded: Vec<&str> = value("x-forwarded-for").flat_map(|v| v.split(',')).collect();
        let mut client = None;
        for entry in forwarded.iter().rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else { break };
            client = Some(ip);
            if !trusts(ip) {
                break;
            }
        }
        if client.is_none() {
            client = value("x-real-ip").next().and_then(|v| v.trim().parse().ok());
        }
        client.map(|ip| SocketAddr::new(canonical(ip), peer.port())).unwrap_or(peer)
    }

    /// Whether the lists of `class` let `ip` in.
    pub fn allows(&self, class: Class, ip: IpAddr) -> Result<(), Refused> {
        let policy = self.policy();
        let lists = match class {
            Class::ClientConnect | Class::Client => &policy.client,
            Class::Api => &policy.api,
            Class::Admin => &policy.admin,
            Class::Gateway => &policy.gateway,
            Class::Other => return Ok(()),
        };
        if lists.allows(ip) {
            return Ok(());
        }
        let label = match class {
            Class::Api => "api",
            Class::Admin => "admin",
            Class::Gateway => "gateway",
            _ => "client",
        };
        metrics::counter!("herald_access_denied_total", "endpoint" => label).increment(1);
        Err((403, "your address is not allowed here"))
    }

    /// Admits a new client connection from `ip` with `open` client connections on the node.
    pub fn admit_connection(&self, ip: IpAddr, open: usize) -> Result<(), Refused> {
        let p = self.policy();
        if p.connection_limit > 0 && open >= p.connection_limit {
            herald_hub::metrics::limit_refused("connection_limit", "503");
            return Err((503, "connection limit reached on this node"));
        }
        let now = self.now_ms();
        if p.address_rate.enabled()
            && !self.addresses.lock().expect("address buckets").take(&p.address_rate, rate_key(ip), now)
        {
            herald_hub::metrics::limit_refused("connection_rate_per_address", "429");
            return Err((429, "too many new connections from your address"));
        }
        if p.node_rate.enabled() && !self.node_bucket.lock().expect("node bucket").take(&p.node_rate, now) {
            herald_hub::metrics::limit_refused("connection_rate_limit", "503");
            return Err((503, "too many new connections to this node"));
        }
        Ok(())
    }

    /// Admits one server API request (after its key was checked).
    pub fn admit_api(&self) -> Result<(), Refused> {
        let rate = self.policy().api_rate;
        if rate.enabled() && !self.api_bucket.lock().expect("api bucket").take(&rate, self.now_ms()) {
            herald_hub::metrics::limit_refused("api_rate", "429");
            return Err((429, "too many server API requests"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
