//! Bidirectional emulation over raw sockets against a real `herald`: the SSE and HTTP-streaming
//! connect results carry `session` and `node`; `/emulation` runs commands on the stream (204),
//! answers its documented errors (400, 404, 413, 405, 403) and its CORS preflight; pings and
//! pongs through `/emulation`; a slow stream reader is disconnected with 3008.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn start(extra: &[(&str, &str)]) -> Herald {
    let mut env = vec![
        ("HERALD_SSE_ENABLED", "true"),
        ("HERALD_HTTP_STREAM_ENABLED", "true"),
        ("HERALD_UNI_HTTP_STREAM_ENABLED", "true"),
    ];
    env.extend_from_slice(extra);
    Herald::start(&env)
}

fn stream_request(addr: SocketAddr, sse: bool, cmds: &str) -> String {
    if sse {
        let q: String = cmds.bytes().map(|b| format!("%{b:02X}")).collect();
        format!("GET /connection/sse?cf_connect={q} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
    } else {
        format!("POST /connection/http_stream HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{cmds}", cmds.len())
    }
}

async fn emulate(addr: SocketAddr, body: &Value, headers: &[(&str, &str)]) -> HttpResponse {
    http_at(addr, "POST", "/emulation", headers, body.to_string().as_bytes()).await
}

/// Opens a bidirectional stream for `user` and returns it with its session and node.
async fn connected(addr: SocketAddr, sse: bool, user: &str) -> (StreamReader, String, String) {
    let connect = json!({ "connect": { "token": token(user) }, "id": 1 }).to_string();
    let mut lines = StreamReader::open(addr, stream_request(addr, sse, &connect), sse).await;
    assert_eq!(lines.status, 200, "{}", lines.headers);
    let reply = lines.next().await.unwrap().json;
    let result = &reply["connect"];
    assert_eq!(reply["id"], 1, "{reply}");
    let session = result["session"].as_str().expect("session in the connect result").to_owned();
    let node = result["node"].as_str().expect("node in the connect result").to_owned();
    (lines, session, node)
}

#[tokio::test]
async fn commands_through_emulation_reply_on_the_stream() {
    let herald = start(&[]);
    let addr = herald.addr;
    for sse in [true, false] {
        let (mut lines, session, node) = connected(addr, sse, "e1").await;
        let data =
            "{\"subscribe\":{\"channel\":\"news\"},\"id\":2}\n{\"presence_stats\":{\"channel\":\"news\"},\"id\":3}";
        let resp = emulate(addr, &json!({ "session": session, "node": node, "data": data }), &[]).await;
        assert_eq!(resp.status, 204, "{}", resp.text());
        assert_eq!(lines.next().await.unwrap().json["id"], 2);
        assert_eq!(lines.next().await.unwrap().json["id"], 3);
        herald.publish("news", json!({ "sse": sse })).await;
        let push = lines.next().await.unwrap().json;
        assert_eq!(push["push"]["pub"]["data"], json!({ "sse": sse }), "{push}");
    }
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_emulation_requests_total{result=\"ok\"} 2"), "{metrics}");
}

