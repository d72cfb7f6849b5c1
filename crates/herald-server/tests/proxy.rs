//! The logic-layer proxies end to end: a real `herald` asking a real backend over HTTP
//! (`support/backend.rs`, a hyper server in the test process). For each proxy type: allow, deny (application
//! error), disconnect, timeout and backend down; the exact request bodies and headers; the
//! per-proxy metrics; and that a slow backend does not hold up other clients.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::backend::Backend;
use support::*;

/// A port nothing listens on (bound, then closed).
fn dead_url(path: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}{path}")
}

/// Herald with every proxy pointed at `backend` (or at a dead port when `backend` is `None`).
fn herald_with(backend: Option<&Backend>, extra: &[(&str, &str)]) -> Herald {
    let url = |path: &str| match backend {
        Some(b) => b.url(path),
        None => dead_url(path),
    };
    let namespaces = json!([
        {"name": "px", "subscribe_proxy_enabled": true, "publish_proxy_enabled": true,
         "sub_refresh_proxy_enabled": true, "history_size": 10, "history_ttl": "60s"},
        {"name": "named", "publish_proxy_enabled": true, "publish_proxy_name": "billing",
         "allow_subscribe_for_client": true},
    ])
    .to_string();
    let proxies = json!([{"name": "billing", "endpoint": url("/named/publish"), "timeout": "500ms"}]).to_string();
    let rpc_namespaces = json!([{"name": "billing", "proxy_enabled": true, "proxy_name": "billing-rpc"}]).to_string();
    let proxies_all = {
        let mut v: Vec<Value> = serde_json::from_str(&proxies).unwrap();
        v.push(json!({"name": "billing-rpc", "endpoint": url("/named/rpc"), "timeout": "500ms"}));
        Value::Array(v).to_string()
    };
    let owned: Vec<(String, String)> = vec![
        ("HERALD_CLIENT_PROXY_CONNECT_ENABLED".into(), "true".into()),
        ("HERALD_CLIENT_PROXY_CONNECT_ENDPOINT".into(), url("/connect")),
        ("HERALD_CLIENT_PROXY_CONNECT_TIMEOUT".into(), "500ms".into()),
        ("HERALD_CLIENT_PROXY_CONNECT_HTTP_HEADERS".into(), "Cookie Authorization X-Forwarded-For".into()),
        ("HERALD_CLIENT_PROXY_CONNECT_EMULATED_HEADERS".into(), "X-Emulated".into()),
        ("HERALD_CLIENT_PROXY_CONNECT_HTTP_STATIC_HEADERS".into(), r#"{"X-Static":"s1"}"#.into()),
        ("HERALD_CLIENT_PROXY_REFRESH_ENABLED".into(), "true".into()),
        ("HERALD_CLIENT_PROXY_REFRESH_ENDPOINT".into(), url("/refresh")),
        ("HERALD_CLIENT_PROXY_REFRESH_TIMEOUT".into(), "500ms".into()),
        ("HERALD_CHANNEL_PROXY_SUBSCRIBE_ENDPOINT".into(), url("/subscribe")),
        ("HERALD_CHANNEL_PROXY_SUBSCRIBE_TIMEOUT".into(), "500ms".into()),
        ("HERALD_CHANNEL_PROXY_PUBLISH_ENDPOINT".into(), url("/publish")),
        ("HERALD_CHANNEL_PROXY_PUBLISH_TIMEOUT".into(), "500ms".into()),
        ("HERALD_CHANNEL_PROXY_PUBLISH_INCLUDE_CONNECTION_META".into(), "true".into()),
        ("HERALD_CHANNEL_PROXY_SUB_REFRESH_ENDPOINT".into(), url("/sub_refresh")),
        ("HERALD_CHANNEL_PROXY_SUB_REFRESH_TIMEOUT".into(), "500ms".into()),
        ("HERALD_CHANNEL_NAMESPACES".into(), namespaces),
        ("HERALD_RPC_PROXY_ENDPOINT".into(), url("/rpc")),
        ("HERALD_RPC_PROXY_TIMEOUT".into(), "500ms".into()),
        ("HERALD_RPC_PROXY_INCLUDE_CONNECTION_META".into(), "true".into()),
        ("HERALD_RPC_WITHOUT_NAMESPACE_PROXY_ENABLED".into(), "true".into()),
        ("HERALD_RPC_NAMESPACES".into(), rpc_namespaces),
        ("HERALD_PROXIES".into(), proxies_all),
    ];
    let mut env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend_from_slice(extra);
    Herald::start(&env)
}

/// Connects through the connect proxy with `data`; returns the socket and the first reply.
async fn proxy_connect(herald: &Herald, data: Value, headers: &[(&str, &str)]) -> (RawWs, Value) {
    let mut ws = RawWs::open(herald.addr, WS_PATH, headers).await;
    ws.send_json(&json!({"id": 1, "connect": {"data": data, "name": "test-sdk", "version": "1.2.3",
        "headers": {"X-Emulated": "from-sdk", "X-Not-Listed": "no"}}}))
        .await;
    let reply = match ws.read_frame_within(WAIT).await {
        Ok(frame) if frame.opcode == 1 => serde_json::from_str(frame.text().trim()).unwrap(),
        Ok(frame) => json!({"frame": frame.opcode, "close": frame.close().0, "reason": frame.close().1}),
        Err(e) => json!({"ended": format!("{e:?}")}),
    };
    (ws, reply)
}

async fn command(ws: &mut RawWs, cmd: Value) -> Value {
    command_and_pushes(ws, cmd).await.0
}

/// Sends a command; returns its reply and the pushes that came with or before it.
async fn command_and_pushes(ws: &mut RawWs, cmd: Value) -> (Value, Vec<Value>) {
    ws.send_json(&cmd).await;
    let mut pushes = Vec::new();
    loop {
        for r in ws.recv_json().await {
            if r["id"] == cmd["id"] {
                return (r, pushes);
            }
            pushes.push(r);
        }
    }
}

#[tokio::test]
async fn connect_proxy_lets_in_with_the_backends_identity_and_gets_the_exact_request() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("Cookie", "session=abc"),
        ("Authorization", "Bearer xyz"),
        ("X-Not-Listed", "secret"),
        ("traceparent", parent),
        ("X-Forwarded-For", "10.1.2.3"),
    ];
    let (mut ws, reply) = proxy_connect(&herald, json!({"action": "allow", "user": "alice"}), &headers).await;
    let client = reply["connect"]["client"].as_str().unwrap_or_else(|| panic!("{reply}")).to_owned();
    assert_eq!(reply["connect"]["data"], json!({"welcome": true}));
    assert!(reply["connect"].get("expires").is_none(), "no expiry asked");

    let reqs = backend.requests_to("/connect").await;
    assert_eq!(reqs.len(), 1);
    let body = &reqs[0]["body"];
    assert_eq!(
        body,
        &json!({"client": client, "transport": "websocket", "protocol": "json", "encoding": "json",
            "name": "test-sdk", "version": "1.2.3", "data": {"action": "allow", "user": "alice"}})
    );
    let h = &reqs[0]["headers"];
    assert_eq!(h["cookie"], "session=abc");
    assert_eq!(h["authorization"], "Bearer xyz");
    assert_eq!(h["x-emulated"], "from-sdk", "allow-listed emulated header");
    assert!(h.get("x-not-listed").is_none(), "neither real nor emulated headers pass unless listed: {h}");
    assert_eq!(h["x-static"], "s1");
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1", "the client's address is appended");
    let tp = h["traceparent"].as_str().unwrap();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp != parent, "trace continued: {tp}");

    // The backend's user and info are the connection's: RPC requests carry them.
    let r = command(&mut ws, json!({"id": 2, "rpc": {"method": "whoami", "data": {}}})).await;
    assert_eq!(r["rpc"]["data"], json!({"user": "alice", "meta": {"tenant": "t1"}}), "{r}");
    let rpc = backend.requests_to("/rpc").await;
    let tp2 = rpc[0]["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(tp2.len(), 55);
    assert!(tp2.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "later calls continue the connection's trace");
    assert!(tp2 != tp && tp2 != parent, "with a parent id of their own: {tp2}");
    assert_eq!(rpc[0]["headers"]["x-forwarded-for"], "127.0.0.1");
    assert!(rpc[0]["headers"].get("cookie").is_none(), "client headers go to the connect proxy only");
}

