//! What every part of the server shares: [`AppState`] (node, configuration, metrics handle,
//! transport settings, shutdown flag), [`Connections`], the open-connection counters that
//! transports update and `/metrics`, shutdown and the accept loops read, and [`LogThrottle`]
//! for warnings that could otherwise repeat once per connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_hub::wake::MAX_WORKERS;
use herald_hub::{Node, Transport};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::transport::long_poll::Polls;
use crate::transport::stream::emulation::Sessions;
use crate::transport::ws::WsSettings;

/// What request handlers and connection tasks share.
pub struct AppState {
    pub node: Arc<Node>,
    pub config: Config,
    pub metrics: PrometheusHandle,
    pub ws: WsSettings,
    /// `uni_websocket`'s limits.
    pub uni_ws: WsSettings,
    /// Lower-case names of the client HTTP headers transports keep for the connect proxy
    /// (replaced when a reload changes the proxies).
    pub connect_headers: arc_swap::ArcSwap<Vec<String>>,
    pub shutting_down: AtomicBool,
    pub connections: Connections,
    /// Live SSE and HTTP-streaming sessions, found by `/emulation`.
    pub emulation: Sessions,
    /// Live long-polling sessions, found by their polls.
    pub polls: Polls,
    /// Open sockets ([`Connections::sockets`]) at which new connections are refused: the file
    /// limit minus what was open at start and `http_server.file_limit_reserve`.
    pub socket_limit: usize,
    /// Connections refused at `socket_limit`.
    pub refusals: LogThrottle,
    /// `accept` failures (usually out of file descriptors anyway).
    pub accept_failures: LogThrottle,
    /// Address lists, trusted proxies and admission limits.
    pub edge: crate::edge::Edge,
    /// Gateway routes, compiled; replaced whole by a reload ([`AppState::set_gateway`]). A
    /// request is matched and forwarded on one snapshot.
    pub gateway: arc_swap::ArcSwap<crate::edge::gateway::Gateway>,
    /// The active health checks of `gateway`'s routes.
    gateway_health: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// `http_server.tls`, when enabled.
    pub tls: Option<crate::tls::Tls>,
    /// Configuration reload on SIGHUP (absent when the server was started without a source to
    /// load the configuration from again, e.g. in tests of the library).
    pub reloader: Option<crate::reload::Reloader>,
    /// The admin console, when `admin.enabled`.
    pub admin: Option<crate::admin::Admin>,
}

impl AppState {
    /// Starts the health checks of the gateway routes in force (start-up; needs the runtime).
    pub fn start_gateway_health(&self) {
        let tasks = crate::edge::gateway::health::spawn_all(&self.gateway.load_full());
        *self.gateway_health.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
    }

    /// Stops the health checks (shutdown, or routes replaced).
    pub fn stop_gateway_health(&self) {
        let tasks = std::mem::take(&mut *self.gateway_health.lock().unwrap_or_else(|p| p.into_inner()));
        tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }

    /// Replaces the gateway routes (a reload): requests from now on are matched on `gateway`;
    /// those in flight finish on the routes they were matched on. The old routes' health
    /// checks stop and the new ones' start (upstreams start healthy, rate tables empty).
    pub fn set_gateway(&self, gateway: crate::edge::gateway::Gateway) {
        self.stop_gateway_health();
        self.gateway.store(Arc::new(gateway));
        self.start_gateway_health();
    }

    /// Takes the connect proxy's header names again after a reload replaced the proxies.
    pub fn set_connect_headers(&self) {
        self.connect_headers.store(Arc::new(connect_headers(&self.node)));
    }

    /// `pinned_workers`: worker threads that own their connections (thread-per-core); 0 with
    /// work stealing.
    /// `socket_limit` starts unlimited; start-up sets it from the file limit.
    pub fn new(config: Config, node: Arc<Node>, metrics: PrometheusHandle, pinned_workers: usize) -> Self {
        let ws = WsSettings::from_config(&config);
        let uni_ws = WsSettings::uni(&config);
        let connect_headers = arc_swap::ArcSwap::from_pointee(connect_headers(&node));
        // `loader::validate` refuses a configuration this cannot compile.
        let edge = crate::edge::Edge::new(&config).expect("edge policies validated with the configuration");
        let gateway =
            crate::edge::gateway::Gateway::new(&config).expect("gateway routes validated with the configuration");
        let admin = crate::admin::Admin::new(&config);
        AppState {
            admin,
            node,
            config,
            metrics,
            ws,
            uni_ws,
            connect_headers,
            shutting_down: AtomicBool::new(false),
            connections: Connections::new(pinned_workers),
            emulation: Sessions::default(),
            polls: Polls::default(),
            socket_limit: usize::MAX,
            refusals: LogThrottle::new(LOG_EVERY),
            accept_failures: LogThrottle::new(LOG_EVERY),
            edge,
            gateway: arc_swap::ArcSwap::from_pointee(gateway),
            gateway_health: std::sync::Mutex::default(),
            tls: None,
            reloader: None,
        }
    }
}

/// Every transport, in the order of the counters below. Adding a transport to
/// `herald_hub::Transport` breaks the match in [`slot`] until it gets its counter here.
const TRANSPORTS: [Transport; 7] = [
    Transport::WebSocket,
    Transport::Sse,
    Transport::HttpStream,
    Transport::UniWebSocket,
    Transport::UniSse,
    Transport::UniHttpStream,
    Transport::UniLongPoll,
];

fn slot(transport: Transport) -> usize {
    match transport {
        Transport::WebSocket => 0,
        Transport::Sse => 1,
        Transport::HttpStream => 2,
        Transport::UniWebSocket => 3,
        Transport::UniSse => 4,
        Transport::UniHttpStream => 5,
        Transport::UniLongPoll => 6,
    }
}

