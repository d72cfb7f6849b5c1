//! Configuration loading (file formats, env, flags, unknown keys, errors) and the `herald`
//! command line (genconfig, checkconfig, gentoken, gensubtoken, version, defaultconfig).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald_auth::{TokenConfig, TokenVerifier};
use herald_server::config::Config;
use herald_server::loader::{self, Loaded, Overrides};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Loads `path` alone; errors as the text `herald` prints.
fn load_file(path: &Path) -> Result<Loaded, String> {
    loader::load(Some(path), Vec::new(), &Overrides::default()).map_err(|e| e.to_string())
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

const JSON: &str = r#"{
  "http_server": {"port": 9000, "address": "127.0.0.1"},
  "http_api": {"key": "api-secret"},
  "client": {
    "ping_interval": "10s",
    "pong_timeout": "4s",
    "allowed_origins": ["https://example.com", "https://*.example.org"],
    "token": {"hmac_secret_key": "hmac-secret"}
  },
  "channel": {
    "without_namespace": {"presence": true, "history_size": 10, "history_ttl": "1m"},
    "namespaces": [
      {"name": "chat", "join_leave": true, "history_size": 50, "history_ttl": "10m", "force_recovery": true}
    ]
  },
  "log": {"level": "debug", "format": "json"}
}"#;

const YAML: &str = r#"
http_server:
  port: 9000
  address: "127.0.0.1"
http_api:
  key: api-secret
client:
  ping_interval: 10s
  pong_timeout: 4s
  allowed_origins:
    - https://example.com
    - "https://*.example.org"
  token:
    hmac_secret_key: hmac-secret
channel:
  without_namespace:
    presence: true
    history_size: 10
    history_ttl: 1m
  namespaces:
    - name: chat
      join_leave: true
      history_size: 50
      history_ttl: 10m
      force_recovery: true
log:
  level: debug
  format: json
"#;

const TOML: &str = r#"
[http_server]
port = 9000
address = "127.0.0.1"

[http_api]
key = "api-secret"

[client]
ping_interval = "10s"
pong_timeout = "4s"
allowed_origins = ["https://example.com", "https://*.example.org"]

[client.token]
hmac_secret_key = "hmac-secret"

[channel.without_namespace]
presence = true
history_size = 10
history_ttl = "1m"

[[channel.namespaces]]
name = "chat"
join_leave = true
history_size = 50
history_ttl = "10m"
force_recovery = true

[log]
level = "debug"
format = "json"
"#;

