//! Envelopes: every way one encoded reply (a command's reply, a push or a ping) is wrapped for a
//! transport. The hub and the transports never build wire bytes themselves; they name an
//! [`Envelope`] and get complete, shareable items from here.
//!
//! | envelope | one item on the wire |
//! |---|---|
//! | [`Envelope::WsJson`] | a WebSocket text frame (header included) holding the JSON reply |
//! | [`Envelope::WsProtobuf`] | a WebSocket binary frame holding the varint-delimited Protobuf reply |
//! | [`Envelope::Sse`] | a Server-Sent Events event: an optional `id:` line, one `data:` line per line of the JSON reply, a blank line |
//! | [`Envelope::StreamJson`] | the JSON reply and `\n` (newline-delimited JSON) |
//! | [`Envelope::StreamProtobuf`] | the varint-delimited Protobuf reply |
//! | [`Envelope::UniStream`] | the bare push (no reply wrapper) as JSON and `\n` |
//! | [`Envelope::UniSse`] | the bare push as JSON in an SSE event |
//! | [`Envelope::UniWs`] | the bare push as JSON in a WebSocket text frame |
//!
//! The three `Uni*` envelopes serve the unidirectional transports, whose clients read bare
//! `Push` objects ([`uni_push`]): a connect reply becomes a `connect` push, an error reply to
//! the connect a `disconnect` push ([`uni_disconnect`]), an empty reply the ping `{}`.
//!
//! Long-polling answers with a *batch*: the concatenation of Stream items ([`batch`]), i.e. an
//! NDJSON body or a run of delimited Protobuf messages, both of which
//! [`decode_replies`](crate::decode_replies) reads as is. So a long-poll transport queues the very
//! bytes a streaming one does (shared [`Prepared`](crate::Prepared) pushes included) and pays one
//! copy per response.
//!
//! Every item is built in one buffer, without copying the encoded reply: a WebSocket frame gets
//! its header written into room reserved ahead of the payload ([`ws::frame_reserved`]); an SSE
//! event is written prefix first and only rebuilt when the JSON holds a line break.

use bytes::{Buf, Bytes};

use crate::codec::{Encoding, encode_reply};
use crate::codes::{
    DISCONNECT_EXPIRED, DISCONNECT_PERMISSION_DENIED, DISCONNECT_SERVER_ERROR, DISCONNECT_TOO_MANY_REQUESTS,
    DisconnectReason,
};
use crate::protocol::{Connect, Disconnect, Push, Reply};
use crate::ws;

/// How a transport wraps each encoded reply. Transports pick one per connection; the hub only
/// passes it back here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Envelope {
    /// JSON in a WebSocket text frame.
    WsJson,
    /// Protobuf (varint-delimited) in a WebSocket binary frame.
    WsProtobuf,
    /// JSON in a Server-Sent Events event (SSE carries text only: no Protobuf variant).
    Sse,
    /// Newline-delimited JSON (HTTP streaming; long-poll batches).
    StreamJson,
    /// Varint-delimited Protobuf (HTTP streaming; long-poll batches).
    StreamProtobuf,
    /// Unidirectional HTTP streaming: bare pushes as newline-delimited JSON.
    UniStream,
    /// Unidirectional SSE: bare pushes as SSE events.
    UniSse,
    /// Unidirectional WebSocket: bare pushes in text frames.
    UniWs,
}

/// The `data:` field prefix; the space is optional in SSE and stripped by every parser.
const SSE_DATA: &[u8] = b"data: ";
const SSE_ID: &[u8] = b"id: ";

impl Envelope {
    /// Number of envelopes (the size of per-envelope caches): keep `UniWs` last.
    pub(crate) const COUNT: usize = Envelope::UniWs as usize + 1;

    /// The WebSocket envelope for a negotiated encoding.
    pub fn websocket(encoding: Encoding) -> Envelope {
        match encoding {
            Encoding::Json => Envelope::WsJson,
            Encoding::Protobuf => Envelope::WsProtobuf,
        }
    }

