//! Gateway routes (`[[gateway.routes]]`): HTTP requests under a path prefix forwarded to the
//! logic layer's upstreams after the edge policies (auth, rates, parameter rules, deadline).
//!
//! This module owns the configuration of a route, its compiled form ([`Gateway`]: parsed
//! upstreams, rate tables, health states, the pooled HTTP clients), prefix matching and the
//! start-up checks (a route never shadows Herald's own endpoints). The rest is split by job:
//! [`balance`] picks an upstream, [`health`] takes failed ones out and puts them back,
//! [`policy`] authenticates and checks the parameter rules, [`forward`] carries the request and
//! streams the answer back.

pub mod balance;
pub mod forward;
pub mod health;
pub mod policy;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use herald_auth::TokenVerifier;
use herald_hub::limits::Rate;
use herald_hub::proxy::config::ClientTlsOptions;
use http::Method;
use http::uri::{Authority, Scheme, Uri};
use metrics::{Counter, Histogram};
use serde::{Deserialize, Serialize};

use super::addresses::AddressBuckets;
use crate::config::Config;
use balance::Balance;
use health::{Health, Thresholds};

/// `gateway`: Herald's own section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    pub routes: Vec<RouteConfig>,
}

/// One `[[gateway.routes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteConfig {
    /// The label of the route's metrics (default: the prefix).
    pub name: String,
    /// Path prefix: `/app` matches `/app` and `/app/...`, not `/apple`. Longest prefix wins.
    pub prefix: String,
    /// `http://host:port[/base]` or `https://...` addresses.
    pub upstreams: Vec<String>,
    /// The unified TLS object for `https://` upstreams (off: the platform's roots).
    pub tls: ClientTlsOptions,
    /// `round_robin` or `user_hash` (rendezvous hash of the user id; the client address for
    /// anonymous callers).
    pub balance: String,
    /// Remove the prefix from the path sent upstream.
    pub strip_prefix: bool,
    /// `jwt` (a Herald connection token), `api_key` (the server API key) or `none`.
    pub auth: String,
    /// With `auth = "jwt"`: a cookie that may carry the token (besides `Authorization: Bearer`).
    pub token_cookie: String,
    /// With `auth = "jwt"`: a query parameter that may carry the token.
    pub token_query: String,
    /// Pass the token's `info` claim upstream in `X-Herald-Info` (base64).
    pub forward_info: bool,
    /// Deadline of the whole exchange: 504 when the answer's head misses it (the upstream
    /// connection is closed), the answer cut when its body does.
    #[serde(with = "herald_hub::duration")]
    pub timeout: Duration,
    /// Allowed HTTP methods (empty: any); others get 405.
    pub methods: Vec<String>,
    /// Largest request body, bytes; 413 above it.
    pub max_body: usize,
    /// Query parameters every request must have; 400 naming the first one missing.
    pub required_query: Vec<String>,
    /// Top-level fields the JSON object body must have; 400 naming the first one missing. The
    /// body is then read whole (up to `max_body`) before it is forwarded.
    pub required_json: Vec<String>,
    pub rate_limit: RouteRates,
    pub health_check: HealthCheckConfig,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            name: String::new(),
            prefix: String::new(),
            upstreams: Vec::new(),
            tls: ClientTlsOptions::default(),
            balance: "round_robin".into(),
            strip_prefix: false,
            auth: "jwt".into(),
            token_cookie: String::new(),
            token_query: String::new(),
            forward_info: false,
            timeout: Duration::from_secs(10),
            methods: Vec::new(),
            max_body: 1024 * 1024,
            required_query: Vec::new(),
            required_json: Vec::new(),
            rate_limit: RouteRates::default(),
            health_check: HealthCheckConfig::default(),
        }
    }
}

/// `rate_limit` of a route: requests per second per user and per client address (0: none);
/// 429 with `Retry-After` above them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteRates {
    pub user_rate: u32,
    pub user_burst: u32,
    pub address_rate: u32,
    pub address_burst: u32,
}

