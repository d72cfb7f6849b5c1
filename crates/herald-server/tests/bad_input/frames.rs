//! WebSocket framing cases on a connected client: every frame RFC 6455 forbids, and messages
//! over `websocket.message_size_limit`.

use crate::support::*;
use crate::{Case, Conn, close, run_group, ws};

const LIMIT: usize = 4096;

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(fin, opcode, payload, true)
}

/// A frame whose first byte is `b0` as given (FIN, RSV bits and opcode), masked.
fn frame_with_b0(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = frame(true, op::TEXT, payload);
    bytes[0] = b0;
    bytes
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// (name, bytes sent after connecting, close code, reason).
fn table() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let mut fragments_over = frame(false, op::TEXT, &[b' '; 3000]);
    fragments_over.extend(frame(true, op::CONTINUATION, &[b' '; 3000]));
    let mut interleaved = frame(false, op::TEXT, b"[");
    interleaved.extend(frame(true, op::TEXT, b"{}"));
    // A 64-bit length with the most significant bit set (RFC 6455 §5.2 forbids it).
    let mut huge_length = vec![0x81, 0xFF];
    huge_length.extend_from_slice(&u64::MAX.to_be_bytes());
    huge_length.extend_from_slice(&[1, 2, 3, 4]);
    let mut bad_utf8_fragment = frame(false, op::TEXT, &[b'{', 0xC3]);
    bad_utf8_fragment.extend(frame(false, op::CONTINUATION, &[0x28]));
    let mut ping_in_fragments = frame(false, op::TEXT, b"{");
    ping_in_fragments.extend(frame(false, op::PING, b"x"));
    vec![
        ("unmasked client frame", client_frame(true, op::TEXT, b"{}", false), 1002, "client frame not masked"),
        ("RSV1 set without an extension", frame_with_b0(0x80 | 0x40 | op::TEXT, b"{}"), 1002, "reserved bits set"),
        ("RSV3 set", frame_with_b0(0x80 | 0x10 | op::TEXT, b"{}"), 1002, "reserved bits set"),
        ("reserved data opcode 0x3", frame_with_b0(0x83, b"{}"), 1002, "unknown opcode"),
        ("reserved control opcode 0xB", frame_with_b0(0x8B, b""), 1002, "unknown opcode"),
        ("fragmented ping", frame(false, op::PING, b"x"), 1002, "invalid control frame"),
        ("ping of 126 bytes", frame(true, op::PING, &[b'p'; 126]), 1002, "invalid control frame"),
        (
            "close of 126 bytes",
            frame(true, op::CLOSE, &close_payload(1000, &[b'r'; 124])),
            1002,
            "invalid control frame",
        ),
        ("fragmented control frame inside a message", ping_in_fragments, 1002, "invalid control frame"),
        ("close with a 1-byte payload", frame(true, op::CLOSE, &[3]), 1002, "invalid close payload"),
        ("close code 999", frame(true, op::CLOSE, &close_payload(999, b"")), 1002, "invalid close code"),
        ("close code 1005 (reserved)", frame(true, op::CLOSE, &close_payload(1005, b"")), 1002, "invalid close code"),
        ("close code 1006 (reserved)", frame(true, op::CLOSE, &close_payload(1006, b"")), 1002, "invalid close code"),
        ("close code 2999", frame(true, op::CLOSE, &close_payload(2999, b"")), 1002, "invalid close code"),
        ("close code 5000", frame(true, op::CLOSE, &close_payload(5000, b"")), 1002, "invalid close code"),
        (
            "close reason not UTF-8",
            frame(true, op::CLOSE, &close_payload(1000, &[0xFF, 0xFE])),
            1007,
            "close reason is not UTF-8",
        ),
        ("text frame not UTF-8", frame(true, op::TEXT, &[b'{', 0xFF, 0xFE, b'}']), 1007, "text message is not UTF-8"),
        ("text fragment not UTF-8", bad_utf8_fragment, 1007, "text message is not UTF-8"),
        ("continuation without a start", frame(true, op::CONTINUATION, b"{}"), 1002, "unexpected continuation frame"),
        ("interleaved data frames", interleaved, 1002, "expected continuation frame"),
        ("frame over websocket.message_size_limit", frame(true, op::TEXT, &[b' '; LIMIT + 1]), 1009, "message too big"),
        ("fragmented message over websocket.message_size_limit", fragments_over, 1009, "message too big"),
        ("64-bit length with the top bit set", huge_length, 1002, "invalid payload length"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames() {
    let limit = LIMIT.to_string();
    let cases = table()
        .into_iter()
        .map(|(name, bytes, code, reason)| {
            let expect = close(code, reason);
            Case::new(name, ws(Conn::Json, bytes, &expect), expect)
        })
        .collect();
    run_group("websocket_frames", &[("HERALD_WEBSOCKET_MESSAGE_SIZE_LIMIT", limit.as_str())], cases, &[]).await;
}
