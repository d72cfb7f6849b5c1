//! The unidirectional transports (uni_http_stream, uni_sse, uni_websocket) against a real
//! `herald` over raw sockets: the connect push first, publications, resume without loss or
//! duplicates while publishing continuously (uni_sse through `Last-Event-ID`, the others
//! through positions in the connect request), and the refusals (bad `cf_connect`, oversized
//! body, disallowed origin).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Namespace `rec`: recovery forced, long history.
const REC: &str = r#"[{"name":"rec","history_size":2000,"history_ttl":"5m","force_recovery":true,"allow_subscribe_for_client":true}]"#;

fn start() -> Herald {
    Herald::start(&[
        ("HERALD_UNI_SSE_ENABLED", "true"),
        ("HERALD_UNI_HTTP_STREAM_ENABLED", "true"),
        ("HERALD_UNI_WEBSOCKET_ENABLED", "true"),
        ("HERALD_CHANNEL_NAMESPACES", REC),
        ("HERALD_CLIENT_ALLOWED_ORIGINS", r#"["https://good.example"]"#),
    ])
}

/// Percent-encodes everything but unreserved characters.
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req + "\r\n" + body
}

fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req + "\r\n"
}

fn connect_request(user: &str, subs: Value) -> String {
    json!({ "token": token(user), "subs": subs }).to_string()
}

