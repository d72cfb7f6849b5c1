//! The client against a tiny in-test WebSocket server (tokio-tungstenite `accept_hdr_async`)
//! that speaks just enough of the protocol: it does not depend on the Herald server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use herald_proto::{
    ClientInfo, HistoryResult, Message as PushMessage, PresenceResult, PresenceStatsResult, Publication, PublishResult,
    RefreshResult, RpcResult, SubRefreshResult, UnsubscribeResult, decode_commands, encode_batch,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::*;

/// What the test server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Command ids in arrival order (0 for pongs and sends).
    ids: Vec<u32>,
    /// The `Sec-WebSocket-Protocol` request header, if any.
    protocols: Vec<Option<String>>,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/connection/websocket", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let shared = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream, shared.clone()));
        }
    });
    Server { url, seen }
}

fn opts(server: &Server, encoding: Encoding) -> ClientOptions {
    ClientOptions { url: server.url.clone(), encoding, token: "tok".into(), ..ClientOptions::default() }
}

fn pub_push(channel: &str, data: Bytes, offset: u64) -> Reply {
    Reply::push(Push {
        channel: channel.into(),
        publication: Some(Publication { data, offset, ..Default::default() }),
        ..Default::default()
    })
}

fn message_push(data: Value) -> Reply {
    Reply::push(Push { message: Some(PushMessage { data: Bytes::from(data.to_string()) }), ..Default::default() })
}

