//! [`WsLink`]: the shared state of one WebSocket connection and its `ClientLink` side, where
//! the hub and the session queue frames; writes happen here, under the lock that guards the
//! queue.

use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use herald_hub::{ClientLink, Control, LinkTimers, Node};
use herald_proto::codes::DISCONNECT_SLOW;
use herald_proto::envelope::{self, Envelope};
use herald_proto::ws::{self, Opcode};
use herald_proto::{DisconnectReason, Encoding};
use tokio::net::TcpStream;
use uuid::Uuid;

use super::queue::FrameQueue;
use super::{WsSettings, bytes_out};

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// The outbound side of a connection: what the hub and the session queue, and what the task
/// must act on.
///
/// Rarely used parts are boxed: this struct is part of every idle connection.
pub(super) struct Out {
    pub(super) queue: FrameQueue,
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
    pub(super) id: Uuid,
    pub(super) envelope: Envelope,
    /// Pings as WebSocket ping frames instead of protocol pings (`cf_ws_frame_ping_pong`).
    pub(super) native_ping: bool,
    pub(super) stream: TcpStream,
    pub(super) out: Mutex<Out>,
    pub(super) timers: LinkTimers,
    queue_max: usize,
    /// The worker thread whose runtime runs this connection's task.
    pub(super) worker: u16,
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

    fn envelope(&self) -> Envelope {
        self.envelope
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
        if self.native_ping { ws::frame(Opcode::Ping, b"") } else { envelope::ping(self.envelope) }
    }
}

/// What woke the connection task. Queued frames are written inside [`WsLink::poll_wake`], under
/// the lock it holds anyway, so a wake-up for a delivery costs one lock and one write.
#[derive(Default)]
pub(super) struct Wake {
    pub(super) readable: bool,
    pub(super) controls: bool,
    /// A close was requested (after what could be written was written).
    pub(super) close: bool,
    /// The socket failed while writing.
    pub(super) broken: bool,
}

impl WsLink {
    pub(super) fn poll_wake(&self, cx: &mut Context<'_>, want_read: bool) -> Poll<Wake> {
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
    pub(super) fn flush(&self) -> io::Result<Option<DisconnectReason>> {
        let mut out = self.out.lock().expect("ws out");
        if !out.write_blocked {
            self.write_queued(&mut out)?;
        }
        Ok(out.close.as_deref().cloned())
    }

    pub(super) fn take_controls(&self) -> Vec<Control> {
        self.out.lock().expect("ws out").controls.take().map(|c| *c).unwrap_or_default()
    }

    pub(super) fn is_closing(&self) -> bool {
        self.out.lock().expect("ws out").close.is_some()
    }
}

/// Builds the link for an accepted, upgraded client connection, with its stale timer.
pub(super) fn new_link(
    stream: TcpStream,
    encoding: Encoding,
    native_ping: bool,
    node: &Node,
    settings: &WsSettings,
) -> Arc<WsLink> {
    let link = build_link(stream, encoding, native_ping, settings);
    let stale_at = node.tick() + settings.stale_after;
    link.timers.set_stale(stale_at);
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    node.timers().schedule(&dyn_link, stale_at);
    link
}

/// Builds a link without timers: the echo endpoint has no session to ping or time out.
pub(super) fn build_link(
    stream: TcpStream,
    encoding: Encoding,
    native_ping: bool,
    settings: &WsSettings,
) -> Arc<WsLink> {
    Arc::new(WsLink {
        id: Uuid::new_v4(),
        envelope: Envelope::websocket(encoding),
        native_ping,
        stream,
        out: Mutex::new(Out {
            queue: FrameQueue::default(),
            close: None,
            controls: None,
            waker: None,
            write_blocked: false,
        }),
        // WebSocket clients answer pings (protocol or native), so a missing pong closes.
        timers: LinkTimers::new(true),
        queue_max: settings.queue_max,
        worker: herald_hub::wake::current_worker(),
    })
}
