//! Start-up, the worker threads and their accept loops, timers and graceful shutdown; and
//! [`StartupError`], why start-up failed. Accepted connections go to [`crate::entry`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use herald_hub::NodeIdentity;
use herald_proto::codes::DISCONNECT_SHUTDOWN;
use tokio::net::TcpListener;

use crate::config::{Config, WORK_STEALING};
use crate::config_error::ConfigError;
use crate::entry::handle_connection;
use crate::router::Listener;
use crate::state::AppState;
use crate::telemetry;

/// Why the server could not start (or a worker could not keep its listener).
#[derive(Debug)]
pub enum StartupError {
    /// Resolving, binding or listening on `address` failed.
    Bind {
        address: String,
        error: io::Error,
    },
    /// A listening socket could not be handed to the runtime or asked for its address.
    Listener(io::Error),
    Runtime(io::Error),
    WorkerThread(io::Error),
    Metrics(metrics_exporter_prometheus::BuildError),
    /// The configuration could not be loaded, or it (or a part only the node checks) is invalid.
    Config(ConfigError),
    /// The broker named by the config could not be reached or set up.
    Engine(herald_hub::broker::BrokerError),
}

impl From<ConfigError> for StartupError {
    fn from(e: ConfigError) -> Self {
        StartupError::Config(e)
    }
}

/// What the node rejects is a configuration problem like any other.
impl From<herald_hub::ConfigError> for StartupError {
    fn from(e: herald_hub::ConfigError) -> Self {
        StartupError::Config(e.into())
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartupError::Bind { address, error } => write!(f, "cannot listen on {address}: {error}"),
            StartupError::Listener(e) => write!(f, "{e}"),
            StartupError::Runtime(e) => write!(f, "cannot start runtime: {e}"),
            StartupError::WorkerThread(e) => write!(f, "cannot start worker thread: {e}"),
            StartupError::Metrics(e) => write!(f, "cannot install the Prometheus metrics recorder: {e}"),
            StartupError::Config(e) => write!(f, "{e}"),
            StartupError::Engine(e) => write!(f, "cannot start the broker: {e}"),
        }
    }
}

impl std::error::Error for StartupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartupError::Bind { error: e, .. } | StartupError::Runtime(e) | StartupError::WorkerThread(e) => Some(e),
            StartupError::Metrics(e) => Some(e),
            // Displayed as the inner error itself: its cause, not itself, comes next in a chain.
            StartupError::Listener(e) => e.source(),
            StartupError::Config(e) => e.source(),
            StartupError::Engine(e) => Some(e),
        }
    }
}

/// Runs Herald until SIGINT/SIGTERM (blocking; builds the runtimes).
///
/// By default (`runtime.scheduler = "thread_per_core"`) each worker thread has its own
/// single-threaded runtime and its own listening socket on the shared port (`SO_REUSEPORT`: the
/// kernel spreads new connections over them). A connection lives on the thread that accepted
/// it, so reads, commands and writes never cross threads; only deliveries from another thread
/// do (`docs/architecture.md`, "Threads"). The calling thread is worker 0 and also runs the
/// timers and the shutdown sequence. A network engine's connections run on one more thread,
/// the broker thread (`crate::engine::broker_thread`).
pub fn serve(config: Config) -> Result<(), StartupError> {
    serve_reloadable(config, None)
}

