//! Herald's Redis engine: [`RedisEngine`] implements the broker contract of
//! `herald_hub::broker` ([`Broker`] and [`PresenceManager`]) over one Redis or over several
//! independent Redis instances with channels spread by consistent hashing (jump hash), which is
//! how Redis PUB/SUB scales past one instance.
//!
//! - A publish with history or an idempotency key is one Lua script: idempotency check, offset
//!   increment, stream append (`XADD MAXLEN`), TTLs and `PUBLISH`, so a publication is in
//!   history exactly when it was delivered. Without either it is a plain `PUBLISH`.
//! - Presence lives in a hash plus an expiry sorted set per channel; entries expire after
//!   `presence_ttl` unless refreshed, and the engine refreshes those of its own node's clients,
//!   so the entries of a node that died disappear by themselves.
//! - Control messages go to `<prefix>.control` (every node) or `<prefix>.node.<uid>` (one node)
//!   on the first shard.
//! - Each shard's PUB/SUB connection reconnects by itself; after a reconnect the engine tells
//!   the node which channels may have missed publications ([`BrokerHandler::handle_reconnect`]).
//!
//! - A Redis Cluster (detected with `INFO cluster` on the first address) is one backend of its
//!   own ([`cluster::Cluster`]): commands follow the slots, PUB/SUB is sharded.
//!
//! Byte layouts and scripts are in [`wire`]; one Redis instance is a [`shard::Shard`]; TLS
//! settings are in [`tls`].

mod cluster;
mod conn;
mod metrics;
mod shard;
mod tls;
mod wire;

pub use shard::Access;
pub use tls::TlsOptions;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_hub::broker::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ErrorKind, HistoryQuery, HistorySlice, PresenceManager,
    PublishOptions, PublishOutcome,
};
use herald_proto::{ClientInfo, Publication, StreamPosition};
use parking_lot::Mutex;
use prost::Message;
use rand::Rng;
use redis::{Script, Value};

use shard::Shard;
use wire::{ChannelMessage, Names};

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One address per shard (`redis://`, `rediss://`); channels are spread over them.
    pub addresses: Vec<String>,
    /// Seed nodes of one Redis Cluster (`redis://`, `rediss://`; `engine.redis.cluster_address`):
    /// when given, the engine uses that cluster without asking `addresses` what they are, and
    /// starts as long as one seed answers.
    pub cluster_seeds: Vec<String>,
    /// Prefix of every key and PUB/SUB name, so several setups can share one Redis.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// Deadline of every command.
    pub io_timeout: Duration,
    /// How long a presence entry lives without a refresh.
    pub presence_ttl: Duration,
    /// How long an idempotency key suppresses a repeated publish.
    pub idempotent_result_ttl: Duration,
    /// This node's uid: the engine subscribes to the node's own control name.
    pub node_uid: String,
    /// TLS and Sentinel credentials.
    pub access: Access,
    /// Carry publications and control messages over Redis PUB/SUB. Off when another broker
    /// (NATS) carries them and Redis only keeps history, idempotency keys and presence: a
    /// publish is then the atomic append alone.
    pub pubsub: bool,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            addresses: vec!["redis://127.0.0.1:6379".into()],
            cluster_seeds: Vec::new(),
            prefix: "herald".into(),
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(4),
            presence_ttl: Duration::from_secs(60),
            idempotent_result_ttl: Duration::from_secs(300),
            node_uid: String::new(),
            access: Access::default(),
            pubsub: true,
        }
    }
}

/// The Redis engine: broker and presence manager of one node.
pub struct RedisEngine {
    inner: Arc<Inner>,
}

struct Inner {
    opts: RedisOptions,
    names: Names,
    backend: Backend,
    handler: OnceLock<Arc<dyn BrokerHandler>>,
    publish: Script,
    history: Script,
    presence_add: Script,
    presence_get: Script,
    presence_remove: Script,
    /// Presence entries of this node's clients, re-added before they expire.
    local_presence: Mutex<HashMap<String, HashMap<String, Bytes>>>,
}

