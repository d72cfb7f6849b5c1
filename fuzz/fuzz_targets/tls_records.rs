//! What a client sends over TLS 1.3 after the handshake, to the record layer of a connection
//! served natively (`transport::records`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The file holds all the herald-server harnesses; this target uses one.
#[allow(dead_code)]
#[path = "../src/server.rs"]
mod server;

fuzz_target!(|data: &[u8]| server::tls_records(data));