/// [`serve`], and on SIGHUP the configuration is loaded again from `source` ([`crate::reload`]).
pub fn serve_reloadable(config: Config, source: Option<crate::reload::Source>) -> Result<(), StartupError> {
    let workers = config.runtime.worker_count();
    let per_core = config.runtime.scheduler != WORK_STEALING;
    let listeners = bind_listeners(&config, if per_core { workers } else { 1 })?;
    let local = listeners[0].local_addr().map_err(StartupError::Listener)?;
    let internal = bind_internal(&config)?;
    let (accepting_tx, accepting) = tokio::sync::watch::channel(true);
    if !per_core {
        let listeners = Listeners { public: listeners.into_iter().next().expect("one listener"), internal };
        return serve_work_stealing(config, source, workers, listeners, local, accepting_tx, accepting);
    }
    // Every runtime is built before any thread starts, so a failure stops start-up cleanly.
    let runtimes = (0..workers).map(|_| worker_runtime()).collect::<Result<Vec<_>, _>>()?;
    let mut runtimes = runtimes.into_iter();
    let runtime = runtimes.next().expect("at least one worker");
    // Dropped last, after every worker: the engine's connections live on it.
    let broker_thread = broker_thread(&config)?;
    let state = runtime.block_on(new_state(config, source, local, workers, broker_thread.as_ref()))?;
    let (exit_tx, exit) = tokio::sync::watch::channel(false);

    let mut listeners = listeners.into_iter();
    let first = listeners.next().expect("at least one listener");
    let mut threads = Vec::new();
    for (i, (listener, worker)) in listeners.zip(runtimes).enumerate() {
        let (state, accepting, mut exit) = (state.clone(), accepting.clone(), exit.clone());
        let thread = std::thread::Builder::new()
            .name(format!("herald-worker-{}", i + 1))
            .spawn(move || -> Result<(), StartupError> {
                worker.block_on(async move {
                    start_relay(i + 1);
                    let listener = TcpListener::from_std(listener).map_err(StartupError::Listener)?;
                    accept_loop(&state, listener, Listener::Public, accepting).await;
                    // Keep serving the connections of this thread until the shutdown is over.
                    let _ = exit.wait_for(|done| *done).await;
                    Ok::<(), StartupError>(())
                })
            })
            .map_err(StartupError::WorkerThread)?;
        threads.push(thread);
    }

    let result = runtime.block_on(async {
        start_relay(0);
        run(state, Listeners { public: first, internal }, accepting_tx, accepting, shutdown_signal()).await
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
    source: Option<crate::reload::Source>,
    workers: usize,
    listeners: Listeners,
    local: SocketAddr,
    accepting_tx: tokio::sync::watch::Sender<bool>,
    accepting: tokio::sync::watch::Receiver<bool>,
) -> Result<(), StartupError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .thread_name("herald-worker")
        .build()
        .map_err(StartupError::Runtime)?;
    let broker_thread = broker_thread(&config)?;
    runtime.block_on(async {
        let state = new_state(config, source, local, 0, broker_thread.as_ref()).await?;
        run(state, listeners, accepting_tx, accepting, shutdown_signal()).await
    })
}

/// The broker thread, for a network engine unless `runtime.broker_thread` is off
/// (`crate::engine::broker_thread`).
fn broker_thread(config: &Config) -> Result<Option<crate::engine::broker_thread::BrokerThread>, StartupError> {
    if !config.runtime.broker_thread || !crate::engine::uses_network(config) {
        return Ok(None);
    }
    crate::engine::broker_thread::BrokerThread::start().map(Some).map_err(StartupError::WorkerThread)
}

fn worker_runtime() -> Result<tokio::runtime::Runtime, StartupError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartupError::Runtime)
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
pub fn bind_listeners(config: &Config, count: usize) -> Result<Vec<std::net::TcpListener>, StartupError> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let address = if config.http_server.address.is_empty() { "0.0.0.0" } else { &config.http_server.address };
    let addr = format!("{address}:{}", config.http_server.port);
    let fail = |error: io::Error| StartupError::Bind { address: addr.clone(), error };
    let mut sockaddr =
        addr.to_socket_addrs().map_err(fail)?.next().ok_or_else(|| fail(io::Error::other("no address")))?;
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

/// The sockets worker 0 accepts on: its share of the public port, and the internal port.
struct Listeners {
    public: std::net::TcpListener,
    internal: Option<std::net::TcpListener>,
}

