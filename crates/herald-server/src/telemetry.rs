//! Logging (tracing-subscriber) and the Prometheus recorder.
//!
//! Logs go to stderr, so stdout stays free for command output. `RUST_LOG`, when set and not
//! empty, replaces `log.level` with a full filter (e.g. `RUST_LOG=herald_hub=debug,info`).

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogConfig;

/// Installs the global tracing subscriber: text or JSON lines on stderr at `cfg.level`
/// (`none` turns logging off unless `RUST_LOG` is set). Does nothing if a subscriber is
/// already installed.
pub fn init_logging(cfg: &LogConfig) {
    let from_env = std::env::var("RUST_LOG").is_ok_and(|d| !d.trim().is_empty());
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => filter,
            Err(e) => {
                eprintln!("warning: ignoring RUST_LOG={directives:?}: {e}");
                match level_filter(&cfg.level) {
                    Some(filter) => filter,
                    None => return,
                }
            }
        },
        _ => match level_filter(&cfg.level) {
            Some(filter) => filter,
            None => return,
        },
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    // An error only means a subscriber is already installed (tests, repeated calls).
    let installed =
        if cfg.format == "json" { registry.with(fmt.json()).try_init() } else { registry.with(fmt).try_init() };
    if installed.is_ok() && !from_env {
        let _ = LEVEL.set(handle);
    }
}

/// The filter of the installed subscriber, when `log.level` chose it (not `RUST_LOG`).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Why a new `log.level` could not be applied while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` decides the filter.
    SetByEnv,
    /// Logging was off (`none`) at start, or no subscriber of Herald's is installed: a restart
    /// is needed.
    NeedsRestart,
}

/// Applies a new `log.level` to the running subscriber (`herald` reload).
pub fn set_level(level: &str) -> LevelChange {
    if std::env::var("RUST_LOG").is_ok_and(|d| !d.trim().is_empty()) {
        return LevelChange::SetByEnv;
    }
    let (Some(handle), Some(filter)) = (LEVEL.get(), level_filter(level)) else { return LevelChange::NeedsRestart };
    match handle.reload(filter) {
        Ok(()) => LevelChange::Applied,
        Err(_) => LevelChange::NeedsRestart,
    }
}

/// The filter for a `log.level` value; `None` for `none`. Unknown levels fall back to `info`
/// (the loader's validation rejects them earlier).
fn level_filter(level: &str) -> Option<EnvFilter> {
    match level {
        "none" => None,
        "trace" | "debug" | "info" | "warn" | "error" => Some(EnvFilter::new(level)),
        _ => Some(EnvFilter::new("info")),
    }
}

static PROMETHEUS: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the global `metrics` recorder and returns its handle
/// (`handle.render()` produces the text exposition for `GET /metrics`).
///
/// Idempotent: later calls return the same handle. Fails only if some other recorder was
/// installed first. Install it before anything records metrics: metric handles created while no
/// recorder is installed stay no-ops.
pub fn install_metrics() -> Result<PrometheusHandle, BuildError> {
    let mut slot = PROMETHEUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(crate::proxy::DURATION_METRIC.into()), crate::proxy::DURATION_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(crate::edge::gateway::forward::DURATION_METRIC.into()),
            crate::edge::gateway::forward::DURATION_BUCKETS,
        )?
        .install_recorder()?;
    *slot = Some(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_install_is_idempotent() {
        let a = install_metrics().unwrap();
        metrics::counter!("herald_telemetry_test_total").increment(3);
        let b = install_metrics().unwrap();
        assert!(a.render().contains("herald_telemetry_test_total 3"));
        assert!(b.render().contains("herald_telemetry_test_total 3"));
    }

    #[test]
    fn levels() {
        assert!(level_filter("none").is_none());
        assert!(level_filter("debug").is_some());
        init_logging(&LogConfig::default());
        init_logging(&LogConfig { level: "debug".into(), format: "json".into() });
    }
}
