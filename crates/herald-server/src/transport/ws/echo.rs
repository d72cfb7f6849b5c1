//! The test-only echo endpoint (`websocket.echo_endpoint_for_conformance_tests`, off by
//! default): every text or binary message goes back with its opcode. It runs the pieces a client
//! connection runs (the handshake, `herald_proto::ws::MessageReader`, the `SocketLink` queue and
//! writes, the goodbye) so that the Autobahn suite (`scripts/autobahn.sh`) tests the codec and
//! transport Herald really uses; only the client protocol is left out (no session, no timers).
//! Not sized for idle memory: it keeps one read buffer per connection.

use std::future::poll_fn;
use std::sync::Arc;

use herald_hub::{ClientLink, Transport};
use herald_proto::ws::{self, Event, MessageReader, Opcode, Progress};

use super::conn::{Closing, goodbye, retry_later};
use super::{WsSettings, bytes_in};
use crate::state::AppState;
use crate::transport::link::SocketLink;

/// Bytes asked for per read.
const READ_CHUNK: usize = 64 * 1024;

/// The echo connection task: runs until the connection is closed.
pub(super) async fn run(link: Arc<SocketLink>, state: Arc<AppState>, early: Vec<u8>) {
    metrics::counter!("herald_ws_echo_connections_total").increment(1);
    // Counted like a client connection: it holds a socket of the file-limit budget.
    state.connections.opened(Transport::WebSocket, link.worker);
    let reason = serve(&link, &state.ws, early).await;
    goodbye(&link, reason).await;
    state.connections.closed(Transport::WebSocket, link.worker);
}

async fn serve(link: &SocketLink, settings: &WsSettings, mut buf: Vec<u8>) -> Closing {
    let mut reader = MessageReader::new();
    loop {
        if !buf.is_empty()
            && let Some(closing) = echo_frames(link, &mut reader, &mut buf, settings.max_message)
        {
            return closing;
        }
        // A queue over `client.queue_max_size` (a peer that does not read) closes like a slow client.
        match link.flush() {
            Err(_) => return Closing::Broken,
            Ok(Some(reason)) => return Closing::Server(reason),
            Ok(None) => {}
        }
        let wake = poll_fn(|cx| link.poll_wake(cx, true)).await;
        if wake.broken {
            return Closing::Broken;
        }
        if wake.readable {
            let len = buf.len();
            buf.resize(len + READ_CHUNK, 0);
            match link.read_some(&mut buf[len..]) {
                Ok(0) => return Closing::HungUp,
                Ok(n) => {
                    bytes_in(n);
                    buf.truncate(len + n);
                }
                Err(e) if retry_later(&e) => buf.truncate(len),
                Err(_) => return Closing::HungUp,
            }
        }
    }
}

/// Echoes the complete messages at the start of `buf` and answers pings; keeps an incomplete
/// frame. Returns how the connection ends, if a frame ended it.
fn echo_frames(
    link: &SocketLink,
    reader: &mut MessageReader,
    buf: &mut Vec<u8>,
    max_message: usize,
) -> Option<Closing> {
    let mut peer_close = None;
    let progress = reader.parse(buf, max_message, |event| {
        match event {
            Event::Text(data) => link.send(ws::frame(Opcode::Text, data)),
            Event::Binary(data) => link.send(ws::frame(Opcode::Binary, data)),
            Event::Ping(payload) => link.send(ws::frame(Opcode::Pong, payload)),
            Event::Pong => {}
            Event::Close(code, _) => peer_close = Some(code),
        }
        true
    });
    match progress {
        // Echoes queued before the violation still go out, ahead of the close frame.
        Err(e) => Some(Closing::Protocol(e.code, e.reason)),
        Ok(Progress::Closed { .. }) => Some(Closing::Peer(peer_close.flatten())),
        Ok(Progress::Partial { consumed, .. }) => {
            buf.drain(..consumed);
            // A large message's buffer is not kept once it is echoed.
            if buf.is_empty() && buf.capacity() > 2 * READ_CHUNK {
                *buf = Vec::new();
            }
            None
        }
    }
}
