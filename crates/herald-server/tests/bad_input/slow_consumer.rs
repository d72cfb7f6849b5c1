//! The slow consumer: a subscriber that never reads is disconnected with 3008 once its queue
//! passes `client.queue_max_size`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;
use crate::{Answer, Case, run_group};

const QUEUE_MAX: usize = 64 * 1024;

/// The `herald_client_disconnects_total` samples with code 3008, summed.
async fn slow_disconnects(addr: SocketAddr) -> u64 {
    let metrics = http_at(addr, "GET", "/metrics", &[], b"").await.text();
    metrics
        .lines()
        .filter(|l| l.starts_with("herald_client_disconnects_total{") && l.contains("code=\"3008\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn never_reads(addr: SocketAddr) -> Answer {
    // A small receive buffer, so the server's queue (not the kernel's buffers) fills up.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut slow = RawWs::handshake_on(stream, &upgrade_request(addr, WS_PATH, &[])).await;
    slow.send_json(&json!({"id": 1, "connect": {"token": token("slow")}})).await;
    slow.send_json(&json!({"id": 2, "subscribe": {"channel": "firehose"}})).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        replies.extend(slow.recv_json().await);
    }
    if replies[1] != json!({"id": 2, "subscribe": {}}) {
        return Answer::Other(format!("subscribe: {replies:?}"));
    }

    // Publish 16 KiB publications until the server gives up on the client (bounded in count
    // and time).
    let pad = "p".repeat(16 * 1024);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut published = 0;
    while slow_disconnects(addr).await == 0 {
        if Instant::now() > deadline || published >= 2000 {
            return Answer::Other(format!("still connected after {published} publications"));
        }
        for _ in 0..8 {
            let (status, body) = api_at(addr, "publish", json!({"channel": "firehose", "data": {"pad": pad}})).await;
            assert_eq!(status, 200, "{body}");
            published += 1;
        }
    }
    // The socket is closed; a close frame is there only if it fitted behind the data.
    let ending = slow.until_closed(Duration::from_secs(15)).await;
    match ending.close {
        _ if !ending.tcp_closed => Answer::Other(format!("disconnect counted but the socket is open: {ending:?}")),
        None => Answer::Disconnected(3008),
        Some((Some(3008), reason)) if reason == "slow" => Answer::Disconnected(3008),
        Some(close) => Answer::Other(format!("closed with {close:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer() {
    let queue = QUEUE_MAX.to_string();
    let cases = vec![Case::new("a subscriber that never reads", never_reads, Answer::Disconnected(3008))];
    run_group("slow_consumer", &[("HERALD_CLIENT_QUEUE_MAX_SIZE", queue.as_str())], cases, &[]).await;
}
