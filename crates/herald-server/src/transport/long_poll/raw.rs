//! Long-poll requests served on the raw socket, one after another on a keep-alive connection,
//! so that a held poll costs its session's wait and the socket, not a hyper connection (whose
//! buffers and request state made a held poll cost about 20 KB).
//!
//! A connection whose first request is a long-poll request comes here from the entry; a poll
//! that hyper read after other requests is handed over ([`Handed`], through
//! `transport::stream::handoff`). After each answer the next request head is read here: another
//! long-poll request is served in the same loop, anything else goes back to the entry
//! (`entry::spawn_dispatch`), which routes it like a first request. The loop runs in a task of
//! its own ([`spawn`]) while a request is read or answered; a poll to hold is parked with the
//! socket in its session's link ([`Parked`]) and the task ends, and the wake-up that answers it
//! spawns the loop again.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Wake, Waker};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::request::PollRequest;
use super::{HeldPoll, answer_parsed, begin_poll, precheck, with_cors};
use crate::api::{Body, transport_error};
use crate::edge::{gate, retry_after};
use crate::entry::{self, HeadError};
use crate::router::{Listener, Route, on_listener};
use crate::state::AppState;
use crate::transport::stream::request::{HttpMethod, Refused, StreamHead};
use crate::transport::stream::{BodyError, read_body};

/// The answer to a chunked request body (411): every long-poll body is small and sent whole.
pub(crate) const CHUNKED: &str = "chunked request bodies are not accepted: send Content-Length";

/// A poll hyper read on a keep-alive connection, to be answered on the raw socket.
pub(crate) struct Handed {
    pub(crate) head: StreamHead,
    pub(crate) body: Bytes,
    pub(crate) keep_alive: bool,
    /// The client's address (after the trusted-proxy headers) of this request.
    pub(crate) client: SocketAddr,
}

/// What the loop answers next.
pub(crate) enum Pending {
    /// A request head read from the socket (and whatever followed it).
    Head(Vec<u8>),
    /// A request hyper read, with the bytes hyper had read past it.
    Handed(Box<Handed>, Vec<u8>),
    /// A parked poll to answer now.
    Woken(Held),
}

/// Parks a held poll with its socket (the task serving the connection then ends), or gives
/// both back when the poll is to be answered at once.
fn park(
    state: &Arc<AppState>,
    stream: TcpStream,
    held: Held,
    peer: SocketAddr,
    listener: Listener,
) -> Result<(), (TcpStream, Held)> {
    let worker = herald_hub::wake::current_worker();
    state.polls.note_runtime(worker);
    let (link, ticket) = (held.poll.link.clone(), held.poll.ticket);
    let parked = Arc::new(Parked {
        state: Arc::downgrade(state),
        worker,
        conn: Mutex::new(Some(ParkedConn { stream, held, peer, listener })),
    });
    match link.park(ticket, worker, Waker::from(parked.clone())) {
        Ok(()) => Ok(()),
        Err(waker) => {
            drop(waker);
            let conn = parked.conn.lock().unwrap_or_else(|p| p.into_inner()).take();
            let conn = conn.expect("a poll not parked is not woken");
            Err((conn.stream, conn.held))
        }
    }
}

/// A request of this endpoint, parsed from a raw head.
struct Parsed {
    head: StreamHead,
    head_len: usize,
    keep_alive: bool,
    client: SocketAddr,
}

/// Serves long-poll requests on `stream`, starting with `pending`, in a new task.
pub(crate) fn spawn(state: Arc<AppState>, stream: TcpStream, pending: Pending, peer: SocketAddr, listener: Listener) {
    tokio::spawn(run(state, stream, pending, peer, listener));
}

/// The connection's task: serves until the connection ends, parks a held poll (the task ends;
/// [`Parked`] spawns the next one), or hands a request for another endpoint to the entry.
async fn run(state: Arc<AppState>, stream: TcpStream, pending: Pending, peer: SocketAddr, listener: Listener) {
    if let Served::Other(stream, head) = serve(&state, stream, pending, peer, listener).await {
        entry::spawn_dispatch(state, stream, head, peer, listener);
    }
}