async fn handle(stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let peer = stream.peer_addr().unwrap();
    let offered = Arc::new(Mutex::new(None::<String>));
    let offered_cb = offered.clone();
    // The callback's error type is fixed by tungstenite.
    #[allow(clippy::result_large_err)]
    let callback = move |req: &Request, mut resp: Response| {
        let header = req.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().unwrap().to_owned());
        if header.as_deref().is_some_and(|h| h.split(',').any(|p| p.trim() == PROTOBUF_SUBPROTOCOL)) {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOBUF_SUBPROTOCOL));
        }
        *offered_cb.lock().unwrap() = header;
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback).await.unwrap();
    let protocol = offered.lock().unwrap().clone();
    seen.lock().unwrap().protocols.push(protocol.clone());
    let encoding = if protocol.is_some() { Encoding::Protobuf } else { Encoding::Json };

    while let Some(Ok(msg)) = ws.next().await {
        let data = match msg {
            Message::Text(t) => Bytes::from(t),
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let cmds = decode_commands(encoding, data, 100).unwrap();
        let mut out: Vec<Reply> = Vec::new();
        for cmd in cmds {
            seen.lock().unwrap().ids.push(cmd.id);
            let id = cmd.id;
            let ok = |r: Reply| Reply { id, ..r };
            if let Some(c) = cmd.connect {
                out.push(ok(Reply {
                    connect: Some(ConnectResult {
                        client: "c-test".into(),
                        version: protocol.clone().unwrap_or_else(|| "none".into()),
                        ping: 25,
                        pong: true,
                        data: Bytes::from(
                            json!({"peer": peer.ip().to_string(), "token": c.token, "name": c.name}).to_string(),
                        ),
                        ..Default::default()
                    }),
                    ..Default::default()
                }));
            } else if let Some(s) = cmd.subscribe {
                if s.channel == "forbidden" {
                    out.push(Reply::error(id, herald_proto::codes::ERROR_PERMISSION_DENIED.into()));
                    continue;
                }
                out.push(ok(Reply {
                    subscribe: Some(SubscribeResult {
                        recoverable: true,
                        positioned: true,
                        epoch: "e1".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }));
                // A publication right behind the reply, in the same frame.
                out.push(pub_push(&s.channel, Bytes::from(json!({"welcome": s.channel}).to_string()), 1));
            } else if let Some(p) = cmd.publish {
                out.push(pub_push(&p.channel, p.data.clone(), 2));
                out.push(ok(Reply { publish: Some(PublishResult {}), ..Default::default() }));
                out.push(pub_push(&p.channel, p.data, 3));
            } else if cmd.unsubscribe.is_some() {
                out.push(ok(Reply { unsubscribe: Some(UnsubscribeResult {}), ..Default::default() }));
            } else if cmd.presence.is_some() {
                let mut presence = BTreeMap::new();
                presence.insert(
                    "c-test".into(),
                    ClientInfo { user: "u".into(), client: "c-test".into(), ..Default::default() },
                );
                out.push(ok(Reply { presence: Some(PresenceResult { presence }), ..Default::default() }));
            } else if cmd.presence_stats.is_some() {
                out.push(ok(Reply {
                    presence_stats: Some(PresenceStatsResult { num_clients: 1, num_users: 1 }),
                    ..Default::default()
                }));
            } else if let Some(h) = cmd.history {
                let publications = (1..=h.limit.max(0) as u64)
                    .map(|o| Publication { data: Bytes::from(o.to_string()), offset: o, ..Default::default() })
                    .collect();
                out.push(ok(Reply {
                    history: Some(HistoryResult { publications, epoch: "e1".into(), offset: h.limit.max(0) as u64 }),
                    ..Default::default()
                }));
            } else if let Some(r) = cmd.refresh {
                out.push(ok(Reply {
                    refresh: Some(RefreshResult { expires: r.token == "tok2", ttl: 60, ..Default::default() }),
                    ..Default::default()
                }));
            } else if cmd.sub_refresh.is_some() {
                out.push(ok(Reply {
                    sub_refresh: Some(SubRefreshResult { expires: true, ttl: 30 }),
                    ..Default::default()
                }));
            } else if let Some(s) = cmd.send {
                out.push(Reply::push(Push { message: Some(PushMessage { data: s.data }), ..Default::default() }));
            } else if let Some(r) = cmd.rpc {
                match r.method.as_str() {
                    "whoami" => out.push(ok(Reply {
                        rpc: Some(RpcResult { data: Bytes::from(json!({"id": id}).to_string()) }),
                        ..Default::default()
                    })),
                    "echo" => out.push(ok(Reply { rpc: Some(RpcResult { data: r.data }), ..Default::default() })),
                    "silent" => {}
                    "late" => {
                        out.push(Reply { id: id + 1000, rpc: Some(RpcResult::default()), ..Default::default() });
                        out.push(ok(Reply {
                            rpc: Some(RpcResult { data: Bytes::from_static(b"1") }),
                            ..Default::default()
                        }));
                    }
                    "no-result" => out.push(ok(Reply::default())),
                    "ping" => {
                        // A ping in its own frame, then the reply.
                        send(&mut ws, encoding, &[Reply::default()]).await;
                        out.push(ok(Reply { rpc: Some(RpcResult::default()), ..Default::default() }));
                    }
                    "close" => {
                        let frame = CloseFrame { code: CloseCode::from(3501), reason: "bad request".into() };
                        let _ = ws.close(Some(frame)).await;
                        while let Some(Ok(_)) = ws.next().await {}
                        return;
                    }
                    "drop" => return,
                    "empty-frame" => {
                        let msg = match encoding {
                            Encoding::Json => Message::text(""),
                            Encoding::Protobuf => Message::binary(Bytes::new()),
                        };
                        ws.send(msg).await.unwrap();
                    }
                    "wrong-opcode" => {
                        let msg = match encoding {
                            Encoding::Json => Message::binary(Bytes::from_static(b"{}")),
                            Encoding::Protobuf => Message::text("{}"),
                        };
                        ws.send(msg).await.unwrap();
                    }
                    _ => out.push(Reply::error(id, herald_proto::codes::ERROR_METHOD_NOT_FOUND.into())),
                }
            } else if cmd.is_pong() {
                out.push(message_push(json!({"pong": true})));
            }
        }
        if !out.is_empty() {
            send(&mut ws, encoding, &out).await;
        }
    }
}

async fn send(ws: &mut WebSocketStream<TcpStream>, encoding: Encoding, replies: &[Reply]) {
    let mut buf = Vec::new();
    encode_batch(encoding, replies, &mut buf).unwrap();
    let msg = match encoding {
        Encoding::Json => Message::text(String::from_utf8(buf).unwrap()),
        Encoding::Protobuf => Message::binary(buf),
    };
    ws.send(msg).await.unwrap();
}

fn json_of(data: &[u8]) -> Value {
    serde_json::from_slice(data).unwrap()
}

const BOTH: [Encoding; 2] = [Encoding::Json, Encoding::Protobuf];

#[tokio::test]
async fn connect_and_subscribe_in_both_encodings() {
    let server = start().await;
    for encoding in BOTH {
        let (mut client, connected) = Client::connect(&opts(&server, encoding)).await.unwrap();
        assert_eq!(client.encoding(), encoding);
        assert_eq!(connected.client, "c-test");
        assert_eq!((connected.ping, connected.pong), (25, true));
        let expected_protocol = match encoding {
            Encoding::Json => "none",
            Encoding::Protobuf => PROTOBUF_SUBPROTOCOL,
        };
        assert_eq!(connected.version, expected_protocol, "subprotocol negotiated");
        let data = json_of(&connected.data);
        assert_eq!((data["token"].as_str(), data["name"].as_str()), (Some("tok"), Some("herald-client")));

        let sub = client.subscribe(SubscribeRequest { channel: "news".into(), ..Default::default() }).await.unwrap();
        assert!(sub.recoverable && sub.positioned);
        assert_eq!(sub.epoch, "e1");
        // The publication that shared the reply's frame was queued, not lost.
        assert_eq!(client.queued_pushes(), 1);
        let push = client.next_push().await.unwrap();
        assert_eq!(push.channel, "news");
        let publication = push.publication.unwrap();
        assert_eq!((json_of(&publication.data), publication.offset), (json!({"welcome": "news"}), 1));
        assert_eq!(client.next_push_timeout(Duration::from_millis(50)).await.unwrap(), None);
        client.close().await;
    }
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.protocols, vec![None, Some(PROTOBUF_SUBPROTOCOL.to_owned())]);
}

#[tokio::test]
async fn ids_start_at_one_and_increase() {
    let server = start().await;
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Json)).await.unwrap();
    assert_eq!(client.next_id(), 2);
    for want in 2..6u32 {
        let r = client.rpc("whoami", Bytes::new()).await.unwrap();
        assert_eq!(json_of(&r.data), json!({"id": want}));
    }
    client.send(Bytes::from_static(b"{}")).await.unwrap();
    client.next_push().await.unwrap();
    client.close().await;
    assert_eq!(server.seen.lock().unwrap().ids, vec![1, 2, 3, 4, 5, 0]);
}

