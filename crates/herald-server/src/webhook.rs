//! The lifecycle webhook sender: implements `herald_hub::webhook::LifecycleSink` with a
//! bounded queue (`herald_hub::webhook::Batcher` under a mutex) and one sender task on its own
//! thread, which posts batches to the named proxy through the proxies' HTTP client
//! (`proxy::HttpProxy`: timeout, static headers, `traceparent`, request metrics with
//! `kind="webhook"`).
//!
//! A session's push takes the lock, appends and returns: it never waits for the backend. When
//! the queue is full the event is dropped and counted. Batches go out one at a time, a failed
//! one is retried before later ones, so each client's events keep their order. At a graceful
//! shutdown the queue is sent at once (`drain`) for up to the webhook proxy's timeout; what is
//! still queued then, or when the process crashes, is lost (best-effort).
//!
//! A configuration reload hands the queue over: events already queued and the batch being
//! retried go to the new endpoint with the new bounds (`reconfigure`); a batch in flight ends
//! on the old one. Webhooks turned off stop new events; the queued ones are still sent.
//!
//! Metrics: `herald_webhook_events_total{event,outcome}` (`queued`, `sent`, `dropped`),
//! `herald_webhook_dropped_total{reason}` (`queue_full`, `retries_exhausted`),
//! `herald_webhook_batches_total{outcome}` (`ok`, `retry`, `dropped`), the
//! `herald_webhook_queue_depth` gauge, and the proxy's `herald_proxy_duration_seconds` /
//! `herald_proxy_requests_total` with `kind="webhook"` for the batch latency and outcomes.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald_hub::Node;
use herald_hub::broker::BoxFuture;
use herald_hub::proxy::{ProxyKind, ProxyPort, ProxyRequest, ProxySpec};
use herald_hub::webhook::{Batcher, EventKind, LifecycleEvent, LifecycleSink, Next, Webhooks, encode_batch};
use metrics::{Counter, Gauge};
use tokio::sync::Notify;

use crate::config_error::ConfigError;
use crate::proxy::HttpProxy;

/// Queued events, each with its node-wide sequence number.
struct Queue {
    batcher: Batcher<(u64, LifecycleEvent)>,
    seq: u64,
}

struct Metrics {
    /// By `EventKind as usize`: queued, sent, dropped.
    queued: [Counter; 4],
    sent: [Counter; 4],
    dropped: [Counter; 4],
    queue_full: Counter,
    retries_exhausted: Counter,
    batch_ok: Counter,
    batch_retry: Counter,
    batch_dropped: Counter,
    depth: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let by_event = |outcome: &'static str| {
            herald_hub::webhook::EVENT_NAMES
                .map(|e| metrics::counter!("herald_webhook_events_total", "event" => e, "outcome" => outcome))
        };
        let dropped = |reason: &'static str| metrics::counter!("herald_webhook_dropped_total", "reason" => reason);
        let batches = |outcome: &'static str| metrics::counter!("herald_webhook_batches_total", "outcome" => outcome);
        Metrics {
            queued: by_event("queued"),
            sent: by_event("sent"),
            dropped: by_event("dropped"),
            queue_full: dropped("queue_full"),
            retries_exhausted: dropped("retries_exhausted"),
            batch_ok: batches("ok"),
            batch_retry: batches("retry"),
            batch_dropped: batches("dropped"),
            depth: metrics::gauge!("herald_webhook_queue_depth"),
        }
    }

    fn count(counters: &[Counter; 4], events: &[(u64, LifecycleEvent)]) {
        let mut n = [0u64; 4];
        for (_, e) in events {
            n[e.kind as usize] += 1;
        }
        for (c, n) in counters.iter().zip(n) {
            if n > 0 {
                c.increment(n);
            }
        }
    }
}

/// Where batches go: the webhook proxy and a client that knows only its endpoint.
struct Target {
    http: HttpProxy,
    spec: ProxySpec,
}

impl Target {
    fn new(webhooks: &Webhooks) -> Result<Target, ConfigError> {
        let mut spec = webhooks.spec.clone();
        // The client below knows only this endpoint.
        spec.id = 0;
        let http = HttpProxy::new(std::slice::from_ref(&spec))?;
        Ok(Target { http, spec })
    }
}

/// The queue sessions push into and the sender drains.
pub struct WebhookSender {
    queue: Mutex<Queue>,
    /// Replaced by a configuration reload; a batch in flight finishes with the one it took.
    target: Mutex<Arc<Target>>,
    wake: Notify,
    /// Shutting down: batches go out without waiting for the flush interval or retry delays.
    draining: AtomicBool,
    start: Instant,
    metrics: Metrics,
}

