//! The boundary between the hub and a transport: what the hub may do to a connection.
//!
//! A transport (WebSocket today; SSE and long-polling later) implements [`ClientLink`] on its
//! shared per-connection state. The hub and sessions only ever queue complete frames, ask for a
//! close, or hand a [`Control`] to the task that owns the session; the transport owns every
//! byte and the order in which frames reach the socket. How a reply is wrapped for the wire is
//! the link's [`Envelope`], which the hub passes to `herald_proto` without looking inside.
//!
//! [`LinkTimers`] is the per-connection timer state (atomics, no allocation) that the shared
//! [`crate::timer::TimerWheel`] drives: stale check before connect, pings, pong deadline and the
//! session's own deadline (token and subscription expiry).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use bytes::Bytes;
use herald_proto::codes::{DISCONNECT_INAPPROPRIATE_PROTOCOL, DISCONNECT_NO_PONG, DISCONNECT_STALE};
use herald_proto::{DisconnectReason, Envelope, Prepared, StreamPosition, UnsubscribeCode};
use uuid::Uuid;

/// Something the session owner must act on (server-side actions, timer events).
#[derive(Debug)]
pub enum Control {
    /// A session deadline passed: check connection and subscription expiry.
    CheckExpiry,
    /// Server API `subscribe`: add a server-side subscription.
    Subscribe(Box<ServerSubscribe>),
    /// Server API `unsubscribe` (empty channel: every channel).
    Unsubscribe { channel: String, code: UnsubscribeCode },
    /// Server API `refresh`.
    Refresh { expired: bool, expire_at: Option<i64>, info: Option<Bytes> },
    /// The hub saw a gap in a positioned channel's stream.
    Insufficient { channel: String },
}

/// Options of a server-side subscription made through the server API.
#[derive(Debug, Clone, Default)]
pub struct ServerSubscribe {
    pub channel: String,
    pub info: Bytes,
    pub data: Bytes,
    pub recover_since: Option<StreamPosition>,
    pub expire_at: Option<i64>,
    pub override_: herald_auth::Override,
}

/// Shared per-connection handle, implemented by each transport.
pub trait ClientLink: Send + Sync + 'static {
    /// The client id (assigned when the transport accepts the connection).
    fn id(&self) -> Uuid;
    /// How this connection's replies are encoded and wrapped.
    fn envelope(&self) -> Envelope;
    /// Queues one complete frame. Past `client.queue_max_size` bytes the transport closes the
    /// connection with 3008 and drops the frame.
    fn send(&self, frame: Bytes);
    /// Like [`send`](ClientLink::send), but the transport may write the frame from the calling
    /// thread right away when nothing else is queued, instead of waking the connection's task.
    /// For isolated frames (server pings); a fan-out uses `send` so that each worker writes its
    /// own connections in parallel.
    fn send_now(&self, frame: Bytes) {
        self.send(frame);
    }
    /// Asks the transport to close the connection with `reason` (after flushing what is queued,
    /// except for slow clients). Idempotent: the first reason wins.
    fn close(&self, reason: DisconnectReason);
    /// Hands `ctrl` to the task owning the session and wakes it.
    fn control(&self, ctrl: Control);
    /// Timer state driven by the shared wheel.
    fn timers(&self) -> &LinkTimers;

    /// The session id of a bidirectional-emulation connection (SSE, HTTP streaming), sent in
    /// the connect result with the node's id so that the client's `/emulation` requests find
    /// this connection. `None` for transports that carry commands themselves.
    fn emulation_session(&self) -> Option<&str> {
        None
    }

    /// Bytes queued for the client and not written yet (`herald_queued_bytes`, summed at each
    /// scrape).
    fn queued_bytes(&self) -> usize {
        0
    }

    /// The frame sent as a server ping: usually `herald_proto::envelope::ping(self.envelope())`,
    /// or a transport's own keep-alive (a WebSocket ping frame).
    fn ping_frame(&self) -> Bytes;

    /// Queues a shared push, closing the client with 3506 when the push cannot be encoded for
    /// it (a binary payload for a JSON client).
    fn send_prepared(&self, p: &Prepared) {
        match p.encoded(self.envelope()) {
            Some(frame) => self.send(frame.clone()),
            None => self.close(DISCONNECT_INAPPROPRIATE_PROTOCOL),
        }
    }
}

const STATE_FRESH: u8 = 0;
const STATE_CONNECTED: u8 = 1;
const STATE_CLOSED: u8 = 2;

/// Per-connection timer state. Times are ticks (seconds since the node started); 0 means unset.
#[derive(Debug)]
pub struct LinkTimers {
    state: AtomicU8,
    /// Whether the client answers pings (bidirectional transports); fixed by the transport.
    pong_expected: bool,
    awaiting_pong: AtomicBool,
    /// The connection's user is traced (`crate::trace`): its commands, replies and pushes are
    /// logged. Kept here, where a session and a fan-out already look, so an untraced
    /// connection pays one relaxed load.
    traced: AtomicBool,
    /// Deadline of this link's live entry in the wheel (0: none).
    pub(crate) scheduled: AtomicU32,
    stale_at: AtomicU32,
    next_ping: AtomicU32,
    pong_deadline: AtomicU32,
    session_deadline: AtomicU32,
}

