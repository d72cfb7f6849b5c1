//! What to say about a configuration key or `HERALD_*` variable Herald does not use: the
//! nearest known key when it looks misspelt, or, for a Centrifugo v6 option Herald does not
//! implement yet, its name and what it is.
//!
//! Most such options are ignored with a warning. A few would change who may connect, what is
//! encrypted or whether messages reach every node if they were ignored while turned on (TLS,
//! proxies deciding access, a broker shared by a cluster, token audience patterns): those are
//! refused, so that a Centrifugo config never runs with less protection than it asks for.

use serde_json::Value;

/// A Centrifugo v6 option Herald does not implement yet.
struct Unimplemented {
    /// Dotted path; `[]` stands for every element of a list.
    path: String,
    /// What the option is, as shown in messages.
    what: &'static str,
    /// Sub-keys of the option (dotted, relative to `path`; `""` for its own value) that must not
    /// be turned on, with the reason.
    refuse: &'static [&'static str],
    why: &'static str,
}

/// A Centrifugo option that is turned on and cannot be ignored safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Dotted key that turns it on (e.g. `http_server.tls.enabled`).
    pub key: String,
    pub what: &'static str,
    /// What ignoring it would do, and what to do instead.
    pub why: &'static str,
}

const TLS: &str = "clients would be served without TLS; terminate TLS in a reverse proxy in front of Herald \
                   and turn this off";
const CLUSTER: &str = "this node would run alone and lose the messages published on other nodes; run a single \
                       Herald node with engine.type \"memory\" and turn this off";
const REDIS_AUTH: &str = "Herald would connect without it; put it in engine.redis.address \
                          (redis://user:password@host:port/db) and remove this";
const REDIS_TOPOLOGY: &str = "Herald would connect to engine.redis.address without it; give standalone instances \
                              as redis:// addresses (several for sharding), Sentinel as \
                              redis+sentinel://host:port?sentinel_master_name=NAME, and one node of a Redis \
                              Cluster as its address (the cluster is detected)";
const NATS_TLS: &str = "the connection to NATS would not be encrypted; reach NATS over a trusted network (or a \
                        tls:// URL with the server's certificate trusted by the system) and turn this off";
const RAW_MODE: &str = "channels would not map to NATS subjects the way this option asks; Herald keeps its own \
                        subject layout under broker.nats.prefix, turn this off";
const PROXY: &str = "your backend would not be asked, so access would be decided by tokens and channel options \
                     alone; GRPC stream proxies are not implemented, turn this off";
const TOKEN_PATTERN: &str = "tokens would be accepted whatever their claim says; use client.token.audience / \
                             issuer (exact values) instead";

