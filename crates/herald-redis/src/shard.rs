//! One Redis instance of the engine: a multiplexed command connection (the client library's
//! `ConnectionManager`, which reconnects by itself) and a dedicated PUB/SUB connection owned by
//! a supervisor task.
//!
//! The supervisor keeps the PUB/SUB connection subscribed to what the node wants: a count per
//! PUB/SUB name (the node's first local subscriber adds one, its last one leaving removes one,
//! so a late unsubscribe never cancels a newer subscribe), reconciled with what Redis has
//! confirmed. Requests that arrive together are reconciled with one SUBSCRIBE and one
//! UNSUBSCRIBE of up to [`BATCH`] names each. When the connection drops it reconnects with
//! jittered backoff, subscribes to everything again, and then reports the gap so the node can
//! make its clients recover what was published meanwhile.
//!
//! Behind Sentinel (`redis+sentinel://host:port[,host:port]?sentinel_master_name=NAME`) every
//! reconnect asks the sentinels for the current master first, and the command connection is
//! replaced by one to that master: after a failover the old master (now a replica) closes its
//! clients, so both connections move to the new one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use herald_hub::broker::{BrokerError, ErrorKind};
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::{mpsc, oneshot};

use crate::metrics;

/// Most names in one SUBSCRIBE or UNSUBSCRIBE.
const BATCH: usize = 512;
/// Queued subscription requests per shard before callers wait (backpressure, not growth).
const REQUESTS: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the supervisor tells the engine.
pub(crate) trait Events: Send + Sync + 'static {
    /// A message arrived on a PUB/SUB name.
    fn message(&self, shard: usize, name: &str, payload: &[u8]);
    /// The PUB/SUB connection is back after a loss: messages in between may be missing.
    fn reconnected(&self, shard: usize);
    /// Whether the engine still exists (the supervisor stops once it is dropped).
    fn alive(&self) -> bool;
}

type Waiter = oneshot::Sender<Result<(), BrokerError>>;

/// Where the instance is: one address, or whatever master the sentinels name.
enum Target {
    Direct(redis::Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

/// Credentials and TLS settings that do not fit in an address.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub tls: crate::tls::TlsOptions,
    /// Use TLS to the master a Sentinel names (a `redis+sentinel://` address cannot say it).
    pub sentinel_master_tls: bool,
    /// Sentinel's own user and password (`requirepass` in the sentinel's config), unless the
    /// address gives `sentinel_user`/`sentinel_password`.
    pub sentinel_user: Option<String>,
    pub sentinel_password: Option<String>,
    /// TLS to the sentinels themselves (`engine.redis.sentinel_tls`); `None`: plain TCP.
    pub sentinel_tls: Option<crate::tls::TlsOptions>,
}

impl Target {
    fn parse(address: &str, access: &Access) -> Result<Target, BrokerError> {
        let bad =
            |why: &str| BrokerError::new(ErrorKind::Rejected, format!("redis address {}: {why}", redacted(address)));
        let Some(rest) = address.strip_prefix("redis+sentinel://") else {
            let client = access.tls.client(address).map_err(|e| bad("invalid").with_source(e))?;
            return Ok(Target::Direct(client));
        };
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let param =
            |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).map(percent_decode);
        let master = param("sentinel_master_name")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| bad("sentinel_master_name is missing"))?;
        // `user:password@` before the hosts are the master's credentials.
        let hosts = hosts.trim_end_matches('/');
        let (credentials, hosts) = match hosts.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, hosts),
        };
        let (hosts, db) = match hosts.split_once('/') {
            Some((h, db)) => (h, Some(db.parse::<i64>().map_err(|_| bad("the database after / is not a number"))?)),
            None => (hosts, None),
        };
        if hosts.is_empty() {
            return Err(bad("give sentinel host:port pairs"));
        }
        let mut sentinels = Vec::new();
        for h in hosts.split(',') {
            let (host, port) = h.rsplit_once(':').unwrap_or((h, "26379"));
            let port = port.parse::<u16>().map_err(|_| bad("a sentinel port is not a number"))?;
            if host.is_empty() {
                return Err(bad("a sentinel host is empty"));
            }
            // With sentinel_tls the crate wants TLS addresses; the builder sets their mode and
            // certificates below.
            sentinels.push(match &access.sentinel_tls {
                Some(t) => redis::ConnectionAddr::TcpTls {
                    host: host.to_owned(),
                    port,
                    insecure: t.insecure_skip_verify,
                    tls_params: None,
                },
                None => redis::ConnectionAddr::Tcp(host.to_owned(), port),
            });
        }
        let mut builder =
            redis::sentinel::SentinelClientBuilder::new(sentinels, master, redis::sentinel::SentinelServerType::Master)
                .map_err(|e| bad("invalid").with_source(e))?;
        if let Some(c) = credentials {
            let (user, password) = c.split_once(':').unwrap_or(("", c));
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(percent_decode(user));
            }
            if !password.is_empty() {
                builder = builder.set_client_to_redis_password(percent_decode(password));
            }
        }
        if let Some(db) = db {
            builder = builder.set_client_to_redis_db(db);
        }
        if let Some(user) = param("sentinel_user").or_else(|| access.sentinel_user.clone()).filter(|u| !u.is_empty()) {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(pw) =
            param("sentinel_password").or_else(|| access.sentinel_password.clone()).filter(|p| !p.is_empty())
        {
            builder = builder.set_client_to_sentinel_password(pw);
        }
        if let Some(t) = &access.sentinel_tls {
            let mode = if t.insecure_skip_verify { redis::TlsMode::Insecure } else { redis::TlsMode::Secure };
            builder = builder.set_client_to_sentinel_tls_mode(mode);
            if let Some(certs) = t.certificates() {
                builder = builder.set_client_to_sentinel_certificates(certs);
            }
        }
        if access.sentinel_master_tls {
            let mode = if access.tls.insecure_skip_verify { redis::TlsMode::Insecure } else { redis::TlsMode::Secure };
            builder = builder.set_client_to_redis_tls_mode(mode);
            if let Some(certs) = access.tls.certificates() {
                builder = builder.set_client_to_redis_certificates(certs);
            }
        }
        let client = builder.build().map_err(|e| bad("invalid").with_source(e))?;
        Ok(Target::Sentinel(tokio::sync::Mutex::new(client)))
    }

    /// A client for the instance to use now.
    async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Target::Direct(c) => Ok(c.clone()),
            Target::Sentinel(s) => s.lock().await.async_get_client().await,
        }
    }
}

pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) address: String,
    target: Target,
    cmd: Mutex<ConnectionManager>,
    connect_timeout: Duration,
    /// PUB/SUB name → number of holders.
    wanted: Mutex<HashMap<String, usize>>,
    requests: mpsc::Sender<Waiter>,
    requests_rx: Mutex<Option<mpsc::Receiver<Waiter>>>,
    up: AtomicBool,
    /// Asks the supervisor to reconnect (Sentinel: the master moved under the connections).
    reset: tokio::sync::Notify,
    pub(crate) io_timeout: Duration,
}

impl Shard {
    /// Connects the command connection (failing when Redis cannot be reached now).
    pub(crate) async fn connect(
        index: usize,
        address: &str,
        access: &Access,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Shard, BrokerError> {
        let target = Target::parse(address, access)?;
        let cmd = command_connection(&target, connect_timeout, io_timeout).await.map_err(|e| {
            BrokerError::new(e.kind(), format!("redis connect to {}", redacted(address))).with_source(e)
        })?;
        let (requests, rx) = mpsc::channel(REQUESTS);
        Ok(Shard {
            index,
            address: redacted(address),
            target,
            cmd: Mutex::new(cmd),
            connect_timeout,
            wanted: Mutex::new(HashMap::new()),
            requests,
            requests_rx: Mutex::new(Some(rx)),
            up: AtomicBool::new(false),
            reset: tokio::sync::Notify::new(),
            io_timeout,
        })
    }

    /// The command connection (cheap to clone: a handle on one multiplexed connection).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.cmd.lock().clone()
    }

    /// A command hit a read-only replica: behind Sentinel the master moved while the connections
    /// stayed up (the old master keeps PUB/SUB clients), so reconnect both to the new master.
    pub(crate) fn master_moved(&self) {
        if matches!(self.target, Target::Sentinel(_)) {
            self.reset.notify_one();
        }
    }