/// What a timer decided.
pub(crate) enum Fired {
    Reschedule(u32),
    Done,
}

impl LinkTimers {
    /// Timers of a new link. `pong_expected`: the transport's clients answer pings (WebSocket),
    /// so a missing pong closes the connection with 3012; one-way transports pass `false`.
    pub fn new(pong_expected: bool) -> Self {
        LinkTimers {
            state: AtomicU8::new(STATE_FRESH),
            pong_expected,
            awaiting_pong: AtomicBool::new(false),
            traced: AtomicBool::new(false),
            scheduled: AtomicU32::new(0),
            stale_at: AtomicU32::new(0),
            next_ping: AtomicU32::new(0),
            pong_deadline: AtomicU32::new(0),
            session_deadline: AtomicU32::new(0),
        }
    }

    /// A fresh connection must send connect before `stale_at`.
    pub fn set_stale(&self, stale_at: u32) {
        self.stale_at.store(stale_at, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_CONNECTED
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_CLOSED
    }

    /// The session connected: start pinging at `first_ping` (0: no pings).
    pub fn set_connected(&self, first_ping: u32) {
        self.next_ping.store(first_ping, Ordering::Relaxed);
        self.state.store(STATE_CONNECTED, Ordering::Release);
    }

    /// The connection is gone: every later timer entry is dropped.
    pub fn set_closed(&self) {
        self.state.store(STATE_CLOSED, Ordering::Release);
    }

    /// Whether this connection's user is traced.
    #[inline]
    pub fn is_traced(&self) -> bool {
        self.traced.load(Ordering::Relaxed)
    }

    /// Marks the connection traced or not (the hub does, when a trace starts or ends).
    pub fn set_traced(&self, on: bool) {
        self.traced.store(on, Ordering::Relaxed);
    }

    /// The client answered a ping.
    pub fn pong_received(&self) {
        self.awaiting_pong.store(false, Ordering::Relaxed);
    }

    /// The session's next deadline (0: none). The caller must also reschedule the link.
    pub fn set_session_deadline(&self, at: u32) {
        self.session_deadline.store(at, Ordering::Relaxed);
    }

    pub fn session_deadline(&self) -> u32 {
        self.session_deadline.load(Ordering::Relaxed)
    }

    /// Runs the timers due at `now` and tells when to come back.
    pub(crate) fn fire(&self, link: &dyn ClientLink, now: u32, ping_every: u32, pong_timeout: u32) -> Fired {
        match self.state.load(Ordering::Acquire) {
            STATE_CLOSED => return Fired::Done,
            STATE_FRESH => {
                let stale = self.stale_at.load(Ordering::Relaxed);
                if stale != 0 && now >= stale {
                    link.close(DISCONNECT_STALE);
                    return Fired::Done;
                }
                return if stale == 0 { Fired::Done } else { Fired::Reschedule(stale) };
            }
            _ => {}
        }
        let pong_deadline = self.pong_deadline.load(Ordering::Relaxed);
        if pong_deadline != 0 && now >= pong_deadline {
            if self.awaiting_pong.load(Ordering::Relaxed) {
                link.close(DISCONNECT_NO_PONG);
                return Fired::Done;
            }
            self.pong_deadline.store(0, Ordering::Relaxed);
        }
        let next_ping = self.next_ping.load(Ordering::Relaxed);
        if ping_every > 0 && next_ping != 0 && now >= next_ping {
            // The pong may be handled before `send_now` returns (it writes right away and the
            // connection's task reads on another thread): wait for it before sending the ping.
            if self.pong_expected && pong_timeout > 0 {
                self.awaiting_pong.store(true, Ordering::Relaxed);
                self.pong_deadline.store(now + pong_timeout, Ordering::Relaxed);
            }
            self.next_ping.store(now + ping_every, Ordering::Relaxed);
            link.send_now(link.ping_frame());
        }
        let session = self.session_deadline.load(Ordering::Relaxed);
        if session != 0 && now >= session {
            self.session_deadline.store(0, Ordering::Relaxed);
            link.control(Control::CheckExpiry);
        }
        let next = [
            self.next_ping.load(Ordering::Relaxed),
            self.pong_deadline.load(Ordering::Relaxed),
            self.session_deadline.load(Ordering::Relaxed),
        ]
        .into_iter()
        .filter(|t| *t != 0)
        .min();
        match next {
            Some(t) => Fired::Reschedule(t.max(now + 1)),
            None => Fired::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    /// One per connection: the pong flag moved from the session to the transport without
    /// growing it.
    #[test]
    fn link_timers_stay_small() {
        assert!(std::mem::size_of::<super::LinkTimers>() <= 24);
    }
}
