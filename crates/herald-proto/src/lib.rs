//! Herald wire protocol: client protocol v2 messages with their JSON and Protobuf codecs, the
//! protocol codes, shared pre-encoded frames, and the WebSocket frame codec.
//!
//! Everything here is sans-IO: functions parse from byte slices and encode into caller buffers,
//! so the codecs can be unit-tested and fuzzed without a runtime.

pub mod codec;
pub mod codes;
pub mod prepared;
pub mod protocol;
pub mod raw;
pub mod ws;

pub use codec::{
    DecodeError, EncodeError, Encoding, decode_commands, decode_replies, encode_batch, encode_command, encode_reply,
    try_encode_command,
};
pub use codes::{DisconnectReason, ErrorCode, UnsubscribeCode};
pub use prepared::{Framing, Prepared};
pub use protocol::*;
