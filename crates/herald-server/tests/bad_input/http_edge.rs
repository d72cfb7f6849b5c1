//! HTTP edge cases: slow and idle connections, oversized and flooded heads, bytes that are not
//! HTTP, bad WebSocket upgrades and unknown paths.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;
use crate::{Answer, Case, Observed, closed_silently, http, http_with, raw, raw_with, read_answer, refused, run_group};

const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEAD: usize = 4096;
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: herald\r\n\r\n";

/// A keep-alive connection after one answered `GET /health`.
async fn kept_alive(addr: SocketAddr) -> Result<TcpStream, Answer> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(HEALTH).await.expect("write");
    match read_answer(&mut stream, None).await {
        Answer::Http { status: 200, .. } => Ok(stream),
        other => Err(Answer::Other(format!("first request: {other:?}"))),
    }
}

/// A second request on a keep-alive connection, and its answer.
fn second_request(bytes: Vec<u8>) -> impl FnOnce(SocketAddr) -> Observed {
    move |addr| {
        Box::pin(async move {
            let mut stream = match kept_alive(addr).await {
                Ok(s) => s,
                Err(answer) => return answer,
            };
            let _ = stream.write_all(&bytes).await;
            read_answer(&mut stream, None).await
        })
    }
}

/// Writes `HEALTH` one byte every 300 ms (it would take ~11 s), optionally after one answered
/// request; the connection must be closed, without an answer, about `HEAD_TIMEOUT` after the
/// first byte.
fn trickle(after_a_request: bool) -> impl FnOnce(SocketAddr) -> Observed {
    move |addr| {
        Box::pin(async move {
            let mut stream = if after_a_request {
                match kept_alive(addr).await {
                    Ok(s) => s,
                    Err(answer) => return answer,
                }
            } else {
                TcpStream::connect(addr).await.expect("connect")
            };
            let (mut reader, mut writer) = stream.split();
            let trickle = async {
                for byte in HEALTH {
                    if writer.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                std::future::pending::<()>().await;
            };
            let closed = tokio::select! {
                closed = closed_silently(&mut reader, WAIT) => closed,
                () = trickle => unreachable!(),
            };
            within(closed, HEAD_TIMEOUT)
        })
    }
}

/// [`Answer::Closed`] when the close came after 80 % of `deadline` and before three times it
/// (a loaded machine is slow, never early).
fn within(closed: Result<Duration, String>, deadline: Duration) -> Answer {
    match closed {
        Ok(took) if took >= deadline.mul_f32(0.8) && took < deadline * 3 + Duration::from_secs(1) => Answer::Closed,
        Ok(took) => Answer::Other(format!("closed after {took:?}, the deadline is {deadline:?}")),
        Err(e) => Answer::Other(e),
    }
}

/// A keep-alive connection that sends nothing after its first answer is closed after
/// `IDLE_TIMEOUT`.
async fn idle_keep_alive(addr: SocketAddr) -> Answer {
    let mut stream = match kept_alive(addr).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    within(closed_silently(&mut stream, WAIT).await, IDLE_TIMEOUT)
}

/// A connection that sends nothing at all is closed after the head timeout.
async fn silent(addr: SocketAddr) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    within(closed_silently(&mut stream, WAIT).await, HEAD_TIMEOUT)
}

/// Bytes that never end a head (a TLS ClientHello's start) are closed at the head timeout.
async fn tls_hello(addr: SocketAddr) -> Answer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await;
    within(closed_silently(&mut stream, WAIT).await, HEAD_TIMEOUT)
}

