//! Metric names and hot-path handles. Handles are created on first use, after the server has
//! installed its recorder; without a recorder (unit tests) they are no-ops.
//!
//! Never label by channel or user: cardinality would explode.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

use metrics::Counter;

fn handle(cell: &'static OnceLock<Counter>, name: &'static str) -> &'static Counter {
    cell.get_or_init(|| metrics::counter!(name))
}

/// A publication accepted into a channel.
pub fn published() {
    static C: OnceLock<Counter> = OnceLock::new();
    handle(&C, "herald_messages_published_total").increment(1);
}

/// `n` pushes queued to subscribers by one fan-out.
pub fn delivered(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    if n > 0 {
        handle(&C, "herald_messages_delivered_total").increment(n as u64);
    }
}

/// Counter handles by label set, created once. Registering through the macro on every call
/// hashes and looks up the labels each time, which showed in handshake profiles.
pub type Handles<K> = OnceLock<Mutex<HashMap<K, Counter>>>;

/// The counter for `key` in `cell`, made by `make` the first time.
pub fn cached<K: Eq + Hash + Copy>(cell: &'static Handles<K>, key: K, make: impl FnOnce() -> Counter) -> Counter {
    let mut map = cell.get_or_init(Default::default).lock().expect("metric handles");
    map.entry(key).or_insert_with(make).clone()
}

/// A client command and how it ended (`ok`, `error`, `disconnect`).
pub fn command(method: &'static str, result: &'static str) {
    static H: Handles<(&'static str, &'static str)> = OnceLock::new();
    cached(
        &H,
        (method, result),
        || metrics::counter!("herald_client_commands_total", "method" => method, "result" => result),
    )
    .increment(1);
}

/// Client command latency, seconds, by method: from the decoded command to its reply queued
/// (a proxied command includes the backend's answer).
pub const COMMAND_DURATION: &str = "herald_client_command_duration_seconds";

thread_local! {
    /// Histogram handles by method, per thread: no lock shared by the workers on the command
    /// path.
    static DURATIONS: std::cell::RefCell<HashMap<&'static str, metrics::Histogram>> = Default::default();
}

/// Records the latency of a `method` command that started at `started`.
pub fn command_duration(method: &'static str, started: std::time::Instant) {
    let seconds = started.elapsed().as_secs_f64();
    DURATIONS.with(|h| {
        h.borrow_mut()
            .entry(method)
            .or_insert_with(|| metrics::histogram!(COMMAND_DURATION, "method" => method))
            .record(seconds)
    });
}

/// A channel name refused by `Channels::check`, by who named it (`client`, `api`) and why.
pub fn channel_refused(source: &'static str, reason: &'static str) {
    static H: Handles<(&'static str, &'static str)> = OnceLock::new();
    cached(
        &H,
        (source, reason),
        || metrics::counter!("herald_channel_refused_total", "source" => source, "reason" => reason),
    )
    .increment(1);
}

/// A client error reply, by code.
/// A request refused by one of Herald's limits (`herald_limit_refusals_total`): which limit,
/// and what the refusal was (`error`, `disconnect`, an HTTP status...).
pub fn limit_refused(limit: &'static str, outcome: &'static str) {
    static H: Handles<(&'static str, &'static str)> = OnceLock::new();
    cached(
        &H,
        (limit, outcome),
        || metrics::counter!("herald_limit_refusals_total", "limit" => limit, "outcome" => outcome),
    )
    .increment(1);
}

pub fn error_reply(code: u32) {
    by_code("herald_client_errors_total", code);
}

/// Increments counter `name` labelled with a protocol code.
pub fn by_code(name: &'static str, code: u32) {
    static H: Handles<(&'static str, u32)> = OnceLock::new();
    cached(&H, (name, code), || metrics::counter!(name, "code" => code.to_string())).increment(1);
}

/// What a backend decided for a proxied event (`allow`, `error`, `disconnect`), or that the
/// call brought no usable answer (`failed`, `bad_answer`). The HTTP client counts requests
/// and latencies per proxy itself.
pub fn proxy_decision(kind: &'static str, decision: &'static str) {
    static H: Handles<(&'static str, &'static str)> = OnceLock::new();
    cached(
        &H,
        (kind, decision),
        || metrics::counter!("herald_proxy_decisions_total", "kind" => kind, "decision" => decision),
    )
    .increment(1);
}

/// A control message received from the cluster, by kind (`node`, `command`, `invalid`).
pub fn control_received(kind: &'static str) {
    metrics::counter!("herald_cluster_control_received_total", "kind" => kind).increment(1);
}

/// Round trip of a delivery probe through the engine, seconds.
pub fn probe_latency(seconds: f64) {
    metrics::histogram!("herald_broker_probe_seconds").record(seconds);
}

/// A control message this node could not send.
pub fn control_send_failed() {
    metrics::counter!("herald_cluster_control_send_errors_total").increment(1);
}

/// A survey sent to the cluster, by operation (`channels`, `connections`).
pub fn survey_sent(op: &'static str) {
    metrics::counter!("herald_surveys_total", "op" => op).increment(1);
}

/// A node's answer to one of this node's surveys arrived in time.
pub fn survey_answer(op: &'static str) {
    metrics::counter!("herald_survey_answers_total", "op" => op).increment(1);
}

/// `n` live nodes did not answer one of this node's surveys before its deadline.
pub fn survey_missing(op: &'static str, n: usize) {
    metrics::counter!("herald_survey_timeouts_total", "op" => op).increment(n as u64);
}

/// A reply to another node's survey dropped: the reply outbox was full.
pub fn survey_reply_dropped() {
    metrics::counter!("herald_survey_replies_dropped_total").increment(1);
}

/// Local subscriptions told to recover after the engine lost messages.
pub fn resync(n: usize) {
    metrics::counter!("herald_broker_resync_subscriptions_total").increment(n as u64);
}

/// A connection over `client.user_connection_limit`: `refused` or `evicted`.
pub fn user_limit(outcome: &'static str) {
    metrics::counter!("herald_user_connection_limit_total", "outcome" => outcome).increment(1);
}

/// A user-trace line recorded on this node, by kind (`command`, `reply`, `push`, `proxy`,
/// `trace`).
pub fn trace_line(kind: &str) {
    use crate::trace::kind::*;
    let kind = [COMMAND, REPLY, PUSH, PROXY, TRACE].into_iter().find(|k| *k == kind).unwrap_or("other");
    static H: Handles<&'static str> = OnceLock::new();
    cached(&H, kind, || metrics::counter!("herald_trace_lines_total", "kind" => kind)).increment(1);
}
