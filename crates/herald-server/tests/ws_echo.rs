//! End-to-end tests of the test-only WebSocket echo endpoint
//! (`websocket.echo_endpoint_for_conformance_tests`) that the Autobahn suite runs against:
//! off by default, and when set, an echo through the real frame codec and transport.

mod support;

use std::time::Duration;

use support::*;

const ECHO: &str = "/debug/ws-echo";

fn echo_herald() -> Herald {
    Herald::start(&[("HERALD_WEBSOCKET_ECHO_ENDPOINT_FOR_CONFORMANCE_TESTS", ECHO)])
}

#[tokio::test]
async fn echo_endpoint_is_off_by_default() {
    let herald = Herald::start(&[]);
    let ws = RawWs::handshake(herald.addr, &upgrade_request(herald.addr, ECHO, &[])).await;
    assert_eq!(ws.status, 404);
}

#[tokio::test]
async fn echoes_text_binary_and_reassembled_fragments_and_answers_pings() {
    let herald = echo_herald();
    assert!(herald.logs().contains("websocket.echo_endpoint_for_conformance_tests is set"), "warned at start");
    let mut ws = RawWs::open(herald.addr, ECHO, &[]).await;

    ws.send_text("hello").await;
    let frame = ws.read_frame().await;
    assert_eq!((frame.fin, frame.opcode, frame.text()), (true, op::TEXT, "hello".to_owned()));

    let big: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    ws.send_frame(op::BINARY, &big).await;
    let frame = ws.read_frame().await;
    assert_eq!((frame.opcode, frame.payload.len()), (op::BINARY, big.len()));
    assert_eq!(frame.payload, big);

    // A ping between fragments is answered at once; the message comes back whole.
    let mut bytes = client_frame(false, op::TEXT, "frag".as_bytes(), true);
    bytes.extend(client_frame(true, op::PING, b"p1", true));
    bytes.extend(client_frame(false, op::CONTINUATION, "men".as_bytes(), true));
    bytes.extend(client_frame(true, op::CONTINUATION, "ted ✓".as_bytes(), true));
    ws.send_bytes(&bytes).await;
    let pong = ws.read_frame().await;
    assert_eq!((pong.opcode, pong.payload.as_slice()), (op::PONG, &b"p1"[..]));
    let frame = ws.read_frame().await;
    assert_eq!((frame.fin, frame.opcode, frame.text()), (true, op::TEXT, "fragmented ✓".to_owned()));

    ws.send_frame(op::CLOSE, &1000u16.to_be_bytes()).await;
    let ending = ws.until_closed(WAIT).await;
    assert_eq!(ending.close, Some((Some(1000), String::new())));
    assert!(ending.tcp_closed);

    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_ws_echo_connections_total 1"), "{metrics}");
}

/// RFC 6455 §5.5.1: a close frame without a code gets a close frame back (an empty one).
#[tokio::test]
async fn empty_close_frame_is_answered() {
    let herald = echo_herald();
    let mut ws = RawWs::open(herald.addr, ECHO, &[]).await;
    ws.send_frame(op::CLOSE, b"").await;
    let ending = ws.until_closed(WAIT).await;
    assert_eq!(ending.close, Some((None, String::new())));
    assert!(ending.tcp_closed);
}

#[tokio::test]
async fn framing_errors_close_with_their_codes_after_earlier_echoes() {
    let herald = echo_herald();
    let mut ws = RawWs::open(herald.addr, ECHO, &[]).await;
    let mut bytes = client_frame(true, op::TEXT, b"before", true);
    bytes.extend(client_frame(true, op::TEXT, &[0xce, 0xba, 0xff], true));
    ws.send_bytes(&bytes).await;
    let frame = ws.read_frame_within(Duration::from_secs(10)).await.expect("echo before the error");
    assert_eq!(frame.text(), "before");
    let reason = ws.assert_closed_with(1007, "invalid UTF-8").await;
    assert_eq!(reason, "text message is not UTF-8");
}
