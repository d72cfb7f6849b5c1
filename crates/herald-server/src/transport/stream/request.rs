//! What the streaming transports read from an opening request, without I/O: the parts of the
//! head they use ([`StreamHead`], from a raw head or from hyper's request), the CORS and origin
//! decisions, and the connect payload (`cf_connect` or the body) turned into commands.

use bytes::Bytes;
use herald_hub::Transport;
use herald_proto::{Command, ConnectRequest, Encoding, Envelope, decode_commands};

use crate::config::{Config, HTTP_STREAM_PATH, SSE_PATH, StreamTransportConfig, UNI_HTTP_STREAM_PATH, UNI_SSE_PATH};

/// The four streaming endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `GET /connection/sse?cf_connect=<command batch>` (or POST with the batch as body).
    Sse,
    /// `POST /connection/http_stream` with the command batch (JSON or Protobuf) as body.
    HttpStream,
    /// `GET /connection/uni_sse?cf_connect=<ConnectRequest>` (or POST with it as body).
    UniSse,
    /// `POST /connection/uni_http_stream` with a JSON ConnectRequest as body.
    UniHttpStream,
}

impl StreamKind {
    pub const ALL: [StreamKind; 4] =
        [StreamKind::Sse, StreamKind::HttpStream, StreamKind::UniSse, StreamKind::UniHttpStream];

    pub fn transport(self) -> Transport {
        match self {
            StreamKind::Sse => Transport::Sse,
            StreamKind::HttpStream => Transport::HttpStream,
            StreamKind::UniSse => Transport::UniSse,
            StreamKind::UniHttpStream => Transport::UniHttpStream,
        }
    }

    pub fn config(self, config: &Config) -> &StreamTransportConfig {
        match self {
            StreamKind::Sse => &config.sse,
            StreamKind::HttpStream => &config.http_stream,
            StreamKind::UniSse => &config.uni_sse,
            StreamKind::UniHttpStream => &config.uni_http_stream,
        }
    }

    /// The endpoint's path in `config`.
    pub fn path(self, config: &Config) -> &str {
        let default = match self {
            StreamKind::Sse => SSE_PATH,
            StreamKind::HttpStream => HTTP_STREAM_PATH,
            StreamKind::UniSse => UNI_SSE_PATH,
            StreamKind::UniHttpStream => UNI_HTTP_STREAM_PATH,
        };
        self.config(config).path(default)
    }

    pub fn is_unidirectional(self) -> bool {
        matches!(self, StreamKind::UniSse | StreamKind::UniHttpStream)
    }

    fn is_sse(self) -> bool {
        matches!(self, StreamKind::Sse | StreamKind::UniSse)
    }

    /// Methods that open a stream (OPTIONS is answered as a CORS preflight).
    pub fn allowed_methods(self) -> &'static str {
        if self.is_sse() { "GET, POST, OPTIONS" } else { "POST, OPTIONS" }
    }

    pub fn envelope(self, protobuf: bool) -> Envelope {
        match self {
            StreamKind::Sse => Envelope::Sse,
            StreamKind::HttpStream if protobuf => Envelope::StreamProtobuf,
            StreamKind::HttpStream => Envelope::StreamJson,
            StreamKind::UniSse => Envelope::UniSse,
            StreamKind::UniHttpStream => Envelope::UniStream,
        }
    }

    pub fn content_type(self, protobuf: bool) -> &'static str {
        match self {
            StreamKind::Sse | StreamKind::UniSse => "text/event-stream; charset=utf-8",
            StreamKind::HttpStream if protobuf => "application/octet-stream",
            StreamKind::HttpStream | StreamKind::UniHttpStream => "application/json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    Get,
    Post,
    Options,
    Other,
}

impl HttpMethod {
    pub fn parse(method: &str) -> Self {
        match method {
            "GET" => HttpMethod::Get,
            "POST" => HttpMethod::Post,
            "OPTIONS" => HttpMethod::Options,
            _ => HttpMethod::Other,
        }
    }
}

