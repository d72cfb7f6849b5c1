//! The NATS engine's metrics: failures by operation, connection events, append conflicts,
//! append retries and turns, gap fills and publish latency.

use std::time::Duration;

/// A failed engine operation (`op` names it, e.g. "nats history append").
pub(crate) fn error(op: &'static str) {
    metrics::counter!("herald_nats_errors_total", "op" => op).increment(1);
}

pub(crate) fn disconnected() {
    metrics::counter!("herald_nats_disconnects_total").increment(1);
}

pub(crate) fn reconnected() {
    metrics::counter!("herald_nats_reconnects_total").increment(1);
}

/// An append lost the race for a channel's next offset and was retried.
pub(crate) fn append_conflict() {
    metrics::counter!("herald_nats_append_conflicts_total").increment(1);
}

/// A node found a gap in a channel's offsets (late, lost or reordered core message, or a
/// reconnect) and read the stream; `filled` is how many publications that delivered.
pub(crate) fn gap_fill(filled: usize) {
    metrics::counter!("herald_nats_gap_fills_total").increment(1);
    metrics::counter!("herald_nats_gap_filled_publications_total").increment(filled as u64);
}

/// A received message that could not be decoded (another program on our subjects).
pub(crate) fn malformed() {
    metrics::counter!("herald_nats_malformed_messages_total").increment(1);
}

pub(crate) fn publish_latency(history: bool, d: Duration) {
    let kind = if history { "history" } else { "plain" };
    metrics::histogram!("herald_nats_publish_seconds", "kind" => kind).record(d.as_secs_f64());
}

/// An append that lost the race for a channel's next offset to another node and is retried
/// after a jittered pause.
pub(crate) fn append_retry() {
    metrics::counter!("herald_nats_append_retries_total").increment(1);
}

/// An append that still lost after `broker.nats.append_attempts` tries.
pub(crate) fn append_gave_up() {
    metrics::counter!("herald_nats_append_gave_up_total").increment(1);
}

/// Publications waiting for their channel's append turn on this node.
pub(crate) fn append_waiting(n: usize) {
    metrics::gauge!("herald_nats_append_waiting").set(n as f64);
}

/// Channels with an append running or waiting on this node.
pub(crate) fn append_channels(n: usize) {
    metrics::gauge!("herald_nats_append_channels").set(n as f64);
}

/// A publication refused because too many wait for their turn (`limit`: channel or node).
pub(crate) fn append_queue_full(limit: &'static str) {
    metrics::counter!("herald_nats_append_queue_full_total", "limit" => limit).increment(1);
}
