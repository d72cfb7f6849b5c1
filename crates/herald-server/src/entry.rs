//! The connection entry: where every accepted TCP connection starts.
//!
//! Its first request head is read (with a size limit and a deadline) and routed
//! ([`crate::router`]). A route served by a transport that owns the raw socket (the WebSocket
//! upgrade) gets the socket and the bytes read so far; anything else goes to hyper with those
//! bytes replayed (API, health, metrics, keep-alive), and hyper's requests are routed the same
//! way. On a keep-alive connection every later head has the same deadline, counted from its
//! first byte, and the wait for it is bounded by `http_server.idle_timeout` ([`Deadline`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::api;
use crate::config::Config;
use crate::edge::gate;
use crate::edge::gateway::forward::{BoxError, Reply};
use crate::router::{Listener, Route, on_listener, route, route_live};
use crate::state::AppState;
use crate::transport::stream;
use crate::transport::stream::handoff::Taken;
use crate::transport::{self, long_poll, ws};

/// Serves one connection from `peer`, accepted on `listener`, until it ends.
pub async fn handle_connection(state: Arc<AppState>, stream: TcpStream, mut peer: SocketAddr, listener: Listener) {
    // On Linux the accepted socket inherits TCP_NODELAY from the listener.
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let http = &state.config.http_server;
    let mut prefix = Vec::new();
    if state.edge.proxy_protocol && state.edge.trusts(peer.ip()) {
        match tokio::time::timeout(http.request_head_timeout, gate::read_proxy_header(&stream)).await {
            Ok(Ok((source, rest))) => {
                peer = source.unwrap_or(peer);
                prefix = rest;
            }
            Ok(Err(problem)) => {
                metrics::counter!("herald_proxy_protocol_errors_total").increment(1);
                tracing::debug!(%peer, %problem, "closing a connection without a valid PROXY protocol header");
                return;
            }
            Err(_) => return timed_out(Phase::Head),
        }
    }
    let head =
        match tokio::time::timeout(http.request_head_timeout, read_head(&stream, prefix, http.max_request_head_size))
            .await
        {
            Ok(Ok(head)) => head,
            Ok(Err(HeadError::TooLarge)) => return transport::reject(stream, 431, "request head too large", "").await,
            Ok(Err(HeadError::Closed)) => return,
            Err(_) => return timed_out(Phase::Head),
        };
    dispatch(&state, stream, head, peer, listener).await;
}

/// Routes and serves, in a task of its own, a request that followed long polls on a connection
/// served on the raw socket (`transport::long_poll::raw`). The future is boxed as a trait
/// object: the long-poll task starts this one, and this one may start a long-poll task.
pub(crate) fn spawn_dispatch(
    state: Arc<AppState>,
    stream: TcpStream,
    head: Vec<u8>,
    peer: SocketAddr,
    listener: Listener,
) {
    let next: Pin<Box<dyn Future<Output = ()> + Send>> =
        Box::pin(async move { dispatch(&state, stream, head, peer, listener).await });
    tokio::spawn(next);
}

