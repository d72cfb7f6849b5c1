//! The WebSocket transport: handshake, the per-connection task and the outbound queue.
//!
//! Idle cost is the design constraint (DESIGN.md, "Idle costs nothing"):
//! - no read buffer per connection: the task waits for readiness, then reads into a per-thread
//!   scratch buffer; only an incomplete frame is copied into a small per-connection buffer,
//!   which is freed once the frame completes;
//! - no per-connection channel or timer: frames are queued in a `VecDeque<Bytes>` inside the
//!   shared [`WsLink`], bounded in bytes (`client.queue_max_size`, slow clients get 3008), and
//!   pings and timeouts come from the node's shared timer wheel;
//! - one small task: command handling is boxed per command so its state is not part of the
//!   long-lived future.
//!
//! Pushes are pre-encoded frames shared by every subscriber; the task writes whatever is queued
//! with one vectored write.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use herald_hub::link::ping_frame;
use herald_hub::{ClientLink, ConnectionInfo, Control, Flow, LinkTimers, Node, Session};
use herald_proto::codes::{DISCONNECT_BAD_REQUEST, DISCONNECT_CONNECTION_CLOSED, DISCONNECT_SLOW};
use herald_proto::ws::{self, Event, MessageReader, Opcode, Progress};
use herald_proto::{Command, DisconnectReason, Encoding, Framing, decode_commands};
use metrics::Counter;
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::queue::FrameQueue;

/// Per-transport limits, fixed at start-up.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub max_message: usize,
    pub queue_max: usize,
    pub max_commands: usize,
    pub stale_after: u32,
}

/// Counts open WebSocket connections (for metrics and shutdown).
pub static OPEN_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);

/// Open WebSocket connections per worker thread (thread-per-core), for `/metrics`: workers keep
/// their connections for life, so an uneven spread stays visible.
pub static WORKER_CONNECTIONS: [AtomicUsize; herald_hub::wake::MAX_WORKERS] =
    [const { AtomicUsize::new(0) }; herald_hub::wake::MAX_WORKERS];

