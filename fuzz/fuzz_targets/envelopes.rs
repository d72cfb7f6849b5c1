//! Every transport envelope around a push with an arbitrary payload.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herald_fuzz::envelopes(data));