impl RedisEngine {
    /// Connects to every shard (failing when one cannot be reached now) and starts the PUB/SUB
    /// supervisors and the presence refresher on the current tokio runtime.
    pub async fn connect(opts: RedisOptions) -> Result<RedisEngine, BrokerError> {
        let (backend, cluster_mode) = if opts.cluster_seeds.is_empty() {
            Self::connect_addresses(&opts).await?
        } else {
            let seeds: Vec<String> = opts.cluster_seeds.iter().map(|s| opts.access.tls.address(s)).collect();
            let cluster =
                cluster::Cluster::connect(&seeds, &opts.access.tls, opts.connect_timeout, opts.io_timeout).await?;
            (Backend::Cluster(cluster), true)
        };
        let inner = Arc::new(Inner {
            names: if cluster_mode { Names::for_cluster(&opts.prefix) } else { Names::new(&opts.prefix) },
            backend,
            opts,
            handler: OnceLock::new(),
            publish: Script::new(wire::PUBLISH),
            history: Script::new(wire::HISTORY),
            presence_add: Script::new(wire::PRESENCE_ADD),
            presence_get: Script::new(wire::PRESENCE_GET),
            presence_remove: Script::new(wire::PRESENCE_REMOVE),
            local_presence: Mutex::new(HashMap::new()),
        });
        match &inner.backend {
            Backend::Shards(shards) => {
                for shard in shards {
                    tokio::spawn(shard.clone().run(Arc::new(Events(Arc::downgrade(&inner)))));
                }
            }
            Backend::Cluster(c) => c.clone().start(Arc::new(Events(Arc::downgrade(&inner)))),
        }
        // Control names are wanted for the engine's whole life.
        if inner.opts.pubsub {
            inner.control_node().subscribe(inner.names.control()).await?;
            inner.control_node().subscribe(inner.names.node(&inner.opts.node_uid)).await?;
        }
        tokio::spawn(refresh_presence(Arc::downgrade(&inner)));
        Ok(RedisEngine { inner })
    }

    /// `addresses`: a Redis Cluster (asked with `INFO cluster` on the first), or standalone
    /// and Sentinel shards.
    async fn connect_addresses(opts: &RedisOptions) -> Result<(Backend, bool), BrokerError> {
        if opts.addresses.is_empty() {
            return Err(BrokerError::new(ErrorKind::Rejected, "redis: no address configured"));
        }
        // A Redis Cluster answers on any of its nodes: ask the first address.
        let first = &opts.addresses[0];
        let cluster_mode = if first.starts_with("redis+sentinel://") {
            false
        } else {
            let client = opts.access.tls.client(first).map_err(|e| {
                BrokerError::new(ErrorKind::Rejected, format!("redis address {}: invalid", shard::redacted(first)))
                    .with_source(e)
            })?;
            cluster::is_cluster(&client, opts.connect_timeout.max(opts.io_timeout)).await.map_err(|e| {
                BrokerError::new(e.kind(), format!("redis connect to {}", shard::redacted(first))).with_source(e)
            })?
        };
        let backend = if cluster_mode {
            if opts.addresses.len() > 1 {
                return Err(BrokerError::new(
                    ErrorKind::Rejected,
                    format!(
                        "redis address {} is a Redis Cluster: give one address (its other nodes are discovered); \
                         sharding over several clusters is not supported",
                        shard::redacted(first)
                    ),
                ));
            }
            let seeds = [opts.access.tls.address(first)];
            Backend::Cluster(
                cluster::Cluster::connect(&seeds, &opts.access.tls, opts.connect_timeout, opts.io_timeout).await?,
            )
        } else {
            let mut shards = Vec::with_capacity(opts.addresses.len());
            for (i, address) in opts.addresses.iter().enumerate() {
                shards.push(Arc::new(
                    Shard::connect(i, address, &opts.access, opts.connect_timeout, opts.io_timeout).await?,
                ));
            }
            Backend::Shards(shards)
        };
        Ok((backend, cluster_mode))
    }

    /// Addresses of the shards (passwords hidden), for logs.
    pub fn addresses(&self) -> Vec<String> {
        match &self.inner.backend {
            Backend::Shards(shards) => shards.iter().map(|s| s.address.clone()).collect(),
            Backend::Cluster(c) => vec![format!("cluster {}", c.address)],
        }
    }
}

