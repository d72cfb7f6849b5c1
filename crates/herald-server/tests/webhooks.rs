//! Lifecycle webhooks end to end: a real `herald` posting batches to the test backend
//! (`support/backend.rs`). Events arrive batched and in order per client with every field; a
//! backend that hangs does not slow connects and the queue bound drops with a counter; a
//! backend that is not there, then fails, then comes back gets the queued events; a batch that
//! exhausts its retries is dropped with a counter; a graceful shutdown sends what is queued;
//! bad options stop start-up naming the key.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::backend::{Backend, Mode};
use support::*;

/// Herald with webhooks posting to `endpoint` through the named proxy `hooks`, plus `extra`.
fn herald_with_hooks(endpoint: &str, extra: &[(&str, &str)]) -> Herald {
    let proxies = json!([{"name": "hooks", "endpoint": endpoint, "timeout": "300ms",
        "http": {"static_headers": {"X-Hook-Secret": "s3"}}}])
    .to_string();
    let mut env: Vec<(&str, &str)> = vec![
        ("HERALD_PROXIES", &proxies),
        ("HERALD_WEBHOOKS_ENABLED", "true"),
        ("HERALD_WEBHOOKS_PROXY_NAME", "hooks"),
        ("HERALD_WEBHOOKS_FLUSH_INTERVAL", "50ms"),
        ("HERALD_WEBHOOKS_RETRY_BACKOFF_MIN", "50ms"),
        ("HERALD_WEBHOOKS_RETRY_BACKOFF_MAX", "200ms"),
    ];
    env.extend_from_slice(extra);
    Herald::start(&env)
}

/// A port nothing listens on (bound, then closed).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A WebSocket connected with a token for `user`; returns it and its client id.
async fn connect(herald: &Herald, user: &str) -> (RawWs, String) {
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
    ws.send_json(&json!({"id": 1, "connect": {"token": token(user)}})).await;
    let replies = ws.recv_json().await;
    let client = replies[0]["connect"]["client"].as_str().unwrap_or_else(|| panic!("{replies:?}")).to_owned();
    (ws, client)
}

async fn command(ws: &mut RawWs, cmd: Value) -> Value {
    ws.send_json(&cmd).await;
    loop {
        for r in ws.recv_json().await {
            if r["id"] == cmd["id"] {
                return r;
            }
        }
    }
}

/// `name{labels} value` from the Prometheus text (0 when absent).
fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

/// The events of one client, as `(event, channel, code)`.
fn of_client(events: &[Value], client: &str) -> Vec<(String, String, i64)> {
    events
        .iter()
        .filter(|e| e["client"] == client)
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("event"), s("channel"), e["code"].as_i64().unwrap_or(-1))
        })
        .collect()
}

fn ev(event: &str, channel: &str, code: i64) -> (String, String, i64) {
    (event.to_owned(), channel.to_owned(), code)
}

