//! Process lifecycle against a real `herald`: graceful shutdown on SIGTERM/SIGINT.

mod support;

use std::time::{Duration, Instant};

use herald_client::ClientError;
use support::*;
use tokio::task::JoinSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_3001_spread_over_the_window_and_exits_0() {
    const CLIENTS: usize = 30;
    let window = Duration::from_secs(1);
    let timeout = Duration::from_secs(5);
    let mut herald = Herald::start(&[
        ("HERALD_SHUTDOWN_CLIENT_CLOSE_WINDOW", "1s"),
        ("HERALD_SHUTDOWN_TIMEOUT", "5s"),
        ("HERALD_LOG_LEVEL", "info"),
    ]);

    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(herald.subscriber(&format!("user{i}"), "news").await.0);
    }
    // One more that ignores everything: it neither reads its close frame nor closes its side.
    let _deaf = RawWs::connected(&herald, "deaf").await;
    assert_eq!(herald.num_clients().await, CLIENTS as u64 + 1);

    let mut closes = JoinSet::new();
    for mut client in clients {
        closes.spawn(async move {
            let result = tokio::time::timeout(Duration::from_secs(15), client.next_push()).await;
            (result, Instant::now())
        });
    }
    let signalled = Instant::now();
    herald.signal(libc::SIGTERM);

    let mut times = Vec::new();
    while let Some(joined) = closes.join_next().await {
        let (result, at) = joined.unwrap();
        match result {
            Ok(Err(ClientError::Closed { code: Some(3001), reason })) => assert_eq!(reason, "shutdown"),
            other => panic!("expected close 3001 \"shutdown\", got {other:?}"),
        }
        times.push(at.duration_since(signalled));
    }
    times.sort();
    let (first, last) = (times[0], times[times.len() - 1]);
    eprintln!("closes after SIGTERM: first {first:?}, last {last:?}");
    assert!(last - first >= window / 3, "closes not spread over the window: {first:?}..{last:?}");
    assert!(last <= window + Duration::from_millis(1500), "last close {last:?} after SIGTERM");

    let status = herald.wait_exit(timeout + Duration::from_secs(2)).await;
    let exited = signalled.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {exited:?} after SIGTERM"));
    eprintln!("exited {exited:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(exited <= timeout + Duration::from_secs(1), "exit took {exited:?}");
    wait_for("the final log line", WAIT, || async { herald.logs().contains("shutdown complete") }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_exits_promptly_on_sigint() {
    let mut herald = Herald::start(&[]);
    let signalled = Instant::now();
    herald.signal(libc::SIGINT);
    let status = herald.wait_exit(WAIT).await.expect("exits after SIGINT");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(3), "exit took {:?}", signalled.elapsed());
    // The port is released.
    assert!(tokio::net::TcpStream::connect(herald.addr).await.is_err(), "still accepting connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_does_not_hold_up_shutdown() {
    let mut herald =
        Herald::start(&[("HERALD_SHUTDOWN_CLIENT_CLOSE_WINDOW", "500ms"), ("HERALD_SHUTDOWN_TIMEOUT", "2s")]);
    // A client with a small receive buffer that stops reading while a lot is queued for it.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(herald.addr).await.unwrap();
    let mut stuck = RawWs::handshake_on(stream, &upgrade_request(herald.addr, WS_PATH, &[])).await;
    assert_eq!(stuck.status, 101);
    stuck.send_text(&serde_json::json!({"id": 1, "connect": {"token": token("stuck")}}).to_string()).await;
    stuck.send_text(r#"{"id":2,"subscribe":{"channel":"firehose"}}"#).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        replies.extend(stuck.recv_json().await);
    }
    let pad = "p".repeat(32 * 1024);
    for seq in 0..20 {
        herald.publish("firehose", serde_json::json!({"seq": seq, "pad": pad})).await;
    }
    assert_eq!(herald.num_clients().await, 1, "the stuck client must still be connected (queue under the limit)");

    let signalled = Instant::now();
    herald.signal(libc::SIGTERM);
    let status = herald.wait_exit(WAIT).await.expect("exits after SIGTERM");
    let exited = signalled.elapsed();
    eprintln!("exited {exited:?} after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(exited < Duration::from_secs(3), "exit took {exited:?} with shutdown.timeout 2s");
    let ending = stuck.until_closed(WAIT).await;
    assert!(ending.tcp_closed, "{ending:?}");
}
