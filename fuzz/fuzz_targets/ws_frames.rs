//! WebSocket frame reader over arbitrary client bytes, split into reads at a fuzzed point.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herald_fuzz::ws_frames(data));