/// Where the engine's data lives.
enum Backend {
    /// Independent instances (one or more), channels spread by jump hash.
    Shards(Vec<Arc<Shard>>),
    /// One Redis Cluster.
    Cluster(Arc<cluster::Cluster>),
}

/// The instance (or cluster) that serves one channel or the control names.
#[derive(Clone, Copy)]
enum Node<'a> {
    Shard(&'a Shard),
    Cluster(&'a cluster::Cluster),
}

impl Node<'_> {
    fn conn(&self) -> conn::Conn {
        match self {
            Node::Shard(s) => conn::Conn::Single(s.conn()),
            Node::Cluster(c) => conn::Conn::Cluster(c.conn()),
        }
    }

    fn io_timeout(&self) -> Duration {
        match self {
            Node::Shard(s) => s.io_timeout,
            Node::Cluster(c) => c.io_timeout,
        }
    }

    fn master_moved(&self) {
        if let Node::Shard(s) = self {
            s.master_moved();
        }
    }

    async fn subscribe(&self, name: String) -> Result<(), BrokerError> {
        match self {
            Node::Shard(s) => s.subscribe(name).await,
            Node::Cluster(c) => c.subscribe(name).await,
        }
    }

    async fn unsubscribe(&self, name: &str) -> Result<(), BrokerError> {
        match self {
            Node::Shard(s) => s.unsubscribe(name).await,
            Node::Cluster(c) => c.unsubscribe(name).await,
        }
    }
}

/// Routes what a supervisor receives to the node's handler.
struct Events(std::sync::Weak<Inner>);

impl shard::Events for Events {
    fn message(&self, _shard: usize, name: &str, payload: &[u8]) {
        let Some(inner) = self.0.upgrade() else { return };
        let Some(handler) = inner.handler.get() else { return };
        if let Some(channel) = inner.names.channel_of(name) {
            match wire::decode_channel_message(payload) {
                Some(ChannelMessage::Publication { publication, exclude, .. }) => {
                    handler.handle_publication(channel, &publication, exclude)
                }
                Some(ChannelMessage::Join(info)) => handler.handle_join(channel, &info),
                Some(ChannelMessage::Leave(info)) => handler.handle_leave(channel, &info),
                None => {
                    metrics::error("decode");
                    tracing::warn!(channel, len = payload.len(), "undecodable message on a redis channel");
                }
            }
        } else {
            handler.handle_control(Bytes::copy_from_slice(payload));
        }
    }

    fn alive(&self) -> bool {
        self.0.strong_count() > 0
    }

    fn reconnected(&self, shard: usize) {
        let Some(inner) = self.0.upgrade() else { return };
        let Some(handler) = inner.handler.get() else { return };
        match &inner.backend {
            Backend::Shards(shards) => {
                let shards = shards.len();
                handler.handle_reconnect(&|channel| jump_hash(channel, shards) == shard);
            }
            // Which slots lived on the node that dropped is the crate's knowledge: recover all.
            Backend::Cluster(_) => handler.handle_reconnect(&|_| true),
        }
    }
}

