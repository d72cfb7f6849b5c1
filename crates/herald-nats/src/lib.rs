//! Herald's NATS engine: [`NatsBroker`] carries publications, joins, leaves and node control
//! messages between nodes over core NATS and keeps channel history in a JetStream stream;
//! [`NatsPresence`] keeps presence in a JetStream key-value bucket. A NATS server with
//! JetStream (`nats-server -js`) is all a Herald cluster needs.
//!
//! Start with [`connect`], then open the broker and the presence manager on the connection.
//! The connection reconnects by itself (jittered backoff, forever); while it is down both
//! report unhealthy and fail requests, and after it is back every subscribed channel reads
//! from the stream what it missed.

mod broker;
mod history;
mod metrics;
mod presence;
mod queue;
mod store;
mod subject;
mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use broker::NatsBroker;
use herald_hub::broker::{BrokerError, ErrorKind};
pub use presence::NatsPresence;
use rand::Rng;
use tokio::sync::watch;

/// How a node uses NATS. Server config: `broker.nats.*`.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `nats://host:port` (a comma-separated list for several servers).
    pub url: String,
    /// Prefix of every subject, stream and bucket name, so clusters can share a server.
    pub prefix: String,
    /// This node's uid: it receives the control messages sent to it.
    pub node_uid: String,
    /// Connection establishment timeout.
    pub dial_timeout: Duration,
    /// How long a request (JetStream append, read, key-value operation) may take.
    pub write_timeout: Duration,
    /// The history stream keeps at most this many records per channel (largest history size).
    pub history_max_per_channel: i64,
    /// The history stream drops records older than this (largest history meta TTL).
    pub history_max_age: Duration,
    /// Keep history in memory instead of files (lost when the NATS server restarts).
    pub history_in_memory: bool,
    /// How long an idempotency key suppresses a second publish.
    pub idempotent_window: Duration,
    /// Presence entries expire this long after their last refresh.
    pub presence_ttl: Duration,
    /// JetStream replicas of the stream and buckets (1 for a single NATS server).
    pub replicas: usize,
    /// Tries of a history append that other nodes keep beating to the channel's next offset.
    pub append_attempts: usize,
    /// Publications that may wait for one channel's append turn on this node.
    pub append_queue_per_channel: usize,
    /// Publications that may wait for an append turn on this node, all channels together.
    pub append_queue_total: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "herald".into(),
            node_uid: String::new(),
            dial_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            history_max_per_channel: 1000,
            history_max_age: Duration::from_secs(720 * 3600),
            history_in_memory: false,
            idempotent_window: Duration::from_secs(300),
            presence_ttl: Duration::from_secs(60),
            replicas: 1,
            append_attempts: 16,
            append_queue_per_channel: 1000,
            append_queue_total: 10_000,
        }
    }
}

/// A node's connection to NATS, shared by its broker and presence manager.
#[derive(Clone)]
pub struct NatsConnection {
    client: async_nats::Client,
    /// Bumped after every reconnect: channel tasks then read what they missed.
    resync: watch::Receiver<u64>,
}

impl NatsConnection {
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the connection is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// The delay before reconnect attempt `n`: exponential from 50 ms up to 2 s, plus up to 50%
/// random jitter so that a cluster's nodes do not reconnect in lockstep.
pub fn reconnect_delay(attempt: usize) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(6)).min(2000);
    Duration::from_millis(base + rand::rng().random_range(0..=base / 2))
}

/// Connects to NATS. The first connection must succeed (a wrong URL fails the start with a
/// clear error); later losses are retried forever.
pub async fn connect(cfg: &NatsConfig) -> Result<NatsConnection, BrokerError> {
    let (tx, rx) = watch::channel(0u64);
    let lost = Arc::new(AtomicBool::new(false));
    let options = async_nats::ConnectOptions::new()
        .name(format!("herald {}", cfg.node_uid))
        .connection_timeout(cfg.dial_timeout)
        .request_timeout(Some(cfg.write_timeout))
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let (tx, lost) = (tx.clone(), lost.clone());
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        lost.store(true, Ordering::SeqCst);
                        metrics::disconnected();
                        tracing::warn!("lost the connection to NATS; reconnecting");
                    }
                    async_nats::Event::Connected if lost.swap(false, Ordering::SeqCst) => {
                        metrics::reconnected();
                        tracing::info!("reconnected to NATS; channels read what they missed");
                        tx.send_modify(|n| *n += 1);
                    }
                    async_nats::Event::SlowConsumer(sid) => {
                        metrics::error("nats slow consumer");
                        tracing::warn!(sid, "NATS dropped messages for a slow subscription");
                    }
                    async_nats::Event::ServerError(e) => tracing::warn!("NATS server error: {e}"),
                    _ => {}
                }
            }
        });
    let client = options
        .connect(cfg.url.as_str())
        .await
        .map_err(|e| BrokerError::new(ErrorKind::Unavailable, format!("nats connect to {}", cfg.url)).with_source(e))?;
    Ok(NatsConnection { client, resync: rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_jittered_and_capped() {
        for attempt in 0..20 {
            let d = reconnect_delay(attempt).as_millis() as u64;
            let base = (50u64 << attempt.min(6)).min(2000);
            assert!(d >= base && d <= base + base / 2, "attempt {attempt}: {d} ms");
        }
        assert!(reconnect_delay(30) <= Duration::from_secs(3));
    }
}
