//! The HTTP edge over real sockets: deadlines on every request head of a keep-alive connection,
//! the idle keep-alive timeout (and what it must not cut), and refusing connections near the
//! file limit.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: herald\r\n\r\n";

/// Reads one response (with a `Content-Length`) from a keep-alive connection; its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.expect("read response");
            assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) {
                let len = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .expect("content-length");
                if buf.len() >= head + len {
                    assert_eq!(buf.len(), head + len, "nothing after the response");
                    return resp.code.expect("status");
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("response within the deadline")
}

/// Waits until the server closes `stream` (end of stream or reset); how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 256];
    let read = tokio::time::timeout(limit, stream.read(&mut chunk)).await;
    match read.unwrap_or_else(|_| panic!("not closed within {limit:?}")) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
    }
    start.elapsed()
}

async fn keep_alive_health(h: &Herald) -> TcpStream {
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    stream
}

/// A later head trickled one byte at a time is closed `request_head_timeout` after its first
/// byte; one that is slow but complete in time is served.
#[tokio::test]
async fn every_request_head_on_a_keep_alive_connection_has_the_deadline() {
    let h =
        Herald::start(&[("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", "1s"), ("HERALD_HTTP_SERVER_IDLE_TIMEOUT", "10s")]);

    // Slow but complete: three pieces over ~0.6 s.
    let mut stream = keep_alive_health(&h).await;
    for piece in HEALTH.chunks(HEALTH.len() / 3 + 1) {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(read_response(&mut stream).await, 200);

    // Trickled: one byte every 300 ms would need ~11 s; closed about 1 s after the first byte.
    let mut stream = keep_alive_health(&h).await;
    let start = Instant::now();
    let mut reader = {
        let trickle = async {
            for byte in HEALTH {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), trickle).await.expect("writes fail once closed");
        stream
    };
    let elapsed = start.elapsed();
    closed_within(&mut reader, WAIT).await;
    assert!(elapsed >= Duration::from_millis(800) && elapsed < Duration::from_secs(4), "closed after {elapsed:?}");
    assert!(h.metrics().await.contains(r#"herald_http_timeouts_total{kind="request_head"} 1"#));
}

/// A keep-alive connection that says nothing after an answer is closed after `idle_timeout`;
/// the head deadline starts at the next request's first byte, not when the wait starts.
#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let h =
        Herald::start(&[("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", "1s"), ("HERALD_HTTP_SERVER_IDLE_TIMEOUT", "2s")]);
    let mut stream = keep_alive_health(&h).await;
    // Idle longer than the head timeout, shorter than the idle timeout: still served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stream.write_all(HEALTH).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 200);
    let elapsed = closed_within(&mut stream, WAIT).await;
    assert!(elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(5), "closed after {elapsed:?}");
    assert!(h.metrics().await.contains(r#"herald_http_timeouts_total{kind="idle"} 1"#));
}

/// Neither deadline cuts a request being answered (a request body uploaded slowly) nor a
/// WebSocket connection that is quiet for longer than both.
#[tokio::test]
async fn deadlines_do_not_cut_requests_in_progress_or_websockets() {
    let h =
        Herald::start(&[("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", "1s"), ("HERALD_HTTP_SERVER_IDLE_TIMEOUT", "1s")]);
    let (mut sub, _) = h.subscriber("u1", "news").await;

    let body = json!({ "channel": "news", "data": { "n": 1 } }).to_string();
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: herald\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = keep_alive_health(&h).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    // The body over 2.5 s: longer than both deadlines together.
    for piece in body.as_bytes().chunks(body.len() / 5 + 1) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(piece).await.unwrap();
    }
    assert_eq!(read_response(&mut stream).await, 200);
    let (data, _) = next_publication(&mut sub, "news").await;
    assert_eq!(data, json!({ "n": 1 }));

    // The WebSocket client was quiet for 2.5 s meanwhile, and quiet for another 1.5 s now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.publish("news", json!({ "n": 2 })).await;
    let (data, _) = next_publication(&mut sub, "news").await;
    assert_eq!(data, json!({ "n": 2 }));
}

/// Under a low file limit: connections beyond the limit minus the reserve are closed at once,
/// the log says so once, the metric counts them, and once the head deadline closes the idle
/// connections `/health` answers again.
#[tokio::test]
async fn connections_beyond_the_file_limit_are_refused_cheaply() {
    let h = Herald::start_with_file_limit(
        128,
        &[
            ("HERALD_HTTP_SERVER_FILE_LIMIT_RESERVE", "32"),
            ("HERALD_HTTP_SERVER_REQUEST_HEAD_TIMEOUT", "3s"),
            ("HERALD_RUNTIME_WORKER_THREADS", "1"),
        ],
    );
    let logs = h.logs();
    let line = logs.lines().find(|l| l.contains("accepting up to ")).expect("the limit is logged at start");
    let limit: usize =
        line.split("accepting up to ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!((40..=96).contains(&limit), "{line}");

    // Fill every slot with connections that send nothing.
    let mut idle = Vec::new();
    for _ in 0..limit {
        idle.push(TcpStream::connect(h.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Twenty more: each is accepted and closed at once, not left hanging.
    for _ in 0..20 {
        let mut extra = TcpStream::connect(h.addr).await.unwrap();
        let took = closed_within(&mut extra, Duration::from_secs(1)).await;
        assert!(took < Duration::from_secs(1));
    }
    let logs = h.logs();
    assert_eq!(logs.matches("refusing new connections").count(), 1, "{logs}");
    assert!(!logs.contains("accept failed"), "{logs}");

    // The head deadline frees the idle connections; the node answers again.
    for stream in &mut idle {
        closed_within(stream, WAIT).await;
    }
    drop(idle);
    // The server closed them just before it stopped counting them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.http("GET", "/health", &[], b"").await.status, 200);
    let metrics = h.metrics().await;
    let refused = metrics
        .lines()
        .find(|l| l.starts_with(r#"herald_connections_refused_total{reason="file_limit"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no refusal metric:\n{metrics}"));
    assert!(refused >= 20, "{refused}");
}