impl WebhookSender {
    fn new(webhooks: &Webhooks) -> Result<WebhookSender, ConfigError> {
        Ok(WebhookSender {
            queue: Mutex::new(Queue { batcher: Batcher::new(webhooks.settings), seq: 0 }),
            target: Mutex::new(Arc::new(Target::new(webhooks)?)),
            wake: Notify::new(),
            draining: AtomicBool::new(false),
            start: Instant::now(),
            metrics: Metrics::new(),
        })
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends batches until the process ends.
    async fn run(self: Arc<Self>, node: String) {
        // Not a client's address: the backend sees the node itself.
        let peer = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        loop {
            let mut now = self.now_ms();
            if self.draining.load(Ordering::Relaxed) {
                // Far enough ahead that every flush deadline and retry delay has passed.
                now = now.saturating_add(1 << 40);
            }
            let next = self.lock().batcher.poll(now);
            match next {
                Next::Send(batch) => {
                    let body = encode_batch(&node, &batch);
                    let target = self.target.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let request =
                        ProxyRequest { spec: &target.spec, kind: ProxyKind::Webhook, body, headers: &[], peer };
                    let outcome = target.http.call(request).await;
                    let mut q = self.lock();
                    match outcome {
                        Ok(_) => {
                            q.batcher.succeeded();
                            self.metrics.batch_ok.increment(1);
                            Metrics::count(&self.metrics.sent, &batch);
                        }
                        Err(_) => match q.batcher.failed(batch, self.now_ms(), rand::random::<f64>()) {
                            None => self.metrics.batch_retry.increment(1),
                            Some(dropped) => {
                                self.metrics.batch_dropped.increment(1);
                                self.metrics.retries_exhausted.increment(dropped.len() as u64);
                                Metrics::count(&self.metrics.dropped, &dropped);
                            }
                        },
                    }
                    self.metrics.depth.set(q.batcher.depth() as f64);
                }
                Next::Wait(Some(at)) => {
                    let wait = Duration::from_millis(u64::try_from(at - self.now_ms()).unwrap_or(0).max(1));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Next::Wait(None) => self.wake.notified().await,
            }
        }
    }
}

impl LifecycleSink for WebhookSender {
    fn drain(&self, limit: Duration) -> BoxFuture<'_, usize> {
        Box::pin(async move {
            self.draining.store(true, Ordering::Relaxed);
            self.wake.notify_one();
            let deadline = Instant::now() + limit;
            loop {
                let left = self.lock().batcher.depth();
                if left == 0 || Instant::now() >= deadline {
                    return left;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn reconfigure(&self, webhooks: &Webhooks) {
        // The endpoint was parsed when the reload was checked (`proxy::port_for`).
        match Target::new(webhooks) {
            Ok(target) => *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(target),
            Err(e) => tracing::error!(error = %e, "lifecycle webhooks keep their endpoint"),
        }
        self.lock().batcher.set_settings(webhooks.settings);
        // A shorter flush interval or retry delay may be due already.
        self.wake.notify_one();
    }

    fn push(&self, event: LifecycleEvent) {
        let kind = event.kind;
        let now = self.now_ms();
        let (pushed, depth) = {
            let mut q = self.lock();
            // Dropped events take a number too: the backend sees the gap.
            q.seq += 1;
            let seq = q.seq;
            (q.batcher.push((seq, event), now), q.batcher.depth())
        };
        match pushed {
            Ok(wake) => {
                self.metrics.queued[kind as usize].increment(1);
                if wake {
                    self.wake.notify_one();
                }
            }
            Err(_) => {
                self.metrics.queue_full.increment(1);
                self.metrics.dropped[kind as usize].increment(1);
            }
        }
        self.metrics.depth.set(depth as f64);
    }
}

/// Starts the sender when `webhooks` is on: its own thread and runtime, so a slow backend or
/// a long batch never shares a worker with clients. Installs it as the node's sink.
pub fn start(node: &Arc<Node>) -> Result<(), ConfigError> {
    let Some(webhooks) = node.hooks().config() else { return Ok(()) };
    let sender = Arc::new(WebhookSender::new(&webhooks)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ConfigError::invalid("webhooks", format!("cannot start the sender: {e}")))?;
    let task = sender.clone();
    let uid = node.identity().uid.clone();
    std::thread::Builder::new()
        .name("herald-webhooks".into())
        .spawn(move || runtime.block_on(task.run(uid)))
        .map_err(|e| ConfigError::invalid("webhooks", format!("cannot start the sender thread: {e}")))?;
    node.hooks().install(sender);
    let events: Vec<&str> = [EventKind::Connect, EventKind::Disconnect, EventKind::Subscribe, EventKind::Unsubscribe]
        .into_iter()
        .filter(|k| webhooks.wants(*k))
        .map(EventKind::name)
        .collect();
    tracing::info!(endpoint = %webhooks.spec.endpoint, ?events, "lifecycle webhooks on");
    Ok(())
}
