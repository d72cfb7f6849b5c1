//! Herald server: transports, server API, configuration, metrics and the `herald` command.
//!
//! A connection flows through the modules in this order:
//! [`server`] (accept) → [`entry`] (read the first request head) → [`router`] (a [`router::Route`])
//! → a transport under [`transport`] (today [`transport::ws`]) or hyper → [`api`]; all of them
//! share [`state`].
//!
//! - [`config`] / [`loader`]: the configuration and how it is layered (flags > env > file);
//!   [`config_error`]: why loading or validating it failed (source, key, problem);
//!   [`config_keys`]: keys Herald does not use (nearest known key, Centrifugo options not
//!   implemented yet);
//! - [`cli`]: the `herald` command line (serve, genconfig, gentoken, checkconfig, version);
//! - [`server`]: start-up and its errors, worker threads and accept loops, timers, graceful
//!   shutdown;
//! - [`state`]: what everything shares ([`state::AppState`]) and the open-connection counters;
//! - [`tls`]: `http_server.tls` (rustls), certificate files read again when they change;
//!   [`tls_entry`]: a TLS connection after its handshake (a WebSocket gets its record layer in
//!   its link, anything else the pump that hands the decrypted connection to [`entry`]);
//! - [`reload`]: the configuration loaded again on SIGHUP or the API method `reload`, applied
//!   where it can be (token keys, channel options, client limits, log level, certificates),
//!   refused whole when invalid; [`reload_client`]: the `herald reload` command;
//! - [`entry`]: a connection's first request head, then a transport or hyper;
//! - [`router`]: request head → [`router::Route`], the one list of endpoints;
//! - [`transport`]: client transports ([`transport::ws`]: handshake, connection task, link,
//!   outbound queue);
//! - [`api`]: the server HTTP API (plumbing, and the method table in [`api::methods`]), health and
//!   metrics endpoints;
//! - [`proxy`]: the HTTP client of the logic-layer proxies (connect, refresh, subscribe,
//!   publish, sub_refresh, RPC backends), with per-proxy metrics;
//! - [`webhook`]: the lifecycle webhook sender (a bounded queue sessions push into, batches
//!   posted to a named proxy from its own thread);
//! - [`admin`]: the admin console (embedded page, login, actions through the API's method table,
//!   the user-trace stream);
//! - [`telemetry`]: logging and the Prometheus recorder.

pub mod admin;
pub mod api;
pub mod cli;
pub mod config;
pub mod config_error;
pub mod config_keys;
pub mod edge;
pub mod engine;
pub mod entry;
pub mod h2;
pub mod loader;
pub mod outbound;
pub mod proxy;
pub mod reload;
pub mod reload_client;
pub mod router;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod tls_entry;
pub mod tls_options;
pub mod transport;
pub mod webhook;
