//! Start-up, the accept loop, timers and graceful shutdown.
//!
//! Every TCP connection starts the same way: its request head is read (with a size limit and a
//! deadline) and routed. A WebSocket upgrade on the WebSocket path is handled by our own
//! handshake and handed to [`crate::ws`], which owns the raw socket from then on; anything else
//! goes to hyper with the bytes already read replayed (API, health, metrics, keep-alive).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use herald_hub::{ConnectionInfo, Node, NodeIdentity, SystemClock, Transport};
use herald_proto::codes::DISCONNECT_SHUTDOWN;
use herald_proto::{Encoding, Framing};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::config::{Config, WORK_STEALING};
use crate::telemetry;
use crate::ws::{self, WsSettings};

/// What request handlers share.
pub struct AppState {
    pub node: Arc<Node>,
    pub config: Config,
    pub metrics: PrometheusHandle,
    pub ws: Arc<WsSettings>,
    pub shutting_down: AtomicBool,
    /// Worker threads that own their connections (thread-per-core); 0 with work stealing.
    pub pinned_workers: usize,
}

/// Runs Herald until SIGINT/SIGTERM (blocking; builds the runtimes).
///
/// By default (`runtime.scheduler = "thread_per_core"`) each worker thread has its own
/// single-threaded runtime and its own listening socket on the shared port (`SO_REUSEPORT`: the
/// kernel spreads new connections over them). A connection lives on the thread that accepted
/// it, so reads, commands and writes never cross threads; only deliveries from another thread
/// do (`docs/architecture.md`, "Threads"). The calling thread is worker 0 and also runs the
/// timers and the shutdown sequence.
pub fn serve(config: Config) -> Result<(), String> {
    let workers = config.runtime.worker_count();
    let per_core = config.runtime.scheduler != WORK_STEALING;
    let listeners = bind_listeners(&config, if per_core { workers } else { 1 })?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let (accepting_tx, accepting) = tokio::sync::watch::channel(true);
    if !per_core {
        return serve_work_stealing(config, workers, listeners, local, accepting_tx, accepting);
    }
    // Every runtime is built before any thread starts, so a failure stops start-up cleanly.
    let runtimes = (0..workers).map(|_| worker_runtime()).collect::<Result<Vec<_>, _>>()?;
    let mut runtimes = runtimes.into_iter();
    let runtime = runtimes.next().expect("at least one worker");
    let state = runtime.block_on(async { new_state(config, local, workers) })?;
    let (exit_tx, exit) = tokio::sync::watch::channel(false);

    let mut listeners = listeners.into_iter();
    let first = listeners.next().expect("at least one listener");
    let mut threads = Vec::new();
    for (i, (listener, worker)) in listeners.zip(runtimes).enumerate() {
        let (state, accepting, mut exit) = (state.clone(), accepting.clone(), exit.clone());
        let thread = std::thread::Builder::new()
            .name(format!("herald-worker-{}", i + 1))
            .spawn(move || -> Result<(), String> {
                worker.block_on(async move {
                    start_relay(i + 1);
                    let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                    accept_loop(&state, listener, accepting).await;
                    // Keep serving the connections of this thread until the shutdown is over.
                    let _ = exit.wait_for(|done| *done).await;
                    Ok::<(), String>(())
                })
            })
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        threads.push(thread);
    }

    let result = runtime.block_on(async {
        start_relay(0);
        let listener = TcpListener::from_std(first).map_err(|e| e.to_string())?;
        run(state, listener, accepting_tx, accepting, shutdown_signal()).await
    });
    let _ = exit_tx.send(true);
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "worker thread failed"),
            Err(_) => tracing::error!("worker thread panicked"),
        }
    }
    result
}

/// Registers the calling thread as worker `index` and runs its wake-up relay
/// (`herald_hub::wake`). Call inside the worker's runtime.
fn start_relay(index: usize) {
    if let Some(relay) = u16::try_from(index).ok().and_then(herald_hub::wake::register_worker) {
        tokio::spawn(relay);
    }
}

