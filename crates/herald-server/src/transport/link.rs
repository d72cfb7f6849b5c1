//! [`SocketLink`]: the shared state of one client connection that owns its raw socket
//! (WebSocket, SSE, HTTP streaming, their unidirectional variants) and its `ClientLink` side,
//! where the hub and the session queue frames; writes happen here, under the lock that guards
//! the queue. Which wire items it carries is its [`Envelope`]; the connection task of each
//! transport decides what, if anything, is read from the socket.
//!
//! Bidirectional emulation (SSE, HTTP streaming) receives its commands from other HTTP requests
//! (`/emulation`): they are appended to the link's inbox ([`SocketLink::deliver`]) and run by
//! the connection's task, in arrival order.
//!
//! A connection served over TLS 1.3 keeps its record layer ([`Records`]) under the same lock: frames
//! are sealed and written where a plain link writes them, and reads open records under the lock
//! ([`SocketLink::read_some`]), so no pump task or second socket is needed.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use herald_hub::{ClientLink, Control, LinkTimers, Node};
use herald_proto::codes::{DISCONNECT_INAPPROPRIATE_PROTOCOL, DISCONNECT_SLOW};
use herald_proto::envelope::{self, Envelope};
use herald_proto::ws::{self, Opcode};
use herald_proto::{Command, DisconnectReason, Prepared};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::bytes_out;
use super::queue::FrameQueue;
use super::records::Records;
use super::stream::positions::Positions;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// Most plaintext sealed for one write on a TLS link: what may sit sealed but unsent beyond
/// `client.queue_max_size` when the socket blocks.
const TLS_BATCH: usize = 64 * 1024;
/// Per-thread buffer for reading TLS records from a socket.
const TLS_READ: usize = 32 * 1024;

thread_local! {
    /// Records are sealed here, then written; only what the socket does not take is copied
    /// into the link, so an idle TLS link holds no write buffer.
    static SEALED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    static TLS_IN: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; TLS_READ]);
}

/// The outbound side of a connection: what the hub and the session queue, and what the task
/// must act on.
///
/// Rarely used parts are boxed: this struct is part of every idle connection.
pub(crate) struct Out {
    pub(crate) queue: FrameQueue,
    close: Option<Box<DisconnectReason>>,
    // Boxed on purpose: 8 bytes in every idle connection instead of 24.
    #[allow(clippy::box_collection)]
    controls: Option<Box<Vec<Control>>>,
    /// Commands delivered through `/emulation`, not run yet (emulation links only).
    #[allow(clippy::box_collection)]
    inbox: Option<Box<Vec<Command>>>,
    /// uni_sse: channel positions for event ids, once the connect push is queued.
    pub(crate) positions: Option<Box<Positions>>,
    waker: Option<Waker>,
    /// The last write hit `WouldBlock`: wait for writability.
    write_blocked: bool,
    /// TLS: the record layer (boxed: plain links pay 8 bytes).
    tls: Option<Box<Records>>,
}

impl Out {
    /// Something waits to be written: queued frames, or sealed records the socket did not take.
    fn has_output(&self) -> bool {
        !self.queue.is_empty() || self.tls.as_ref().is_some_and(|r| !r.unsent.is_empty())
    }
}

/// Shared state of one client connection.
pub struct SocketLink {
    pub(crate) id: Uuid,
    pub(crate) envelope: Envelope,
    /// Pings as WebSocket ping frames instead of protocol pings (`cf_ws_frame_ping_pong`).
    pub(crate) native_ping: bool,
    /// The connection carries TLS records ([`Out::tls`]).
    secure: bool,
    pub(crate) stream: TcpStream,
    pub(crate) out: Mutex<Out>,
    pub(crate) timers: LinkTimers,
    queue_max: usize,
    /// The worker thread whose runtime runs this connection's task.
    pub(crate) worker: u16,
    /// The emulation session id (SSE and HTTP-streaming links): the secret `/emulation`
    /// requests name. Boxed: 16 bytes on every link instead of 24.
    session: Option<Box<str>>,
}

/// How a link is built.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkOptions {
    pub envelope: Envelope,
    pub native_ping: bool,
    /// The client answers pings (WebSocket, bidirectional emulation).
    pub pong_expected: bool,
    /// Whether commands arrive through `/emulation` (the link gets a session id).
    pub emulation: bool,
    /// `client.queue_max_size`.
    pub queue_max: usize,
}

