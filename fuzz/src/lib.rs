//! Fuzz harness bodies for `herald-proto`, shared by the cargo-fuzz targets in `fuzz_targets/`
//! and by the stable smoke test `crates/herald-proto/tests/fuzz_smoke.rs` (which includes this
//! file with `#[path]`). Every function takes arbitrary bytes, must never panic on its own, and
//! asserts the invariants the transport relies on.

use bytes::Bytes;
use herald_proto::envelope::{self, Envelope};
use herald_proto::ws::{self, Event, MessageReader, Progress};
use herald_proto::{
    Command, Encoding, Publication, Push, Reply, decode_commands, decode_replies, encode_reply, try_encode_command,
};

/// Small message limit so that the "too big" paths are reached often.
pub const MAX_MESSAGE: usize = 512;
/// Commands accepted per frame in the decode targets.
pub const MAX_COMMANDS: usize = 16;

/// An owned copy of a [`ws::Event`], to compare runs.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Option<u16>, String),
}

/// How a run of the frame reader ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Out of input; this many bytes of an unfinished frame are left.
    Partial(usize),
    Closed,
    Error(u16),
}

/// Parses what `buf` holds, as a transport would: repeatedly, dropping consumed bytes. Returns
/// `None` when more input is needed.
fn drive(reader: &mut MessageReader, buf: &mut Vec<u8>, seen: &mut Vec<Seen>) -> Option<End> {
    let mut calls = 0u32;
    loop {
        let len = buf.len();
        let mut stop_after = calls % 3; // sometimes stop early, to exercise resumption
        calls += 1;
        let result = reader.parse(buf, MAX_MESSAGE, |event| {
            seen.push(match event {
                Event::Text(t) => {
                    assert!(std::str::from_utf8(t).is_ok(), "text event is not UTF-8");
                    assert!(t.len() <= MAX_MESSAGE);
                    Seen::Text(t.to_vec())
                }
                Event::Binary(b) => {
                    assert!(b.len() <= MAX_MESSAGE);
                    Seen::Binary(b.to_vec())
                }
                Event::Ping(p) => {
                    assert!(p.len() <= 125, "control frame payload over 125 bytes");
                    Seen::Ping(p.to_vec())
                }
                Event::Pong => Seen::Pong,
                Event::Close(code, reason) => {
                    assert!(reason.len() <= 123);
                    Seen::Close(code, reason.to_owned())
                }
            });
            if stop_after == 0 {
                return false;
            }
            stop_after -= 1;
            true
        });
        match result {
            Ok(Progress::Partial { consumed, needed }) => {
                assert!(consumed <= len);
                if let Some(needed) = needed {
                    assert!(needed > len - consumed, "needed must exceed what is buffered");
                    assert!(needed <= MAX_MESSAGE + 14, "needed bounded by max_message + header");
                }
                buf.drain(..consumed);
                if consumed == 0 {
                    return None;
                }
            }
            Ok(Progress::Closed { consumed }) => {
                assert!(consumed <= len);
                return Some(End::Closed);
            }
            Err(e) => {
                assert!(
                    matches!(e.code, ws::close::PROTOCOL_ERROR | ws::close::INVALID_PAYLOAD | ws::close::TOO_BIG),
                    "unexpected close code {}",
                    e.code
                );
                return Some(End::Error(e.code));
            }
        }
    }
}

fn run_frames(chunks: &[&[u8]]) -> (Vec<Seen>, End) {
    let mut reader = MessageReader::new();
    let mut buf = Vec::new();
    let mut seen = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if let Some(end) = drive(&mut reader, &mut buf, &mut seen) {
            return (seen, end);
        }
    }
    (seen, End::Partial(buf.len()))
}

/// `MessageReader::parse` over arbitrary bytes. The first byte picks where the input is split
/// into two reads; the result must not depend on the split.
pub fn ws_frames(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else { return };
    let split = (split as usize * data.len()) / 255;
    let (a, b) = data.split_at(split.min(data.len()));
    let whole = run_frames(&[data]);
    let chunked = run_frames(&[a, b]);
    assert_eq!(whole, chunked, "split at {split} changed the result");
    // Byte by byte (bounded, it is quadratic in the worst case).
    if data.len() <= 256 {
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(whole, run_frames(&bytes), "byte-by-byte feeding changed the result");
    }
}