#[tokio::test]
async fn emulation_errors_are_documented_statuses() {
    let herald = start(&[("HERALD_EMULATION_MAX_REQUEST_BODY_SIZE", "1024")]);
    let addr = herald.addr;
    let (_lines, session, node) = connected(addr, false, "e2").await;
    // Another node: 404, which makes the SDK reconnect.
    let resp = emulate(addr, &json!({ "session": session, "node": "elsewhere", "data": "{}" }), &[]).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (404, "unknown node"));
    // A session this node does not know: 204, like Centrifugo.
    let resp = emulate(addr, &json!({ "session": "gone", "node": node, "data": "{}" }), &[]).await;
    assert_eq!(resp.status, 204);
    // Malformed bodies and commands.
    let resp = http_at(addr, "POST", "/emulation", &[], b"not json").await;
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"].as_str().unwrap().starts_with("malformed emulation request"));
    let resp = emulate(addr, &json!({ "node": node, "data": "{}" }), &[]).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (400, "node and session are required"));
    let resp = emulate(addr, &json!({ "session": session, "node": node, "data": "{nope" }), &[]).await;
    assert_eq!(resp.status, 400);
    // Over emulation.max_request_body_size.
    let big = json!({ "session": session, "node": node, "data": "x".repeat(2000) });
    let resp = emulate(addr, &big, &[]).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (413, "request body too large"));
    // Wrong method, preflight, origin.
    let resp = http_at(addr, "GET", "/emulation", &[], b"").await;
    assert_eq!((resp.status, resp.header("Allow")), (405, Some("POST, OPTIONS")));
    let origin = format!("http://{addr}");
    let resp = http_at(
        addr,
        "OPTIONS",
        "/emulation",
        &[("Origin", &origin), ("Access-Control-Request-Headers", "content-type")],
        b"",
    )
    .await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some(origin.as_str()));
    assert_eq!(resp.header("Access-Control-Allow-Headers"), Some("content-type"));
    let resp =
        emulate(addr, &json!({ "session": session, "node": node, "data": "{}" }), &[("Origin", "http://evil")]).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (403, "origin not allowed"));
}

#[tokio::test]
async fn pings_need_pongs_through_emulation() {
    let herald = start(&[("HERALD_CLIENT_PING_INTERVAL", "2s"), ("HERALD_CLIENT_PONG_TIMEOUT", "1s")]);
    let addr = herald.addr;
    // A client that answers every ping stays connected.
    let (mut alive, session, node) = connected(addr, true, "p1").await;
    // One that does not is closed with 3012 (a disconnect push, then the end of the stream).
    let (mut silent, _, _) = connected(addr, false, "p2").await;
    for _ in 0..3 {
        assert_eq!(alive.next().await.unwrap().json, json!({}), "a ping");
        let resp = emulate(addr, &json!({ "session": session, "node": node, "data": "{}" }), &[]).await;
        assert_eq!(resp.status, 204);
    }
    let mut last = None;
    while let Some(item) = silent.next().await {
        last = Some(item.json);
    }
    assert_eq!(last.unwrap()["push"]["disconnect"]["code"], 3012);
    // Unidirectional clients get pings and are never asked for pongs.
    let body = json!({ "token": token("p3") }).to_string();
    let req = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut uni = StreamReader::open(addr, req, false).await;
    assert!(uni.next().await.unwrap().json.get("connect").is_some());
    for _ in 0..3 {
        assert_eq!(uni.next().await.unwrap().json, json!({}));
    }
}

#[tokio::test]
async fn a_slow_stream_reader_is_disconnected() {
    let herald = start(&[("HERALD_CLIENT_QUEUE_MAX_SIZE", "65536")]);
    let addr = herald.addr;
    let body = json!({ "token": token("slow"), "subs": { "news": {} } }).to_string();
    let req = format!(
        "POST /connection/uni_http_stream HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut uni = StreamReader::open(addr, req, false).await;
    assert!(uni.next().await.unwrap().json.get("connect").is_some());
    // Publish far more than the socket buffers and the queue hold, without reading.
    let payload = "x".repeat(60_000);
    let mut closed = false;
    for _ in 0..400 {
        herald.publish("news", json!({ "p": payload })).await;
        if herald.num_clients().await == 0 {
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow reader was not disconnected");
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_transport_slow_total{transport=\"uni_http_stream\"} 1"), "{metrics}");
    // At least the publication that did not fit was dropped.
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("herald_transport_dropped_bytes_total{transport=\"uni_http_stream\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no dropped bytes counted: {metrics}"));
    assert!(dropped >= 60_000.0, "{dropped}");
    let mut last = None;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), uni.next()).await.unwrap() {
        last = Some(item.json);
    }
    assert_eq!(last.unwrap()["disconnect"]["code"], 3008);
}
