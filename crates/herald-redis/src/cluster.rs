//! One Redis Cluster: commands go through the redis crate's cluster client, which routes each by
//! its key's slot, follows `MOVED`/`ASK` and refreshes the slot map when the topology changes;
//! PUB/SUB is sharded (`SSUBSCRIBE`/`SPUBLISH`, Redis 7), so a channel's messages travel through
//! its slot's node only instead of being broadcast over the whole cluster bus.
//!
//! The crate keeps the sharded subscriptions itself and re-issues them after a node's connection
//! drops or slots move. What it cannot tell the node is what was missed meanwhile: when it
//! reports a lost connection, this module marks the cluster down, re-confirms every wanted
//! subscription once commands work again, and only then reports the reconnect, so recovery
//! reads history after the subscription is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use herald_hub::broker::{BrokerError, ErrorKind};
use parking_lot::Mutex;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::metrics;
use crate::shard::{Events, redacted};
use crate::tls::TlsOptions;

/// SSUBSCRIBE commands in flight while resubscribing (one name each: Redis refuses sharded
/// names of different slots in one command).
const CONCURRENCY: usize = 64;
/// How often a lost cluster is checked for its return.
const RECHECK: Duration = Duration::from_millis(250);

pub(crate) struct Cluster {
    pub(crate) address: String,
    conn: ClusterConnection,
    /// Sharded PUB/SUB name → number of holders.
    wanted: Mutex<HashMap<String, usize>>,
    /// Serialises subscription changes so Redis and `wanted` never disagree for long.
    changes: tokio::sync::Mutex<()>,
    up: AtomicBool,
    /// A node connection dropped since the last confirmed resubscription.
    lost: AtomicBool,
    pub(crate) io_timeout: Duration,
    /// Pushes from the crate, taken by [`Cluster::start`].
    pushes: Mutex<Option<mpsc::UnboundedReceiver<PushInfo>>>,
}

/// Whether the instance behind `client` runs in cluster mode (`INFO cluster`).
pub(crate) async fn is_cluster(client: &redis::Client, timeout: Duration) -> Result<bool, BrokerError> {
    let probe = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("INFO").arg("cluster").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(info)) => Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1")),
        Ok(Err(e)) => Err(BrokerError::new(ErrorKind::Unavailable, "redis connect").with_source(e)),
        Err(_) => Err(BrokerError::new(ErrorKind::Timeout, "redis connect")),
    }
}

impl Cluster {
    /// Connects to the cluster through its seed addresses.
    pub(crate) async fn connect(
        seeds: &[String],
        tls: &TlsOptions,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Arc<Cluster>, BrokerError> {
        let address = seeds.iter().map(|s| redacted(s)).collect::<Vec<_>>().join(",");
        let bad = |e: redis::RedisError| {
            BrokerError::new(ErrorKind::Rejected, format!("redis cluster {address}: invalid address")).with_source(e)
        };
        let (tx, rx) = mpsc::unbounded_channel::<PushInfo>();
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(connect_timeout)
            .response_timeout(io_timeout)
            .retries(3);
        if let Some(certs) = tls.certificates() {
            builder = builder.certs(certs);
        }
        let client = builder.build().map_err(bad)?;
        let conn = match tokio::time::timeout(connect_timeout.max(io_timeout), client.get_async_connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(BrokerError::new(ErrorKind::Unavailable, format!("redis cluster connect to {address}"))
                    .with_source(e));
            }
            Err(_) => return Err(BrokerError::new(ErrorKind::Timeout, format!("redis cluster connect to {address}"))),
        };
        let cluster = Arc::new(Cluster {
            address,
            conn,
            wanted: Mutex::new(HashMap::new()),
            changes: tokio::sync::Mutex::new(()),
            up: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            io_timeout,
            pushes: Mutex::new(Some(rx)),
        });
        Ok(cluster)
    }

    /// Starts the tasks that deliver sharded messages and watch for lost connections.
    pub(crate) fn start(self: Arc<Self>, events: Arc<dyn Events>) {
        let Some(rx) = self.pushes.lock().take() else { return };
        tokio::spawn(receive(Arc::downgrade(&self), rx, events.clone()));
        tokio::spawn(watch(Arc::downgrade(&self), events));
    }

