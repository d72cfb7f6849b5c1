//! HTTP long-polling (`uni_long_poll`): a unidirectional transport where the client asks for
//! its pushes with one plain HTTP request after another, and the polls of one client form one
//! logical session (presence, user connection limit, subscriptions) that lives between them.
//!
//! - Connect: `POST <prefix>` with a connect request as the body (or `GET <prefix>?cf_connect=`).
//!   The session is created, the connect runs, and the answer comes at once: a batch holding the
//!   connect push (whose `session` names the session) and whatever followed it.
//! - Poll: `GET <prefix>?session=<id>&seq=<n>`, `n` the number of items received so far in
//!   this session (the connect push is item 0). Items before `n` are dropped; held items from
//!   `n` on are answered at once; otherwise the poll is held up to `uni_long_poll.poll_timeout`
//!   and answers an empty batch. An answer that never arrived is sent again by the next poll
//!   (same `seq`), so nothing is lost or duplicated across polls.
//! - A batch is newline-delimited JSON pushes (the `uni_http_stream` items), with `Herald-Session`
//!   and `Herald-Seq` (the `seq` of the next poll) headers.
//! - A session without a poll for `uni_long_poll.session_ttl` is closed; an unknown or ended
//!   session answers 404 (connect again, with `recover` positions).
//!
//! [`link::PollLink`] holds the unacknowledged items (bounded by `client.queue_max_size`). A
//! session has no task of its own: between controls it is parked in its link ([`ParkedSession`])
//! and a control or the close spawns a short task on the session's worker ([`run`]). One
//! sweeper task per node answers polls past their timeout and expires sessions, so neither a
//! session nor a held poll holds a timer. Requests are read and answered on the raw socket
//! ([`raw`]), and a held poll is parked in its link with its socket, without a task either.

pub mod link;
pub(crate) mod raw;
pub mod request;

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use herald_hub::wake::MAX_WORKERS;
use herald_hub::{ClientLink, ConnectionInfo, Session, Transport};
use herald_proto::codes::{DISCONNECT_CONNECTION_CLOSED, DISCONNECT_WRITE_ERROR};
use herald_proto::envelope;
use herald_proto::{Disconnect, DisconnectReason, Push, Reply};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::runtime::Handle;

use crate::api::{Body, transport_error};
use crate::state::AppState;
use crate::transport::origin_allowed;
use crate::transport::stream::handoff::{Handoff, Taken};
use crate::transport::stream::request::{HttpMethod, StreamHead};
use crate::transport::ws::conn::{handle_commands, handle_controls};
use link::{Batch, ENVELOPE, PollLink};
use request::PollRequest;

const METHODS: &str = "GET, POST, OPTIONS";

/// Live long-poll sessions of this node, by session id.
pub struct Polls {
    map: Mutex<HashMap<Box<str>, Arc<PollLink>>>,
    sweeper: AtomicBool,
    /// The runtime of each worker that parked a poll or ran a connect (the last slot for
    /// threads that are not workers), so that work for a parked poll or a session is spawned
    /// there from any thread: one handle per worker, not one per session.
    runtimes: Box<[OnceLock<Handle>]>,
}

impl Default for Polls {
    fn default() -> Self {
        Polls {
            map: Mutex::default(),
            sweeper: AtomicBool::new(false),
            runtimes: (0..=MAX_WORKERS).map(|_| OnceLock::new()).collect(),
        }
    }
}

impl Polls {
    fn runtime_slot(&self, worker: u16) -> &OnceLock<Handle> {
        &self.runtimes[usize::from(worker).min(MAX_WORKERS)]
    }

    /// Remembers the calling thread's runtime as worker `worker`'s (call on that worker).
    pub(crate) fn note_runtime(&self, worker: u16) {
        self.runtime_slot(worker).get_or_init(Handle::current);
    }

    /// Runs `task` on worker `worker`'s runtime (noted before by [`Polls::note_runtime`]); it is
    /// dropped when that runtime is gone.
    pub(crate) fn spawn(&self, worker: u16, task: impl Future<Output = ()> + Send + 'static) {
        if let Some(handle) = self.runtime_slot(worker).get() {
            drop(handle.spawn(task));
        }
    }

    fn insert(&self, link: &Arc<PollLink>) {
        self.map.lock().expect("polls").insert(link.session.clone(), link.clone());
    }

