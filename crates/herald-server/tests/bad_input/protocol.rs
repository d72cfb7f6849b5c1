//! Client protocol cases: malformed and out-of-order commands, tokens, command counts per
//! message, channel rules, permissions, and Protobuf garbage.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::support::*;
use crate::{Answer, Case, Conn, Observed, close, next_replies, open, run_group, text_frames, ws};

const MAX_COMMANDS: usize = 256;
const CHANNEL_LIMIT: usize = 4;

fn text(s: &str) -> Vec<u8> {
    client_frame(true, op::TEXT, s.as_bytes(), true)
}

fn error(id: u64, code: u32, message: &str) -> Value {
    json!({"id": id, "error": {"code": code, "message": message}})
}

fn signed(claims: Value) -> String {
    herald_auth::sign_hmac(&claims, SECRET, "HS256").expect("sign")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Subscribe (even ids) and unsubscribe (odd ids) to one channel: commands that always succeed
/// in turn.
fn sub_or_unsub(id: usize) -> Value {
    let method = if id.is_multiple_of(2) { "subscribe" } else { "unsubscribe" };
    json!({"id": id, method: {"channel": "pipelined"}})
}

fn sub_or_unsub_reply(id: usize) -> Value {
    let method = if id.is_multiple_of(2) { "subscribe" } else { "unsubscribe" };
    json!({"id": id, method: {}})
}

/// `count` one-command messages in one write: all answered, in order, none refused.
fn pipelined(count: usize) -> impl FnOnce(SocketAddr) -> Observed {
    move |addr| {
        Box::pin(async move {
            let mut ws = match open(addr, Conn::Json).await {
                Ok(ws) => ws,
                Err(answer) => return answer,
            };
            let commands: Vec<Value> = (0..count).map(|i| sub_or_unsub(i + 2)).collect();
            ws.send_bytes(&text_frames(&commands)).await;
            let mut answered = 0;
            while answered < count {
                match next_replies(&mut ws).await {
                    Ok(replies) => {
                        for reply in replies {
                            if reply != sub_or_unsub_reply(answered + 2) {
                                return Answer::Other(format!("reply {answered}: {reply}"));
                            }
                            answered += 1;
                        }
                    }
                    Err(end) => return Answer::Other(format!("after {answered} replies: {end:?}")),
                }
            }
            Answer::AllAnswered(answered)
        })
    }
}

/// One case: what to send on which connection, and the answer.
fn case(name: &str, conn: Conn, bytes: Vec<u8>, expect: Answer) -> Case {
    Case::new(name, ws(conn, bytes, &expect), expect)
}

fn cases() -> Vec<Case> {
    let bad_request = || close(3501, "bad request");
    let other_secret = herald_auth::sign_hmac(&json!({"sub": "1"}), "another-secret", "HS256").unwrap();
    let expired = signed(json!({"sub": "1", "exp": now() - 10}));
    let early = signed(json!({"sub": "1", "nbf": now() + 600, "exp": now() + 3600}));
    let connect = |token: &str| text(&json!({"id": 1, "connect": {"token": token}}).to_string());
    let subscribe = |channel: &str| text(&json!({"id": 2, "subscribe": {"channel": channel}}).to_string());
    let over: Vec<String> = (0..=MAX_COMMANDS).map(|i| sub_or_unsub(i + 2).to_string()).collect();
    let at_limit: Vec<String> = over[..MAX_COMMANDS].to_vec();
    let at_limit_replies: Vec<Value> = (0..MAX_COMMANDS).map(|i| sub_or_unsub_reply(i + 2)).collect();
    let failed_connect =
        |message: &str| Answer::RepliesThenClose(vec![error(1, 109, message)], 3501, "bad request".into());
    vec![
        case("invalid JSON as the first message", Conn::Fresh, text("not json"), bad_request()),
        case("invalid JSON after connect", Conn::Json, text(r#"{"id":2,"subscribe":"#), bad_request()),
        case("a JSON array instead of a command", Conn::Json, text("[1,2]"), bad_request()),
        case("a JSON number instead of a command", Conn::Json, text("42"), bad_request()),
        case("an unknown method", Conn::Json, text(r#"{"id":2,"fly":{"to":"moon"}}"#), bad_request()),
        case("a command with an id and no method", Conn::Json, text(r#"{"id":2}"#), bad_request()),
        case("a method with id 0", Conn::Json, text(r#"{"id":0,"subscribe":{"channel":"news"}}"#), bad_request()),
        case("a method without an id", Conn::Json, text(r#"{"subscribe":{"channel":"news"}}"#), bad_request()),
        case("a command before connect", Conn::Fresh, subscribe("news"), bad_request()),
        case("a second connect", Conn::Json, connect(&token("bad")), bad_request()),
        case("connect without a token", Conn::Fresh, text(r#"{"id":1,"connect":{}}"#), bad_request()),
        case("a malformed token", Conn::Fresh, connect("not.a.jwt"), close(3500, "invalid token")),
        case("a token signed with another secret", Conn::Fresh, connect(&other_secret), close(3500, "invalid token")),
        case("an expired token", Conn::Fresh, connect(&expired), failed_connect("token expired")),
        case("a token not yet valid (nbf)", Conn::Fresh, connect(&early), failed_connect("token not yet valid")),
        case(
            "257 commands in one message (client.max_commands_per_frame 256)",
            Conn::Json,
            text(&over.join("\n")),
            bad_request(),
        ),
        case("256 commands in one message", Conn::Json, text(&at_limit.join("\n")), Answer::Replies(at_limit_replies)),
        Case::new("300 one-command messages in one write", pipelined(300), Answer::AllAnswered(300)),
        case(
            "subscribe: a channel of 256 bytes",
            Conn::Json,
            subscribe(&"x".repeat(256)),
            Answer::Replies(vec![error(2, 107, "bad request")]),
        ),
        case(
            "subscribe: a channel with a NUL byte",
            Conn::Json,
            subscribe("hist:a\u{0}b"),
            Answer::Replies(vec![error(2, 107, "bad request")]),
        ),
        case(
            "subscribe: an unknown namespace",
            Conn::Json,
            subscribe("nope:x"),
            Answer::Replies(vec![error(2, 102, "unknown channel")]),
        ),
        case("subscribe: an empty channel", Conn::Json, subscribe(""), bad_request()),
        case(
            "subscribe: a private channel without a token",
            Conn::Json,
            subscribe("$secret"),
            Answer::Replies(vec![error(2, 103, "permission denied")]),
        ),
        case(
            "subscribe twice",
            Conn::Json,
            [subscribe("dup"), text(r#"{"id":3,"subscribe":{"channel":"dup"}}"#)].concat(),
            Answer::Replies(vec![json!({"id": 2, "subscribe": {}}), error(3, 105, "already subscribed")]),
        ),
        case(
            "publish without permission",
            Conn::Json,
            text(r#"{"id":2,"publish":{"channel":"news","data":{"x":1}}}"#),
            Answer::Replies(vec![error(2, 103, "permission denied")]),
        ),
        case(
            "history where it is not enabled",
            Conn::Json,
            text(r#"{"id":2,"history":{"channel":"news","limit":10}}"#),
            Answer::Replies(vec![error(2, 108, "not available")]),
        ),
        case(
            "Protobuf garbage (invalid varint)",
            Conn::Protobuf,
            client_frame(true, op::BINARY, &[0xFF; 11], true),
            bad_request(),
        ),
        case(
            "Protobuf garbage (truncated command)",
            Conn::Protobuf,
            client_frame(true, op::BINARY, &[0x10, 0x08, 0x01], true),
            bad_request(),
        ),
        case(
            "Protobuf garbage after connect",
            Conn::ProtobufConnected,
            client_frame(true, op::BINARY, &[0x05, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], true),
            bad_request(),
        ),
        case("a text frame on a Protobuf connection", Conn::Protobuf, text("{}"), bad_request()),
        case(
            "a method whose body has the wrong type",
            Conn::Json,
            text(r#"{"id":2,"subscribe":"news"}"#),
            bad_request(),
        ),
        case(
            "subscribe: a 1 MB channel (over websocket.message_size_limit)",
            Conn::Json,
            subscribe(&"x".repeat(1 << 20)),
            close(1009, "message too big"),
        ),
        case(
            "a ping command",
            Conn::Json,
            text(r#"{"id":2,"ping":{}}"#),
            Answer::Replies(vec![error(2, 108, "not available")]),
        ),
        case(
            "rpc without an RPC backend",
            Conn::Json,
            text(r#"{"id":2,"rpc":{"method":"m","data":{}}}"#),
            Answer::Replies(vec![error(2, 104, "method not found")]),
        ),
        case(
            "send without a message backend",
            Conn::Json,
            text(r#"{"send":{"data":{}}}"#),
            close(3508, "not available"),
        ),
        case("no connect within client.stale_close_delay", Conn::Fresh, Vec::new(), close(3502, "stale")),
        case(
            "a token whose expire_at is past",
            Conn::Fresh,
            connect(&signed(json!({"sub": "1", "exp": now() + 3600, "expire_at": now() - 10}))),
            Answer::RepliesThenClose(vec![error(1, 110, "expired")], 3501, "bad request".into()),
        ),
        case(
            "one subscription over client.channel_limit",
            Conn::Json,
            text(
                &(0..=CHANNEL_LIMIT)
                    .map(|i| json!({"id": i + 2, "subscribe": {"channel": format!("c{i}")}}).to_string())
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Answer::Replies(
                (0..CHANNEL_LIMIT)
                    .map(|i| json!({"id": i + 2, "subscribe": {}}))
                    .chain([error(CHANNEL_LIMIT as u64 + 2, 106, "limit exceeded")])
                    .collect(),
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol() {
    let metrics = [
        (r#"herald_channel_refused_total{source="client",reason="too_long"}"#, 1),
        (r#"herald_channel_refused_total{source="client",reason="nul"}"#, 1),
        (r#"herald_channel_refused_total{source="client",reason="unknown_namespace"}"#, 1),
        (r#"herald_channel_refused_total{source="client",reason="empty"}"#, 1),
        (r#"herald_client_errors_total{code="109"}"#, 2),
    ];
    let limit = CHANNEL_LIMIT.to_string();
    let env = [("HERALD_CLIENT_STALE_CLOSE_DELAY", "2s"), ("HERALD_CLIENT_CHANNEL_LIMIT", limit.as_str())];
    run_group("protocol", &env, cases(), &metrics).await;
}