fn check_commands(encoding: Encoding, cmds: &[Command]) {
    assert!(cmds.len() <= MAX_COMMANDS);
    for cmd in cmds {
        let _ = cmd.method().map(|m| m.name());
        let _ = cmd.is_pong();
        // Protobuf carries anything: encode → decode is the identity.
        let mut pb = Vec::new();
        try_encode_command(Encoding::Protobuf, cmd, &mut pb).expect("protobuf always encodes");
        let back = decode_commands(Encoding::Protobuf, Bytes::from(pb), 1).expect("re-encoded protobuf decodes");
        assert_eq!(back.as_slice(), std::slice::from_ref(cmd), "protobuf round trip");
        // JSON: always encodes when the command came from JSON, and then round-trips exactly.
        let mut js = b"x".to_vec();
        match try_encode_command(Encoding::Json, cmd, &mut js) {
            Ok(()) => {
                assert!(!js[1..].contains(&b'\n'), "encoded JSON command holds a newline");
                let back = decode_commands(Encoding::Json, Bytes::copy_from_slice(&js[1..]), 1);
                check_json_back(encoding, back, cmd);
            }
            Err(_) => {
                assert_eq!(js, b"x", "failed encode wrote bytes");
                assert_eq!(encoding, Encoding::Protobuf, "a JSON-decoded command must re-encode as JSON");
            }
        }
    }
}

/// A message decoded from `encoding`, encoded as JSON and decoded again: from JSON it must come
/// back identical; from Protobuf it must decode too, unless the JSON nests deeper than the
/// decoder's recursion limit (Protobuf allows 100 nested messages, each of which can take two
/// JSON levels, e.g. `tf.nodes[…]`, and raw payloads add their own depth).
fn check_json_back<T: PartialEq + std::fmt::Debug>(
    encoding: Encoding,
    back: Result<Vec<T>, herald_proto::DecodeError>,
    original: &T,
) {
    match back {
        Ok(back) => {
            assert_eq!(back.len(), 1);
            if encoding == Encoding::Json {
                assert_eq!(&back[0], original, "JSON round trip");
            }
        }
        Err(herald_proto::DecodeError::Json(e)) if encoding == Encoding::Protobuf && e.contains("recursion limit") => {}
        Err(e) => panic!("re-encoded JSON does not decode: {e}"),
    }
}

fn check_replies(encoding: Encoding, replies: &[Reply]) {
    for reply in replies {
        let mut pb = Vec::new();
        encode_reply(Encoding::Protobuf, reply, &mut pb).expect("protobuf always encodes");
        let back = decode_replies(Encoding::Protobuf, Bytes::from(pb)).expect("re-encoded protobuf decodes");
        assert_eq!(back.as_slice(), std::slice::from_ref(reply));
        let mut js = b"x".to_vec();
        match encode_reply(Encoding::Json, reply, &mut js) {
            Ok(()) => {
                assert!(!js[1..].contains(&b'\n'), "encoded JSON reply holds a newline");
                let back = decode_replies(Encoding::Json, Bytes::copy_from_slice(&js[1..]));
                check_json_back(encoding, back, reply);
            }
            Err(_) => {
                assert_eq!(js, b"x", "failed encode wrote bytes");
                assert_eq!(encoding, Encoding::Protobuf, "a JSON-decoded reply must re-encode as JSON");
            }
        }
    }
}

/// `decode_commands(Json)` (and `decode_replies(Json)`) over arbitrary bytes, re-encoding what
/// decodes.
pub fn decode_json(data: &[u8]) {
    if let Ok(cmds) = decode_commands(Encoding::Json, Bytes::copy_from_slice(data), MAX_COMMANDS) {
        check_commands(Encoding::Json, &cmds);
    }
    if let Ok(replies) = decode_replies(Encoding::Json, Bytes::copy_from_slice(data)) {
        check_replies(Encoding::Json, &replies);
    }
}

/// `decode_commands(Protobuf)` (and `decode_replies(Protobuf)`) over arbitrary bytes,
/// re-encoding what decodes in both encodings.
pub fn decode_protobuf(data: &[u8]) {
    if let Ok(cmds) = decode_commands(Encoding::Protobuf, Bytes::copy_from_slice(data), MAX_COMMANDS) {
        check_commands(Encoding::Protobuf, &cmds);
    }
    if let Ok(replies) = decode_replies(Encoding::Protobuf, Bytes::copy_from_slice(data)) {
        check_replies(Encoding::Protobuf, &replies);
    }
}

/// An HTTP request through `httparse` and `ws::check_upgrade`, plus `check_upgrade` over header
/// lists built directly from the bytes (names and values httparse would refuse).
pub fn ws_upgrade(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if let Ok(httparse::Status::Complete(_)) = req.parse(data) {
        let method = req.method.unwrap_or_default();
        check_upgrade_result(method, req.headers);
    }

    // Direct: lines of `name:value`.
    let mut list = Vec::new();
    for line in data.split(|b| *b == b'\n').take(32) {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else { continue };
        list.push(httparse::Header { name, value: &line[colon + 1..] });
    }
    check_upgrade_result("GET", &list);
}