#[tokio::test]
async fn typed_methods_return_their_results() {
    let server = start().await;
    for encoding in BOTH {
        let (mut client, _) = Client::connect(&opts(&server, encoding)).await.unwrap();

        let presence = client.presence("news").await.unwrap();
        assert_eq!(presence.presence["c-test"].user, "u");
        assert_eq!(client.presence_stats("news").await.unwrap(), PresenceStatsResult { num_clients: 1, num_users: 1 });
        let history = client.history(HistoryRequest { channel: "news".into(), limit: 3, ..Default::default() }).await;
        let history = history.unwrap();
        assert_eq!(history.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!((history.epoch.as_str(), history.offset), ("e1", 3));
        let refresh = client.refresh("tok2").await.unwrap();
        assert_eq!((refresh.expires, refresh.ttl), (true, 60));
        assert_eq!(client.sub_refresh("news", "t").await.unwrap(), SubRefreshResult { expires: true, ttl: 30 });
        client.unsubscribe("news").await.unwrap();
        let echoed = client.rpc("echo", Bytes::from_static(br#"{"q":[1,2]}"#)).await.unwrap();
        assert_eq!(&echoed.data[..], br#"{"q":[1,2]}"#);

        // Publish: one push before the reply and one after, both queued in order.
        client.publish("news", Bytes::from_static(br#"{"text":"hi"}"#)).await.unwrap();
        let offsets: Vec<u64> = [client.next_push().await.unwrap(), client.next_push().await.unwrap()]
            .into_iter()
            .map(|p| p.publication.unwrap().offset)
            .collect();
        assert_eq!(offsets, vec![2, 3]);

        client.send(Bytes::from_static(b"[1]")).await.unwrap();
        let push = client.next_push().await.unwrap();
        assert_eq!(&push.message.unwrap().data[..], b"[1]");
        client.close().await;
    }
}

#[tokio::test]
async fn error_reply_and_missing_result() {
    let server = start().await;
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Protobuf)).await.unwrap();
    let err = client.subscribe(SubscribeRequest { channel: "forbidden".into(), ..Default::default() }).await;
    assert_eq!(err, Err(ClientError::Reply(herald_proto::codes::ERROR_PERMISSION_DENIED.into())));
    let err = client.rpc("nope", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Reply(ref e) if e.code == 104), "{err}");
    let err = client.rpc("no-result", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(ref m) if m.contains("rpc")), "{err}");
    // The connection is still fine.
    client.rpc("whoami", Bytes::new()).await.unwrap();
}

#[tokio::test]
async fn close_frame_becomes_closed_error() {
    let server = start().await;
    for encoding in BOTH {
        let (mut client, _) = Client::connect(&opts(&server, encoding)).await.unwrap();
        let want = ClientError::Closed { code: Some(3501), reason: "bad request".into() };
        assert_eq!(client.rpc("close", Bytes::new()).await.unwrap_err(), want);
        // Sticky: later calls report the same.
        assert_eq!(client.rpc("whoami", Bytes::new()).await.unwrap_err(), want);
        assert_eq!(client.next_push().await.unwrap_err(), want);
        assert_eq!(want.to_string(), "closed by server: 3501 bad request");
        client.close().await;
    }
}

#[tokio::test]
async fn dropped_socket_is_closed_without_code() {
    let server = start().await;
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Json)).await.unwrap();
    let err = client.rpc("drop", Bytes::new()).await.unwrap_err();
    assert!(matches!(err, ClientError::Closed { code: None, .. }), "{err:?}");
}