/// Routes and serves a request read from the raw socket: the transport that takes the socket,
/// or hyper. `peer` is the connection's address (before trusted-proxy headers).
async fn dispatch(state: &Arc<AppState>, stream: TcpStream, head: Vec<u8>, mut peer: SocketAddr, listener: Listener) {
    if crate::h2::is_preface(&head) && crate::tls_options::peer_now().h2 {
        return Box::pin(crate::h2::serve(state.clone(), stream, head, peer, listener)).await;
    }
    let first = first_route(&state.config, &head).map(|r| on_listener(&state.config, r, listener));
    // Requests hyper serves are admitted one by one in `http_request`, long polls in
    // `long_poll::raw`; here only the routes whose transport takes the socket.
    if let Some(route) = first.as_ref().filter(|r| crate::edge::class(r) == crate::edge::Class::ClientConnect) {
        match gate::admit_head(state, route, peer, &head) {
            Ok(client) => peer = client,
            Err((status, message)) => {
                return transport::reject(stream, status, message, crate::edge::retry_after(status)).await;
            }
        }
    }
    let endpoint = match first {
        Some(Route::WebSocket) => Some(ws::Endpoint::Client),
        Some(Route::WebSocketEcho) => Some(ws::Endpoint::Echo),
        Some(Route::UniWebSocket) => Some(ws::Endpoint::Uni),
        Some(Route::Stream(kind)) => return Box::pin(stream::serve(state.clone(), stream, head, peer, kind)).await,
        // A task of its own, so that a held poll does not keep this (larger) future.
        Some(Route::LongPoll) => {
            return long_poll::raw::spawn(state.clone(), stream, long_poll::raw::Pending::Head(head), peer, listener);
        }
        None => {
            if let Some((status, message)) = malformed_head(&head) {
                return transport::reject(stream, status, &message, "").await;
            }
            None
        }
        _ => None,
    };
    if let Some(endpoint) = endpoint {
        ws::upgrade(state.clone(), stream, head, peer, endpoint).await;
    } else {
        // Boxed: hyper's connection state is large, and the task's future is as large as its
        // largest branch; the WebSocket path should not pay for copying it around.
        Box::pin(serve_http(state.clone(), stream, Bytes::from(head), peer, listener)).await
    }
}

/// Waits for the next request on a keep-alive connection served on the raw socket:
/// `http_server.idle_timeout` for its first byte, then `request_head_timeout` for the head.
/// `rest` holds bytes already read past the previous request. A timeout is counted and ends
/// the connection like a close.
pub(crate) async fn next_head(state: &AppState, stream: &TcpStream, rest: Vec<u8>) -> Result<Vec<u8>, HeadError> {
    let http = &state.config.http_server;
    if rest.is_empty() && tokio::time::timeout(http.idle_timeout, stream.readable()).await.is_err() {
        timed_out(Phase::Idle);
        return Err(HeadError::Closed);
    }
    match tokio::time::timeout(http.request_head_timeout, read_head(stream, rest, http.max_request_head_size)).await {
        Ok(result) => result,
        Err(_) => {
            timed_out(Phase::Head);
            Err(HeadError::Closed)
        }
    }
}

/// The most header fields a request head may have: hyper's default, which answers later
/// requests on a keep-alive connection, so the first request has the same limit.
pub const MAX_HEADERS: usize = 100;

/// Routes a connection's first request from its raw head, honouring an upgrade; `None` when
/// the head does not parse ([`malformed_head`] says why).
pub fn first_route<'h>(config: &Config, head: &'h [u8]) -> Option<Route<'h>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.and_then(|p| p.split('?').next()).unwrap_or("");
            let upgrade = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"));
            Some(route(config, path, upgrade))
        }
        _ => None,
    }
}

/// The answer to a first head that does not parse: 431 for too many header fields, 400 naming
/// the parse error otherwise (written as JSON by Herald: hyper's own answers have no body).
/// `None` when the head is incomplete to the parser; hyper then decides.
pub fn malformed_head(head: &[u8]) -> Option<(u16, String)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(head) {
        Ok(_) => None,
        Err(httparse::Error::TooManyHeaders) => {
            Some((431, format!("too many header fields (the limit is {MAX_HEADERS})")))
        }
        Err(e) => Some((400, format!("malformed request head: {e}"))),
    }
}

