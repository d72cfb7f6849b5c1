//! WebSocket (RFC 6455) server-side frame codec and handshake helpers. Sans-IO.
//!
//! Why our own codec: it lets the transport read into a shared per-worker buffer only when a
//! socket is readable (no read buffer held per idle connection), and lets one pre-encoded frame
//! (header + payload) be shared by every subscriber. The codec is strict where the RFC is
//! (masking, reserved bits, control frame rules, UTF-8 of text messages and close reasons) and
//! names the close code for every violation.

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

/// Frame opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl Opcode {
    fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// Standard close codes used by the codec.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// A violation of the framing rules, with the close code to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
}

impl ProtocolError {
    const fn new(code: u16, reason: &'static str) -> Self {
        ProtocolError { code, reason }
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "websocket protocol error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ProtocolError {}

/// One complete event read from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete text message (already checked to be UTF-8).
    Text(&'a [u8]),
    /// A complete binary message.
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// A close frame: the code (if any) and the reason.
    Close(Option<u16>, &'a str),
}

/// A fragmented message being assembled. Allocated only while one is in flight.
#[derive(Debug)]
struct Fragmented {
    opcode: Opcode,
    data: Vec<u8>,
    /// Text: the length of the prefix of `data` known to be UTF-8 (a character boundary).
    checked: usize,
}

impl Fragmented {
    /// Checks the text received so far, so that invalid UTF-8 fails the fragment that carries
    /// it, not only the end of the message (RFC 6455 §8.1 "fail fast"; Autobahn 6.4.1, 6.4.2).
    /// A character cut by a fragment boundary is checked when its rest arrives.
    fn check_text(&mut self) -> Result<(), ProtocolError> {
        if self.opcode != Opcode::Text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.checked..]) {
            Ok(_) => self.checked = self.data.len(),
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(NOT_UTF8),
        }
        Ok(())
    }
}

const NOT_UTF8: ProtocolError = ProtocolError::new(close::INVALID_PAYLOAD, "text message is not UTF-8");

/// Per-connection message reader state: only the fragments of an unfinished message.
/// Partial *frames* are the transport's to keep (it owns the read buffers).
#[derive(Debug, Default)]
pub struct MessageReader {
    frag: Option<Box<Fragmented>>,
}

/// The head of a frame: what `parse_head` found before the payload.
#[derive(Debug, Clone, Copy)]
struct Head {
    fin: bool,
    opcode: Opcode,
    mask: [u8; 4],
    header_len: usize,
    payload_len: usize,
}

/// Result of parsing a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Everything up to `consumed` was handled; the rest is an incomplete frame. `needed` is the
    /// total size of that frame when its header was complete, so a caller can size a buffer.
    Partial { consumed: usize, needed: Option<usize> },
    /// A close frame was read; nothing after it should be processed.
    Closed { consumed: usize },
}

impl MessageReader {
    pub fn new() -> Self {
        MessageReader { frag: None }
    }

    /// True while a fragmented message is unfinished (state worth keeping between reads).
    pub fn is_idle(&self) -> bool {
        self.frag.is_none()
    }