fn check_upgrade_result(method: &str, headers: &[httparse::Header<'_>]) {
    match ws::check_upgrade(method, headers) {
        Ok(up) => {
            assert_eq!(method, "GET");
            assert!(up.protocols.iter().all(|p| !p.is_empty() && p.trim() == *p));
            let protocol = up.protocols.iter().copied().find(|p| !p.contains(['\r', '\n']));
            let resp = ws::switching_protocols(up.key, protocol);
            assert!(resp.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert_eq!(resp.windows(4).filter(|w| *w == b"\r\n\r\n").count(), 1, "one header terminator");
            assert!(resp.ends_with(b"\r\n\r\n"));
            let _ = ws::accept_key(up.key);
        }
        Err(e) => assert!(matches!(e.status, 400 | 405 | 426), "status {}", e.status),
    }
}

const ENVELOPES: [Envelope; 5] =
    [Envelope::WsJson, Envelope::WsProtobuf, Envelope::Sse, Envelope::StreamJson, Envelope::StreamProtobuf];

/// Every envelope around a push whose payload is the input (after a short SSE id picked by the
/// first byte): an item exists exactly when the encoding can carry the payload, opens back to
/// the encoded reply, and an SSE event is exactly one event whose every line is a field, however
/// the payload's line breaks fall.
pub fn envelopes(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let (id, payload) = rest.split_at((pick as usize % 8).min(rest.len()));
    let id = String::from_utf8_lossy(id);
    let reply = Reply::push(Push {
        channel: "c".into(),
        publication: Some(Publication { data: Bytes::copy_from_slice(payload), offset: 3, ..Default::default() }),
        ..Default::default()
    });
    let mut json = Vec::new();
    let json = encode_reply(Encoding::Json, &reply, &mut json).ok().map(|()| json);
    for e in ENVELOPES {
        let item = envelope::encode(e, &reply);
        let mut inner = Vec::new();
        if encode_reply(e.encoding(), &reply, &mut inner).is_err() {
            assert!(item.is_none(), "{e:?} item for a payload its encoding cannot carry");
            continue;
        }
        let item = item.unwrap_or_else(|| panic!("{e:?} refused an encodable reply"));
        let opened = envelope::open(e, &item).unwrap_or_else(|| panic!("{e:?} item does not open"));
        if e == Envelope::Sse {
            check_sse(&item, None);
            let json = json.as_deref().expect("SSE item implies JSON");
            assert_eq!(opened, sse_lines(json), "SSE data is the JSON with its line breaks as LF");
            assert!(herald_proto::raw::is_json(&opened), "SSE data is not one JSON value");
        } else {
            assert_eq!(opened, inner, "{e:?} item does not hold the encoded reply");
            assert_eq!(decode_replies(e.encoding(), opened).expect("item decodes").len(), 1);
        }
    }
    match envelope::encode_sse(&reply, Some(&id)) {
        Some(event) => {
            assert!(json.is_some());
            check_sse(&event, Some(&id));
        }
        None => assert!(json.is_none() || id.contains(['\r', '\n', '\0']), "SSE refused id {id:?}"),
    }
    // The unidirectional envelopes carry the bare push: present exactly when JSON can carry
    // it, opening to the push's own JSON (with its line breaks as LF in SSE).
    let bare = serde_json::to_vec(reply.push.as_ref().expect("a push")).ok();
    for e in [Envelope::UniStream, Envelope::UniSse, Envelope::UniWs] {
        let item = envelope::encode(e, &reply);
        assert_eq!(item.is_some(), json.is_some(), "{e:?} item exists exactly when JSON does");
        if let Some(item) = item {
            let opened = envelope::open(e, &item).unwrap_or_else(|| panic!("{e:?} item does not open"));
            let bare = bare.as_deref().expect("the push is JSON");
            if e == Envelope::UniSse {
                check_sse(&item, None);
                assert_eq!(opened, sse_lines(bare), "uni SSE data is the push with its line breaks as LF");
            } else {
                assert_eq!(&opened[..], bare, "{e:?} item does not hold the bare push");
            }
            serde_json::from_slice::<Push>(&opened).expect("a bare push reads back");
        }
    }
    // A long-poll batch of this push and a ping holds both.
    for e in [Envelope::StreamJson, Envelope::StreamProtobuf] {
        if let Some(item) = envelope::encode(e, &reply) {
            let body = envelope::batch(&[item, envelope::ping(e)]);
            assert_eq!(decode_replies(e.encoding(), body).expect("batch decodes").len(), 2, "{e:?} batch");
        }
    }
}

/// One event: ends with the only blank line, no CR, every line a `data:` field (after an `id:`
/// line when an id was given).
fn check_sse(event: &[u8], id: Option<&str>) {
    let body = event.strip_suffix(b"\n\n").expect("event ends with a blank line");
    assert!(!body.contains(&b'\r'), "CR inside an event");
    let mut lines = body.split(|b| *b == b'\n');
    if let Some(id) = id {
        assert_eq!(lines.next(), Some(format!("id: {id}").as_bytes()));
    }
    for line in lines {
        assert!(line.starts_with(b"data: "), "line {:?} is not a data field", String::from_utf8_lossy(line));
    }
}

/// `json` with each CRLF, CR or LF turned into one LF: what an SSE client reassembles.
fn sse_lines(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len());
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'\r' => {
                out.push(b'\n');
                if json.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}
