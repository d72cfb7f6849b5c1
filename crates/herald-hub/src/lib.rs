//! Herald hub: everything between a decoded command and a queued frame, without I/O.
//!
//! - [`session`]: the per-client protocol state machine;
//! - [`ports`]: what a session works through (authenticator, engine, registry, time), and
//!   [`auth`]: the JWT authenticator;
//! - [`hub`]: channel → subscribers and user → connections indexes, and fan-out;
//! - [`broker`]: the engine contract (PUB/SUB, history, presence, node-to-node control, typed
//!   errors), the delivery sink into the hub, and the memory engines;
//! - [`cluster`]: control messages between nodes, the node registry and the delivery probe;
//! - [`survey`]: questions asked of every node (`channels`, `connections`) and their merge;
//! - [`node`]: ties them together and implements the server API operations;
//! - [`trace`]: per-user tracing (which users, the bounded line buffer);
//! - [`timer`]: the shared coarse timer wheel for pings, pongs and expiry;
//! - [`link`]: the trait transports implement for each connection;
//! - [`conn`]: what a transport tells a session about its connection (peer address, transport);
//! - [`proxy`]: the logic-layer proxies (backend endpoints deciding connects, subscriptions,
//!   publications, RPC) behind a port the server implements over HTTP;
//! - [`webhook`]: lifecycle webhooks (connect, disconnect, subscribe, unsubscribe events pushed
//!   into a bounded queue the server sends in batches);
//! - [`channel`], [`config`], [`recovery`], [`duration`], [`clock`]: rules and helpers.

pub mod auth;
pub mod broker;
pub mod channel;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod duration;
pub mod hub;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod node;
pub mod ports;
pub mod proxy;
pub mod recovery;
pub mod session;
pub mod survey;
pub mod timer;
pub mod trace;
pub mod wake;
pub mod webhook;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, HubConfig};
pub use conn::{ConnectionInfo, Transport};
pub use link::{ClientLink, Control, LinkTimers, ServerSubscribe};
pub use node::{EmulationForward, Node, NodeIdentity};
pub use ports::{Authenticator, BackendError, ConnectAttempt, Identity, Refusal};
pub use session::{Flow, Session};