/// Reads a request head: returns the bytes read (head and possibly more).
async fn read_head(stream: &TcpStream, mut prefix: Vec<u8>, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut head = HeadBuffer::new(max);
    // Bytes that came after a PROXY protocol header.
    while !prefix.is_empty() {
        let room = head.spare().ok_or(HeadError::TooLarge)?;
        let n = room.len().min(prefix.len());
        room[..n].copy_from_slice(&prefix[..n]);
        prefix.drain(..n);
        match head.filled(n) {
            HeadScan::Complete => {
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(&prefix);
                return Ok(bytes);
            }
            HeadScan::TooLarge => return Err(HeadError::TooLarge),
            HeadScan::Partial => {}
        }
    }
    let mut first = true;
    loop {
        // The request usually arrives with the connection: try reading before waiting for a
        // readiness event from the reactor.
        if !std::mem::take(&mut first) {
            stream.readable().await.map_err(|_| HeadError::Closed)?;
        }
        let n = match stream.try_read(head.spare().ok_or(HeadError::TooLarge)?) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => return Err(HeadError::Closed),
        };
        match head.filled(n) {
            HeadScan::Complete => return Ok(head.into_bytes()),
            HeadScan::TooLarge => return Err(HeadError::TooLarge),
            HeadScan::Partial => {}
        }
    }
}

pub(crate) enum HeadError {
    Closed,
    TooLarge,
}

/// The bytes of a request head as they are read, at most `max` of them: the I/O-free part of
/// reading a head (fuzzed by `fuzz/fuzz_targets/http_head.rs`).
pub struct HeadBuffer {
    buf: Vec<u8>,
    /// Bytes already searched for the end of the head.
    checked: usize,
    /// Leading CR and LF bytes: empty lines before the request line, which parsers skip (RFC
    /// 9112 §2.2), so a blank line among them does not end the head.
    lead: usize,
    max: usize,
}

/// Where a head being read stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadScan {
    /// The bytes so far hold a blank line: the head is complete.
    Complete,
    /// Read more.
    Partial,
    /// `max` bytes without the end of the head.
    TooLarge,
}

impl HeadBuffer {
    pub fn new(max: usize) -> Self {
        HeadBuffer { buf: Vec::with_capacity(1024.min(max)), checked: 0, lead: 0, max }
    }

    /// Room for the next read, grown (up to `max` bytes in all) when full; `None` when `max`
    /// bytes are already held. Call [`HeadBuffer::filled`] after every read into it.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        // Every byte before the room has been searched already (`filled`).
        let len = self.checked;
        if len >= self.max {
            return None;
        }
        if len == self.buf.capacity() {
            self.buf.reserve_exact((len * 2).min(self.max) - len);
        }
        // An allocation can be larger than asked for: the limit is `max`, not the capacity.
        let end = self.buf.capacity().min(self.max);
        self.buf.resize(end, 0);
        Some(&mut self.buf[len..])
    }

    /// `n` bytes were read into the room [`HeadBuffer::spare`] gave.
    pub fn filled(&mut self, n: usize) -> HeadScan {
        self.buf.truncate(self.checked + n);
        if self.lead == self.checked {
            self.lead += self.buf[self.checked..].iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
        }
        let from = self.checked.saturating_sub(3).max(self.lead);
        if self.buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return HeadScan::Complete;
        }
        self.checked = self.buf.len();
        if self.buf.len() >= self.max { HeadScan::TooLarge } else { HeadScan::Partial }
    }

    /// The bytes read: the head and possibly more.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

