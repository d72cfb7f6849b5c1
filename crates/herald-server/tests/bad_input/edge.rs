//! Edge cases: address lists per endpoint class, trusted proxies (a spoofed `X-Forwarded-For`
//! from an untrusted peer is ignored), the PROXY protocol, the connection limits and rates and
//! the client command rate. Clients bind to 127.0.0.x source addresses to be told apart.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;
use crate::{Answer, Case, closed_silently, http, read_answer, refused, run_group};

const DENIED: &str = "your address is not allowed here";

/// A connection from source address `from` (127.0.0.x).
async fn from(ip: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 0)).expect("bind source address");
    socket.connect(addr).await.expect("connect")
}

/// Sends `prefix` then `request` from `ip` and reads the answer.
fn send_from(
    ip: &'static str,
    prefix: Vec<u8>,
    request: impl FnOnce(SocketAddr) -> Vec<u8> + Send + 'static,
) -> impl FnOnce(SocketAddr) -> crate::Observed {
    move |addr| {
        Box::pin(async move {
            let mut stream = from(ip, addr).await;
            let mut bytes = prefix;
            bytes.extend_from_slice(&request(addr));
            let _ = stream.write_all(&bytes).await;
            read_answer(&mut stream, None).await
        })
    }
}

fn upgrade(extra: &'static [(&'static str, &'static str)]) -> impl FnOnce(SocketAddr) -> Vec<u8> + Send {
    move |addr| upgrade_request(addr, WS_PATH, extra)
}

fn get(path: &'static str, extra: &'static str) -> impl FnOnce(SocketAddr) -> Vec<u8> + Send {
    move |_| format!("GET {path} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n{extra}\r\n").into_bytes()
}

fn api_info(extra: &'static str) -> impl FnOnce(SocketAddr) -> Vec<u8> + Send {
    move |_| {
        format!(
            "POST /api/info HTTP/1.1\r\nHost: herald\r\nConnection: close\r\nX-API-Key: {API_KEY}\r\n{extra}Content-Length: 2\r\n\r\n{{}}"
        )
        .into_bytes()
    }
}

/// The status of an answer, for cases where the body does not matter (a 101, an `info`).
async fn status_of(observed: crate::Observed) -> Answer {
    match observed.await {
        Answer::Http { status, .. } => Answer::Other(format!("status {status}")),
        other => other,
    }
}

fn status(code: u16) -> Answer {
    Answer::Other(format!("status {code}"))
}

