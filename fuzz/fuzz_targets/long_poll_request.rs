//! A long-poll request: a connect (body or cf_connect) or a poll (session, seq).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all the herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::long_poll_request(data));
