//! The HTTP streaming transports: SSE and HTTP streaming, as bidirectional emulation (`sse`,
//! `http_stream`: commands arrive through `/emulation`) and unidirectional (`uni_sse`,
//! `uni_http_stream`: one connect request, then pushes only).
//!
//! - `request`: the opening request without I/O (head, CORS, origin, payload, first commands);
//! - `conn`: the connection task (write-only stream; the read side only watches for EOF);
//! - `emulation`: the session registry and the `/emulation` endpoint;
//! - `handoff`: opening requests that come after others on a keep-alive connection;
//! - `positions`: stream positions in uni_sse event ids (`Last-Event-ID`).
//!
//! Like a WebSocket, a stream owns its raw socket once its opening request is read (and its
//! bounded body, for POST): no hyper state and no read buffer while idle; the shared
//! [`SocketLink`] queues pre-encoded items and writes them with one vectored write. The
//! response is close-delimited (`Connection: close`, neither `Content-Length` nor chunked
//! encoding), so each item goes out as the very bytes every subscriber shares; the stream ends
//! when the connection does. An opening request that comes after others on a keep-alive
//! connection is handed over from hyper (`crate::entry`), so it is served the same way.

mod conn;
pub mod emulation;
pub(crate) mod handoff;
pub mod positions;
pub mod request;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use herald_hub::ConnectionInfo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) use request::Payload;
pub use request::StreamKind;
use request::{HttpMethod, Refused, StreamHead, cors_headers, first_commands, payload, preflight_headers};

use super::link::{LinkOptions, build_link_with};
use super::records::Records;
use super::{origin_allowed, reject};
use crate::state::AppState;
use positions::Positions;

fn rejected_metric(kind: StreamKind, status: u16) {
    metrics::counter!("herald_stream_rejected_total", "transport" => kind.transport().name(), "status" => status.to_string())
        .increment(1);
}

/// Serves a streaming endpoint's request that is the first on its connection: `head` holds the
/// request head and whatever followed it.
pub(crate) async fn serve(state: Arc<AppState>, stream: TcpStream, head: Vec<u8>, peer: SocketAddr, kind: StreamKind) {
    let parsed = parse_head(&state, &head);
    let (h, head_len) = match parsed {
        Ok(p) => p,
        Err(message) => return refuse(stream, kind, None, Refused { status: 400, message: message.into() }).await,
    };
    let limit = kind.config(&state.config).body_limit();
    match check(&state, kind, &h, limit) {
        Ok(Some(Payload::Query(data))) => open(state, stream, h, data, peer, kind).await,
        Ok(Some(Payload::Body(len))) => {
            let early = head[head_len..].to_vec();
            let timeout = state.config.http_server.request_head_timeout;
            match read_body(&stream, early, len, timeout).await {
                Ok(body) => open(state, stream, h, body, peer, kind).await,
                Err(BodyError::TimedOut) => {
                    let r = Refused { status: 408, message: "request body not received in time".into() };
                    refuse(stream, kind, h.origin.as_deref(), r).await
                }
                Err(BodyError::Closed) => {}
            }
        }
        Ok(None) => {
            let extra = preflight_headers(h.origin.as_deref(), h.request_headers.as_deref(), kind.allowed_methods());
            let mut stream = stream;
            let response = format!("HTTP/1.1 204 No Content\r\n{extra}Connection: close\r\n\r\n");
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Err(r) => refuse(stream, kind, h.origin.as_deref(), r).await,
    }
}

/// Parses an opening request's head (with the headers the connect proxy forwards); the head's
/// length comes with it.
pub(crate) fn parse_head(state: &AppState, head: &[u8]) -> Result<(StreamHead, usize), &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; crate::entry::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => StreamHead::new(
            req.method.unwrap_or(""),
            req.path.unwrap_or(""),
            req.headers.iter().map(|h| (h.name, h.value)),
        )
        .map(|mut h| {
            h.kept = crate::transport::keep_headers(
                req.headers.iter().map(|h| (h.name, h.value)),
                &state.connect_headers.load(),
            );
            (h, n)
        }),
        _ => Err("malformed request"),
    }
}

/// Checks an opening request: shutdown, origin, preflight (`Ok(None)`), method and payload.
pub(crate) fn check(
    state: &AppState,
    kind: StreamKind,
    h: &StreamHead,
    limit: usize,
) -> Result<Option<Payload>, Refused> {
    if state.shutting_down.load(Ordering::Relaxed) {
        return Err(Refused { status: 503, message: "shutting down".into() });
    }
    if !origin_allowed(h.origin.as_deref(), h.host.as_deref(), &state.node.config().client.allowed_origins) {
        return Err(Refused { status: 403, message: "origin not allowed".into() });
    }
    if h.method == HttpMethod::Options {
        return Ok(None);
    }
    payload(kind, h, limit).map(Some)
}