fn count_on_worker(worker: u16, open: bool) {
    if let Some(n) = WORKER_CONNECTIONS.get(usize::from(worker)) {
        if open {
            n.fetch_add(1, Ordering::Relaxed);
        } else {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn counter(cell: &'static OnceLock<Counter>, name: &'static str) -> &'static Counter {
    cell.get_or_init(|| metrics::counter!(name))
}

fn bytes_in(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_in_total").increment(n as u64);
}

fn bytes_out(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_out_total").increment(n as u64);
}

fn disconnect_metric(code: u32) {
    herald_hub::metrics::by_code("herald_client_disconnects_total", code);
}

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Reads per wake-up before yielding to other connections.
const MAX_READS_PER_WAKE: usize = 8;
/// Size of the per-thread read buffer.
const SCRATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush and say goodbye.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The outbound side of a connection: what the hub and the session queue, and what the task
/// must act on.
///
/// Rarely used parts are boxed: this struct is part of every idle connection.
struct Out {
    queue: FrameQueue,
    close: Option<Box<DisconnectReason>>,
    // Boxed on purpose: 8 bytes in every idle connection instead of 24.
    #[allow(clippy::box_collection)]
    controls: Option<Box<Vec<Control>>>,
    waker: Option<Waker>,
    /// The last write hit `WouldBlock`: wait for writability.
    write_blocked: bool,
}

/// Shared state of one WebSocket connection.
pub struct WsLink {
    id: Uuid,
    framing: Framing,
    /// Pings as WebSocket ping frames instead of protocol pings (`cf_ws_frame_ping_pong`).
    native_ping: bool,
    stream: TcpStream,
    out: Mutex<Out>,
    timers: LinkTimers,
    queue_max: usize,
    /// The worker thread whose runtime runs this connection's task.
    worker: u16,
}

impl WsLink {
    fn wake(&self, out: &mut Out) {
        if let Some(w) = out.waker.take() {
            herald_hub::wake::wake(self.worker, w);
        }
    }
}

impl ClientLink for WsLink {
    fn id(&self) -> Uuid {
        self.id
    }

    fn framing(&self) -> Framing {
        self.framing
    }

    fn send(&self, frame: Bytes) {
        let mut out = self.out.lock().expect("ws out");
        if out.close.as_ref().is_some_and(|c| c.code == DISCONNECT_SLOW.code) {
            return;
        }
        if out.queue.pending() + frame.len() > self.queue_max {
            // Slow consumer: drop what is queued and close (no flush).
            out.queue.clear();
            out.close = Some(Box::new(DISCONNECT_SLOW));
        } else {
            out.queue.push(frame);
        }
        self.wake(&mut out);
    }

    /// Writes straight to the socket when nothing is queued: a server ping then costs one write
    /// and no task wake-up (about a tenth of the CPU of a ping and its pong).
    fn send_now(&self, frame: Bytes) {
        let mut out = self.out.lock().expect("ws out");
        if out.close.is_some() || out.write_blocked || !out.queue.is_empty() {
            drop(out);
            return self.send(frame);
        }
        match self.stream.try_write(&frame) {
            Ok(n) if n == frame.len() => bytes_out(n),
            Ok(n) if n > 0 => {
                bytes_out(n);
                out.queue.push(frame.slice(n..));
                self.wake(&mut out);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                out.write_blocked = true;
                out.queue.push(frame);
                self.wake(&mut out);
            }
            // The task's own write will see the error and close the connection.
            _ => {
                out.queue.push(frame);
                self.wake(&mut out);
            }
        }
    }

    fn close(&self, reason: DisconnectReason) {
        let mut out = self.out.lock().expect("ws out");
        if out.close.is_none() {
            out.close = Some(Box::new(reason));
            self.wake(&mut out);
        }
    }

    fn control(&self, ctrl: Control) {
        let mut out = self.out.lock().expect("ws out");
        out.controls.get_or_insert_with(Default::default).push(ctrl);
        self.wake(&mut out);
    }

    fn timers(&self) -> &LinkTimers {
        &self.timers
    }

    fn ping_frame(&self) -> Bytes {
        if self.native_ping { ws::frame(Opcode::Ping, b"") } else { ping_frame(self.framing) }
    }
}

/// What woke the connection task. Queued frames are written inside [`WsLink::poll_wake`], under
/// the lock it holds anyway, so a wake-up for a delivery costs one lock and one write.
#[derive(Default)]
struct Wake {
    readable: bool,
    controls: bool,
    /// A close was requested (after what could be written was written).
    close: bool,
    /// The socket failed while writing.
    broken: bool,
}

impl WsLink {
    fn poll_wake(&self, cx: &mut Context<'_>, want_read: bool) -> Poll<Wake> {
        let mut wake = Wake::default();
        let mut out = self.out.lock().expect("ws out");
        match &mut out.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        while !out.queue.is_empty() {
            if out.write_blocked {
                // Registers for writability; a ready socket is written right away.
                if self.stream.poll_write_ready(cx).is_pending() {
                    break;
                }
                out.write_blocked = false;
            }
            if self.write_queued(&mut out).is_err() {
                wake.broken = true;
                break;
            }
        }
        wake.controls = out.controls.is_some();
        wake.close = out.close.is_some();
        drop(out);
        if want_read && self.stream.poll_read_ready(cx).is_ready() {
            wake.readable = true;
        }
        if wake.readable || wake.controls || wake.close || wake.broken { Poll::Ready(wake) } else { Poll::Pending }
    }

    /// Writes queued frames until the queue is empty or the socket would block (then
    /// `write_blocked` is set).
    fn write_queued(&self, out: &mut Out) -> io::Result<()> {
        while !out.queue.is_empty() {
            let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let n = out.queue.slices(&mut slices);
            let written = match self.stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    out.write_blocked = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            bytes_out(written);
            out.queue.consume(written);
        }
        Ok(())
    }

    /// Writes what can be written now (after commands queued replies) and tells whether a close
    /// was requested, under one lock.
    fn flush(&self) -> io::Result<Option<DisconnectReason>> {
        let mut out = self.out.lock().expect("ws out");
        if !out.write_blocked {
            self.write_queued(&mut out)?;
        }
        Ok(out.close.as_deref().cloned())
    }

    fn take_controls(&self) -> Vec<Control> {
        self.out.lock().expect("ws out").controls.take().map(|c| *c).unwrap_or_default()
    }

    fn is_closing(&self) -> bool {
        self.out.lock().expect("ws out").close.is_some()
    }
}

/// Reads into `buf`. A short read means the receive queue was empty at that moment, so the
/// socket's readiness is cleared right away instead of by a second read that would only return
/// `WouldBlock` (one syscall less per message; on idle connections that is half the reads).
/// Race-free: `try_io` snapshots readiness before the read and clears only that snapshot, so
/// data arriving after the read marks the socket ready again.
fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = 0;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = io::Read::read(&mut &*socket2::SockRef::from(stream), buf)?;
        if n > 0 && n < buf.len() {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        other => other,
    }
}

/// Errors after which the socket is simply read again later.
fn retry_later(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)
}

