//! Metric names and hot-path handles. Handles are created on first use, after the server has
//! installed its recorder; without a recorder (unit tests) they are no-ops.
//!
//! Never label by channel or user: cardinality would explode.

use std::sync::OnceLock;

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

/// A client command and how it ended (`ok`, `error`, `disconnect`).
pub fn command(method: &'static str, result: &'static str) {
    metrics::counter!("herald_client_commands_total", "method" => method, "result" => result).increment(1);
}

/// A client error reply, by code.
pub fn error_reply(code: u32) {
    metrics::counter!("herald_client_errors_total", "code" => code.to_string()).increment(1);
}