    /// Parses every complete frame at the start of `buf` (client frames, so masked), unmasking
    /// payloads in place, and calls `on_event` for each complete message or control frame.
    ///
    /// `max_message` bounds a single frame's payload and an assembled message. The callback may
    /// stop parsing by returning `false` (the bytes of that frame count as consumed).
    pub fn parse(
        &mut self,
        buf: &mut [u8],
        max_message: usize,
        mut on_event: impl FnMut(Event<'_>) -> bool,
    ) -> Result<Progress, ProtocolError> {
        let mut pos = 0;
        loop {
            let head = match parse_head(&buf[pos..], max_message)? {
                Some(h) => h,
                None => return Ok(Progress::Partial { consumed: pos, needed: None }),
            };
            let total = head.header_len + head.payload_len;
            if buf.len() - pos < total {
                return Ok(Progress::Partial { consumed: pos, needed: Some(total) });
            }
            let payload = &mut buf[pos + head.header_len..pos + total];
            unmask(payload, head.mask);
            pos += total;
            let payload: &[u8] = payload;
            let keep_going = match head.opcode {
                Opcode::Ping => on_event(Event::Ping(payload)),
                Opcode::Pong => on_event(Event::Pong),
                Opcode::Close => {
                    let (code, reason) = parse_close(payload)?;
                    on_event(Event::Close(code, reason));
                    return Ok(Progress::Closed { consumed: pos });
                }
                Opcode::Text | Opcode::Binary => {
                    if self.frag.is_some() {
                        return Err(ProtocolError::new(close::PROTOCOL_ERROR, "expected continuation frame"));
                    }
                    if head.fin {
                        deliver(head.opcode, payload, 0, &mut on_event)?
                    } else {
                        let mut frag = Box::new(Fragmented { opcode: head.opcode, data: payload.to_vec(), checked: 0 });
                        frag.check_text()?;
                        self.frag = Some(frag);
                        true
                    }
                }
                Opcode::Continuation => {
                    let Some(frag) = self.frag.as_mut() else {
                        return Err(ProtocolError::new(close::PROTOCOL_ERROR, "unexpected continuation frame"));
                    };
                    if frag.data.len() + payload.len() > max_message {
                        return Err(ProtocolError::new(close::TOO_BIG, "message too big"));
                    }
                    frag.data.extend_from_slice(payload);
                    if head.fin {
                        let frag = self.frag.take().expect("checked above");
                        deliver(frag.opcode, &frag.data, frag.checked, &mut on_event)?
                    } else {
                        frag.check_text()?;
                        true
                    }
                }
            };
            if !keep_going {
                return Ok(Progress::Partial { consumed: pos, needed: None });
            }
        }
    }
}

/// Delivers a complete message; for text, `data[..checked]` is already known to be UTF-8.
fn deliver(
    opcode: Opcode,
    data: &[u8],
    checked: usize,
    on_event: &mut impl FnMut(Event<'_>) -> bool,
) -> Result<bool, ProtocolError> {
    if opcode == Opcode::Text {
        if std::str::from_utf8(&data[checked..]).is_err() {
            return Err(NOT_UTF8);
        }
        Ok(on_event(Event::Text(data)))
    } else {
        Ok(on_event(Event::Binary(data)))
    }
}

fn parse_head(buf: &[u8], max_message: usize) -> Result<Option<Head>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::new(close::PROTOCOL_ERROR, "reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_u8(b0 & 0x0F).ok_or(ProtocolError::new(close::PROTOCOL_ERROR, "unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::new(close::PROTOCOL_ERROR, "client frame not masked"));
    }
    let len7 = (b1 & 0x7F) as usize;
    if opcode.is_control() && (!fin || len7 > 125) {
        return Err(ProtocolError::new(close::PROTOCOL_ERROR, "invalid control frame"));
    }
    let (payload_len, ext) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as usize, 2)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let v = u64::from_be_bytes(b);
            if v >> 63 != 0 {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, "invalid payload length"));
            }
            (usize::try_from(v).unwrap_or(usize::MAX), 8)
        }
        n => (n, 0),
    };
    if payload_len > max_message {
        return Err(ProtocolError::new(close::TOO_BIG, "message too big"));
    }
    let header_len = 2 + ext + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + ext..header_len]);
    Ok(Some(Head { fin, opcode, mask, header_len, payload_len }))
}