    /// Whether the PUB/SUB connection is up and subscribed.
    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Adds interest in `name` and waits until Redis confirmed the subscription.
    pub(crate) async fn subscribe(&self, name: String) -> Result<(), BrokerError> {
        *self.wanted.lock().entry(name).or_default() += 1;
        self.reconcile().await
    }

    /// Drops one interest in `name`; unsubscribes when none is left.
    pub(crate) async fn unsubscribe(&self, name: &str) -> Result<(), BrokerError> {
        {
            let mut wanted = self.wanted.lock();
            if let Some(n) = wanted.get_mut(name) {
                *n -= 1;
                if *n == 0 {
                    wanted.remove(name);
                }
            }
        }
        self.reconcile().await
    }

    async fn reconcile(&self) -> Result<(), BrokerError> {
        let (tx, rx) = oneshot::channel();
        let unavailable = || BrokerError::new(ErrorKind::Unavailable, "redis subscribe (engine stopped)");
        self.requests.send(tx).await.map_err(|_| unavailable())?;
        match tokio::time::timeout(self.io_timeout, rx).await {
            Ok(r) => r.map_err(|_| unavailable())?,
            Err(_) => Err(BrokerError::new(ErrorKind::Timeout, "redis subscribe")),
        }
    }

    /// Runs the PUB/SUB connection until the engine is dropped.
    pub(crate) async fn run(self: Arc<Self>, events: Arc<dyn Events>) {
        let Some(mut requests) = self.requests_rx.lock().take() else { return };
        let mut lost = false;
        let mut attempt = 0u32;
        loop {
            let pubsub = async {
                let client = self.target.client().await?;
                if lost && matches!(self.target, Target::Sentinel(_)) {
                    // The master may have changed: move the command connection too.
                    let config = manager_config(self.connect_timeout, self.io_timeout);
                    *self.cmd.lock() = client.get_connection_manager_with_config(config).await?;
                }
                client.get_async_pubsub().await
            };
            match tokio::time::timeout(self.io_timeout, pubsub).await {
                Ok(Ok(pubsub)) => {
                    let (mut sink, mut stream) = pubsub.split();
                    let mut subscribed = HashSet::new();
                    if let Err(e) = self.sync(&mut sink, &mut subscribed).await {
                        tracing::warn!(shard = %self.address, error = %e, "redis resubscribe failed");
                        metrics::error("subscribe");
                    } else {
                        self.up.store(true, Ordering::Release);
                        attempt = 0;
                        if lost {
                            tracing::info!(shard = %self.address, channels = subscribed.len(), "redis PUB/SUB reconnected");
                            metrics::reconnect();
                            events.reconnected(self.index);
                        }
                        let mut check = tokio::time::interval(Duration::from_secs(1));
                        loop {
                            tokio::select! {
                                _ = check.tick() => if !events.alive() {
                                    return;
                                },
                                _ = self.reset.notified() => {
                                    tracing::warn!(shard = %self.address, "redis master moved; reconnecting to the new one");
                                    break;
                                }
                                msg = stream.next() => match msg {
                                    Some(msg) => events.message(self.index, msg.get_channel_name(), msg.get_payload_bytes()),
                                    None => break,
                                },
                                waiter = requests.recv() => {
                                    let Some(first) = waiter else { return };
                                    let mut waiters = vec![first];
                                    while let Ok(w) = requests.try_recv() {
                                        waiters.push(w);
                                    }
                                    let result = self.sync(&mut sink, &mut subscribed).await;
                                    for w in waiters {
                                        let _ = w.send(result.clone());
                                    }
                                    if let Err(e) = result {
                                        tracing::warn!(shard = %self.address, error = %e, "redis subscribe failed");
                                        metrics::error("subscribe");
                                        break;
                                    }
                                }
                            }
                        }
                        self.up.store(false, Ordering::Release);
                        tracing::warn!(shard = %self.address, "redis PUB/SUB connection lost; reconnecting");
                    }
                }
                Ok(Err(e)) => {
                    if attempt == 0 {
                        tracing::warn!(shard = %self.address, error = %e, "redis PUB/SUB connect failed");
                    }
                    metrics::error("connect");
                }
                Err(_) => {
                    metrics::error("connect");
                }
            }
            lost = true;
            self.up.store(false, Ordering::Release);
            if !events.alive() {
                return;
            }
            // Jittered exponential backoff; requests meanwhile are told Redis is unavailable.
            let base = BACKOFF_MIN.saturating_mul(1 << attempt.min(6)).min(BACKOFF_MAX);
            let delay = base.mul_f64(rand::rng().random_range(0.5..1.0));
            attempt += 1;
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    waiter = requests.recv() => match waiter {
                        Some(w) => { let _ = w.send(Err(BrokerError::new(ErrorKind::Unavailable, "redis subscribe (reconnecting)"))); }
                        None => return,
                    },
                }
            }
        }
    }

    /// Brings the connection's subscriptions to what is wanted.
    async fn sync(&self, sink: &mut PubSubSink, subscribed: &mut HashSet<String>) -> Result<(), BrokerError> {
        let (add, remove): (Vec<String>, Vec<String>) = {
            let wanted = self.wanted.lock();
            let add = wanted.keys().filter(|n| !subscribed.contains(*n)).cloned().collect();
            let remove = subscribed.iter().filter(|n| !wanted.contains_key(*n)).cloned().collect();
            (add, remove)
        };
        let fail = |e: redis::RedisError| BrokerError::new(ErrorKind::Unavailable, "redis subscribe").with_source(e);
        for chunk in add.chunks(BATCH) {
            tokio::time::timeout(self.io_timeout, sink.subscribe(chunk))
                .await
                .map_err(|_| BrokerError::new(ErrorKind::Timeout, "redis subscribe"))?
                .map_err(fail)?;
            subscribed.extend(chunk.iter().cloned());
        }
        for chunk in remove.chunks(BATCH) {
            tokio::time::timeout(self.io_timeout, sink.unsubscribe(chunk))
                .await
                .map_err(|_| BrokerError::new(ErrorKind::Timeout, "redis unsubscribe"))?
                .map_err(fail)?;
            for n in chunk {
                subscribed.remove(n);
            }
        }
        Ok(())
    }
}

