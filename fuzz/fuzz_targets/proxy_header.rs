//! A PROXY protocol header (v1 or v2) at the start of a connection from a trusted proxy.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all the herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::proxy_header(data));