#[test]
fn json_yaml_toml_are_equivalent() {
    let dir = TempDir::new().unwrap();
    let from_json = load_file(&write(&dir, "c.json", JSON)).unwrap();
    let from_yaml = load_file(&write(&dir, "c.yaml", YAML)).unwrap();
    let from_yml = load_file(&write(&dir, "c.yml", YAML)).unwrap();
    let from_toml = load_file(&write(&dir, "c.toml", TOML)).unwrap();
    for loaded in [&from_json, &from_yaml, &from_yml, &from_toml] {
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
    assert_eq!(from_json.config, from_yaml.config);
    assert_eq!(from_json.config, from_yml.config);
    assert_eq!(from_json.config, from_toml.config);

    let c = &from_json.config;
    assert_ne!(*c, Config::default());
    assert_eq!(c.http_server.port, 9000);
    assert_eq!(c.http_server.address, "127.0.0.1");
    assert_eq!(c.client.ping_interval, Duration::from_secs(10));
    assert_eq!(c.client.allowed_origins, ["https://example.com", "https://*.example.org"]);
    assert_eq!(c.channel.namespaces.len(), 1);
    assert_eq!(c.channel.namespaces[0].name, "chat");
    assert!(c.channel.namespaces[0].options.force_recovery);
    assert_eq!(c.channel.namespaces[0].options.history_ttl, Duration::from_secs(600));
    assert_eq!(c.log.format, "json");
    // Untouched options keep their defaults.
    assert_eq!(c.client.channel_limit, 128);
    loader::validate(c).unwrap();
    assert!(loader::warnings(c).is_empty(), "{:?}", loader::warnings(c));
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.json", JSON);
    let vars = env(&[
        ("HERALD_HTTP_SERVER_PORT", "9100"),
        ("HERALD_HTTP_API_KEY", "from-env"),
        ("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-hmac"),
        ("HERALD_CHANNEL_WITHOUT_NAMESPACE_PRESENCE", "false"),
        ("HERALD_LOG_LEVEL", "warn"),
        ("PATH", "/usr/bin"),
    ]);

    let c = loader::load(Some(&file), vars.clone(), &Overrides::default()).unwrap().config;
    assert_eq!(c.http_server.port, 9100);
    assert_eq!(c.http_api.key, "from-env");
    assert_eq!(c.client.token.hmac_secret_key, "env-hmac");
    assert!(!c.channel.without_namespace.presence);
    assert_eq!(c.log.level, "warn");
    // Not set by env: still from the file.
    assert_eq!(c.http_server.address, "127.0.0.1");
    assert_eq!(c.client.ping_interval, Duration::from_secs(10));

    let flags = Overrides {
        port: Some(9200),
        address: Some("0.0.0.0".into()),
        log_level: Some("error".into()),
        api_key: Some("from-flag".into()),
        strict: false,
    };
    let c = loader::load(Some(&file), vars, &flags).unwrap().config;
    assert_eq!(c.http_server.port, 9200);
    assert_eq!(c.http_server.address, "0.0.0.0");
    assert_eq!(c.log.level, "error");
    assert_eq!(c.http_api.key, "from-flag");
    assert_eq!(c.client.token.hmac_secret_key, "env-hmac");
}

#[test]
fn unknown_keys_are_warned_with_full_path() {
    let dir = TempDir::new().unwrap();
    let file = write(
        &dir,
        "c.yaml",
        r#"
bogus_section: {a: 1}
client:
  foo: 1
  token:
    hmac_secret: typo
channel:
  without_namespace:
    presense: true
  namespaces:
    - name: chat
      presence: true
    - name: other
      histroy_size: 5
"#,
    );
    let loaded = load_file(&file).unwrap();
    let want = [
        r#"unknown configuration key "bogus_section" (ignored)"#,
        r#"unknown configuration key "client.foo" (ignored)"#,
        r#"unknown configuration key "client.token.hmac_secret" (ignored)"#,
        r#"unknown configuration key "channel.without_namespace.presense" (ignored; did you mean channel.without_namespace.presence?)"#,
        r#"unknown configuration key "channel.namespaces[1].histroy_size" (ignored; did you mean channel.namespaces[1].history_size?)"#,
    ];
    for w in want {
        assert!(loaded.warnings.iter().any(|got| got == w), "missing {w}: {:?}", loaded.warnings);
    }
    assert_eq!(loaded.warnings.len(), want.len(), "{:?}", loaded.warnings);
    // Known keys still apply.
    assert!(loaded.config.channel.namespaces[0].options.presence);
    assert_eq!(loaded.config.channel.namespaces[1].name, "other");
}

#[test]
fn unknown_env_variables_are_warned() {
    let vars = env(&[("HERALD_CLIENT_PING_INTERVALS", "5s"), ("HERALD_CONFIG", "x.json"), ("CENTRIFUGO_X", "1")]);
    let loaded = loader::load(None, vars, &Overrides::default()).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            r#"unknown environment variable "HERALD_CLIENT_PING_INTERVALS" (ignored; did you mean HERALD_CLIENT_PING_INTERVAL?)"#
        ]
    );
}

