//! Builds the node's engines from the config: the memory engine on a single node, the Redis
//! engine, or a NATS broker (history in JetStream) with presence in NATS.
//!
//! The node takes its broker and its presence manager separately, so the mixed setup (NATS
//! pub/sub, Redis history and presence) is one more branch here. Network engines are connected
//! on the broker thread ([`broker_thread`]), where their connection tasks live.

pub mod broker_thread;

use std::sync::Arc;
use std::time::Duration;

use herald_hub::broker::{Broker, BrokerError, MemoryBroker, MemoryPresence, PresenceManager};
use herald_hub::{Node, NodeIdentity, SystemClock};
use herald_nats::{NatsBroker, NatsConfig, NatsPresence};

use crate::config::Config;
use broker_thread::{BrokerThread, OnBrokerThread};

/// Whether the config names a network engine (Redis or NATS), which gets the broker thread.
pub fn uses_network(config: &Config) -> bool {
    config.broker.enabled || config.engine.kind == "redis"
}

/// The NATS engine settings: `broker.nats.*` plus storage bounds derived from the channel
/// options (the largest history size and meta TTL of any namespace).
pub fn nats_config(config: &Config, node_uid: &str) -> NatsConfig {
    let c = &config.broker.nats;
    let channel = &config.channel;
    let options = std::iter::once(&channel.without_namespace).chain(channel.namespaces.iter().map(|n| &n.options));
    let (mut max_size, mut max_age) = (1usize, Duration::ZERO);
    for o in options {
        max_size = max_size.max(o.history_size);
        let meta = if o.history_meta_ttl.is_zero() { channel.history_meta_ttl } else { o.history_meta_ttl };
        max_age = max_age.max(meta).max(o.history_ttl);
    }
    if max_age.is_zero() {
        max_age = NatsConfig::default().history_max_age;
    }
    NatsConfig {
        url: c.url.clone(),
        prefix: c.prefix.clone(),
        node_uid: node_uid.to_owned(),
        dial_timeout: c.dial_timeout,
        write_timeout: c.write_timeout,
        history_max_per_channel: i64::try_from(max_size).unwrap_or(i64::MAX),
        history_max_age: max_age,
        history_in_memory: c.history_storage == "memory",
        presence_ttl: c.presence_ttl,
        replicas: c.replicas,
        append_attempts: c.append_attempts,
        append_queue_per_channel: c.append_queue_per_channel,
        append_queue_total: c.append_queue_total,
        ..NatsConfig::default()
    }
}

/// The node with the engines the config names: memory, Redis (`engine.type = "redis"`) or NATS
/// (`broker.enabled`), with the logic-layer proxies' client whatever the engine and the lifecycle
/// webhook sender when `webhooks` is on. Connecting to an engine may fail: the error names the
/// engine and why.
///
/// `thread` is where a network engine is connected (its tasks stay there); without one (the
/// memory engine, or a caller that wants everything on its own runtime) it is the caller's.
pub async fn build_node(
    config: &Config,
    identity: NodeIdentity,
    thread: Option<&BrokerThread>,
) -> Result<Arc<Node>, crate::server::StartupError> {
    let clock: Arc<dyn herald_hub::Clock> = Arc::new(SystemClock);
    let (broker, presence) = match thread {
        Some(thread) if uses_network(config) => {
            let (config, id, c) = (config.clone(), identity.clone(), clock.clone());
            let handle = thread.handle().clone();
            thread.run(async move { Box::pin(engines(&config, &id, c, Some(&handle))).await }).await?
        }
        _ => Box::pin(engines(config, &identity, clock.clone(), None)).await?,
    };
    let node = crate::proxy::build_node(config.hub(), identity, clock, broker, presence)?;
    crate::webhook::start(&node)?;
    Ok(node)
}

type Engines = (Arc<dyn Broker>, Arc<dyn PresenceManager>);

/// The broker and presence manager the config names, connected on the calling runtime.
async fn engines(
    config: &Config,
    identity: &NodeIdentity,
    clock: Arc<dyn herald_hub::Clock>,
    broker_thread: Option<&tokio::runtime::Handle>,
) -> Result<Engines, crate::server::StartupError> {
    if config.broker.enabled && config.engine.kind == "redis" {
        mixed_engines(config, identity).await
    } else if config.broker.enabled {
        nats_engines(config, identity, clock).await
    } else if config.engine.kind == "redis" {
        redis_engine(config, identity, broker_thread).await
    } else {
        Ok((Arc::new(MemoryBroker::new(clock)), Arc::new(MemoryPresence::default())))
    }
}

/// `engine.type = "redis"`: one engine for PUB/SUB, history and presence. On the broker thread
/// its calls run with that runtime entered, so a reconnect's new connection task starts there.
async fn redis_engine(
    config: &Config,
    identity: &NodeIdentity,
    broker_thread: Option<&tokio::runtime::Handle>,
) -> Result<Engines, crate::server::StartupError> {
    let engine = connect_redis(config, identity, true).await?;
    Ok(match broker_thread {
        Some(handle) => {
            let pinned = Arc::new(OnBrokerThread::new(engine, handle.clone()));
            (pinned.clone(), pinned)
        }
        None => (engine.clone(), engine),
    })
}

