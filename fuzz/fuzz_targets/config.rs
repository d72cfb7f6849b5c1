//! The configuration loader on arbitrary JSON, YAML and TOML text and `HERALD_*` variables.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all three herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::config(data));