    /// The encoding of the reply inside the envelope.
    pub fn encoding(self) -> Encoding {
        match self {
            Envelope::WsJson
            | Envelope::Sse
            | Envelope::StreamJson
            | Envelope::UniStream
            | Envelope::UniSse
            | Envelope::UniWs => Encoding::Json,
            Envelope::WsProtobuf | Envelope::StreamProtobuf => Encoding::Protobuf,
        }
    }

    /// Whether clients of this envelope read bare pushes (the unidirectional transports).
    pub fn is_unidirectional(self) -> bool {
        matches!(self, Envelope::UniStream | Envelope::UniSse | Envelope::UniWs)
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Encodes one reply as a complete item of `envelope`. `None` when the reply cannot be encoded
/// in that envelope's encoding (a binary payload for JSON; the caller disconnects with 3506).
pub fn encode(envelope: Envelope, reply: &Reply) -> Option<Bytes> {
    match envelope {
        Envelope::WsJson => ws_frame(ws::Opcode::Text, Encoding::Json, reply),
        Envelope::WsProtobuf => ws_frame(ws::Opcode::Binary, Encoding::Protobuf, reply),
        Envelope::Sse => encode_sse(reply, None),
        Envelope::StreamJson => {
            let mut buf = Vec::new();
            encode_reply(Encoding::Json, reply, &mut buf).ok()?;
            buf.push(b'\n');
            Some(buf.into())
        }
        Envelope::StreamProtobuf => {
            let mut buf = Vec::new();
            encode_reply(Encoding::Protobuf, reply, &mut buf).ok()?;
            Some(buf.into())
        }
        Envelope::UniStream => {
            let mut buf = uni_json(reply, Vec::new())?;
            buf.push(b'\n');
            Some(buf.into())
        }
        Envelope::UniSse => sse_event(None, |buf| uni_json(reply, buf)),
        Envelope::UniWs => Some(ws::frame_reserved(ws::Opcode::Text, uni_json(reply, vec![0u8; ws::RESERVE])?)),
    }
}

/// The bare push a unidirectional client reads for `reply`: its push; for a connect reply, the
/// `connect` push (same fields; `pong` is always false: these clients never answer pings); for
/// an error reply (only a connect is answered on these transports), the `disconnect` push of
/// [`uni_disconnect`]; otherwise the empty push `{}` (the ping).
pub fn uni_push(reply: &Reply) -> Push {
    if let Some(push) = &reply.push {
        return push.clone();
    }
    if let Some(c) = &reply.connect {
        return Push {
            connect: Some(Connect {
                client: c.client.clone(),
                version: c.version.clone(),
                data: c.data.clone(),
                subs: c.subs.clone(),
                expires: c.expires,
                ttl: c.ttl,
                ping: c.ping,
                pong: false,
                session: c.session.clone(),
                node: c.node.clone(),
                time: c.time,
            }),
            ..Default::default()
        };
    }
    if let Some(e) = &reply.error {
        let d = uni_disconnect(e.code);
        return Push {
            disconnect: Some(Disconnect { code: d.code, reason: d.reason.into_owned(), reconnect: false }),
            ..Default::default()
        };
    }
    Push::default()
}

/// The disconnect a unidirectional client gets instead of a connect error reply (Centrifugo's
/// mapping): 109 and 110 → 3005, 111 → 3013, 103 → 3507, anything else → 3004.
pub fn uni_disconnect(error_code: u32) -> DisconnectReason {
    match error_code {
        109 | 110 => DISCONNECT_EXPIRED,
        111 => DISCONNECT_TOO_MANY_REQUESTS,
        103 => DISCONNECT_PERMISSION_DENIED,
        _ => DISCONNECT_SERVER_ERROR,
    }
}

/// Appends the JSON of [`uni_push`] (without copying when `reply` is a push) to `buf`.
fn uni_json(reply: &Reply, mut buf: Vec<u8>) -> Option<Vec<u8>> {
    let ok = match &reply.push {
        Some(push) => serde_json::to_writer(&mut buf, push).is_ok(),
        None => serde_json::to_writer(&mut buf, &uni_push(reply)).is_ok(),
    };
    if !ok {
        return None;
    }
    Some(buf)
}

fn ws_frame(opcode: ws::Opcode, encoding: Encoding, reply: &Reply) -> Option<Bytes> {
    let mut buf = vec![0u8; ws::RESERVE];
    encode_reply(encoding, reply, &mut buf).ok()?;
    Some(ws::frame_reserved(opcode, buf))
}

/// Encodes one reply as an SSE event, with an `id:` line when `id` is given (a transport that
/// exposes a stream position for `Last-Event-ID`; positions are per channel, so which one is the
/// transport's choice). `None` when the reply is not JSON-encodable or `id` holds CR, LF or NUL,
/// which SSE cannot carry in an id.
///
/// Line breaks (CRLF, CR or LF, as the SSE spec splits lines) can occur in the JSON only as
/// whitespace inside a raw payload; each line then gets its own `data:` field, so the event
/// cannot be cut short and a client reassembles the same JSON (with `\n` for each break).
pub fn encode_sse(reply: &Reply, id: Option<&str>) -> Option<Bytes> {
    sse_event(id, |mut buf| {
        encode_reply(Encoding::Json, reply, &mut buf).ok()?;
        Some(buf)
    })
}

/// An SSE event whose data `write` appends (JSON) to the buffer it is given.
pub(crate) fn sse_event(id: Option<&str>, write: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) -> Option<Bytes> {
    let mut buf = Vec::new();
    if let Some(id) = id {
        if id.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return None;
        }
        buf.extend_from_slice(SSE_ID);
        buf.extend_from_slice(id.as_bytes());
        buf.push(b'\n');
    }
    buf.extend_from_slice(SSE_DATA);
    let start = buf.len();
    let mut buf = write(buf)?;
    if buf[start..].iter().any(|b| matches!(b, b'\r' | b'\n')) {
        buf = split_sse_lines(&buf, start);
    }
    buf.extend_from_slice(b"\n\n");
    Some(buf.into())
}

/// Rebuilds `buf`, whose data starts at `start` right after a `data:` prefix, so that every
/// line of the data gets its own `data:` field.
fn split_sse_lines(buf: &[u8], start: usize) -> Vec<u8> {
    let (head, mut rest) = buf.split_at(start);
    let mut out = Vec::with_capacity(buf.len() + 4 * SSE_DATA.len());
    out.extend_from_slice(head);
    while let Some(i) = rest.iter().position(|b| matches!(b, b'\r' | b'\n')) {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\n');
        out.extend_from_slice(SSE_DATA);
        let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
        rest = &rest[i + 1 + usize::from(crlf)..];
    }
    out.extend_from_slice(rest);
    out
}

/// The server ping of `envelope`: an empty reply (`{}` in JSON, the single byte 0x00 as a
/// delimited Protobuf message) in that envelope. Static, so a ping costs no allocation.
pub fn ping(envelope: Envelope) -> Bytes {
    Bytes::from_static(match envelope {
        Envelope::WsJson => &[0x81, 0x02, b'{', b'}'],
        Envelope::WsProtobuf => &[0x82, 0x01, 0x00],
        Envelope::Sse | Envelope::UniSse => b"data: {}\n\n",
        Envelope::StreamJson | Envelope::UniStream => b"{}\n",
        Envelope::StreamProtobuf => &[0x00],
        Envelope::UniWs => &[0x81, 0x02, b'{', b'}'],
    })
}

/// A long-poll response body: `items` (of [`Envelope::StreamJson`] or
/// [`Envelope::StreamProtobuf`], all of one) concatenated. One item is returned as is, without a
/// copy; more are copied once into a buffer of the exact size.
pub fn batch<'a, I>(items: I) -> Bytes
where
    I: IntoIterator<Item = &'a Bytes>,
    I::IntoIter: Clone,
{
    let items = items.into_iter();
    let mut probe = items.clone();
    match (probe.next(), probe.next()) {
        (None, _) => Bytes::new(),
        (Some(one), None) => one.clone(),
        _ => {
            let mut out = Vec::with_capacity(items.clone().map(Bytes::len).sum());
            for item in items {
                out.extend_from_slice(item);
            }
            out.into()
        }
    }
}

/// The inverse of [`encode`], for clients, tests and fuzzing: the reply inside one item, or
/// `None` when `item` is not exactly one item of `envelope` as [`encode`] writes it.
///
/// For the WebSocket and Stream envelopes the result is what
/// [`decode_replies`](crate::decode_replies) reads. For [`Envelope::Sse`] it is the event's data
/// as an `EventSource` delivers it: the `data:` lines joined by `\n` (the `id:` line skipped),
/// one JSON reply.
pub fn open(envelope: Envelope, item: &Bytes) -> Option<Bytes> {
    match envelope {
        Envelope::WsJson | Envelope::UniWs => open_ws(ws::Opcode::Text, item),
        Envelope::WsProtobuf => open_ws(ws::Opcode::Binary, item),
        Envelope::Sse | Envelope::UniSse => open_sse(item),
        Envelope::StreamJson | Envelope::UniStream => {
            let body = item.strip_suffix(b"\n")?;
            (!body.contains(&b'\n')).then(|| item.slice(..body.len()))
        }
        Envelope::StreamProtobuf => {
            let mut rest = &item[..];
            let len = prost::encoding::decode_length_delimiter(&mut rest).ok()?;
            (len == rest.remaining()).then(|| item.clone())
        }
    }
}

fn open_ws(opcode: ws::Opcode, frame: &Bytes) -> Option<Bytes> {
    let (header_len, len) = match *frame.get(1)? {
        126 => (4, u16::from_be_bytes(frame.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, usize::try_from(u64::from_be_bytes(frame.get(2..10)?.try_into().ok()?)).ok()?),
        n => (2, n as usize),
    };
    // The exact header `encode` writes: final, unmasked, shortest length form.
    let mut head = Vec::with_capacity(header_len);
    ws::put_header(&mut head, opcode, len);
    (frame.get(..header_len)? == head.as_slice() && frame.len() == header_len + len).then(|| frame.slice(header_len..))
}

fn open_sse(event: &Bytes) -> Option<Bytes> {
    let body = event.strip_suffix(b"\n\n")?;
    if body.contains(&b'\r') {
        return None;
    }
    // Per the SSE spec: each data line's value plus `\n`, without the last `\n`.
    let mut data = Vec::with_capacity(body.len());
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if let Some(value) = line.strip_prefix(SSE_DATA) {
            data.extend_from_slice(value);
            data.push(b'\n');
        } else if !(i == 0 && line.starts_with(SSE_ID)) {
            return None;
        }
    }
    data.pop()?;
    Some(data.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode_replies;
    use crate::protocol::{Publication, Push};

    const ALL: [Envelope; Envelope::COUNT] = [
        Envelope::WsJson,
        Envelope::WsProtobuf,
        Envelope::Sse,
        Envelope::StreamJson,
        Envelope::StreamProtobuf,
        Envelope::UniStream,
        Envelope::UniSse,
        Envelope::UniWs,
    ];

    fn push(data: &'static [u8]) -> Reply {
        Reply::push(Push {
            channel: "news".into(),
            publication: Some(Publication { data: Bytes::from_static(data), offset: 7, ..Default::default() }),
            ..Default::default()
        })
    }

    const PUSH_JSON: &[u8] = br#"{"push":{"channel":"news","pub":{"data":{"a":1},"offset":7}}}"#;

    fn protobuf(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        encode_reply(Encoding::Protobuf, reply, &mut out).unwrap();
        out
    }

    #[test]
    fn index_covers_every_envelope() {
        for (i, e) in ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        assert_eq!(Envelope::websocket(Encoding::Json), Envelope::WsJson);
        assert_eq!(Envelope::websocket(Encoding::Protobuf), Envelope::WsProtobuf);
    }

    #[test]
    fn websocket_frames_exact_bytes() {
        let reply = push(br#"{"a":1}"#);
        let text = encode(Envelope::WsJson, &reply).unwrap();
        assert_eq!(text[0], 0x81);
        assert_eq!(text[1] as usize, PUSH_JSON.len());
        assert_eq!(&text[2..], PUSH_JSON);
        assert_eq!(text, ws::frame(ws::Opcode::Text, PUSH_JSON));

        let pb = protobuf(&reply);
        let binary = encode(Envelope::WsProtobuf, &reply).unwrap();
        assert_eq!(&binary[..2], &[0x82, pb.len() as u8]);
        assert_eq!(&binary[2..], &pb[..]);

        // A payload past 125 bytes takes the 16-bit length form.
        let big: &'static [u8] = Box::leak(format!("\"{}\"", "x".repeat(300)).into_bytes().into_boxed_slice());
        let frame = encode(Envelope::WsJson, &push(big)).unwrap();
        assert_eq!(&frame[..2], &[0x81, 126]);
        assert_eq!(u16::from_be_bytes([frame[2], frame[3]]) as usize, frame.len() - 4);
    }

    #[test]
    fn stream_items_exact_bytes() {
        let reply = push(br#"{"a":1}"#);
        assert_eq!(encode(Envelope::StreamJson, &reply).unwrap(), [PUSH_JSON, b"\n"].concat());
        assert_eq!(encode(Envelope::StreamProtobuf, &reply).unwrap(), protobuf(&reply));
    }

    #[test]
    fn sse_event_exact_bytes() {
        let reply = push(br#"{"a":1}"#);
        assert_eq!(encode(Envelope::Sse, &reply).unwrap(), [b"data: ", PUSH_JSON, b"\n\n"].concat());
        assert_eq!(encode_sse(&reply, Some("7:e1")).unwrap(), [b"id: 7:e1\ndata: ", PUSH_JSON, b"\n\n"].concat());
        for bad in ["a\nb", "a\rb", "a\0b"] {
            assert_eq!(encode_sse(&reply, Some(bad)), None, "id {bad:?}");
        }
    }

    #[test]
    fn sse_gives_every_line_of_the_data_its_own_field() {
        // Raw payload whitespace: CRLF, lone CR (LF is stripped from payloads by the codec).
        let reply = push(b"{\"a\":\r\n1,\r\"b\":\r\r2}");
        let event = encode_sse(&reply, Some("9")).unwrap();
        assert_eq!(
            &event[..],
            &b"id: 9\ndata: {\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"a\":\ndata: 1,\ndata: \"b\":\ndata: \ndata: 2},\"offset\":7}}}\n\n"[..]
        );
        assert_eq!(event.windows(2).filter(|w| w == b"\n\n").count(), 1, "one event");
        let data = open(Envelope::Sse, &event).unwrap();
        assert_eq!(
            &data[..],
            &b"{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"a\":\n1,\n\"b\":\n\n2},\"offset\":7}}}"[..]
        );
        let back: Reply = serde_json::from_slice(&data).unwrap();
        assert_eq!(back.push.unwrap().publication.unwrap().offset, 7);
    }

    #[test]
    fn binary_payload_has_no_json_item() {
        let reply = push(&[0xff, 0x00]);
        for e in ALL {
            assert_eq!(encode(e, &reply).is_some(), e.encoding() == Encoding::Protobuf, "{e:?}");
        }
    }

    #[test]
    fn pings_are_the_empty_reply_in_each_envelope() {
        for e in ALL {
            assert_eq!(ping(e), encode(e, &Reply::default()).unwrap(), "{e:?}");
        }
        // The bytes clients see, spelled out.
        assert_eq!(&ping(Envelope::WsJson)[..], &[0x81, 0x02, b'{', b'}']);
        assert_eq!(&ping(Envelope::WsProtobuf)[..], &[0x82, 0x01, 0x00]);
        assert_eq!(&ping(Envelope::Sse)[..], b"data: {}\n\n");
        assert_eq!(&ping(Envelope::StreamJson)[..], b"{}\n");
        assert_eq!(&ping(Envelope::StreamProtobuf)[..], &[0x00]);
    }

    #[test]
    fn open_inverts_encode() {
        let reply = push(br#"{"a":1}"#);
        for e in ALL.into_iter().filter(|e| !e.is_unidirectional()) {
            let item = encode(e, &reply).unwrap();
            let inner = open(e, &item).unwrap();
            assert_eq!(decode_replies(e.encoding(), inner).unwrap(), std::slice::from_ref(&reply), "{e:?}");
            // Cut short or doubled, an item is not one item.
            assert_eq!(open(e, &item.slice(..item.len() - 1)), None, "{e:?} truncated");
            assert_eq!(open(e, &Bytes::from([&item[..], &item[..]].concat())), None, "{e:?} doubled");
        }
        assert_eq!(open(Envelope::WsProtobuf, &ping(Envelope::WsJson)), None, "wrong opcode");
        assert_eq!(open(Envelope::Sse, &Bytes::from_static(b"event: x\ndata: {}\n\n")), None);
    }

    #[test]
    fn long_poll_batch_concatenates_stream_items() {
        let replies = [push(br#"{"a":1}"#), Reply::default(), push(b"[1,2]")];
        for e in [Envelope::StreamJson, Envelope::StreamProtobuf] {
            let items: Vec<Bytes> = replies.iter().map(|r| encode(e, r).unwrap()).collect();
            let body = batch(&items);
            assert_eq!(body.len(), items.iter().map(Bytes::len).sum::<usize>());
            assert_eq!(decode_replies(e.encoding(), body).unwrap(), replies, "{e:?}");
            // One item is the shared bytes themselves; none is an empty body.
            assert_eq!(batch(&items[..1]).as_ptr(), items[0].as_ptr());
            assert!(batch(&items[..0]).is_empty());
        }
    }

    #[test]
    fn unidirectional_envelopes_carry_bare_pushes() {
        const BARE: &[u8] = br#"{"channel":"news","pub":{"data":{"a":1},"offset":7}}"#;
        let reply = push(br#"{"a":1}"#);
        assert_eq!(encode(Envelope::UniStream, &reply).unwrap(), [BARE, b"\n"].concat());
        assert_eq!(encode(Envelope::UniSse, &reply).unwrap(), [b"data: ", BARE, b"\n\n"].concat());
        assert_eq!(encode(Envelope::UniWs, &reply).unwrap(), ws::frame(ws::Opcode::Text, BARE));
        for e in [Envelope::UniStream, Envelope::UniSse, Envelope::UniWs] {
            assert_eq!(&open(e, &encode(e, &reply).unwrap()).unwrap()[..], BARE, "{e:?}");
        }

        // A connect reply becomes the connect push, without its id and with `pong` false.
        let connect = Reply {
            id: 1,
            connect: Some(crate::protocol::ConnectResult {
                client: "c1".into(),
                ping: 25,
                pong: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            &encode(Envelope::UniStream, &connect).unwrap()[..],
            br#"{"connect":{"client":"c1","ping":25}}
"#
        );
        // A connect error becomes a disconnect push with Centrifugo's mapping.
        for (code, expected) in [(109, 3005), (110, 3005), (111, 3013), (103, 3507), (100, 3004), (101, 3004)] {
            let error = Reply::error(1, crate::protocol::Error { code, message: "x".into(), temporary: false });
            let push = uni_push(&error);
            assert_eq!(push.disconnect.unwrap().code, expected, "error {code}");
        }
        let error = Reply::error(1, crate::protocol::Error { code: 109, message: "x".into(), temporary: false });
        assert_eq!(
            &encode(Envelope::UniStream, &error).unwrap()[..],
            br#"{"disconnect":{"code":3005,"reason":"connection expired"}}
"#
        );
    }
}