fn list_cases() -> Vec<Case> {
    vec![
        Case::new("a denied client address", send_from("127.0.0.3", vec![], upgrade(&[])), http(403, refused(DENIED))),
        Case::new(
            "a denied client address on the unidirectional SSE endpoint",
            send_from("127.0.0.3", vec![], get("/connection/uni_sse", "")),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "the API from an address not on its allow list",
            send_from("127.0.0.5", vec![], api_info("")),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "a spoofed X-Forwarded-For from an untrusted peer is ignored",
            send_from("127.0.0.6", vec![], api_info("X-Forwarded-For: 127.0.0.1\r\n")),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "a trusted proxy forwarding a denied client",
            send_from("127.0.0.2", vec![], upgrade(&[("X-Forwarded-For", "198.51.100.1, 127.0.0.3")])),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "a trusted proxy forwarding an allowed API caller",
            |addr| status_of(send_from("127.0.0.2", vec![], api_info("X-Forwarded-For: 127.0.0.1\r\n"))(addr)),
            status(200),
        ),
        Case::new(
            "a trusted proxy's X-Real-IP",
            |addr| status_of(send_from("127.0.0.2", vec![], api_info("X-Real-IP: 127.0.0.1\r\n"))(addr)),
            status(200),
        ),
        Case::new(
            "admin routes from a denied address",
            send_from("127.0.0.4", vec![], get("/health", "")),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "new connections per address: the burst, then 429",
            |addr| async move {
                for _ in 0..2 {
                    let ws =
                        RawWs::handshake_on(from("127.0.0.7", addr).await, &upgrade_request(addr, WS_PATH, &[])).await;
                    if ws.status != 101 {
                        return Answer::Other(format!("refused within the burst: {}", ws.status));
                    }
                }
                let mut stream = from("127.0.0.7", addr).await;
                let _ = stream.write_all(&upgrade_request(addr, WS_PATH, &[])).await;
                read_answer(&mut stream, Some("retry-after")).await
            },
            crate::http_with(429, refused("too many new connections from your address"), "retry-after", "1"),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_address_lists() {
    let env = [
        ("HERALD_ACCESS_TRUSTED_PROXIES", "127.0.0.2"),
        ("HERALD_UNI_SSE_ENABLED", "true"),
        ("HERALD_ACCESS_CLIENT_DENY", "127.0.0.3"),
        ("HERALD_ACCESS_API_ALLOW", "127.0.0.1 127.0.0.2/32"),
        ("HERALD_ACCESS_ADMIN_DENY", "127.0.0.4"),
        ("HERALD_LIMITS_CONNECTION_RATE_PER_ADDRESS", "1"),
        ("HERALD_LIMITS_CONNECTION_BURST_PER_ADDRESS", "2"),
    ];
    let metrics = [
        ("herald_access_denied_total{endpoint=\"client\"}", 3),
        ("herald_access_denied_total{endpoint=\"api\"}", 2),
        ("herald_access_denied_total{endpoint=\"admin\"}", 1),
        ("herald_limit_refusals_total{limit=\"connection_rate_per_address\",outcome=\"429\"}", 1),
    ];
    run_group("edge_address_lists", &env, list_cases(), &metrics).await;
}

fn proxy_v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 8000\r\n").into_bytes()
}

fn proxy_v2(source: &str) -> Vec<u8> {
    herald_server::edge::proxy_protocol::v2_header(
        SocketAddr::new(source.parse().unwrap(), 40000),
        "127.0.0.1:8000".parse().unwrap(),
    )
}

fn proxy_cases() -> Vec<Case> {
    vec![
        Case::new(
            "PROXY v1 naming a denied client",
            send_from("127.0.0.2", proxy_v1("192.0.2.66"), upgrade(&[])),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "PROXY v2 naming a denied client",
            send_from("127.0.0.2", proxy_v2("192.0.2.66"), upgrade(&[])),
            http(403, refused(DENIED)),
        ),
        Case::new(
            "PROXY v1 and v2 naming allowed clients",
            |addr| async move {
                let mut seen = Vec::new();
                for header in [proxy_v1("192.0.2.1"), proxy_v2("2001:db8::1")] {
                    let mut request = header;
                    request.extend_from_slice(&upgrade_request(addr, WS_PATH, &[]));
                    let mut ws = RawWs::handshake_on(from("127.0.0.2", addr).await, &request).await;
                    ws.send_json(&json!({"id": 1, "connect": {"token": token("proxied")}})).await;
                    let reply = ws.recv_json().await;
                    seen.push(format!("{} {}", ws.status, reply[0]["connect"]["client"].is_string()));
                }
                Answer::Other(seen.join(", "))
            },
            Answer::Other("101 true, 101 true".into()),
        ),
        Case::new(
            "a trusted proxy without a PROXY header is closed",
            |addr| async move {
                let mut stream = from("127.0.0.2", addr).await;
                let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: herald\r\n\r\n").await;
                match closed_silently(&mut stream, Duration::from_secs(5)).await {
                    Ok(_) => Answer::Closed,
                    Err(e) => Answer::Other(e),
                }
            },
            Answer::Closed,
        ),
        Case::new(
            "a PROXY header from an untrusted peer is not believed",
            |addr| status_of(send_from("127.0.0.6", proxy_v1("127.0.0.1"), get("/health", ""))(addr)),
            status(400),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_proxy_protocol() {
    let env = [
        ("HERALD_ACCESS_TRUSTED_PROXIES", "127.0.0.2"),
        ("HERALD_ACCESS_PROXY_PROTOCOL", "true"),
        ("HERALD_ACCESS_CLIENT_DENY", "192.0.2.66"),
    ];
    let metrics = [("herald_access_denied_total{endpoint=\"client\"}", 2), ("herald_proxy_protocol_errors_total", 1)];
    run_group("edge_proxy_protocol", &env, proxy_cases(), &metrics).await;
}

/// Reads replies until `n` arrived, or the close that ends them: `(replies, close code)`.
async fn replies(ws: &mut RawWs, n: usize) -> (Vec<Value>, Option<u16>) {
    let mut got = Vec::new();
    while got.len() < n {
        let frame = ws.read_frame().await;
        if frame.opcode == op::CLOSE {
            return (got, frame.close().0);
        }
        got.extend(
            frame
                .text()
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    (got, None)
}

fn error_codes(replies: &[Value]) -> Vec<u64> {
    replies.iter().map(|r| r["error"]["code"].as_u64().unwrap_or(0)).collect()
}

fn limit_cases() -> Vec<Case> {
    vec![
        Case::new(
            "commands over the rate: 111, then 3013",
            |addr| async move {
                let mut ws =
                    RawWs::handshake_on(from("127.0.0.8", addr).await, &upgrade_request(addr, WS_PATH, &[])).await;
                ws.send_json(&json!({"id": 1, "connect": {"token": token("busy")}})).await;
                ws.recv_json().await;
                let batch = |ids: std::ops::Range<u32>| {
                    ids.map(|id| json!({"id": id, "presence_stats": {"channel": "hist:watch"}}).to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                // A burst of 5 passes, the sixth gets 111.
                ws.send_text(&batch(2..8)).await;
                let (first, _) = replies(&mut ws, 6).await;
                // With disconnect_after 2, the second refusal in a row is answered, the third closes.
                ws.send_text(&batch(8..11)).await;
                let (second, close) = replies(&mut ws, 3).await;
                let seen = (error_codes(&first), error_codes(&second));
                match close {
                    // 103: presence is off in the namespace; the burst is answered as usual.
                    Some(code) if seen == (vec![103, 103, 103, 103, 103, 111], vec![111]) => Answer::Disconnected(code),
                    _ => Answer::Other(format!("{seen:?} {close:?}")),
                }
            },
            Answer::Disconnected(3013),
        ),
        user_rate_case(),
    ]
}

/// A connected JSON WebSocket of `user` from `ip`.
async fn connected_from(ip: &str, addr: SocketAddr, user: &str) -> RawWs {
    let mut ws = RawWs::handshake_on(from(ip, addr).await, &upgrade_request(addr, WS_PATH, &[])).await;
    ws.send_json(&json!({"id": 1, "connect": {"token": token(user)}})).await;
    ws.recv_json().await;
    ws
}

fn stats_batch(ids: std::ops::Range<u32>) -> String {
    ids.map(|id| json!({"id": id, "presence_stats": {"channel": "hist:watch"}}).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn user_rate_case() -> Case {
    Case::new(
        "commands over the user rate, across two connections of one user: 111",
        |addr| async move {
            let mut a = connected_from("127.0.0.12", addr, "pair").await;
            let mut b = connected_from("127.0.0.12", addr, "pair").await;
            a.send_text(&stats_batch(2..7)).await;
            let (first, _) = replies(&mut a, 5).await;
            b.send_text(&stats_batch(2..6)).await;
            let (second, _) = replies(&mut b, 4).await;
            Answer::Other(format!("{:?} {:?}", error_codes(&first), error_codes(&second)))
        },
        Answer::Other("[103, 103, 103, 103, 103] [103, 103, 103, 111]".into()),
    )
}

fn rate_cases() -> Vec<Case> {
    vec![Case::new(
        "new connections to the node over its rate: 503",
        |addr| async move {
            let mut open = Vec::new();
            for _ in 0..20 {
                let mut stream = from("127.0.0.9", addr).await;
                let _ = stream.write_all(&upgrade_request(addr, WS_PATH, &[])).await;
                match read_answer(&mut stream, None).await {
                    Answer::Http { status: 101, .. } => open.push(stream),
                    refusal => return refusal,
                }
            }
            Answer::Other("20 connections within a second were all accepted".into())
        },
        http(503, refused("too many new connections to this node")),
    )]
}

fn connection_limit_cases() -> Vec<Case> {
    vec![Case::new(
        "connections over client.connection_limit: 503 before the upgrade",
        |addr| async move {
            // The healthy subscriber holds one of the three.
            let mut open = Vec::new();
            for _ in 0..2 {
                let mut ws =
                    RawWs::handshake_on(from("127.0.0.10", addr).await, &upgrade_request(addr, WS_PATH, &[])).await;
                if ws.status != 101 {
                    return Answer::Other(format!("refused under the limit: {}", ws.status));
                }
                // A WebSocket counts from its first message (the connect command).
                ws.send_json(&json!({"id": 1, "connect": {"token": token("many")}})).await;
                ws.recv_json().await;
                open.push(ws);
            }
            send_from("127.0.0.10", vec![], upgrade(&[]))(addr).await
        },
        http(503, refused("connection limit reached on this node")),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_command_rate() {
    let env = [
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_RATE", "1"),
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_BURST", "5"),
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_DISCONNECT_AFTER", "2"),
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_USER_RATE", "1"),
        ("HERALD_CLIENT_COMMAND_RATE_LIMIT_USER_BURST", "8"),
    ];
    let metrics = [
        ("herald_limit_refusals_total{limit=\"command_rate\",outcome=\"error\"}", 3),
        ("herald_limit_refusals_total{limit=\"command_rate\",outcome=\"disconnect\"}", 1),
    ];
    run_group("edge_command_rate", &env, limit_cases(), &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_connection_rate() {
    let env = [("HERALD_CLIENT_CONNECTION_RATE_LIMIT", "5")];
    let metrics = [("herald_limit_refusals_total{limit=\"connection_rate_limit\",outcome=\"503\"}", 1)];
    run_group("edge_connection_rate", &env, rate_cases(), &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_connection_limit() {
    let env = [("HERALD_CLIENT_CONNECTION_LIMIT", "3")];
    let metrics = [("herald_limit_refusals_total{limit=\"connection_limit\",outcome=\"503\"}", 1)];
    run_group("edge_connection_limit", &env, connection_limit_cases(), &metrics).await;
}

/// `limits.api_rate`: the burst of server API requests passes, the next gets 429; a subscriber
/// connected meanwhile gets the publication made once the bucket refilled. (Not a group: the
/// group's publisher uses the same API key.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_api_rate() {
    let herald = Herald::start(&[("HERALD_LIMITS_API_RATE", "2"), ("HERALD_LIMITS_API_BURST", "4")]);
    let (mut client, _) = herald.subscriber("healthy", "news").await;
    // The harness's own API calls (start-up checks) drew on the bucket: let it fill again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(herald.api("info", json!({})).await);
    }
    let codes: Vec<u16> = statuses.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 200, 200, 200, 429]);
    assert_eq!(statuses[4].1, json!({"error": "too many server API requests"}));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = herald.api("publish", json!({"channel": "news", "data": {"after": true}})).await;
    assert_eq!(status, 200);
    let (data, _) = next_publication(&mut client, "news").await;
    assert_eq!(data, json!({"after": true}));
    let text = herald.metrics().await;
    assert_eq!(crate::sample(&text, "herald_limit_refusals_total{limit=\"api_rate\",outcome=\"429\"}"), Some(1));
}

fn namespace_cases() -> Vec<Case> {
    vec![Case::new(
        "publications over a namespace's publication_rate_limit: 111 from the API and clients",
        |addr| async move {
            let mut seen = Vec::new();
            for n in 0..4 {
                let (status, body) = api_at(addr, "publish", json!({"channel": "limited:x", "data": {"n": n}})).await;
                seen.push(format!("{status} {}", body["error"]["code"].as_u64().unwrap_or(0)));
            }
            let mut ws =
                RawWs::handshake_on(from("127.0.0.11", addr).await, &upgrade_request(addr, WS_PATH, &[])).await;
            ws.send_json(&json!({"id": 1, "connect": {"token": token("writer")}})).await;
            ws.recv_json().await;
            ws.send_json(&json!({"id": 2, "publish": {"channel": "limited:x", "data": {"n": 4}}})).await;
            let reply = ws.recv_json().await;
            seen.push(format!("client {}", reply[0]["error"]));
            Answer::Other(seen.join(", "))
        },
        Answer::Other(
            "200 0, 200 0, 200 0, 200 111, client {\"code\":111,\"message\":\"too many requests\",\"temporary\":true}"
                .into(),
        ),
    )]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_namespace_publication_rate() {
    let namespaces = r#"[{"name":"hist","history_size":100,"history_ttl":"5m","presence":true,"allow_subscribe_for_client":true},
        {"name":"limited","publication_rate_limit":3,"allow_publish_for_client":true}]"#;
    let env = [("HERALD_CHANNEL_NAMESPACES", namespaces)];
    let metrics = [("herald_limit_refusals_total{limit=\"namespace_publication_rate\",outcome=\"111\"}", 2)];
    run_group("edge_namespace_publication_rate", &env, namespace_cases(), &metrics).await;
}