/// What a streaming transport needs from the request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub method: HttpMethod,
    /// The raw query (after `?`), undecoded.
    pub query: String,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// `Content-Type: application/octet-stream` (Protobuf, HTTP streaming only).
    pub protobuf: bool,
    pub last_event_id: Option<String>,
    /// `Access-Control-Request-Headers` of a preflight.
    pub request_headers: Option<String>,
    pub content_length: Option<usize>,
    /// `Transfer-Encoding` is present (a chunked upload, which these endpoints refuse).
    pub chunked: bool,
    /// Client headers kept for the connect proxy (`crate::transport::keep_headers`).
    pub kept: Vec<(String, String)>,
}

impl StreamHead {
    /// From a parsed request. `Err` names a malformed header.
    pub fn new<'h>(
        method: &str,
        path: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> Result<Self, &'static str> {
        let mut head = StreamHead {
            method: HttpMethod::parse(method),
            query: path.split_once('?').map(|(_, q)| q.to_owned()).unwrap_or_default(),
            origin: None,
            host: None,
            protobuf: false,
            last_event_id: None,
            request_headers: None,
            content_length: None,
            chunked: false,
            kept: Vec::new(),
        };
        for (name, value) in headers {
            let text = || std::str::from_utf8(value).map(|v| v.trim().to_owned()).map_err(|_| "malformed header");
            if name.eq_ignore_ascii_case("origin") {
                head.origin = Some(text()?);
            } else if name.eq_ignore_ascii_case("host") {
                head.host = Some(text()?);
            } else if name.eq_ignore_ascii_case("content-type") {
                head.protobuf = text()?.split(';').next().is_some_and(|t| t.trim() == "application/octet-stream");
            } else if name.eq_ignore_ascii_case("last-event-id") {
                head.last_event_id = Some(text()?).filter(|v| !v.is_empty());
            } else if name.eq_ignore_ascii_case("access-control-request-headers") {
                head.request_headers = Some(text()?);
            } else if name.eq_ignore_ascii_case("content-length") {
                let n = text()?.parse().map_err(|_| "malformed Content-Length")?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err("conflicting Content-Length headers");
                }
                head.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = true;
            }
        }
        Ok(head)
    }

    /// The percent-decoded value of query parameter `name`; `Err` when it is not valid
    /// percent-encoding.
    pub fn query_param(&self, name: &str) -> Option<Result<Vec<u8>, ()>> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v).ok_or(()))
        })
    }
}

/// Decodes `%XX` escapes and `+` (a space in form encoding, which `URLSearchParams` writes).
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The CORS headers of an answer to `origin` (each line ending in CRLF): the origin echoed,
/// with credentials, when the request carried one (it was checked before).
pub fn cors_headers(origin: Option<&str>) -> String {
    match origin {
        Some(o) => {
            format!("Access-Control-Allow-Origin: {o}\r\nAccess-Control-Allow-Credentials: true\r\nVary: Origin\r\n")
        }
        None => String::new(),
    }
}

/// The extra headers of a preflight answer (204) for an endpoint allowing `methods`.
pub fn preflight_headers(origin: Option<&str>, request_headers: Option<&str>, methods: &str) -> String {
    let mut h = cors_headers(origin);
    h.push_str(&format!("Access-Control-Allow-Methods: {methods}\r\nAccess-Control-Max-Age: 300\r\n"));
    if let Some(r) = request_headers.filter(|r| !r.is_empty()) {
        h.push_str(&format!("Access-Control-Allow-Headers: {r}\r\n"));
    }
    h
}

/// Why an opening request is refused: an HTTP status and the message of its JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused { status, message: message.into() }
}

/// Where the connect payload comes from: the `cf_connect` query parameter (GET) or the body
/// (POST, of `content_length` bytes, at most the transport's `max_request_body_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Query(Vec<u8>),
    Body(usize),
}