    fn find(&self, session: &str) -> Option<Arc<PollLink>> {
        self.map.lock().expect("polls").get(session).cloned()
    }

    fn remove(&self, session: &str) {
        self.map.lock().expect("polls").remove(session);
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("polls").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn counted(result: &'static str, response: Response<Body>) -> Response<Body> {
    metrics::counter!("herald_long_poll_requests_total", "result" => result).increment(1);
    response
}

/// Long-poll answers carry the session in headers a page must be allowed to read.
fn with_cors(response: Response<Body>, origin: Option<&str>) -> Response<Body> {
    crate::transport::stream::emulation::with_cors(response, origin, Some("Herald-Session, Herald-Seq"))
}

/// Answers a request on `uni_long_poll.handler_prefix` that hyper read (one that came after
/// other requests on its connection). A poll is handed over to the raw socket ([`raw`]), where
/// it is held without hyper's per-connection state; the rest is answered here.
pub(crate) async fn handle(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    handoff: &Handoff,
) -> Response<Body> {
    let head = match StreamHead::new(
        req.method().as_str(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    ) {
        Ok(h) => h,
        Err(message) => return counted("rejected", transport_error(StatusCode::BAD_REQUEST, message)),
    };
    if let Some(response) = precheck(state, &head) {
        return response;
    }
    let keep_alive = raw::keep_alive(
        if req.version() == http::Version::HTTP_10 { 0 } else { 1 },
        &req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(|t| t.trim_ascii().to_ascii_lowercase())
            .collect::<Vec<_>>(),
    );
    let limit = state.config.uni_long_poll.max_request_body_size;
    if head.method == HttpMethod::Post && head.chunked {
        // Refused on the raw socket too (`raw`): one rule whichever way the request came.
        let response = transport_error(StatusCode::LENGTH_REQUIRED, raw::CHUNKED);
        return with_cors(counted("rejected", response), head.origin.as_deref());
    }
    let body = if head.method == HttpMethod::Post {
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let response = transport_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                return with_cors(counted("rejected", response), head.origin.as_deref());
            }
            Err(_) => {
                let response = transport_error(StatusCode::BAD_REQUEST, "request body not received");
                return with_cors(counted("rejected", response), head.origin.as_deref());
            }
        }
    } else {
        Bytes::new()
    };
    if head.query_param("session").is_some() {
        return handoff.hand_over(Taken::LongPoll(Box::new(raw::Handed { head, body, keep_alive, client: peer })));
    }
    let origin = head.origin.clone();
    with_cors(answer(state, &head, &body, peer).await, origin.as_deref())
}

/// The answers given before the body is read, CORS included: a refused origin (403) and the
/// preflight (204).
fn precheck(state: &AppState, head: &StreamHead) -> Option<Response<Body>> {
    let origin = head.origin.as_deref();
    if !origin_allowed(origin, head.host.as_deref(), &state.node.config().client.allowed_origins) {
        let response = counted("rejected", transport_error(StatusCode::FORBIDDEN, "origin not allowed"));
        return Some(with_cors(response, origin));
    }
    if head.method != HttpMethod::Options {
        return None;
    }
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("300"));
    if let Some(v) = head.request_headers.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    Some(with_cors(counted("preflight", r), origin))
}

/// Answers a request that passed [`precheck`], whose body (POST) is `body`: a connect, or a
/// poll (held until items arrive or `uni_long_poll.poll_timeout`). Without CORS headers.
async fn answer(state: &Arc<AppState>, head: &StreamHead, body: &[u8], peer: SocketAddr) -> Response<Body> {
    let limit = state.config.uni_long_poll.max_request_body_size;
    answer_parsed(state, request::parse(head, body, limit), peer).await
}

/// [`answer`] for a request already parsed (the raw loop parses first, so that a held poll
/// keeps neither the head nor the body).
async fn answer_parsed(
    state: &Arc<AppState>,
    parsed: Result<PollRequest, crate::transport::stream::request::Refused>,
    peer: SocketAddr,
) -> Response<Body> {
    match parsed {
        Err(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = transport_error(status, &r.message);
            if r.status == 405 {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(METHODS));
            }
            counted("rejected", resp)
        }
        Ok(PollRequest::Connect(cmds)) => {
            if state.shutting_down.load(Ordering::Relaxed) {
                return counted("rejected", transport_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
            }
            Box::pin(connect(state, cmds, peer)).await
        }
        Ok(PollRequest::Poll { session, seq }) => poll(state, &session, seq).await,
    }
}

