//! End-to-end tests of the WebSocket transport against a real `herald` process: the handshake,
//! encodings, timers (stale, ping/pong), slow consumers and fan-out to many clients. Malformed
//! frames and commands, with their exact close codes, are in the bad-input suite
//! (`tests/bad_input/`).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_proto::{Command, ConnectRequest, Encoding, SubscribeRequest, decode_replies};
use serde_json::{Value, json};
use support::*;
use tokio::task::JoinSet;

fn connect_cmd(user: &str) -> Command {
    Command { id: 1, connect: Some(ConnectRequest { token: token(user), ..Default::default() }), ..Default::default() }
}

/// Decodes a binary (Protobuf) frame's replies.
fn proto_replies(frame: &Frame) -> Vec<herald_proto::Reply> {
    assert_eq!(frame.opcode, op::BINARY, "expected a binary frame, got {frame:?}");
    decode_replies(Encoding::Protobuf, Bytes::from(frame.payload.clone())).expect("Protobuf replies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_without_subprotocol_uses_json() {
    let herald = Herald::start(&[]);
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
    assert_eq!(ws.status, 101);
    assert_eq!(ws.header("Sec-WebSocket-Accept"), Some(WS_ACCEPT));
    assert!(ws.header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")), "{:?}", ws.headers);
    assert!(ws.header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")), "{:?}", ws.headers);
    assert_eq!(ws.header("Sec-WebSocket-Protocol"), None);

    ws.send_json(&json!({"id": 1, "connect": {"token": token("42")}})).await;
    let frame = ws.read_frame().await;
    assert_eq!(frame.opcode, op::TEXT);
    let reply: Value = serde_json::from_str(&frame.text()).unwrap();
    assert_eq!(reply["id"], 1);
    let connect = &reply["connect"];
    assert!(connect["client"].as_str().is_some_and(|c| !c.is_empty()), "{reply}");
    assert_eq!(connect["ping"], 25, "{reply}");
    assert_eq!(connect["pong"], true, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_protobuf_subprotocol_echoes_it_and_uses_binary_frames() {
    let herald = Herald::start(&[]);
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")]).await;
    assert_eq!(ws.header("Sec-WebSocket-Accept"), Some(WS_ACCEPT));
    assert_eq!(ws.header("Sec-WebSocket-Protocol"), Some("centrifuge-protobuf"));

    ws.send_frame(op::BINARY, &encode(Encoding::Protobuf, &connect_cmd("42"))).await;
    let replies = proto_replies(&ws.read_frame().await);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, 1);
    let connect = replies[0].connect.as_ref().expect("connect result");
    assert!(!connect.client.is_empty());
    assert_eq!((connect.ping, connect.pong), (25, true));

    // A subscribe and a publication also arrive as binary frames.
    let subscribe = Command {
        id: 2,
        subscribe: Some(SubscribeRequest { channel: "news".into(), ..Default::default() }),
        ..Default::default()
    };
    ws.send_frame(op::BINARY, &encode(Encoding::Protobuf, &subscribe)).await;
    let replies = proto_replies(&ws.read_frame().await);
    assert_eq!(replies[0].id, 2);
    assert!(replies[0].subscribe.is_some(), "{:?}", replies[0]);
    herald.publish("news", json!({"n": 1})).await;
    let replies = proto_replies(&ws.read_frame().await);
    let push = replies[0].push.as_ref().expect("push");
    assert_eq!(push.channel, "news");
    assert_eq!(&push.publication.as_ref().unwrap().data[..], br#"{"n":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_json_subprotocol_echoes_it() {
    let herald = Herald::start(&[]);
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[("Sec-WebSocket-Protocol", "centrifuge-json")]).await;
    assert_eq!(ws.header("Sec-WebSocket-Protocol"), Some("centrifuge-json"));
    ws.send_json(&json!({"id": 1, "connect": {"token": token("42")}})).await;
    let replies = ws.recv_json().await;
    assert_eq!(replies[0]["id"], 1);
    assert!(replies[0]["connect"]["client"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameter_selects_protobuf() {
    let herald = Herald::start(&[]);
    let mut ws = RawWs::open(herald.addr, &format!("{WS_PATH}?cf_protocol=protobuf"), &[]).await;
    assert_eq!(ws.header("Sec-WebSocket-Protocol"), None);
    ws.send_frame(op::BINARY, &encode(Encoding::Protobuf, &connect_cmd("42"))).await;
    let replies = proto_replies(&ws.read_frame().await);
    assert_eq!(replies[0].id, 1);
    assert!(replies[0].connect.as_ref().is_some_and(|c| !c.client.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upgrade_requests_get_http_errors() {
    let herald = Herald::start(&[]);
    let addr = herald.addr;
    let host = addr.to_string();

    // No Sec-WebSocket-Key.
    let req = format!(
        "GET {WS_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.json(), json!({"error": "invalid Sec-WebSocket-Key"}));

    // Unsupported version.
    let req = format!(
        "GET {WS_PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
    );
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!(resp.status, 426, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"));
    assert_eq!(resp.json(), json!({"error": "unsupported Sec-WebSocket-Version"}));

    // POST with upgrade headers.
    let req = String::from_utf8(upgrade_request(addr, WS_PATH, &[])).unwrap().replacen("GET", "POST", 1);
    let resp = raw_http(addr, req.as_bytes()).await;
    assert_eq!(resp.status, 405, "{resp:?}");
    assert_eq!(resp.header("Allow"), Some("GET"), "a 405 must name the allowed method: {resp:?}");
    assert!(resp.json()["error"].is_string());

    // A plain GET (no upgrade) on the WebSocket path.
    let resp = herald.http("GET", WS_PATH, &[], b"").await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.json()["error"].is_string());

    // Without client.allowed_origins, only the request's own host may be the Origin.
    let req = upgrade_request(addr, WS_PATH, &[("Origin", "http://evil.example")]);
    let resp = raw_http(addr, &req).await;
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(resp.json(), json!({"error": "origin not allowed"}));
    let same_host = format!("http://{host}");
    RawWs::open(addr, WS_PATH, &[("Origin", &same_host)]).await;
    // No Origin at all (non-browser clients) is fine too.
    RawWs::open(addr, WS_PATH, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_origins_are_enforced() {
    let herald = Herald::start(&[("HERALD_CLIENT_ALLOWED_ORIGINS", r#"["https://*.example.com"]"#)]);
    let addr = herald.addr;
    for origin in ["https://evil.com", "https://example.com.evil.com", &format!("http://{addr}")] {
        let resp = raw_http(addr, &upgrade_request(addr, WS_PATH, &[("Origin", origin)])).await;
        assert_eq!(resp.status, 403, "origin {origin}: {resp:?}");
        assert_eq!(resp.json(), json!({"error": "origin not allowed"}));
    }
    let ws = RawWs::open(addr, WS_PATH, &[("Origin", "https://app.example.com")]).await;
    assert_eq!(ws.header("Sec-WebSocket-Accept"), Some(WS_ACCEPT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_gets_431() {
    let herald = Herald::start(&[("HERALD_HTTP_SERVER_MAX_REQUEST_HEAD_SIZE", "2048")]);
    let addr = herald.addr;
    let filler = "x".repeat(4000);
    let resp = raw_http(addr, &upgrade_request(addr, WS_PATH, &[("X-Filler", &filler)])).await;
    assert_eq!(resp.status, 431, "{resp:?}");
    assert!(resp.json()["error"].is_string());
    // The same limit guards the API.
    let resp = herald.http("POST", "/api/info", &[("X-API-Key", API_KEY), ("X-Filler", &filler)], b"{}").await;
    assert_eq!(resp.status, 431, "{resp:?}");
    // Just under the limit is fine.
    let filler = "x".repeat(1500);
    RawWs::open(addr, WS_PATH, &[("X-Filler", &filler)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_subscribe_in_one_frame_are_answered_in_order() {
    let herald = Herald::start(&[]);
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
    let batch = format!(
        "{}\n{}",
        json!({"id": 1, "connect": {"token": token("42"), "name": "js"}}),
        json!({"id": 2, "subscribe": {"channel": "hist:sdk", "flag": 1}})
    );
    ws.send_text(&batch).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        replies.extend(ws.recv_json().await);
    }
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["id"], 1, "{replies:?}");
    assert!(replies[0]["connect"]["client"].is_string(), "{replies:?}");
    assert_eq!(replies[1]["id"], 2, "{replies:?}");
    assert!(replies[1]["subscribe"].is_object(), "{replies:?}");
    assert!(replies[1].get("error").is_none(), "{replies:?}");

    // The subscription is live.
    herald.publish("hist:sdk", json!({"n": 1})).await;
    let push = ws.recv_json().await;
    assert_eq!(push.len(), 1, "{push:?}");
    let publication = &push[0]["push"]["pub"];
    assert_eq!(push[0]["push"]["channel"], "hist:sdk", "{push:?}");
    assert_eq!((&publication["data"], &publication["offset"]), (&json!({"n": 1}), &json!(1)), "{push:?}");
    // The first publication of a stream carries its epoch.
    assert!(publication["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{push:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pipelined_with_the_handshake_are_processed() {
    let herald = Herald::start(&[]);
    let mut bytes = upgrade_request(herald.addr, WS_PATH, &[]);
    bytes.extend(client_frame(
        true,
        op::TEXT,
        json!({"id": 1, "connect": {"token": token("42")}}).to_string().as_bytes(),
        true,
    ));
    bytes.extend(client_frame(
        true,
        op::TEXT,
        json!({"id": 2, "subscribe": {"channel": "news"}}).to_string().as_bytes(),
        true,
    ));
    let mut ws = RawWs::handshake(herald.addr, &bytes).await;
    assert_eq!(ws.status, 101);
    let mut replies = Vec::new();
    while replies.len() < 2 {
        replies.extend(ws.recv_json().await);
    }
    assert_eq!(replies[0]["id"], 1, "{replies:?}");
    assert!(replies[0]["connect"]["client"].is_string(), "{replies:?}");
    assert_eq!(replies[1], json!({"id": 2, "subscribe": {}}));
}

/// Collects `n` replies (skipping pushes), failing on a close or a timeout.
async fn replies_until(ws: &mut RawWs, n: usize) -> Vec<Value> {
    let mut replies = Vec::new();
    while replies.len() < n {
        let frame = ws.read_frame().await;
        assert_ne!(frame.opcode, op::CLOSE, "closed after {} replies: {:?}", replies.len(), frame.close());
        if frame.opcode != op::TEXT {
            continue;
        }
        replies.extend(
            frame
                .text()
                .split('\n')
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    replies
}

/// Subscribe / unsubscribe pairs, one command per message, all in one buffer.
fn pipelined_messages(count: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for id in 2..2 + count {
        let cmd = if id % 2 == 0 {
            json!({"id": id, "subscribe": {"channel": "pipelined"}})
        } else {
            json!({"id": id, "unsubscribe": {"channel": "pipelined"}})
        };
        bytes.extend(client_frame(true, op::TEXT, cmd.to_string().as_bytes(), true));
    }
    bytes
}

/// `client.max_commands_per_frame` counts the commands of one message: many one-command
/// messages arriving in one read are all answered, in order, whatever their number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelined_messages_in_one_write_are_all_answered() {
    let herald = Herald::start(&[]);
    // 300 (over the default limit of 256) and 3,000 (more than one 64 KiB read).
    for count in [300u32, 3000] {
        let mut ws = RawWs::connected(&herald, "pipeliner").await;
        ws.send_bytes(&pipelined_messages(count)).await;
        let replies = replies_until(&mut ws, count as usize).await;
        let ids: Vec<u64> = replies.iter().map(|r| r["id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (2..2 + count as u64).collect::<Vec<_>>(), "{count} messages: replies out of order");
        assert!(replies.iter().all(|r| r.get("error").is_none()), "{count} messages: an error reply");
        // Still open and usable.
        ws.send_json(&json!({"id": 1_000_000, "subscribe": {"channel": "after"}})).await;
        let after = replies_until(&mut ws, 1).await;
        assert_eq!(after[0]["id"], 1_000_000, "{after:?}");
    }
}

/// A message with one command too many still closes with 3501, also behind pipelined
/// messages (which are answered first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_over_max_commands_per_frame_closes_with_3501() {
    let herald = Herald::start(&[("HERALD_CLIENT_MAX_COMMANDS_PER_FRAME", "10")]);
    let mut ws = RawWs::connected(&herald, "pipeliner").await;
    let mut bytes = pipelined_messages(20);
    let over: Vec<String> =
        (100..111).map(|id| json!({"id": id, "subscribe": {"channel": format!("c{id}")}}).to_string()).collect();
    bytes.extend(client_frame(true, op::TEXT, over.join("\n").as_bytes(), true));
    ws.send_bytes(&bytes).await;
    let replies = replies_until(&mut ws, 20).await;
    assert_eq!(replies.last().unwrap()["id"], 21, "{replies:?}");
    let reason = ws.assert_closed_with(3501, "11 commands in one message, limit 10").await;
    assert_eq!(reason, "bad request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_never_connects_is_closed_as_stale() {
    let herald = Herald::start(&[("HERALD_CLIENT_STALE_CLOSE_DELAY", "1s")]);
    // Connections opened at different points of the server's one-second timer ticks: none may
    // be closed before the full delay.
    let mut stale = JoinSet::new();
    for i in 0..4u64 {
        let addr = herald.addr;
        stale.spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 250)).await;
            let opened = Instant::now();
            let mut ws = RawWs::open(addr, WS_PATH, &[]).await;
            let reason = ws.assert_closed_with(3502, "stale connection").await;
            (reason, opened.elapsed())
        });
    }
    while let Some(closed) = stale.join_next().await {
        let (reason, elapsed) = closed.unwrap();
        assert_eq!(reason, "stale");
        assert!(elapsed >= Duration::from_millis(950), "closed before stale_close_delay: after {elapsed:?}");
        assert!(elapsed < Duration::from_secs(4), "closed too late: after {elapsed:?}");
    }

    // A client that connects in time is not closed as stale.
    let mut ws = RawWs::connected(&herald, "42").await;
    let ending = ws.until_closed(Duration::from_millis(2500)).await;
    assert!(ending.close.is_none() && !ending.tcp_closed, "connected client was closed: {ending:?}");
}

const PING_ENV: &[(&str, &str)] = &[("HERALD_CLIENT_PING_INTERVAL", "2s"), ("HERALD_CLIENT_PONG_TIMEOUT", "1s")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_answer_pings_is_closed_with_no_pong() {
    let herald = Herald::start(PING_ENV);
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
    ws.send_json(&json!({"id": 1, "connect": {"token": token("42")}})).await;
    let replies = ws.recv_json().await;
    assert_eq!(replies[0]["connect"]["ping"], 2, "{replies:?}");
    assert_eq!(replies[0]["connect"]["pong"], true, "{replies:?}");

    let ping = ws.read_frame().await;
    let pinged = Instant::now();
    assert_eq!((ping.opcode, ping.text().as_str()), (op::TEXT, "{}"));
    let reason = ws.assert_closed_with(3012, "no pong").await;
    assert_eq!(reason, "no pong");
    let waited = pinged.elapsed();
    assert!(waited >= Duration::from_millis(500), "closed {waited:?} after the ping");
    assert!(waited < Duration::from_secs(4), "closed {waited:?} after the ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_answering_pings_stay_connected() {
    let herald = Herald::start(PING_ENV);
    let mut json_ws = RawWs::connected(&herald, "42").await;
    let mut proto_ws = RawWs::open(herald.addr, WS_PATH, &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")]).await;
    proto_ws.send_frame(op::BINARY, &encode(Encoding::Protobuf, &connect_cmd("43"))).await;
    assert!(proto_replies(&proto_ws.read_frame().await)[0].connect.is_some());

    let json_side = async {
        for _ in 0..3 {
            let ping = json_ws.read_frame().await;
            assert_eq!((ping.opcode, ping.text().as_str()), (op::TEXT, "{}"), "JSON ping");
            json_ws.send_text("{}").await;
        }
    };
    let proto_side = async {
        for _ in 0..3 {
            let ping = proto_ws.read_frame().await;
            // The empty Reply, length-prefixed: a single 0x00 byte.
            assert_eq!((ping.opcode, ping.payload.as_slice()), (op::BINARY, &[0u8][..]), "Protobuf ping");
            proto_ws.send_frame(op::BINARY, &[0]).await;
        }
    };
    tokio::join!(json_side, proto_side);
    assert_eq!(herald.num_clients().await, 2);

    // Still connected and working after three ping intervals.
    json_ws.send_json(&json!({"id": 2, "subscribe": {"channel": "news"}})).await;
    assert_eq!(recv_skipping_pings(&mut json_ws).await, vec![json!({"id": 2, "subscribe": {}})]);
    herald.publish("news", json!({"alive": true})).await;
    assert_eq!(
        recv_skipping_pings(&mut json_ws).await,
        vec![json!({"push": {"channel": "news", "pub": {"data": {"alive": true}}}})]
    );
}

/// The next JSON frame that is not a ping (pings are answered).
async fn recv_skipping_pings(ws: &mut RawWs) -> Vec<Value> {
    loop {
        let replies = ws.recv_json().await;
        if replies != vec![json!({})] {
            return replies;
        }
        ws.send_text("{}").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_disconnected_while_a_reader_gets_everything() {
    let herald = Herald::start(&[("HERALD_CLIENT_QUEUE_MAX_SIZE", "65536")]);

    // The slow client: a small receive buffer, subscribes, then never reads again.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(herald.addr).await.unwrap();
    let mut slow = RawWs::handshake_on(stream, &upgrade_request(herald.addr, WS_PATH, &[])).await;
    assert_eq!(slow.status, 101);
    slow.send_json(&json!({"id": 1, "connect": {"token": token("slow")}})).await;
    slow.send_json(&json!({"id": 2, "subscribe": {"channel": "firehose"}})).await;
    let mut replies = Vec::new();
    while replies.len() < 2 {
        replies.extend(slow.recv_json().await);
    }
    assert_eq!(replies[1], json!({"id": 2, "subscribe": {}}));

    // The reader collects sequence numbers until the final marker.
    let (mut fast, _) = herald.subscriber("fast", "firehose").await;
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        loop {
            let (data, _) = next_publication(&mut fast, "firehose").await;
            if data["done"] == true {
                return (seqs, fast);
            }
            seqs.push(data["seq"].as_u64().unwrap());
        }
    });

    let pad = "p".repeat(16 * 1024);
    let mut published = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        herald.publish("firehose", json!({"seq": published, "pad": pad})).await;
        published += 1;
        if published.is_multiple_of(8) && herald.num_clients().await == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "slow client still connected after {published} publications");
    }
    herald.publish("firehose", json!({"done": true})).await;
    let (seqs, _fast) = tokio::time::timeout(Duration::from_secs(30), reader).await.expect("reader finishes").unwrap();
    assert_eq!(seqs, (0..published).collect::<Vec<_>>(), "the reading client lost or reordered publications");

    // The server closed the slow client's socket (a 3008 close frame may not fit behind the data).
    let ending = slow.until_closed(Duration::from_secs(15)).await;
    assert!(ending.tcp_closed, "slow client's connection still open: {ending:?}");
    if let Some((code, reason)) = &ending.close {
        assert_eq!((*code, reason.as_str()), (Some(3008), "slow"));
    }
    assert!((ending.data_frames as u64) < published, "the slow client cannot have received everything");
    let metrics = herald.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with("herald_client_disconnects_total{") && l.contains("code=\"3008\"")),
        "no 3008 disconnect in metrics:\n{metrics}"
    );
    assert_eq!(herald.num_clients().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_receive_every_publication_in_order() {
    const CLIENTS: usize = 200;
    const PUBLICATIONS: u64 = 50;
    let herald = Arc::new(Herald::start(&[("HERALD_LOG_LEVEL", "info")]));

    let mut connecting = JoinSet::new();
    for i in 0..CLIENTS {
        let herald = herald.clone();
        connecting.spawn(async move { herald.subscriber(&format!("user{i}"), "hist:fanout").await.0 });
    }
    let mut clients = Vec::with_capacity(CLIENTS);
    while let Some(client) = connecting.join_next().await {
        clients.push(client.unwrap());
    }
    assert_eq!(herald.num_clients().await, CLIENTS as u64);

    let mut readers = JoinSet::new();
    for mut client in clients {
        readers.spawn(async move {
            let mut got = Vec::with_capacity(PUBLICATIONS as usize);
            for _ in 0..PUBLICATIONS {
                let (data, offset) = next_publication(&mut client, "hist:fanout").await;
                got.push((data["seq"].as_u64().unwrap(), offset));
            }
            // Nothing more (no duplicates) once the marker is seen.
            let (data, _) = next_publication(&mut client, "hist:fanout").await;
            assert_eq!(data, json!({"done": true}));
            got
        });
    }
    for seq in 0..PUBLICATIONS {
        let result = herald.publish("hist:fanout", json!({"seq": seq})).await;
        assert_eq!(result["offset"], seq + 1, "{result}");
    }
    herald.publish("hist:fanout", json!({"done": true})).await;

    let expected: Vec<(u64, u64)> = (0..PUBLICATIONS).map(|s| (s, s + 1)).collect();
    let mut finished = 0;
    while let Some(got) = readers.join_next().await {
        assert_eq!(got.unwrap(), expected);
        finished += 1;
    }
    assert_eq!(finished, CLIENTS);
}

/// Publications reach subscribers spread over several worker threads (each worker accepts its
/// own share of the connections), complete and in order, under both schedulers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_across_worker_threads_is_complete_and_ordered() {
    const SUBSCRIBERS: usize = 40;
    const PUBLICATIONS: u64 = 30;
    for scheduler in ["thread_per_core", "work_stealing"] {
        let herald = Herald::start(&[("HERALD_RUNTIME_WORKER_THREADS", "4"), ("HERALD_RUNTIME_SCHEDULER", scheduler)]);
        let mut clients = Vec::new();
        for i in 0..SUBSCRIBERS {
            clients.push(herald.subscriber(&format!("u{i}"), "hist:workers").await.0);
        }
        let mut readers = JoinSet::new();
        for mut client in clients {
            readers.spawn(async move {
                let mut offsets = Vec::new();
                for _ in 0..PUBLICATIONS {
                    let (data, offset) = next_publication(&mut client, "hist:workers").await;
                    assert_eq!(data["n"].as_u64(), Some(offset), "payload and offset agree");
                    offsets.push(offset);
                }
                (offsets, client)
            });
        }
        for n in 1..=PUBLICATIONS {
            herald.publish("hist:workers", json!({ "n": n })).await;
        }
        let mut done = Vec::new();
        while let Some(joined) = readers.join_next().await {
            let (offsets, client) = joined.unwrap();
            done.push(client);
            assert_eq!(offsets, (1..=PUBLICATIONS).collect::<Vec<_>>(), "{scheduler}: every publication, in order");
        }
        assert_eq!(herald.num_clients().await, SUBSCRIBERS as u64, "{scheduler}");
        if scheduler == "thread_per_core" {
            // The kernel spread the connections over the workers' sockets.
            let metrics = herald.metrics().await;
            let per_worker: Vec<u64> = (0..4)
                .map(|i| {
                    let line = format!("herald_worker_connections{{worker=\"{i}\"}} ");
                    let value = metrics.lines().find_map(|l| l.strip_prefix(line.as_str()));
                    value.unwrap_or_else(|| panic!("no {line} in {metrics}")).trim().parse().unwrap()
                })
                .collect();
            assert_eq!(per_worker.iter().sum::<u64>(), SUBSCRIBERS as u64, "{per_worker:?}");
            assert!(per_worker.iter().filter(|&&n| n > 0).count() >= 2, "all on one worker: {per_worker:?}");
        }
    }
}