/// Binds `http_server.internal_port` on `internal_address` (or `address`), when set. One socket
/// accepted by worker 0: the API, metrics and health see little traffic next to the clients.
pub fn bind_internal(config: &Config) -> Result<Option<std::net::TcpListener>, StartupError> {
    use std::net::ToSocketAddrs;
    let http = &config.http_server;
    let Some(port) = http.internal_port else { return Ok(None) };
    let address = [&http.internal_address, &http.address].into_iter().find(|a| !a.is_empty());
    let addr = format!("{}:{port}", address.map_or("0.0.0.0", |a| a.as_str()));
    let fail = |error: io::Error| StartupError::Bind { address: addr.clone(), error };
    let sockaddr = addr.to_socket_addrs().map_err(fail)?.next().ok_or_else(|| fail(io::Error::other("no address")))?;
    let open = || -> io::Result<std::net::TcpListener> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(sockaddr), Type::STREAM, Some(Protocol::TCP))?;
        // A restart binds again while the last run's connections are in TIME_WAIT.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&sockaddr.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    Ok(Some(open().map_err(fail)?))
}

/// Reloads the configuration on every SIGHUP ([`crate::reload`]); without a reloader, SIGHUP is
/// logged and ignored (instead of ending the process, its default action).
async fn reload_on_hangup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else { return };
        while hangup.recv().await.is_some() {
            // logrotate moved the files away: write to new ones from now on.
            for (path, error) in telemetry::reopen_log_files() {
                tracing::error!(path = %path.display(), %error, "cannot reopen a log file; still writing to the old one");
            }
            match &state.reloader {
                Some(reloader) => {
                    reloader.reload(&state);
                }
                None => tracing::warn!("SIGHUP ignored: this server cannot load its configuration again"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
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

/// Builds what request handlers share: the node, metrics and transport settings. With a network
/// engine (Redis, NATS) it connects first (and fails when the engine cannot be reached),
/// starting the engine's tasks on the broker thread.
async fn new_state(
    config: Config,
    source: Option<crate::reload::Source>,
    local: SocketAddr,
    pinned_workers: usize,
    broker_thread: Option<&crate::engine::broker_thread::BrokerThread>,
) -> Result<Arc<AppState>, StartupError> {
    let metrics = telemetry::install_metrics().map_err(StartupError::Metrics)?;
    let name =
        if config.node.name.is_empty() { format!("{}_{}", hostname(), local.port()) } else { config.node.name.clone() };
    let identity =
        NodeIdentity { uid: uuid::Uuid::new_v4().to_string(), name, version: env!("CARGO_PKG_VERSION").into() };
    // Boxed: the engines' connect futures are large (clippy's large_futures).
    let node = Box::pin(crate::engine::build_node(&config, identity, broker_thread)).await?;
    let socket_limit = socket_limit(open_file_limit(), open_descriptors(), config.http_server.file_limit_reserve)?;
    let tls = crate::tls::Tls::from_config(&config.http_server.tls)?;
    let reloader = source.map(|source| crate::reload::Reloader::new(source, config.clone()));
    let mut state = AppState::new(config, node, metrics, pinned_workers);
    state.socket_limit = socket_limit;
    state.tls = tls;
    state.reloader = reloader;
    let state = Arc::new(state);
    crate::transport::stream::emulation::Forwarded::register(&state);
    Ok(state)
}

/// How many sockets connections may hold: the file limit minus the descriptors already open
/// (listeners, runtimes, standard streams) and the reserve; unlimited when the limit is unknown.
fn socket_limit(limit: Option<u64>, open: usize, reserve: usize) -> Result<usize, ConfigError> {
    let Some(limit) = limit else { return Ok(usize::MAX) };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match limit.checked_sub(open).and_then(|free| free.checked_sub(reserve)).filter(|n| *n > 0) {
        Some(n) => {
            tracing::info!(
                "accepting up to {n} connections (file limit {limit}, {open} descriptors open at start, {reserve} reserved)"
            );
            Ok(n)
        }
        None => Err(ConfigError::invalid(
            "http_server.file_limit_reserve",
            format!(
                "{reserve} leaves no room for connections under the file limit of {limit} ({open} descriptors already open); \
                 raise the limit (ulimit -n, LimitNOFILE=) or lower the reserve"
            ),
        )),
    }
}

/// The soft limit on open file descriptors (`RLIMIT_NOFILE`); `None` when unlimited or unknown.
///
/// Read from `/proc/self/limits` (Linux), like the descriptor count below: no `unsafe` call to
/// `getrlimit` for a number read once at start.
fn open_file_limit() -> Option<u64> {
    soft_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// The soft limit in the "Max open files" row of a `/proc/<pid>/limits` text.
fn soft_file_limit(limits: &str) -> Option<u64> {
    let row = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    row.split_whitespace().next()?.parse().ok()
}

/// Descriptors open now (Linux: `/proc/self/fd`; elsewhere a small guess).
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|dir| dir.count()).unwrap_or(16)
}

/// Accepts connections on `listener` until `accepting` turns false. Each connection gets a
/// task on the current thread's runtime.
///
/// At `AppState::socket_limit` open sockets a new connection is accepted and closed at once:
/// the client sees a closed connection instead of waiting in the backlog, and the process keeps
/// descriptors for everything else (docs/architecture.md, "Near the file limit").
async fn accept_loop(
    state: &Arc<AppState>,
    listener: TcpListener,
    kind: Listener,
    mut accepting: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let open = state.connections.sockets();
                    if open >= state.socket_limit {
                        drop(stream);
                        refused(state, open);
                        continue;
                    }
                    state.connections.entered();
                    let entered = Entered(state.clone());
                    tokio::spawn(async move {
                        let state = entered.0.clone();
                        if state.tls.is_some() {
                            crate::tls_entry::serve(state.clone(), stream, peer, kind).await;
                        } else {
                            handle_connection(state.clone(), stream, peer, kind).await;
                        }
                        drop(entered);
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: the connection stays in the backlog;
                    // back off (longer while it lasts) instead of spinning, and say it rarely.
                    metrics::counter!("herald_accept_errors_total").increment(1);
                    if let Some((n, _)) = state.accept_failures.note(Instant::now()) {
                        tracing::warn!(error = %e, failures = n, "accept failed ({n} times since the last report; retrying with back-off)");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
            _ = stopped(&mut accepting) => break,
        }
    }
}

/// How often histogram samples are drained into their buckets.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counts a connection in `Connections::entered` until its entry task ends (or is dropped).
struct Entered(Arc<AppState>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.connections.left();
    }
}

/// A connection was closed unserved at the socket limit: count it; log the first, then once a
/// minute.
fn refused(state: &AppState, open: usize) {
    metrics::counter!("herald_connections_refused_total", "reason" => "file_limit").increment(1);
    match state.refusals.note(Instant::now()) {
        Some((_, true)) => tracing::warn!(
            open,
            limit = state.socket_limit,
            "refusing new connections: {open} open connections reach the limit of {} set by the file limit \
             (http_server.file_limit_reserve; raise ulimit -n)",
            state.socket_limit
        ),
        Some((n, false)) => tracing::warn!(
            open,
            refused = n,
            "refused {n} new connections since the last report: the file limit is still reached"
        ),
        None => {}
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
    listeners: Listeners,
    accepting_tx: tokio::sync::watch::Sender<bool>,
    accepting: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartupError> {
    let node = state.node.clone();
    #[cfg(feature = "otlp")]
    crate::telemetry::otlp::init(&state.config.opentelemetry)
        .map_err(|e| ConfigError::invalid("opentelemetry.enabled", e))?;
    let listener = TcpListener::from_std(listeners.public).map_err(StartupError::Listener)?;
    let local = listener.local_addr().map_err(StartupError::Listener)?;
    let internal = match listeners.internal {
        Some(internal) => Some(TcpListener::from_std(internal).map_err(StartupError::Listener)?),
        None => None,
    };
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
    // Heartbeats and the delivery probe, apart from the timers so a slow broker never delays
    // pings and expiry.
    let cluster = tokio::spawn({
        let node = node.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                node.set_rss(crate::admin::rss_bytes());
                node.trace_tick().await;
                node.cluster_tick().await;
            }
        }
    });

    // Replies to other nodes' surveys, sent apart from the heartbeats so an answer never
    // waits for a slow heartbeat publish.
    let survey_replies = tokio::spawn({
        let node = node.clone();
        async move { node.run_survey_replies().await }
    });

    // Histogram samples wait in the recorder until drained into their buckets: without a scrape
    // they would pile up (8 bytes per command), so they are drained every few seconds.
    let upkeep = tokio::spawn({
        let metrics = state.metrics.clone();
        async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                metrics.run_upkeep();
            }
        }
    });
    let reloads = tokio::spawn(reload_on_hangup(state.clone()));
    state.start_gateway_health();
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    let internal = match internal {
        Some(internal) => {
            let at = internal.local_addr().map_err(StartupError::Listener)?;
            // Logged before the main line, which tools (and the tests) wait for.
            tracing::info!(address = %at, scheme, "internal endpoints (API, metrics, health) on {at} ({scheme})");
            let (state, accepting) = (state.clone(), accepting.clone());
            Some(tokio::spawn(async move { accept_loop(&state, internal, Listener::Internal, accepting).await }))
        }
        None => None,
    };
    telemetry::note_base_memory();
    tracing::info!(address = %local, node = %node.identity().name, scheme, "herald listening on {local} ({scheme})");
    tokio::select! {
        _ = accept_loop(&state, listener, Listener::Public, accepting) => {}
        _ = shutdown => {}
    }
    if let Some(internal) = internal {
        internal.abort();
    }
    let _ = accepting_tx.send(false);
    state.shutting_down.store(true, Ordering::SeqCst);
    tracing::info!("shutting down: closing {} clients", node.hub().num_clients());
    let cfg = &state.config.shutdown;
    let _ = tokio::time::timeout(cfg.timeout, close_clients(&state, cfg.client_close_window)).await;
    if node.hooks().has_sink() {
        // The closed clients' events and what was queued: one try, bounded by the proxy's timeout
        // (a second when a reload turned webhooks off: what was queued before is still sent).
        let limit = node.hooks().config().map_or(Duration::from_secs(1), |hooks| hooks.spec.timeout);
        let left = node.hooks().drain(limit).await;
        if left > 0 {
            tracing::warn!(events = left, "lifecycle webhook events not sent before exit");
        }
    }
    timers.abort();
    cluster.abort();
    survey_replies.abort();
    upkeep.abort();
    reloads.abort();
    state.stop_gateway_health();
    #[cfg(feature = "otlp")]
    crate::telemetry::otlp::shutdown();
    tracing::info!("shutdown complete");
    Ok(())
}