thread_local! {
    /// Per-worker read buffer: connections borrow it only while they have bytes to read.
    static SCRATCH_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH]);
}

/// What one read pass produced.
enum ReadOutcome {
    /// Decoded commands (possibly none) and control answers already queued.
    Commands(Vec<Command>),
    /// The peer sent a close frame (its code) or hung up.
    PeerClosed(Option<u16>),
    /// A framing or decoding violation: close with this WebSocket code or disconnect reason.
    WsError(u16, &'static str),
    BadRequest(Vec<Command>),
}

/// Per-connection read state: a partial frame (only while one is incomplete) and fragments.
struct ReadState {
    partial: Vec<u8>,
    /// `partial` holds bytes not parsed yet (sent right after the handshake).
    unparsed: bool,
    reader: MessageReader,
}

impl ReadState {
    /// Reads what the socket has and decodes complete messages.
    fn read(&mut self, link: &WsLink, settings: &WsSettings) -> ReadOutcome {
        let encoding = link.framing.encoding();
        let mut cmds = Vec::new();
        for _ in 0..MAX_READS_PER_WAKE {
            let res = if self.partial.is_empty() {
                SCRATCH_BUF.with(|s| {
                    let mut scratch = s.borrow_mut();
                    let scratch = &mut *scratch;
                    let n = match read_some(&link.stream, scratch) {
                        Ok(0) => return Err(ReadOutcome::PeerClosed(None)),
                        Ok(n) => n,
                        Err(e) if retry_later(&e) => return Ok(false),
                        Err(_) => return Err(ReadOutcome::PeerClosed(None)),
                    };
                    bytes_in(n);
                    let consumed = self.parse(link, &mut scratch[..n], settings, encoding, &mut cmds)?;
                    if consumed < n {
                        self.partial.extend_from_slice(&scratch[consumed..n]);
                    }
                    Ok(n == scratch.len())
                })
            } else {
                self.read_partial(link, settings, encoding, &mut cmds)
            };
            match res {
                Ok(true) => continue,
                Ok(false) => break,
                Err(ReadOutcome::BadRequest(_)) => return ReadOutcome::BadRequest(cmds),
                Err(other) => {
                    if cmds.is_empty() {
                        return other;
                    }
                    // Process what came before the close/error first; the error repeats on the next read.
                    return match other {
                        ReadOutcome::PeerClosed(code) => {
                            link.close(DisconnectReason { code: code.unwrap_or(3000) as u32, reason: "".into() });
                            ReadOutcome::Commands(cmds)
                        }
                        o => o,
                    };
                }
            }
        }
        ReadOutcome::Commands(cmds)
    }

    /// Continues an incomplete frame: reads straight into the partial buffer.
    fn read_partial(
        &mut self,
        link: &WsLink,
        settings: &WsSettings,
        encoding: Encoding,
        cmds: &mut Vec<Command>,
    ) -> Result<bool, ReadOutcome> {
        let len = self.partial.len();
        let want = (settings.max_message + 14).saturating_sub(len).clamp(4096, SCRATCH);
        self.partial.resize(len + want, 0);
        let n = match read_some(&link.stream, &mut self.partial[len..]) {
            Ok(0) => return Err(ReadOutcome::PeerClosed(None)),
            Ok(n) => n,
            Err(e) if retry_later(&e) && self.unparsed => 0,
            Err(e) => {
                self.partial.truncate(len);
                return if retry_later(&e) { Ok(false) } else { Err(ReadOutcome::PeerClosed(None)) };
            }
        };
        self.unparsed = false;
        bytes_in(n);
        self.partial.truncate(len + n);
        let mut buf = std::mem::take(&mut self.partial);
        let consumed = self.parse(link, &mut buf, settings, encoding, cmds)?;
        if consumed < buf.len() {
            buf.drain(..consumed);
            self.partial = buf;
        } else if buf.capacity() <= 4096 {
            buf.clear();
            self.partial = buf;
        }
        // A larger buffer is dropped here so an idle connection keeps nothing.
        Ok(n > 0 && n == want)
    }