#[tokio::test]
async fn call_times_out_and_late_replies_are_dropped() {
    let server = start().await;
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Json)).await.unwrap();
    client.set_timeout(Duration::from_millis(200));
    assert_eq!(client.rpc("silent", Bytes::new()).await.unwrap_err(), ClientError::Timeout);
    client.set_timeout(DEFAULT_TIMEOUT);
    // A reply with an unknown id arrives first; it is skipped.
    let r = client.rpc("late", Bytes::new()).await.unwrap();
    assert_eq!(&r.data[..], b"1");
    assert_eq!(client.queued_pushes(), 0);
}

#[tokio::test]
async fn pings_are_answered_when_auto_pong() {
    let server = start().await;
    for encoding in BOTH {
        let (mut client, _) = Client::connect(&opts(&server, encoding)).await.unwrap();
        client.rpc("ping", Bytes::new()).await.unwrap();
        assert_eq!(client.pings_received(), 1);
        // The server answers our pong with a message push.
        let push = client.next_push_timeout(Duration::from_secs(5)).await.unwrap().expect("pong acknowledged");
        assert_eq!(json_of(&push.message.unwrap().data), json!({"pong": true}));
        assert!(server.seen.lock().unwrap().ids.ends_with(&[0]), "pong has no id");
    }
}

#[tokio::test]
async fn no_pong_without_auto_pong() {
    let server = start().await;
    let options = ClientOptions { auto_pong: false, ..opts(&server, Encoding::Json) };
    let (mut client, _) = Client::connect(&options).await.unwrap();
    client.rpc("ping", Bytes::new()).await.unwrap();
    assert_eq!(client.pings_received(), 1);
    assert_eq!(client.next_push_timeout(Duration::from_millis(200)).await.unwrap(), None);
    client.pong().await.unwrap();
    assert!(client.next_push_timeout(Duration::from_secs(5)).await.unwrap().is_some());
}