/// Checks an opening request that is not a preflight: method, origin already checked, body
/// framing and size. Returns where its connect payload is.
pub fn payload(kind: StreamKind, head: &StreamHead, body_limit: usize) -> Result<Payload, Refused> {
    match head.method {
        HttpMethod::Get if kind.is_sse() => match head.query_param("cf_connect") {
            None => Err(refused(400, "missing cf_connect query parameter")),
            Some(Err(())) => Err(refused(400, "cf_connect is not valid percent-encoding")),
            Some(Ok(v)) if v.len() > body_limit => Err(refused(413, "cf_connect too large")),
            Some(Ok(v)) => Ok(Payload::Query(v)),
        },
        HttpMethod::Post => {
            if head.chunked {
                return Err(refused(411, "a request body needs Content-Length (chunked uploads are not accepted)"));
            }
            match head.content_length {
                None | Some(0) => Err(refused(400, "missing request body")),
                Some(n) if n > body_limit => Err(refused(413, "request body too large")),
                Some(n) => Ok(Payload::Body(n)),
            }
        }
        _ => Err(refused(405, format!("method not allowed (allowed: {})", kind.allowed_methods()))),
    }
}

/// Decodes the connect payload into the commands the session runs first: the command batch of
/// a bidirectional transport (its encoding from `Content-Type`), or a bare ConnectRequest of
/// a unidirectional one, wrapped as command 1.
pub fn first_commands(
    kind: StreamKind,
    protobuf: bool,
    data: &[u8],
    max_commands: usize,
) -> Result<Vec<Command>, Refused> {
    if kind.is_unidirectional() {
        let req: ConnectRequest =
            serde_json::from_slice(data).map_err(|e| refused(400, format!("malformed connect request: {e}")))?;
        return Ok(vec![Command { id: 1, connect: Some(req), ..Default::default() }]);
    }
    let encoding = if kind == StreamKind::HttpStream && protobuf { Encoding::Protobuf } else { Encoding::Json };
    let cmds = decode_commands(encoding, data, max_commands).map_err(|e| refused(400, e.to_string()))?;
    if cmds.is_empty() {
        return Err(refused(400, "no command in the request"));
    }
    Ok(cmds)
}

/// The body of a JSON `POST /emulation`.
#[derive(Debug, serde::Deserialize)]
pub struct JsonEmulation {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub session: String,
    /// The JSON command lines, as a string.
    #[serde(default)]
    pub data: String,
}