/// Open connections per transport and per worker thread.
///
/// Per worker because with thread-per-core workers keep their connections for life, so an
/// uneven spread stays visible in `/metrics`.
pub struct Connections {
    open: [AtomicUsize; TRANSPORTS.len()],
    per_worker: [AtomicUsize; MAX_WORKERS],
    pinned_workers: usize,
    /// Accepted sockets not (yet) owned by a transport: reading the first head, plain HTTP.
    entering: AtomicUsize,
}

impl Connections {
    fn new(pinned_workers: usize) -> Self {
        Connections {
            open: [const { AtomicUsize::new(0) }; TRANSPORTS.len()],
            per_worker: [const { AtomicUsize::new(0) }; MAX_WORKERS],
            pinned_workers: pinned_workers.min(MAX_WORKERS),
            entering: AtomicUsize::new(0),
        }
    }

    /// An accepted socket starts its first request; [`Connections::left`] when that task ends.
    pub fn entered(&self) {
        self.entering.fetch_add(1, Ordering::Relaxed);
    }

    pub fn left(&self) {
        self.entering.fetch_sub(1, Ordering::Relaxed);
    }

    /// Every accepted socket still open: transport connections and those in [`Connections::entered`].
    /// Long-poll sessions hold no socket of their own (their polls are plain HTTP requests,
    /// counted in `entering`), so they are left out.
    pub fn sockets(&self) -> usize {
        let sessions = self.open[slot(Transport::UniLongPoll)].load(Ordering::Relaxed);
        self.total() - sessions + self.entering.load(Ordering::Relaxed)
    }

    /// A connection of `transport` was accepted by the task on `worker`.
    pub fn opened(&self, transport: Transport, worker: u16) {
        self.open[slot(transport)].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.per_worker.get(usize::from(worker)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The connection counted by [`Connections::opened`] with the same arguments is gone.
    pub fn closed(&self, transport: Transport, worker: u16) {
        self.open[slot(transport)].fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = self.per_worker.get(usize::from(worker)) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections of every transport.
    pub fn total(&self) -> usize {
        self.open.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    /// Open connections per transport.
    pub fn by_transport(&self) -> impl Iterator<Item = (Transport, usize)> + '_ {
        TRANSPORTS.iter().map(|t| (*t, self.open[slot(*t)].load(Ordering::Relaxed)))
    }

    /// Open connections per pinned worker (none with work stealing, where the count means
    /// nothing: tasks move between threads).
    pub fn by_worker(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_worker[..self.pinned_workers].iter().map(|n| n.load(Ordering::Relaxed))
    }
}

/// How often a repeated warning is logged again.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Lets a warning that may happen thousands of times a second be logged once, then at most once
/// per interval with the number of occurrences since the last line.
pub struct LogThrottle {
    every: Duration,
    state: Mutex<Throttled>,
}

struct Throttled {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl LogThrottle {
    pub fn new(every: Duration) -> Self {
        LogThrottle { every, state: Mutex::new(Throttled { last_logged: None, unlogged: 0 }) }
    }

    /// Records one occurrence at `now`. `Some(n)` means: log now, `n` occurrences (this one
    /// included) since the last line; `first` is true when nothing was logged before.
    pub fn note(&self, now: Instant) -> Option<(u64, bool)> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.unlogged += 1;
        let first = state.last_logged.is_none();
        if state.last_logged.is_some_and(|at| now.saturating_duration_since(at) < self.every) {
            return None;
        }
        state.last_logged = Some(now);
        Some((std::mem::take(&mut state.unlogged), first))
    }
}

/// The client HTTP headers transports keep for the node's connect proxy.
fn connect_headers(node: &Node) -> Vec<String> {
    let mut names = node.backend().table().connect_header_names();
    // Kept with or without a connect proxy: the connection's trace goes on in its log lines
    // and proxy calls. Only connections that send one pay for it.
    if !names.iter().any(|n| n == "traceparent") {
        names.push("traceparent".into());
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_warning_is_logged_once_then_once_per_interval_with_a_count() {
        let t = LogThrottle::new(Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(t.note(start), Some((1, true)));
        for i in 1..=100 {
            assert_eq!(t.note(start + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(t.note(start + Duration::from_secs(60)), Some((101, false)));
        assert_eq!(t.note(start + Duration::from_secs(61)), None);
        assert_eq!(t.note(start + Duration::from_secs(600)), Some((2, false)));
    }

    #[test]
    fn sockets_count_entering_and_transport_connections() {
        let c = Connections::new(1);
        c.entered();
        c.entered();
        c.opened(Transport::WebSocket, 0);
        assert_eq!(c.sockets(), 3);
        c.left();
        assert_eq!((c.sockets(), c.total()), (2, 1));
        // A long-poll session has no socket (its polls are counted while they are entering).
        c.opened(Transport::UniLongPoll, 0);
        assert_eq!((c.sockets(), c.total()), (2, 2));
    }

    #[test]
    fn counts_per_transport_and_pinned_worker() {
        let c = Connections::new(2);
        c.opened(Transport::WebSocket, 1);
        c.opened(Transport::WebSocket, 1);
        c.opened(Transport::WebSocket, 5);
        assert_eq!(c.total(), 3);
        assert_eq!(c.by_transport().next(), Some((Transport::WebSocket, 3)));
        assert!(c.by_transport().skip(1).all(|(_, n)| n == 0));
        assert_eq!(c.by_worker().collect::<Vec<_>>(), [0, 2], "only pinned workers are listed");
        c.closed(Transport::WebSocket, 1);
        c.closed(Transport::WebSocket, 5);
        assert_eq!(c.total(), 1);
        assert_eq!(c.by_worker().collect::<Vec<_>>(), [0, 1]);
    }
}