/// `broker.type = "nats"` next to `engine.type = "redis"`: publications and control messages
/// over NATS; history, idempotency keys and presence in Redis (or presence in NATS when
/// `presence_manager` says so). A publication with history is appended to Redis first, which
/// gives it its offset and epoch atomically, then sent over NATS with that position; nodes
/// repair gaps and catch up after a NATS reconnect from the Redis history.
async fn mixed_engines(config: &Config, identity: &NodeIdentity) -> Result<Engines, crate::server::StartupError> {
    let redis = connect_redis(config, identity, false).await?;
    let cfg = nats_config(config, &identity.uid);
    let engine = |e: BrokerError| crate::server::StartupError::Engine(e);
    let conn = herald_nats::connect(&cfg).await.map_err(engine)?;
    let broker: Arc<dyn Broker> =
        Arc::new(NatsBroker::open_with_store(&conn, &cfg, redis.clone()).await.map_err(engine)?);
    let presence: Arc<dyn PresenceManager> = if config.presence_manager.enabled {
        Arc::new(NatsPresence::open(conn.client().clone(), &cfg).await.map_err(engine)?)
    } else {
        redis
    };
    tracing::info!(url = %cfg.url, prefix = %cfg.prefix, "cluster over NATS: history and idempotency keys in Redis");
    Ok((broker, presence))
}

/// Connects the Redis engine; `pubsub` off when NATS carries the publications.
async fn connect_redis(
    config: &Config,
    identity: &NodeIdentity,
    pubsub: bool,
) -> Result<Arc<herald_redis::RedisEngine>, crate::server::StartupError> {
    let r = &config.engine.redis;
    let startup = |e: crate::config_error::ConfigError| crate::server::StartupError::Config(e);
    let pem = |key: &'static str, value: &str| -> Result<Option<Vec<u8>>, crate::server::StartupError> {
        if value.is_empty() { Ok(None) } else { crate::tls::read_pem(key, value).map(Some).map_err(startup) }
    };
    let tls_options = |section: [&'static str; 3], t: &crate::config::RedisTlsConfig| {
        Ok::<_, crate::server::StartupError>(herald_redis::TlsOptions {
            root_ca: pem(section[2], &t.server_ca_pem)?,
            client_cert: match (pem(section[0], &t.cert_pem)?, pem(section[1], &t.key_pem)?) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            },
            insecure_skip_verify: t.insecure_skip_verify,
        })
    };
    let tls = tls_options(
        ["engine.redis.tls.cert_pem", "engine.redis.tls.key_pem", "engine.redis.tls.server_ca_pem"],
        &r.tls,
    )?;
    let sentinel_tls = if r.sentinel_tls.enabled {
        Some(tls_options(
            [
                "engine.redis.sentinel_tls.cert_pem",
                "engine.redis.sentinel_tls.key_pem",
                "engine.redis.sentinel_tls.server_ca_pem",
            ],
            &r.sentinel_tls,
        )?)
    } else {
        None
    };
    // `tls.enabled` turns plain addresses into TLS ones, as Centrifugo does.
    let addresses = r
        .address
        .iter()
        .map(|a| match a.strip_prefix("redis://") {
            Some(rest) if r.tls.enabled => format!("rediss://{rest}"),
            _ => a.clone(),
        })
        .collect();
    // Seeds given as host:port take the scheme `tls.enabled` implies.
    let cluster_seeds = r
        .cluster_address
        .iter()
        .map(|a| match a.strip_prefix("redis://") {
            Some(rest) if r.tls.enabled => format!("rediss://{rest}"),
            Some(_) => a.clone(),
            None if a.starts_with("rediss://") => a.clone(),
            None if r.tls.enabled => format!("rediss://{a}"),
            None => format!("redis://{a}"),
        })
        .collect();
    let none_if_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let opts = herald_redis::RedisOptions {
        addresses,
        cluster_seeds,
        access: herald_redis::Access {
            tls,
            sentinel_master_tls: r.tls.enabled,
            sentinel_user: none_if_empty(&r.sentinel_user),
            sentinel_password: none_if_empty(&r.sentinel_password),
            sentinel_tls,
        },
        prefix: r.prefix.clone(),
        connect_timeout: r.connect_timeout,
        io_timeout: r.io_timeout,
        presence_ttl: r.presence_ttl,
        node_uid: identity.uid.clone(),
        pubsub,
        ..Default::default()
    };
    let engine = Arc::new(herald_redis::RedisEngine::connect(opts).await.map_err(|e| {
        crate::server::StartupError::Config(crate::config_error::ConfigError::invalid(
            if r.cluster_address.is_empty() { "engine.redis.address" } else { "engine.redis.cluster_address" },
            format!("cannot use Redis: {e}"),
        ))
    })?);
    tracing::info!(shards = ?engine.addresses(), "Redis engine connected");
    Ok(engine)
}

/// `broker.enabled` with `broker.type = "nats"`: NATS PUB/SUB with history in JetStream and
/// presence in a NATS key-value bucket.
async fn nats_engines(
    config: &Config,
    identity: &NodeIdentity,
    clock: Arc<dyn herald_hub::Clock>,
) -> Result<Engines, crate::server::StartupError> {
    // `broker.type` is checked by the loader: "nats" is the only broker.
    let cfg = nats_config(config, &identity.uid);
    let engine = |e: BrokerError| crate::server::StartupError::Engine(e);
    let conn = herald_nats::connect(&cfg).await.map_err(engine)?;
    let broker: Arc<dyn Broker> = Arc::new(NatsBroker::open(&conn, &cfg, clock).await.map_err(engine)?);
    // The loader accepts only NATS as a presence manager (or none, which means NATS too).
    let presence: Arc<dyn PresenceManager> =
        Arc::new(NatsPresence::open(conn.client().clone(), &cfg).await.map_err(engine)?);
    tracing::info!(url = %cfg.url, prefix = %cfg.prefix, "cluster over NATS: history in JetStream, presence in NATS");
    Ok((broker, presence))
}