/// An `/emulation` body: node, session and the encoded commands.
pub fn emulation_body(protobuf: bool, body: &Bytes) -> Result<(String, String, Bytes), Refused> {
    if protobuf {
        use prost::Message as _;
        let req = herald_proto::EmulationRequest::decode(body.clone())
            .map_err(|e| refused(400, format!("malformed emulation request: {e}")))?;
        return Ok((req.node, req.session, req.data));
    }
    let req: JsonEmulation =
        serde_json::from_slice(body).map_err(|e| refused(400, format!("malformed emulation request: {e}")))?;
    Ok((req.node, req.session, Bytes::from(req.data)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> StreamHead {
        StreamHead::new(method, path, headers.iter().map(|(n, v)| (*n, v.as_bytes()))).unwrap()
    }

    #[test]
    fn cf_connect_is_percent_decoded() {
        let h = head("GET", "/connection/uni_sse?x=1&cf_connect=%7B%22token%22%3A%22a+b%22%7D", &[]);
        assert_eq!(h.query_param("cf_connect"), Some(Ok(br#"{"token":"a b"}"#.to_vec())));
        assert_eq!(payload(StreamKind::UniSse, &h, 1024), Ok(Payload::Query(br#"{"token":"a b"}"#.to_vec())));
        let bad = head("GET", "/x?cf_connect=%zz", &[]);
        assert_eq!(payload(StreamKind::UniSse, &bad, 1024).unwrap_err().status, 400);
        assert_eq!(payload(StreamKind::UniSse, &head("GET", "/x", &[]), 1024).unwrap_err().status, 400);
        assert_eq!(payload(StreamKind::UniSse, &h, 4).unwrap_err().status, 413);
    }

    #[test]
    fn methods_and_bodies() {
        let get = head("GET", "/x?cf_connect={}", &[]);
        assert_eq!(payload(StreamKind::UniHttpStream, &get, 1024).unwrap_err().status, 405);
        let post = head("POST", "/x", &[("Content-Length", "10")]);
        assert_eq!(payload(StreamKind::UniHttpStream, &post, 1024), Ok(Payload::Body(10)));
        assert_eq!(payload(StreamKind::UniHttpStream, &post, 9).unwrap_err().status, 413);
        let chunked = head("POST", "/x", &[("Transfer-Encoding", "chunked")]);
        assert_eq!(payload(StreamKind::HttpStream, &chunked, 1024).unwrap_err().status, 411);
        assert_eq!(payload(StreamKind::HttpStream, &head("POST", "/x", &[]), 1024).unwrap_err().status, 400);
        assert!(StreamHead::new("POST", "/", [("Content-Length", &b"x"[..])].into_iter()).is_err());
    }

    #[test]
    fn first_commands_by_kind() {
        let uni = first_commands(StreamKind::UniSse, false, br#"{"token":"t"}"#, 10).unwrap();
        assert_eq!((uni[0].id, uni[0].connect.as_ref().unwrap().token.as_str()), (1, "t"));
        assert_eq!(first_commands(StreamKind::UniSse, false, b"{", 10).unwrap_err().status, 400);
        let bidi = first_commands(StreamKind::Sse, false, br#"{"connect":{"token":"t"},"id":7}"#, 10).unwrap();
        assert_eq!(bidi[0].id, 7);
        assert_eq!(first_commands(StreamKind::Sse, false, b"\n", 10).unwrap_err().status, 400);
    }

    #[test]
    fn content_type_selects_protobuf() {
        let h = head("POST", "/x", &[("Content-Type", "application/octet-stream"), ("Content-Length", "3")]);
        assert!(h.protobuf);
        assert_eq!(StreamKind::HttpStream.envelope(h.protobuf), Envelope::StreamProtobuf);
        assert_eq!(StreamKind::Sse.envelope(h.protobuf), Envelope::Sse, "SSE is JSON only");
    }

    #[test]
    fn emulation_bodies() {
        let json =
            Bytes::from_static(br#"{"session":"s","node":"n","data":"{\"id\":2,\"presence\":{\"channel\":\"c\"}}"}"#);
        let (node, session, data) = emulation_body(false, &json).unwrap();
        assert_eq!((node.as_str(), session.as_str()), ("n", "s"));
        assert_eq!(decode_commands(Encoding::Json, &data, 10).unwrap()[0].id, 2);
        use prost::Message as _;
        let pb =
            herald_proto::EmulationRequest { node: "n".into(), session: "s".into(), data: Bytes::from_static(b"\x00") };
        let (node, session, data) = emulation_body(true, &Bytes::from(pb.encode_to_vec())).unwrap();
        assert_eq!((node.as_str(), session.as_str(), &data[..]), ("n", "s", &b"\x00"[..]));
        assert_eq!(emulation_body(false, &Bytes::from_static(b"nope")).unwrap_err().status, 400);
    }

    #[test]
    fn cors_answers() {
        assert_eq!(cors_headers(None), "");
        let h = preflight_headers(Some("https://a.example"), Some("content-type"), "POST, OPTIONS");
        assert!(h.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(h.contains("Access-Control-Allow-Headers: content-type\r\n"));
        assert!(h.contains("Access-Control-Max-Age: 300\r\n"));
    }
}