/// `runtime.scheduler = "work_stealing"`: one tokio multi-thread runtime; a connection's task
/// may run on any worker.
fn serve_work_stealing(
    config: Config,
    workers: usize,
    listeners: Vec<std::net::TcpListener>,
    local: SocketAddr,
    accepting_tx: tokio::sync::watch::Sender<bool>,
    accepting: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("herald-worker")
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    runtime.block_on(async {
        let state = new_state(config, local, 0)?;
        let listener = listeners.into_iter().next().expect("one listener");
        let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        run(state, listener, accepting_tx, accepting, shutdown_signal()).await
    })
}

fn worker_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("cannot start runtime: {e}"))
}

/// Accept backlog asked of the kernel, which caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 65535;

/// Binds `count` listening sockets on the address named by `http_server.address` and
/// `http_server.port`, all on the same port.
///
/// `SO_REUSEPORT` would let another process of the same user bind the port too and silently
/// take a share of the connections; a probe bind without it fails first if anything listens
/// there already (a second Herald included). The accept backlog asked for is 65535, which the
/// kernel caps at `net.core.somaxconn`: the host's setting decides how many connections of a
/// reconnect storm can wait while the accept loops catch up (docs/operations.md).
pub fn bind_listeners(config: &Config, count: usize) -> Result<Vec<std::net::TcpListener>, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let address = if config.http_server.address.is_empty() { "0.0.0.0" } else { &config.http_server.address };
    let addr = format!("{address}:{}", config.http_server.port);
    let fail = |e: io::Error| format!("cannot listen on {addr}: {e}");
    let mut sockaddr =
        addr.to_socket_addrs().map_err(fail)?.next().ok_or_else(|| format!("cannot listen on {addr}: no address"))?;
    let socket = |sockaddr: SocketAddr, reuse_port: bool| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))))]
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        // Accepted sockets inherit it on Linux: one system call less per connection.
        socket.set_tcp_nodelay(true)?;
        socket.bind(&sockaddr.into())?;
        Ok(socket)
    };
    let open = |sockaddr: SocketAddr, reuse_port: bool| -> io::Result<std::net::TcpListener> {
        let socket = socket(sockaddr, reuse_port)?;
        socket.listen(LISTEN_BACKLOG)?;
        Ok(socket.into())
    };
    let shared = cfg!(all(unix, not(any(target_os = "solaris", target_os = "illumos", target_os = "cygwin"))));
    if !shared || count == 1 {
        // One socket; other workers accept from duplicates of it.
        let first = open(sockaddr, false).map_err(fail)?;
        let mut all = Vec::with_capacity(count);
        for _ in 1..count {
            all.push(first.try_clone().map_err(fail)?);
        }
        all.insert(0, first);
        return Ok(all);
    }
    if sockaddr.port() != 0 {
        // Bound, never listening: it cannot take a connection meant for the real sockets.
        drop(socket(sockaddr, false).map_err(fail)?);
    }
    let mut all = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = open(sockaddr, true).map_err(fail)?;
        // With port 0 the first bind picks the port; the others join it.
        sockaddr.set_port(listener.local_addr().map_err(fail)?.port());
        all.push(listener);
    }
    Ok(all)
}

/// Completes on SIGTERM or SIGINT. The handlers are registered when this is called, not when
/// the future is first polled: a signal that arrives right after the "listening" line (a
/// supervisor, a test) must start a graceful shutdown instead of killing the process.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn recv(signal: std::io::Result<Signal>) {
            match signal {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Builds what request handlers share: the node, metrics and transport settings.
fn new_state(config: Config, local: SocketAddr, pinned_workers: usize) -> Result<Arc<AppState>, String> {
    let metrics = telemetry::install_metrics()?;
    let name =
        if config.node.name.is_empty() { format!("{}_{}", hostname(), local.port()) } else { config.node.name.clone() };
    let identity =
        NodeIdentity { uid: uuid::Uuid::new_v4().to_string(), name, version: env!("CARGO_PKG_VERSION").into() };
    let node = Node::new(config.hub(), identity, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
    let ws = Arc::new(WsSettings {
        max_message: config.websocket.message_size_limit,
        queue_max: config.client.queue_max_size,
        max_commands: config.client.max_commands_per_frame,
        // Timer ticks are whole seconds and a connection opens somewhere inside the current
        // tick: round the delay up and add that partial tick, so that no connection is closed
        // as stale before the full `client.stale_close_delay`.
        stale_after: u32::try_from(config.client.stale_close_delay.as_millis().div_ceil(1000).max(1) + 1)
            .unwrap_or(u32::MAX),
    });
    Ok(Arc::new(AppState { node, config, metrics, ws, shutting_down: AtomicBool::new(false), pinned_workers }))
}

/// Accepts connections on `listener` until `accepting` turns false. Each connection gets a
/// task on the current thread's runtime.
async fn accept_loop(state: &Arc<AppState>, listener: TcpListener, mut accepting: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(handle_connection(state.clone(), stream, peer));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut accepting) => break,
        }
    }
}

