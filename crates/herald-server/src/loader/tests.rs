//! Unit tests of `loader`.

use super::*;

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn load_env(vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    load(None, env(vars), &Overrides::default())
}

/// The error of loading `vars`, and its message.
fn env_error(vars: &[(&str, &str)]) -> (ConfigError, String) {
    let err = load_env(vars).unwrap_err();
    let text = err.to_string();
    (err, text)
}

#[test]
fn env_table_has_unique_expected_names() {
    let names = env_var_names();
    let map: BTreeMap<_, _> = names.iter().cloned().collect();
    assert_eq!(map.len(), names.len());
    assert_eq!(map["HERALD_HTTP_API_KEY"], "http_api.key");
    assert_eq!(map["HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY"], "client.token.hmac_secret_key");
    assert_eq!(map["HERALD_CHANNEL_WITHOUT_NAMESPACE_PRESENCE"], "channel.without_namespace.presence");
    assert_eq!(map["HERALD_ENGINE_TYPE"], "engine.type");
    assert_eq!(map["HERALD_CHANNEL_NAMESPACES"], "channel.namespaces");
    assert_eq!(map["HERALD_CLIENT_TOKEN"], "client.token");
    assert!(!map.contains_key(CONFIG_ENV));
}

#[test]
fn defaults_load_and_validate() {
    let loaded = load_env(&[]).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty());
    validate(&loaded.config).unwrap();
}

#[test]
fn bools_parse_loosely() {
    for (text, want) in [("TRUE", true), ("1", true), ("yes", true), ("No", false), ("0", false), ("false", false)] {
        let c = load_env(&[("HERALD_HTTP_API_INSECURE", text)]).unwrap().config;
        assert_eq!(c.http_api.insecure, want, "{text}");
    }
}

