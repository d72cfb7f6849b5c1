//! Herald wire protocol: client protocol v2 messages with their JSON and Protobuf codecs
//! (`codec`, `protocol`, `raw`), the protocol codes (`codes`), the transport envelopes that wrap
//! each encoded reply for WebSocket, SSE, HTTP streaming and long-polling (`envelope`), shared
//! pre-encoded pushes (`prepared`), and the WebSocket frame codec and handshake (`ws`).
//!
//! Everything here is sans-IO: functions parse from byte slices and encode into caller buffers,
//! so the codecs can be unit-tested and fuzzed without a runtime.

pub mod codec;
pub mod codes;
pub mod envelope;
pub mod prepared;
pub mod protocol;
pub mod raw;
pub mod ws;

pub use codec::{
    DecodeError, EncodeError, Encoding, decode_commands, decode_replies, encode_batch, encode_command, encode_reply,
    try_encode_command,
};
pub use codes::{DisconnectReason, ErrorCode, UnsubscribeCode};
pub use envelope::Envelope;
pub use prepared::Prepared;
pub use protocol::*;