#[test]
fn invalid_duration_names_the_key() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.json", r#"{"client": {"ping_interval": "5x"}}"#);
    let err = load_file(&file).unwrap_err();
    assert_eq!(err, r#"invalid value for client.ping_interval: invalid duration "5x": unknown unit "x""#);

    let file = write(&dir, "ns.toml", "[[channel.namespaces]]\nname = \"chat\"\nhistory_ttl = \"10 minutes\"\n");
    let err = load_file(&file).unwrap_err();
    assert!(err.starts_with("invalid value for channel.namespaces[0].history_ttl: "), "{err}");

    let file = write(&dir, "port.yaml", "http_server:\n  port: 70000\n");
    let err = load_file(&file).unwrap_err();
    assert!(err.starts_with("invalid value for http_server.port: "), "{err}");

    let file = write(&dir, "origins.json", r#"{"client": {"allowed_origins": ["ok", 5]}}"#);
    let err = load_file(&file).unwrap_err();
    assert!(err.starts_with("invalid value for client.allowed_origins[1]: "), "{err}");
}

#[test]
fn file_errors_name_the_file() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.json");
    let err = load_file(&missing).unwrap_err();
    assert!(err.contains("nope.json") && err.contains("not found"), "{err}");

    let ini = write(&dir, "c.ini", "port = 1");
    let err = load_file(&ini).unwrap_err();
    assert!(err.contains("c.ini") && err.contains(".toml"), "{err}");

    let noext = write(&dir, "config", "{}");
    assert!(load_file(&noext).unwrap_err().contains("config"));

    let broken = write(&dir, "broken.json", "{\"client\": ");
    let err = load_file(&broken).unwrap_err();
    assert!(err.contains("broken.json") && err.contains("JSON"), "{err}");

    let list = write(&dir, "list.yaml", "- a\n- b\n");
    assert!(load_file(&list).unwrap_err().contains("list.yaml"));

    // Empty YAML file and YAML keys without values are fine.
    let empty = write(&dir, "empty.yaml", "");
    assert_eq!(load_file(&empty).unwrap().config, Config::default());
    let nulls = write(&dir, "nulls.yaml", "client:\n  ping_interval:\n  allowed_origins:\n");
    assert_eq!(load_file(&nulls).unwrap().config, Config::default());
}

#[test]
fn invalid_env_values_name_the_variable() {
    let err = loader::load(
        None,
        env(&[("HERALD_CLIENT_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN", "maybe")]),
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("HERALD_CLIENT_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN"), "{err}");
    assert!(err.contains("\"maybe\""), "{err}");

    let err = loader::load(None, env(&[("HERALD_CLIENT_CHANNEL_LIMIT", "lots")]), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_CLIENT_CHANNEL_LIMIT"), "{err}");

    let err = loader::load(None, env(&[("HERALD_CHANNEL_NAMESPACES", "chat news")]), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("HERALD_CHANNEL_NAMESPACES"), "{err}");
}

#[test]
fn empty_env_values_count_as_unset() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.json", JSON);
    let vars = env(&[("HERALD_HTTP_SERVER_PORT", ""), ("HERALD_CLIENT_ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN", "")]);
    let c = loader::load(Some(&file), vars, &Overrides::default()).unwrap().config;
    assert_eq!(c.http_server.port, 9000);
}