/// Closes every client with 3001 (reconnect), spread over `window` so they do not reconnect
/// elsewhere all at once, then waits for their sessions to be cleaned up.
async fn close_clients(state: &AppState, window: Duration) {
    let node = &state.node;
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
    while state.connections.total() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "herald".into())
}

#[cfg(test)]
mod tests {

    #[test]
    fn reads_the_soft_file_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(soft_file_limit(limits), Some(20000));
        let unlimited = "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(soft_file_limit(unlimited), None);
        assert_eq!(soft_file_limit("nothing here"), None);
    }

    use super::*;

    fn loopback(port: u16) -> Config {
        let mut config = Config::default();
        config.http_server.address = "127.0.0.1".into();
        config.http_server.port = port;
        config
    }

    #[test]
    fn socket_limit_leaves_the_open_descriptors_and_the_reserve() {
        assert_eq!(socket_limit(Some(1024), 20, 64).unwrap(), 940);
        assert_eq!(socket_limit(None, 20, 64).unwrap(), usize::MAX);
        let err = socket_limit(Some(80), 20, 64).unwrap_err();
        assert_eq!(err.key(), Some("http_server.file_limit_reserve"));
        assert!(err.to_string().contains("file limit of 80"), "{err}");
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
        let err = bind_listeners(&loopback(port), 2).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
    }
}