fn upgrade(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {WS_PATH} HTTP/1.1\r\nHost: herald\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

fn request(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

const UPGRADE: (&str, &str) = ("Upgrade", "websocket");
const CONNECTION: (&str, &str) = ("Connection", "Upgrade");
const KEY: (&str, &str) = ("Sec-WebSocket-Key", WS_KEY);
const VERSION: (&str, &str) = ("Sec-WebSocket-Version", "13");

fn cases() -> Vec<Case> {
    let too_large = || refused("request head too large");
    let filler = format!("X-Filler: {}\r\n", "a".repeat(MAX_HEAD));
    let flood: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let not_first = refused("expected a WebSocket upgrade (it must be the first request on its connection)");
    let mut upgrade_post = upgrade(&[UPGRADE, CONNECTION, KEY, VERSION]);
    upgrade_post.splice(0..3, b"POST".iter().copied());
    let ws_head = String::from_utf8(upgrade(&[UPGRADE, CONNECTION, KEY, VERSION])).unwrap();
    let many: String = (0..90).map(|i| format!("X-H{i}: v\r\n")).collect();
    vec![
        Case::new("90 header fields are allowed", raw(request("GET", "/health", &many)), http(200, json!({}))),
        Case::new("slowloris: the first head trickled", trickle(false), Answer::Closed),
        Case::new("slowloris: a later keep-alive head trickled", trickle(true), Answer::Closed),
        Case::new("a connection that sends nothing", silent, Answer::Closed),
        Case::new("idle keep-alive past http_server.idle_timeout", idle_keep_alive, Answer::Closed),
        Case::new("oversized first head", raw(request("GET", "/health", &filler)), http(431, too_large())),
        Case::new(
            "oversized later head on a keep-alive connection",
            second_request(request("GET", "/health", &filler)),
            http(431, Value::Null),
        ),
        Case::new(
            "header flood: 200 header fields",
            raw(request("GET", "/health", &flood)),
            http(431, refused("too many header fields (the limit is 100)")),
        ),
        Case::new(
            "header flood on a later keep-alive request",
            second_request(request("GET", "/health", &flood)),
            http(431, Value::Null),
        ),
        Case::new("garbage that never ends a head (TLS ClientHello)", tls_hello, Answer::Closed),
        Case::new(
            "garbage lines instead of HTTP",
            raw(&b"\x00\x01garbage\xff\r\n\r\n"[..]),
            http(400, refused("malformed request head: invalid token")),
        ),
        Case::new(
            "garbage after a keep-alive request",
            second_request(b"\x00\x01garbage\xff\r\n\r\n".to_vec()),
            http(400, Value::Null),
        ),
        Case::new(
            "WebSocket upgrade as a later request",
            second_request(ws_head.clone().into_bytes()),
            http(400, not_first.clone()),
        ),
        Case::new(
            "GET on the WebSocket path without an upgrade",
            raw(request("GET", WS_PATH, "")),
            http(400, not_first),
        ),
        Case::new(
            "upgrade without Sec-WebSocket-Key",
            raw(upgrade(&[UPGRADE, CONNECTION, VERSION])),
            http(400, refused("invalid Sec-WebSocket-Key")),
        ),
        Case::new(
            "upgrade with a Sec-WebSocket-Key that is not 16 bytes of base64",
            raw(upgrade(&[UPGRADE, CONNECTION, VERSION, ("Sec-WebSocket-Key", "c2hvcnQ=")])),
            http(400, refused("invalid Sec-WebSocket-Key")),
        ),
        Case::new(
            "upgrade with Sec-WebSocket-Version 8",
            raw_with(
                upgrade(&[UPGRADE, CONNECTION, KEY, ("Sec-WebSocket-Version", "8")]),
                Some("Sec-WebSocket-Version"),
            ),
            http_with(426, refused("unsupported Sec-WebSocket-Version"), "Sec-WebSocket-Version", "13"),
        ),
        Case::new(
            "upgrade without Sec-WebSocket-Version",
            raw(upgrade(&[UPGRADE, CONNECTION, KEY])),
            http(426, refused("unsupported Sec-WebSocket-Version")),
        ),
        Case::new(
            "upgrade whose Upgrade header is not websocket",
            raw(upgrade(&[("Upgrade", "h2c"), CONNECTION, KEY, VERSION])),
            http(400, refused("missing Upgrade: websocket")),
        ),
        Case::new(
            "upgrade without Connection: upgrade",
            raw(upgrade(&[UPGRADE, KEY, VERSION])),
            http(400, refused("missing Connection: upgrade")),
        ),
        Case::new(
            "upgrade with POST",
            raw_with(upgrade_post, Some("Allow")),
            http_with(405, refused("WebSocket upgrade requires GET"), "Allow", "GET"),
        ),
        Case::new(
            "upgrade from a foreign Origin",
            raw(upgrade(&[UPGRADE, CONNECTION, KEY, VERSION, ("Origin", "http://evil.example")])),
            http(403, refused("origin not allowed")),
        ),
        Case::new("unknown path", raw(request("GET", "/nope", "")), http(404, refused("not found"))),
        Case::new(
            "upgrade on an unknown path",
            raw(ws_head.replacen(WS_PATH, "/nope", 1).into_bytes()),
            http(404, refused("not found")),
        ),
        Case::new("empty request line", raw(&b"\r\n\r\n"[..]), Answer::Closed),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_edge() {
    let head = format!("{}ms", HEAD_TIMEOUT.as_millis());
    let idle = format!("{}ms", IDLE_TIMEOUT.as_millis());
    let max = MAX_HEAD.to_string();
    let env = [
        ("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", head.as_str()),
        ("HERALD_HTTP_SERVER_IDLE_TIMEOUT", idle.as_str()),
        ("HERALD_HTTP_SERVER_MAX_REQUEST_HEAD_SIZE", max.as_str()),
    ];
    // Counted from the table: five heads never completed (two trickles, a silent connection,
    // the TLS bytes, blank lines), one idle keep-alive; the answers Herald writes itself.
    let metrics = [
        (r#"herald_http_timeouts_total{kind="request_head"}"#, 5),
        (r#"herald_http_timeouts_total{kind="idle"}"#, 1),
        (r#"herald_transport_rejected_total{status="400"}"#, 5),
        (r#"herald_transport_rejected_total{status="403"}"#, 1),
        (r#"herald_transport_rejected_total{status="405"}"#, 1),
        (r#"herald_transport_rejected_total{status="426"}"#, 2),
        (r#"herald_transport_rejected_total{status="431"}"#, 2),
    ];
    run_group("http_edge", &env, cases(), &metrics).await;
}