/// XORs `data` with the 4-byte mask, eight bytes at a time where possible.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &str), ProtocolError> {
    match payload.len() {
        0 => Ok((None, "")),
        1 => Err(ProtocolError::new(close::PROTOCOL_ERROR, "invalid close payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            let valid = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !valid {
                return Err(ProtocolError::new(close::PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| ProtocolError::new(close::INVALID_PAYLOAD, "close reason is not UTF-8"))?;
            Ok((Some(code), reason))
        }
    }
}

/// Length of a server frame header for a payload of `len` bytes (servers do not mask).
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Appends an unmasked, final frame header.
pub fn put_header(out: &mut impl BufMut, opcode: Opcode, len: usize) {
    out.put_u8(0x80 | opcode as u8);
    put_len(out, 0, len);
}

/// Appends the payload length field; `mask_bit` is 0x80 for a masked (client) frame.
fn put_len(out: &mut impl BufMut, mask_bit: u8, len: usize) {
    match len {
        0..=125 => out.put_u8(mask_bit | len as u8),
        126..=65535 => {
            out.put_u8(mask_bit | 126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(mask_bit | 127);
            out.put_u64(len as u64);
        }
    }
}

/// Appends a client frame: masked with `mask`, or unmasked (which servers must reject) when
/// `mask` is `None`. `opcode` is raw so that clients, tests and fuzz seeds can also write
/// reserved opcodes. For load generators, tests and fuzzing; the server never sends these.
pub fn put_client_frame(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push((if fin { 0x80 } else { 0 }) | opcode);
    put_len(out, if mask.is_some() { 0x80 } else { 0 }, payload.len());
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        unmask(&mut out[start..], mask);
    }
}

/// A complete server frame (header + payload) in one buffer.
pub fn frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// Frames `payload` in place: `buf` must have `RESERVE` bytes of headroom before the payload,
/// which is how encoders avoid a copy. Returns the frame as `Bytes`.
pub const RESERVE: usize = 10;

/// Turns `buf` (first [`RESERVE`] bytes reserved, then the payload) into a complete frame.
pub fn frame_reserved(opcode: Opcode, mut buf: Vec<u8>) -> Bytes {
    let len = buf.len() - RESERVE;
    let hl = header_len(len);
    let start = RESERVE - hl;
    let mut head = Vec::with_capacity(hl);
    put_header(&mut head, opcode, len);
    buf[start..RESERVE].copy_from_slice(&head);
    Bytes::from(buf).slice(start..)
}

/// A close frame with a code and a reason. The reason is cut to fit the 125-byte control frame
/// limit (at a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut reason = reason;
    while reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(Opcode::Close, &payload)
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Why an HTTP request is not an acceptable WebSocket upgrade, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeError {
    pub status: u16,
    pub message: &'static str,
}

/// What the server needs from a valid upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'a> {
    pub key: &'a [u8],
    /// Subprotocols offered by the client, in order.
    pub protocols: Vec<&'a str>,
    pub origin: Option<&'a str>,
    pub host: Option<&'a str>,
}

fn header<'a>(headers: &'a [httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

fn has_token(value: &[u8], token: &str) -> bool {
    value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Checks a parsed request for a valid WebSocket upgrade (RFC 6455 §4.2.1).
pub fn check_upgrade<'a>(method: &str, headers: &'a [httparse::Header<'a>]) -> Result<Upgrade<'a>, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError { status: 405, message: "WebSocket upgrade requires GET" });
    }
    let upgrade = header(headers, "upgrade").unwrap_or_default();
    if !has_token(upgrade, "websocket") {
        return Err(HandshakeError { status: 400, message: "missing Upgrade: websocket" });
    }
    let connection = header(headers, "connection").unwrap_or_default();
    if !has_token(connection, "upgrade") {
        return Err(HandshakeError { status: 400, message: "missing Connection: upgrade" });
    }
    if header(headers, "sec-websocket-version").map(|v| v.trim_ascii()) != Some(b"13") {
        return Err(HandshakeError { status: 426, message: "unsupported Sec-WebSocket-Version" });
    }
    let key = header(headers, "sec-websocket-key").map(|k| k.trim_ascii()).unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).unwrap_or_default();
    if decoded.len() != 16 {
        return Err(HandshakeError { status: 400, message: "invalid Sec-WebSocket-Key" });
    }
    let mut protocols = Vec::new();
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol")) {
        if let Ok(v) = std::str::from_utf8(h.value) {
            protocols.extend(v.split(',').map(str::trim).filter(|p| !p.is_empty()));
        }
    }
    let text = |name| header(headers, name).and_then(|v| std::str::from_utf8(v).ok());
    Ok(Upgrade { key, protocols, origin: text("origin"), host: text("host") })
}