/// Creates a session and runs its connect; answers at once with what was queued.
async fn connect(state: &Arc<AppState>, cmds: Vec<herald_proto::Command>, peer: SocketAddr) -> Response<Body> {
    let link = Arc::new(PollLink::new(state.ws.queue_max));
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    let mut session = Box::new(Session::new(dyn_link, ConnectionInfo::new(peer, Transport::UniLongPoll)));
    Box::pin(handle_commands(&mut session, &state.node, cmds)).await;
    if !session.is_connected() {
        // A refused connect: its disconnect push (queued by the session, or made here from the
        // close it asked for) is the whole answer, and there is no session to poll.
        let reason = poll_fn(|cx| link.poll_task(cx)).await.close;
        Box::pin(session.close(&state.node)).await;
        link.end(reason.as_ref().and_then(disconnect_item));
        let batch = link.take_now();
        return counted("refused", batch_response(None, batch));
    }
    state.connections.opened(Transport::UniLongPoll, link.worker);
    metrics::counter!("herald_stream_opened_total", "transport" => "uni_long_poll").increment(1);
    state.polls.insert(&link);
    start_sweeper(state);
    state.polls.note_runtime(link.worker);
    // Controls that came during the connect run now, in a task; otherwise the session parks.
    tokio::spawn(run(link.clone(), state.clone(), session));
    let Ok(_) = link.begin_poll(0, Duration::ZERO) else { unreachable!("seq 0 is never ahead") };
    let batch = link.take_now();
    link.end_poll();
    counted("connected", batch_response(Some(&link.session), batch))
}

/// One poll of an existing session, answered when items arrive or at the timeout.
async fn poll(state: &AppState, session: &str, seq: u64) -> Response<Body> {
    match begin_poll(state, session, seq) {
        Ok(held) => held.wait(state).await,
        Err(response) => *response,
    }
}

/// Starts a poll of `session`: the poll to wait on, or the answer when there is none to hold
/// (unknown session, `seq` ahead of what was sent). Synchronous, so that a held poll's future
/// keeps only [`HeldPoll`].
fn begin_poll(state: &AppState, session: &str, seq: u64) -> Result<HeldPoll, Box<Response<Body>>> {
    let Some(link) = state.polls.find(session) else {
        return Err(Box::new(counted(
            "unknown_session",
            transport_error(StatusCode::NOT_FOUND, "unknown session (ended or expired): connect again"),
        )));
    };
    match link.begin_poll(seq, state.config.uni_long_poll.poll_timeout) {
        Ok(ticket) => Ok(HeldPoll { link, ticket }),
        Err(next) => {
            let message = format!("seq {seq} is beyond the items sent (next is {next})");
            Err(Box::new(counted("rejected", transport_error(StatusCode::BAD_REQUEST, &message))))
        }
    }
}

/// A poll that began: what a client holding a poll costs besides its socket.
pub(crate) struct HeldPoll {
    link: Arc<PollLink>,
    ticket: u64,
}

impl HeldPoll {
    /// Waits for items, the session's end, a newer poll or `uni_long_poll.poll_timeout` (seen
    /// by the sweeper), and answers (without CORS headers).
    pub(crate) async fn wait(self, state: &AppState) -> Response<Body> {
        poll_fn(|cx| self.link.poll_items(cx, self.ticket)).await;
        self.answer(state)
    }

    /// Answers with what the session holds now (without CORS headers).
    pub(crate) fn answer(self, state: &AppState) -> Response<Body> {
        let batch = self.link.take_now();
        let session = &self.link.session;
        if batch.ended && batch.items.is_empty() {
            state.polls.remove(session);
            return counted("unknown_session", transport_error(StatusCode::NOT_FOUND, "session ended: connect again"));
        }
        let result = if batch.items.is_empty() { "empty" } else { "items" };
        counted(result, batch_response(Some(session), batch))
    }
}

/// Ends the poll however its wait ends, answered or dropped (the client or the server went
/// away).
impl Drop for HeldPoll {
    fn drop(&mut self) {
        self.link.end_poll();
    }
}