/// Publishes `1..=count` as `{"n": i}` to `channel` through the API, a few milliseconds apart.
fn publisher(addr: SocketAddr, channel: &'static str, count: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 1..=count {
            let (status, _) = api_at(addr, "publish", json!({ "channel": channel, "data": { "n": n } })).await;
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

/// Reads publications of `channel` into `seen` until `stop` of them arrived; returns the last
/// SSE id seen and the last position (offset, epoch) seen.
async fn read_pubs(
    r: &mut StreamReader,
    channel: &str,
    seen: &mut Vec<u64>,
    stop: usize,
    last_id: &mut Option<String>,
) {
    while seen.len() < stop {
        let item = r.next().await.expect("stream ended early");
        if item.id.is_some() {
            *last_id = item.id.clone();
        }
        if let Some(p) = item.json.get("pub") {
            assert_eq!(item.json["channel"], channel);
            seen.push(p["data"]["n"].as_u64().unwrap());
        }
    }
}

fn assert_exactly(seen: &[u64], count: u64) {
    let expected: Vec<u64> = (1..=count).collect();
    assert_eq!(seen, expected, "every publication once, in order");
}

#[tokio::test]
async fn uni_http_stream_sends_connect_then_publications() {
    let herald = start();
    let body = connect_request("u1", json!({ "rec:a": {} }));
    let mut r =
        StreamReader::open(herald.addr, post(herald.addr, "/connection/uni_http_stream", &[], &body), false).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert!(r.headers.contains("Content-Type: application/json"));
    let first = r.next().await.unwrap().json;
    let connect = &first["connect"];
    assert!(connect["client"].is_string(), "{first}");
    assert!(connect.get("pong").is_none(), "unidirectional clients are not asked for pongs");
    assert_eq!(connect["subs"]["rec:a"]["recoverable"], true, "{first}");
    herald.publish("rec:a", json!({ "n": 1 })).await;
    let item = r.next().await.unwrap().json;
    assert_eq!(
        (&item["channel"], &item["pub"]["data"], &item["pub"]["offset"]),
        (&json!("rec:a"), &json!({ "n": 1 }), &json!(1))
    );
    // A server-side disconnect arrives as a disconnect push, then the stream ends.
    let client = connect["client"].as_str().unwrap().to_owned();
    herald.api_ok("disconnect", json!({ "user": "u1", "client": client })).await;
    let item = r.next().await.unwrap().json;
    assert_eq!(item["disconnect"]["code"], 3503, "{item}");
    assert!(r.next().await.is_none());
}

#[tokio::test]
async fn uni_sse_resumes_from_last_event_id_without_loss() {
    let herald = start();
    let addr = herald.addr;
    const COUNT: u64 = 150;
    let cf = encode_query(&connect_request("u2", json!({ "rec:sse": {} })));
    let path = format!("/connection/uni_sse?cf_connect={cf}");
    let mut r = StreamReader::open(addr, get(addr, &path, &[]), true).await;
    assert_eq!(r.status, 200, "{}", r.headers);
    assert!(r.headers.contains("Content-Type: text/event-stream"));
    let connect = r.next().await.unwrap();
    assert!(connect.json.get("connect").is_some(), "{:?}", connect);
    assert!(connect.id.is_some(), "the connect event carries the starting positions");
    let mut last_id = connect.id.clone();
    let publishing = publisher(addr, "rec:sse", COUNT);
    let mut seen = Vec::new();
    // Three cuts while publishing; each time resume with the last event id.
    for stop in [20, 60, 100] {
        read_pubs(&mut r, "rec:sse", &mut seen, stop, &mut last_id).await;
        drop(r);
        let id = last_id.clone().unwrap();
        r = StreamReader::open(addr, get(addr, &path, &[("Last-Event-ID", &id)]), true).await;
        assert_eq!(r.status, 200);
        let connect = r.next().await.unwrap().json;
        let sub = &connect["connect"]["subs"]["rec:sse"];
        assert_eq!(sub["recovered"], true, "{connect}");
        for p in sub["publications"].as_array().cloned().unwrap_or_default() {
            seen.push(p["data"]["n"].as_u64().unwrap());
        }
    }
    read_pubs(&mut r, "rec:sse", &mut seen, COUNT as usize, &mut last_id).await;
    publishing.await.unwrap();
    assert_exactly(&seen, COUNT);
}

#[tokio::test]
async fn uni_http_stream_resumes_from_positions_without_loss() {
    let herald = start();
    let addr = herald.addr;
    const COUNT: u64 = 120;
    let body = connect_request("u3", json!({ "rec:hs": {} }));
    let mut r = StreamReader::open(addr, post(addr, "/connection/uni_http_stream", &[], &body), false).await;
    let connect = r.next().await.unwrap().json;
    let mut epoch = connect["connect"]["subs"]["rec:hs"]["epoch"].as_str().unwrap().to_owned();
    let publishing = publisher(addr, "rec:hs", COUNT);
    let mut seen: Vec<u64> = Vec::new();
    let mut offset = 0;
    for stop in [30, 70] {
        while seen.len() < stop {
            let item = r.next().await.unwrap().json;
            if let Some(p) = item.get("pub") {
                seen.push(p["data"]["n"].as_u64().unwrap());
                offset = p["offset"].as_u64().unwrap();
            }
        }
        drop(r);
        let subs = json!({ "rec:hs": { "recover": true, "offset": offset, "epoch": epoch } });
        let body = connect_request("u3", subs);
        r = StreamReader::open(addr, post(addr, "/connection/uni_http_stream", &[], &body), false).await;
        let connect = r.next().await.unwrap().json;
        let sub = &connect["connect"]["subs"]["rec:hs"];
        assert_eq!(sub["recovered"], true, "{connect}");
        epoch = sub["epoch"].as_str().unwrap().to_owned();
        for p in sub["publications"].as_array().cloned().unwrap_or_default() {
            seen.push(p["data"]["n"].as_u64().unwrap());
            offset = p["offset"].as_u64().unwrap();
        }
    }
    while seen.len() < COUNT as usize {
        let item = r.next().await.unwrap().json;
        if let Some(p) = item.get("pub") {
            seen.push(p["data"]["n"].as_u64().unwrap());
        }
    }
    publishing.await.unwrap();
    assert_exactly(&seen, COUNT);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let herald = start();
    let addr = herald.addr;
    // A bad cf_connect.
    let resp = raw_http(addr, get(addr, "/connection/uni_sse?cf_connect=%7Bnope", &[]).as_bytes()).await;
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"].as_str().unwrap().contains("malformed connect request"), "{}", resp.text());
    let resp = raw_http(addr, get(addr, "/connection/uni_sse", &[]).as_bytes()).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (400, "missing cf_connect query parameter"));
    // A bad Last-Event-ID.
    let cf = encode_query(&connect_request("u", json!({})));
    let req = get(addr, &format!("/connection/uni_sse?cf_connect={cf}"), &[("Last-Event-ID", "junk")]);
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (400, "malformed Last-Event-ID"));
    // An oversized body (the default limit is 64 KiB).
    let big = format!("{{\"data\":\"{}\"}}", "x".repeat(70_000));
    let resp = raw_http(addr, post(addr, "/connection/uni_http_stream", &[], &big).as_bytes()).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (413, "request body too large"));
    // GET on a POST-only endpoint.
    let resp = raw_http(addr, get(addr, "/connection/uni_http_stream", &[]).as_bytes()).await;
    assert_eq!(resp.status, 405);
    assert_eq!(resp.header("Allow"), Some("POST, OPTIONS"));
    // A disallowed origin, and an allowed one with its CORS answer.
    let body = connect_request("u", json!({}));
    let req = post(addr, "/connection/uni_http_stream", &[("Origin", "https://evil.example")], &body);
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (403, "origin not allowed"));
    let req = format!(
        "OPTIONS /connection/uni_http_stream HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://good.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
    );
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!(resp.status, 204);
    assert_eq!(resp.header("Access-Control-Allow-Origin"), Some("https://good.example"));
    assert_eq!(resp.header("Access-Control-Allow-Headers"), Some("content-type"));
    let req = post(addr, "/connection/uni_http_stream", &[("Origin", "https://good.example")], &body);
    let mut r = StreamReader::open(addr, req, false).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("Access-Control-Allow-Origin: https://good.example"), "{}", r.headers);
    assert!(r.next().await.unwrap().json.get("connect").is_some());
    // An invalid token: a disconnect push (3500), then the end of the stream.
    let body = json!({ "token": "bad" }).to_string();
    let mut r = StreamReader::open(addr, post(addr, "/connection/uni_http_stream", &[], &body), false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.next().await.unwrap().json["disconnect"]["code"], 3500);
    assert!(r.next().await.is_none());
}

