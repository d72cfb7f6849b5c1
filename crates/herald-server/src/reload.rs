//! Configuration reload on SIGHUP: the configuration is loaded again from the same file,
//! environment and flags, validated, and what can change in a running node is applied; an
//! invalid configuration is refused with its error (naming the key) and the one in force stays.
//!
//! Applied while running: `log.level` and the TLS certificate files (read again at once; they
//! are also read again by themselves when they change, `crate::tls`). Every other changed key is
//! named in a warning: it takes effect at the next restart. The active configuration's version
//! (1 at start, +1 per reload that applied something) is the `herald_config_version` gauge.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The new configuration does not load or is invalid; nothing changed.
    Refused(String),
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
                let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
                let outcome = apply(&current, &new, state);
                *current = new;
                outcome
            }
        };
        let label = match &outcome {
            Outcome::Refused(_) => "refused",
            Outcome::Unchanged => "unchanged",
            Outcome::Changed { applied, .. } if applied.is_empty() => "restart_needed",
            Outcome::Changed { .. } => "applied",
        };
        metrics::counter!("herald_config_reloads_total", "outcome" => label).increment(1);
        if label == "applied" {
            let v = self.version.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!("herald_config_version").set(v as f64);
            tracing::info!(version = v, "configuration reloaded (version {v})");
        }
        outcome
    }
}

fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

fn refuse(e: &ConfigError) -> Outcome {
    tracing::error!(key = e.key().unwrap_or(""), "configuration reload refused, the current one stays in force: {e}");
    Outcome::Refused(e.to_string())
}

/// Applies what can change while running, and names the rest.
fn apply(old: &Config, new: &Config, state: &AppState) -> Outcome {
    let changed = changed_keys(old, new);
    let mut applied = Vec::new();
    let mut restart = Vec::new();
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
    if applied.is_empty() && restart.is_empty() { Outcome::Unchanged } else { Outcome::Changed { applied, restart } }
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
}