#[test]
fn namespaces_from_env_json() {
    let vars = env(&[(
        "HERALD_CHANNEL_NAMESPACES",
        r#"[{"name":"chat","presence":true},{"name":"feed","history_size":10,"history_ttl":"5m"}]"#,
    )]);
    let c = loader::load(None, vars, &Overrides::default()).unwrap().config;
    assert_eq!(c.channel.namespaces.len(), 2);
    assert_eq!(c.channel.namespaces[0].name, "chat");
    assert!(c.channel.namespaces[0].options.presence);
    assert_eq!(c.channel.namespaces[1].options.history_ttl, Duration::from_secs(300));
    loader::validate(&c).unwrap();

    // Unknown keys inside env JSON are reported like file keys.
    let vars = env(&[("HERALD_CHANNEL_NAMESPACES", r#"[{"name":"chat","presense":true}]"#)]);
    let loaded = loader::load(None, vars, &Overrides::default()).unwrap();
    assert_eq!(
        loaded.warnings,
        [
            r#"unknown configuration key "channel.namespaces[0].presense" (ignored; did you mean channel.namespaces[0].presence?)"#
        ]
    );
}

#[test]
fn string_lists_from_env() {
    let load = |value: &str| {
        loader::load(None, env(&[("HERALD_CLIENT_ALLOWED_ORIGINS", value)]), &Overrides::default())
            .unwrap()
            .config
            .client
            .allowed_origins
    };
    assert_eq!(load("https://a.example  https://*.b.example"), ["https://a.example", "https://*.b.example"]);
    assert_eq!(load(r#"["https://a.example", "http://x y"]"#), ["https://a.example", "http://x y"]);
}

#[test]
fn invalid_namespace_is_named_by_validate() {
    let dir = TempDir::new().unwrap();
    let file = write(&dir, "c.json", r#"{"channel": {"namespaces": [{"name": "c h a t"}]}}"#);
    let cfg = load_file(&file).unwrap().config;
    let err = loader::validate(&cfg).unwrap_err().to_string();
    assert!(err.starts_with("channel.namespaces[0].name: "), "{err}");

    let file = write(&dir, "e.json", r#"{"engine": {"type": "tarantool"}}"#);
    let err = loader::validate(&load_file(&file).unwrap().config).unwrap_err().to_string();
    assert!(err.starts_with("engine.type: ") && err.contains("not available"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The binary

fn herald(args: &[&str], cwd: &Path, vars: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(vars.iter().copied());
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn genconfig_output_passes_checkconfig_and_is_not_overwritten() {
    let dir = TempDir::new().unwrap();
    for name in ["config.toml", "config.yaml", "config.json"] {
        let out = herald(&["genconfig", "--output", name], dir.path(), &[]);
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        let path = dir.path().join(name);

        let check = herald(&["checkconfig", name], dir.path(), &[]);
        assert!(check.status.success(), "{name}: {}", stderr(&check));
        assert_eq!(stdout(&check).trim(), "config is valid");
        assert!(!stderr(&check).contains("warning"), "{name}: {}", stderr(&check));

        let loaded = load_file(&path).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let c = loaded.config;
        assert!(c.client.token.hmac_secret_key.len() >= 32);
        assert!(c.client.token.hmac_secret_key.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(c.http_api.key.len() >= 32);
        assert_ne!(c.http_api.key, c.client.token.hmac_secret_key);
        assert_eq!(c.channel.namespaces[0].name, "chat");

        let before = std::fs::read_to_string(&path).unwrap();
        let again = herald(&["genconfig", "--output", name], dir.path(), &[]);
        assert_eq!(again.status.code(), Some(1));
        assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);

        let forced = herald(&["genconfig", "--output", name, "--force"], dir.path(), &[]);
        assert!(forced.status.success(), "{}", stderr(&forced));
        let after = load_file(&path).unwrap().config;
        assert_ne!(after.client.token.hmac_secret_key, c.client.token.hmac_secret_key);
    }
    // The default output name.
    let out = herald(&["genconfig"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "config.toml exists already");
    let fresh = TempDir::new().unwrap();
    let out = herald(&["genconfig"], fresh.path(), &[]);
    assert!(out.status.success());
    assert!(fresh.path().join("config.toml").exists());
    let toml_text = std::fs::read_to_string(fresh.path().join("config.toml")).unwrap();
    assert!(toml_text.contains("# "), "commented");

    let out = herald(&["genconfig", "--output", "x.ini"], fresh.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn checkconfig_reports_key_of_bad_namespace() {
    let dir = TempDir::new().unwrap();
    write(&dir, "bad.json", r#"{"channel": {"namespaces": [{"name": "x"}]}}"#);
    let out = herald(&["checkconfig", "bad.json"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: channel.namespaces[0].name: "), "{err}");
    assert!(stdout(&out).is_empty());

    write(&dir, "dur.yaml", "client:\n  ping_interval: 5x\n");
    let out = herald(&["checkconfig", "dur.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#"error: invalid value for client.ping_interval: invalid duration "5x": unknown unit "x""#
    );

    // Unknown keys warn but do not fail; the env and HERALD_CONFIG are honoured.
    write(&dir, "ok.json", r#"{"http_api": {"key": "k"}, "client": {"token": {"hmac_secret_key": "s"}, "foo": 1}}"#);
    let out = herald(&["checkconfig"], dir.path(), &[("HERALD_CONFIG", "ok.json")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), r#"warning: unknown configuration key "client.foo" (ignored)"#);
    assert_eq!(stdout(&out).trim(), "config is valid");

    let out = herald(&["checkconfig", "ok.json"], dir.path(), &[("HERALD_CLIENT_QUEUE_MAX_SIZE", "10")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("client.queue_max_size"), "{}", stderr(&out));

    let out = herald(&["checkconfig", "missing.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("missing.toml"));
}

#[test]
fn gentoken_output_verifies() {
    let dir = TempDir::new().unwrap();
    write(&dir, "c.json", r#"{"client": {"token": {"hmac_secret_key": "gentoken-secret"}}}"#);
    let out = herald(
        &[
            "gentoken",
            "-c",
            "c.json",
            "--user",
            "42",
            "--info",
            r#"{"name":"Ann"}"#,
            "--channel",
            "news",
            "--channel",
            "chat:1",
        ],
        dir.path(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    let token = text.trim();
    assert_eq!(stderr(&out).trim(), "HS256 token for user 42, expires in 3600s");

    let tc = TokenConfig { hmac_secret_key: "gentoken-secret".into(), ..Default::default() };
    let verifier = TokenVerifier::new(&tc, "client.token").unwrap();
    let claims = verifier.verify_connect(token, now()).unwrap();
    assert_eq!(claims.user, "42");
    assert_eq!(claims.channels, ["news", "chat:1"]);
    assert_eq!(&claims.info[..], br#"{"name":"Ann"}"#);
    let exp = claims.exp.unwrap();
    assert!((exp - now() - 3600).abs() <= 5, "{exp}");

    let wrong = TokenConfig { hmac_secret_key: "other".into(), ..Default::default() };
    assert!(TokenVerifier::new(&wrong, "").unwrap().verify_connect(token, now()).is_err());

    // Secret from the environment, no expiry, another algorithm.
    let out = herald(
        &["gentoken", "--user", "7", "--ttl", "0", "--alg", "HS512"],
        dir.path(),
        &[("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "env-secret")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out).trim(), "HS512 token for user 7, never expires");
    let tc = TokenConfig { hmac_secret_key: "env-secret".into(), ..Default::default() };
    let claims = TokenVerifier::new(&tc, "").unwrap().verify_connect(stdout(&out).trim(), now()).unwrap();
    assert_eq!(claims.user, "7");
    assert_eq!(claims.exp, None);

    // Audience, issuer and a custom user claim are honoured.
    write(
        &dir,
        "aud.toml",
        "[client.token]\nhmac_secret_key = \"s\"\naudience = \"herald\"\nissuer = \"backend\"\nuser_id_claim = \"uid\"\n",
    );
    let out = herald(&["gentoken", "-c", "aud.toml", "--user", "9"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tc = TokenConfig {
        hmac_secret_key: "s".into(),
        audience: "herald".into(),
        issuer: "backend".into(),
        user_id_claim: "uid".into(),
        ..Default::default()
    };
    let claims = TokenVerifier::new(&tc, "").unwrap().verify_connect(stdout(&out).trim(), now()).unwrap();
    assert_eq!(claims.user, "9");
}

#[test]
fn gentoken_without_secret_fails() {
    let dir = TempDir::new().unwrap();
    let out = herald(&["gentoken", "--user", "42"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("client.token.hmac_secret_key") && err.contains("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY"),
        "{err}"
    );

    let out = herald(&["gentoken", "--info", "{not json"], dir.path(), &[("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "s")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--info"), "{}", stderr(&out));
}

#[test]
fn gensubtoken_output_verifies() {
    let dir = TempDir::new().unwrap();
    let out = herald(
        &["gensubtoken", "--user", "42", "--channel", "chat:room", "--ttl", "60"],
        dir.path(),
        &[("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "sub-secret")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tc = TokenConfig { hmac_secret_key: "sub-secret".into(), ..Default::default() };
    let claims = TokenVerifier::new(&tc, "").unwrap().verify_subscribe(stdout(&out).trim(), now()).unwrap();
    assert_eq!(claims.user, "42");
    assert_eq!(claims.channel, "chat:room");
    assert!((claims.exp.unwrap() - now() - 60).abs() <= 5);

    // A separate subscription token secret is used when enabled.
    write(
        &dir,
        "c.yaml",
        "client:\n  token:\n    hmac_secret_key: conn\n  subscription_token:\n    enabled: true\n    hmac_secret_key: subs\n",
    );
    let out = herald(&["gensubtoken", "-c", "c.yaml", "--user", "1", "--channel", "news"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let tc = TokenConfig { hmac_secret_key: "subs".into(), ..Default::default() };
    let claims = TokenVerifier::new(&tc, "").unwrap().verify_subscribe(stdout(&out).trim(), now()).unwrap();
    assert_eq!(claims.channel, "news");

    let out = herald(&["gensubtoken", "--user", "1"], dir.path(), &[("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "s")]);
    assert_eq!(out.status.code(), Some(2), "--channel is required");
}

#[test]
fn version_and_defaultconfig() {
    let dir = TempDir::new().unwrap();
    let want = format!("herald {}", env!("CARGO_PKG_VERSION"));
    let out = herald(&["version"], dir.path(), &[]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with(&want), "{}", stdout(&out));
    let out = herald(&["--version"], dir.path(), &[]);
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), want);

    let out = herald(&["defaultconfig"], dir.path(), &[]);
    assert!(out.status.success());
    let parsed: Config = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(parsed, Config::default());
}

#[test]
fn serve_with_invalid_config_exits_1() {
    let dir = TempDir::new().unwrap();
    let out = herald(&["serve", "--config", "missing.json"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = herald(&["--log-level", "loud"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("log.level"), "{}", stderr(&out));
    let out = herald(&[], dir.path(), &[("HERALD_ENGINE_TYPE", "tarantool")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("engine.type"), "{}", stderr(&out));
    let out = herald(&[], dir.path(), &[("HERALD_RUNTIME_SCHEDULER", "green_threads")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("runtime.scheduler"), "{}", stderr(&out));
}

/// Each worker listens on its own `SO_REUSEPORT` socket; that must not let Herald share a port
/// with another listener, whether or not that one uses `SO_REUSEPORT` (a second Herald does).
#[test]
#[cfg(target_os = "linux")]
fn a_port_in_use_is_refused() {
    let dir = TempDir::new().unwrap();
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let reuse = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    reuse.set_reuse_address(true).unwrap();
    reuse.set_reuse_port(true).unwrap();
    reuse.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    reuse.listen(16).unwrap();
    let reuse_port = reuse.local_addr().unwrap().as_socket().unwrap().port();
    for port in [plain.local_addr().unwrap().port(), reuse_port] {
        let port = port.to_string();
        let out = herald(&["--address", "127.0.0.1", "--port", &port], dir.path(), &[("HERALD_HTTP_API_KEY", "k")]);
        assert_eq!(out.status.code(), Some(1), "port {port}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("cannot listen on 127.0.0.1:{port}")), "{}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// Keys Herald does not use: suggestions, Centrifugo options not implemented yet, strict mode

/// Runs `herald` and waits at most 20 s for it to exit (a server that starts by mistake is
/// killed, and the test fails).
fn herald_exit(args: &[&str], cwd: &Path, vars: &[(&str, &str)]) -> Output {
    use std::process::Stdio;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(vars.iter().copied());
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("herald {args:?} did not exit: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

const SECRETS: &str = "[http_api]\nkey = \"k\"\n[client.token]\nhmac_secret_key = \"s\"\n";

#[test]
fn misspelt_key_gets_a_suggestion_and_strict_mode_fails() {
    let dir = TempDir::new().unwrap();
    write(&dir, "typo.toml", &format!("{SECRETS}[client]\nallowed_orgins = [\"https://example.com\"]\n"));
    let out = herald(&["checkconfig", "typo.toml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        r#"warning: unknown configuration key "client.allowed_orgins" (ignored; did you mean client.allowed_origins?)"#
    );
    assert_eq!(stdout(&out).trim(), "config is valid");

    let out = herald(&["checkconfig", "--strict", "typo.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        r#"error: strict mode: 1 setting(s) would be ignored: unknown configuration key "client.allowed_orgins" (ignored; did you mean client.allowed_origins?)"#
    );
    assert!(stdout(&out).is_empty());

    // Environment variables too, and nothing is suggested when nothing is close.
    let out = herald(
        &["checkconfig", "--strict"],
        dir.path(),
        &[("HERALD_CONFIG", "typo.toml"), ("HERALD_CLIENT_PING_INTERVL", "5s"), ("HERALD_WHATEVER", "1")],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: strict mode: 3 setting(s) would be ignored: "), "{err}");
    assert!(
        err.contains(r#""HERALD_CLIENT_PING_INTERVL" (ignored; did you mean HERALD_CLIENT_PING_INTERVAL?)"#),
        "{err}"
    );
    assert!(err.contains(r#""HERALD_WHATEVER" (ignored)"#), "{err}");

    // The server refuses to start in strict mode, before listening.
    let out =
        herald_exit(&["--strict-config", "-c", "typo.toml", "--port", "0", "--address", "127.0.0.1"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("error: strict mode: 1 setting(s) would be ignored: "), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean client.allowed_origins?"), "{}", stderr(&out));
}

#[test]
fn tls_files_are_checked_at_start_and_by_checkconfig() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "tls.toml",
        &format!("{SECRETS}[http_server.tls]\nenabled = true\ncert_pem = \"cert.pem\"\nkey_pem = \"key.pem\"\n"),
    );
    let want = "error: http_server.tls.cert_pem: \"cert.pem\" is neither a PEM text, its base64 encoding, nor the \
                path of a readable file";
    let out = herald_exit(&["serve", "-c", "tls.toml", "--port", "0", "--address", "127.0.0.1"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).trim().starts_with(want), "{}", stderr(&out));
    let out = herald(&["checkconfig", "tls.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).trim().starts_with(want), "{}", stderr(&out));

    // Enabled without a certificate.
    let out = herald_exit(
        &["--port", "0", "--address", "127.0.0.1"],
        dir.path(),
        &[("HERALD_HTTP_API_KEY", "k"), ("HERALD_HTTP_SERVER_TLS_ENABLED", "true")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("http_server.tls.cert_pem: required when http_server.tls.enabled is true"));

    // A client CA without TLS could never see a certificate: refused, not ignored.
    write(&dir, "mtls.toml", &format!("{SECRETS}[http_server.tls]\nenabled = false\nclient_ca_pem = \"ca.pem\"\n"));
    let out = herald(&["checkconfig", "mtls.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("http_server.tls.client_ca_pem: needs http_server.tls.enabled"), "{}", stderr(&out));

    // Turned off, nothing is read.
    write(&dir, "off.toml", &format!("{SECRETS}[http_server.tls]\nenabled = false\ncert_pem = \"nowhere.pem\"\n"));
    let out = herald(&["checkconfig", "off.toml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn other_unsafe_centrifugo_options_are_refused() {
    let dir = TempDir::new().unwrap();
    let cases = [
        ("controller.json", r#"{"controller": {"enabled": true, "type": "nats"}}"#, "controller.enabled"),
        ("natstls.json", r#"{"broker": {"nats": {"tls": {"enabled": true}}}}"#, "broker.nats.tls.enabled"),
        (
            "ns.json",
            r#"{"channel": {"namespaces": [{"name": "chat", "subscribe_stream_proxy_enabled": true}]}}"#,
            "channel.namespaces[0].subscribe_stream_proxy_enabled",
        ),
        ("grpc.toml", "[grpc_api]\nenabled = true\n[grpc_api.tls]\nenabled = true\n", "grpc_api.tls.enabled"),
        ("aud.toml", "[client.token]\naudience_regex = \"^app$\"\n", "client.token.audience_regex"),
    ];
    for (name, text, key) in cases {
        write(&dir, name, text);
        let out = herald(&["checkconfig", name], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: {key}: Herald does not support this Centrifugo option yet (")),
            "{err}"
        );
    }
    let out = herald(&["checkconfig"], dir.path(), &[("HERALD_ENGINE_TYPE", "tarantool")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "engine.type: \"tarantool\" is not available: Herald does not support this Centrifugo option yet"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn broker_and_presence_manager_settings_are_checked() {
    let dir = TempDir::new().unwrap();
    let cases = [
        (r#"{"broker": {"enabled": true, "type": "redis"}}"#, "broker.type: \"redis\" is not available"),
        (r#"{"broker": {"enabled": true, "type": "nats", "nats": {"url": "http://x"}}}"#, "broker.nats.url: "),
        (r#"{"broker": {"enabled": true, "type": "nats", "nats": {"prefix": "a.*"}}}"#, "broker.nats.prefix: "),
        (
            r#"{"broker": {"enabled": true, "type": "nats", "nats": {"history_storage": "s3"}}}"#,
            "broker.nats.history_storage: ",
        ),
        (r#"{"broker": {"enabled": true, "type": "nats", "nats": {"replicas": 0}}}"#, "broker.nats.replicas: "),
        (
            r#"{"broker": {"enabled": true, "type": "nats", "nats": {"append_attempts": 0}}}"#,
            "broker.nats.append_attempts: 0 is not in 1..=1000",
        ),
        (
            r#"{"broker": {"enabled": true, "type": "nats", "nats": {"append_queue_per_channel": 0}}}"#,
            "broker.nats.append_queue_per_channel: ",
        ),
        (
            r#"{"broker": {"enabled": true, "type": "nats", "nats": {"append_queue_total": 0}}}"#,
            "broker.nats.append_queue_total: ",
        ),
        (r#"{"presence_manager": {"enabled": true, "type": "nats"}}"#, "presence_manager.enabled: "),
        (
            r#"{"broker": {"enabled": true, "type": "nats"}, "presence_manager": {"enabled": true, "type": "redis"}}"#,
            "presence_manager.type: ",
        ),
    ];
    for (i, (text, expected)) in cases.into_iter().enumerate() {
        let name = format!("b{i}.json");
        write(
            &dir,
            &name,
            &format!(
                "{{\"http_api\": {{\"key\": \"k\"}}, \"client\": {{\"token\": {{\"hmac_secret_key\": \"s\"}}}}, {}",
                &text[1..]
            ),
        );
        let out = herald(&["checkconfig", &name], dir.path(), &[]);
        assert_eq!(out.status.code(), Some(1), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{text}: {}", stderr(&out));
    }
    write(
        &dir,
        "ok.json",
        r#"{"http_api": {"key": "k"}, "client": {"token": {"hmac_secret_key": "s"}}, "broker": {"enabled": true, "type": "nats", "nats": {"url": "nats://127.0.0.1:1", "prefix": "app.one"}}}"#,
    );
    let out = herald(&["checkconfig", "ok.json"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn unimplemented_centrifugo_options_are_warned_by_name() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "c.yaml",
        "http_api:\n  key: k\nclient:\n  token:\n    hmac_secret_key: s\nadmin:\n  web_path: /srv/web\n\
         uni_websocket:\n  join_push_messages: true\ngraphite:\n  enabled: true\n",
    );
    let out = herald(&["checkconfig", "c.yaml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    for (key, what) in [
        ("admin.web_path", "serving the admin console from a directory"),
        ("graphite", "Graphite metrics"),
        ("uni_websocket.join_push_messages", "joined pushes on the unidirectional WebSocket"),
    ] {
        let line = format!("warning: {key:?} is a Centrifugo option Herald does not implement yet ({what}); ignored");
        assert!(err.lines().any(|l| l == line), "missing {line}: {err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
    let out = herald(&["checkconfig", "--strict", "c.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: strict mode: 3 setting(s) would be ignored: "), "{}", stderr(&out));
}

#[test]
fn out_of_range_integers_name_the_range() {
    let dir = TempDir::new().unwrap();
    write(&dir, "port.toml", "[http_server]\nport = 80000\n");
    let out = herald(&["checkconfig", "port.toml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: invalid value for http_server.port: expected a port between 1 and 65535 (0 picks a free port), got 80000"
    );
    write(&dir, "limit.yaml", "client:\n  channel_limit: -3\n");
    let out = herald(&["checkconfig", "limit.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: invalid value for client.channel_limit: expected a whole number, 0 or more, got -3"
    );
    write(&dir, "dur.json", r#"{"client": {"ping_interval": -10}}"#);
    let out = herald(&["checkconfig", "dur.json"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .trim()
            .starts_with(r#"error: invalid value for client.ping_interval: expected a duration such as "25s""#),
        "{}",
        stderr(&out)
    );
}

/// Without the `otlp` feature, turning span export on is refused, naming the key and the feature.
#[cfg(not(feature = "otlp"))]
#[test]
fn opentelemetry_enabled_is_refused() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "otel.yaml",
        "http_api:\n  key: k\nclient:\n  token:\n    hmac_secret_key: s\nopentelemetry:\n  enabled: true\n",
    );
    let out = herald(&["checkconfig", "otel.yaml"], dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("opentelemetry.enabled") && stderr(&out).contains("--features otlp"),
        "{}",
        stderr(&out)
    );
}
