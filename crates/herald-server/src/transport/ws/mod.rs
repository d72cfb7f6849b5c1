//! The WebSocket transport.
//!
//! - `handshake`: upgrade checks, origin policy, encoding negotiation, the 101 response;
//! - `conn`: the connection task (reads, commands, goodbye);
//! - the link ([`SocketLink`], outbound queue and writes) is shared with the streaming
//!   transports (`super::link`, `super::queue`);
//! - `echo`: the test-only echo endpoint for the Autobahn conformance suite.
//!
//! Idle cost is the design constraint (docs/architecture.md, "Where an idle connection's memory goes"):
//! - no read buffer per connection: the task waits for readiness, then reads into a per-thread
//!   scratch buffer; only an incomplete frame is copied into a small per-connection buffer,
//!   which is freed once the frame completes;
//! - no per-connection channel or timer: frames are queued in a `VecDeque<Bytes>` inside the
//!   shared [`SocketLink`], bounded in bytes (`client.queue_max_size`, slow clients get 3008), and
//!   pings and timeouts come from the node's shared timer wheel;
//! - one small task: command handling is boxed per command so its state is not part of the
//!   long-lived future.
//!
//! Pushes are pre-encoded frames shared by every subscriber; the task writes whatever is queued
//! with one vectored write.

pub(crate) mod conn;
mod echo;
mod handshake;
#[cfg(test)]
mod tests;

use crate::config::Config;

pub(crate) use super::bytes_in;
pub use super::link::SocketLink;
pub(crate) use handshake::{decide, start, upgrade};

/// Which endpoint an upgrade request was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// The client protocol (`websocket.handler_prefix`).
    Client,
    /// The test-only echo (`websocket.echo_endpoint_for_conformance_tests`).
    Echo,
    /// The unidirectional WebSocket (`uni_websocket.handler_prefix`): one JSON ConnectRequest
    /// (in `cf_connect` or as the first text message), then bare pushes.
    Uni,
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
    /// The settings of the unidirectional WebSocket (its own message limit).
    pub fn uni(config: &Config) -> Self {
        WsSettings {
            max_message: config.uni_websocket.message_size_limit,
            max_commands: 1,
            ..Self::from_config(config)
        }
    }

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
