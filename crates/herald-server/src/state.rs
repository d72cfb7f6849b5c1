//! What every part of the server shares: [`AppState`] (node, configuration, metrics handle,
//! transport settings, shutdown flag) and [`Connections`], the open-connection counters that
//! transports update and `/metrics` and shutdown read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use herald_hub::wake::MAX_WORKERS;
use herald_hub::{Node, Transport};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::transport::ws::WsSettings;

/// What request handlers and connection tasks share.
pub struct AppState {
    pub node: Arc<Node>,
    pub config: Config,
    pub metrics: PrometheusHandle,
    pub ws: WsSettings,
    pub shutting_down: AtomicBool,
    pub connections: Connections,
}

impl AppState {
    /// `pinned_workers`: worker threads that own their connections (thread-per-core); 0 with
    /// work stealing.
    pub fn new(config: Config, node: Arc<Node>, metrics: PrometheusHandle, pinned_workers: usize) -> Self {
        let ws = WsSettings::from_config(&config);
        AppState {
            node,
            config,
            metrics,
            ws,
            shutting_down: AtomicBool::new(false),
            connections: Connections::new(pinned_workers),
        }
    }
}

/// Every transport, in the order of the counters below. Adding a transport to
/// `herald_hub::Transport` breaks the match in [`slot`] until it gets its counter here.
const TRANSPORTS: [Transport; 1] = [Transport::WebSocket];

fn slot(transport: Transport) -> usize {
    match transport {
        Transport::WebSocket => 0,
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
}

impl Connections {
    fn new(pinned_workers: usize) -> Self {
        Connections {
            open: [const { AtomicUsize::new(0) }; TRANSPORTS.len()],
            per_worker: [const { AtomicUsize::new(0) }; MAX_WORKERS],
            pinned_workers: pinned_workers.min(MAX_WORKERS),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_transport_and_pinned_worker() {
        let c = Connections::new(2);
        c.opened(Transport::WebSocket, 1);
        c.opened(Transport::WebSocket, 1);
        c.opened(Transport::WebSocket, 5);
        assert_eq!(c.total(), 3);
        assert_eq!(c.by_transport().collect::<Vec<_>>(), [(Transport::WebSocket, 3)]);
        assert_eq!(c.by_worker().collect::<Vec<_>>(), [0, 2], "only pinned workers are listed");
        c.closed(Transport::WebSocket, 1);
        c.closed(Transport::WebSocket, 5);
        assert_eq!(c.total(), 1);
        assert_eq!(c.by_worker().collect::<Vec<_>>(), [0, 1]);
    }
}
