//! Server API request bodies: every method's params and `batch` commands, as `/api/<method>` parses them.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all three herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::api_bodies(data));
