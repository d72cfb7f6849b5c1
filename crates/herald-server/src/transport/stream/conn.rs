//! The connection task of a streaming transport: runs the opening request's commands, then
//! writes what the hub and the session queue, runs commands delivered through `/emulation`,
//! and watches the socket only for the client going away. Ends with a disconnect push (unless
//! the client left or the close is silent, 3000) and the end of the stream.

use std::cell::RefCell;
use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_hub::{ClientLink, ConnectionInfo, Session};
use herald_proto::codes::{DISCONNECT_CONNECTION_CLOSED, DISCONNECT_WRITE_ERROR};
use herald_proto::envelope::{self, Envelope};
use herald_proto::{Command, Disconnect, DisconnectReason, Push, Reply};

use super::StreamKind;
use super::positions::Positions;
use crate::state::AppState;
use crate::transport::link::{SocketLink, Wake};
use crate::transport::ws::conn::{handle_commands, handle_controls, retry_later};
use crate::transport::{bytes_in, bytes_out};

/// How long a closing stream may take to flush its last items.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

thread_local! {
    /// Per-worker sink for whatever a streaming client sends after its request (nothing is
    /// expected; it is read only to see the end of the connection).
    static SINK: RefCell<Vec<u8>> = RefCell::new(vec![0; 4096]);
}

/// Why the stream ends.
enum Ending {
    Server(DisconnectReason),
    /// The client closed its side or the socket failed.
    Gone,
}

/// Starts a stream's session: counts the connection, registers an emulation session and runs
/// the opening request's commands (the connect). Runs in the task that read the request, so the
/// request's decoded commands are freed before the next connection is served (a burst of
/// opening requests does not hold them all at once).
pub(super) async fn start(
    link: &Arc<SocketLink>,
    state: &AppState,
    first: Vec<Command>,
    conn: ConnectionInfo,
    kind: StreamKind,
    headers: Vec<(String, String)>,
) -> Box<Session> {
    let transport = kind.transport();
    state.connections.opened(transport, link.worker);
    metrics::counter!("herald_stream_opened_total", "transport" => transport.name()).increment(1);
    if !kind.is_unidirectional() {
        state.emulation.insert(link);
    }
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    let mut session = Box::new(Session::with_headers(dyn_link, conn, headers));
    Box::pin(handle_commands(&mut session, &state.node, first)).await;
    if !session.is_connected() {
        // A refused connect: its error (a disconnect push on unidirectional streams) is queued,
        // or the session asked for a close with a code. Either way the stream ends.
        link.close(DISCONNECT_CONNECTION_CLOSED);
    } else if kind == StreamKind::UniSse {
        number_events(link);
    }
    session
}

/// The connection task, from the started session until the stream ends.
pub(super) async fn run(link: Arc<SocketLink>, state: Arc<AppState>, mut session: Box<Session>, kind: StreamKind) {
    let transport = kind.transport();
    let opened = crate::telemetry::now_ms();
    let ending = 'serve: loop {
        match link.flush() {
            Err(_) => break Ending::Gone,
            Ok(Some(reason)) => break Ending::Server(reason),
            Ok(None) => {}
        }
        let wake: Wake = poll_fn(|cx| link.poll_wake(cx, true)).await;
        if wake.broken {
            break Ending::Gone;
        }
        if wake.controls {
            Box::pin(handle_controls(&mut session, &state.node, link.take_controls())).await;
        }
        if wake.commands && !link.is_closing() {
            Box::pin(handle_commands(&mut session, &state.node, link.take_commands())).await;
        }
        if wake.readable {
            let gone = SINK.with(|sink| {
                let mut sink = sink.borrow_mut();
                // Bounded: a client that keeps sending is read a few buffers per wake-up.
                for _ in 0..4 {
                    match link.read_some(&mut sink) {
                        Ok(0) => return true,
                        Ok(n) => bytes_in(n),
                        Err(e) if retry_later(&e) => return false,
                        Err(_) => return true,
                    }
                }
                false
            });
            if gone {
                break 'serve Ending::Gone;
            }
        }
    };
    let code = match &ending {
        Ending::Server(r) => r.code,
        Ending::Gone => DISCONNECT_CONNECTION_CLOSED.code,
    };
    herald_hub::metrics::by_code("herald_client_disconnects_total", code);
    let why = match &ending {
        Ending::Server(r) => &*r.reason,
        Ending::Gone => "connection lost",
    };
    crate::telemetry::connection_closed(&session, &link.id, code, why, opened);
    if !kind.is_unidirectional() {
        state.emulation.remove(&link);
    }
    link.timers.set_closed();
    let ended = match &ending {
        Ending::Server(r) => r.clone(),
        Ending::Gone => DISCONNECT_CONNECTION_CLOSED,
    };
    Box::pin(session.close_with(&state.node, ended)).await;
    drop(session);
    if let Ending::Server(reason) = ending {
        Box::pin(goodbye(&link, reason)).await;
    }
    state.connections.closed(transport, link.worker);
}

/// The disconnect push of `reason` in the stream's envelope (none for a silent close).
fn disconnect_item(envelope: Envelope, reason: &DisconnectReason) -> Option<Bytes> {
    if reason.code == DISCONNECT_CONNECTION_CLOSED.code || reason.code == DISCONNECT_WRITE_ERROR.code {
        return None;
    }
    let push = Push {
        disconnect: Some(Disconnect { code: reason.code, reason: reason.reason.to_string(), reconnect: false }),
        ..Default::default()
    };
    envelope::encode(envelope, &Reply::push(push))
}

/// Writes what is queued and the disconnect push, then ends the stream.
async fn goodbye(link: &SocketLink, reason: DisconnectReason) {
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        let mut pending = link.out.lock().expect("link out").queue.take_all();
        pending.extend(disconnect_item(link.envelope, &reason));
        for item in pending {
            if link.write_all(&item).await.is_err() {
                return;
            }
            bytes_out(item.len());
        }
        link.close_write().await;
    })
    .await;
}

/// uni_sse, right after connect: gives the connect event and the publications queued with it
/// their `id:` lines and starts numbering later events ([`Positions`]). Nothing was written
/// yet, and the link's lock keeps deliveries out while the queue is rebuilt.
fn number_events(link: &SocketLink) {
    let mut out = link.out.lock().expect("link out");
    let queued = out.queue.take_all();
    let mut positions = None::<Positions>;
    let mut rebuilt = Vec::with_capacity(queued.len() * 2);
    for item in queued {
        let push = envelope::open(Envelope::UniSse, &item).and_then(|data| serde_json::from_slice::<Push>(&data).ok());
        let id = match (positions.as_mut(), push) {
            (None, Some(push)) if push.connect.is_some() => {
                let p = Positions::from_connect(&push);
                let line = p.id_line();
                positions = Some(p);
                Some(line)
            }
            (Some(p), Some(push)) => p.apply(&push).then(|| p.id_line()),
            _ => None,
        };
        rebuilt.extend(id.map(Bytes::from));
        rebuilt.push(item);
    }
    for item in rebuilt {
        out.queue.push(item);
    }
    out.positions = Some(Box::new(positions.unwrap_or_default()));
}
