//! The connection entry: where every accepted TCP connection starts.
//!
//! Its first request head is read (with a size limit and a deadline) and routed
//! ([`crate::router`]). A route served by a transport that owns the raw socket (the WebSocket
//! upgrade) gets the socket and the bytes read so far; anything else goes to hyper with those
//! bytes replayed (API, health, metrics, keep-alive), and hyper's requests are routed the same
//! way.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::api::{self, Body};
use crate::router::{Route, route};
use crate::state::AppState;
use crate::transport::{self, ws};

/// Serves one accepted connection from `peer` until it ends.
pub async fn handle_connection(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr) {
    // On Linux the accepted socket inherits TCP_NODELAY from the listener.
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let http = &state.config.http_server;
    let head =
        match tokio::time::timeout(http.request_head_timeout, read_head(&stream, http.max_request_head_size)).await {
            Ok(Ok(head)) => head,
            Ok(Err(HeadError::TooLarge)) => return transport::reject(stream, 431, "request head too large", "").await,
            Ok(Err(HeadError::Closed)) | Err(_) => return,
        };
    let first = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.and_then(|p| p.split('?').next()).unwrap_or("");
                let upgrade = req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"));
                route(&state.config, path, upgrade) == Route::WebSocket
            }
            // Hyper answers a head it cannot parse.
            _ => false,
        }
    };
    if first {
        ws::upgrade(state, stream, head, peer).await;
    } else {
        // Boxed: hyper's connection state is large, and the task's future is as large as its
        // largest branch; the WebSocket path should not pay for copying it around.
        Box::pin(serve_http(state, stream, Bytes::from(head), peer)).await;
    }
}

/// Reads a request head: returns the bytes read (head and possibly more).
async fn read_head(stream: &TcpStream, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024.min(max));
    let mut checked: usize = 0;
    let mut first = true;
    loop {
        // The request usually arrives with the connection: try reading before waiting for a
        // readiness event from the reactor.
        if !std::mem::take(&mut first) {
            stream.readable().await.map_err(|_| HeadError::Closed)?;
        }
        if buf.len() == buf.capacity() {
            if buf.capacity() >= max {
                return Err(HeadError::TooLarge);
            }
            buf.reserve((buf.capacity() * 2).min(max) - buf.len());
        }
        let len = buf.len();
        buf.resize(buf.capacity(), 0);
        match stream.try_read(&mut buf[len..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(len);
                continue;
            }
            Err(_) => return Err(HeadError::Closed),
        }
        let from = checked.saturating_sub(3);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        checked = buf.len();
        if buf.len() >= max {
            return Err(HeadError::TooLarge);
        }
    }
}

enum HeadError {
    Closed,
    TooLarge,
}

async fn serve_http(state: Arc<AppState>, stream: TcpStream, head: Bytes, peer: SocketAddr) {
    let io = TokioIo::new(Rewind { prefix: head, inner: stream });
    let service = hyper::service::service_fn(move |req| http_request(state.clone(), req, peer));
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
}

/// Answers one request hyper read. Upgrades are not honoured here: hyper owns the connection.
async fn http_request(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    Ok(match route(&state.config, req.uri().path(), false) {
        Route::Health => api::health(&state),
        Route::Metrics => api::metrics(&state),
        Route::Api(name) => {
            let method = api::methods::find(name);
            api::handle(&state, method, req, peer).await
        }
        Route::WebSocket | Route::WebSocketNotFirst => api::transport_error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (it must be the first request on its connection)",
        ),
        Route::NotFound => api::transport_error(StatusCode::NOT_FOUND, "not found"),
    })
}

/// A stream that first replays bytes already read from it.
struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