#[tokio::test]
async fn batches_arrive_in_order_per_client_with_every_field() {
    let backend = Backend::start();
    let herald = herald_with_hooks(&backend.url("/webhook"), &[]);
    let node = herald.api_ok("info", json!({})).await["nodes"][0]["uid"].as_str().unwrap().to_owned();
    let started_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;

    let (mut a, a_id) = connect(&herald, "alice").await;
    let (mut b, b_id) = connect(&herald, "bob").await;
    for ws in [&mut a, &mut b] {
        let r = command(ws, json!({"id": 2, "subscribe": {"channel": "news"}})).await;
        assert!(r.get("error").is_none(), "{r}");
    }
    // A server-side subscription through the server API counts too.
    herald.api_ok("subscribe", json!({"user": "bob", "channel": "hist:srv"})).await;
    let pushes = b.recv_json().await;
    assert_eq!(pushes[0]["push"]["channel"], "hist:srv", "{pushes:?}");
    let r = command(&mut a, json!({"id": 3, "unsubscribe": {"channel": "news"}})).await;
    assert!(r.get("error").is_none(), "{r}");
    // A server-side disconnect carries its code and reason.
    herald.api_ok("disconnect", json!({"user": "bob", "disconnect": {"code": 4000, "reason": "bye"}})).await;
    b.assert_closed_with(4000, "API disconnect").await;
    drop(a); // the client hangs up: 3000

    wait_for("every event delivered", WAIT, || async {
        let events = backend.webhook_events();
        of_client(&events, &a_id).len() >= 4 && of_client(&events, &b_id).len() >= 6
    })
    .await;
    let events = backend.webhook_events();
    assert_eq!(
        of_client(&events, &a_id),
        vec![
            ev("connect", "", -1),
            ev("subscribe", "news", -1),
            ev("unsubscribe", "news", 0),
            ev("disconnect", "", 3000)
        ]
    );
    assert_eq!(
        of_client(&events, &b_id),
        vec![
            ev("connect", "", -1),
            ev("subscribe", "news", -1),
            ev("subscribe", "hist:srv", -1),
            ev("unsubscribe", "hist:srv", 4000),
            ev("unsubscribe", "news", 4000),
            ev("disconnect", "", 4000),
        ]
    );
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let mut last_seq = 0;
    for e in &events {
        assert_eq!(e["transport"], "websocket", "{e}");
        assert!(e["user"] == "alice" || e["user"] == "bob", "{e}");
        let time = e["time"].as_i64().unwrap();
        assert!(time >= started_ms - 1000 && time <= now_ms + 1000, "{e}");
        let seq = e["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "node-wide sequence numbers grow in arrival order: {e}");
        last_seq = seq;
    }
    let bye = events.iter().find(|e| e["client"] == b_id && e["event"] == "disconnect").unwrap();
    assert_eq!(bye["reason"], "bye");
    let hangup = events.iter().find(|e| e["client"] == a_id && e["event"] == "disconnect").unwrap();
    assert_eq!(hangup["reason"], "connection closed");

    let requests = backend.requests_to("/webhook").await;
    assert!(requests.len() < events.len(), "{} events in {} requests: batched", events.len(), requests.len());
    for r in &requests {
        assert_eq!(r["body"]["node"], node.as_str());
        assert_eq!(r["headers"]["content-type"], "application/json");
        assert_eq!(r["headers"]["x-hook-secret"], "s3", "the proxy's static headers");
        assert!(r["headers"]["traceparent"].is_string());
        assert!(r["headers"].get("x-forwarded-for").is_none(), "a batch is not a client's request");
    }
    let m = herald.metrics().await;
    assert_eq!(metric(&m, r#"herald_webhook_events_total{event="connect",outcome="sent"}"#), 2.0, "{m}");
    assert_eq!(metric(&m, r#"herald_webhook_events_total{event="unsubscribe",outcome="queued"}"#), 3.0);
    assert!(metric(&m, r#"herald_webhook_batches_total{outcome="ok"}"#) >= 1.0);
    assert!(m.contains(r#"herald_proxy_duration_seconds_count{proxy="hooks",kind="webhook"}"#), "batch latency");
}

#[tokio::test]
async fn a_hanging_backend_slows_no_connect_and_the_queue_bound_drops() {
    // Baseline: the same churn with the backend answering.
    let up = Backend::start();
    let herald = herald_with_hooks(&up.url("/webhook"), &[]);
    let mut slowest_up = Duration::ZERO;
    for i in 0..20 {
        let start = Instant::now();
        let (ws, _) = connect(&herald, &format!("u{i}")).await;
        slowest_up = slowest_up.max(start.elapsed());
        drop(ws);
    }
    drop(herald);

    let backend = Backend::start();
    backend.set_webhook_mode(Mode::Hang);
    let herald = herald_with_hooks(
        &backend.url("/webhook"),
        &[
            ("HERALD_WEBHOOKS_MAX_QUEUE", "10"),
            ("HERALD_WEBHOOKS_MAX_BATCH", "4"),
            ("HERALD_WEBHOOKS_MAX_RETRIES", "50"),
        ],
    );
    let mut slowest_down = Duration::ZERO;
    let mut clients = Vec::new();
    for i in 0..20 {
        let start = Instant::now();
        let (ws, _) = connect(&herald, &format!("u{i}")).await;
        slowest_down = slowest_down.max(start.elapsed());
        clients.push(ws);
    }
    eprintln!("slowest connect: {slowest_up:?} with the backend up, {slowest_down:?} while it hangs");
    assert!(slowest_down < Duration::from_secs(1), "a hanging backend must not hold connects: {slowest_down:?}");
    wait_for("a batch sent to the hanging backend", WAIT, || async {
        !backend.requests_to("/webhook").await.is_empty()
    })
    .await;
    let m = herald.metrics().await;
    let dropped = metric(&m, r#"herald_webhook_dropped_total{reason="queue_full"}"#);
    assert!(dropped >= 10.0, "20 connects, at most 10 held: {dropped} dropped\n{m}");
    assert!(metric(&m, "herald_webhook_queue_depth") <= 10.0, "the bound holds");
    assert_eq!(metric(&m, r#"herald_webhook_events_total{event="connect",outcome="dropped"}"#), dropped);
    // The process stays healthy: the API answers and clients still work.
    assert_eq!(herald.num_clients().await, 20);
    let r = command(&mut clients[0], json!({"id": 2, "subscribe": {"channel": "news"}})).await;
    assert!(r.get("error").is_none(), "{r}");
}

#[tokio::test]
async fn events_queued_while_the_backend_is_away_are_delivered_when_it_comes_back() {
    let addr = free_addr();
    let herald = herald_with_hooks(&format!("http://{addr}/webhook"), &[("HERALD_WEBHOOKS_MAX_RETRIES", "1000")]);
    let (mut ws, client) = connect(&herald, "carol").await;
    command(&mut ws, json!({"id": 2, "subscribe": {"channel": "news"}})).await;
    drop(ws);
    // Nothing listens: the batch is retried.
    wait_for("a retry", WAIT, || async {
        metric(&herald.metrics().await, r#"herald_webhook_batches_total{outcome="retry"}"#) >= 2.0
    })
    .await;
    // Then the backend is there but fails...
    let backend = Backend::start_at(addr);
    backend.set_webhook_mode(Mode::Fail);
    wait_for("a failed attempt on the backend", WAIT, || async { !backend.requests_to("/webhook").await.is_empty() })
        .await;
    assert!(backend.webhook_events().is_empty());
    // ...then it answers: the same events arrive, in order, once.
    backend.set_webhook_mode(Mode::Ok);
    wait_for("the queued events", WAIT, || async { of_client(&backend.webhook_events(), &client).len() >= 4 }).await;
    assert_eq!(
        of_client(&backend.webhook_events(), &client),
        vec![
            ev("connect", "", -1),
            ev("subscribe", "news", -1),
            ev("unsubscribe", "news", 3000),
            ev("disconnect", "", 3000)
        ]
    );
    let m = herald.metrics().await;
    assert_eq!(metric(&m, r#"herald_webhook_events_total{event="connect",outcome="sent"}"#), 1.0);
    assert_eq!(metric(&m, "herald_webhook_queue_depth"), 0.0);
}

#[tokio::test]
async fn a_batch_that_exhausts_its_retries_is_dropped_with_a_counter() {
    let backend = Backend::start();
    backend.set_webhook_mode(Mode::Fail);
    let herald = herald_with_hooks(
        &backend.url("/webhook"),
        &[("HERALD_WEBHOOKS_MAX_RETRIES", "1"), ("HERALD_WEBHOOKS_EVENTS", "connect disconnect")],
    );
    let (ws, _) = connect(&herald, "dave").await;
    drop(ws);
    wait_for("the batch dropped", WAIT, || async {
        metric(&herald.metrics().await, r#"herald_webhook_dropped_total{reason="retries_exhausted"}"#) >= 2.0
    })
    .await;
    let attempts = backend.requests_to("/webhook").await.len();
    backend.set_webhook_mode(Mode::Ok);
    let (mut ws, client) = connect(&herald, "erin").await;
    command(&mut ws, json!({"id": 2, "subscribe": {"channel": "news"}})).await;
    wait_for("the next event", WAIT, || async { !of_client(&backend.webhook_events(), &client).is_empty() }).await;
    assert!(attempts >= 2, "one attempt and one retry before dropping: {attempts}");
    let events = backend.webhook_events();
    assert!(events.iter().all(|e| e["user"] == "erin"), "the dropped batch is gone: {events:?}");
    assert!(events[0]["seq"].as_u64().unwrap() > 1, "a gap in seq shows the drop: {events:?}");
    assert!(events.iter().all(|e| e["event"] == "connect" || e["event"] == "disconnect"), "only the listed events");
}

#[tokio::test]
async fn a_graceful_shutdown_sends_what_is_queued() {
    let backend = Backend::start();
    // A flush interval longer than the test: only the shutdown can send these events.
    let mut herald = herald_with_hooks(
        &backend.url("/webhook"),
        &[("HERALD_WEBHOOKS_FLUSH_INTERVAL", "1h"), ("HERALD_SHUTDOWN_CLIENT_CLOSE_WINDOW", "0s")],
    );
    let (mut ws, client) = connect(&herald, "frank").await;
    command(&mut ws, json!({"id": 2, "subscribe": {"channel": "news"}})).await;
    let m = herald.metrics().await;
    assert_eq!(metric(&m, r#"herald_webhook_events_total{event="subscribe",outcome="queued"}"#), 1.0, "{m}");
    assert!(backend.requests_to("/webhook").await.is_empty(), "nothing sent before the interval");
    herald.signal(libc::SIGTERM);
    assert!(herald.wait_exit(WAIT).await.is_some(), "herald exits");
    assert_eq!(
        of_client(&backend.webhook_events(), &client),
        vec![
            ev("connect", "", -1),
            ev("subscribe", "news", -1),
            ev("unsubscribe", "news", 3001),
            ev("disconnect", "", 3001)
        ]
    );
    let bye = backend.webhook_events().into_iter().find(|e| e["event"] == "disconnect").unwrap();
    assert_eq!(bye["reason"], "shutdown");
}

fn checkconfig(file: &Value) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("HERALD_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd.arg("checkconfig").arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_webhook_options_stop_start_up_naming_the_key() {
    let proxies = json!([{"name": "hooks", "endpoint": "http://127.0.0.1:9/webhook"}]);
    let (ok, stderr) = checkconfig(&json!({"webhooks": {"enabled": true, "proxy_name": "nope"}, "proxies": proxies}));
    assert!(!ok);
    assert!(stderr.contains("webhooks.proxy_name") && stderr.contains("nope"), "{stderr}");
    let (ok, stderr) = checkconfig(
        &json!({"webhooks": {"enabled": true, "proxy_name": "hooks", "events": ["publish"]}, "proxies": proxies}),
    );
    assert!(!ok);
    assert!(stderr.contains("webhooks.events[0]"), "{stderr}");
    let (ok, stderr) =
        checkconfig(&json!({"webhooks": {"enabled": true, "proxy_name": "hooks", "max_queue": 0}, "proxies": proxies}));
    assert!(!ok);
    assert!(stderr.contains("webhooks.max_queue"), "{stderr}");
    let (ok, stderr) =
        checkconfig(&json!({"webhooks": {"enabled": true, "proxy_name": "hooks", "flush_interval": "50ms",
        "max_batch": 500}, "proxies": proxies}));
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("unknown configuration key"), "{stderr}");
}