#[tokio::test]
async fn connect_proxy_channels_become_server_side_subscriptions() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut ws, reply) = proxy_connect(&herald, json!({"user": "nina", "channels": ["px:server-side"]}), &[]).await;
    assert!(reply["connect"]["subs"]["px:server-side"].is_object(), "{reply}");
    herald.publish("px:server-side", json!({"to": "nina"})).await;
    let push = loop {
        if let Some(p) = ws.recv_json().await.into_iter().find(|m| m["push"]["pub"].is_object()) {
            break p;
        }
    };
    assert_eq!(push["push"]["channel"], "px:server-side");
    assert_eq!(push["push"]["pub"]["data"], json!({"to": "nina"}));
    assert!(backend.requests_to("/subscribe").await.is_empty(), "granted by the connect answer, not asked again");
}

#[tokio::test]
async fn connect_proxy_deny_disconnect_timeout_down_and_garbage() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (_ws, reply) = proxy_connect(&herald, json!({"action": "deny"}), &[]).await;
    assert_eq!(reply["error"], json!({"code": 1001, "message": "denied by backend"}), "{reply}");

    for _ in 0..2 {
        let (_ws, reply) = proxy_connect(&herald, json!({"action": "disconnect"}), &[]).await;
        assert_eq!((&reply["close"], &reply["reason"]), (&json!(4501), &json!("backend says bye")), "{reply}");
    }

    let started = Instant::now();
    let (_ws, reply) = proxy_connect(&herald, json!({"action": "slow"}), &[]).await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert_eq!(reply["error"]["temporary"], true);
    assert!(started.elapsed() < Duration::from_millis(2500), "answered within the timeout: {:?}", started.elapsed());

    for action in ["fail", "garbage"] {
        let (_ws, reply) = proxy_connect(&herald, json!({"action": action}), &[]).await;
        assert_eq!(reply["error"]["code"], 100, "{action}: {reply}");
    }

    let down = herald_with(None, &[]);
    let started = Instant::now();
    let (_ws, reply) = proxy_connect(&down, json!({"action": "allow"}), &[]).await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let metrics = herald.metrics().await;
    for line in [
        r#"herald_proxy_requests_total{proxy="connect",kind="connect",outcome="timeout"} 1"#,
        r#"herald_proxy_requests_total{proxy="connect",kind="connect",outcome="status"} 1"#,
        r#"herald_proxy_decisions_total{kind="connect",decision="error"} 1"#,
        r#"herald_proxy_decisions_total{kind="connect",decision="disconnect"} 2"#,
        r#"herald_proxy_decisions_total{kind="connect",decision="bad_answer"} 1"#,
    ] {
        assert!(metrics.contains(line), "missing {line}:\n{metrics}");
    }
    assert!(
        metrics.contains(r#"herald_proxy_duration_seconds_bucket{proxy="connect",kind="connect",le="0.5"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_token_wins_over_the_connect_proxy_and_a_slow_backend_blocks_nobody_else() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    // A slow connect is waiting on the backend...
    let slow = tokio::spawn({
        let addr = herald.addr;
        async move {
            let mut ws = RawWs::open(addr, WS_PATH, &[]).await;
            ws.send_json(&json!({"id": 1, "connect": {"data": {"action": "slow"}}})).await;
            (Instant::now(), ws.recv_json().await)
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // ...while token clients connect, subscribe and publish at once.
    let started = Instant::now();
    let (mut sub, _) = herald.subscriber("bob", "open").await;
    let (mut publisher, _) = herald.client("carol").await;
    herald.publish("open", json!({"n": 1})).await;
    let (data, _) = next_publication(&mut sub, "open").await;
    assert_eq!(data, json!({"n": 1}));
    assert!(started.elapsed() < Duration::from_millis(400), "not held up: {:?}", started.elapsed());
    drop(publisher.publish("open", bytes::Bytes::from_static(b"{}")).await);
    let (_, replies) = slow.await.unwrap();
    assert_eq!(replies[0]["error"]["code"], 100);
    let connects = backend.requests_to("/connect").await;
    assert_eq!(connects.len(), 1, "token connects never reach the connect proxy");
}

#[tokio::test]
async fn subscribe_proxy_allow_deny_disconnect_timeout_and_down() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut ws, _) = proxy_connect(&herald, json!({"user": "dave"}), &[]).await;
    let r = command(&mut ws, json!({"id": 2, "subscribe": {"channel": "px:room", "data": {"want": 1}}})).await;
    assert_eq!(r["subscribe"]["data"], json!({"hello": "px:room"}), "{r}");
    let req = &backend.requests_to("/subscribe").await[0];
    let client = req["body"]["client"].as_str().unwrap();
    assert_eq!(
        req["body"],
        json!({"client": client, "transport": "websocket", "protocol": "json", "encoding": "json",
            "user": "dave", "channel": "px:room", "data": {"want": 1}})
    );
    // The backend's channel info reaches subscribers in publication info.
    let (r, mut pushes) =
        command_and_pushes(&mut ws, json!({"id": 3, "publish": {"channel": "px:room", "data": {"x": 1}}})).await;
    assert!(r.get("error").is_none(), "{r}");
    if pushes.is_empty() {
        pushes = ws.recv_json().await;
    }
    let push = pushes.into_iter().find(|m| m["push"]["pub"].is_object()).expect("the publication");
    assert_eq!(push["push"]["pub"]["info"]["chan_info"], json!({"sub": "proxy"}), "{push}");
    assert_eq!(push["push"]["pub"]["info"]["conn_info"], json!({"from": "connect-proxy"}), "{push}");

    let r = command(&mut ws, json!({"id": 4, "subscribe": {"channel": "px:deny"}})).await;
    assert_eq!(r["error"], json!({"code": 1001, "message": "denied by backend"}));
    let started = Instant::now();
    let r = command(&mut ws, json!({"id": 5, "subscribe": {"channel": "px:slow"}})).await;
    assert_eq!(r["error"]["code"], 100, "{r}");
    assert!(started.elapsed() < Duration::from_millis(2500));
    let r = command(&mut ws, json!({"id": 6, "subscribe": {"channel": "px:fail"}})).await;
    assert_eq!(r["error"]["code"], 100, "{r}");
    ws.send_json(&json!({"id": 7, "subscribe": {"channel": "px:disconnect"}})).await;
    ws.assert_closed_with(4501, "subscribe disconnect").await;

    // Backend down: a token client still gets a clear, temporary error.
    let down = herald_with(None, &[]);
    let (mut client, _) = down.client("erin").await;
    let err = client.subscribe(herald_proto::SubscribeRequest { channel: "px:a".into(), ..Default::default() }).await;
    match err {
        Err(herald_client::ClientError::Reply(e)) => assert_eq!((e.code, e.temporary), (100, true)),
        other => panic!("expected error 100, got {other:?}"),
    }
}

#[tokio::test]
async fn publish_proxy_replaces_data_denies_and_fails_cleanly() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut ws, _) = proxy_connect(&herald, json!({"user": "fred"}), &[]).await;
    let (mut sub, _) = herald.client("watcher").await;
    subscribe(&mut sub, "named:replace").await;
    // A named proxy (`proxies[]`) for the `named` namespace; it replaces the data.
    let r = command(&mut ws, json!({"id": 2, "publish": {"channel": "named:replace", "data": {"orig": 1}}})).await;
    assert!(r.get("error").is_none(), "{r}");
    let (data, _) = next_publication(&mut sub, "named:replace").await;
    assert_eq!(data, json!({"replaced": true}));
    let named = backend.requests_to("/named/publish").await;
    assert_eq!(named[0]["body"]["data"], json!({"orig": 1}));

    // The default publish proxy includes the connection meta.
    let r = command(&mut ws, json!({"id": 3, "publish": {"channel": "px:ok", "data": {"a": 1}}})).await;
    assert!(r.get("error").is_none(), "{r}");
    let req = &backend.requests_to("/publish").await[0];
    assert_eq!(req["body"]["meta"], json!({"tenant": "t1"}));
    assert_eq!(req["body"]["user"], "fred");
    assert_eq!(req["body"]["channel"], "px:ok");

    // skip_history: the publication is delivered but not kept.
    let r = command(&mut ws, json!({"id": 4, "publish": {"channel": "px:skiphist", "data": {"a": 1}}})).await;
    assert!(r.get("error").is_none(), "{r}");
    let history = herald.api_ok("history", json!({"channel": "px:skiphist", "limit": 10})).await;
    assert_eq!(history["publications"].as_array().map(|a| a.len()).unwrap_or(0), 0, "{history}");
    let r = command(&mut ws, json!({"id": 5, "publish": {"channel": "px:kept", "data": {"a": 1}}})).await;
    assert!(r.get("error").is_none(), "{r}");
    let history = herald.api_ok("history", json!({"channel": "px:kept", "limit": 10})).await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 1, "{history}");

    let r = command(&mut ws, json!({"id": 6, "publish": {"channel": "px:deny", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 1001);
    let r = command(&mut ws, json!({"id": 7, "publish": {"channel": "px:slow", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 100);
    ws.send_json(&json!({"id": 8, "publish": {"channel": "px:disconnect", "data": {}}})).await;
    ws.assert_closed_with(4501, "publish disconnect").await;

    let down = herald_with(None, &[]);
    let (mut client, _) = down.client("gina").await;
    match client.publish("px:a", bytes::Bytes::from_static(b"{}")).await {
        Err(herald_client::ClientError::Reply(e)) => assert_eq!(e.code, 100),
        other => panic!("expected error 100, got {other:?}"),
    }
}

#[tokio::test]
async fn rpc_proxy_routes_by_namespace_and_maps_answers() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut ws, _) = proxy_connect(&herald, json!({"user": "hal"}), &[]).await;
    let r = command(&mut ws, json!({"id": 2, "rpc": {"method": "getProfile", "data": {"id": 7}}})).await;
    assert_eq!(r["rpc"]["data"], json!({"echo": {"id": 7}, "method": "getProfile"}), "{r}");
    let req = &backend.requests_to("/rpc").await[0];
    let client = req["body"]["client"].as_str().unwrap();
    assert_eq!(
        req["body"],
        json!({"client": client, "transport": "websocket", "protocol": "json", "encoding": "json",
            "user": "hal", "meta": {"tenant": "t1"}, "method": "getProfile", "data": {"id": 7}})
    );
    let r = command(&mut ws, json!({"id": 3, "rpc": {"method": "billing:charge", "data": {}}})).await;
    assert_eq!(r["rpc"]["data"]["method"], "billing:charge", "{r}");
    assert_eq!(backend.requests_to("/named/rpc").await.len(), 1, "billing: goes to its named proxy");
    let r = command(&mut ws, json!({"id": 4, "rpc": {"method": "unknown:x", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 104, "no backend for that namespace");
    let r = command(&mut ws, json!({"id": 5, "rpc": {"method": "deny", "data": {}}})).await;
    assert_eq!(r["error"], json!({"code": 1001, "message": "denied by backend"}));
    let r = command(&mut ws, json!({"id": 6, "rpc": {"method": "slow", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 100);
    let r = command(&mut ws, json!({"id": 7, "rpc": {"method": "fail", "data": {}}})).await;
    assert_eq!(r["error"]["code"], 100);
    ws.send_json(&json!({"id": 8, "rpc": {"method": "disconnect", "data": {}}})).await;
    ws.assert_closed_with(4501, "rpc disconnect").await;

    let down = herald_with(None, &[]);
    let (mut client, _) = down.client("ivy").await;
    match client.rpc("getProfile", bytes::Bytes::from_static(b"{}")).await {
        Err(herald_client::ClientError::Reply(e)) => assert_eq!(e.code, 100),
        other => panic!("expected error 100, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_proxy_extends_ends_and_survives_an_outage() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut extended, reply) = proxy_connect(&herald, json!({"user": "kim", "expire_in": 1}), &[]).await;
    assert!(reply["connect"].get("expires").is_none(), "the server refreshes, not the client: {reply}");
    let (mut ended, _) = proxy_connect(&herald, json!({"user": "refreshexpire", "expire_in": 1}), &[]).await;
    let (mut outage, _) = proxy_connect(&herald, json!({"user": "refreshfail", "expire_in": 1}), &[]).await;
    ended.assert_closed_with(3005, "refresh proxy said expired").await;
    wait_for("refresh calls", WAIT, || async { backend.requests_to("/refresh").await.len() >= 3 }).await;
    let refreshes = backend.requests_to("/refresh").await;
    let kim = refreshes.iter().find(|r| r["body"]["user"] == "kim").expect("kim refreshed");
    assert_eq!(kim["body"]["transport"], "websocket");
    // Still connected: commands are answered.
    for ws in [&mut extended, &mut outage] {
        let r = command(ws, json!({"id": 9, "rpc": {"method": "ping", "data": {}}})).await;
        assert!(r["rpc"].is_object(), "{r}");
    }
}

#[tokio::test]
async fn sub_refresh_proxy_extends_proxy_subscriptions() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let (mut ws, _) = proxy_connect(&herald, json!({"user": "lee"}), &[]).await;
    let r = command(&mut ws, json!({"id": 2, "subscribe": {"channel": "px:expiring"}})).await;
    assert!(r["subscribe"].get("expires").is_none(), "the server refreshes it: {r}");
    let r = command(&mut ws, json!({"id": 3, "subscribe": {"channel": "px:expiring-srdown"}})).await;
    assert!(r["subscribe"].is_object(), "{r}");
    wait_for("sub_refresh calls", WAIT, || async { backend.requests_to("/sub_refresh").await.len() >= 2 }).await;
    let req = &backend.requests_to("/sub_refresh").await[0];
    assert_eq!(req["body"]["user"], "lee");
    assert!(req["body"]["channel"].as_str().unwrap().starts_with("px:expiring"));
    // Both subscriptions are still there: a publication reaches the client on each.
    for channel in ["px:expiring", "px:expiring-srdown"] {
        herald.publish(channel, json!({"still": channel})).await;
        let push = loop {
            let msgs = ws.recv_json().await;
            if let Some(p) = msgs.into_iter().find(|m| m["push"]["channel"] == channel) {
                break p;
            }
        };
        assert_eq!(push["push"]["pub"]["data"], json!({"still": channel}), "{push}");
    }
}

/// `herald checkconfig FILE` with `vars`: (success, stderr).
fn checkconfig(file: &serde_json::Value) -> (bool, String) {
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
fn bad_tls_options_and_unknown_named_proxies_stop_start_up_naming_the_key() {
    let connect = |endpoint: &str, tls: Value| {
        checkconfig(
            &json!({"client": {"proxy": {"connect": {"enabled": true, "endpoint": endpoint, "http": {"tls": tls}}}}}),
        )
    };
    let (ok, stderr) = connect("https://b.example/c", json!({}));
    assert!(ok, "https:// is accepted: {stderr}");
    let (ok, stderr) = connect("http://b.example/c", json!({"enabled": true}));
    assert!(!ok);
    assert!(stderr.contains("client.proxy.connect.http.tls.enabled: needs an https:// endpoint"), "{stderr}");
    let (ok, stderr) = connect("https://b.example/c", json!({"enabled": true, "server_ca_pem": "/no/such/ca.pem"}));
    assert!(!ok);
    assert!(stderr.contains("client.proxy.connect.http.tls.server_ca_pem"), "{stderr}");
    let (ok, stderr) = checkconfig(&json!({"channel": {"namespaces": [
        {"name": "ns", "publish_proxy_enabled": true, "publish_proxy_name": "nope"}]}}));
    assert!(!ok);
    assert!(stderr.contains("channel.namespaces[0].publish_proxy_name"), "{stderr}");
    let (ok, stderr) = checkconfig(&json!({
        "proxies": [{"name": "p1", "endpoint": "http://127.0.0.1:9/x", "http": {"static_headers": {"X-A": "1"}}}],
        "rpc": {"namespaces": [{"name": "ns", "proxy_enabled": true, "proxy_name": "p1"}]}}));
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("unknown configuration key"), "static header names are not config keys: {stderr}");
}

/// A connection authenticated by token (no connect proxy call) keeps its `traceparent` for the
/// proxy calls made for it; a connection without one gets a new trace per call.
#[tokio::test]
async fn token_connections_continue_their_trace_in_proxy_calls() {
    let backend = Backend::start();
    let herald = herald_with(Some(&backend), &[]);
    let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut traced = RawWs::open(herald.addr, WS_PATH, &[("traceparent", parent)]).await;
    traced.send_json(&json!({"id": 1, "connect": {"token": token("tina")}})).await;
    assert!(traced.recv_json().await[0]["connect"]["client"].is_string());
    let r = command(&mut traced, json!({"id": 2, "rpc": {"method": "whoami", "data": {}}})).await;
    assert!(r["rpc"].is_object(), "{r}");
    let mut plain = RawWs::connected(&herald, "pete").await;
    let r = command(&mut plain, json!({"id": 2, "rpc": {"method": "whoami", "data": {}}})).await;
    assert!(r["rpc"].is_object(), "{r}");

    assert!(backend.requests_to("/connect").await.is_empty(), "token connections do not call the connect proxy");
    let rpc = backend.requests_to("/rpc").await;
    assert_eq!(rpc.len(), 2);
    let traced_tp = rpc[0]["headers"]["traceparent"].as_str().unwrap();
    assert!(traced_tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-") && traced_tp != parent, "{traced_tp}");
    let plain_tp = rpc[1]["headers"]["traceparent"].as_str().unwrap();
    assert!(!plain_tp.contains("0af7651916cd43dd8448eb211c80319c") && plain_tp.len() == 55, "{plain_tp}");
}
