//! Configuration reload (SIGHUP, the server API method `reload`, `herald reload`): the
//! configuration is loaded again from the same file, environment and flags, validated, and
//! what can change in a running node is applied; an invalid configuration is refused with its
//! error (naming the key) and the one in force stays, whole.
//!
//! Applied while running, without dropping a connection: the token keys, client limits,
//! channel options and logic-layer proxies of [`LIVE_KEYS`], swapped in the node at once
//! (`herald_hub::Node::reconfigure`, with a new proxy client when a proxy changed) for every
//! command from then on; the lifecycle webhooks (`webhooks.*`: the node's event mask and the
//! sender's endpoint and bounds; its queue is handed over, `crate::webhook`); the gateway
//! routes (`gateway.routes`, for every request from then on, `AppState::set_gateway`); the address
//! lists, trusted proxies and connection and API limits of `crate::edge::LIVE_KEYS`, for every
//! connection and request from then on (`crate::edge::Edge::reconfigure`); `log.level`;
//! the TLS certificate files (read again at once; they are also read again by themselves when
//! they change, `crate::tls`). Every other changed key is named in a warning: it takes effect at
//! the next restart. The active configuration's version (1 at start, +1 per reload that applied
//! something) is the `herald_config_version` gauge.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use herald_hub::HubConfig;
use herald_hub::proxy::Proxies;
use herald_hub::webhook::Webhooks;

use crate::edge::gateway::Gateway;
use serde_json::Value;

use crate::config::Config;
use crate::config_error::ConfigError;
use crate::loader::{self, Overrides};
use crate::state::AppState;
use crate::telemetry::{self, LevelChange};

/// Where the configuration came from at start, to load it again the same way.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub overrides: Overrides,
}

/// The keys (and the keys under them) the node applies while running. Of the other `client`
/// keys, the connection limits are the edge's (`crate::edge::LIVE_KEYS`); the rest were built
/// into the node at start (pings, the queue size) and need a restart. The transports read
/// `client.allowed_origins` from the node at every handshake.
pub const LIVE_KEYS: &[&str] = &[
    "channel",
    "rpc",
    "proxies",
    "client.proxy",
    "client.token",
    "client.subscription_token",
    "client.allow_anonymous_connect_without_token",
    "client.disallow_anonymous_connection_tokens",
    "client.channel_limit",
    "client.user_connection_limit",
    "client.user_connection_limit_mode",
    "client.history_max_publication_limit",
    "client.recovery_max_publication_limit",
    "client.connect_include_server_time",
    "client.command_rate_limit",
    "client.allowed_origins",
];

/// Whether the node applies `key` while running.
pub fn is_live(key: &str) -> bool {
    LIVE_KEYS.iter().any(|p| under(key, p))
}

/// Whether a change of `key` may change the proxy endpoints or the way they are called (their
/// client, which knows the endpoints by index, is made again): `proxies[]`, `*.proxy.*`. The
/// table's endpoints come only from these; namespaces merely route to them.
fn touches_proxies(key: &str) -> bool {
    under(key, "proxies") || key.contains("proxy")
}

/// Whether the edge (`crate::edge::Edge`) applies `key` while running.
pub fn is_edge_live(key: &str) -> bool {
    crate::edge::LIVE_KEYS.iter().any(|p| under(key, p))
}

/// `key` is `prefix` or a key under it.
fn under(key: &str, prefix: &str) -> bool {
    key == prefix || key.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration does not load or is invalid; nothing changed. `key` names what
    /// is wrong when the error is about one key.
    Refused { key: Option<String>, error: String },
    /// Nothing differs from the configuration in force.
    Unchanged,
    /// `applied` keys took effect; `restart` keys differ but take effect only after a restart.
    Changed { applied: Vec<String>, restart: Vec<String> },
}

/// The reload state of a running node.
#[derive(Debug)]
pub struct Reloader {
    source: Source,
    /// The configuration last loaded (what a new one is compared with).
    current: Mutex<Config>,
    version: AtomicU64,
}

impl Reloader {
    pub fn new(source: Source, config: Config) -> Reloader {
        metrics::gauge!("herald_config_version").set(1.0);
        Reloader { source, current: Mutex::new(config), version: AtomicU64::new(1) }
    }

