//! HTTP upgrade request parsing (httparse) and the WebSocket handshake checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herald_fuzz::ws_upgrade(data));
