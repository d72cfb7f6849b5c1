//! A connection's first request head: reading it within the size limit, then routing it.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::http_head(data));