fn batch_response(session: Option<&str>, batch: Batch) -> Response<Body> {
    let next = batch.from + batch.items.len() as u64;
    let mut body = BytesMut::with_capacity(batch.items.iter().map(Bytes::len).sum());
    for item in &batch.items {
        body.extend_from_slice(item);
    }
    crate::transport::bytes_out(body.len());
    let mut r = Response::new(Full::new(body.freeze()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"),
    );
    if let Some(s) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert("herald-session", s);
    }
    h.insert("herald-seq", HeaderValue::from(next));
    r
}

/// The disconnect push of `reason` (none for a silent close).
fn disconnect_item(reason: &DisconnectReason) -> Option<Bytes> {
    if reason.code == DISCONNECT_CONNECTION_CLOSED.code || reason.code == DISCONNECT_WRITE_ERROR.code {
        return None;
    }
    let push = Push {
        disconnect: Some(Disconnect { code: reason.code, reason: reason.reason.to_string(), reconnect: false }),
        ..Default::default()
    };
    envelope::encode(ENVELOPE, &Reply::push(push))
}

/// A session between its controls: parked in its link's task waker, without a task. Woken by a
/// control or a close, it spawns [`run`] on the session's worker.
struct ParkedSession {
    link: Arc<PollLink>,
    state: Weak<AppState>,
    session: Mutex<Option<Box<Session>>>,
}

impl ParkedSession {
    fn take(&self) -> Option<Box<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Wake for ParkedSession {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(session) = self.take() else { return };
        let Some(state) = self.state.upgrade() else { return };
        state.polls.spawn(self.link.worker, run(self.link.clone(), state.clone(), session));
    }
}

/// Runs the session's controls (server-side subscribe, disconnect, refresh) one batch after
/// another, in order; parks the session when none are left, so a session costs no task between
/// them. At the close, queues its disconnect push as the last item: once, since the link hands
/// the close out once and only the holder of the session runs it.
async fn run(link: Arc<PollLink>, state: Arc<AppState>, mut session: Box<Session>) {
    let reason = loop {
        let parked = Arc::new(ParkedSession {
            link: link.clone(),
            state: Arc::downgrade(&state),
            session: Mutex::new(Some(session)),
        });
        let wake = match link.park_task(Waker::from(parked.clone())) {
            Ok(()) => return,
            Err(wake) => wake,
        };
        session = parked.take().expect("a session not parked is not woken");
        if !wake.controls.is_empty() {
            Box::pin(handle_controls(&mut session, &state.node, wake.controls)).await;
        }
        if let Some(reason) = wake.close {
            break reason;
        }
    };
    herald_hub::metrics::by_code("herald_client_disconnects_total", reason.code);
    link.timers().set_closed();
    Box::pin(session.close_with(&state.node, reason.clone())).await;
    drop(session);
    link.end(disconnect_item(&reason));
    state.connections.closed(Transport::UniLongPoll, link.worker);
}

/// How often the sweeper runs: a quarter of the shorter of the session TTL and the poll
/// timeout, between 100 ms and 1 s; a poll is answered at most that late after its timeout.
fn sweep_every(ttl: Duration, poll_timeout: Duration) -> Duration {
    (ttl.min(poll_timeout) / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Starts the node's sweeper once: it answers polls past `uni_long_poll.poll_timeout`, closes
/// sessions without a poll for `uni_long_poll.session_ttl` and forgets ended ones after the
/// same time.
fn start_sweeper(state: &Arc<AppState>) {
    if state.polls.sweeper.swap(true, Ordering::AcqRel) {
        return;
    }
    let weak: Weak<AppState> = Arc::downgrade(state);
    let ttl = state.config.uni_long_poll.session_ttl;
    let every = sweep_every(ttl, state.config.uni_long_poll.poll_timeout);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { return };
            let links: Vec<Arc<PollLink>> = state.polls.map.lock().expect("polls").values().cloned().collect();
            let now = Instant::now();
            // Polls released on other workers are woken in one hand-over per worker.
            let _batch = herald_hub::wake::Batch::open();
            for link in links {
                link.expire(now);
                let Some(since) = link.idle_since() else { continue };
                if since.elapsed() < ttl {
                    continue;
                }
                if link.is_ended() {
                    state.polls.remove(&link.session);
                } else {
                    metrics::counter!("herald_long_poll_sessions_expired_total").increment(1);
                    link.close(DISCONNECT_CONNECTION_CLOSED);
                }
            }
        }
    });
}
