//! The WebSocket connection task: [`run`] reads and decodes client frames ([`ReadState`]),
//! hands commands and controls to the session, flushes replies, and says goodbye (close frame,
//! linger) when the connection ends.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use herald_hub::{ClientLink, Control, Flow, Node, Session};
use herald_proto::codes::{DISCONNECT_BAD_REQUEST, DISCONNECT_CONNECTION_CLOSED};
use herald_proto::envelope::{self, Envelope};
use herald_proto::ws::{self, Event, MessageReader, Opcode, Progress};
use herald_proto::{Command, ConnectRequest, Disconnect, DisconnectReason, Encoding, Push, Reply, decode_commands};
use tokio::net::TcpStream;

use super::WsSettings;
use crate::state::AppState;
use crate::transport::link::{SocketLink, Wake};
use crate::transport::{bytes_in, bytes_out};

fn disconnect_metric(code: u32) {
    herald_hub::metrics::by_code("herald_client_disconnects_total", code);
}

/// Reads per wake-up before yielding to other connections.
const MAX_READS_PER_WAKE: usize = 8;
/// Size of the per-thread read buffer.
const SCRATCH: usize = 64 * 1024;
/// How long a closing connection may take to flush and say goodbye.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Reads into `buf`. A short read means the receive queue was empty at that moment, so the
/// socket's readiness is cleared right away instead of by a second read that would only return
/// `WouldBlock` (one syscall less per message; on idle connections that is half the reads).
/// Race-free: `try_io` snapshots readiness before the read and clears only that snapshot, so
/// data arriving after the read marks the socket ready again.
pub(crate) fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
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
pub(crate) fn retry_later(e: &io::Error) -> bool {
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
    /// The peer sent a close frame (its code, if the frame had one).
    PeerClosed(Option<u16>),
    /// The peer hung up (end of stream or a read error) without a close frame.
    HungUp,
    /// A framing or decoding violation: close with this WebSocket code or disconnect reason.
    WsError(u16, &'static str),
    BadRequest(Vec<Command>),
}

/// Per-connection read state: a partial frame (only while one is incomplete) and fragments.
struct ReadState {
    partial: Vec<u8>,
    /// uni_websocket: the next text message is the client's bare ConnectRequest (later
    /// messages are ignored).
    uni_connect: bool,
    uni: bool,
    /// `partial` holds complete input not parsed yet: sent right after the handshake, or left
    /// over when a pass had enough commands.
    unparsed: bool,
    reader: MessageReader,
}

impl ReadState {
    /// Reads what the socket has and decodes complete messages, at most about one message's
    /// worth of commands (`client.max_commands_per_frame`) per pass: complete messages left
    /// over stay in `partial` (`unparsed` set) and are handled on the next pass, before any
    /// further read, so none is dropped, order holds and the buffer stays bounded.
    fn read(&mut self, link: &SocketLink, settings: &WsSettings) -> ReadOutcome {
        let encoding = link.envelope.encoding();
        let mut cmds = Vec::new();
        for _ in 0..MAX_READS_PER_WAKE {
            let res = if self.unparsed {
                self.parse_pending(link, settings, encoding, &mut cmds)
            } else if self.partial.is_empty() {
                SCRATCH_BUF.with(|s| {
                    let mut scratch = s.borrow_mut();
                    let scratch = &mut *scratch;
                    let n = match link.read_some(scratch) {
                        Ok(0) => return Err(ReadOutcome::HungUp),
                        Ok(n) => n,
                        Err(e) if retry_later(&e) => return Ok(false),
                        Err(_) => return Err(ReadOutcome::HungUp),
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
                Ok(true) if !self.unparsed && cmds.len() < settings.max_commands => continue,
                Ok(_) => break,
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
                        ReadOutcome::HungUp => {
                            link.close(DISCONNECT_CONNECTION_CLOSED);
                            ReadOutcome::Commands(cmds)
                        }
                        o => o,
                    };
                }
            }
        }
        ReadOutcome::Commands(cmds)
    }

    /// Parses bytes already in `partial` (left over by a full pass, or sent right after the
    /// handshake) without reading.
    fn parse_pending(
        &mut self,
        link: &SocketLink,
        settings: &WsSettings,
        encoding: Encoding,
        cmds: &mut Vec<Command>,
    ) -> Result<bool, ReadOutcome> {
        let mut buf = std::mem::take(&mut self.partial);
        let consumed = self.parse(link, &mut buf, settings, encoding, cmds)?;
        self.keep_rest(buf, consumed);
        Ok(true)
    }

    /// Continues an incomplete frame: reads straight into the partial buffer.
    fn read_partial(
        &mut self,
        link: &SocketLink,
        settings: &WsSettings,
        encoding: Encoding,
        cmds: &mut Vec<Command>,
    ) -> Result<bool, ReadOutcome> {
        let len = self.partial.len();
        let want = (settings.max_message + 14).saturating_sub(len).clamp(4096, SCRATCH);
        self.partial.resize(len + want, 0);
        let n = match link.read_some(&mut self.partial[len..]) {
            Ok(0) => return Err(ReadOutcome::HungUp),
            Ok(n) => n,
            Err(e) => {
                self.partial.truncate(len);
                return if retry_later(&e) { Ok(false) } else { Err(ReadOutcome::HungUp) };
            }
        };
        bytes_in(n);
        self.partial.truncate(len + n);
        let mut buf = std::mem::take(&mut self.partial);
        let consumed = self.parse(link, &mut buf, settings, encoding, cmds)?;
        self.keep_rest(buf, consumed);
        Ok(n == want)
    }

    /// Keeps what `parse` did not consume. A fully consumed large buffer is dropped so an idle
    /// connection keeps nothing.
    fn keep_rest(&mut self, mut buf: Vec<u8>, consumed: usize) {
        if consumed < buf.len() {
            buf.drain(..consumed);
            self.partial = buf;
        } else if buf.capacity() <= 4096 {
            buf.clear();
            self.partial = buf;
        }
    }

    /// Parses complete frames, answers pings, decodes commands. Returns bytes consumed.
    fn parse(
        &mut self,
        link: &SocketLink,
        buf: &mut [u8],
        settings: &WsSettings,
        encoding: Encoding,
        cmds: &mut Vec<Command>,
    ) -> Result<usize, ReadOutcome> {
        self.unparsed = false;
        let mut failure = None;
        let mut full = false;
        let progress = self.reader.parse(buf, settings.max_message, |event| match event {
            // The limit is per message, however many messages one read holds.
            Event::Text(data) | Event::Binary(data) if self.uni => {
                if std::mem::take(&mut self.uni_connect) {
                    match serde_json::from_slice::<ConnectRequest>(data) {
                        Ok(req) => cmds.push(Command { id: 1, connect: Some(req), ..Default::default() }),
                        Err(e) => {
                            tracing::debug!(client = %link.id, error = %e, "bad uni_websocket connect request");
                            failure = Some(ReadOutcome::BadRequest(Vec::new()));
                            return false;
                        }
                    }
                }
                true
            }
            Event::Text(data) | Event::Binary(data) => match decode_commands(encoding, data, settings.max_commands) {
                Ok(mut decoded) => {
                    cmds.append(&mut decoded);
                    // Enough for one pass; the rest waits in `partial`.
                    full = cmds.len() >= settings.max_commands;
                    !full
                }
                Err(e) => {
                    tracing::debug!(client = %link.id, error = %e, "bad client message");
                    failure = Some(ReadOutcome::BadRequest(Vec::new()));
                    false
                }
            },
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
            Ok(Progress::Partial { consumed, .. }) => {
                self.unparsed = full && consumed < buf.len();
                Ok(consumed)
            }
            Ok(Progress::Closed { consumed }) => Ok(consumed),
        }
    }
}

/// The connection task: runs until the connection is closed, then cleans up the session.
///
/// `early` holds bytes the client sent right after its handshake request, if any.
/// `first` holds the commands of the handshake request itself (uni_websocket's `cf_connect`).
/// The session is made by the caller (a box: the future keeps only a pointer to it).
pub(super) async fn run(
    link: Arc<SocketLink>,
    state: Arc<AppState>,
    early: Vec<u8>,
    first: Vec<Command>,
    mut session: Box<Session>,
) {
    let transport = session.connection().transport();
    let opened = crate::telemetry::now_ms();
    state.connections.opened(transport, link.worker);
    let uni = link.envelope == Envelope::UniWs;
    let settings = if uni { &state.uni_ws } else { &state.ws };
    let unparsed = !early.is_empty();
    let uni_connect = uni && first.is_empty();
    let mut read = ReadState { partial: early, uni_connect, uni, unparsed, reader: MessageReader::new() };
    if !first.is_empty() {
        Box::pin(handle_commands(&mut session, &state.node, first)).await;
        refused_uni_connect(&session, &link);
    }
    // Input already read (sent right after the handshake, or left over by a full pass) is
    // parsed before waiting for readiness.
    let mut pending_input = unparsed;
    let reason = loop {
        let wake = if std::mem::take(&mut pending_input) {
            // Lets other connections of this worker run once this task's budget is spent.
            tokio::task::consume_budget().await;
            Wake { readable: true, ..Wake::default() }
        } else {
            poll_fn(|cx| link.poll_wake(cx, true)).await
        };
        if wake.broken {
            break Closing::Broken;
        }
        if wake.controls {
            Box::pin(handle_controls(&mut session, &state.node, link.take_controls())).await;
        }
        if wake.readable && !link.is_closing() {
            let outcome = read.read(&link, settings);
            pending_input = read.unparsed;
            match outcome {
                // The most common message on an idle connection: answer it without a batch.
                ReadOutcome::Commands(cmds)
                    if cmds.len() == 1 && cmds[0].id == 0 && cmds[0].method().is_none() && session.is_connected() =>
                {
                    link.timers.pong_received();
                }
                ReadOutcome::Commands(cmds) if cmds.is_empty() => {}
                ReadOutcome::Commands(cmds) => {
                    Box::pin(handle_commands(&mut session, &state.node, cmds)).await;
                    if uni {
                        refused_uni_connect(&session, &link);
                    }
                }
                ReadOutcome::BadRequest(cmds) => {
                    Box::pin(handle_commands(&mut session, &state.node, cmds)).await;
                    link.close(DISCONNECT_BAD_REQUEST);
                }
                ReadOutcome::PeerClosed(code) => {
                    break Closing::Peer(code);
                }
                ReadOutcome::HungUp => {
                    break Closing::HungUp;
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
        Closing::Peer(_) | Closing::HungUp => DISCONNECT_CONNECTION_CLOSED.code,
        // A framing error is counted under the WebSocket close code the client gets (1002, 1007,
        // 1009), not as a protocol-level 3501.
        Closing::Protocol(code, _) => u32::from(*code),
        Closing::Broken => 3009,
    };
    disconnect_metric(code);
    let why = match &reason {
        Closing::Server(r) => &*r.reason,
        Closing::Peer(_) => "closed by the client",
        Closing::HungUp => "connection lost",
        Closing::Protocol(_, why) => why,
        Closing::Broken => "write failed",
    };
    crate::telemetry::connection_closed(&session, &link.id, code, why, opened);
    link.timers.set_closed();
    let ended = match &reason {
        Closing::Server(r) => r.clone(),
        Closing::Peer(_) | Closing::HungUp => DISCONNECT_CONNECTION_CLOSED,
        Closing::Protocol(_, why) => DisconnectReason::new(code, why),
        Closing::Broken => DisconnectReason::new(code, "write error"),
    };
    Box::pin(session.close_with(&state.node, ended)).await;
    drop(session);
    Box::pin(goodbye(&link, reason)).await;
    state.connections.closed(transport, link.worker);
}

/// A unidirectional client whose connect was refused with an error has its disconnect push
/// queued (the envelope turns the error into one): the connection ends.
fn refused_uni_connect(session: &Session, link: &SocketLink) {
    if link.envelope == Envelope::UniWs && !session.is_connected() {
        link.close(DISCONNECT_CONNECTION_CLOSED);
    }
}

/// Runs a batch of commands in order, stopping at the first that closes the connection.
/// Boxed by the caller: per-command state must not live in the long-lived connection future.
pub(crate) async fn handle_commands(session: &mut Session, node: &Node, cmds: Vec<Command>) {
    for cmd in &cmds {
        if session.handle_command(node, cmd).await == Flow::Stop {
            return;
        }
    }
}

pub(crate) async fn handle_controls(session: &mut Session, node: &Node, controls: Vec<Control>) {
    for ctrl in controls {
        if session.handle_control(node, ctrl).await == Flow::Stop {
            return;
        }
    }
}

/// Why the connection ends.
pub(super) enum Closing {
    Server(DisconnectReason),
    /// The peer's close frame, with its code if it had one.
    Peer(Option<u16>),
    /// The peer hung up without a close frame.
    HungUp,
    Protocol(u16, &'static str),
    Broken,
}

/// Flushes what may be flushed, sends the close frame, and lingers briefly so the peer reads it
/// before the socket goes away.
pub(super) async fn goodbye(link: &SocketLink, reason: Closing) {
    // Whether we start the close handshake (then the peer may still be sending, so we shut down
    // our side and drain until it closes) or answer the peer's close frame (nothing more comes).
    let (frame, linger) = match &reason {
        Closing::Server(r) if r.code == DISCONNECT_CONNECTION_CLOSED.code => return,
        Closing::Server(r) => (ws::close_frame(r.code as u16, &r.reason), true),
        Closing::Protocol(code, reason) => (ws::close_frame(*code, reason), true),
        Closing::Peer(Some(code)) => (ws::close_frame(*code, ""), false),
        // A close frame without a code is answered with one without a code (RFC 6455 §5.5.1:
        // every close frame gets a close frame back).
        Closing::Peer(None) => (ws::frame(Opcode::Close, b""), false),
        // The peer hung up without a close frame: nobody is left to read one.
        Closing::HungUp | Closing::Broken => return,
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let mut pending = link.out.lock().expect("link out").queue.take_all();
        // Unidirectional clients get the reason as a disconnect push too.
        if link.envelope == Envelope::UniWs
            && let Closing::Server(r) = &reason
        {
            let push = Push {
                disconnect: Some(Disconnect { code: r.code, reason: r.reason.to_string(), reconnect: false }),
                ..Default::default()
            };
            pending.extend(envelope::encode(Envelope::UniWs, &Reply::push(push)));
        }
        pending.push(frame);
        for chunk in pending {
            if link.write_all(&chunk).await.is_err() {
                return;
            }
            bytes_out(chunk.len());
        }
        // Our side is done either way (over TLS: close_notify, which clients expect).
        link.close_write().await;
        if !linger {
            return;
        }
        // Drain until the peer closes, so unread input does not turn our close into a reset
        // (over TLS the records are dropped unread: nothing in them matters any more).
        let mut sink = [0u8; 512];
        loop {
            if link.stream.readable().await.is_err() {
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
pub(crate) async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
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