/// Re-adds this node's presence entries every third of their TTL.
async fn refresh_presence(inner: std::sync::Weak<Inner>) {
    let period = match inner.upgrade() {
        Some(i) => (i.opts.presence_ttl / 3).max(Duration::from_secs(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = inner.upgrade() else { return };
        let entries: Vec<(String, Vec<(String, Bytes)>)> = inner
            .local_presence
            .lock()
            .iter()
            .map(|(ch, m)| (ch.clone(), m.iter().map(|(c, i)| (c.clone(), i.clone())).collect()))
            .collect();
        for (channel, clients) in entries {
            for (client, info) in clients {
                if let Err(e) = inner.presence_add_raw(&channel, &client, &info).await {
                    tracing::debug!(channel, error = %e, "presence refresh failed");
                    break;
                }
            }
        }
    }
}

/// Jump consistent hash (Lamping and Veach) of a channel name over `buckets` shards.
fn jump_hash(channel: &str, buckets: usize) -> usize {
    if buckets <= 1 {
        return 0;
    }
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut key: u64 = 0xcbf29ce484222325;
    for b in channel.as_bytes() {
        key ^= u64::from(*b);
        key = key.wrapping_mul(0x100000001b3);
    }
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

fn new_epoch() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..4).map(|_| LETTERS[rng.random_range(0..LETTERS.len())] as char).collect()
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Inner {
    /// Where a channel's keys and PUB/SUB name live.
    fn node(&self, channel: &str) -> Node<'_> {
        match &self.backend {
            Backend::Shards(shards) => Node::Shard(&shards[jump_hash(channel, shards.len())]),
            Backend::Cluster(c) => Node::Cluster(c),
        }
    }

    /// Where the control names live: the first shard (any node of a cluster, by slot).
    fn control_node(&self) -> Node<'_> {
        match &self.backend {
            Backend::Shards(shards) => Node::Shard(&shards[0]),
            Backend::Cluster(c) => Node::Cluster(c),
        }
    }

    /// Runs a command with the engine's deadline, mapping failures to a [`BrokerError`].
    async fn run<T, F>(&self, shard: Node<'_>, what: &'static str, fut: F) -> Result<T, BrokerError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let r = match tokio::time::timeout(shard.io_timeout(), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let read_only = e.to_string().contains("READONLY");
                if read_only {
                    shard.master_moved();
                }
                let kind = if read_only || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    ErrorKind::Unavailable
                } else if e.is_timeout() {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Rejected
                };
                Err(BrokerError::new(kind, what).with_source(e))
            }
            Err(_) => Err(BrokerError::new(ErrorKind::Timeout, what)),
        };
        if r.is_err() {
            metrics::error(what);
        }
        r
    }

    async fn publish(
        &self,
        channel: &str,
        publication: Publication,
        opts: &PublishOptions,
    ) -> Result<PublishOutcome, BrokerError> {
        let started = Instant::now();
        let shard = self.node(channel);
        let mut conn = shard.conn();
        let body = wire::publication_body(&publication);
        let history = opts.history_size > 0 && !opts.history_ttl.is_zero();
        let outcome = if !history && opts.idempotency_key.is_none() && !self.opts.pubsub {
            // Another broker carries it: nothing to store.
            PublishOutcome::default()
        } else if !history && opts.idempotency_key.is_none() {
            let msg = wire::publication_message(&body, opts.exclude_client);
            let cmd = redis::cmd(self.names.publish_command()).arg(self.names.pubsub(channel)).arg(msg).to_owned();
            self.run::<i64, _>(shard, "publish", cmd.query_async(&mut conn)).await?;
            PublishOutcome::default()
        } else {
            let key = opts.idempotency_key.as_deref();
            let mut inv = self.publish.prepare_invoke();
            inv.key(self.names.stream(channel))
                .key(self.names.meta(channel))
                .key(self.names.result(channel, key.unwrap_or("")))
                .arg(body)
                .arg(if history { opts.history_size } else { 0 })
                .arg(secs(opts.history_ttl).max(1))
                .arg(secs(opts.history_meta_ttl))
                .arg(new_epoch())
                .arg(self.names.pubsub(channel))
                .arg(if key.is_some() { secs(self.opts.idempotent_result_ttl).max(1) } else { 0 })
                .arg(opts.exclude_client.map(|u| u.to_string()).unwrap_or_default())
                .arg(if self.opts.pubsub { self.names.publish_command().to_ascii_lowercase() } else { String::new() });
            let (epoch, offset, suppressed): (String, u64, i64) =
                self.run(shard, "publish", inv.invoke_async(&mut conn)).await?;
            let position = history.then_some(StreamPosition { offset, epoch });
            PublishOutcome { position, suppressed: suppressed == 1 }
        };
        metrics::publish_latency(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    async fn history(&self, channel: &str, q: HistoryQuery) -> Result<HistorySlice, BrokerError> {
        let shard = self.node(channel);
        let mut conn = shard.conn();
        // The id range and direction XRANGE/XREVRANGE take for the query (entry ids are
        // `<offset>-1`); `None` when the answer is empty whatever the stream holds.
        let range: Option<(String, String)> = match (&q.since, q.reverse) {
            (_, _) if q.limit == 0 => None,
            (None, _) => Some(("-".into(), "+".into())),
            (Some(since), false) => Some((format!("{}", since.offset + 1), "+".into())),
            (Some(since), true) => since.offset.checked_sub(1).filter(|s| *s > 0).map(|s| ("-".into(), s.to_string())),
        };
        let mut inv = self.history.prepare_invoke();
        let (first, last) = range.clone().unwrap_or_default();
        inv.key(self.names.stream(channel))
            .key(self.names.meta(channel))
            .arg(new_epoch())
            .arg(secs(q.meta_ttl))
            .arg(if range.is_some() { "1" } else { "0" })
            .arg(if q.reverse { "1" } else { "0" })
            .arg(first)
            .arg(last)
            .arg(if q.limit < 0 { -1 } else { q.limit });
        let (epoch, top, entries): (String, u64, Vec<Value>) =
            self.run(shard, "history", inv.invoke_async(&mut conn)).await?;
        let mut publications = Vec::with_capacity(entries.len());
        for entry in entries {
            let Some((offset, body)) = stream_entry(entry) else {
                metrics::error("decode");
                return Err(BrokerError::new(ErrorKind::Internal, "redis history entry"));
            };
            // Entries past the top belong to an epoch that ended; never mix them in.
            if offset > top {
                continue;
            }
            match wire::decode_publication(&body, offset, &epoch) {
                Some(p) => publications.push(p),
                None => return Err(BrokerError::new(ErrorKind::Internal, "redis history publication")),
            }
        }
        Ok(HistorySlice { publications, top: StreamPosition { offset: top, epoch } })
    }

    async fn presence_add_raw(&self, channel: &str, client: &str, info: &Bytes) -> Result<(), BrokerError> {
        let shard = self.node(channel);
        let mut conn = shard.conn();
        let ttl = secs(self.opts.presence_ttl).max(1);
        let mut inv = self.presence_add.prepare_invoke();
        inv.key(self.names.presence_expire(channel))
            .key(self.names.presence_data(channel))
            .arg(ttl)
            .arg(unix_secs() + ttl)
            .arg(client)
            .arg(info.as_ref());
        self.run::<i64, _>(shard, "presence add", inv.invoke_async(&mut conn)).await.map(|_| ())
    }

    async fn presence(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        let shard = self.node(channel);
        let mut conn = shard.conn();
        let mut inv = self.presence_get.prepare_invoke();
        inv.key(self.names.presence_expire(channel)).key(self.names.presence_data(channel)).arg(unix_secs());
        let raw: HashMap<String, Vec<u8>> = self.run(shard, "presence", inv.invoke_async(&mut conn)).await?;
        let mut out = HashMap::with_capacity(raw.len());
        for (client, info) in raw {
            match ClientInfo::decode(info.as_slice()) {
                Ok(info) => {
                    out.insert(client, info);
                }
                Err(_) => metrics::error("decode"),
            }
        }
        Ok(out)
    }
}

/// (offset, body) of a stream entry `[id, [field, value, ...]]`.
fn stream_entry(entry: Value) -> Option<(u64, Vec<u8>)> {
    let Value::Array(mut parts) = entry else { return None };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id: String = redis::from_redis_value(parts.pop()?).ok()?;
    let offset = id.split('-').next()?.parse().ok()?;
    let Value::Array(fields) = fields else { return None };
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let k: String = redis::from_redis_value(k).ok()?;
        if k == "d" {
            return Some((offset, redis::from_redis_value(v).ok()?));
        }
    }
    None
}