    /// Parses complete frames, answers pings, decodes commands. Returns bytes consumed.
    fn parse(
        &mut self,
        link: &WsLink,
        buf: &mut [u8],
        settings: &WsSettings,
        encoding: Encoding,
        cmds: &mut Vec<Command>,
    ) -> Result<usize, ReadOutcome> {
        let mut failure = None;
        let progress = self.reader.parse(buf, settings.max_message, |event| match event {
            Event::Text(data) | Event::Binary(data) => {
                let budget = settings.max_commands.saturating_sub(cmds.len());
                match decode_commands(encoding, data, budget) {
                    Ok(mut decoded) => {
                        cmds.append(&mut decoded);
                        true
                    }
                    Err(e) => {
                        tracing::debug!(client = %link.id, error = %e, "bad client message");
                        failure = Some(ReadOutcome::BadRequest(Vec::new()));
                        false
                    }
                }
            }
            Event::Ping(payload) => {
                link.send(ws::frame(Opcode::Pong, payload));
                true
            }
            Event::Pong => {
                if link.native_ping {
                    link.timers.pong_received();
                }
                true
            }
            Event::Close(code, _) => {
                failure = Some(ReadOutcome::PeerClosed(code));
                false
            }
        });
        match progress {
            Err(e) => Err(ReadOutcome::WsError(e.code, e.reason)),
            Ok(_) if failure.is_some() => Err(failure.expect("checked")),
            Ok(Progress::Partial { consumed, .. }) | Ok(Progress::Closed { consumed }) => Ok(consumed),
        }
    }
}

/// Builds the link for an accepted, upgraded connection.
pub fn new_link(
    stream: TcpStream,
    framing: Framing,
    native_ping: bool,
    node: &Node,
    settings: &WsSettings,
) -> Arc<WsLink> {
    let link = Arc::new(WsLink {
        id: Uuid::new_v4(),
        framing,
        native_ping,
        stream,
        out: Mutex::new(Out {
            queue: FrameQueue::default(),
            close: None,
            controls: None,
            waker: None,
            write_blocked: false,
        }),
        timers: LinkTimers::new(),
        queue_max: settings.queue_max,
        worker: herald_hub::wake::current_worker(),
    });
    let stale_at = node.tick() + settings.stale_after;
    link.timers.set_stale(stale_at);
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    node.timers().schedule(&dyn_link, stale_at);
    link
}

/// The connection task: runs until the connection is closed, then cleans up the session.
///
/// `early` holds bytes the client sent right after its handshake request, if any.
pub async fn run(link: Arc<WsLink>, node: Arc<Node>, settings: Arc<WsSettings>, early: Vec<u8>, conn: ConnectionInfo) {
    OPEN_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    count_on_worker(link.worker, true);
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    let mut session = Box::new(Session::new(dyn_link, conn));
    let unparsed = !early.is_empty();
    let mut read = ReadState { partial: early, unparsed, reader: MessageReader::new() };
    // Bytes sent right after the handshake are parsed before waiting for readiness.
    let mut pending_early = unparsed;
    let reason = loop {
        let wake = if std::mem::take(&mut pending_early) {
            Wake { readable: true, ..Wake::default() }
        } else {
            poll_fn(|cx| link.poll_wake(cx, true)).await
        };
        if wake.broken {
            break Closing::Broken;
        }
        if wake.controls {
            Box::pin(handle_controls(&mut session, &node, link.take_controls())).await;
        }
        if wake.readable && !link.is_closing() {
            match read.read(&link, &settings) {
                // The most common message on an idle connection: answer it without a batch.
                ReadOutcome::Commands(cmds)
                    if cmds.len() == 1 && cmds[0].id == 0 && cmds[0].method().is_none() && session.is_connected() =>
                {
                    link.timers.pong_received();
                }
                ReadOutcome::Commands(cmds) if cmds.is_empty() => {}
                ReadOutcome::Commands(cmds) => {
                    Box::pin(handle_commands(&mut session, &node, cmds)).await;
                }
                ReadOutcome::BadRequest(cmds) => {
                    Box::pin(handle_commands(&mut session, &node, cmds)).await;
                    link.close(DISCONNECT_BAD_REQUEST);
                }
                ReadOutcome::PeerClosed(code) => {
                    break Closing::Peer(code);
                }
                ReadOutcome::WsError(code, reason) => {
                    break Closing::Protocol(code, reason);
                }
            }
        }
        // Replies queued by the commands go out now, without another wake-up.
        match link.flush() {
            Err(_) => break Closing::Broken,
            Ok(Some(reason)) => break Closing::Server(reason),
            Ok(None) => {}
        }
    };
    let code = match &reason {
        Closing::Server(r) => r.code,
        Closing::Peer(_) => DISCONNECT_CONNECTION_CLOSED.code,
        Closing::Protocol(..) => DISCONNECT_BAD_REQUEST.code,
        Closing::Broken => 3009,
    };
    disconnect_metric(code);
    link.timers.set_closed();
    Box::pin(session.close(&node)).await;
    drop(session);
    Box::pin(goodbye(&link, reason)).await;
    OPEN_CONNECTIONS.fetch_sub(1, Ordering::Relaxed);
    count_on_worker(link.worker, false);
}

/// Runs a batch of commands in order, stopping at the first that closes the connection.
/// Boxed by the caller: per-command state must not live in the long-lived connection future.
async fn handle_commands(session: &mut Session, node: &Node, cmds: Vec<Command>) {
    for cmd in &cmds {
        if session.handle_command(node, cmd).await == Flow::Stop {
            return;
        }
    }
}

async fn handle_controls(session: &mut Session, node: &Node, controls: Vec<Control>) {
    for ctrl in controls {
        if session.handle_control(node, ctrl).await == Flow::Stop {
            return;
        }
    }
}

/// Why the connection ends.
enum Closing {
    Server(DisconnectReason),
    Peer(Option<u16>),
    Protocol(u16, &'static str),
    Broken,
}

/// Flushes what may be flushed, sends the close frame, and lingers briefly so the peer reads it
/// before the socket goes away.
async fn goodbye(link: &WsLink, reason: Closing) {
    // Whether we start the close handshake (then the peer may still be sending, so we shut down
    // our side and drain until it closes) or answer the peer's close frame (nothing more comes).
    let (frame, linger) = match &reason {
        Closing::Server(r) if r.code == DISCONNECT_CONNECTION_CLOSED.code => return,
        Closing::Server(r) => (ws::close_frame(r.code as u16, &r.reason), true),
        Closing::Protocol(code, reason) => (ws::close_frame(*code, reason), true),
        Closing::Peer(Some(code)) => (ws::close_frame(*code, ""), false),
        // The peer hung up without a close frame: nobody is left to read one.
        Closing::Peer(None) | Closing::Broken => return,
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let mut pending = link.out.lock().expect("ws out").queue.take_all();
        pending.push(frame);
        let stream = &link.stream;
        for chunk in pending {
            if write_all(stream, &chunk).await.is_err() {
                return;
            }
            bytes_out(chunk.len());
        }
        if !linger {
            return;
        }
        let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
        // Drain until the peer closes, so unread input does not turn our close into a reset.
        let mut sink = [0u8; 512];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match link.stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
}

/// Writes all of `data` through a shared stream.
async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Chooses the encoding from offered subprotocols and query parameters.
/// Returns the encoding and the subprotocol to echo.
pub fn negotiate(protocols: &[&str], query: &str) -> (Encoding, Option<&'static str>) {
    if protocols.contains(&"centrifuge-protobuf") {
        return (Encoding::Protobuf, Some("centrifuge-protobuf"));
    }
    let query_proto = query.split('&').any(|kv| kv == "format=protobuf" || kv == "cf_protocol=protobuf");
    if query_proto {
        return (Encoding::Protobuf, None);
    }
    if protocols.contains(&"centrifuge-json") {
        return (Encoding::Json, Some("centrifuge-json"));
    }
    (Encoding::Json, None)
}

/// Checks `Origin` against `client.allowed_origins` (patterns with `*`). Without patterns the
/// origin's host must equal the `Host` header. Requests without `Origin` are allowed.
pub fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    if allowed.is_empty() {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    allowed.iter().any(|p| wildcard_match(&p.to_ascii_lowercase(), &origin.to_ascii_lowercase()))
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(mut remaining) = text.strip_prefix(prefix) else { return false };
            if rest.is_empty() {
                return true;
            }
            loop {
                if wildcard_match(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_encoding() {
        assert_eq!(negotiate(&["centrifuge-protobuf"], ""), (Encoding::Protobuf, Some("centrifuge-protobuf")));
        assert_eq!(
            negotiate(&["centrifuge-json", "centrifuge-protobuf"], ""),
            (Encoding::Protobuf, Some("centrifuge-protobuf"))
        );
        assert_eq!(negotiate(&["centrifuge-json"], ""), (Encoding::Json, Some("centrifuge-json")));
        assert_eq!(negotiate(&[], "cf_protocol=protobuf"), (Encoding::Protobuf, None));
        assert_eq!(negotiate(&[], "a=1&format=protobuf"), (Encoding::Protobuf, None));
        assert_eq!(negotiate(&[], ""), (Encoding::Json, None));
    }

    #[test]
    fn checks_origins() {
        assert!(origin_allowed(None, Some("a"), &[]));
        assert!(origin_allowed(Some("http://localhost:8000"), Some("localhost:8000"), &[]));
        assert!(!origin_allowed(Some("http://evil.com"), Some("localhost:8000"), &[]));
        let allowed = vec!["https://*.example.com".to_string(), "http://localhost:3000".to_string()];
        assert!(origin_allowed(Some("https://app.example.com"), None, &allowed));
        assert!(origin_allowed(Some("HTTP://localhost:3000"), None, &allowed));
        assert!(!origin_allowed(Some("https://example.org"), None, &allowed));
        assert!(origin_allowed(Some("http://x"), None, &["*".to_string()]));
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use herald_hub::{HubConfig, NodeIdentity, SystemClock};

    /// A link over a loopback connection, with the client's end of it.
    async fn loopback_link() -> (Arc<WsLink>, TcpStream, Arc<Node>, Arc<WsSettings>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
        let node = Node::new(HubConfig::default(), identity, Arc::new(SystemClock)).unwrap();
        let settings =
            Arc::new(WsSettings { max_message: 65536, queue_max: 1 << 20, max_commands: 100, stale_after: 10 });
        let link = new_link(stream, Framing::WsText, false, &node, &settings);
        (link, client, node, settings)
    }

    /// The connection future is allocated for every connection; keep it small (DESIGN.md:
    /// "Idle costs nothing"). Command handling is boxed, so it does not count here.
    #[tokio::test]
    async fn connection_state_is_small() {
        let (link, _client, node, settings) = loopback_link().await;
        let fut = run(link, node, settings, Vec::new(), ConnectionInfo::default());
        let future_size = std::mem::size_of_val(&fut);
        let link_size = std::mem::size_of::<WsLink>();
        let session_size = std::mem::size_of::<Session>();
        eprintln!("connection future {future_size} B, link {link_size} B, session {session_size} B");
        assert!(future_size <= 320, "connection future grew to {future_size} bytes");
        assert!(link_size <= 320, "link grew to {link_size} bytes");
    }

    /// A command batch is boxed per message (3,952 bytes before connect and subscribe boxed
    /// their own state and commands were passed by reference); small boxes stay in the
    /// allocator's fast size classes.
    #[tokio::test]
    async fn command_batch_future_is_small() {
        let (link, _client, node, _settings) = loopback_link().await;
        let mut session = Session::new(link, ConnectionInfo::default());
        let batch = handle_commands(&mut session, &node, Vec::new());
        let size = std::mem::size_of_val(&batch);
        assert!(size <= 768, "command batch future grew to {size} bytes");
    }

    /// `send_now` writes from the calling thread: the frame arrives although no task runs the
    /// connection. Behind a queued frame it queues instead, keeping the order.
    #[tokio::test]
    async fn send_now_writes_without_the_task_and_keeps_order() {
        use tokio::io::AsyncReadExt;
        let (link, mut client, _node, _settings) = loopback_link().await;
        link.send_now(Bytes::from_static(b"ping-1"));
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"ping-1");
        link.send(Bytes::from_static(b"queued"));
        link.send_now(Bytes::from_static(b"ping-2"));
        assert_eq!(link.out.lock().unwrap().queue.pending(), 12, "queued behind the first frame");
        link.flush().unwrap();
        let mut got = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"queuedping-2");
    }
}