/// Answers a refused opening request with its status and JSON error, and closes.
async fn refuse(stream: TcpStream, kind: StreamKind, origin: Option<&str>, r: Refused) {
    rejected_metric(kind, r.status);
    let mut extra = cors_headers(origin);
    if r.status == 405 {
        extra.push_str(&format!("Allow: {}\r\n", kind.allowed_methods()));
    }
    reject(stream, r.status, &r.message, &extra).await;
}

pub(crate) enum BodyError {
    Closed,
    TimedOut,
}

/// Reads a request body of `len` bytes (checked against the limit already), starting with the
/// bytes that came with the head.
pub(crate) async fn read_body(
    stream: &TcpStream,
    mut body: Vec<u8>,
    len: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    let read = async {
        body.truncate(len);
        let mut filled = body.len();
        body.resize(len, 0);
        while filled < len {
            stream.readable().await.map_err(|_| BodyError::Closed)?;
            match stream.try_read(&mut body[filled..]) {
                Ok(0) => return Err(BodyError::Closed),
                Ok(n) => {
                    super::bytes_in(n);
                    filled += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Err(BodyError::Closed),
            }
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(BodyError::TimedOut))
}

/// Opens the stream of an accepted request whose connect payload is `data`: decodes the first
/// commands, writes the response head and starts the connection task.
pub(crate) async fn open(
    state: Arc<AppState>,
    mut stream: TcpStream,
    h: StreamHead,
    data: Vec<u8>,
    peer: SocketAddr,
    kind: StreamKind,
) {
    let cmds = match prepare(kind, &h, data, &state) {
        Ok(c) => c,
        Err(r) => return refuse(stream, kind, h.origin.as_deref(), r).await,
    };
    let response = response_head(kind, &h);
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    super::bytes_out(response.len());
    start(state, stream, None, Box::new(h), cmds, peer, kind).await;
}

/// The first commands of an accepted request whose connect payload is `data` (uni_sse: with
/// the positions of its `Last-Event-ID`), without I/O.
pub(crate) fn prepare(
    kind: StreamKind,
    h: &StreamHead,
    data: Vec<u8>,
    state: &AppState,
) -> Result<Vec<herald_proto::Command>, Refused> {
    let mut cmds = first_commands(kind, h.protobuf, &data, state.ws.max_commands)?;
    if kind == StreamKind::UniSse
        && let Some(id) = &h.last_event_id
    {
        let positions =
            Positions::parse(id).ok_or_else(|| Refused { status: 400, message: "malformed Last-Event-ID".into() })?;
        if let Some(req) = cmds[0].connect.as_mut() {
            positions.into_request(req);
        }
    }
    Ok(cmds)
}

/// The response head of an opened stream.
pub(crate) fn response_head(kind: StreamKind, h: &StreamHead) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: private, no-cache, no-store, must-revalidate, max-age=0\r\n\
         Pragma: no-cache\r\nExpires: 0\r\nX-Accel-Buffering: no\r\n{}Connection: close\r\n\r\n{}",
        kind.content_type(h.protobuf),
        cors_headers(h.origin.as_deref()),
        // SSE: an empty line at once, so that `EventSource` fires `open`.
        if matches!(kind, StreamKind::Sse | StreamKind::UniSse) { "\r\n" } else { "" },
    )
}

/// Builds the link of a stream whose response head was sent and starts its session and task.
/// `tls`: the record layer of a connection served over TLS (`crate::tls_entry`).
pub(crate) async fn start(
    state: Arc<AppState>,
    stream: TcpStream,
    tls: Option<Box<Records>>,
    mut h: Box<StreamHead>,
    cmds: Vec<herald_proto::Command>,
    peer: SocketAddr,
    kind: StreamKind,
) {
    let options = LinkOptions {
        envelope: kind.envelope(h.protobuf),
        native_ping: false,
        // Emulation clients answer pings through `/emulation`; unidirectional ones never do.
        pong_expected: !kind.is_unidirectional(),
        emulation: !kind.is_unidirectional(),
        queue_max: state.ws.queue_max,
    };
    let link = build_link_with(stream, tls, options);
    let conn = ConnectionInfo::new(peer, kind.transport());
    let session = conn::start(&link, &state, cmds, conn, kind, std::mem::take(&mut h.kept)).await;
    tokio::spawn(conn::run(link, state, session, kind));
}