impl Broker for RedisEngine {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError> {
        self.inner.handler.set(handler).map_err(|_| {
            BrokerError::new(ErrorKind::Rejected, "redis engine handler registration (already serving a node)")
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        Box::pin(self.inner.publish(channel, publication, opts))
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.publish_raw(channel, wire::join_message(&info)))
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.publish_raw(channel, wire::leave_message(&info)))
    }

    fn publish_control<'a>(&'a self, node: Option<&'a str>, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let name = match node {
                Some(uid) => inner.names.node(uid),
                None => inner.names.control(),
            };
            let shard = inner.control_node();
            let mut conn = shard.conn();
            let cmd = redis::cmd(inner.names.publish_command()).arg(name).arg(payload.as_ref()).to_owned();
            inner.run::<i64, _>(shard, "control", cmd.query_async(&mut conn)).await.map(|_| ())
        })
    }

    fn delivers_control(&self) -> bool {
        true
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.inner.node(channel).subscribe(self.inner.names.pubsub(channel)).await })
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.inner.node(channel).unsubscribe(&self.inner.names.pubsub(channel)).await })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistorySlice, BrokerError>> {
        Box::pin(self.inner.history(channel, query))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let shard = inner.node(channel);
            let mut conn = shard.conn();
            let cmd = redis::cmd("DEL").arg(inner.names.stream(channel)).to_owned();
            inner.run::<i64, _>(shard, "history remove", cmd.query_async(&mut conn)).await.map(|_| ())
        })
    }

    fn healthy(&self) -> bool {
        match &self.inner.backend {
            Backend::Shards(shards) => shards.iter().all(|s| s.up()),
            Backend::Cluster(c) => c.up(),
        }
    }
}