async fn serve_http(state: Arc<AppState>, stream: TcpStream, head: Bytes, peer: SocketAddr, listener: Listener) {
    let http = &state.config.http_server;
    let busy = Arc::new(AtomicUsize::new(0));
    let deadline = Deadline {
        busy: busy.clone(),
        idle_timeout: http.idle_timeout,
        head_timeout: http.request_head_timeout,
        phase: Phase::Busy,
        sleep: None,
    };
    let max_head = http.max_request_head_size;
    let handoff = Arc::new(stream::handoff::Handoff::default());
    // hyper's own head timer starts when the connection goes idle: set to both of ours together
    // it never fires first, but with it hyper reads as soon as it is idle, which starts ours.
    let backstop = http.idle_timeout + http.request_head_timeout;
    let io = TokioIo::new(Rewind { prefix: head, inner: stream, deadline, handoff: handoff.clone() });
    let service_state = state.clone();
    let service_handoff = handoff.clone();
    let service = hyper::service::service_fn(move |req| {
        let answering = Answering::new(&busy);
        let state = service_state.clone();
        let handoff = service_handoff.clone();
        async move {
            let response = http_request(state, req, peer, listener, &handoff).await?;
            Ok::<_, Infallible>(response.map(|body| Answer { body, _answering: answering }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .max_header_size(max_head)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(backstop)
        .serve_connection(io, service)
        .without_shutdown();
    let parts = match conn.await {
        Ok(parts) => parts,
        Err(e) => return tracing::debug!(error = %e, "http connection ended with an error"),
    };
    let Some(taken) = handoff.take() else { return };
    // Only the socket and the bytes hyper read past the request are kept: hyper's buffers go.
    let socket = parts.io.into_inner().inner;
    let rest = parts.read_buf.to_vec();
    match taken {
        Taken::Stream { kind, head, data } => stream::handoff::serve(state, socket, kind, head, data, peer).await,
        Taken::LongPoll(handed) => {
            long_poll::raw::spawn(state, socket, long_poll::raw::Pending::Handed(handed, rest), peer, listener);
        }
    }
}

/// Marks a request as being answered, from its complete head until hyper has taken the last
/// byte of its response (the guard travels in the response body): no read deadline applies
/// meanwhile, so a slow API call or a large answer is never cut.
struct Answering(Arc<AtomicUsize>);

impl Answering {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        Answering(busy.clone())
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`Answering`] until hyper drops it.
struct Answer {
    body: Reply,
    _answering: Answering,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    /// A streamed answer (gateway routes) can fail half-way: hyper then closes the connection.
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a keep-alive connection is between requests.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    /// A request is being answered, or nothing was read since the last one was.
    Busy,
    /// Answered; waiting for the first byte of the next request (`idle_timeout`).
    Idle,
    /// Part of the next head arrived (`request_head_timeout` from its first byte).
    Head,
}

/// The read deadlines of a keep-alive connection, applied in [`Rewind::poll_read`].
///
/// hyper's own `header_read_timeout` starts when the connection goes idle, so one setting would
/// bound the idle wait and the head together; Herald keeps the two apart like Go's
/// `IdleTimeout` and `ReadHeaderTimeout` (docs/architecture.md, "Keep-alive deadlines").
struct Deadline {
    /// Requests being answered ([`Answering`]).
    busy: Arc<AtomicUsize>,
    idle_timeout: Duration,
    head_timeout: Duration,
    phase: Phase,
    /// Allocated at the first wait, then reset.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Called after each read of the socket: `got` bytes arrived, or it is `pending`. An error
    /// means the deadline of the current phase passed.
    fn after_read(&mut self, cx: &mut Context<'_>, got: bool, pending: bool) -> Option<io::Error> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            self.phase = Phase::Busy;
            return None;
        }
        if got && self.phase != Phase::Head {
            self.enter(Phase::Head, self.head_timeout);
        } else if pending && self.phase == Phase::Busy {
            self.enter(Phase::Idle, self.idle_timeout);
        }
        if !pending {
            return None;
        }
        let sleep = self.sleep.as_mut()?;
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        timed_out(self.phase);
        let what = if self.phase == Phase::Head { "request head timeout" } else { "idle timeout" };
        Some(io::Error::new(io::ErrorKind::TimedOut, what))
    }

    fn enter(&mut self, phase: Phase, timeout: Duration) {
        self.phase = phase;
        let at = Instant::now() + timeout;
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }
}

/// Counts a request head that did not arrive in time (TLS connections read theirs in
/// `crate::tls_entry`).
pub(crate) fn head_timed_out() {
    timed_out(Phase::Head)
}

/// Counts a connection closed by a deadline.
fn timed_out(phase: Phase) {
    let kind = if phase == Phase::Idle { "idle" } else { "request_head" };
    metrics::counter!("herald_http_timeouts_total", "kind" => kind).increment(1);
}

/// Answers one request hyper read. Upgrades are not honoured here: hyper owns the connection.
pub(crate) async fn http_request(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
    handoff: &stream::handoff::Handoff,
) -> Result<Response<Reply>, Infallible> {
    // One snapshot of the gateway routes from matching to forwarding (a reload may swap them).
    // A guard, not an `Arc` clone: every hyper request (the API's too) pays this.
    let gateway = state.gateway.load();
    let routed = on_listener(&state.config, route_live(&state.config, &gateway, req.uri().path(), false), listener);
    let headers = req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let peer = match gate::admit(&state, &routed, peer, headers) {
        Ok(client) => client,
        Err((status, message)) => {
            let mut response =
                api::transport_error(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), message);
            if !crate::edge::retry_after(status).is_empty() {
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            }
            return Ok(response.map(Reply::Full));
        }
    };
    if let Route::Gateway(index) = routed {
        return Ok(crate::edge::gateway::forward::handle(&state, &gateway, index, req, peer).await);
    }
    if let Route::Api(_) = routed
        && let Some(why) = crate::tls_options::api_refusal(&state.config.http_server.tls)
    {
        metrics::counter!("herald_api_client_certificate_refusals_total").increment(1);
        return Ok(api::transport_error(StatusCode::FORBIDDEN, why).map(Reply::Full));
    }
    let response = match routed {
        Route::Health => api::health(&state),
        Route::Metrics => api::metrics(&state),
        Route::Api(name) => {
            let method = api::methods::find(name);
            api::handle(&state, method, req, peer).await
        }
        Route::Stream(kind) => stream::handoff::answer(&state, req, kind, handoff).await,
        Route::Emulation => stream::emulation::handle(&state, req).await,
        Route::LongPoll => long_poll::handle(&state, req, peer, handoff).await,
        Route::WebSocket | Route::WebSocketEcho | Route::WebSocketNotFirst | Route::UniWebSocket => {
            api::transport_error(
                StatusCode::BAD_REQUEST,
                "expected a WebSocket upgrade (it must be the first request on its connection)",
            )
        }
        Route::Admin(rest) => {
            let rest = rest.to_owned();
            crate::admin::handle(&state, req, peer, &rest).await
        }
        Route::NotFound | Route::Gateway(_) => api::transport_error(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(response.map(Reply::Full))
}

/// A stream that first replays bytes already read from it, and applies the keep-alive read
/// deadlines.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
    deadline: Deadline,
    handoff: Arc<stream::handoff::Handoff>,
}

/// Serves a read from `prefix`, the bytes read ahead of a handed-over connection, while any are
/// left; false once it is empty (read the socket then).
pub(crate) fn replay_prefix(prefix: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let n = prefix.len().min(buf.remaining());
    buf.put_slice(&prefix[..n]);
    prefix.advance(n);
    true
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if replay_prefix(&mut self.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() > before;
        match self.deadline.after_read(cx, got, polled.is_pending()) {
            Some(expired) => Poll::Ready(Err(expired)),
            None => polled,
        }
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.handoff.discarding() {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.handoff.discarding() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a [`HeadBuffer`] in reads of at most `chunk` bytes.
    fn scan(input: &[u8], max: usize, chunk: usize) -> (HeadScan, Vec<u8>) {
        let mut head = HeadBuffer::new(max);
        let mut rest = input;
        loop {
            let Some(room) = head.spare() else { return (HeadScan::TooLarge, head.into_bytes()) };
            let n = room.len().min(chunk).min(rest.len());
            room[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            match head.filled(n) {
                HeadScan::Partial if n == 0 => return (HeadScan::Partial, head.into_bytes()),
                HeadScan::Partial => {}
                done => return (done, head.into_bytes()),
            }
        }
    }

    #[test]
    fn a_head_ends_at_a_blank_line_whatever_the_reads() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody";
        for chunk in [1, 2, 3, 7, 4096] {
            let (outcome, bytes) = scan(request, 64, chunk);
            assert_eq!(outcome, HeadScan::Complete, "reads of {chunk}");
            assert!(request.starts_with(&bytes) && bytes.len() >= request.len() - 4, "reads of {chunk}: {bytes:?}");
        }
        assert_eq!(scan(request, 20, 4096).0, HeadScan::TooLarge);
        assert_eq!(scan(b"GET / HTTP/1.1\r\n", 64, 5).0, HeadScan::Partial);
    }

    /// Regression (found while writing the `http_head` fuzz target's size invariant): growing
    /// the buffer with `reserve` doubled it past a `max` that is not a power of two, so a head
    /// of up to twice `http_server.max_request_head_size` was read.
    #[test]
    fn no_more_than_max_bytes_are_read() {
        for max in [1, 1000, 1025, 1500, 3000, 4096] {
            let (outcome, bytes) = scan(&vec![b'a'; 10_000], max, 10_000);
            assert_eq!((outcome, bytes.len()), (HeadScan::TooLarge, max));
            let mut long = vec![b'a'; max + 100];
            long.extend_from_slice(b"\r\n\r\n");
            assert_eq!(scan(&long, max, 10_000).0, HeadScan::TooLarge, "max {max}");
        }
    }

    /// Regression (found by the `http_head` fuzz target): a blank line before the request line
    /// ended the head, so the route of an upgrade sent after empty lines depended on whether
    /// they arrived in the same read as the request (WebSocket) or before it (hyper, 400).
    #[test]
    fn empty_lines_before_the_request_line_do_not_end_the_head() {
        let config = Config::default();
        let ws = &config.websocket.handler_prefix;
        let request = format!("\r\n\r\n\n\r\nGET {ws} HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        for chunk in [1, 2, 4, 5, 4096] {
            let (outcome, bytes) = scan(request.as_bytes(), 4096, chunk);
            assert_eq!((outcome, bytes.len()), (HeadScan::Complete, request.len()), "reads of {chunk}");
            assert_eq!(first_route(&config, &bytes), Some(Route::WebSocket));
        }
        assert_eq!(scan(&b"\r\n".repeat(100), 64, 7).0, HeadScan::TooLarge);
    }

    #[test]
    fn the_first_request_is_routed_with_its_upgrade() {
        let config = Config::default();
        let ws = &config.websocket.handler_prefix;
        let upgrade = format!("GET {ws}?x=1 HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(first_route(&config, upgrade.as_bytes()), Some(Route::WebSocket));
        let plain = format!("GET {ws} HTTP/1.1\r\n\r\n");
        assert_eq!(first_route(&config, plain.as_bytes()), Some(Route::WebSocketNotFirst));
        assert_eq!(first_route(&config, b"POST /api/info HTTP/1.1\r\n\r\n"), Some(Route::Api("info")));
        assert_eq!(first_route(&config, b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(first_route(&config, b"\xff\r\n\r\n"), None);
    }

    /// An upgrade with many (but not too many) header fields is still an upgrade; one field
    /// over the limit, or bytes that are not HTTP, get an answer that says so.
    #[test]
    fn header_field_limit_and_malformed_heads() {
        let config = Config::default();
        let ws = &config.websocket.handler_prefix;
        let head = |fields: usize| {
            let extra: String = (0..fields).map(|i| format!("X-{i}: v\r\n")).collect();
            format!("GET {ws} HTTP/1.1\r\nUpgrade: websocket\r\n{extra}\r\n").into_bytes()
        };
        let at_limit = head(MAX_HEADERS - 1);
        assert_eq!(first_route(&config, &at_limit), Some(Route::WebSocket));
        assert_eq!(malformed_head(&at_limit), None);
        let over = head(MAX_HEADERS);
        assert_eq!(first_route(&config, &over), None);
        assert_eq!(malformed_head(&over), Some((431, format!("too many header fields (the limit is {MAX_HEADERS})"))));
        assert_eq!(malformed_head(b"\x00garbage\r\n\r\n"), Some((400, "malformed request head: invalid token".into())));
        assert_eq!(malformed_head(b"GET / HTTP/1.1\r\n"), None, "incomplete: hyper decides");
    }
}
