//! The entry of a connection accepted with `http_server.tls` on: the handshake, the first
//! request head, and then one of two ways on (docs/architecture.md, "TLS: the record layer in
//! the link"):
//!
//! - a WebSocket upgrade, or an SSE / HTTP-streaming GET (the long-lived, mostly idle
//!   connections), is answered here and its link gets the connection's TLS 1.3 record layer
//!   ([`Records`]): rustls's traffic keys are taken out of the connection, which is then
//!   dropped, so an idle TLS client costs its keys and no buffer more than a plain one;
//! - everything else (the API over hyper, streams opened by a POST, long polling, the admin
//!   console), TLS 1.2 and PROXY-protocol peers go through a pump: a task that decrypts and
//!   hands the connection to [`crate::entry`] as the far end of a loopback TCP pair, the bytes
//!   already read replayed first.
//!
//! The rustls configuration and certificate reloads stay in [`crate::tls`].

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, split};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::edge::gate;
use crate::entry::{self, HeadBuffer, HeadScan};
use crate::router::{Listener, Route, on_listener};
use crate::state::AppState;
use crate::transport::records::Records;
use crate::transport::stream::{self, StreamKind, request::StreamHead};
use crate::transport::ws;
use herald_proto::Command;

/// The pump's buffer towards the client: one TLS record's plaintext (16 KiB) at most.
const DOWN_BUFFER: usize = 16 * 1024;
/// The pump's buffer from the client, held for the connection's life: commands are small, and a
/// larger one only takes more reads.
const UP_BUFFER: usize = 1024;

/// Serves one TLS connection from `peer`, accepted on `listener`, until it ends.
pub async fn serve(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr, listener: Listener) {
    let Some(tls) = &state.tls else { return };
    let timeout = state.config.http_server.request_head_timeout;
    let mut conn = match tokio::time::timeout(timeout, tls.acceptor().accept(Bounded::new(stream))).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            metrics::counter!("herald_tls_handshakes_total", "outcome" => "error").increment(1);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics::counter!("herald_tls_handshakes_total", "outcome" => "timeout").increment(1);
            return;
        }
    };
    metrics::counter!("herald_tls_handshakes_total", "outcome" => "ok").increment(1);
    // TLS 1.2 keeps rustls's record layer; a PROXY protocol header is read by the entry; a
    // protocol other than HTTP/1.1 chosen by ALPN (HTTP/2) is hyper's from its first byte.
    let server = conn.get_ref().1;
    let tls13 = server.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let http1 = server.alpn_protocol().is_none_or(|p| p == b"http/1.1");
    if !tls13 || !http1 || (state.edge.proxy_protocol && state.edge.trusts(peer.ip())) {
        return to_entry(state.clone(), conn, Vec::new(), peer, listener).await;
    }
    let http = &state.config.http_server;
    let head =
        match tokio::time::timeout(http.request_head_timeout, read_head(&mut conn, http.max_request_head_size)).await {
            Ok(Ok(Ok(head))) => head,
            // Too large: the entry gives the answer (431), from the same bytes.
            Ok(Ok(Err(read))) => return to_entry(state.clone(), conn, read, peer, listener).await,
            Ok(Err(_)) => return,
            Err(_) => return entry::head_timed_out(),
        };
    let route = entry::first_route(&state.config, &head).map(|r| on_listener(&state.config, r, listener));
    let native = match &route {
        Some(Route::WebSocket) => Native::WebSocket(ws::Endpoint::Client),
        Some(Route::WebSocketEcho) => Native::WebSocket(ws::Endpoint::Echo),
        Some(Route::UniWebSocket) => Native::WebSocket(ws::Endpoint::Uni),
        Some(Route::Stream(kind)) => match native_stream(&state, *kind, &head) {
            Some(native) => native,
            None => return to_entry(state.clone(), conn, head, peer, listener).await,
        },
        _ => return to_entry(state.clone(), conn, head, peer, listener).await,
    };
    let route = route.expect("a routed request");
    // As the entry does for a plain connection (`entry::dispatch`).
    let peer = match gate::admit_head(&state, &route, peer, &head) {
        Ok(client) => client,
        Err((status, message)) => {
            return reject(conn, status, message, crate::edge::retry_after(status)).await;
        }
    };
    match native {
        Native::WebSocket(endpoint) => {
            let accepted = match ws::decide(&state, &head, endpoint) {
                Ok(accepted) => accepted,
                Err(r) => return reject(conn, r.status, r.message, r.extra).await,
            };
            if conn.write_all(&accepted.response).await.is_err() || conn.flush().await.is_err() {
                return;
            }
            let Some((tcp, records, head)) = into_records(conn, head, peer) else { return };
            metrics::counter!("herald_tls_connections_total", "served_by" => "link").increment(1);
            ws::start(state.clone(), tcp, Some(Box::new(records)), &head, accepted, peer, endpoint);
        }
        Native::Stream(kind, h, cmds) => {
            let response = stream::response_head(kind, &h);
            if conn.write_all(response.as_bytes()).await.is_err() || conn.flush().await.is_err() {
                return;
            }
            crate::transport::bytes_out(response.len());
            // Nothing the client sends after the request matters to a stream but its end.
            let Some((tcp, records, _)) = into_records(conn, Vec::new(), peer) else { return };
            metrics::counter!("herald_tls_connections_total", "served_by" => "link").increment(1);
            stream::start(state.clone(), tcp, Some(Box::new(records)), h, cmds, peer, kind).await;
        }
    }
}

