//! Configuration reload (SIGHUP, the API method `reload`, `herald reload`) against a real
//! `herald` started with a config file: token keys, channel options, client limits and the log
//! level are applied without dropping clients, the rest is named as needing a restart, and an
//! invalid file is refused with the key named while the old configuration stays, whole.

mod support;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use herald_client::{Client, ClientError, ClientOptions};
use herald_proto::SubscribeRequest;
use serde_json::{Value, json};
use support::{API_KEY, Herald, WAIT, next_publication, subscribe, wait_for};

/// The options a test changes between reloads.
#[derive(Clone)]
struct Opts {
    level: &'static str,
    secret: &'static str,
    history_size: u32,
    /// `allow_subscribe_for_client` of namespace `news`.
    news_open: bool,
    channel_limit: u32,
    extra: &'static str,
}

const OPTS: Opts =
    Opts { level: "info", secret: "first-secret", history_size: 10, news_open: false, channel_limit: 8, extra: "" };

fn write_config(path: &Path, o: &Opts) {
    let text = format!(
        "[log]\nlevel = \"{}\"\n\n[client]\nchannel_limit = {}\n{}\n[client.token]\nhmac_secret_key = \"{}\"\n\n\
         [[channel.namespaces]]\nname = \"hist\"\nhistory_size = {}\nhistory_ttl = \"5m\"\n\
         allow_subscribe_for_client = true\n\n[[channel.namespaces]]\nname = \"news\"\n\
         allow_subscribe_for_client = {}\n",
        o.level, o.channel_limit, o.extra, o.secret, o.history_size, o.news_open
    );
    std::fs::write(path, text).unwrap();
}

/// A herald reading everything but the API key from `file`.
fn start(file: &Path) -> Herald {
    Herald::start_with_args(
        &[("HERALD_LOG_LEVEL", ""), ("HERALD_CHANNEL_NAMESPACES", ""), ("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "")],
        &["--config", file.to_str().unwrap()],
    )
}

fn token(user: &str, secret: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    herald_auth::sign_hmac(&json!({ "sub": user, "exp": exp }), secret, "HS256").unwrap()
}

async fn connect(herald: &Herald, user: &str, secret: &str) -> Result<Client, ClientError> {
    let opts = ClientOptions { url: herald.ws_url(), token: token(user, secret), ..ClientOptions::default() };
    Client::connect(&opts).await.map(|(client, _)| client)
}

async fn try_subscribe(client: &mut Client, channel: &str) -> Result<(), ClientError> {
    client.subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() }).await.map(drop)
}

/// The error code a subscribe was refused with.
async fn refused_code(client: &mut Client, channel: &str) -> u32 {
    match try_subscribe(client, channel).await {
        Err(ClientError::Reply(e)) => e.code,
        other => panic!("subscribe {channel}: expected an error reply, got {other:?}"),
    }
}

async fn reload_api(herald: &Herald) -> Value {
    herald.api_ok("reload", json!({})).await
}

/// Publishes `n` numbered messages from `from` and checks that `client` receives each of them.
async fn publish_and_receive(herald: &Herald, client: &mut Client, channel: &str, from: u64, n: u64) {
    for i in from..from + n {
        herald.publish(channel, json!({ "n": i })).await;
    }
    for i in from..from + n {
        let (data, _) = next_publication(client, channel).await;
        assert_eq!(data, json!({ "n": i }), "every publication reaches the client connected before the reload");
    }
}