    /// The active configuration's version.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Loads, validates and applies the configuration again; logs and counts the outcome.
    pub fn reload(&self, state: &AppState) -> Outcome {
        let loaded = loader::load(self.source.file.as_deref(), process_env(), &self.source.overrides)
            .and_then(|l| loader::validate(&l.config).map(|()| l.config));
        let outcome = match loaded {
            Err(e) => refuse(&e),
            Ok(new) => {
                // Held through `apply`: a SIGHUP and an API call reload one after the other.
                let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                match apply(&current, &new, state) {
                    Ok(outcome) => {
                        *current = new;
                        outcome
                    }
                    Err(e) => refuse(&e),
                }
            }
        };
        let label = outcome.label();
        metrics::counter!("herald_config_reloads_total", "outcome" => label).increment(1);
        if label == "applied" {
            let v = self.version.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!("herald_config_version").set(v as f64);
            tracing::info!(version = v, "configuration reloaded (version {v})");
        }
        outcome
    }
}

impl Outcome {
    /// `refused`, `unchanged`, `restart_needed` (only keys that need a restart changed) or
    /// `applied`: the `outcome` label of `herald_config_reloads_total` and of the API answer.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Refused { .. } => "refused",
            Outcome::Unchanged => "unchanged",
            Outcome::Changed { applied, .. } if applied.is_empty() => "restart_needed",
            Outcome::Changed { .. } => "applied",
        }
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn refuse(e: &ConfigError) -> Outcome {
    tracing::error!(key = e.key().unwrap_or(""), "configuration reload refused, the current one stays in force: {e}");
    Outcome::Refused { key: e.key().map(str::to_owned), error: e.to_string() }
}

/// Applies what can change while running, and names the rest. The node's part is checked and
/// swapped first: when it is refused, nothing was applied.
fn apply(old: &Config, new: &Config, state: &AppState) -> Result<Outcome, ConfigError> {
    let changed = changed_keys(old, new);
    let (live, changed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| is_live(k));
    let (edge, changed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| is_edge_live(k));
    let (hooks, changed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| under(k, "webhooks"));
    let (routes, changed): (Vec<String>, Vec<String>) = changed.into_iter().partition(|k| under(k, "gateway"));
    // Gateway routes verify `client.token` keys too: a token change rebuilds them. Built on
    // the configuration in force for what is read only at start (Herald's own paths, the API
    // key, the address table size), checked before anything is applied.
    let tokens_changed =
        live.iter().any(|k| under(k, "client.token") || under(k, "client.disallow_anonymous_connection_tokens"));
    let gateway = if !routes.is_empty() || (tokens_changed && !new.gateway.routes.is_empty()) {
        let mut c = state.config.clone();
        c.gateway = new.gateway.clone();
        c.client.token = new.client.token.clone();
        c.client.disallow_anonymous_connection_tokens = new.client.disallow_anonymous_connection_tokens;
        Some(Gateway::new(&c).map_err(|(key, problem)| ConfigError::invalid(key, problem))?)
    } else {
        None
    };
    // Checked before anything is applied. The section names a proxy: a proxy change may move
    // its endpoint.
    let webhooks = if !hooks.is_empty() || live.iter().any(|k| touches_proxies(k)) {
        let hub = new.hub();
        Some(Webhooks::compile(&hub.webhooks, &Proxies::compile(&hub)?)?)
    } else {
        None
    };
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    if !live.is_empty() {
        let hub = live_part(&state.node.config(), new);
        if live.iter().any(|k| touches_proxies(k)) {
            // A new client for the new endpoints (a fresh connection pool); calls in flight
            // finish on the old one, which goes with the last of them.
            let port = crate::proxy::port_for(&hub)?;
            state.node.reconfigure_with(hub, port)?;
            state.set_connect_headers();
        } else {
            state.node.reconfigure(hub)?;
        }
        tracing::info!(keys = %live.join(", "), "configuration reload: applied to new commands: {}", live.join(", "));
        applied = live;
    }
    if let Some(webhooks) = webhooks {
        let on = webhooks.is_some();
        state.node.hooks().replace(webhooks);
        if on && !state.node.hooks().has_sink() {
            // Off until now: the sender starts (fails only when no thread can be made).
            crate::webhook::start(&state.node)?;
        }
        if !hooks.is_empty() {
            tracing::info!(keys = %hooks.join(", "), "configuration reload: applied to lifecycle webhooks: {}", hooks.join(", "));
            applied.extend(hooks);
        }
    }
    if let Some(gateway) = gateway {
        state.set_gateway(gateway);
        if !routes.is_empty() {
            tracing::info!(keys = %routes.join(", "), "configuration reload: applied to new gateway requests: {}", routes.join(", "));
            applied.extend(routes);
        }
    }
    if !edge.is_empty() {
        // Cannot fail after `loader::validate`, which compiled the same lists; the node's part,
        // which can, went first.
        state.edge.reconfigure(new).map_err(|(key, problem)| ConfigError::invalid(key, problem))?;
        tracing::info!(keys = %edge.join(", "), "configuration reload: applied to new connections: {}", edge.join(", "));
        applied.extend(edge);
    }
    for key in changed {
        if key == "log.level" {
            match telemetry::set_level(&new.log.level) {
                LevelChange::Applied => {
                    applied.push(key);
                    continue;
                }
                LevelChange::SetByEnv => tracing::warn!("log.level changed but RUST_LOG decides the log filter"),
                LevelChange::NeedsRestart => {}
            }
        }
        restart.push(key);
    }
    // The certificate files may have changed with the same names: read them now.
    if let Some(tls) = &state.tls
        && tls.reread()
    {
        applied.push("http_server.tls (certificate files)".to_owned());
    }
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "configuration reload: these keys changed but take effect only after a restart: {}",
            restart.join(", ")
        );
    }
    Ok(if applied.is_empty() && restart.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Changed { applied, restart }
    })
}