/// Completes once `accepting` is false (or its sender is gone).
async fn stopped(accepting: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let on = *accepting.borrow_and_update();
        if !on || accepting.changed().await.is_err() {
            return;
        }
    }
}

/// Worker 0: runs the shared timers and its accept loop until `shutdown` completes, then stops
/// every accept loop and shuts down gracefully.
async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    accepting_tx: tokio::sync::watch::Sender<bool>,
    accepting: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let node = state.node.clone();
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let timers = tokio::spawn({
        let node = node.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                node.run_timers();
            }
        }
    });

    tracing::info!(address = %local, node = %node.identity().name, "herald listening on {local}");
    tokio::select! {
        _ = accept_loop(&state, listener, accepting) => {}
        _ = shutdown => {}
    }
    let _ = accepting_tx.send(false);
    state.shutting_down.store(true, Ordering::SeqCst);
    tracing::info!("shutting down: closing {} clients", node.hub().num_clients());
    let cfg = &state.config.shutdown;
    let _ = tokio::time::timeout(cfg.timeout, close_clients(&node, cfg.client_close_window)).await;
    timers.abort();
    tracing::info!("shutdown complete");
    Ok(())
}

/// Closes every client with 3001 (reconnect), spread over `window` so they do not reconnect
/// elsewhere all at once, then waits for their sessions to be cleaned up.
async fn close_clients(node: &Node, window: Duration) {
    let links = node.hub().all_links();
    if !links.is_empty() {
        let batches = links.len().clamp(1, 20);
        let per_batch = links.len().div_ceil(batches);
        let pause = window / batches as u32;
        for chunk in links.chunks(per_batch) {
            herald_hub::wake::batch(|| {
                for link in chunk {
                    link.close(DISCONNECT_SHUTDOWN);
                }
            });
            tokio::time::sleep(pause).await;
        }
    }
    drop(links);
    while node.hub().num_clients() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the close frames reach the sockets.
    let deadline = Instant::now() + Duration::from_secs(1);
    while ws::OPEN_CONNECTIONS.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "herald".into())
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

