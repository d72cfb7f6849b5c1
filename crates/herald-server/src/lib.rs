//! Herald server: transports, server API, configuration, metrics and the `herald` command.
//!
//! - [`config`] / [`loader`]: the configuration and how it is layered (flags > env > file);
//! - [`cli`]: the `herald` command line (serve, genconfig, gentoken, checkconfig, version);
//! - [`server`]: start-up, the accept loop, timers and graceful shutdown;
//! - [`ws`]: the WebSocket transport (handshake, per-connection task, outbound queue);
//! - [`api`]: the server HTTP API, health and metrics endpoints;
//! - [`telemetry`]: logging and the Prometheus recorder.

pub mod api;
pub mod cli;
pub mod config;
pub mod loader;
mod queue;
pub mod server;
pub mod telemetry;
pub mod ws;