impl SocketLink {
    /// Queues `frames` together, or closes a slow client (3008) when they do not fit.
    fn queue_locked<const N: usize>(&self, out: &mut Out, frames: [Bytes; N]) {
        if out.close.as_ref().is_some_and(|c| c.code == DISCONNECT_SLOW.code) {
            return;
        }
        let len: usize = frames.iter().map(Bytes::len).sum();
        if out.queue.pending() + len > self.queue_max {
            // Slow consumer: drop what is queued and close (no flush), but finish a frame that
            // is partly written so that the goodbye is not written into it.
            let before = out.queue.pending();
            out.queue.drop_unstarted();
            out.close = Some(Box::new(DISCONNECT_SLOW));
            let transport = self.envelope_name();
            metrics::counter!("herald_transport_slow_total", "transport" => transport).increment(1);
            let dropped = (before - out.queue.pending() + len) as u64;
            metrics::counter!("herald_transport_dropped_bytes_total", "transport" => transport).increment(dropped);
        } else {
            for frame in frames {
                out.queue.push(frame);
            }
        }
        self.wake(out);
    }

    fn envelope_name(&self) -> &'static str {
        match self.envelope {
            Envelope::WsJson | Envelope::WsProtobuf => "websocket",
            Envelope::Sse => "sse",
            Envelope::StreamJson | Envelope::StreamProtobuf => "http_stream",
            Envelope::UniStream => "uni_http_stream",
            Envelope::UniSse => "uni_sse",
            Envelope::UniWs => "uni_websocket",
        }
    }

    fn wake(&self, out: &mut Out) {
        if let Some(w) = out.waker.take() {
            herald_hub::wake::wake(self.worker, w);
        }
    }
}

impl ClientLink for SocketLink {
    fn id(&self) -> Uuid {
        self.id
    }

    fn envelope(&self) -> Envelope {
        self.envelope
    }

    fn send(&self, frame: Bytes) {
        let mut out = self.out.lock().expect("link out");
        self.queue_locked(&mut out, [frame]);
    }

    /// uni_sse: a publication that moves a channel's position gets an `id:` line
    /// ([`Positions`]), queued with the shared event under one lock so that events of
    /// different channels cannot interleave.
    fn send_prepared(&self, p: &Prepared) {
        let Some(frame) = p.encoded(self.envelope) else {
            return self.close(DISCONNECT_INAPPROPRIATE_PROTOCOL);
        };
        if self.envelope == Envelope::UniSse
            && let Some(push) = &p.reply().push
        {
            let mut out = self.out.lock().expect("link out");
            if let Some(positions) = out.positions.as_mut()
                && positions.apply(push)
            {
                let id = Bytes::from(positions.id_line());
                return self.queue_locked(&mut out, [id, frame.clone()]);
            }
            return self.queue_locked(&mut out, [frame.clone()]);
        }
        self.send(frame.clone());
    }