/// `health_check` of a route: `GET base + path` on every upstream each `interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheckConfig {
    /// Empty: no active checks (every upstream is always in).
    pub path: String,
    #[serde(with = "herald_hub::duration")]
    pub interval: Duration,
    #[serde(with = "herald_hub::duration")]
    pub timeout: Duration,
    /// Failed checks in a row that take an upstream out.
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that put it back.
    pub healthy_threshold: u32,
    /// A forwarded request that could not reach the upstream counts as a failed check (only
    /// with active checks, which can put it back).
    pub passive: bool,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            path: String::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            unhealthy_threshold: 2,
            healthy_threshold: 2,
            passive: true,
        }
    }
}

/// How a route authenticates callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Jwt,
    ApiKey,
}

/// One upstream address.
#[derive(Debug)]
pub struct Upstream {
    /// As configured, for logs and the health gauge.
    pub label: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    pub authority: Authority,
    /// The base path (no trailing `/`; empty for none).
    pub base: String,
    pub health: Mutex<Health>,
}

/// A compiled route.
pub struct Route {
    pub label: String,
    /// The prefix without a trailing `/`.
    pub prefix: String,
    pub cfg: RouteConfig,
    pub upstreams: Vec<Upstream>,
    /// The pooled client of the route's calls: shared by every route without a `tls` object
    /// of its own.
    pub client: forward::HttpClient,
    pub balance: Balance,
    pub auth: Auth,
    pub methods: Vec<Method>,
    pub thresholds: Thresholds,
    pub user_rate: Rate,
    pub address_rate: Rate,
    pub users: Mutex<AddressBuckets<String>>,
    pub addresses: Mutex<AddressBuckets<IpAddr>>,
    /// The round-robin position.
    pub next: AtomicUsize,
    /// `herald_gateway_requests_total` handles by (outcome, status class).
    pub counters: Mutex<HashMap<(&'static str, u16), Counter>>,
    pub latency: Histogram,
}

/// Every route, compiled.
pub struct Gateway {
    pub routes: Vec<Route>,
    /// `client.token`'s keys, for `auth = "jwt"`.
    pub tokens: TokenVerifier,
    /// `client.disallow_anonymous_connection_tokens`: a token without a user gets 401.
    pub reject_anonymous: bool,
    start: Instant,
}

type Invalid = (String, String);

impl Gateway {
    /// Compiles the routes; the error names the key and what is wrong. `config` must have
    /// passed the endpoint checks (its own prefixes are compared with the routes').
    pub fn new(config: &Config) -> Result<Self, Invalid> {
        let tokens =
            TokenVerifier::new(&config.client.token, "client.token").map_err(|e| ("client.token".into(), e))?;
        let mut routes: Vec<Route> = Vec::with_capacity(config.gateway.routes.len());
        let table = config.limits.address_table_size.max(1);
        // Made with the first route that needs it: no routes, no client (nor platform roots read).
        let mut shared: Option<forward::HttpClient> = None;
        for (i, cfg) in config.gateway.routes.iter().enumerate() {
            let key = |field: &str| format!("gateway.routes[{i}].{field}");
            let client = if cfg.tls == ClientTlsOptions::default() {
                match &shared {
                    Some(client) => client.clone(),
                    None => shared.insert(forward::client(&cfg.tls, &key("tls")).map_err(invalid)?).clone(),
                }
            } else {
                forward::client(&cfg.tls, &key("tls")).map_err(invalid)?
            };
            let route = compile(cfg, &key, table, client)?;
            check_collisions(config, &route.prefix, &key("prefix"))?;
            if route.auth == Auth::Jwt && !tokens.has_keys() {
                return Err((
                    key("auth"),
                    "\"jwt\" needs client.token keys (e.g. client.token.hmac_secret_key)".into(),
                ));
            }
            if route.auth == Auth::ApiKey && config.http_api.key.is_empty() && !config.http_api.insecure {
                return Err((key("auth"), "\"api_key\" needs http_api.key: every request would get 401".into()));
            }
            if let Some(other) = routes.iter().find(|r| r.prefix == route.prefix) {
                return Err((
                    key("prefix"),
                    format!("{:?} is already the prefix of route {:?}", cfg.prefix, other.label),
                ));
            }
            if let Some(other) = routes.iter().find(|r| r.label == route.label) {
                return Err((
                    key("name"),
                    format!("{:?} is already the name of the route on {:?}", route.label, other.prefix),
                ));
            }
            routes.push(route);
        }
        let reject_anonymous = config.client.disallow_anonymous_connection_tokens;
        Ok(Gateway { routes, tokens, reject_anonymous, start: Instant::now() })
    }