#[tokio::test]
async fn binds_local_address() {
    let server = start().await;
    let options = ClientOptions { local_addr: Some("127.0.0.2".parse().unwrap()), ..opts(&server, Encoding::Json) };
    let (_client, connected) = Client::connect(&options).await.unwrap();
    assert_eq!(json_of(&connected.data)["peer"], "127.0.0.2");
}

#[tokio::test]
async fn raw_messages() {
    let server = start().await;
    let mut client = Client::open(&opts(&server, Encoding::Json)).await.unwrap();
    client.send_raw(br#"{"id":7,"connect":{"name":"raw"}}"#.to_vec()).await.unwrap();
    let Message::Text(text) = client.recv_message().await.unwrap() else { panic!("text frame expected") };
    let reply = json_of(text.as_bytes());
    assert_eq!(reply["id"], 7);
    assert_eq!(reply["connect"]["client"], "c-test");
    assert!(client.send_raw(vec![0xff]).await.is_err(), "JSON connections send text only");

    let mut client = Client::open(&opts(&server, Encoding::Protobuf)).await.unwrap();
    client.send_raw(vec![0x00]).await.unwrap(); // a pong
    let Message::Binary(data) = client.recv_message().await.unwrap() else { panic!("binary frame expected") };
    let replies = decode_replies(Encoding::Protobuf, data).unwrap();
    assert!(replies[0].push.as_ref().unwrap().message.is_some());

    // recv_message hands out the close frame itself.
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Json)).await.unwrap();
    client.send_raw(br#"{"id":2,"rpc":{"method":"close"}}"#.to_vec()).await.unwrap();
    let Message::Close(Some(frame)) = client.recv_message().await.unwrap() else { panic!("close expected") };
    assert_eq!((u16::from(frame.code), frame.reason.as_str()), (3501, "bad request"));
}

#[tokio::test]
async fn bad_frames_are_protocol_errors() {
    let server = start().await;
    for encoding in BOTH {
        for method in ["empty-frame", "wrong-opcode"] {
            let (mut client, _) = Client::connect(&opts(&server, encoding)).await.unwrap();
            let err = client.rpc(method, Bytes::new()).await.unwrap_err();
            assert!(matches!(err, ClientError::Protocol(_)), "{encoding:?} {method}: {err:?}");
        }
    }
}

#[tokio::test]
async fn payloads_must_be_json_on_json_connections() {
    let server = start().await;
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Json)).await.unwrap();
    let err = client.publish("news", Bytes::from_static(&[0xff, 0x00])).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)));
    // Nothing was sent, no id used up; the connection still works.
    let r = client.rpc("whoami", Bytes::new()).await.unwrap();
    assert_eq!(json_of(&r.data), json!({"id": 2}));

    // Protobuf carries binary payloads.
    let (mut client, _) = Client::connect(&opts(&server, Encoding::Protobuf)).await.unwrap();
    client.publish("bin", Bytes::from_static(&[0xff, 0x00])).await.unwrap();
    assert_eq!(&client.next_push().await.unwrap().publication.unwrap().data[..], &[0xff, 0x00]);
}

#[tokio::test]
async fn connect_failures() {
    let bad = ClientOptions { url: "http://127.0.0.1:1/".into(), ..ClientOptions::default() };
    assert!(matches!(Client::open(&bad).await.unwrap_err(), ClientError::Protocol(_)));
    // Nothing listens on this port (bound, then released).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused =
        ClientOptions { url: format!("ws://127.0.0.1:{port}/connection/websocket"), ..ClientOptions::default() };
    assert!(matches!(Client::open(&refused).await.unwrap_err(), ClientError::Io(_)));
}