/// How [`serve`] ended.
pub(crate) enum Served {
    /// The connection ended.
    Closed,
    /// A poll is held with the socket parked in its session ([`Parked`]): no task waits.
    Parked,
    /// The connection carries a request for another endpoint (its head).
    Other(TcpStream, Vec<u8>),
}

/// A held poll parked without a task: the socket and what its answer needs, in the waker its
/// session wakes (an item, the session's end, a newer poll, the sweeper at the timeout). That
/// is what a client holding a poll costs besides its session: no task, no future, no timer.
struct Parked {
    state: Weak<AppState>,
    /// The worker whose runtime the socket is registered with, where the answer runs.
    worker: u16,
    conn: Mutex<Option<ParkedConn>>,
}

struct ParkedConn {
    stream: TcpStream,
    held: Held,
    peer: SocketAddr,
    listener: Listener,
}

impl Wake for Parked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    /// Spawns the task that answers the poll and goes on serving the connection.
    fn wake_by_ref(self: &Arc<Self>) {
        let Some(conn) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        let Some(state) = self.state.upgrade() else { return };
        let ParkedConn { stream, held, peer, listener } = conn;
        state.polls.spawn(self.worker, run(state.clone(), stream, Pending::Woken(held), peer, listener));
    }
}

/// Serves long-poll requests on `stream` until the connection ends, a poll is parked, or the
/// connection carries a request for another endpoint ([`Served`]). `peer` is the connection's
/// address (before trusted-proxy headers).
pub(crate) async fn serve(
    state: &Arc<AppState>,
    mut stream: TcpStream,
    mut pending: Pending,
    peer: SocketAddr,
    listener: Listener,
) -> Served {
    loop {
        // Every await is boxed: the loop's future, which lives while a request is served, is
        // then the socket and this loop's locals. A held poll keeps none of it (parked).
        let step = match pending {
            Pending::Head(bytes) => match Box::pin(one(state, &stream, bytes, peer)).await {
                Some(step) => step,
                None => return Served::Closed,
            },
            Pending::Handed(h, rest) => {
                let limit = state.config.uni_long_poll.max_request_body_size;
                let parsed = super::request::parse(&h.head, &h.body, limit);
                let origin = h.head.origin.as_deref().map(Box::from);
                Box::pin(respond(state, parsed, h.client, origin, h.keep_alive, rest)).await
            }
            // Woken only when there is something to answer (items, the end, a newer poll, the
            // timeout).
            Pending::Woken(Held { poll, origin, keep_alive, rest }) => {
                Step::Answer(with_cors(poll.answer(state), origin.as_deref()), keep_alive, rest)
            }
        };
        let (response, keep_alive, rest) = match step {
            Step::Answer(response, keep_alive, rest) => (response, keep_alive, rest),
            Step::Hold(held) => match park(state, stream, *held, peer, listener) {
                Ok(()) => return Served::Parked,
                Err((back, held)) => {
                    stream = back;
                    let Held { poll, origin, keep_alive, rest } = held;
                    (with_cors(poll.answer(state), origin.as_deref()), keep_alive, rest)
                }
            },
        };
        if Box::pin(write(&mut stream, response, keep_alive)).await.is_err() {
            return Served::Closed;
        }
        if !keep_alive {
            let _ = Box::pin(stream.shutdown()).await;
            return Served::Closed;
        }
        let head = match Box::pin(entry::next_head(state, &stream, rest)).await {
            Ok(head) => head,
            Err(HeadError::TooLarge) => {
                Box::pin(crate::transport::reject(stream, 431, "request head too large", "")).await;
                return Served::Closed;
            }
            Err(HeadError::Closed) => return Served::Closed,
        };
        let route = entry::first_route(&state.config, &head).map(|r| on_listener(&state.config, r, listener));
        if !matches!(route, Some(Route::LongPoll)) {
            return Served::Other(stream, head);
        }
        pending = Pending::Head(head);
    }
}