    /// Writes straight to the socket when nothing is queued: a server ping then costs one write
    /// and no task wake-up (about a tenth of the CPU of a ping and its pong).
    fn send_now(&self, frame: Bytes) {
        let mut out = self.out.lock().expect("link out");
        if out.close.is_some() || out.write_blocked || out.has_output() {
            drop(out);
            return self.send(frame);
        }
        if self.secure {
            out.queue.push(frame);
            // What is not written now (or an error) is left to the task.
            if self.write_queued(&mut out).is_err() || out.has_output() {
                self.wake(&mut out);
            }
            return;
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
        let mut out = self.out.lock().expect("link out");
        if out.close.is_none() {
            out.close = Some(Box::new(reason));
            self.wake(&mut out);
        }
    }

    fn control(&self, ctrl: Control) {
        let mut out = self.out.lock().expect("link out");
        out.controls.get_or_insert_with(Default::default).push(ctrl);
        self.wake(&mut out);
    }

    fn timers(&self) -> &LinkTimers {
        &self.timers
    }

    fn queued_bytes(&self) -> usize {
        let out = self.out.lock().expect("link out");
        out.queue.pending() + out.tls.as_ref().map_or(0, |r| r.unsent.len())
    }

    fn emulation_session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    fn ping_frame(&self) -> Bytes {
        if self.native_ping { ws::frame(Opcode::Ping, b"") } else { envelope::ping(self.envelope) }
    }
}

/// What woke the connection task. Queued frames are written inside [`SocketLink::poll_wake`], under
/// the lock it holds anyway, so a wake-up for a delivery costs one lock and one write.
#[derive(Default)]
pub(crate) struct Wake {
    pub(crate) readable: bool,
    pub(crate) controls: bool,
    /// Commands arrived through `/emulation`.
    pub(crate) commands: bool,
    /// A close was requested (after what could be written was written).
    pub(crate) close: bool,
    /// The socket failed while writing.
    pub(crate) broken: bool,
}

impl SocketLink {
    pub(crate) fn poll_wake(&self, cx: &mut Context<'_>, want_read: bool) -> Poll<Wake> {
        let mut wake = Wake::default();
        let mut out = self.out.lock().expect("link out");
        match &mut out.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        while out.has_output() {
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
        wake.commands = out.inbox.is_some();
        wake.close = out.close.is_some();
        // Records already read and opened, or the client's close_notify, need no readiness.
        let opened = out.tls.as_ref().is_some_and(|r| r.has_plain() || r.finished());
        drop(out);
        if want_read && (opened || self.stream.poll_read_ready(cx).is_ready()) {
            wake.readable = true;
        }
        if wake.readable || wake.controls || wake.commands || wake.close || wake.broken {
            Poll::Ready(wake)
        } else {
            Poll::Pending
        }
    }

    /// Writes queued frames until the queue is empty or the socket would block (then
    /// `write_blocked` is set).
    fn write_queued(&self, out: &mut Out) -> io::Result<()> {
        if self.secure {
            return self.write_sealed(out);
        }
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

    /// [`SocketLink::write_queued`] over TLS: unsent records first, then queued frames sealed
    /// in batches of at most [`TLS_BATCH`] bytes.
    fn write_sealed(&self, out: &mut Out) -> io::Result<()> {
        let Out { queue, tls, write_blocked, .. } = out;
        let records = tls.as_mut().expect("a secure link has its records");
        loop {
            if !records.unsent.is_empty() {
                match self.stream.try_write(&records.unsent) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => records.sent(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        *write_blocked = true;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            if queue.is_empty() {
                return Ok(());
            }
            let mut slices: [IoSlice<'_>; MAX_IOVECS] = [IoSlice::new(&[]); MAX_IOVECS];
            let n = queue.slices(&mut slices);
            let mut budget = TLS_BATCH;
            let parts = slices[..n].iter().map_while(|s| {
                let take = s.len().min(budget);
                budget -= take;
                (take > 0).then(|| &s[..take])
            });
            let sealed = SEALED.with(|cell| -> io::Result<(usize, bool)> {
                let mut sealed = cell.borrow_mut();
                sealed.clear();
                let plain = records.seal(parts, &mut sealed)?;
                let written = match self.stream.try_write(&sealed) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(w) => w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                records.unsent.extend_from_slice(&sealed[written..]);
                let blocked = written < sealed.len();
                if sealed.capacity() > 2 * TLS_BATCH {
                    *sealed = Vec::new();
                }
                Ok((plain, blocked))
            });
            let (plain, blocked) = sealed?;
            queue.consume(plain);
            bytes_out(plain);
            if blocked {
                *write_blocked = true;
                return Ok(());
            }
        }
    }

    /// Reads what the client sent (plaintext) into `buf`, as `ws::conn::read_some` does for a
    /// plain socket: `Ok(0)` at the end of the stream, `WouldBlock` when nothing is there.
    pub(crate) fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.secure {
            return super::ws::conn::read_some(&self.stream, buf);
        }
        let mut out = self.out.lock().expect("link out");
        let records = out.tls.as_mut().expect("a secure link has its records");
        loop {
            if records.has_plain() {
                return Ok(records.take_plain(buf));
            }
            if records.finished() {
                return Ok(0);
            }
            let got = TLS_IN.with(|cell| -> io::Result<usize> {
                let mut input = cell.borrow_mut();
                let n = super::ws::conn::read_some(&self.stream, &mut input)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(records.receive(&mut input[..n], buf)?)
            });
            match got {
                Ok(0) => {}
                Ok(n) => return Ok(n),
                // A client that hangs up without close_notify: the end of its stream all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `data`, waiting for the socket as needed: the goodbye path, after the
    /// queue was taken.
    pub(crate) async fn write_all(&self, data: &[u8]) -> io::Result<()> {
        if !self.secure {
            return super::ws::conn::write_all(&self.stream, data).await;
        }
        {
            let mut out = self.out.lock().expect("link out");
            let records = out.tls.as_mut().expect("a secure link has its records");
            let mut unsent = std::mem::take(&mut records.unsent);
            records.seal([data], &mut unsent)?;
            records.unsent = unsent;
        }
        self.write_unsent().await
    }

    /// Ends our direction: close_notify on a TLS link, then the TCP shutdown.
    pub(crate) async fn close_write(&self) {
        if self.secure {
            {
                let mut out = self.out.lock().expect("link out");
                let records = out.tls.as_mut().expect("a secure link has its records");
                let mut unsent = std::mem::take(&mut records.unsent);
                let sealed = records.close_notify(&mut unsent);
                records.unsent = unsent;
                if sealed.is_err() {
                    return;
                }
            }
            if self.write_unsent().await.is_err() {
                return;
            }
        }
        let _ = socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write);
    }

    async fn write_unsent(&self) -> io::Result<()> {
        loop {
            {
                let mut out = self.out.lock().expect("link out");
                let records = out.tls.as_mut().expect("a secure link has its records");
                if records.unsent.is_empty() {
                    return Ok(());
                }
                match self.stream.try_write(&records.unsent) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        records.sent(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            self.stream.writable().await?;
        }
    }

    /// Writes what can be written now (after commands queued replies) and tells whether a close
    /// was requested, under one lock.
    pub(crate) fn flush(&self) -> io::Result<Option<DisconnectReason>> {
        let mut out = self.out.lock().expect("link out");
        if !out.write_blocked {
            self.write_queued(&mut out)?;
        }
        Ok(out.close.as_deref().cloned())
    }

    pub(crate) fn take_controls(&self) -> Vec<Control> {
        self.out.lock().expect("link out").controls.take().map(|c| *c).unwrap_or_default()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.out.lock().expect("link out").close.is_some()
    }

    /// Commands delivered through `/emulation`, in arrival order.
    pub(crate) fn take_commands(&self) -> Vec<Command> {
        self.out.lock().expect("link out").inbox.take().map(|c| *c).unwrap_or_default()
    }

    /// Hands commands from an `/emulation` request to the connection's task. `false` when the
    /// connection is closing or more than `max` commands would be waiting (the caller answers
    /// with an error; nothing is queued).
    pub(crate) fn deliver(&self, mut cmds: Vec<Command>, max: usize) -> bool {
        let mut out = self.out.lock().expect("link out");
        if out.close.is_some() {
            return false;
        }
        let inbox = out.inbox.get_or_insert_with(Default::default);
        if inbox.len() + cmds.len() > max {
            if inbox.is_empty() {
                out.inbox = None;
            }
            return false;
        }
        inbox.append(&mut cmds);
        self.wake(&mut out);
        true
    }
}

/// Builds the link for an accepted client connection, with its stale timer (the client must
/// send connect within `stale_after` ticks).
pub(crate) fn new_link(
    stream: TcpStream,
    tls: Option<Box<Records>>,
    options: LinkOptions,
    node: &Node,
    stale_after: u32,
) -> Arc<SocketLink> {
    let link = build_link_with(stream, tls, options);
    let stale_at = node.tick() + stale_after;
    link.timers.set_stale(stale_at);
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    node.timers().schedule(&dyn_link, stale_at);
    link
}

/// Builds a link without timers: for the echo endpoint (no session to ping or time out) and for
/// transports whose connect comes with the request (the session then arms the timers). `tls`:
/// the record layer of a connection served over TLS.
pub(crate) fn build_link_with(stream: TcpStream, tls: Option<Box<Records>>, options: LinkOptions) -> Arc<SocketLink> {
    Arc::new(SocketLink {
        id: Uuid::new_v4(),
        envelope: options.envelope,
        native_ping: options.native_ping,
        secure: tls.is_some(),
        stream,
        out: Mutex::new(Out {
            queue: FrameQueue::default(),
            close: None,
            controls: None,
            inbox: None,
            positions: None,
            waker: None,
            write_blocked: false,
            tls,
        }),
        timers: LinkTimers::new(options.pong_expected),
        queue_max: options.queue_max,
        worker: herald_hub::wake::current_worker(),
        session: options.emulation.then(|| Uuid::new_v4().simple().to_string().into_boxed_str()),
    })
}