fn manager_config(connect_timeout: Duration, io_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(io_timeout))
        .set_min_delay(BACKOFF_MIN)
        .set_max_delay(BACKOFF_MAX)
        .set_number_of_retries(2)
}

async fn command_connection(
    target: &Target,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<ConnectionManager, BrokerError> {
    let connect = async {
        let client = target.client().await?;
        client.get_connection_manager_with_config(manager_config(connect_timeout, io_timeout)).await
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(BrokerError::new(ErrorKind::Unavailable, "redis connect").with_source(e)),
        Err(_) => Err(BrokerError::new(ErrorKind::Timeout, "redis connect")),
    }
}

/// `%XX` escapes of a URL part decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An address without its password, for logs and errors.
pub(crate) fn redacted(address: &str) -> String {
    match (address.find("://"), address.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &address[..scheme], &address[at + 1..]),
        _ => address.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn sentinel_addresses_need_a_master_name_and_valid_hosts() {
        use super::{Access, Target};
        let a = Access::default();
        assert!(matches!(Target::parse("redis://127.0.0.1:7000", &a), Ok(Target::Direct(_))));
        assert!(matches!(
            Target::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380?sentinel_master_name=mymaster", &a),
            Ok(Target::Sentinel(_))
        ));
        // The master's credentials, a database and the sentinels' own credentials.
        assert!(matches!(
            Target::parse("redis+sentinel://u:p%40ss@127.0.0.1:26379/2?sentinel_master_name=m&sentinel_password=s", &a),
            Ok(Target::Sentinel(_))
        ));
        let err = Target::parse("redis+sentinel://127.0.0.1:26379", &a).err().unwrap().to_string();
        assert!(err.contains("sentinel_master_name is missing"), "{err}");
        let err =
            Target::parse("redis+sentinel://:pw@127.0.0.1:x?sentinel_master_name=m", &a).err().unwrap().to_string();
        assert!(err.contains("port is not a number") && !err.contains("pw"), "{err}");
        let err = Target::parse("redis+sentinel://:pw@?sentinel_master_name=m", &a).err().unwrap().to_string();
        assert!(err.contains("host:port"), "{err}");
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(super::percent_decode("p%40ss%2F"), "p@ss/");
        assert_eq!(super::percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(redacted("redis://:secret@127.0.0.1:6380/0"), "redis://***@127.0.0.1:6380/0");
        assert_eq!(redacted("redis://127.0.0.1:6380"), "redis://127.0.0.1:6380");
    }
}