/// A plain HTTP response written straight to the socket (before hyper is involved).
fn raw_response(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn reject(mut stream: TcpStream, status: u16, message: &str, extra: &str) {
    metrics::counter!("herald_transport_rejected_total", "status" => status.to_string()).increment(1);
    let body = serde_json::json!({ "error": message }).to_string();
    let _ = stream.write_all(&raw_response(status, status_reason(status), extra, &body)).await;
    let _ = stream.shutdown().await;
}

async fn handle_connection(state: Arc<AppState>, stream: TcpStream, peer: SocketAddr) {
    // On Linux the accepted socket inherits TCP_NODELAY from the listener.
    #[cfg(not(target_os = "linux"))]
    let _ = stream.set_nodelay(true);
    let http = &state.config.http_server;
    let head =
        match tokio::time::timeout(http.request_head_timeout, read_head(&stream, http.max_request_head_size)).await {
            Ok(Ok(head)) => head,
            Ok(Err(HeadError::TooLarge)) => return reject(stream, 431, "request head too large", "").await,
            Ok(Err(HeadError::Closed)) | Err(_) => return,
        };
    let ws_cfg = &state.config.websocket;
    let is_ws = !ws_cfg.disabled && {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        matches!(req.parse(&head), Ok(httparse::Status::Complete(_)))
            && req.path.map(|p| p.split('?').next() == Some(ws_cfg.handler_prefix.as_str())).unwrap_or(false)
            && req.headers.iter().any(|h| h.name.eq_ignore_ascii_case("upgrade"))
    };
    if is_ws {
        websocket(state, stream, head, peer).await;
    } else {
        // Boxed: hyper's connection state is large, and the task's future is as large as its
        // largest branch; the WebSocket path should not pay for copying it around.
        Box::pin(serve_http(state, stream, Bytes::from(head))).await;
    }
}

async fn websocket(state: Arc<AppState>, mut stream: TcpStream, head: Vec<u8>, peer: SocketAddr) {
    if state.shutting_down.load(Ordering::Relaxed) {
        return reject(stream, 503, "shutting down", "").await;
    }
    // Everything needed from the borrowed request is extracted before any await.
    let decision = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return reject(stream, 400, "malformed request", "").await,
        };
        let query = req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q).unwrap_or("");
        match herald_proto::ws::check_upgrade(req.method.unwrap_or(""), req.headers) {
            Err(e) => Err((e.status, e.message)),
            Ok(up) => {
                if !ws::origin_allowed(up.origin, up.host, &state.config.client.allowed_origins) {
                    Err((403, "origin not allowed"))
                } else {
                    let (encoding, protocol) = ws::negotiate(&up.protocols, query);
                    let native_ping = query.split('&').any(|kv| kv == "cf_ws_frame_ping_pong=true");
                    Ok((herald_proto::ws::switching_protocols(up.key, protocol), encoding, native_ping, head_len))
                }
            }
        }
    };
    let (response, encoding, native_ping, head_len) = match decision {
        Ok(d) => d,
        Err((status, message)) => {
            let extra = match status {
                426 => "Sec-WebSocket-Version: 13\r\n",
                // RFC 9110 §15.5.6: a 405 names the allowed methods.
                405 => "Allow: GET\r\n",
                _ => "",
            };
            return reject(stream, status, message, extra).await;
        }
    };
    if stream.write_all(&response).await.is_err() {
        return;
    }
    let framing = match encoding {
        Encoding::Json => Framing::WsText,
        Encoding::Protobuf => Framing::WsBinary,
    };
    let early = head[head_len..].to_vec();
    let link = ws::new_link(stream, framing, native_ping, &state.node, &state.ws);
    // The long-lived task holds only the connection loop, not this handshake's state.
    let conn = ConnectionInfo::new(peer, Transport::WebSocket);
    tokio::spawn(ws::run(link, state.node.clone(), state.ws.clone(), early, conn));
}

async fn serve_http(state: Arc<AppState>, stream: TcpStream, head: Bytes) {
    let io = TokioIo::new(Rewind { prefix: head, inner: stream });
    let service = hyper::service::service_fn(move |req| crate::api::handle(state.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16) -> Config {
        let mut config = Config::default();
        config.http_server.address = "127.0.0.1".into();
        config.http_server.port = port;
        config
    }

    #[test]
    fn workers_share_one_port_and_accepted_sockets_have_nodelay() {
        let listeners = bind_listeners(&loopback(0), 3).unwrap();
        let port = listeners[0].local_addr().unwrap().port();
        assert!(listeners.iter().all(|l| l.local_addr().unwrap().port() == port));
        // Connections spread over the listeners; accept them all from whichever has them.
        let clients: Vec<_> = (0..30).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
        let mut accepted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while accepted.len() < clients.len() && Instant::now() < deadline {
            for l in &listeners {
                if let Ok((s, _)) = l.accept() {
                    accepted.push(s);
                }
            }
        }
        assert_eq!(accepted.len(), clients.len());
        #[cfg(target_os = "linux")]
        assert!(accepted.iter().all(|s| s.nodelay().unwrap()), "TCP_NODELAY inherited from the listener");
        // The port is taken now, for a listener with or without SO_REUSEPORT.
        let err = bind_listeners(&loopback(port), 2).unwrap_err();
        assert!(err.starts_with(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }
}
