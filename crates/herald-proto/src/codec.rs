//! Batch codecs for the two encodings: JSON (newline-separated lines) and Protobuf (varint
//! length-delimited messages). Pure functions over byte slices; no I/O.

use bytes::{Buf, BufMut, Bytes};
use prost::Message as _;

use crate::protocol::{Command, Reply};

/// Wire encoding of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Protobuf,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }
}

/// Why a batch of commands could not be decoded. Every variant means "bad request" (3501).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A JSON line is not a valid command object.
    Json(String),
    /// A Protobuf message or its length prefix is malformed or truncated.
    Protobuf(String),
    /// The batch holds more commands than allowed.
    TooManyCommands,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Json(e) => write!(f, "malformed JSON command: {e}"),
            DecodeError::Protobuf(e) => write!(f, "malformed Protobuf command: {e}"),
            DecodeError::TooManyCommands => f.write_str("too many commands in one frame"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes every command of one transport message, in order.
///
/// JSON: one command per line; blank lines and a trailing newline are skipped. Protobuf: each
/// command is prefixed by its length as a varint. At most `max_commands` are accepted.
pub fn decode_commands(
    encoding: Encoding,
    data: impl AsRef<[u8]>,
    max_commands: usize,
) -> Result<Vec<Command>, DecodeError> {
    let data = data.as_ref();
    let mut out = Vec::new();
    match encoding {
        Encoding::Json => {
            for line in data.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                if out.len() == max_commands {
                    return Err(DecodeError::TooManyCommands);
                }
                let cmd: Command = serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?;
                out.push(cmd);
            }
        }
        Encoding::Protobuf => {
            let mut buf = data;
            while buf.has_remaining() {
                if out.len() == max_commands {
                    return Err(DecodeError::TooManyCommands);
                }
                let len = prost::encoding::decode_length_delimiter(&mut buf)
                    .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
                if len > buf.remaining() {
                    return Err(DecodeError::Protobuf("truncated message".into()));
                }
                let (msg, rest) = buf.split_at(len);
                buf = rest;
                let cmd = Command::decode(msg).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
                out.push(cmd);
            }
        }
    }
    Ok(out)
}

/// Why a reply could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// A payload is not valid JSON and the connection uses JSON (disconnect 3506).
    NotJson,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payload cannot be encoded as JSON")
    }
}

impl std::error::Error for EncodeError {}

/// Appends one reply to `out` in the connection's encoding, without any batch separator.
/// Protobuf replies are length-prefixed, which is what makes them self-delimiting.
pub fn encode_reply(encoding: Encoding, reply: &Reply, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match encoding {
        Encoding::Json => {
            let start = out.len();
            if serde_json::to_writer(&mut *out, reply).is_err() {
                out.truncate(start);
                return Err(EncodeError::NotJson);
            }
        }
        Encoding::Protobuf => {
            let len = reply.encoded_len();
            out.reserve(len + prost::length_delimiter_len(len));
            prost::encoding::encode_length_delimiter(len, out).expect("vec has room");
            reply.encode_raw(out);
        }
    }
    Ok(())
}

/// Encodes several replies as one transport message: JSON lines joined by `\n` (no trailing
/// newline, like the Go server), or concatenated delimited Protobuf messages.
///
/// All or nothing: on error `out` is left as it was (no partial batch, no dangling separator).
pub fn encode_batch<'a>(
    encoding: Encoding,
    replies: impl IntoIterator<Item = &'a Reply>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    for (i, reply) in replies.into_iter().enumerate() {
        if i > 0 && encoding == Encoding::Json {
            out.put_u8(b'\n');
        }
        if let Err(e) = encode_reply(encoding, reply, out) {
            out.truncate(start);
            return Err(e);
        }
    }
    Ok(())
}

/// Encodes a single command (used by clients and tests).
///
/// # Panics
/// With [`Encoding::Json`] when a payload (`data`) is not valid JSON; use
/// [`try_encode_command`] for payloads that were not checked.
pub fn encode_command(encoding: Encoding, cmd: &Command, out: &mut Vec<u8>) {
    try_encode_command(encoding, cmd, out).expect("command payloads must be valid JSON")
}

/// Encodes a single command; fails (writing nothing) when a payload cannot be sent as JSON.
pub fn try_encode_command(encoding: Encoding, cmd: &Command, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match encoding {
        Encoding::Json => {
            let start = out.len();
            if serde_json::to_writer(&mut *out, cmd).is_err() {
                out.truncate(start);
                return Err(EncodeError::NotJson);
            }
        }
        Encoding::Protobuf => cmd.encode_length_delimited(out).expect("vec has room"),
    }
    Ok(())
}

/// Decodes every reply of one transport message (used by clients and tests).
pub fn decode_replies(encoding: Encoding, data: Bytes) -> Result<Vec<Reply>, DecodeError> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Json => {
            for line in data.split(|b| *b == b'\n') {
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                out.push(serde_json::from_slice(line).map_err(|e| DecodeError::Json(e.to_string()))?);
            }
        }
        Encoding::Protobuf => {
            let mut buf = data;
            while buf.has_remaining() {
                let len = prost::encoding::decode_length_delimiter(&mut buf)
                    .map_err(|e| DecodeError::Protobuf(e.to_string()))?;
                if len > buf.remaining() {
                    return Err(DecodeError::Protobuf("truncated message".into()));
                }
                let msg = buf.split_to(len);
                out.push(Reply::decode(msg).map_err(|e| DecodeError::Protobuf(e.to_string()))?);
            }
        }
    }
    Ok(out)
}
