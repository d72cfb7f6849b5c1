//! A connection's first request head: reading it within the size limit, then routing it.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all three herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::http_head(data));