impl Inner {
    async fn publish_raw(&self, channel: &str, msg: Vec<u8>) -> Result<(), BrokerError> {
        let shard = self.node(channel);
        let mut conn = shard.conn();
        let cmd = redis::cmd(self.names.publish_command()).arg(self.names.pubsub(channel)).arg(msg).to_owned();
        self.run::<i64, _>(shard, "publish", cmd.query_async(&mut conn)).await.map(|_| ())
    }
}

impl PresenceManager for RedisEngine {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let encoded = wire::encode_info(&info);
            inner.presence_add_raw(channel, &info.client, &encoded).await?;
            inner.local_presence.lock().entry(channel.to_owned()).or_default().insert(info.client, encoded);
            Ok(())
        })
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let inner = &self.inner;
            {
                let mut local = inner.local_presence.lock();
                if let Some(m) = local.get_mut(channel) {
                    m.remove(client);
                    if m.is_empty() {
                        local.remove(channel);
                    }
                }
            }
            let shard = inner.node(channel);
            let mut conn = shard.conn();
            let mut inv = inner.presence_remove.prepare_invoke();
            inv.key(inner.names.presence_expire(channel)).key(inner.names.presence_data(channel)).arg(client);
            inner.run::<i64, _>(shard, "presence remove", inv.invoke_async(&mut conn)).await.map(|_| ())
        })
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>> {
        Box::pin(self.inner.presence(channel))
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>> {
        Box::pin(async move {
            let map = self.inner.presence(channel).await?;
            let users: std::collections::HashSet<&str> = map.values().map(|i| i.user.as_str()).collect();
            Ok((map.len() as u32, users.len() as u32))
        })
    }

    fn healthy(&self) -> bool {
        Broker::healthy(self)
    }
}

#[cfg(test)]
mod tests {
    use super::jump_hash;

    #[test]
    fn jump_hash_is_stable_and_moves_few_channels_when_a_shard_is_added() {
        assert_eq!(jump_hash("anything", 1), 0);
        let names: Vec<String> = (0..2000).map(|i| format!("chat:{i}")).collect();
        let two: Vec<usize> = names.iter().map(|n| jump_hash(n, 2)).collect();
        let three: Vec<usize> = names.iter().map(|n| jump_hash(n, 3)).collect();
        assert!(two.iter().all(|&s| s < 2) && three.iter().all(|&s| s < 3));
        let on_first = two.iter().filter(|&&s| s == 0).count();
        assert!((800..1200).contains(&on_first), "{on_first} of 2000 on shard 0");
        // Going from 2 to 3 shards moves about a third of the channels, all to the new shard.
        let moved: Vec<usize> = (0..names.len()).filter(|&i| two[i] != three[i]).collect();
        assert!(moved.iter().all(|&i| three[i] == 2));
        assert!((500..850).contains(&moved.len()), "{} moved", moved.len());
        assert_eq!(jump_hash("chat:1", 3), three[1]);
    }
}