/// What a TLS connection served by its link opens.
enum Native {
    WebSocket(ws::Endpoint),
    /// An SSE or HTTP-streaming request whose connect payload is in its URL, checked and
    /// decoded: its head and first commands.
    Stream(StreamKind, Box<StreamHead>, Vec<Command>),
}

/// A streaming request the link can serve: a GET (its connect payload in the URL) that passes
/// the checks. Anything else (a POST with a body, a preflight, a refusal) goes to the entry,
/// which answers it from the same bytes.
fn native_stream(state: &AppState, kind: StreamKind, head: &[u8]) -> Option<Native> {
    let (h, _) = stream::parse_head(state, head).ok()?;
    let limit = kind.config(&state.config).body_limit();
    match stream::check(state, kind, &h, limit) {
        Ok(Some(stream::Payload::Query(data))) => {
            let cmds = stream::prepare(kind, &h, data, state).ok()?;
            Some(Native::Stream(kind, Box::new(h), cmds))
        }
        _ => None,
    }
}

/// Takes the record layer out of a TLS 1.3 connection whose handshake is done and whose
/// output is flushed: what rustls decrypted already is appended to `head`.
fn into_records(
    mut conn: TlsStream<Bounded>,
    mut head: Vec<u8>,
    peer: SocketAddr,
) -> Option<(TcpStream, Records, Vec<u8>)> {
    let mut buf = [0u8; 1024];
    loop {
        match conn.get_mut().1.reader().read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return None,
        }
    }
    let (io, server) = conn.into_inner();
    // Reads stopped at a record boundary ([`Bounded`]), so rustls holds no partial record that
    // would be lost with it. Not expected otherwise; the connection is dropped if it happens.
    if !io.at_boundary() {
        tracing::debug!(%peer, "TLS connection not at a record boundary after its upgrade; closing it");
        return None;
    }
    let limit = match server.negotiated_cipher_suite() {
        Some(rustls::SupportedCipherSuite::Tls13(suite)) => suite.common.confidentiality_limit,
        _ => return None,
    };
    let records = match server.dangerous_extract_secrets() {
        Ok(secrets) => Records::new(secrets, limit),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "cannot take the TLS keys out of a connection; closing it");
            None
        }
    }?;
    Some((io.io, records, head))
}

/// Reads a request head through TLS: `Err` with the bytes read when it is larger than `max`.
async fn read_head(conn: &mut TlsStream<Bounded>, max: usize) -> io::Result<Result<Vec<u8>, Vec<u8>>> {
    let mut head = HeadBuffer::new(max);
    loop {
        let Some(room) = head.spare() else { return Ok(Err(head.into_bytes())) };
        let n = conn.read(room).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match head.filled(n) {
            HeadScan::Complete => return Ok(Ok(head.into_bytes())),
            HeadScan::TooLarge => return Ok(Err(head.into_bytes())),
            HeadScan::Partial => {}
        }
    }
}

/// Answers with `{"error": message}` through TLS and closes (close_notify, then FIN).
async fn reject(mut conn: TlsStream<Bounded>, status: u16, message: &str, extra: &str) {
    let _ = conn.write_all(&crate::transport::rejection(status, message, extra)).await;
    let _ = conn.shutdown().await;
}

