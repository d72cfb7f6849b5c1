//! Validation of the engine settings: `engine.type` and `engine.redis`, `broker` (NATS) and
//! `presence_manager`. Errors name the key.

use crate::config::Config;
use crate::config_error::ConfigError;

/// Checks the engine, broker and presence manager settings.
pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if !["memory", "redis"].contains(&cfg.engine.kind.as_str()) {
        return Err(ConfigError::invalid(
            "engine.type",
            format!(
                "{:?} is not available: Herald does not support this Centrifugo option yet, only \"memory\" \
                 (a single node) and \"redis\"; a node running alone would lose the messages published on other nodes",
                cfg.engine.kind
            ),
        ));
    }
    if cfg.engine.kind == "redis" {
        let r = &cfg.engine.redis;
        if !r.cluster_address.is_empty() {
            validate_cluster_address(r)?;
        }
        if r.address.is_empty() {
            return Err(ConfigError::invalid("engine.redis.address", "no address: give at least one redis:// URL"));
        }
        for a in &r.address {
            let sentinel = a.starts_with("redis+sentinel://");
            if !a.starts_with("redis://") && !a.starts_with("rediss://") && !sentinel {
                return Err(ConfigError::invalid(
                    "engine.redis.address",
                    format!(
                        "{:?} is neither a redis://, a rediss:// (TLS) nor a redis+sentinel:// URL",
                        a.split('@').next_back().unwrap_or_default()
                    ),
                ));
            }
            if sentinel && !a.contains("sentinel_master_name=") {
                return Err(ConfigError::invalid(
                    "engine.redis.address",
                    "a redis+sentinel:// address needs ?sentinel_master_name=<name>",
                ));
            }
        }
        if r.prefix.is_empty() || r.prefix.contains(['{', '}']) {
            return Err(ConfigError::invalid("engine.redis.prefix", "must be non-empty, without { or }"));
        }
        if r.io_timeout.is_zero() || r.connect_timeout.is_zero() {
            return Err(ConfigError::invalid("engine.redis.io_timeout", "io_timeout and connect_timeout must be > 0"));
        }
        if r.presence_ttl < std::time::Duration::from_secs(3) {
            return Err(ConfigError::invalid("engine.redis.presence_ttl", "must be at least 3s"));
        }
        validate_redis_tls("engine.redis.tls", &r.tls)?;
        validate_redis_tls("engine.redis.sentinel_tls", &r.sentinel_tls)?;
        if r.sentinel_tls.enabled && !r.address.iter().any(|a| a.starts_with("redis+sentinel://")) {
            return Err(ConfigError::invalid(
                "engine.redis.sentinel_tls.enabled",
                "applies to a redis+sentinel:// address only; engine.redis.address has none (TLS to Redis \
                 itself is engine.redis.tls)",
            ));
        }
        if !r.sentinel_tls.enabled && r.sentinel_tls != crate::config::RedisTlsConfig::default() {
            return Err(ConfigError::invalid(
                "engine.redis.sentinel_tls.enabled",
                "is off while other engine.redis.sentinel_tls options are set: turn it on, or remove them",
            ));
        }
    }
    validate_broker(cfg)
}

