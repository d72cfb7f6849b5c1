//! The WebSocket transport.
//!
//! - `handshake`: upgrade checks, origin policy, encoding negotiation, the 101 response;
//! - `link`: [`WsLink`], the connection's `ClientLink` (outbound queue and writes);
//! - `conn`: the connection task (reads, commands, goodbye);
//! - `queue`: the outbound frame queue;
//! - `echo`: the test-only echo endpoint for the Autobahn conformance suite.
//!
//! Idle cost is the design constraint (docs/architecture.md, "Where an idle connection's memory goes"):
//! - no read buffer per connection: the task waits for readiness, then reads into a per-thread
//!   scratch buffer; only an incomplete frame is copied into a small per-connection buffer,
//!   which is freed once the frame completes;
//! - no per-connection channel or timer: frames are queued in a `VecDeque<Bytes>` inside the
//!   shared [`WsLink`], bounded in bytes (`client.queue_max_size`, slow clients get 3008), and
//!   pings and timeouts come from the node's shared timer wheel;
//! - one small task: command handling is boxed per command so its state is not part of the
//!   long-lived future.
//!
//! Pushes are pre-encoded frames shared by every subscriber; the task writes whatever is queued
//! with one vectored write.

mod conn;
mod echo;
mod handshake;
mod link;
mod queue;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use metrics::Counter;

use crate::config::Config;

pub(crate) use handshake::upgrade;
pub use link::WsLink;

/// Which endpoint an upgrade request was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The client protocol (`websocket.handler_prefix`).
    Client,
    /// The test-only echo (`websocket.echo_endpoint_for_conformance_tests`).
    Echo,
}

/// Per-transport limits, fixed at start-up.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message: usize,
    pub queue_max: usize,
    pub max_commands: usize,
    pub stale_after: u32,
}

impl WsSettings {
    pub fn from_config(config: &Config) -> Self {
        WsSettings {
            max_message: config.websocket.message_size_limit,
            queue_max: config.client.queue_max_size,
            max_commands: config.client.max_commands_per_frame,
            // Timer ticks are whole seconds and a connection opens somewhere inside the current
            // tick: round the delay up and add that partial tick, so that no connection is closed
            // as stale before the full `client.stale_close_delay`.
            stale_after: u32::try_from(config.client.stale_close_delay.as_millis().div_ceil(1000).max(1) + 1)
                .unwrap_or(u32::MAX),
        }
    }
}

fn counter(cell: &'static OnceLock<Counter>, name: &'static str) -> &'static Counter {
    cell.get_or_init(|| metrics::counter!(name))
}

fn bytes_in(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_in_total").increment(n as u64);
}

fn bytes_out(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_out_total").increment(n as u64);
}