/// The `101 Switching Protocols` response.
pub fn switching_protocols(key: &[u8], protocol: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key).as_bytes());
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        put_client_frame(&mut out, fin, opcode, payload, Some(mask));
        out
    }

    fn collect(reader: &mut MessageReader, buf: &mut [u8]) -> (Result<Progress, ProtocolError>, Vec<String>) {
        let mut events = Vec::new();
        let r = reader.parse(buf, 1 << 16, |e| {
            events.push(match e {
                Event::Text(t) => format!("text:{}", String::from_utf8_lossy(t)),
                Event::Binary(b) => format!("bin:{}", b.len()),
                Event::Ping(p) => format!("ping:{}", p.len()),
                Event::Pong => "pong".into(),
                Event::Close(c, r) => format!("close:{c:?}:{r}"),
            });
            true
        });
        (r, events)
    }

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn parses_masked_text_frames_and_reports_partial() {
        let mut buf = client_frame(true, 1, b"{\"id\":1}", [1, 2, 3, 4]);
        buf.extend(client_frame(true, 2, &[9; 300], [5, 6, 7, 8]));
        let second = client_frame(true, 1, b"hello", [9, 9, 9, 9]);
        buf.extend_from_slice(&second[..4]);
        let total = buf.len();
        let mut r = MessageReader::new();
        let (p, ev) = collect(&mut r, &mut buf);
        assert_eq!(ev, vec!["text:{\"id\":1}", "bin:300"]);
        assert_eq!(p, Ok(Progress::Partial { consumed: total - 4, needed: None }));
    }

    #[test]
    fn partial_reports_needed_size_once_header_known() {
        let mut buf = client_frame(true, 2, &[1; 1000], [1, 1, 1, 1]);
        buf.truncate(100);
        let (p, _) = collect(&mut MessageReader::new(), &mut buf);
        assert_eq!(p, Ok(Progress::Partial { consumed: 0, needed: Some(1000 + 8) }));
    }

    #[test]
    fn assembles_fragments_with_interleaved_control() {
        let mut buf = client_frame(false, 1, b"hel", [1, 2, 3, 4]);
        buf.extend(client_frame(true, 9, b"p", [1, 2, 3, 4]));
        buf.extend(client_frame(false, 0, b"lo ", [1, 2, 3, 4]));
        buf.extend(client_frame(true, 0, b"world", [4, 3, 2, 1]));
        let mut r = MessageReader::new();
        let (p, ev) = collect(&mut r, &mut buf);
        assert!(matches!(p, Ok(Progress::Partial { .. })));
        assert_eq!(ev, vec!["ping:1", "text:hello world"]);
        assert!(r.is_idle());
    }

    #[test]
    fn rejects_protocol_violations_with_codes() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            // unmasked
            (vec![0x81, 0x01, b'a'], close::PROTOCOL_ERROR),
            // reserved bit
            (
                {
                    let mut f = client_frame(true, 1, b"a", [0; 4]);
                    f[0] |= 0x40;
                    f
                },
                close::PROTOCOL_ERROR,
            ),
            // unknown opcode
            (client_frame(true, 3, b"a", [0; 4]), close::PROTOCOL_ERROR),
            // fragmented control frame
            (client_frame(false, 9, b"a", [0; 4]), close::PROTOCOL_ERROR),
            // continuation without start
            (client_frame(true, 0, b"a", [0; 4]), close::PROTOCOL_ERROR),
            // invalid UTF-8 text
            (client_frame(true, 1, &[0xff, 0xfe], [0; 4]), close::INVALID_PAYLOAD),
            // close with one byte payload
            (client_frame(true, 8, &[3], [0; 4]), close::PROTOCOL_ERROR),
            // close with reserved code 1005
            (client_frame(true, 8, &1005u16.to_be_bytes(), [0; 4]), close::PROTOCOL_ERROR),
        ];
        for (mut buf, code) in cases {
            let (p, _) = collect(&mut MessageReader::new(), &mut buf);
            assert_eq!(p.unwrap_err().code, code, "frame {buf:?}");
        }
    }

    #[test]
    fn invalid_utf8_fails_at_its_fragment() {
        // The message is never finished: the error comes from the fragment that breaks it.
        let mut buf = client_frame(false, 1, b"hel", [1, 2, 3, 4]);
        buf.extend(client_frame(false, 0, &[b'l', 0xff], [1, 2, 3, 4]));
        let (p, ev) = collect(&mut MessageReader::new(), &mut buf);
        assert_eq!(p.unwrap_err(), NOT_UTF8);
        assert!(ev.is_empty());
        let mut buf = client_frame(false, 1, &[0xc0, 0x80], [0; 4]);
        assert_eq!(collect(&mut MessageReader::new(), &mut buf).0.unwrap_err(), NOT_UTF8);
        // A character split across fragments is fine; a dangling one at the end is not.
        let check = "a✓b".as_bytes();
        let mut buf = client_frame(false, 1, &check[..2], [5; 4]);
        buf.extend(client_frame(false, 0, &check[2..3], [6; 4]));
        buf.extend(client_frame(true, 0, &check[3..], [7; 4]));
        assert_eq!(collect(&mut MessageReader::new(), &mut buf).1, vec!["text:a✓b"]);
        let mut buf = client_frame(false, 1, b"a", [5; 4]);
        buf.extend(client_frame(true, 0, &check[1..3], [6; 4]));
        assert_eq!(collect(&mut MessageReader::new(), &mut buf).0.unwrap_err(), NOT_UTF8);
    }

    #[test]
    fn oversized_frame_and_message_give_1009() {
        let mut r = MessageReader::new();
        let mut buf = client_frame(true, 2, &[0; 200], [0; 4]);
        assert_eq!(r.parse(&mut buf, 100, |_| true).unwrap_err().code, close::TOO_BIG);
        let mut buf = client_frame(false, 2, &[0; 60], [0; 4]);
        buf.extend(client_frame(true, 0, &[0; 60], [0; 4]));
        assert_eq!(MessageReader::new().parse(&mut buf, 100, |_| true).unwrap_err().code, close::TOO_BIG);
    }

    #[test]
    fn close_frame_stops_parsing() {
        let mut buf = client_frame(true, 8, &[0x03, 0xE8, b'b', b'y', b'e'], [7; 4]);
        buf.extend(client_frame(true, 1, b"after", [7; 4]));
        let (p, ev) = collect(&mut MessageReader::new(), &mut buf);
        assert_eq!(ev, vec!["close:Some(1000):bye"]);
        assert!(matches!(p, Ok(Progress::Closed { .. })));
    }

    #[test]
    fn server_frames_have_right_headers() {
        assert_eq!(&frame(Opcode::Text, b"{}")[..], &[0x81, 2, b'{', b'}']);
        let f = frame(Opcode::Binary, &[0; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        let f = frame(Opcode::Binary, &vec![0; 70000]);
        assert_eq!(&f[..2], &[0x82, 127]);
        assert_eq!(f.len(), 70010);
        let mut buf = vec![0u8; RESERVE];
        buf.extend_from_slice(b"hello");
        assert_eq!(&frame_reserved(Opcode::Text, buf)[..], &frame(Opcode::Text, b"hello")[..]);
        let c = close_frame(3001, &"x".repeat(300));
        assert_eq!(c.len(), 2 + 125);
        assert_eq!(&c[2..4], &3001u16.to_be_bytes());
    }

    #[test]
    fn checks_upgrade_headers() {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        let raw = b"GET /connection/websocket HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: centrifuge-json, centrifuge-protobuf\r\nOrigin: http://x\r\n\r\n";
        req.parse(raw).unwrap();
        let up = check_upgrade(req.method.unwrap(), req.headers).unwrap();
        assert_eq!(up.protocols, vec!["centrifuge-json", "centrifuge-protobuf"]);
        assert_eq!(up.origin, Some("http://x"));
        let resp = String::from_utf8(switching_protocols(up.key, Some("centrifuge-protobuf"))).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: centrifuge-protobuf\r\n"));

        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
        assert_eq!(check_upgrade("GET", req.headers).unwrap_err().status, 426);
    }
}