/// Options whose path is fixed.
const OPTIONS: &[(&str, &str, &[&str], &str)] = &[
    ("http_server.tls.server_ca_pem", "a CA for outgoing TLS connections", &[], ""),
    ("http_server.tls.insecure_skip_verify", "skipping verification of outgoing TLS connections", &[], ""),
    ("http_server.tls.server_name", "a server name for outgoing TLS connections", &[], ""),
    ("http_server.tls_autocert", "automatic TLS certificates (ACME)", &["enabled"], TLS),
    ("http_server.tls_external", "TLS for external endpoints only", &[], ""),
    ("http_server.internal_tls", "TLS on the internal port", &["enabled"], TLS),
    ("http_server.http3", "HTTP/3", &[], ""),
    ("http_server.h2c_external", "HTTP/2 without TLS", &[], ""),
    ("http_api.error_mode", "the transport error mode of the server API", &[], ""),
    ("grpc_api", "the GRPC server API", &["tls.enabled"], TLS),
    ("engine.redis.user", "a Redis user name apart from the address", &[""], REDIS_AUTH),
    ("engine.redis.password", "a Redis password apart from the address", &[""], REDIS_AUTH),
    ("engine.redis.db", "a Redis database apart from the address", &[""], REDIS_AUTH),
    ("engine.redis.sentinel_client_name", "a client name towards Sentinel", &[], ""),
    ("engine.redis.client_name", "a Redis client name", &[], ""),
    ("engine.redis.sentinel_address", "Redis Sentinel", &[""], REDIS_TOPOLOGY),
    ("engine.redis.sentinel_master_name", "Redis Sentinel", &[""], REDIS_TOPOLOGY),
    ("engine.redis.force_resp2", "RESP2 only", &[], ""),
    ("engine.redis.history_use_lists", "history in Redis lists", &[], ""),
    ("engine.redis.presence_user_mapping", "per-user presence mapping", &[], ""),
    ("engine.redis.presence_hash_field_ttl", "presence expiry by hash field TTL", &[], ""),
    ("broker.redis", "the Redis broker", &[], ""),
    ("broker.postgres", "the PostgreSQL broker", &[], ""),
    ("broker.nats.tls", "TLS to NATS", &["enabled"], NATS_TLS),
    ("broker.nats.raw_mode", "NATS raw mode", &["enabled"], RAW_MODE),
    ("broker.nats.allow_wildcards", "wildcard subscriptions over NATS", &[""], RAW_MODE),
    ("presence_manager.redis", "the Redis presence manager", &[], ""),
    ("controller", "a separate cluster controller", &["enabled"], CLUSTER),
    ("client.insecure", "insecure client mode", &[], ""),
    ("client.user_id_http_header", "the user id taken from an HTTP header", &[], ""),
    ("client.connect_code_to_unidirectional_disconnect", "unidirectional disconnect codes", &[], ""),
    ("uni_websocket.join_push_messages", "joined pushes on the unidirectional WebSocket", &[], ""),
    ("uni_sse.connect_code_to_http_response", "HTTP statuses for unidirectional connect errors", &[], ""),
    ("uni_http_stream.connect_code_to_http_response", "HTTP statuses for unidirectional connect errors", &[], ""),
    ("client.token.jwks_public_endpoint", "JWKS token keys", &[], ""),
    ("client.token.audience_regex", "a pattern for the token audience", &[""], TOKEN_PATTERN),
    ("client.token.issuer_regex", "a pattern for the token issuer", &[""], TOKEN_PATTERN),
    ("client.subscription_token.jwks_public_endpoint", "JWKS token keys", &[], ""),
    ("client.subscription_token.audience_regex", "a pattern for the token audience", &[""], TOKEN_PATTERN),
    ("client.subscription_token.issuer_regex", "a pattern for the token issuer", &[""], TOKEN_PATTERN),
    ("channel.proxy.subscribe_stream", "the subscribe stream proxy (GRPC)", &[], ""),
    ("rpc.ping", "the built-in ping RPC method", &[], ""),
    ("rpc.ping_method", "the built-in ping RPC method", &[], ""),
    ("webtransport", "the WebTransport transport", &[], ""),
    ("uni_grpc", "the unidirectional GRPC transport", &["tls.enabled"], TLS),
    ("websocket.compression", "WebSocket compression", &[], ""),
    ("admin.web_path", "serving the admin console from a directory", &[], ""),
    ("admin.web_proxy_address", "proxying the admin console to another server", &[], ""),
    ("admin.external", "the admin console on the external port", &[], ""),
    ("debug", "the debug endpoints", &[], ""),
    ("swagger", "the Swagger UI", &[], ""),
    ("opentelemetry.consuming", "spans of asynchronous consumers", &[], ""),
    ("graphite", "Graphite metrics", &[], ""),
    ("usage_stats", "usage statistics", &[], ""),
    ("consumers", "asynchronous API consumers", &[], ""),
    ("pid_file", "a PID file", &[], ""),
];

/// Channel options Herald does not have, for `channel.without_namespace` and every namespace.
const CHANNEL_OPTIONS: &[(&str, &str, &[&str], &str)] = &[
    ("subscribe_stream_proxy_enabled", "the subscribe stream proxy", &[""], PROXY),
    ("subscribe_stream_proxy_name", "a named subscribe stream proxy", &[], ""),
    ("delta_publish", "delta compression", &[], ""),
    ("allowed_delta_types", "delta compression", &[], ""),
    ("publication_data_format", "publication data format checks", &[], ""),
    ("allow_tags_filter", "tags filters", &[], ""),
    ("auto_cache_recover", "automatic cache recovery", &[], ""),
    ("subscription_type", "map and shared-poll subscriptions", &[], ""),
];

/// Proxy object options Herald does not have, for every proxy.
const PROXY_OPTIONS: &[(&str, &str)] = &[
    ("http.status_to_code_transforms", "HTTP status to code transforms (other statuses are error 100)"),
    ("grpc_metadata", "GRPC metadata forwarding"),
    ("grpc", "GRPC proxy options"),
];

/// Where a proxy object can be.
const PROXY_SECTIONS: &[&str] = &[
    "client.proxy.connect",
    "client.proxy.refresh",
    "channel.proxy.subscribe",
    "channel.proxy.publish",
    "channel.proxy.sub_refresh",
    "rpc.proxy",
    "proxies[]",
];