/// Reads one request whose head is in `bytes` and answers it, or begins the poll it is
/// ([`Step`]). `None` when the client went away before its body arrived.
async fn one(state: &Arc<AppState>, stream: &TcpStream, mut bytes: Vec<u8>, peer: SocketAddr) -> Option<Step> {
    let answer = |response, keep_alive, rest| Some(Step::Answer(response, keep_alive, rest));
    let p = match parse(state, &bytes, peer) {
        Ok(p) => p,
        Err(response) => return answer(*response, false, Vec::new()),
    };
    let origin = p.head.origin.as_deref().map(Box::<str>::from);
    let refused = |status: StatusCode, message: &str| with_cors(transport_error(status, message), origin.as_deref());
    // The head's buffer is freed here: a held poll keeps nothing of the request but what
    // `answer` needs.
    let mut after = bytes.split_off(p.head_len);
    drop(bytes);
    if let Some(response) = precheck(state, &p.head) {
        // A preflight has no body; one that came anyway is not read, so the connection ends.
        let keep = p.keep_alive && !p.head.chunked && p.head.content_length.unwrap_or(0) == 0;
        return answer(response, keep, after);
    }
    let (body, rest) = if p.head.method == HttpMethod::Post {
        if p.head.chunked {
            return answer(refused(StatusCode::LENGTH_REQUIRED, CHUNKED), false, Vec::new());
        }
        let len = p.head.content_length.unwrap_or(0);
        if len > state.config.uni_long_poll.max_request_body_size {
            return answer(refused(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"), false, Vec::new());
        }
        let rest = if after.len() > len { after.split_off(len) } else { Vec::new() };
        // Boxed, like the connect: what a held poll waits in should not pay for them.
        match Box::pin(read_body(stream, after, len, state.config.http_server.request_head_timeout)).await {
            Ok(body) => (Bytes::from(body), rest),
            Err(BodyError::TimedOut) => {
                let response = refused(StatusCode::REQUEST_TIMEOUT, "request body not received in time");
                return answer(response, false, Vec::new());
            }
            Err(BodyError::Closed) => return None,
        }
    } else {
        if p.head.chunked || p.head.content_length.unwrap_or(0) > 0 {
            let message = "a GET request must not have a body";
            return answer(refused(StatusCode::BAD_REQUEST, message), false, Vec::new());
        }
        (Bytes::new(), after)
    };
    let parsed = super::request::parse(&p.head, &body, state.config.uni_long_poll.max_request_body_size);
    let (keep_alive, client) = (p.keep_alive, p.client);
    drop((p, body));
    Some(respond(state, parsed, client, origin, keep_alive, rest).await)
}

/// What the loop does with a request: answer it, or hold a poll.
pub(crate) enum Step {
    /// The response, whether the connection stays open, and the bytes read past the request.
    Answer(Response<Body>, bool, Vec<u8>),
    Hold(Box<Held>),
}

/// A held poll with what its answer needs.
pub(crate) struct Held {
    poll: HeldPoll,
    origin: Option<Box<str>>,
    keep_alive: bool,
    rest: Vec<u8>,
}

/// The step for a parsed request: a poll that began is held; anything else is answered here.
async fn respond(
    state: &Arc<AppState>,
    parsed: Result<PollRequest, Refused>,
    client: SocketAddr,
    origin: Option<Box<str>>,
    keep_alive: bool,
    rest: Vec<u8>,
) -> Step {
    if let Ok(PollRequest::Poll { session, seq }) = &parsed {
        return match begin_poll(state, session, *seq) {
            Ok(poll) => Step::Hold(Box::new(Held { poll, origin, keep_alive, rest })),
            Err(response) => Step::Answer(with_cors(*response, origin.as_deref()), keep_alive, rest),
        };
    }
    let response = with_cors(answer_parsed(state, parsed, client).await, origin.as_deref());
    Step::Answer(response, keep_alive, rest)
}

/// Parses a raw request head and applies the edge policies (address lists, trusted proxies).
/// Synchronous, so that the parser's header array is never part of a waiting future.
fn parse(state: &AppState, bytes: &[u8], peer: SocketAddr) -> Result<Parsed, Box<Response<Body>>> {
    let mut fields = [httparse::EMPTY_HEADER; entry::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(Box::new(transport_error(StatusCode::BAD_REQUEST, "malformed request head"))),
    };
    let headers = || req.headers.iter().map(|h| (h.name, h.value));
    let client = gate::admit(state, &Route::LongPoll, peer, headers()).map_err(|(status, message)| {
        let mut response = transport_error(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), message);
        if !retry_after(status).is_empty() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        Box::new(response)
    })?;
    let head = StreamHead::new(req.method.unwrap_or(""), req.path.unwrap_or(""), headers())
        .map_err(|message| Box::new(transport_error(StatusCode::BAD_REQUEST, message)))?;
    let connection = headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(|token| token.trim_ascii().to_ascii_lowercase())
        .collect::<Vec<_>>();
    let keep_alive = keep_alive(req.version.unwrap_or(1), &connection);
    Ok(Parsed { head, head_len, keep_alive, client })
}

/// HTTP/1.1 keeps a connection unless it says `close`; HTTP/1.0 closes unless it says
/// `keep-alive`. `connection` holds the lowercase tokens of its `Connection` headers.
pub(crate) fn keep_alive(minor_version: u8, connection: &[Vec<u8>]) -> bool {
    let says = |token: &[u8]| connection.iter().any(|t| t == token);
    if minor_version == 0 { says(b"keep-alive") } else { !says(b"close") }
}

/// Writes a complete response with `Content-Length` and the connection's fate.
async fn write(stream: &mut TcpStream, response: Response<Body>, keep_alive: bool) -> std::io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let mut out = Vec::with_capacity(256 + body.len());
    let status = parts.status;
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""));
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let _ = write!(out, "Content-Length: {}\r\nConnection: {connection}\r\n\r\n", body.len());
    out.extend_from_slice(&body);
    stream.write_all(&out).await?;
    crate::transport::bytes_out(out.len() - body.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use herald_hub::{HubConfig, Node, NodeIdentity, SystemClock};

    use super::{Pending, keep_alive, serve};
    use crate::config::Config;
    use crate::state::AppState;

    /// A client holding a poll pays for its [`super::Parked`] (in an `Arc`, besides its
    /// session and socket), not for this loop's future, which lives only while a request is
    /// read or answered: keep both small.
    #[tokio::test]
    async fn the_poll_loop_state_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(peer).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
        let node = Node::new(HubConfig::default(), identity, Arc::new(SystemClock)).unwrap();
        let state = Arc::new(AppState::new(Config::default(), node, crate::telemetry::install_metrics().unwrap(), 0));
        let fut = serve(&state, stream, Pending::Head(Vec::new()), peer, crate::router::Listener::Public);
        let size = std::mem::size_of_val(&fut);
        // The Arc's two counters, then the parked poll.
        let parked = 16 + std::mem::size_of::<super::Parked>();
        eprintln!("long-poll loop future {size} B, parked poll {parked} B");
        // 704 B in a debug build when the loop's future was what a held poll kept.
        assert!(size <= 768, "long-poll loop future grew to {size} bytes");
        assert!(parked <= 256, "a parked poll grew to {parked} bytes");
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_header() {
        let tokens = |t: &[&str]| t.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert!(keep_alive(1, &[]));
        assert!(!keep_alive(1, &tokens(&["close"])));
        assert!(keep_alive(1, &tokens(&["keep-alive", "te"])));
        assert!(!keep_alive(0, &[]));
        assert!(keep_alive(0, &tokens(&["keep-alive"])));
    }
}