/// A streaming request that is not the first on its keep-alive connection is handed over from
/// hyper and served the same way.
#[tokio::test]
async fn a_stream_after_a_keep_alive_request_is_served() {
    let herald = start();
    let addr = herald.addr;
    let body = connect_request("u5", json!({ "rec:ka": {} }));
    let request = format!(
        "GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n{}",
        post(addr, "/connection/uni_http_stream", &[], &body)
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = loop {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if text.contains("\"connect\"") && text.ends_with('\n') {
            break text;
        }
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "the health answer, then the stream's own head: {text}");
    assert!(!text.contains("content-length: 0"), "hyper's placeholder answer is not sent: {text}");
    herald.publish("rec:ka", json!({ "n": 1 })).await;
    let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
    let item: Value = serde_json::from_slice(&chunk[..n]).unwrap();
    assert_eq!((&item["channel"], &item["pub"]["data"]), (&json!("rec:ka"), &json!({ "n": 1 })));
}

#[tokio::test]
async fn uni_websocket_connects_by_message_or_query_and_resumes() {
    let herald = start();
    let addr = herald.addr;
    let mut ws = RawWs::open(addr, "/connection/uni_websocket", &[]).await;
    ws.send_text(&connect_request("u6", json!({ "rec:ws": {} }))).await;
    let connect = ws.recv_json().await;
    let sub = &connect[0]["connect"]["subs"]["rec:ws"];
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        herald.publish("rec:ws", json!({ "n": n })).await;
    }
    let mut got = Vec::new();
    while got.len() < 3 {
        for v in ws.recv_json().await {
            got.push(v["pub"]["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(got, [1, 2, 3]);
    drop(ws);
    herald.publish("rec:ws", json!({ "n": 4 })).await;
    // Resume with the connect request in the query.
    let subs = json!({ "rec:ws": { "recover": true, "offset": 3, "epoch": epoch } });
    let cf = encode_query(&connect_request("u6", subs));
    let mut ws = RawWs::open(addr, &format!("/connection/uni_websocket?cf_connect={cf}"), &[]).await;
    let connect = ws.recv_json().await;
    let sub = &connect[0]["connect"]["subs"]["rec:ws"];
    assert_eq!(sub["recovered"], true, "{connect:?}");
    assert_eq!(sub["publications"][0]["data"]["n"], 4);
    // A force disconnect: the disconnect push, then the close frame.
    let client = connect[0]["connect"]["client"].as_str().unwrap().to_owned();
    herald.api_ok("disconnect", json!({ "user": "u6", "client": client })).await;
    assert_eq!(ws.recv_json().await[0]["disconnect"]["code"], 3503);
    assert_eq!(ws.expect_close().await.0, Some(3503));
    // A connect request that is not JSON closes with 3501.
    let mut ws = RawWs::open(addr, "/connection/uni_websocket", &[]).await;
    ws.send_text("nope").await;
    assert_eq!(ws.expect_close().await.0, Some(3501));
}

/// A graceful shutdown closes streams like WebSockets: a disconnect push 3001, then the end of
/// the stream; new streams are refused meanwhile.
#[tokio::test]
async fn shutdown_ends_streams_with_3001() {
    let mut herald = Herald::start(&[
        ("HERALD_UNI_HTTP_STREAM_ENABLED", "true"),
        ("HERALD_SHUTDOWN_CLIENT_CLOSE_WINDOW", "500ms"),
        ("HERALD_SHUTDOWN_TIMEOUT", "5s"),
    ]);
    let addr = herald.addr;
    let body = connect_request("s1", json!({ "news": {} }));
    let mut r = StreamReader::open(addr, post(addr, "/connection/uni_http_stream", &[], &body), false).await;
    assert!(r.next().await.unwrap().json.get("connect").is_some());
    herald.signal(libc::SIGTERM);
    let item = r.next().await.unwrap().json;
    assert_eq!(item, json!({ "disconnect": { "code": 3001, "reason": "shutdown" } }));
    assert!(r.next().await.is_none());
    let status = herald.wait_exit(Duration::from_secs(7)).await.expect("exits");
    assert_eq!(status.code(), Some(0));
}

/// A body that does not arrive within `http_server.request_head_timeout` is answered 408.
#[tokio::test]
async fn a_slow_body_times_out_with_408() {
    let herald =
        Herald::start(&[("HERALD_UNI_HTTP_STREAM_ENABLED", "true"), ("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", "1s")]);
    let addr = herald.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head =
        format!("POST /connection/uni_http_stream HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{\"tok");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert!(text.ends_with(r#"{"error":"request body not received in time"}"#), "{text}");
}

#[tokio::test]
async fn uni_websocket_resumes_without_loss_while_publishing() {
    let herald = start();
    let addr = herald.addr;
    const COUNT: u64 = 120;
    let mut ws = RawWs::open(addr, "/connection/uni_websocket", &[]).await;
    ws.send_text(&connect_request("u8", json!({ "rec:wsp": {} }))).await;
    let connect = ws.recv_json().await;
    let mut epoch = connect[0]["connect"]["subs"]["rec:wsp"]["epoch"].as_str().unwrap().to_owned();
    let publishing = publisher(addr, "rec:wsp", COUNT);
    let mut seen: Vec<u64> = Vec::new();
    let mut offset = 0;
    for stop in [25, 75] {
        while seen.len() < stop {
            for item in ws.recv_json().await {
                if let Some(p) = item.get("pub") {
                    seen.push(p["data"]["n"].as_u64().unwrap());
                    offset = p["offset"].as_u64().unwrap();
                }
            }
        }
        drop(ws);
        let subs = json!({ "rec:wsp": { "recover": true, "offset": offset, "epoch": epoch } });
        let cf = encode_query(&connect_request("u8", subs));
        ws = RawWs::open(addr, &format!("/connection/uni_websocket?cf_connect={cf}"), &[]).await;
        let connect = ws.recv_json().await;
        let sub = &connect[0]["connect"]["subs"]["rec:wsp"];
        assert_eq!(sub["recovered"], true, "{connect:?}");
        epoch = sub["epoch"].as_str().unwrap().to_owned();
        for p in sub["publications"].as_array().cloned().unwrap_or_default() {
            seen.push(p["data"]["n"].as_u64().unwrap());
            offset = p["offset"].as_u64().unwrap();
        }
    }
    while seen.len() < COUNT as usize {
        for item in ws.recv_json().await {
            if let Some(p) = item.get("pub") {
                seen.push(p["data"]["n"].as_u64().unwrap());
            }
        }
    }
    publishing.await.unwrap();
    assert_exactly(&seen, COUNT);
}

/// The token's `channels` become server-side subscriptions of a unidirectional client; refused
/// requests on the other endpoints answer JSON errors too.
#[tokio::test]
async fn token_channels_and_more_refusals() {
    let herald = start();
    let addr = herald.addr;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = json!({ "sub": "t1", "exp": exp, "channels": ["rec:tok"] });
    let token = herald_auth::sign_hmac(&claims, SECRET, "HS256").unwrap();
    let body = json!({ "token": token }).to_string();
    let mut r = StreamReader::open(addr, post(addr, "/connection/uni_http_stream", &[], &body), false).await;
    let connect = r.next().await.unwrap().json;
    assert_eq!(connect["connect"]["subs"]["rec:tok"]["recoverable"], true, "{connect}");
    herald.publish("rec:tok", json!({ "n": 1 })).await;
    assert_eq!(r.next().await.unwrap().json["pub"]["data"], json!({ "n": 1 }));
    // uni_websocket: a bad cf_connect, a disallowed origin.
    let req = upgrade_request(addr, "/connection/uni_websocket?cf_connect=%7Bnope", &[]);
    let resp = raw_http(addr, &req).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (400, "malformed cf_connect"));
    let req = upgrade_request(addr, "/connection/uni_websocket", &[("Origin", "https://evil.example")]);
    assert_eq!(raw_http(addr, &req).await.status, 403);
    // uni_sse: a disallowed origin.
    let cf = encode_query(&connect_request("t2", json!({})));
    let req = get(addr, &format!("/connection/uni_sse?cf_connect={cf}"), &[("Origin", "https://evil.example")]);
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (403, "origin not allowed"));
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_stream_rejected_total{transport=\"uni_sse\",status=\"403\"} 1"), "{metrics}");
    assert!(metrics.contains("herald_transport_connections{transport=\"uni_http_stream\"} 1"), "{metrics}");
}