fn table() -> Vec<Unimplemented> {
    let fixed = OPTIONS.iter().map(|&(path, what, refuse, why)| Unimplemented { path: path.into(), what, refuse, why });
    let channel = ["channel.without_namespace", "channel.namespaces[]"].into_iter().flat_map(|section| {
        CHANNEL_OPTIONS.iter().map(move |&(key, what, refuse, why)| Unimplemented {
            path: format!("{section}.{key}"),
            what,
            refuse,
            why,
        })
    });
    let proxy = PROXY_SECTIONS.iter().flat_map(|section| {
        PROXY_OPTIONS.iter().map(move |&(key, what)| Unimplemented {
            path: format!("{section}.{key}"),
            what,
            refuse: &[],
            why: "",
        })
    });
    fixed.chain(channel).chain(proxy).collect()
}

/// Dotted paths of every Centrifugo option in the table (for the test that none is known).
pub fn unimplemented_paths() -> Vec<String> {
    table().into_iter().map(|u| u.path).collect()
}

/// Whether a value turns something on: `true`, a non-empty value, a non-zero number.
fn is_on(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => {
            let s = s.trim().to_ascii_lowercase();
            !["", "false", "0", "no", "off", "f"].contains(&s.as_str())
        }
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn warning(subject: &str, what: &str) -> String {
    format!("{subject} is a Centrifugo option Herald does not implement yet ({what}); ignored")
}

/// The verdict on a file key Herald does not know, at `path` (list indices as `[N]`): `None`
/// when it is no Centrifugo option, else the warning to print, or the refusal.
pub fn file_key(path: &str, value: &Value) -> Option<Result<String, Refusal>> {
    let generic = generic_path(path);
    let entry = table().into_iter().find(|u| u.path == generic)?;
    for sub in entry.refuse {
        let mut at = Some(value);
        for key in sub.split('.').filter(|k| !k.is_empty()) {
            at = at.and_then(|v| v.get(key));
        }
        if at.is_some_and(is_on) {
            let key = if sub.is_empty() { path.to_owned() } else { format!("{path}.{sub}") };
            return Some(Err(Refusal { key, what: entry.what, why: entry.why }));
        }
    }
    Some(Ok(warning(&format!("{path:?}"), entry.what)))
}

/// The verdict on a `HERALD_*` variable Herald does not know (see [`file_key`]).
pub fn env_var(name: &str, text: &str) -> Option<Result<String, Refusal>> {
    let rest = name.strip_prefix(crate::loader::ENV_PREFIX)?;
    // Lists of objects can only be set as a whole, by a variable Herald knows.
    // The longest match: `HTTP_SERVER_TLS_AUTOCERT_…` is `http_server.tls_autocert`, not `.tls`.
    let entry = table()
        .into_iter()
        .filter(|u| !u.path.contains("[]"))
        .filter(|u| {
            let own = env_name(&u.path);
            rest == own || rest.strip_prefix(&own).is_some_and(|r| r.starts_with('_'))
        })
        .max_by_key(|u| u.path.len())?;
    let own = env_name(&entry.path);
    for sub in entry.refuse {
        let wanted = if sub.is_empty() { own.clone() } else { format!("{own}_{}", env_name(sub)) };
        if rest == wanted && is_on(&Value::String(text.to_owned())) {
            let key = if sub.is_empty() { entry.path.clone() } else { format!("{}.{sub}", entry.path) };
            return Some(Err(Refusal { key, what: entry.what, why: entry.why }));
        }
    }
    Some(Ok(warning(&format!("environment variable {name:?} ({})", entry.path), entry.what)))
}

fn env_name(path: &str) -> String {
    path.replace('.', "_").to_ascii_uppercase()
}

/// `channel.namespaces[3].x` → `channel.namespaces[].x`.
fn generic_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Suggestions

/// Edit distance with adjacent transpositions counted as one edit (`histroy` → `history`).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[..width].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// The most edits a name of this length may be from the one meant: a third of it, at least one
/// and at most three, so short names do not match everything.
fn tolerance(word: &str) -> usize {
    (word.chars().count() / 3).clamp(1, 3)
}

/// The number of edits from `word` to `candidate`, when within [`tolerance`].
pub fn closeness(word: &str, candidate: &str) -> Option<usize> {
    let d = distance(word, candidate);
    (d <= tolerance(word)).then_some(d)
}

/// The candidate closest to `word` within [`tolerance`]; among equally close ones, the first.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if let Some(d) = closeness(word, candidate)
            && best.is_none_or(|(b, _)| d < b)
        {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distances() {
        assert_eq!(distance("allowed_orgins", "allowed_origins"), 1);
        assert_eq!(distance("histroy_size", "history_size"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn nearest_needs_a_close_match() {
        let keys = ["allowed_origins", "channel_limit", "token"];
        assert_eq!(nearest("allowed_orgins", keys), Some("allowed_origins"));
        assert_eq!(nearest("tokne", keys), Some("token"));
        assert_eq!(nearest("foo", keys), None);
        assert_eq!(nearest("channel_limits_per_user", keys), None);
    }

    #[test]
    fn refusals_and_warnings_for_files() {
        // TLS and client certificates are implemented; ACME is not.
        assert_eq!(file_key("http_server.tls", &json!({"enabled": true})), None);
        assert_eq!(file_key("http_server.tls.client_ca_pem", &json!("/etc/ca.pem")), None);
        let off = file_key("http_server.tls_autocert", &json!({"enabled": false}));
        assert_eq!(
            off.unwrap().unwrap(),
            r#""http_server.tls_autocert" is a Centrifugo option Herald does not implement yet (automatic TLS certificates (ACME)); ignored"#
        );
        assert_eq!(file_key("client.proxy", &json!({"refresh": {"enabled": "true"}})), None, "implemented");
        let ns = file_key("channel.namespaces[2].subscribe_stream_proxy_enabled", &json!(true)).unwrap();
        assert_eq!(ns.unwrap_err().key, "channel.namespaces[2].subscribe_stream_proxy_enabled");
        assert!(file_key("rpc.ping", &json!(true)).unwrap().is_ok(), "warned about, not refused");
        let transforms = file_key("proxies[1].http.status_to_code_transforms", &json!([{"status_code": 404}]));
        assert!(transforms.unwrap().unwrap().contains("status to code transforms"));
        assert!(file_key("grpc_api", &json!({"enabled": true})).unwrap().is_ok());
        assert!(file_key("grpc_api", &json!({"tls": {"enabled": true}})).unwrap().is_err());
        assert!(file_key("client.token.audience_regex", &json!("")).unwrap().is_ok());
        assert!(file_key("client.token.audience_regex", &json!("^a")).unwrap().is_err());
        assert!(file_key("controller", &json!({"enabled": true, "type": "nats"})).unwrap().is_err());
        assert_eq!(
            file_key("broker.nats.tls", &json!({"enabled": true})).unwrap().unwrap_err().key,
            "broker.nats.tls.enabled"
        );
        assert!(file_key("broker.nats.raw_mode", &json!({"enabled": false})).unwrap().is_ok());
        assert_eq!(file_key("client.nonsense", &json!(true)), None);
    }

    #[test]
    fn refusals_and_warnings_for_env() {
        assert_eq!(env_var("HERALD_HTTP_SERVER_TLS_ENABLED", "1"), None, "TLS is implemented");
        assert_eq!(env_var("HERALD_HTTP_SERVER_TLS_CLIENT_CA_PEM", "x"), None, "client certificates are implemented");
        assert_eq!(
            env_var("HERALD_ADMIN_WEB_PATH", "x").unwrap().unwrap(),
            r#"environment variable "HERALD_ADMIN_WEB_PATH" (admin.web_path) is a Centrifugo option Herald does not implement yet (serving the admin console from a directory); ignored"#
        );
        assert_eq!(env_var("HERALD_HTTP_SERVER_INTERNAL_PORT", "9000"), None, "the internal port is implemented");
        let internal_tls = env_var("HERALD_HTTP_SERVER_INTERNAL_TLS_ENABLED", "true").unwrap().unwrap_err();
        assert_eq!(internal_tls.key, "http_server.internal_tls.enabled");
        let ns = env_var("HERALD_CHANNEL_WITHOUT_NAMESPACE_SUBSCRIBE_STREAM_PROXY_ENABLED", "yes").unwrap();
        assert_eq!(ns.unwrap_err().key, "channel.without_namespace.subscribe_stream_proxy_enabled");
        // A longer name that merely starts like an option is not that option.
        assert_eq!(env_var("HERALD_ADMINISTRATOR", "x"), None);
        assert_eq!(
            env_var("HERALD_OPENTELEMETRY_ENABLED", "true"),
            None,
            "a known key (refused at validation without the otlp feature)"
        );
        let acme = env_var("HERALD_HTTP_SERVER_TLS_AUTOCERT_ENABLED", "true").unwrap().unwrap_err();
        assert_eq!(acme.key, "http_server.tls_autocert.enabled");
    }
}
