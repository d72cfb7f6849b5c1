//! Logging ([`logs`]: tracing-subscriber, log files, access lines), the Prometheus recorder
//! with the process gauges sampled at each scrape, and OpenTelemetry span export (`otlp`, with
//! the cargo feature of that name).
//!
//! Logs go to stderr (or `log.file`), so stdout stays free for command output.

mod logs;
#[cfg(feature = "otlp")]
pub mod otlp;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub use logs::{ACCESS, LevelChange, init_logging, reopen_log_files, set_level};

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
        .set_buckets_for_metric(Matcher::Full(API_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(herald_hub::metrics::COMMAND_DURATION.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(crate::edge::gateway::forward::DURATION_METRIC.into()),
            crate::edge::gateway::forward::DURATION_BUCKETS,
        )?
        .install_recorder()?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Server API latency, seconds, by method (`herald_api_request_duration_seconds`).
pub const API_DURATION: &str = "herald_api_request_duration_seconds";
/// Buckets of the API latency histogram, seconds: most calls take well under a millisecond,
/// a broadcast to many channels or a slow engine takes longer.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Milliseconds since the process's first call: when a connection opened, in 8 bytes of its
/// state (an `Instant` takes 16).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// The access line of a client connection that ended with `code` (`reason` when the server
/// closed it), opened at `opened` ([`now_ms`]).
pub fn connection_closed(session: &herald_hub::Session, client: &uuid::Uuid, code: u32, reason: &str, opened: u64) {
    let conn = session.connection();
    let user = session.user();
    tracing::info!(
        target: ACCESS,
        kind = "connection",
        address = %conn.peer().ip(),
        transport = conn.transport().name(),
        client = %client,
        user,
        duration_ms = now_ms().saturating_sub(opened),
        code,
        reason,
        trace_id = session.trace_id(),
        "connection closed {code}"
    );
}

/// Resident memory when the server started listening, bytes: the base of
/// `herald_process_bytes_per_connection`.
static BASE_RSS: AtomicU64 = AtomicU64::new(0);

/// Notes the resident memory of the process before any client connects.
pub fn note_base_memory() {
    BASE_RSS.store(resident_bytes().unwrap_or(0), Ordering::Relaxed);
}

/// Sets the process gauges, at each scrape: resident memory and open descriptors (from
/// `/proc/self`, where there is one) and the memory per open connection, computed as
/// (resident memory - resident memory at start) / connections.
pub fn sample_process(connections: usize) {
    let rss = resident_bytes();
    if let Some(rss) = rss {
        metrics::gauge!("herald_process_resident_memory_bytes").set(rss as f64);
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("herald_process_open_fds").set(dir.count() as f64);
    }
    metrics::gauge!("herald_process_bytes_per_connection").set(per_connection(
        rss.unwrap_or(0),
        BASE_RSS.load(Ordering::Relaxed),
        connections,
    ));
}

fn per_connection(rss: u64, base: u64, connections: usize) -> f64 {
    if connections == 0 { 0.0 } else { rss.saturating_sub(base) as f64 / connections as f64 }
}

/// `VmRSS` of `/proc/self/status`, bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
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
    fn process_figures() {
        let rss = resident_bytes().expect("Linux has /proc/self/status");
        assert!(rss > 1024 * 1024, "{rss}");
        assert_eq!(per_connection(10_000, 4_000, 0), 0.0);
        assert_eq!(per_connection(10_000, 4_000, 3), 2_000.0);
        assert_eq!(per_connection(3_000, 4_000, 3), 0.0, "memory given back below the base");
    }
}