    /// Milliseconds since start (the rate tables' and health states' clock).
    pub fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// [`match_route`] over these routes (indexes into [`Gateway::routes`]).
    pub fn matching(&self, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| under(path, &r.prefix))
            .max_by_key(|(_, r)| r.prefix.len())
            .map(|(i, _)| i)
    }
}

/// The route whose prefix is the longest one `path` is under.
pub fn match_route(routes: &[RouteConfig], path: &str) -> Option<usize> {
    routes
        .iter()
        .enumerate()
        .filter(|(_, r)| under(path, r.prefix.trim_end_matches('/')))
        .max_by_key(|(_, r)| r.prefix.trim_end_matches('/').len())
        .map(|(i, _)| i)
}

/// Whether `path` is `prefix` or below it (`/app` holds `/app/x`, not `/apple`).
fn under(path: &str, prefix: &str) -> bool {
    !prefix.is_empty() && path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A configuration error from the TLS options, as this module reports them.
fn invalid(e: crate::config_error::ConfigError) -> Invalid {
    match e {
        crate::config_error::ConfigError::Invalid { key, problem } => (key, problem),
        other => (String::new(), other.to_string()),
    }
}

fn compile(
    cfg: &RouteConfig,
    key: &dyn Fn(&str) -> String,
    table: usize,
    client: forward::HttpClient,
) -> Result<Route, Invalid> {
    let prefix = cfg.prefix.trim_end_matches('/').to_owned();
    if !cfg.prefix.starts_with('/') {
        return Err((key("prefix"), format!("{:?} must start with '/'", cfg.prefix)));
    }
    if prefix.is_empty() {
        return Err((key("prefix"), "\"/\" would shadow every Herald endpoint: use a longer prefix".into()));
    }
    if cfg.upstreams.is_empty() {
        return Err((key("upstreams"), "at least one upstream is needed (http[s]://host:port[/base])".into()));
    }
    let upstreams = cfg
        .upstreams
        .iter()
        .enumerate()
        .map(|(j, u)| upstream(u, &key(&format!("upstreams[{j}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    if cfg.tls.enabled && upstreams.iter().all(|u| u.scheme != Scheme::HTTPS) {
        // Options that would secure nothing: every upstream is plain HTTP.
        return Err((key("tls.enabled"), "needs https:// upstreams".into()));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = cfg.upstreams.iter().find(|u| !seen.insert(u.as_str())) {
        return Err((key("upstreams"), format!("{dup:?} is listed twice")));
    }
    let balance = match cfg.balance.as_str() {
        "round_robin" => Balance::RoundRobin,
        "user_hash" => Balance::UserHash,
        other => return Err((key("balance"), format!("{other:?} is not one of round_robin, user_hash"))),
    };
    let auth = match cfg.auth.as_str() {
        "none" => Auth::None,
        "jwt" => Auth::Jwt,
        "api_key" => Auth::ApiKey,
        other => return Err((key("auth"), format!("{other:?} is not one of none, jwt, api_key"))),
    };
    let methods = cfg
        .methods
        .iter()
        .map(|m| {
            let upper = m.to_ascii_uppercase();
            Method::from_bytes(upper.as_bytes()).map_err(|_| (key("methods"), format!("{m:?} is not an HTTP method")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cfg.timeout.is_zero() {
        return Err((key("timeout"), "must be longer than 0s".into()));
    }
    if cfg.max_body == 0 {
        return Err((key("max_body"), "must be at least 1 byte (refuse bodies with `methods` instead)".into()));
    }
    for (field, names) in [("required_query", &cfg.required_query), ("required_json", &cfg.required_json)] {
        if names.iter().any(|n| n.is_empty()) {
            return Err((key(field), "names must not be empty".into()));
        }
    }
    let hc = &cfg.health_check;
    if !hc.path.is_empty() {
        if !hc.path.starts_with('/') {
            return Err((key("health_check.path"), format!("{:?} must start with '/'", hc.path)));
        }
        for (field, d) in [("interval", hc.interval), ("timeout", hc.timeout)] {
            if d.is_zero() {
                return Err((key(&format!("health_check.{field}")), "must be longer than 0s".into()));
            }
        }
        for (field, n) in [("unhealthy_threshold", hc.unhealthy_threshold), ("healthy_threshold", hc.healthy_threshold)]
        {
            if n == 0 {
                return Err((key(&format!("health_check.{field}")), "must be at least 1".into()));
            }
        }
    }
    let r = &cfg.rate_limit;
    let label = if cfg.name.is_empty() { prefix.clone() } else { cfg.name.clone() };
    Ok(Route {
        label: label.clone(),
        prefix,
        cfg: cfg.clone(),
        upstreams,
        client,
        balance,
        auth,
        methods,
        thresholds: Thresholds {
            unhealthy: hc.unhealthy_threshold,
            healthy: hc.healthy_threshold,
            active: !hc.path.is_empty(),
            passive: hc.passive,
        },
        user_rate: Rate { rate: r.user_rate, burst: r.user_burst },
        address_rate: Rate { rate: r.address_rate, burst: r.address_burst },
        users: Mutex::new(AddressBuckets::with_metrics(
            table,
            ("herald_gateway_user_table_entries", "herald_gateway_user_table_overflows_total"),
        )),
        addresses: Mutex::new(AddressBuckets::with_metrics(
            table,
            ("herald_gateway_address_table_entries", "herald_gateway_address_table_overflows_total"),
        )),
        next: AtomicUsize::new(0),
        counters: Mutex::default(),
        latency: metrics::histogram!(forward::DURATION_METRIC, "route" => label),
    })
}

/// Parses `http[s]://host:port[/base]`.
fn upstream(text: &str, key: &str) -> Result<Upstream, Invalid> {
    let uri: Uri = text.parse().map_err(|e| (key.to_owned(), format!("{text:?} is not a URL: {e}")))?;
    let scheme = match uri.scheme() {
        Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS => s.clone(),
        _ => return Err((key.to_owned(), format!("{text:?} must be http[s]://host:port[/base]"))),
    };
    let authority = uri.authority().cloned().ok_or_else(|| (key.to_owned(), format!("{text:?} names no host")))?;
    if authority.as_str().contains('@') {
        return Err((key.to_owned(), format!("{text:?}: credentials in the address are not supported")));
    }
    if uri.query().is_some() {
        return Err((key.to_owned(), format!("{text:?}: an upstream address has no query")));
    }
    Ok(Upstream {
        label: text.to_owned(),
        scheme,
        authority,
        base: uri.path().trim_end_matches('/').to_owned(),
        health: Mutex::new(Health::default()),
    })
}

/// Refuses a prefix that holds one of Herald's own endpoints or is under the server API's.
fn check_collisions(config: &Config, prefix: &str, key: &str) -> Result<(), Invalid> {
    let api = config.http_api.handler_prefix.trim_end_matches('/');
    if !config.http_api.disabled && (under(prefix, api) || under(api, prefix)) {
        return Err((
            key.to_owned(),
            format!("{prefix:?} collides with the server API on {api:?} (http_api.handler_prefix)"),
        ));
    }
    let echo = &config.websocket.echo_endpoint_for_conformance_tests;
    let echo = ("websocket.echo_endpoint_for_conformance_tests", echo.as_str(), !echo.is_empty());
    for (name, path, _) in config.endpoints().into_iter().chain([echo]).filter(|(_, _, on)| *on) {
        let path = path.trim_end_matches('/');
        if under(path, prefix) || under(prefix, path) {
            return Err((key.to_owned(), format!("{prefix:?} collides with Herald's endpoint {path:?} ({name})")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
