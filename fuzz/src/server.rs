//! Fuzz harnesses for the parsers in `herald-server`: server API request bodies, the
//! configuration loader, the first request head of a connection, a PROXY protocol header, the
//! opening requests of the streaming transports, and the TLS 1.3 record layer. Shared by the
//! cargo-fuzz targets `fuzz_targets/{api_bodies,config,http_head,proxy_header,stream_request,
//! long_poll_request,tls_records}.rs` and the stable smoke test
//! `crates/herald-server/tests/fuzz_smoke.rs` (which includes this file with `#[path]`).
//!
//! Each harness runs the production code through small pure entry points
//! (`api::methods::parse_request`, `loader::load_text`, `entry::HeadBuffer` and
//! `entry::first_route`), which touch no socket, file or process environment.

use std::path::Path;

use herald_server::api::methods::{METHODS, parse_batch_commands, parse_request};
use herald_server::config::Config;
use herald_server::config_error::{ConfigError, FileFormat};
use herald_server::entry::{HeadBuffer, HeadScan, first_route};
use herald_server::loader::{self, Overrides};
use herald_server::router::{Route, route};
use serde::de::IgnoredAny;

// ---------------------------------------------------------------------------------------------
// api_bodies

/// Input: `<method>\n<body>`, or just a body. The body is parsed as the named method's params
/// (when the first line names a method), as every method's params, and as a `batch`.
pub fn api_bodies(data: &[u8]) {
    let (name, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (Some(String::from_utf8_lossy(&data[..i])), &data[i + 1..]),
        None => (None, data),
    };
    if let Some(name) = &name {
        check_request(name, body);
    }
    for method in &METHODS {
        check_request(method.name, body);
    }
    check_batch(body);
}

fn check_request(method: &str, body: &[u8]) {
    let outcome = parse_request(method, body);
    assert_eq!(outcome, parse_request(method, body), "parsing is deterministic");
    let known = METHODS.iter().any(|m| m.name == method);
    let Err(message) = outcome else {
        assert!(known, "an unknown method was accepted: {method:?}");
        return;
    };
    if !known {
        assert!(message.starts_with("unknown API method `"), "{message}");
        return;
    }
    let blank = body.iter().all(u8::is_ascii_whitespace);
    assert!(!blank, "{method}: an empty body is an empty request, refused with {message:?}");
    let json = serde_json::from_slice::<IgnoredAny>(body).is_ok();
    match message.strip_prefix("invalid JSON: ") {
        Some(why) => assert!(!json && !why.is_empty(), "{method}: {message:?} for valid JSON"),
        None => {
            assert!(json, "{method}: invalid JSON answered {message:?}");
            says_what_is_wrong(&message, "invalid request: ");
        }
    }
}

/// `message` is `prefix` and then a reason; a field it names is not empty.
fn says_what_is_wrong(message: &str, prefix: &str) {
    let why = message.strip_prefix(prefix).unwrap_or_else(|| panic!("{message:?} does not start with {prefix:?}"));
    assert!(why.trim().len() > 3, "{message:?} does not say what is wrong");
    if let Some(field) = why.strip_prefix("field `") {
        let end = field.find("`: ").unwrap_or_else(|| panic!("{message:?}: the field name is not closed"));
        assert!(end > 0, "{message:?} names an empty field");
    }
}

