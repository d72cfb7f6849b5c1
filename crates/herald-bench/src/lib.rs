//! `herald-bench`: the load generator for Herald (and Nchan, run the same way for comparison).
//!
//! The coordinator starts worker processes (copies of the binary, `worker` subcommand) that hold
//! the client connections, publishes through the server API, samples the server processes from
//! /proc, and prints a summary (stderr) and one JSON result line (stdout). See `bench/README.md`.

pub mod cli;
pub mod coord;
pub mod fleet;
pub mod floor;
pub mod http;
pub mod job;
pub mod metrics;
pub mod payload;
pub mod procfs;
pub mod rawnats;
pub mod report;
pub mod rpc;
pub mod series;
pub mod stats;
pub mod util;
pub mod worker;
pub mod wsclient;