/// The node's configuration in force with the sections a running node takes ([`is_live`])
/// from `new`.
fn live_part(current: &HubConfig, new: &Config) -> HubConfig {
    let mut h = current.clone();
    let (c, n) = (&mut h.client, &new.client);
    c.token = n.token.clone();
    c.subscription_token = n.subscription_token.clone();
    c.allow_anonymous_connect_without_token = n.allow_anonymous_connect_without_token;
    c.disallow_anonymous_connection_tokens = n.disallow_anonymous_connection_tokens;
    c.channel_limit = n.channel_limit;
    c.user_connection_limit = n.user_connection_limit;
    c.user_connection_limit_mode = n.user_connection_limit_mode.clone();
    c.history_max_publication_limit = n.history_max_publication_limit;
    c.recovery_max_publication_limit = n.recovery_max_publication_limit;
    c.connect_include_server_time = n.connect_include_server_time;
    c.command_rate_limit = n.command_rate_limit;
    c.allowed_origins = n.allowed_origins.clone();
    c.proxy = n.proxy.clone();
    h.channel = new.channel.clone();
    h.rpc = new.rpc.clone();
    h.proxies = new.proxies.clone();
    h
}

/// The dotted keys whose values differ (lists compared whole).
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else { return Vec::new() };
    let mut out = Vec::new();
    diff("", &a, &b, &mut out);
    out
}

fn diff(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff(&path, x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null), out);
            }
        }
        _ if a != b => out.push(prefix.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_are_dotted_leaves() {
        let old = Config::default();
        let mut new = old.clone();
        assert!(changed_keys(&old, &new).is_empty());
        new.log.level = "debug".into();
        new.http_server.tls.cert_pem = "/etc/cert.pem".into();
        assert_eq!(changed_keys(&old, &new), ["http_server.tls.cert_pem", "log.level"]);
    }

    #[test]
    fn live_keys_are_whole_segments() {
        for key in [
            "client.token.hmac_secret_key",
            "client.user_connection_limit",
            "channel.namespaces",
            "channel",
            "channel.proxy.subscribe.endpoint",
            "proxies",
            "client.proxy.connect.enabled",
            "rpc.namespaces",
        ] {
            assert!(is_live(key), "{key}");
        }
        for key in ["client.ping_interval", "client.tokens", "channels", "log.level", "proxiesx", "webhooks"] {
            assert!(!is_live(key), "{key}");
        }
        // Namespaces only route to endpoints the table makes from the keys below: the client
        // (which knows endpoints by index) stays valid.
        assert!(!touches_proxies("channel.namespaces"));
        assert!(touches_proxies("channel.proxy.publish.timeout") && touches_proxies("rpc.proxy.endpoint"));
        assert!(touches_proxies("proxies"));
        assert!(!touches_proxies("client.channel_limit"));
    }

    #[test]
    fn the_live_part_keeps_what_was_built_at_start() {
        let old = Config::default();
        let mut new = old.clone();
        new.client.channel_limit = 7;
        new.client.ping_interval = std::time::Duration::from_secs(99);
        new.channel.history_meta_ttl = std::time::Duration::from_secs(60);
        new.channel.proxy.subscribe.endpoint = "http://127.0.0.1:1/sub".into();
        new.webhooks.enabled = true;
        let h = live_part(&old.hub(), &new);
        assert_eq!(h.client.channel_limit, 7);
        assert_eq!(h.channel.history_meta_ttl, std::time::Duration::from_secs(60));
        assert_eq!(h.client.ping_interval, old.client.ping_interval, "pings stay as built");
        assert_eq!(h.channel.proxy, new.channel.proxy, "proxies are taken");
        assert!(!h.webhooks.enabled, "webhooks go their own way");
    }
}
