//! The opening request of an SSE or HTTP-streaming transport: head, payload, connect, ids.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all the herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::stream_request(data));