#[tokio::test]
async fn sighup_applies_channel_options_and_limits_under_live_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &OPTS);
    let herald = start(&file);
    let mut carol = connect(&herald, "carol", OPTS.secret).await.unwrap();
    subscribe(&mut carol, "hist:room").await;
    assert_eq!(refused_code(&mut carol, "news:a").await, 103, "news is closed to clients at start");
    assert!(herald.metrics().await.contains("herald_config_version 1"));
    publish_and_receive(&herald, &mut carol, "hist:room", 0, 3).await;

    // At info, a refused API channel is not logged.
    let (status, _) = herald.api("publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(status, 200);
    assert!(!herald.logs().contains("server API channel refused"));

    let next = Opts { level: "debug", history_size: 2, news_open: true, channel_limit: 2, ..OPTS };
    write_config(&file, &next);
    herald.signal(libc::SIGHUP);
    wait_for("the reload", WAIT, || async { herald.logs().contains("configuration reloaded (version 2)") }).await;
    let logs = herald.logs();
    let line = logs.lines().find(|l| l.contains("applied to new commands")).expect("the applied keys are logged");
    assert!(line.contains("channel.namespaces") && line.contains("client.channel_limit"), "{line}");
    assert!(!logs.contains("take effect only after a restart"), "nothing here needs a restart: {logs}");

    // The log level.
    herald.api("publish", json!({"channel": "nope:x", "data": {}})).await;
    wait_for("a debug line", WAIT, || async { herald.logs().contains("server API channel refused") }).await;
    // The namespace permission, for the connection made before the reload too.
    try_subscribe(&mut carol, "news:a").await.expect("news is open after the reload");
    // The channel limit: carol has 2 channels now, a third is refused (106 limit exceeded).
    assert_eq!(refused_code(&mut carol, "hist:other").await, 106);
    let mut dave = connect(&herald, "dave", OPTS.secret).await.unwrap();
    subscribe(&mut dave, "hist:room").await;
    subscribe(&mut dave, "news:b").await;
    assert_eq!(refused_code(&mut dave, "hist:third").await, 106, "a new connection gets the new limit");
    // The history size: publications from now on keep the last 2.
    publish_and_receive(&herald, &mut carol, "hist:room", 3, 4).await;
    let history = herald.api_ok("history", json!({"channel": "hist:room", "limit": -1})).await;
    let kept: Vec<&Value> = history["publications"].as_array().unwrap().iter().map(|p| &p["data"]["n"]).collect();
    assert_eq!(kept, [&json!(5), &json!(6)], "{history}");

    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_config_version 2"), "{metrics}");
    assert!(metrics.contains(r#"herald_config_reloads_total{outcome="applied"} 1"#), "{metrics}");
    let info = herald.api_ok("info", json!({})).await;
    assert_eq!(info["nodes"][0]["config_version"], 2, "{info}");

    // An invalid file: refused, the key named, version and behaviour unchanged.
    std::fs::write(&file, "[client]\nping_interval = \"soon\"\n").unwrap();
    herald.signal(libc::SIGHUP);
    wait_for("the refusal", WAIT, || async { herald.logs().contains("configuration reload refused") }).await;
    let logs = herald.logs();
    let line = logs.lines().find(|l| l.contains("configuration reload refused")).unwrap();
    assert!(line.contains("client.ping_interval"), "{line}");
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_config_version 2"), "{metrics}");
    assert!(metrics.contains(r#"herald_config_reloads_total{outcome="refused"} 1"#), "{metrics}");
    let mut erin = connect(&herald, "erin", OPTS.secret).await.unwrap();
    try_subscribe(&mut erin, "news:c").await.expect("the applied configuration stays in force");

    // The clients connected before both reloads are still connected and receive everything.
    publish_and_receive(&herald, &mut carol, "hist:room", 7, 3).await;
    assert_eq!(herald.num_clients().await, 3);
}

#[tokio::test]
async fn the_api_method_answers_the_outcome_and_refuses_an_invalid_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &OPTS);
    let herald = start(&file);
    let mut carol = connect(&herald, "carol", OPTS.secret).await.unwrap();
    subscribe(&mut carol, "hist:room").await;

    let r = reload_api(&herald).await;
    assert_eq!(r, json!({"outcome": "unchanged", "version": 1}));

    write_config(&file, &Opts { news_open: true, ..OPTS });
    let r = reload_api(&herald).await;
    assert_eq!(r, json!({"outcome": "applied", "applied": ["channel.namespaces"], "version": 2}));
    let mut dave = connect(&herald, "dave", OPTS.secret).await.unwrap();
    try_subscribe(&mut dave, "news:a").await.expect("news is open");

    // A key the node reads only at start: named, not applied, the version stays.
    write_config(&file, &Opts { news_open: true, extra: "ping_interval = \"40s\"\n", ..OPTS });
    let r = reload_api(&herald).await;
    assert_eq!(r, json!({"outcome": "restart_needed", "restart": ["client.ping_interval"], "version": 2}));

    // Invalid: an applied key changes too, but nothing is applied; the answer names the key.
    write_config(&file, &Opts { news_open: false, extra: "user_connection_limit_mode = \"sometimes\"\n", ..OPTS });
    let r = reload_api(&herald).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["key"], "client.user_connection_limit_mode", "{r}");
    assert!(r["error"].as_str().unwrap().contains("sometimes"), "{r}");
    assert_eq!(r["version"], 2, "{r}");
    let mut erin = connect(&herald, "erin", OPTS.secret).await.unwrap();
    try_subscribe(&mut erin, "news:b").await.expect("news stays open: the refused file changed nothing");

    // The key is required like for every API method.
    let resp = herald.http("POST", "/api/reload", &[], b"{}").await;
    assert_eq!(resp.status, 401, "{}", resp.text());

    // `herald reload` sends the same call and prints the answer; a refusal fails the command.
    write_config(&file, &Opts { news_open: false, ..OPTS });
    let url = format!("http://{}/api/reload", herald.addr);
    let out = herald_reload(&["--url", &url, "--api-key", API_KEY]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["outcome"], "applied", "{printed}");
    assert_eq!(printed["version"], 3, "{printed}");
    assert_eq!(refused_code(&mut erin, "news:c").await, 103, "news is closed again for new subscriptions");
    let out = herald_reload(&["--url", &url, "--api-key", "wrong"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    std::fs::write(&file, "[client]\nchannel_limit = \"many\"\n").unwrap();
    let out = herald_reload(&["--url", &url, "--api-key", API_KEY]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused") && stderr.contains("client.channel_limit"), "{stderr}");

    // Nobody was dropped, and the first client still receives publications.
    publish_and_receive(&herald, &mut carol, "hist:room", 0, 3).await;
    assert_eq!(herald.num_clients().await, 3);
}

fn herald_reload(args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("HERALD_")) {
            cmd.env_remove(&name);
        }
    }
    cmd.arg("reload").args(args).output().expect("run herald reload")
}

#[tokio::test]
async fn rotated_token_keys_apply_to_new_connections_and_existing_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &OPTS);
    let herald = start(&file);
    let mut carol = connect(&herald, "carol", OPTS.secret).await.unwrap();
    subscribe(&mut carol, "hist:room").await;
    assert!(connect(&herald, "mallory", "second-secret").await.is_err(), "the new key is not in force yet");

    write_config(&file, &Opts { secret: "second-secret", ..OPTS });
    herald.signal(libc::SIGHUP);
    wait_for("the reload", WAIT, || async { herald.logs().contains("configuration reloaded (version 2)") }).await;
    assert!(herald.logs().contains("client.token.hmac_secret_key"), "the key is named as applied");

    let mut dave = connect(&herald, "dave", "second-secret").await.expect("a token of the new key connects");
    subscribe(&mut dave, "hist:room").await;
    match connect(&herald, "mallory", OPTS.secret).await {
        Err(ClientError::Closed { code: Some(3500), reason }) => assert_eq!(reason, "invalid token"),
        other => panic!("a token of the old key must be refused with 3500: {other:?}"),
    }
    // carol connected with the old key: still connected, still receiving.
    publish_and_receive(&herald, &mut carol, "hist:room", 0, 2).await;
    for i in 0..2 {
        assert_eq!(next_publication(&mut dave, "hist:room").await.0, json!({ "n": i }));
    }
    assert_eq!(herald.num_clients().await, 2);
}

