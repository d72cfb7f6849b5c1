//! Checks of a loaded configuration that deserialization cannot make (ranges, engines, what
//! the hub checks when it starts, the test-only echo endpoint) and the warnings about settings
//! that are valid but probably not meant. Errors name the key.

use herald_hub::NodeIdentity;

use super::engines;
use crate::config::Config;
use crate::config_error::ConfigError;

/// Checks what deserialization cannot: values in range, engines that exist, and everything the
/// hub checks when it starts (channel options, namespaces, token keys). Errors name the key.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if let Err((key, problem)) = crate::edge::Edge::new(cfg) {
        return Err(ConfigError::invalid(key, problem));
    }
    engines::validate(cfg)?;
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "none"];
    if !LEVELS.contains(&cfg.log.level.as_str()) {
        return Err(ConfigError::invalid(
            "log.level",
            format!("{:?} is not one of {}", cfg.log.level, LEVELS.join(", ")),
        ));
    }
    if !["text", "json"].contains(&cfg.log.format.as_str()) {
        return Err(ConfigError::invalid("log.format", format!("{:?} is not one of text, json", cfg.log.format)));
    }
    let schedulers = [crate::config::THREAD_PER_CORE, crate::config::WORK_STEALING];
    if !schedulers.contains(&cfg.runtime.scheduler.as_str()) {
        return Err(ConfigError::invalid(
            "runtime.scheduler",
            format!("{:?} is not one of {}", cfg.runtime.scheduler, schedulers.join(", ")),
        ));
    }

    let endpoints = cfg.endpoints();
    for (key, prefix, _) in &endpoints {
        if !prefix.starts_with('/') {
            return Err(ConfigError::invalid(*key, format!("{prefix:?} must start with '/'")));
        }
    }
    for (i, (key, prefix, on)) in endpoints.iter().enumerate() {
        let normalized = |p: &str| p.trim_end_matches('/').to_owned();
        if let Some((other, _, _)) =
            endpoints[i + 1..].iter().find(|(_, p, o)| *on && *o && normalized(p) == normalized(prefix))
        {
            return Err(ConfigError::invalid(*other, format!("{prefix:?} is already used by {key}")));
        }
    }
    validate_echo_endpoint(cfg, &endpoints)?;
    crate::edge::gateway::Gateway::new(cfg).map_err(|(key, problem)| ConfigError::invalid(key, problem))?;
    crate::admin::validate(cfg)?;
    // Reads and checks the certificate and key (the server builds its own copy at start).
    crate::tls::Tls::from_config(&cfg.http_server.tls)?;
    let tls = &cfg.http_server.tls;
    if !tls.enabled && !tls.client_ca_pem.trim().is_empty() {
        // Client certificates exist only in a TLS handshake: ignoring this would leave the API open.
        return Err(ConfigError::invalid("http_server.tls.client_ca_pem", "needs http_server.tls.enabled"));
    }

    if cfg.opentelemetry.enabled && !cfg!(feature = "otlp") {
        return Err(ConfigError::invalid(
            "opentelemetry.enabled",
            "this Herald build has no OTLP exporter: build it with `cargo build --release --features otlp`, or turn \
             this off (incoming traceparent headers are still continued: trace_id in the log lines, traceparent on \
             proxy calls)",
        ));
    }
    if cfg.node.survey_timeout.is_zero() {
        return Err(ConfigError::invalid("node.survey_timeout", "must be above 0"));
    }
    if cfg.node.survey_max_channels == 0 || cfg.node.survey_max_channels > herald_hub::survey::MAX_ENTRIES {
        return Err(ConfigError::invalid(
            "node.survey_max_channels",
            format!("must be between 1 and {}", herald_hub::survey::MAX_ENTRIES),
        ));
    }
    if cfg.shutdown.client_close_window >= cfg.shutdown.timeout {
        return Err(ConfigError::invalid(
            "shutdown.client_close_window",
            format!(
                "must be shorter than shutdown.timeout ({} >= {})",
                herald_hub::duration::format(cfg.shutdown.client_close_window),
                herald_hub::duration::format(cfg.shutdown.timeout)
            ),
        ));
    }
    // Zero would not mean "no limit" but "close at once": name the mistake instead.
    let http = &cfg.http_server;
    for (key, value) in [
        ("http_server.request_head_timeout", http.request_head_timeout),
        ("http_server.idle_timeout", http.idle_timeout),
        ("uni_long_poll.poll_timeout", cfg.uni_long_poll.poll_timeout),
        ("uni_long_poll.session_ttl", cfg.uni_long_poll.session_ttl),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(
                key,
                "must be longer than 0s (an idle connection has to be closed at some point)",
            ));
        }
    }
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    for (key, limit) in [
        ("websocket.message_size_limit", cfg.websocket.message_size_limit),
        ("uni_websocket.message_size_limit", cfg.uni_websocket.message_size_limit),
        ("sse.max_request_body_size", cfg.sse.body_limit()),
        ("http_stream.max_request_body_size", cfg.http_stream.body_limit()),
        ("uni_sse.max_request_body_size", cfg.uni_sse.body_limit()),
        ("uni_http_stream.max_request_body_size", cfg.uni_http_stream.body_limit()),
        ("emulation.max_request_body_size", cfg.emulation.max_request_body_size),
        ("uni_long_poll.max_request_body_size", cfg.uni_long_poll.max_request_body_size),
    ] {
        if !(KIB..=64 * MIB).contains(&limit) {
            return Err(ConfigError::invalid(key, format!("{limit} is out of range (1024 to 67108864 bytes)")));
        }
    }
    if cfg.client.queue_max_size < KIB {
        return Err(ConfigError::invalid(
            "client.queue_max_size",
            format!("{} is too small (at least 1024 bytes)", cfg.client.queue_max_size),
        ));
    }

    let identity = NodeIdentity {
        uid: "config-check".into(),
        name: cfg.node.name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    // Validation only: the memory engines stand in for whatever engine is configured.
    let clock: std::sync::Arc<dyn herald_hub::Clock> = std::sync::Arc::new(herald_hub::SystemClock);
    let broker = std::sync::Arc::new(herald_hub::broker::MemoryBroker::new(clock.clone()));
    let presence = std::sync::Arc::new(herald_hub::broker::MemoryPresence::default());
    crate::proxy::build_node(cfg.hub(), identity, clock, broker, presence).map(|_| ())
}

