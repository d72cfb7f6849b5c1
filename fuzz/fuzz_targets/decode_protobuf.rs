//! Protobuf command/reply batch decoding, with re-encoding of what decodes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herald_fuzz::decode_protobuf(data));