#[test]
fn env_types() {
    let c = load_env(&[
        ("HERALD_HTTP_SERVER_PORT", "9001"),
        ("HERALD_CLIENT_PING_INTERVAL", "10s"),
        ("HERALD_CLIENT_ALLOWED_ORIGINS", r#"["https://a.example", "https://b.example"]"#),
        ("HERALD_CHANNEL_WITHOUT_NAMESPACE_FORCE_RECOVERY_MODE", "cache"),
    ])
    .unwrap()
    .config;
    assert_eq!(c.http_server.port, 9001);
    assert_eq!(c.client.ping_interval, std::time::Duration::from_secs(10));
    assert_eq!(c.client.allowed_origins, ["https://a.example", "https://b.example"]);
    assert_eq!(c.channel.without_namespace.force_recovery_mode, herald_hub::config::RecoveryMode::Cache);
}

#[test]
fn section_env_then_specific_env() {
    let c = load_env(&[
        ("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "specific"),
        ("HERALD_CLIENT_TOKEN", r#"{"hmac_secret_key":"section","audience":"aud"}"#),
    ])
    .unwrap()
    .config;
    assert_eq!(c.client.token.hmac_secret_key, "specific");
    assert_eq!(c.client.token.audience, "aud");
}

#[test]
fn bad_integer_env_names_variable() {
    let (_, err) = env_error(&[("HERALD_HTTP_SERVER_PORT", "eighty")]);
    assert!(err.contains("HERALD_HTTP_SERVER_PORT"), "{err}");
    let (_, err) = env_error(&[("HERALD_HTTP_SERVER_PORT", "70000")]);
    assert!(err.contains("http_server.port") && err.contains("HERALD_HTTP_SERVER_PORT"), "{err}");
}

#[test]
fn bad_duration_from_env_names_key_and_variable() {
    let (_, err) = env_error(&[("HERALD_CLIENT_PONG_TIMEOUT", "8 sec")]);
    assert!(err.starts_with("invalid value for client.pong_timeout: "), "{err}");
    assert!(err.ends_with("(set by environment variable HERALD_CLIENT_PONG_TIMEOUT)"), "{err}");
}

#[test]
fn namespace_option_errors_name_the_key() {
    let (_, err) = env_error(&[("HERALD_CHANNEL_NAMESPACES", r#"[{"name":"ok"},{"name":"b","history_ttl":"5x"}]"#)]);
    assert!(err.starts_with(r#"invalid value for channel.namespaces[1].history_ttl: invalid duration "5x""#), "{err}");
    let (_, err) = env_error(&[("HERALD_CHANNEL_NAMESPACES", r#"[{"name":5}]"#)]);
    assert!(err.starts_with("invalid value for channel.namespaces[0].name: "), "{err}");
}

#[test]
fn nulls_are_unset() {
    let mut v = serde_json::json!({"client": {"ping_interval": null, "token": {"hmac_secret_key": "k"}}});
    strip_nulls(&mut v);
    assert_eq!(v, serde_json::json!({"client": {"token": {"hmac_secret_key": "k"}}}));
}

#[test]
fn validation_errors_name_keys() {
    let check = |f: &dyn Fn(&mut Config), key: &str| {
        let mut c = Config::default();
        f(&mut c);
        let err = validate(&c).unwrap_err();
        assert!(matches!(&err, ConfigError::Invalid { .. }), "{err:?}");
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().starts_with(&format!("{key}: ")), "{key}: {err}");
    };
    check(&|c| c.engine.kind = "tarantool".into(), "engine.type");
    check(
        &|c| {
            c.engine.kind = "redis".into();
            c.engine.redis.address = vec!["127.0.0.1:6379".into()];
        },
        "engine.redis.address",
    );
    check(
        &|c| {
            c.engine.kind = "redis".into();
            c.engine.redis.prefix = "a{b}".into();
        },
        "engine.redis.prefix",
    );
    let redis_tls = |f: fn(&mut crate::config::RedisTlsConfig)| {
        move |c: &mut Config| {
            c.engine.kind = "redis".into();
            f(&mut c.engine.redis.tls);
        }
    };
    check(&redis_tls(|t| t.server_name = "redis.internal".into()), "engine.redis.tls.server_name");
    check(&redis_tls(|t| t.client_ca_pem = "ca.pem".into()), "engine.redis.tls.client_ca_pem");
    check(&redis_tls(|t| t.cert_pem = "-----BEGIN CERTIFICATE-----".into()), "engine.redis.tls.cert_pem");
    check(&redis_tls(|t| t.server_ca_pem = "/nonexistent/ca.pem".into()), "engine.redis.tls.server_ca_pem");
    let sentinel_tls = |f: fn(&mut crate::config::RedisTlsConfig)| {
        move |c: &mut Config| {
            c.engine.kind = "redis".into();
            c.engine.redis.address = vec!["redis+sentinel://127.0.0.1:26379?sentinel_master_name=m".into()];
            f(&mut c.engine.redis.sentinel_tls);
        }
    };
    check(&sentinel_tls(|t| t.server_name = "s".into()), "engine.redis.sentinel_tls.server_name");
    check(&sentinel_tls(|t| t.key_pem = "k".into()), "engine.redis.sentinel_tls.cert_pem");
    check(
        &sentinel_tls(|t| {
            t.enabled = true;
            t.server_ca_pem = "/nonexistent/ca.pem".into();
        }),
        "engine.redis.sentinel_tls.server_ca_pem",
    );
    // Options set while it is off, or TLS to sentinels without a Sentinel address.
    check(&sentinel_tls(|t| t.insecure_skip_verify = true), "engine.redis.sentinel_tls.enabled");
    check(
        &|c| {
            c.engine.kind = "redis".into();
            c.engine.redis.sentinel_tls.enabled = true;
        },
        "engine.redis.sentinel_tls.enabled",
    );
    let cluster_seeds = |seeds: &'static [&'static str], address: Option<&'static str>| {
        move |c: &mut Config| {
            c.engine.kind = "redis".into();
            c.engine.redis.cluster_address = seeds.iter().map(|s| s.to_string()).collect();
            if let Some(a) = address {
                c.engine.redis.address = vec![a.into()];
            }
        }
    };
    check(&cluster_seeds(&["10.0.0.1:7000"], Some("redis://10.0.0.2:7000")), "engine.redis.cluster_address");
    check(&cluster_seeds(&["10.0.0.1"], None), "engine.redis.cluster_address");
    check(&cluster_seeds(&["10.0.0.1:x"], None), "engine.redis.cluster_address");
    check(&cluster_seeds(&["http://10.0.0.1:7000"], None), "engine.redis.cluster_address");
    let mut c = Config::default();
    cluster_seeds(&["10.0.0.1:7000", "redis://u:p@10.0.0.2:7000", "rediss://[::1]:7000"], None)(&mut c);
    validate(&c).unwrap();
    let mut c = Config::default();
    sentinel_tls(|t| {
        t.enabled = true;
        t.insecure_skip_verify = true;
    })(&mut c);
    validate(&c).unwrap();
    // TLS addresses, and NATS carrying publications next to Redis (mixed mode), are accepted.
    let mut c = Config::default();
    c.engine.kind = "redis".into();
    c.engine.redis.address = vec!["rediss://127.0.0.1:6380".into()];
    c.broker.enabled = true;
    c.broker.kind = "nats".into();
    validate(&c).unwrap();
    check(&|c| c.log.level = "loud".into(), "log.level");
    check(&|c| c.log.format = "xml".into(), "log.format");
    check(&|c| c.runtime.scheduler = "green".into(), "runtime.scheduler");
    check(&|c| c.health.handler_prefix = "health".into(), "health.handler_prefix");
    check(&|c| c.prometheus.handler_prefix = "/api".into(), "prometheus.handler_prefix");
    check(&|c| c.shutdown.client_close_window = c.shutdown.timeout, "shutdown.client_close_window");
    check(&|c| c.websocket.message_size_limit = 100, "websocket.message_size_limit");
    check(&|c| c.client.queue_max_size = 10, "client.queue_max_size");
    check(&|c| c.http_server.idle_timeout = std::time::Duration::ZERO, "http_server.idle_timeout");
    check(&|c| c.http_server.request_head_timeout = std::time::Duration::ZERO, "http_server.request_head_timeout");
    check(&|c| c.client.pong_timeout = c.client.ping_interval, "client.pong_timeout");
    check(
        &|c| c.channel.namespaces.push(Namespace { name: "x".into(), ..Default::default() }),
        "channel.namespaces[0].name",
    );
    let echo = |path: &str, address: &str| {
        let path = path.to_owned();
        let address = address.to_owned();
        move |c: &mut Config| {
            c.websocket.echo_endpoint_for_conformance_tests = path.clone();
            c.http_server.address = address.clone();
        }
    };
    let key = "websocket.echo_endpoint_for_conformance_tests";
    check(&echo("echo", "127.0.0.1"), key);
    check(&echo("/connection/websocket/", "127.0.0.1"), key);
    check(&echo("/echo", ""), key);
    check(&echo("/echo", "0.0.0.0"), key);
    for address in ["127.0.0.1", "::1", "[::1]", "localhost"] {
        let mut c = Config::default();
        echo("/echo", address)(&mut c);
        validate(&c).unwrap();
        assert!(warnings(&c).iter().any(|w| w.starts_with(key)), "warned about the echo endpoint");
    }
    // A disabled endpoint may share a prefix.
    let mut c = Config::default();
    c.prometheus.enabled = false;
    c.prometheus.handler_prefix = "/api".into();
    validate(&c).unwrap();
}

#[test]
fn bad_env_value_is_an_env_error() {
    let (err, text) = env_error(&[("HERALD_CLIENT_CHANNEL_LIMIT", "lots")]);
    let ConfigError::Env { variable, expected, got, parse_error, .. } = &err else { panic!("{err:?}") };
    assert_eq!(variable, "HERALD_CLIENT_CHANNEL_LIMIT");
    assert_eq!((*expected, got.as_str(), parse_error), ("an integer", "lots", &None));
    assert_eq!(err.key(), Some("client.channel_limit"));
    assert_eq!(
        text,
        r#"invalid value for environment variable HERALD_CLIENT_CHANNEL_LIMIT (client.channel_limit): expected an integer, got "lots""#
    );

    // JSON values carry the parser's message after the expectation.
    let (err, text) = env_error(&[("HERALD_CLIENT_TOKEN", "{")]);
    assert!(matches!(&err, ConfigError::Env { parse_error: Some(_), .. }), "{err:?}");
    assert_eq!(err.key(), Some("client.token"));
    assert!(
            text.starts_with(
                r#"invalid value for environment variable HERALD_CLIENT_TOKEN (client.token): expected a JSON object, got "{": "#
            ),
            "{text}"
        );
}

#[test]
fn bad_port_is_a_deserialize_error_with_its_source() {
    let (err, text) = env_error(&[("HERALD_HTTP_SERVER_PORT", "70000")]);
    let ConfigError::Deserialize { set_by, .. } = &err else { panic!("{err:?}") };
    assert_eq!(set_by, &Some(Source::Env("HERALD_HTTP_SERVER_PORT".into())));
    assert_eq!(err.key(), Some("http_server.port"));
    assert!(text.starts_with("invalid value for http_server.port: "), "{text}");
    assert!(text.ends_with(" (set by environment variable HERALD_HTTP_SERVER_PORT)"), "{text}");

    // A whole section from the environment is the source of the keys inside it.
    let (err, _) = env_error(&[("HERALD_HTTP_SERVER", r#"{"port":"x"}"#)]);
    assert!(matches!(&err, ConfigError::Deserialize { set_by: Some(Source::Env(v)), .. } if v == "HERALD_HTTP_SERVER"));
    assert_eq!(err.key(), Some("http_server.port"));

    // Flags are named the way they are typed.
    let mut sources = Vec::new();
    let flags = Overrides { log_level: Some("x".into()), ..Default::default() };
    apply_overrides(&mut Value::Object(Map::new()), &flags, &mut sources);
    assert_eq!(source_of(&sources, "log.level"), Some(&Source::Flag("log-level")));
    assert_eq!(Source::Flag("log-level").to_string(), "--log-level");
}

#[test]
fn namespace_option_error_is_keyed() {
    let (err, _) = env_error(&[("HERALD_CHANNEL_NAMESPACES", r#"[{"name":"ok"},{"name":"b","history_ttl":"5x"}]"#)]);
    assert!(matches!(&err, ConfigError::Deserialize { .. }), "{err:?}");
    assert_eq!(err.key(), Some("channel.namespaces[1].history_ttl"));

    // The hub's checks become `Invalid` with the hub's key.
    let mut c = Config::default();
    c.channel.namespaces.push(Namespace { name: "ok".into(), ..Default::default() });
    c.channel.namespaces[0].options.history_size = 10;
    let err = validate(&c).unwrap_err();
    assert!(matches!(&err, ConfigError::Invalid { .. }), "{err:?}");
    assert_eq!(err.key(), Some("channel.namespaces[0].history_ttl"));
    assert_eq!(err.to_string(), "channel.namespaces[0].history_ttl: must be set when history_size is set");
}

#[test]
fn missing_file_is_a_file_error() {
    let path = std::env::temp_dir().join("herald-loader-test-missing.yaml");
    let err = load(Some(&path), Vec::new(), &Overrides::default()).unwrap_err();
    let ConfigError::File { path: at, problem: FileProblem::NotFound } = &err else { panic!("{err:?}") };
    assert_eq!(at, &path);
    assert_eq!(err.key(), None);
    assert_eq!(err.to_string(), format!("config file \"{}\" not found", path.display()));
}

#[test]
fn unimplemented_centrifugo_options_are_not_herald_keys() {
    // A stale entry would never fire: remove it when the option lands in `Config`.
    let known = Schema::new().paths();
    let namespace: Vec<String> =
        Schema::new().namespace.as_object().unwrap().keys().map(|k| format!("{NAMESPACES_PATH}[].{k}")).collect();
    for path in config_keys::unimplemented_paths() {
        assert!(!known.contains(&path) && !namespace.contains(&path), "{path} is a Herald key");
    }
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let tree = serde_json::json!({
        "client": {"allowed_orgins": ["x"], "hmac_secret_key": "s", "zzz": 1},
        "allowed_origins": [],
        "channel": {"namespaces": [{"name": "a", "presense": true}]},
    });
    let schema = Schema::new();
    let (mut warnings, mut refusals) = (Vec::new(), Vec::new());
    unknown_keys(&tree, &schema.defaults, "", &schema, &mut warnings, &mut refusals);
    assert!(refusals.is_empty());
    assert_eq!(
        warnings,
        [
            r#"unknown configuration key "allowed_origins" (ignored; did you mean client.allowed_origins?)"#,
            r#"unknown configuration key "channel.namespaces[0].presense" (ignored; did you mean channel.namespaces[0].presence?)"#,
            r#"unknown configuration key "client.allowed_orgins" (ignored; did you mean client.allowed_origins?)"#,
            r#"unknown configuration key "client.hmac_secret_key" (ignored; did you mean client.token.hmac_secret_key?)"#,
            r#"unknown configuration key "client.zzz" (ignored)"#,
        ]
    );

    let w = load_env(&[("HERALD_CLIENT_ALLOWED_ORGINS", "x"), ("HERALD_NOTHING_LIKE_IT", "1")]).unwrap().warnings;
    assert_eq!(
        w,
        [
            r#"unknown environment variable "HERALD_CLIENT_ALLOWED_ORGINS" (ignored; did you mean HERALD_CLIENT_ALLOWED_ORIGINS?)"#,
            r#"unknown environment variable "HERALD_NOTHING_LIKE_IT" (ignored)"#,
        ]
    );
}

#[test]
fn strict_mode_refuses_ignored_settings() {
    let strict = Overrides { strict: true, ..Default::default() };
    let err = load(None, env(&[("HERALD_CLIENT_PING_INTERVALS", "5s")]), &strict).unwrap_err();
    let ConfigError::Ignored { warnings } = &err else { panic!("{err:?}") };
    assert_eq!(warnings.len(), 1);
    assert!(err.to_string().starts_with("strict mode: 1 setting(s) would be ignored: "), "{err}");
    assert!(err.to_string().contains("HERALD_CLIENT_PING_INTERVAL?"), "{err}");
    assert!(load(None, env(&[("HERALD_ADMIN_WEB_PATH", "/srv/web")]), &strict).is_err());
    load(None, env(&[("HERALD_CLIENT_PING_INTERVAL", "5s")]), &strict).unwrap();
}

#[test]
fn unsafe_centrifugo_options_are_refused_with_their_source() {
    let (err, text) = env_error(&[("HERALD_HTTP_SERVER_TLS_AUTOCERT_ENABLED", "true")]);
    assert!(matches!(&err, ConfigError::Unsupported { .. }), "{err:?}");
    assert_eq!(err.key(), Some("http_server.tls_autocert.enabled"));
    assert!(
        text.starts_with(
            "http_server.tls_autocert.enabled: Herald does not support this Centrifugo option yet (automatic TLS certificates (ACME)); "
        ),
        "{text}"
    );
    assert!(text.ends_with("(set by environment variable HERALD_HTTP_SERVER_TLS_AUTOCERT_ENABLED)"), "{text}");

    // Inside a section set as JSON by a variable Herald knows.
    let (err, text) = env_error(&[("HERALD_CLIENT_TOKEN", r#"{"audience_regex": "^app$"}"#)]);
    assert_eq!(err.key(), Some("client.token.audience_regex"), "{text}");
    assert!(text.ends_with("(set by environment variable HERALD_CLIENT_TOKEN)"), "{text}");

    let w = load_env(&[("HERALD_WEBTRANSPORT_ENABLED", "true")]).unwrap().warnings;
    assert_eq!(
        w,
        [
            r#"environment variable "HERALD_WEBTRANSPORT_ENABLED" (webtransport) is a Centrifugo option Herald does not implement yet (the WebTransport transport); ignored"#
        ]
    );
    let loaded = load_env(&[("HERALD_SSE_ENABLED", "true"), ("HERALD_UNI_SSE_MAX_REQUEST_BODY_SIZE", "2048")]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(loaded.config.sse.enabled);
    assert_eq!(loaded.config.uni_sse.body_limit(), 2048);
}

#[test]
fn integer_errors_name_the_range() {
    let (_, text) = env_error(&[("HERALD_HTTP_SERVER_PORT", "80000")]);
    assert_eq!(
        text,
        "invalid value for http_server.port: expected a port between 1 and 65535 (0 picks a free port), \
             got 80000 (set by environment variable HERALD_HTTP_SERVER_PORT)"
    );
    let (_, text) = env_error(&[("HERALD_CLIENT_CHANNEL_LIMIT", "-1")]);
    assert_eq!(
        text,
        "invalid value for client.channel_limit: expected a whole number, 0 or more, got -1 (set by environment variable HERALD_CLIENT_CHANNEL_LIMIT)"
    );
    let (_, text) = env_error(&[("HERALD_CLIENT", r#"{"ping_interval": -5}"#)]);
    assert!(text.starts_with("invalid value for client.ping_interval: expected a duration such as \"25s\""), "{text}");
    let (_, text) = env_error(&[("HERALD_CHANNEL_NAMESPACES", r#"[{"name":"ok","history_size":-2}]"#)]);
    assert!(
        text.starts_with("invalid value for channel.namespaces[0].history_size: expected a whole number"),
        "{text}"
    );
    assert!(text.contains("got -2"), "{text}");
    let (_, text) = env_error(&[("HERALD_CLIENT", r#"{"connect_include_server_time": "yes"}"#)]);
    assert!(text.contains(r#"expected true or false, got "yes""#), "{text}");
}

#[test]
fn warnings_for_risky_settings() {
    let c = Config::default();
    let w = warnings(&c);
    assert!(w.iter().any(|w| w.starts_with("http_api.key is empty")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("client.token")), "{w:?}");
    let mut c = Config::default();
    c.http_api.key = "k".into();
    c.client.token.hmac_secret_key = "s".into();
    assert!(warnings(&c).is_empty());
}

/// The edge options load from the environment (lists space-separated), and a bad network is
/// refused naming its key.
#[test]
fn edge_options_load_and_bad_networks_are_refused() {
    let loaded = load_env(&[
        ("HERALD_ACCESS_TRUSTED_PROXIES", "10.0.0.0/8 127.0.0.2"),
        ("HERALD_ACCESS_CLIENT_DENY", "192.0.2.0/24"),
        ("HERALD_ACCESS_PROXY_PROTOCOL", "true"),
        ("HERALD_CLIENT_CONNECTION_LIMIT", "1000"),
        ("HERALD_CLIENT_CONNECTION_RATE_LIMIT", "50"),
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_RATE", "20"),
        ("HERALD_LIMITS_CONNECTION_RATE_PER_ADDRESS", "5"),
        ("HERALD_LIMITS_API_RATE", "100"),
    ])
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.access.trusted_proxies, ["10.0.0.0/8", "127.0.0.2"]);
    assert_eq!(c.access.client.deny, ["192.0.2.0/24"]);
    assert!(c.access.proxy_protocol);
    assert_eq!((c.client.connection_limit, c.client.connection_rate_limit), (1000, 50));
    assert_eq!(c.client.command_rate_limit.rate, 20);
    assert_eq!((c.limits.connection_rate_per_address, c.limits.api_rate), (5, 100));
    validate(c).unwrap();
    let loaded = load_env(&[("HERALD_ACCESS_API_ALLOW", "10.0.0.0/8 10.1.2.3/99")]).unwrap();
    let err = validate(&loaded.config).unwrap_err();
    assert_eq!(err.key(), Some("access.api.allow"));
    assert!(err.to_string().contains("\"10.1.2.3/99\": the prefix length must be 0 to 32"), "{err}");
}