/// The conformance echo endpoint answers anyone without a token: it is accepted only on a
/// loopback listener, so that a test setting copied into a deployed config stops start-up
/// instead of opening an unauthenticated endpoint.
fn validate_echo_endpoint(cfg: &Config, endpoints: &[(&str, &str, bool)]) -> Result<(), ConfigError> {
    const KEY: &str = "websocket.echo_endpoint_for_conformance_tests";
    let echo = &cfg.websocket.echo_endpoint_for_conformance_tests;
    if echo.is_empty() {
        return Ok(());
    }
    if !echo.starts_with('/') {
        return Err(ConfigError::invalid(KEY, format!("{echo:?} must start with '/'")));
    }
    let normalized = |p: &str| p.trim_end_matches('/').to_owned();
    if let Some((key, _, _)) = endpoints.iter().find(|(_, p, on)| *on && normalized(p) == normalized(echo)) {
        return Err(ConfigError::invalid(KEY, format!("{echo:?} is already used by {key}")));
    }
    let address = cfg.http_server.address.trim_matches(['[', ']']);
    let loopback = address == "localhost" || address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(ConfigError::invalid(
            KEY,
            format!(
                "the test-only echo endpoint needs http_server.address on loopback (127.0.0.1 or ::1), not {:?}: \
                 it echoes to anyone without a token; leave it empty outside conformance tests",
                cfg.http_server.address
            ),
        ));
    }
    Ok(())
}

/// Settings that are valid but probably not what was meant.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let api = &cfg.http_api;
    if !api.disabled {
        if api.key.is_empty() && !api.insecure {
            out.push(
                "http_api.key is empty: the server API will answer 401 to every request \
                 (set http_api.key or HERALD_HTTP_API_KEY, or http_api.insecure for development)"
                    .to_owned(),
            );
        }
        if api.insecure {
            out.push("http_api.insecure is on: the server API accepts requests without a key".to_owned());
        }
    }
    let echo = &cfg.websocket.echo_endpoint_for_conformance_tests;
    if !echo.is_empty() {
        out.push(format!(
            "websocket.echo_endpoint_for_conformance_tests is set: {echo} echoes WebSocket messages without a token \
             (for conformance tests only)"
        ));
    }
    let client = &cfg.client;
    if !client.token.has_keys() && !client.allow_anonymous_connect_without_token {
        out.push(
            "no client.token key is configured and client.allow_anonymous_connect_without_token is off: \
             every client connection will be refused (set client.token.hmac_secret_key)"
                .to_owned(),
        );
    }
    out
}