/// Hands the decrypted connection to the entry through a loopback pair and the pump;
/// `replay`: plaintext read already, which the entry reads first.
async fn to_entry(
    state: Arc<AppState>,
    mut conn: TlsStream<Bounded>,
    replay: Vec<u8>,
    peer: SocketAddr,
    listener: Listener,
) {
    conn.get_mut().0.bounded = false;
    let settled = crate::tls_options::peer(conn.get_ref().1);
    metrics::counter!("herald_tls_connections_total", "served_by" => "pump").increment(1);
    let (inner, outer) = match loopback_pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the loopback connection for a TLS client; closing it");
            return;
        }
    };
    let serve = crate::tls_options::with_peer(settled, entry::handle_connection(state, inner, peer, listener));
    tokio::join!(Box::pin(serve), pump(conn, outer, replay));
}

/// The TCP stream under TLS. During the handshake and the first request head its reads stop
/// at the end of each TLS record, so when the connection turns into a [`Records`] nothing read
/// from the socket is left half-parsed inside rustls.
pub(crate) struct Bounded {
    io: TcpStream,
    bounded: bool,
    header: [u8; 5],
    /// Bytes of the current record's header read so far.
    have: usize,
    /// Bytes of the current record's body still to read.
    remaining: usize,
}

impl Bounded {
    fn new(io: TcpStream) -> Bounded {
        Bounded { io, bounded: true, header: [0; 5], have: 0, remaining: 0 }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

impl AsyncRead for Bounded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.bounded {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let in_header = this.remaining == 0;
        let limit = if in_header { 5 - this.have } else { this.remaining }.min(buf.remaining());
        let dst = buf.initialize_unfilled_to(limit);
        let mut part = ReadBuf::new(dst);
        ready!(Pin::new(&mut this.io).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        if in_header {
            this.header[this.have..this.have + n].copy_from_slice(part.filled());
            this.have += n;
            if this.have == 5 {
                this.have = 0;
                this.remaining = usize::from(u16::from_be_bytes([this.header[3], this.header[4]]));
            }
        } else {
            this.remaining -= n;
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Moves bytes between the TLS stream and the plaintext loopback end until the server side
/// closes (the entry finished with the connection) or the client goes away.
///
/// Idle memory matters more than copy speed here: towards the client (pushes, the bulk) a buffer
/// is allocated only once the loopback end is readable and freed after the write; from the
/// client (commands, small) a small fixed buffer.
async fn pump(tls: TlsStream<Bounded>, outer: TcpStream, replay: Vec<u8>) {
    let (mut tls_read, mut tls_write) = split(tls);
    let (outer_read, mut outer_write) = outer.into_split();
    let mut up = std::pin::pin!(async {
        if outer_write.write_all(&replay).await.is_err() {
            return;
        }
        drop(replay);
        let mut buf = [0u8; UP_BUFFER];
        loop {
            match tls_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if outer_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        // The client is done sending: the server sees the end of its request stream.
        let _ = outer_write.shutdown().await;
    });
    let down = async {
        loop {
            if outer_read.readable().await.is_err() {
                break;
            }
            let mut buf = vec![0u8; DOWN_BUFFER];
            match outer_read.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tls_write.write_all(&buf[..n]).await.is_err() || tls_write.flush().await.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        // close_notify, then FIN.
        let _ = tls_write.shutdown().await;
    };
    let mut down = std::pin::pin!(down);
    tokio::select! {
        _ = &mut down => {}
        // Keep delivering the server's answer until it closes (its own timeouts bound this).
        _ = &mut up => down.await,
    }
}

thread_local! {
    /// This thread's loopback listener: the far ends of the pump connections are accepted here.
    static LOOPBACK: RefCell<Option<std::net::TcpListener>> = const { RefCell::new(None) };
}

/// A connected pair of loopback TCP sockets: (the end for the entry, the end for the pump).
///
/// Done synchronously on the calling thread (a connect on loopback completes at once), so no
/// other pair made on this thread can be accepted in its place; a connection from anyone else
/// to the listener is recognised by its address and closed.
fn loopback_pair() -> io::Result<(TcpStream, TcpStream)> {
    LOOPBACK.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            listener.set_nonblocking(true)?;
            *slot = Some(listener);
        }
        let listener = slot.as_ref().expect("set above");
        let outer = std::net::TcpStream::connect(listener.local_addr()?)?;
        let ours = outer.local_addr()?;
        for _ in 0..64 {
            match listener.accept() {
                Ok((inner, from)) if from == ours => {
                    inner.set_nonblocking(true)?;
                    outer.set_nonblocking(true)?;
                    inner.set_nodelay(true)?;
                    outer.set_nodelay(true)?;
                    return Ok((TcpStream::from_std(inner)?, TcpStream::from_std(outer)?));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("the loopback connection was not accepted"))
    })
}
