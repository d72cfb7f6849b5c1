//! The Redis engine's metrics (no channel or user labels: their number is unbounded).

pub(crate) fn error(op: &'static str) {
    metrics::counter!("herald_broker_errors_total", "engine" => "redis", "op" => op).increment(1);
}

pub(crate) fn reconnect() {
    metrics::counter!("herald_broker_reconnects_total", "engine" => "redis").increment(1);
}

pub(crate) fn publish_latency(seconds: f64) {
    metrics::histogram!("herald_broker_publish_seconds", "engine" => "redis").record(seconds);
}