/// `engine.redis.cluster_address`: seeds of one Redis Cluster, instead of `address`.
fn validate_cluster_address(r: &crate::config::RedisEngineConfig) -> Result<(), ConfigError> {
    if r.address != crate::config::RedisEngineConfig::default().address {
        return Err(ConfigError::invalid(
            "engine.redis.cluster_address",
            "give either engine.redis.address or engine.redis.cluster_address, not both (a Redis Cluster \
             given in address is detected; cluster_address lists its seed nodes)",
        ));
    }
    for a in &r.cluster_address {
        let rest = a.strip_prefix("redis://").or_else(|| a.strip_prefix("rediss://")).unwrap_or(a);
        let host_port = rest.rsplit('@').next().unwrap_or_default().split('/').next().unwrap_or_default();
        let port_ok = host_port.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if (a.contains("://") && !a.starts_with("redis://") && !a.starts_with("rediss://")) || !port_ok {
            return Err(ConfigError::invalid(
                "engine.redis.cluster_address",
                format!(
                    "{:?} is not host:port nor a redis:// or rediss:// URL with a port",
                    a.rsplit('@').next().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

/// `engine.redis.tls` or `sentinel_tls` (`section`): the options a client can use; the PEM
/// values must be readable.
fn validate_redis_tls(section: &str, t: &crate::config::RedisTlsConfig) -> Result<(), ConfigError> {
    if !t.server_name.is_empty() {
        return Err(ConfigError::invalid(
            format!("{section}.server_name"),
            "is not supported: the server certificate must name the host given in engine.redis.address",
        ));
    }
    if !t.client_ca_pem.is_empty() {
        return Err(ConfigError::invalid(
            format!("{section}.client_ca_pem"),
            "is a server-side option: to verify Redis give server_ca_pem, to authenticate to it cert_pem and key_pem",
        ));
    }
    if t.cert_pem.is_empty() != t.key_pem.is_empty() {
        return Err(ConfigError::invalid(
            format!("{section}.cert_pem"),
            "cert_pem and key_pem go together (the client certificate and its key)",
        ));
    }
    let keys: [&'static str; 3] = if section == "engine.redis.tls" {
        ["engine.redis.tls.cert_pem", "engine.redis.tls.key_pem", "engine.redis.tls.server_ca_pem"]
    } else {
        [
            "engine.redis.sentinel_tls.cert_pem",
            "engine.redis.sentinel_tls.key_pem",
            "engine.redis.sentinel_tls.server_ca_pem",
        ]
    };
    for (key, value) in keys.into_iter().zip([&t.cert_pem, &t.key_pem, &t.server_ca_pem]) {
        if !value.is_empty() {
            crate::tls::read_pem(key, value)?;
        }
    }
    Ok(())
}

/// `broker` and `presence_manager`: NATS is the broker Herald has; presence then lives in NATS
/// unless `presence_manager` names another place. Next to `engine.type = "redis"` the NATS
/// broker carries publications while Redis keeps history, idempotency keys and presence.
fn validate_broker(cfg: &Config) -> Result<(), ConfigError> {
    let (b, p) = (&cfg.broker, &cfg.presence_manager);
    if b.enabled && b.kind != "nats" {
        return Err(ConfigError::invalid(
            "broker.type",
            format!("{:?} is not available: the broker Herald supports is \"nats\" (NATS with JetStream)", b.kind),
        ));
    }
    if p.enabled && p.kind != "nats" {
        return Err(ConfigError::invalid(
            "presence_manager.type",
            format!("{:?} is not available: the presence manager Herald supports is \"nats\"", p.kind),
        ));
    }
    if p.enabled && !b.enabled {
        return Err(ConfigError::invalid(
            "presence_manager.enabled",
            "presence in NATS needs the NATS broker: set broker.enabled and broker.type \"nats\"",
        ));
    }
    if b.enabled {
        let n = &b.nats;
        if !n.url.split(',').all(|u| u.trim().starts_with("nats://") || u.trim().starts_with("tls://")) {
            return Err(ConfigError::invalid(
                "broker.nats.url",
                format!("{:?} is not a nats:// URL (or a comma-separated list)", n.url),
            ));
        }
        let prefix_ok = !n.prefix.is_empty()
            && n.prefix
                .split('.')
                .all(|t| !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'));
        if !prefix_ok {
            return Err(ConfigError::invalid(
                "broker.nats.prefix",
                format!("{:?} must be dot-separated tokens of letters, digits, '_' and '-'", n.prefix),
            ));
        }
        if !["file", "memory"].contains(&n.history_storage.as_str()) {
            return Err(ConfigError::invalid(
                "broker.nats.history_storage",
                format!("{:?} is not one of file, memory", n.history_storage),
            ));
        }
        if n.replicas == 0 || n.replicas > 5 {
            return Err(ConfigError::invalid("broker.nats.replicas", format!("{} is not in 1..=5", n.replicas)));
        }
        for (key, d) in [("broker.nats.dial_timeout", n.dial_timeout), ("broker.nats.write_timeout", n.write_timeout)] {
            if d.is_zero() {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if n.presence_ttl < std::time::Duration::from_secs(1) {
            return Err(ConfigError::invalid("broker.nats.presence_ttl", "must be at least 1s"));
        }
        for (key, v, max) in [
            ("broker.nats.append_attempts", n.append_attempts, 1000),
            ("broker.nats.append_queue_per_channel", n.append_queue_per_channel, 1_000_000),
            ("broker.nats.append_queue_total", n.append_queue_total, 10_000_000),
        ] {
            if v == 0 || v > max {
                return Err(ConfigError::invalid(key, format!("{v} is not in 1..={max}")));
            }
        }
    }
    Ok(())
}