fn check_batch(body: &[u8]) {
    let outcome = parse_batch_commands(body);
    assert_eq!(outcome, parse_batch_commands(body), "parsing is deterministic");
    // The same decision as a request to /api/batch.
    assert_eq!(outcome.as_ref().err(), parse_request("batch", body).as_ref().err());
    let Ok(commands) = outcome else { return };
    for command in commands {
        match command {
            Ok(name) => assert!(name != "batch" && METHODS.iter().any(|m| m.name == name), "{name}"),
            Err(message) if message.starts_with("not found: ") => says_what_is_wrong(&message, "not found: "),
            Err(message) => says_what_is_wrong(&message, "bad request: "),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// Separates the config file from the environment variables in an input.
pub const ENV_MARK: &[u8] = b"\n%env\n";

/// Input: `json`, `yaml` or `toml` on the first line, then the file's text (otherwise the first
/// byte picks the format and the whole input is the text); after [`ENV_MARK`], one `NAME=value`
/// per line (`HERALD_` is added when missing). Loaded leniently and strictly; an accepted
/// configuration is validated, and loads back from its own JSON to the same configuration.
pub fn config(data: &[u8]) {
    let (file, env) = match data.windows(ENV_MARK.len()).position(|w| w == ENV_MARK) {
        Some(i) => (&data[..i], &data[i + ENV_MARK.len()..]),
        None => (data, &[][..]),
    };
    let header = file.iter().position(|&b| b == b'\n').map(|i| (&file[..i], &file[i + 1..]));
    let (format, text) = match header {
        Some((b"json", text)) => (FileFormat::Json, text),
        Some((b"yaml", text)) => (FileFormat::Yaml, text),
        Some((b"toml", text)) => (FileFormat::Toml, text),
        _ => {
            ([FileFormat::Json, FileFormat::Yaml, FileFormat::Toml][file.first().map_or(0, |&b| b % 3) as usize], file)
        }
    };
    let text = String::from_utf8_lossy(text);
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .take(32)
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            let name = if name.starts_with("HERALD_") { name.to_owned() } else { format!("HERALD_{name}") };
            (name, value.to_owned())
        })
        .collect();

    let path = Path::new(match format {
        FileFormat::Json => "fuzz.json",
        FileFormat::Yaml => "fuzz.yaml",
        FileFormat::Toml => "fuzz.toml",
    });
    let load = |strict: bool| {
        loader::load_text(path, format, &text, env.iter().cloned(), &Overrides { strict, ..Default::default() })
    };
    let lenient = load(false);
    assert_eq!(format!("{lenient:?}"), format!("{:?}", load(false)), "loading is deterministic");
    let strict = load(true);
    match (&lenient, &strict) {
        (Ok(l), Ok(s)) => assert!(l.warnings.is_empty() && s.config == l.config, "strict mode ignored warnings"),
        (Ok(l), Err(ConfigError::Ignored { warnings })) => assert_eq!(&l.warnings, warnings),
        (Ok(_), Err(e)) => panic!("strict mode refused with {e}"),
        // Strict mode refuses ignored settings before deserializing; otherwise the same error.
        (Err(_), Err(ConfigError::Ignored { warnings })) => assert!(!warnings.is_empty()),
        (Err(l), Err(s)) => assert_eq!(l.to_string(), s.to_string(), "strict mode changed the error"),
        (Err(e), Ok(_)) => panic!("only strict mode accepted; lenient said {e}"),
    }
    match lenient {
        Err(e) => names_the_culprit(&e, path, &env),
        Ok(loaded) => {
            for warning in &loaded.warnings {
                assert!(!warning.is_empty());
            }
            if let Err(e) = loader::validate(&loaded.config) {
                names_the_culprit(&e, path, &env);
            }
            reloads(&loaded.config);
        }
    }
}

/// An error names the file, the variable or the key at fault, and says what is wrong.
fn names_the_culprit(e: &ConfigError, path: &Path, env: &[(String, String)]) {
    let shown = e.to_string();
    assert!(!shown.is_empty());
    match e {
        ConfigError::File { .. } => assert!(shown.contains(&*path.to_string_lossy()), "{shown}"),
        ConfigError::Env { variable, .. } => {
            assert!(env.iter().any(|(name, _)| name == variable) && shown.contains(variable.as_str()), "{shown}")
        }
        ConfigError::Ignored { warnings } => assert!(!warnings.is_empty(), "{shown}"),
        _ => {
            let key = e.key().unwrap_or_else(|| panic!("no key named: {shown}"));
            assert!(shown.contains(key), "{shown}");
        }
    }
}

/// A loaded configuration, written out as JSON, loads back to itself.
fn reloads(config: &Config) {
    let json = serde_json::to_string(config).expect("a config serializes");
    match loader::load_text(Path::new("reload.json"), FileFormat::Json, &json, [], &Overrides::default()) {
        Ok(again) => assert!(again.config == *config, "reloading {json} changed the config"),
        Err(e) => panic!("reloading {json}: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// http_head

/// Input: a size limit (first byte), a read size (second byte; its top bit repeats the rest past
/// the limit, so that the buffer has to grow), then the bytes a client sends. The head is read
/// in reads of that size, whole and byte by byte (same outcome, never more than the limit); a
/// complete head is routed (same route with or without what follows it, under two
/// configurations), and the raw bytes go through `httparse` and the router too.
pub fn http_head(data: &[u8]) {
    let [limit, chunk, input @ ..] = data else { return };
    // Up to 2,296: past the buffer's first 1,024 bytes, and rarely a power of two.
    let max = 1 + usize::from(*limit) * 9;
    let repeated;
    let input = if chunk & 0x80 != 0 && !input.is_empty() {
        repeated = input.repeat(max / input.len() + 2);
        &repeated[..]
    } else {
        input
    };
    let chunk = &(chunk & 0x7F);
    // Empty lines before the request line are skipped (as httparse does), not taken for the end.
    let lead = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
    let end = input[lead..].windows(4).position(|w| w == b"\r\n\r\n").map(|i| lead + i + 4);
    let expected = match end {
        Some(end) if end <= max => HeadScan::Complete,
        _ if input.len() >= max => HeadScan::TooLarge,
        _ => HeadScan::Partial,
    };
    let mut first = None;
    for read in [usize::from(*chunk) + 1, 1, input.len().max(1)] {
        let (scan, bytes) = read_head(input, max, read);
        assert_eq!(scan, expected, "reads of {read}, limit {max}");
        assert!(bytes.len() <= max, "{} bytes read, limit {max}", bytes.len());
        assert!(input.starts_with(&bytes));
        if scan == HeadScan::Complete {
            let head = &bytes[..end.expect("complete")];
            let routes = routes(&bytes);
            assert_eq!(routes, self::routes(head), "what follows the head changed the route");
            assert_eq!(*first.get_or_insert(routes.clone()), routes, "the reads changed the route");
        }
    }
    raw_route(input);
}

/// Reads `input` as `entry::read_head` reads a socket, `read` bytes at a time at most.
fn read_head(input: &[u8], max: usize, read: usize) -> (HeadScan, Vec<u8>) {
    let mut head = HeadBuffer::new(max);
    let mut rest = input;
    loop {
        let Some(room) = head.spare() else { return (HeadScan::TooLarge, head.into_bytes()) };
        assert!(!room.is_empty());
        let n = room.len().min(read).min(rest.len());
        room[..n].copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        match head.filled(n) {
            HeadScan::Partial if n == 0 => return (HeadScan::Partial, head.into_bytes()),
            HeadScan::Partial => {}
            done => return (done, head.into_bytes()),
        }
    }
}

/// Configurations to route with: the defaults, and other paths with the WebSocket off.
fn configs() -> [Config; 2] {
    let mut other = Config::default();
    other.http_api.handler_prefix = "/v1/api/".into();
    other.health.handler_prefix = "/".into();
    other.websocket.disabled = true;
    // Every streaming transport on, one on another path.
    other.sse.enabled = true;
    other.http_stream.enabled = true;
    other.uni_sse.enabled = true;
    other.uni_http_stream.enabled = true;
    other.uni_http_stream.handler_prefix = "/uni".into();
    other.uni_websocket.enabled = true;
    [Config::default(), other]
}

/// The route of a complete head under each configuration, as text; the route of the first
/// request is the same twice, and an upgrade is only taken on the WebSocket path.
fn routes(head: &[u8]) -> Vec<String> {
    configs()
        .iter()
        .map(|config| {
            let route = first_route(config, head);
            assert_eq!(route, first_route(config, head));
            if route == Some(Route::WebSocket) {
                assert!(!config.websocket.disabled);
            }
            format!("{route:?}")
        })
        .collect()
}

/// `httparse` on the raw bytes, and the router on whatever path they hold.
fn raw_route(input: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    let path = match req.parse(input) {
        Ok(_) => req.path.unwrap_or("").to_owned(),
        Err(_) => String::from_utf8_lossy(input).into_owned(),
    };
    for config in &configs() {
        for upgrade in [false, true] {
            let route = route(config, &path, upgrade);
            assert_eq!(route, self::route(config, &path, upgrade), "routing is deterministic");
            match route {
                Route::WebSocket => assert!(upgrade && path == config.websocket.handler_prefix),
                Route::WebSocketEcho => {
                    assert!(upgrade && path == config.websocket.echo_endpoint_for_conformance_tests)
                }
                Route::Api(name) => assert!(path.ends_with(name) && !config.http_api.disabled),
                Route::Health => assert_eq!(path, config.health.handler_prefix),
                Route::UniWebSocket => assert!(upgrade && config.uni_websocket.enabled),
                Route::Stream(kind) => assert!(kind.config(config).enabled && path == kind.path(config)),
                Route::Emulation => assert!(config.sse.enabled || config.http_stream.enabled),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stream_request

/// Input: an HTTP request (head and body) as a streaming transport reads it. Its head goes
/// through `StreamHead::new`, each transport's `payload` check (limit 1024), `first_commands`
/// on the payload, `Positions::parse` on `Last-Event-ID`, and the body through
/// `emulation_body`, in both encodings.
pub fn stream_request(data: &[u8]) {
    use herald_server::transport::stream::StreamKind;
    use herald_server::transport::stream::positions::Positions;
    use herald_server::transport::stream::request::{Payload, StreamHead, emulation_body, payload, percent_decode};
    const LIMIT: usize = 1024;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = req.parse(data) else { return };
    let body = &data[n..];
    let parsed = StreamHead::new(
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.headers.iter().map(|h| (h.name, h.value)),
    );
    assert_eq!(
        parsed,
        StreamHead::new(
            req.method.unwrap_or(""),
            req.path.unwrap_or(""),
            req.headers.iter().map(|h| (h.name, h.value))
        ),
        "same answer twice"
    );
    let Ok(head) = parsed else { return };
    if let Some(Ok(v)) = head.query_param("cf_connect") {
        assert!(v.len() <= head.query.len(), "decoding never grows");
    }
    for part in head.query.split('&') {
        if let Some(v) = percent_decode(part) {
            assert!(v.len() <= part.len());
        }
    }
    for kind in StreamKind::ALL {
        match payload(kind, &head, LIMIT) {
            Ok(Payload::Query(v)) => {
                assert!(v.len() <= LIMIT);
                check_first(kind, head.protobuf, &v);
            }
            Ok(Payload::Body(len)) => {
                assert!(len > 0 && len <= LIMIT);
                check_first(kind, head.protobuf, &body[..len.min(body.len())]);
            }
            Err(r) => {
                assert!(matches!(r.status, 400 | 405 | 411 | 413), "status {}", r.status);
                assert!(!r.message.is_empty());
            }
        }
    }
    if let Some(id) = &head.last_event_id
        && let Some(positions) = Positions::parse(id)
    {
        let line = positions.id_line();
        assert!(line.starts_with(b"id: ") && line.ends_with(b"\n"));
        assert_eq!(line.iter().filter(|b| matches!(b, b'\r' | b'\n' | 0)).count(), 1, "one line, no CR or NUL");
        let again = std::str::from_utf8(&line[4..line.len() - 1]).expect("UTF-8 id");
        assert_eq!(Positions::parse(again), Some(positions), "an id reads back as the same positions");
    }
    for protobuf in [false, true] {
        if let Err(r) = emulation_body(protobuf, &bytes::Bytes::copy_from_slice(body)) {
            assert_eq!(r.status, 400);
        }
    }
}

/// A long-poll request (`transport::long_poll::request::parse`): a connect or a poll, or a
/// named refusal.
pub fn long_poll_request(data: &[u8]) {
    use herald_server::transport::long_poll::request::{PollRequest, parse};
    use herald_server::transport::stream::request::StreamHead;
    const LIMIT: usize = 1024;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = req.parse(data) else { return };
    let body = &data[n..];
    let Ok(head) = StreamHead::new(
        req.method.unwrap_or(""),
        req.path.unwrap_or(""),
        req.headers.iter().map(|h| (h.name, h.value)),
    ) else {
        return;
    };
    let body = &body[..body.len().min(LIMIT)];
    let first = parse(&head, body, LIMIT);
    assert_eq!(first, parse(&head, body, LIMIT), "same answer twice");
    match first {
        Ok(PollRequest::Connect(cmds)) => {
            assert_eq!(cmds.len(), 1);
            assert!(cmds[0].id == 1 && cmds[0].connect.is_some());
        }
        Ok(PollRequest::Poll { session, .. }) => {
            assert!(!session.is_empty());
            assert!(head.query.contains("session=") && head.query.contains("seq="));
        }
        Err(r) => {
            assert!(matches!(r.status, 400 | 405 | 413), "status {}", r.status);
            assert!(!r.message.is_empty());
        }
    }
}

/// The commands of an opening payload: none is an error; a unidirectional one is exactly the
/// connect command 1.
fn check_first(kind: herald_server::transport::stream::StreamKind, protobuf: bool, data: &[u8]) {
    match herald_server::transport::stream::request::first_commands(kind, protobuf, data, 16) {
        Ok(cmds) if kind.is_unidirectional() => {
            assert_eq!(cmds.len(), 1);
            assert!(cmds[0].id == 1 && cmds[0].connect.is_some());
        }
        Ok(cmds) => assert!(!cmds.is_empty() && cmds.len() <= 16),
        Err(r) => assert_eq!(r.status, 400),
    }
}

// ---------------------------------------------------------------------------------------------
// proxy_header

/// A PROXY protocol header (v1 or v2) and what follows it, as a trusted proxy would send them:
/// parsing never panics; a complete header's length and address do not depend on what follows
/// it, every shorter prefix of it is incomplete, and nothing over the size bound is incomplete.
pub fn proxy_header(data: &[u8]) {
    use herald_server::edge::proxy_protocol::{MAX_HEADER, Parsed, parse};
    let outcome = parse(data);
    if data.len() > MAX_HEADER {
        assert_ne!(outcome, Ok(Parsed::Incomplete), "{} bytes and still incomplete", data.len());
    }
    if let Ok(Parsed::Done { len, source }) = outcome {
        assert!(len <= data.len());
        assert_eq!(parse(&data[..len]), Ok(Parsed::Done { len, source }), "what follows changed the header");
        for cut in [0, len / 2, len - 1] {
            assert!(
                matches!(parse(&data[..cut]), Ok(Parsed::Incomplete)),
                "a prefix of {cut} of a {len}-byte header is not incomplete"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// tls_records

/// The TLS 1.3 record layer of a WebSocket or stream served natively over TLS
/// (`transport::records::Records`), fed what a client sends after the handshake. Input: a suite
/// byte (even: AES-256-GCM, odd: ChaCha20-Poly1305), a mode byte, then data. The mode's low six
/// bits give the read size. With the top bit clear the data is the client's bytes as they are:
/// the layer never panics and never yields more plaintext than it was given. With it set the data
/// is the plaintext of a client that seals it (and, when the data's first byte is odd, a
/// close_notify after it): it arrives whole, in order, whatever the reads, and with bit 6 set one
/// byte of the records is flipped first, and then the stream is never accepted as complete.
pub fn tls_records(data: &[u8]) {
    use herald_server::transport::records::Records;
    let [suite, mode, data @ ..] = data else { return };
    let read = 1 + usize::from(mode & 0x3f) * 37;
    let (mut server, mut client) = record_pair(suite & 1 == 1);
    if mode & 0x80 == 0 {
        let (received, _) = feed(&mut server, data.to_vec(), read);
        assert!(received.len() <= data.len(), "{} bytes of plaintext from {} bytes", received.len(), data.len());
        return;
    }
    let mut wire = Vec::new();
    assert_eq!(client.seal([data], &mut wire), Ok(data.len()));
    let close = data.first().is_some_and(|b| b & 1 == 1);
    if close {
        client.close_notify(&mut wire).expect("a close_notify seals");
    }
    let tampered = mode & 0x40 != 0 && !wire.is_empty();
    if tampered {
        let at = usize::from(data.get(1).copied().unwrap_or(0)) * 131 % wire.len();
        wire[at] ^= 0x01;
    }
    let (received, failed) = feed(&mut server, wire, read);
    assert!(data.starts_with(&received), "the plaintext arrived changed or out of order");
    let accepted = failed.is_none() && received == data && (!close || server.finished());
    if tampered {
        assert!(!accepted, "a stream with a flipped byte was accepted whole");
    } else {
        assert!(accepted, "a sealed stream was not accepted: {failed:?}, {} of {} bytes", received.len(), data.len());
        assert_eq!(server.finished(), close);
    }

    /// A server and a client record layer whose keys match, as after a handshake.
    fn record_pair(chacha: bool) -> (Records, Records) {
        use rustls::crypto::cipher::{AeadKey, Iv};
        use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};
        let secrets = |key: u8, iv: u8| {
            let (key, iv) = (AeadKey::from([key; 32]), Iv::new([iv; 12]));
            if chacha {
                ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }
            } else {
                ConnectionTrafficSecrets::Aes256Gcm { key, iv }
            }
        };
        let limit = 1 << 24;
        let server = ExtractedSecrets { tx: (1, secrets(5, 3)), rx: (0, secrets(7, 9)) };
        let client = ExtractedSecrets { tx: (0, secrets(7, 9)), rx: (1, secrets(5, 3)) };
        (Records::new(server, limit).expect("a known suite"), Records::new(client, limit).expect("a known suite"))
    }

    /// Gives `wire` to `server` in reads of `read` bytes (a smaller destination than the read, so
    /// some plaintext waits inside); returns the plaintext and the error that ended it, if any.
    fn feed(
        server: &mut Records,
        wire: Vec<u8>,
        read: usize,
    ) -> (Vec<u8>, Option<herald_server::transport::records::RecordError>) {
        let mut received = Vec::new();
        let mut dst = vec![0; read / 2 + 1];
        for chunk in wire.chunks(read) {
            let mut input = chunk.to_vec();
            match server.receive(&mut input, &mut dst) {
                Ok(n) => received.extend_from_slice(&dst[..n]),
                Err(e) => return (received, Some(e)),
            }
            while server.has_plain() {
                let n = server.take_plain(&mut dst);
                assert!(n > 0, "has_plain without plaintext");
                received.extend_from_slice(&dst[..n]);
            }
        }
        (received, None)
    }
}
