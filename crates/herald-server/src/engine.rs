//! Builds the node's engines from the config: the memory engine on a single node, or a NATS
//! broker (history in JetStream) with presence in NATS or another presence manager.
//!
//! The node takes its broker and its presence manager separately, so mixed setups (NATS
//! pub/sub with presence elsewhere) only add a branch here.

use std::sync::Arc;
use std::time::Duration;

use herald_hub::broker::{Broker, BrokerError, MemoryPresence, PresenceManager};
use herald_hub::{Node, NodeIdentity, SystemClock};
use herald_nats::{NatsBroker, NatsConfig, NatsPresence};

use crate::config::Config;

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
        ..NatsConfig::default()
    }
}

/// The node with the engines the config names. Connecting to a broker may fail: the error
/// names the broker and why.
pub async fn build_node(config: &Config, identity: NodeIdentity) -> Result<Arc<Node>, crate::server::StartupError> {
    let clock = Arc::new(SystemClock);
    if !config.broker.enabled {
        return Ok(Node::new(config.hub(), identity, clock)?);
    }
    // `broker.type` is checked by the loader: "nats" is the only broker.
    let cfg = nats_config(config, &identity.uid);
    let engine = |e: BrokerError| crate::server::StartupError::Engine(e);
    let conn = herald_nats::connect(&cfg).await.map_err(engine)?;
    let broker: Arc<dyn Broker> = Arc::new(NatsBroker::open(&conn, &cfg, clock.clone()).await.map_err(engine)?);
    let presence: Arc<dyn PresenceManager> = match config.presence_manager.kind.as_str() {
        _ if !config.presence_manager.enabled => {
            Arc::new(NatsPresence::open(conn.client().clone(), &cfg).await.map_err(engine)?)
        }
        "nats" => Arc::new(NatsPresence::open(conn.client().clone(), &cfg).await.map_err(engine)?),
        // The loader refuses anything else; keep the node single-node safe all the same.
        _ => Arc::new(MemoryPresence::default()),
    };
    tracing::info!(url = %cfg.url, prefix = %cfg.prefix, "cluster over NATS: history in JetStream, presence in NATS");
    Ok(Node::with_engines(config.hub(), identity, clock, broker, presence)?)
}
