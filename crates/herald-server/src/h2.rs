//! HTTP/2 on a TLS connection whose handshake chose `h2` (`http_server.tls.http2`): hyper's
//! HTTP/2 server on the decrypted stream, each request answered by the entry's request handler
//! ([`crate::entry::http_request`]: admission, the server API, `/emulation`, health, metrics,
//! admin, gateway routes).
//!
//! The transports that take the raw socket (WebSocket, SSE, HTTP streaming, long-polling) have
//! no socket to take here: their paths answer 505 with a JSON error naming HTTP/1.1.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::api;
use crate::edge::gateway::forward::Reply;
use crate::router::{Listener, Route, on_listener, route};
use crate::state::AppState;
use crate::transport::stream::handoff::Handoff;

/// The client connection preface's first line (RFC 9113 §3.4).
const PREFACE_START: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Streams one connection may have open at once: each is a task, and an API call is short.
const MAX_STREAMS: u32 = 128;

/// Whether `head` (a connection's first bytes) opens an HTTP/2 connection.
pub fn is_preface(head: &[u8]) -> bool {
    head.starts_with(PREFACE_START)
}

/// Serves the HTTP/2 connection `stream` whose first bytes, already read, are `head`.
pub async fn serve(state: Arc<AppState>, stream: TcpStream, head: Vec<u8>, peer: SocketAddr, listener: Listener) {
    let http = &state.config.http_server;
    // hyper spawns a task per stream: the connection's TLS facts go along explicitly.
    let settled = crate::tls_options::peer_now();
    let io = TokioIo::new(Prefixed { prefix: Bytes::from(head), inner: stream });
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = service_state.clone();
        crate::tls_options::with_peer(settled, answer(state, req, peer, listener))
    });
    metrics::counter!("herald_http2_connections_total").increment(1);
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(http.max_request_head_size).unwrap_or(u32::MAX))
        // A silent peer is found by pings; an idle one is closed by the client or at shutdown.
        .keep_alive_interval(Some(http.idle_timeout))
        .keep_alive_timeout(http.request_head_timeout)
        .serve_connection(io, service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HTTP/2 connection ended with an error");
    }
}

async fn answer(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
) -> Result<Response<Reply>, Infallible> {
    let routed = on_listener(&state.config, route(&state.config, req.uri().path(), false), listener);
    if needs_the_socket(&routed) {
        let message = "this endpoint needs HTTP/1.1 (its transport takes the connection); connect without h2";
        return Ok(api::transport_error(StatusCode::HTTP_VERSION_NOT_SUPPORTED, message).map(Reply::Full));
    }
    // No handoff can happen on this path: the routes that take one were answered above.
    crate::entry::http_request(state, req, peer, listener, &Handoff::default()).await
}

fn needs_the_socket(route: &Route<'_>) -> bool {
    matches!(
        route,
        Route::WebSocket
            | Route::WebSocketEcho
            | Route::WebSocketNotFirst
            | Route::UniWebSocket
            | Route::Stream(_)
            | Route::LongPoll
    )
}

/// The connection with the bytes already read put back in front.
struct Prefixed {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if crate::entry::replay_prefix(&mut self.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_and_http1_is_not() {
        assert!(is_preface(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(!is_preface(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!is_preface(b"PRI * HTTP/1.1\r\n\r\n"));
        assert!(needs_the_socket(&Route::LongPoll));
        assert!(!needs_the_socket(&Route::Health));
    }
}