#[tokio::test]
async fn connection_limits_and_address_lists_apply_to_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &Opts { extra: "connection_limit = 10\n", ..OPTS });
    let herald = start(&file);
    let mut carol = connect(&herald, "carol", OPTS.secret).await.unwrap();
    subscribe(&mut carol, "hist:room").await;
    let mut dave = connect(&herald, "dave", OPTS.secret).await.unwrap();
    subscribe(&mut dave, "hist:room").await;

    write_config(&file, &Opts { extra: "connection_limit = 2\n", ..OPTS });
    let r = reload_api(&herald).await;
    assert_eq!(r, json!({"outcome": "applied", "applied": ["client.connection_limit"], "version": 2}));
    match connect(&herald, "erin", OPTS.secret).await {
        Err(ClientError::Io(e)) | Err(ClientError::Protocol(e)) => assert!(e.contains("503"), "{e}"),
        other => panic!("the third connection must be refused with 503: {other:?}"),
    }

    // Deny the loopback for client endpoints: new connections get 403, the API stays reachable.
    write_config(&file, &Opts { extra: "connection_limit = 10\n", ..OPTS });
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("\n[access.client]\ndeny = [\"127.0.0.0/8\"]\n");
    std::fs::write(&file, text).unwrap();
    let r = reload_api(&herald).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["applied"], json!(["access.client.deny", "client.connection_limit"]), "{r}");
    match connect(&herald, "erin", OPTS.secret).await {
        Err(ClientError::Io(e)) | Err(ClientError::Protocol(e)) => assert!(e.contains("403"), "{e}"),
        other => panic!("a denied address must be refused with 403: {other:?}"),
    }

    // An invalid network: refused, the key named, the deny list stays.
    let text = std::fs::read_to_string(&file).unwrap().replace("127.0.0.0/8", "127.0.0.0/99");
    std::fs::write(&file, text).unwrap();
    let r = reload_api(&herald).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["key"], "access.client.deny", "{r}");
    assert!(connect(&herald, "erin", OPTS.secret).await.is_err(), "still denied");

    // The two connections made before are still there and receive every publication.
    publish_and_receive(&herald, &mut carol, "hist:room", 0, 3).await;
    for i in 0..3 {
        assert_eq!(next_publication(&mut dave, "hist:room").await.0, json!({ "n": i }));
    }
    assert_eq!(herald.num_clients().await, 2);
}