    /// The command connection (a cheap handle on the cluster's connections).
    pub(crate) fn conn(&self) -> ClusterConnection {
        self.conn.clone()
    }

    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Adds interest in the sharded channel `name`; subscribes on its slot's node the first time.
    pub(crate) async fn subscribe(&self, name: String) -> Result<(), BrokerError> {
        let _guard = self.changes.lock().await;
        let first = {
            let mut wanted = self.wanted.lock();
            let n = wanted.entry(name.clone()).or_default();
            *n += 1;
            *n == 1
        };
        if !first {
            return Ok(());
        }
        let mut conn = self.conn();
        let r = self.deadline("redis subscribe", conn.ssubscribe(&name)).await;
        if r.is_err() {
            // Not subscribed: forget the interest so a retry subscribes again.
            let mut wanted = self.wanted.lock();
            if let Some(n) = wanted.get_mut(&name) {
                *n -= 1;
                if *n == 0 {
                    wanted.remove(&name);
                }
            }
            metrics::error("subscribe");
        }
        r
    }

    /// Drops one interest in `name`; unsubscribes when none is left.
    pub(crate) async fn unsubscribe(&self, name: &str) -> Result<(), BrokerError> {
        let _guard = self.changes.lock().await;
        let last = {
            let mut wanted = self.wanted.lock();
            match wanted.get_mut(name) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    wanted.remove(name);
                    true
                }
                None => false,
            }
        };
        if !last {
            return Ok(());
        }
        let mut conn = self.conn();
        self.deadline("redis unsubscribe", conn.sunsubscribe(name)).await
    }

    async fn deadline(
        &self,
        what: &'static str,
        fut: impl Future<Output = redis::RedisResult<()>>,
    ) -> Result<(), BrokerError> {
        match tokio::time::timeout(self.io_timeout, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BrokerError::new(ErrorKind::Unavailable, what).with_source(e)),
            Err(_) => Err(BrokerError::new(ErrorKind::Timeout, what)),
        }
    }

    /// Re-issues every wanted subscription (Redis ignores the ones it already has).
    async fn resubscribe(&self) -> Result<usize, BrokerError> {
        use futures_util::StreamExt;
        let _guard = self.changes.lock().await;
        let names: Vec<String> = self.wanted.lock().keys().cloned().collect();
        let count = names.len();
        let timeout = self.io_timeout;
        let mut results = futures_util::stream::iter(names.into_iter().map(|name| {
            let mut conn = self.conn();
            async move { tokio::time::timeout(timeout, async move { conn.ssubscribe(name).await }).await }
        }))
        .buffer_unordered(CONCURRENCY);
        while let Some(r) = results.next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BrokerError::new(ErrorKind::Unavailable, "redis resubscribe").with_source(e)),
                Err(_) => return Err(BrokerError::new(ErrorKind::Timeout, "redis resubscribe")),
            }
        }
        Ok(count)
    }
}

/// Routes sharded messages to the engine and notes lost connections.
async fn receive(
    cluster: std::sync::Weak<Cluster>,
    mut rx: mpsc::UnboundedReceiver<PushInfo>,
    events: Arc<dyn Events>,
) {
    while let Some(push) = rx.recv().await {
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let mut data = push.data.into_iter();
                let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) = (data.next(), data.next())
                else {
                    metrics::error("decode");
                    continue;
                };
                match std::str::from_utf8(&name) {
                    Ok(name) => events.message(0, name, &payload),
                    Err(_) => metrics::error("decode"),
                }
            }
            PushKind::Disconnection => {
                let Some(cluster) = cluster.upgrade() else { return };
                if !cluster.lost.swap(true, Ordering::AcqRel) {
                    tracing::warn!(cluster = %cluster.address, "redis cluster connection lost; reconnecting");
                }
                cluster.up.store(false, Ordering::Release);
            }
            _ => {}
        }
    }
}

/// Once a connection was lost: confirms the subscriptions are back, then tells the engine so
/// every channel recovers what it may have missed.
async fn watch(cluster: std::sync::Weak<Cluster>, events: Arc<dyn Events>) {
    loop {
        tokio::time::sleep(RECHECK).await;
        let Some(cluster) = cluster.upgrade() else { return };
        if !events.alive() {
            return;
        }
        if !cluster.lost.load(Ordering::Acquire) {
            continue;
        }
        match cluster.resubscribe().await {
            Ok(n) => {
                cluster.lost.store(false, Ordering::Release);
                cluster.up.store(true, Ordering::Release);
                tracing::info!(cluster = %cluster.address, channels = n, "redis cluster PUB/SUB reconnected");
                metrics::reconnect();
                events.reconnected(0);
            }
            Err(e) => {
                metrics::error("subscribe");
                tracing::debug!(cluster = %cluster.address, error = %e, "redis cluster still unreachable");
            }
        }
    }
}
