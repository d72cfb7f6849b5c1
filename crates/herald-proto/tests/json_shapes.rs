//! Exact JSON shapes of the client protocol (reference §1.1, §2.4, §9), through the public API.
//!
//! The SDK reads snake_case keys directly, expects 64-bit integers as numbers, embeds `bytes`
//! payloads as raw JSON, and splits frames on `\n`. These tests pin those shapes byte for byte
//! wherever the key order is fixed by the struct order, and as JSON values otherwise.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_proto::codes::{ERROR_INTERNAL, ERROR_PERMISSION_DENIED, UNSUBSCRIBE_INSUFFICIENT};
use herald_proto::{
    ClientInfo, Command, Connect, ConnectRequest, ConnectResult, DecodeError, Disconnect, EncodeError, Encoding, Error,
    HistoryResult, Join, Method, PresenceResult, PresenceStatsResult, Publication, PublishResult, Push, RefreshResult,
    Reply, RpcResult, SubRefreshResult, SubscribeRequest, SubscribeResult, Unsubscribe, UnsubscribeResult,
    decode_commands, decode_replies, encode_batch, encode_command, encode_reply,
};
use serde_json::{Value, json};

fn encode(reply: &Reply) -> String {
    let mut out = Vec::new();
    encode_reply(Encoding::Json, reply, &mut out).expect("reply encodes");
    String::from_utf8(out).expect("JSON output is UTF-8")
}

fn decode(text: &str) -> Vec<Command> {
    decode_commands(Encoding::Json, Bytes::copy_from_slice(text.as_bytes()), 100).expect("commands decode")
}

fn decode_one(text: &str) -> Command {
    let mut cmds = decode(text);
    assert_eq!(cmds.len(), 1, "one command in {text:?}");
    cmds.remove(0)
}

fn publication(data: &'static str, offset: u64) -> Publication {
    Publication { data: Bytes::from_static(data.as_bytes()), offset, ..Default::default() }
}

fn pub_push(channel: &str, data: &'static str, offset: u64) -> Reply {
    Reply::push(Push { channel: channel.into(), publication: Some(publication(data, offset)), ..Default::default() })
}

// ---------------------------------------------------------------------------------------------
// Server → client shapes
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_reply_shape() {
    let reply = Reply {
        id: 1,
        connect: Some(ConnectResult {
            client: "c1".into(),
            version: "x".into(),
            ping: 25,
            pong: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(encode(&reply), r#"{"id":1,"connect":{"client":"c1","version":"x","ping":25,"pong":true}}"#);
}

#[test]
fn connect_reply_with_expiry_session_and_subs() {
    let mut subs = BTreeMap::new();
    subs.insert("#42".to_owned(), SubscribeResult { recoverable: true, ..Default::default() });
    let reply = Reply {
        id: 2,
        connect: Some(ConnectResult {
            client: "c".into(),
            expires: true,
            ttl: 60,
            data: Bytes::from_static(br#"{"k":"v"}"#),
            subs,
            session: "s".into(),
            node: "n".into(),
            time: 1_700_000_000_000,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        encode(&reply),
        concat!(
            r#"{"id":2,"connect":{"client":"c","expires":true,"ttl":60,"data":{"k":"v"},"#,
            r##""subs":{"#42":{"recoverable":true}},"session":"s","node":"n","time":1700000000000}}"##
        )
    );
}

#[test]
fn publication_push_shape() {
    assert_eq!(
        encode(&pub_push("news", r#"{"n":1}"#, 1)),
        r#"{"push":{"channel":"news","pub":{"data":{"n":1},"offset":1}}}"#
    );
    // No history: offset 0 is omitted.
    assert_eq!(
        encode(&pub_push("c", r#"{"text":"hi"}"#, 0)),
        r#"{"push":{"channel":"c","pub":{"data":{"text":"hi"}}}}"#
    );
}

#[test]
fn publication_with_info_tags_and_time() {
    let mut tags = BTreeMap::new();
    tags.insert("a".to_owned(), "b".to_owned());
    let reply = Reply::push(Push {
        channel: "chat".into(),
        publication: Some(Publication {
            data: Bytes::from_static(b"1"),
            info: Some(ClientInfo {
                user: "u1".into(),
                client: "c1".into(),
                conn_info: Bytes::from_static(br#"{"name":"A"}"#),
                chan_info: Bytes::new(),
            }),
            offset: 3,
            tags,
            time: 5,
            epoch: "e".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        encode(&reply),
        concat!(
            r#"{"push":{"channel":"chat","pub":{"data":1,"info":{"user":"u1","client":"c1","conn_info":{"name":"A"}},"#,
            r#""offset":3,"tags":{"a":"b"},"time":5,"epoch":"e"}}}"#
        )
    );
}

#[test]
fn ping_is_empty_object() {
    assert_eq!(encode(&Reply::default()), "{}");
}

#[test]
fn empty_results_are_written_as_empty_objects() {
    let cases: Vec<(Reply, &str)> = vec![
        (
            Reply { id: 5, unsubscribe: Some(UnsubscribeResult {}), ..Default::default() },
            r#"{"id":5,"unsubscribe":{}}"#,
        ),
        (Reply { id: 6, publish: Some(PublishResult {}), ..Default::default() }, r#"{"id":6,"publish":{}}"#),
        (Reply { id: 7, connect: Some(ConnectResult::default()), ..Default::default() }, r#"{"id":7,"connect":{}}"#),
        (
            Reply { id: 8, subscribe: Some(SubscribeResult::default()), ..Default::default() },
            r#"{"id":8,"subscribe":{}}"#,
        ),
        (Reply { id: 9, rpc: Some(RpcResult::default()), ..Default::default() }, r#"{"id":9,"rpc":{}}"#),
        (Reply { id: 10, refresh: Some(RefreshResult::default()), ..Default::default() }, r#"{"id":10,"refresh":{}}"#),
        (
            Reply { id: 11, sub_refresh: Some(SubRefreshResult::default()), ..Default::default() },
            r#"{"id":11,"sub_refresh":{}}"#,
        ),
    ];
    for (reply, want) in cases {
        assert_eq!(encode(&reply), want);
    }
}

#[test]
fn presence_always_has_presence_map() {
    let empty = Reply { id: 4, presence: Some(PresenceResult::default()), ..Default::default() };
    assert_eq!(encode(&empty), r#"{"id":4,"presence":{"presence":{}}}"#);

    let mut presence = BTreeMap::new();
    presence.insert(
        "c1".to_owned(),
        ClientInfo {
            user: "u1".into(),
            client: "c1".into(),
            conn_info: Bytes::new(),
            chan_info: Bytes::from_static(b"[1]"),
        },
    );
    presence.insert("c2".to_owned(), ClientInfo::default());
    let full = Reply { id: 5, presence: Some(PresenceResult { presence }), ..Default::default() };
    assert_eq!(
        encode(&full),
        concat!(
            r#"{"id":5,"presence":{"presence":{"c1":{"user":"u1","client":"c1","chan_info":[1]},"#,
            r#""c2":{"user":"","client":""}}}}"#
        )
    );
}

#[test]
fn presence_stats_always_has_both_counters() {
    let zero = Reply { id: 6, presence_stats: Some(PresenceStatsResult::default()), ..Default::default() };
    assert_eq!(encode(&zero), r#"{"id":6,"presence_stats":{"num_clients":0,"num_users":0}}"#);
    let some = Reply {
        id: 7,
        presence_stats: Some(PresenceStatsResult { num_clients: 3, num_users: 2 }),
        ..Default::default()
    };
    assert_eq!(encode(&some), r#"{"id":7,"presence_stats":{"num_clients":3,"num_users":2}}"#);
}

#[test]
fn history_always_has_publications_epoch_offset() {
    let empty = Reply { id: 8, history: Some(HistoryResult::default()), ..Default::default() };
    assert_eq!(encode(&empty), r#"{"id":8,"history":{"publications":[],"epoch":"","offset":0}}"#);
    let full = Reply {
        id: 9,
        history: Some(HistoryResult {
            publications: vec![publication(r#"{"n":1}"#, 1), publication(r#""s""#, 2)],
            epoch: "e1".into(),
            offset: 2,
        }),
        ..Default::default()
    };
    assert_eq!(
        encode(&full),
        r#"{"id":9,"history":{"publications":[{"data":{"n":1},"offset":1},{"data":"s","offset":2}],"epoch":"e1","offset":2}}"#
    );
}

#[test]
fn client_info_always_has_user_and_client() {
    let join = Reply::push(Push {
        channel: "c".into(),
        join: Some(Join { info: Some(ClientInfo::default()) }),
        ..Default::default()
    });
    assert_eq!(encode(&join), r#"{"push":{"channel":"c","join":{"info":{"user":"","client":""}}}}"#);
    let info = serde_json::to_string(&ClientInfo::default()).unwrap();
    assert_eq!(info, r#"{"user":"","client":""}"#);
}

#[test]
fn error_replies() {
    assert_eq!(
        encode(&Reply::error(3, ERROR_PERMISSION_DENIED.into())),
        r#"{"id":3,"error":{"code":103,"message":"permission denied"}}"#
    );
    assert_eq!(
        encode(&Reply::error(4, ERROR_INTERNAL.into())),
        r#"{"id":4,"error":{"code":100,"message":"internal server error","temporary":true}}"#
    );
    let custom = Error { code: 4000, message: String::new(), temporary: false };
    assert_eq!(encode(&Reply::error(5, custom)), r#"{"id":5,"error":{"code":4000,"message":""}}"#);
}

#[test]
fn subscribe_result_with_recovery_fields() {
    // Reference §9.1: the resubscribe reply after a reconnect.
    let reply = Reply {
        id: 4,
        subscribe: Some(SubscribeResult {
            recoverable: true,
            positioned: true,
            epoch: "e1".into(),
            offset: 2,
            recovered: true,
            was_recovering: true,
            publications: vec![publication(r#"{"n":3}"#, 3)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let text = encode(&reply);
    let got: Value = serde_json::from_str(&text).unwrap();
    let want: Value = serde_json::from_str(
        r#"{"id":4,"subscribe":{"recoverable":true,"positioned":true,"epoch":"e1","offset":2,"recovered":true,"was_recovering":true,"publications":[{"data":{"n":3},"offset":3}]}}"#,
    )
    .unwrap();
    assert_eq!(got, want);
    // Key order follows the field numbers.
    assert_eq!(
        text,
        r#"{"id":4,"subscribe":{"recoverable":true,"epoch":"e1","publications":[{"data":{"n":3},"offset":3}],"recovered":true,"offset":2,"positioned":true,"was_recovering":true}}"#
    );

    let expiring = Reply {
        id: 2,
        subscribe: Some(SubscribeResult {
            expires: true,
            ttl: 30,
            data: Bytes::from_static(br#""x""#),
            delta: true,
            id: 9,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(encode(&expiring), r#"{"id":2,"subscribe":{"expires":true,"ttl":30,"data":"x","delta":true,"id":9}}"#);
}

#[test]
fn other_push_shapes() {
    let unsub = Reply::push(Push {
        channel: "c".into(),
        unsubscribe: Some(Unsubscribe {
            code: UNSUBSCRIBE_INSUFFICIENT.code,
            reason: UNSUBSCRIBE_INSUFFICIENT.reason.into(),
        }),
        ..Default::default()
    });
    assert_eq!(encode(&unsub), r#"{"push":{"channel":"c","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#);

    let disconnect = Reply::push(Push {
        disconnect: Some(Disconnect { code: 3001, reason: "shutdown".into(), reconnect: false }),
        ..Default::default()
    });
    assert_eq!(encode(&disconnect), r#"{"push":{"disconnect":{"code":3001,"reason":"shutdown"}}}"#);

    let message = Reply::push(Push {
        message: Some(herald_proto::Message { data: Bytes::from_static(b"[1,2]") }),
        ..Default::default()
    });
    assert_eq!(encode(&message), r#"{"push":{"message":{"data":[1,2]}}}"#);

    // Unidirectional transports send bare pushes (reference §8.2).
    let mut subs = BTreeMap::new();
    subs.insert("#2694".to_owned(), SubscribeResult::default());
    let connect = Push {
        connect: Some(Connect {
            client: "c".into(),
            version: "v".into(),
            subs,
            ping: 25,
            session: "s".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_string(&connect).unwrap(),
        r##"{"connect":{"client":"c","version":"v","subs":{"#2694":{}},"ping":25,"session":"s"}}"##
    );
    assert_eq!(serde_json::to_string(&Push::default()).unwrap(), "{}");
}

#[test]
fn u64_values_are_json_numbers() {
    let text = encode(&pub_push("c", "{}", u64::MAX));
    assert_eq!(text, r#"{"push":{"channel":"c","pub":{"data":{},"offset":18446744073709551615}}}"#);
    let history = Reply {
        id: 1,
        history: Some(HistoryResult { publications: vec![], epoch: "e".into(), offset: 1 << 60 }),
        ..Default::default()
    };
    assert!(encode(&history).contains(r#""offset":1152921504606846976"#));
    let time = Reply::push(Push {
        id: -5,
        publication: Some(Publication { time: i64::MAX, ..Default::default() }),
        ..Default::default()
    });
    assert_eq!(encode(&time), r#"{"push":{"id":-5,"pub":{"time":9223372036854775807}}}"#);
}

#[test]
fn raw_data_embedded_as_json_values() {
    let cases = [
        (r#"{"n":1}"#, r#"{"n":1}"#),
        (r#""a string""#, r#""a string""#),
        ("42", "42"),
        ("-1.5e3", "-1.5e3"),
        ("[1,\"two\",{}]", "[1,\"two\",{}]"),
        ("true", "true"),
        ("null", "null"),
        // Escaped newlines inside strings are two characters, not a newline byte: kept.
        (r#"{"t":"a\nb"}"#, r#"{"t":"a\nb"}"#),
        // Inner whitespace is kept as is (no re-serialization).
        (r#"{ "a" : [ 1 , 2 ] }"#, r#"{ "a" : [ 1 , 2 ] }"#),
    ];
    for (data, embedded) in cases {
        let text = encode(&pub_push("c", data, 0));
        assert_eq!(text, format!(r#"{{"push":{{"channel":"c","pub":{{"data":{embedded}}}}}}}"#), "data {data}");
        // The result is itself valid JSON carrying the same value.
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["push"]["pub"]["data"], serde_json::from_str::<Value>(data).unwrap());
    }
}

#[test]
fn newlines_inside_raw_data_are_removed() {
    let data = "{\n  \"a\": 1,\n  \"b\": [\r\n    2\n  ]\n}\n";
    let text = encode(&pub_push("c", data, 0));
    assert!(!text.contains('\n'), "no raw newline may reach the frame: {text:?}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["push"]["pub"]["data"], json!({"a": 1, "b": [2]}));

    // The same holds for every raw field, e.g. conn_info in presence and connect data.
    let mut presence = BTreeMap::new();
    presence.insert(
        "c".to_owned(),
        ClientInfo {
            user: "u".into(),
            client: "c".into(),
            conn_info: Bytes::from_static(b"{\n\"x\":\n1}"),
            chan_info: Bytes::new(),
        },
    );
    let text = encode(&Reply { id: 1, presence: Some(PresenceResult { presence }), ..Default::default() });
    assert_eq!(text, r#"{"id":1,"presence":{"presence":{"c":{"user":"u","client":"c","conn_info":{"x":1}}}}}"#);

    // A batch with pretty-printed payloads still has exactly one line per reply.
    let replies = [pub_push("a", "[\n1\n]", 1), Reply::default(), pub_push("b", "{\n}", 2)];
    let mut out = Vec::new();
    encode_batch(Encoding::Json, &replies, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(!text.ends_with('\n'), "no trailing newline, like the Go server");
}

#[test]
fn invalid_json_payload_is_not_json_and_writes_nothing() {
    let bad: [&[u8]; 8] = [
        &[0xff, 0x00, 0x01],   // binary, not UTF-8
        b"not json",           // UTF-8 but not JSON
        br#"{"a":1"#,          // truncated
        br#"{"a":1} {"b":2}"#, // two values
        b" ",                  // whitespace only
        br#"{'a':1}"#,         // single quotes
        b"NaN",                // not a JSON number
        b"\"unterminated",     // open string
    ];
    for data in bad {
        let reply = Reply::push(Push {
            channel: "c".into(),
            publication: Some(Publication { data: Bytes::copy_from_slice(data), ..Default::default() }),
            ..Default::default()
        });
        let mut out = b"prefix".to_vec();
        assert_eq!(encode_reply(Encoding::Json, &reply, &mut out), Err(EncodeError::NotJson), "data {data:?}");
        assert_eq!(out, b"prefix", "nothing written for {data:?}");
        // Protobuf carries any bytes.
        let mut out = Vec::new();
        encode_reply(Encoding::Protobuf, &reply, &mut out).unwrap();
    }
}

#[test]
fn failed_batch_writes_nothing() {
    let replies = [pub_push("a", "1", 1), pub_push("b", "nope", 2)];
    let mut out = b"prefix".to_vec();
    assert_eq!(encode_batch(Encoding::Json, &replies, &mut out), Err(EncodeError::NotJson));
    assert_eq!(out, b"prefix");
}

// ---------------------------------------------------------------------------------------------
// Client → server decoding
// ---------------------------------------------------------------------------------------------

#[test]
fn decodes_sdk_transcript_frame() {
    // Reference §9.1: connect and the pending subscribe in one frame.
    let frame = "{\"connect\":{\"token\":\"tok\",\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"news\",\"flag\":1},\"id\":2}";
    let cmds = decode(frame);
    assert_eq!(cmds.len(), 2);
    assert_eq!(cmds[0].id, 1);
    let Some(Method::Connect(connect)) = cmds[0].method() else { panic!("connect expected") };
    assert_eq!(connect.token, "tok");
    assert_eq!(connect.name, "js");
    assert_eq!(cmds[1].id, 2);
    let Some(Method::Subscribe(sub)) = cmds[1].method() else { panic!("subscribe expected") };
    assert_eq!(sub.channel, "news");
    assert_eq!(sub.flag, 1);
    assert!(!sub.recover);

    // The reconnect frame with recovery.
    let frame = "{\"connect\":{\"token\":\"t\",\"name\":\"js\"},\"id\":3}\n{\"subscribe\":{\"channel\":\"news\",\"flag\":1,\"recover\":true,\"offset\":2,\"epoch\":\"e1\"},\"id\":4}";
    let cmds = decode(frame);
    assert_eq!(cmds.iter().map(|c| c.id).collect::<Vec<_>>(), vec![3, 4]);
    let sub = cmds[1].subscribe.as_ref().unwrap();
    assert_eq!((sub.recover, sub.offset, sub.epoch.as_str()), (true, 2, "e1"));
}

#[test]
fn unknown_keys_are_ignored() {
    let cmd = decode_one(
        r#"{"id":1,"connect":{"name":"js","future":{"x":[1,{"y":null}]},"dict":"d","profile":"p"},"extra":true,"method":5}"#,
    );
    let connect = cmd.connect.as_ref().unwrap();
    assert_eq!(connect.name, "js");
    // 2026 map-subscription fields are not modelled and must not break parsing.
    let cmd = decode_one(r#"{"id":2,"subscribe":{"channel":"m","phase":1,"cursor":"c","limit":10,"asc":true}}"#);
    assert_eq!(cmd.subscribe.unwrap().channel, "m");
}

#[test]
fn trailing_newline_blank_lines_and_crlf_are_tolerated() {
    let frames = [
        "{\"id\":1,\"presence\":{\"channel\":\"a\"}}\n{\"id\":2,\"history\":{\"channel\":\"a\"}}\n",
        "\n\n{\"id\":1,\"presence\":{\"channel\":\"a\"}}\n\n   \n{\"id\":2,\"history\":{\"channel\":\"a\"}}\n\n",
        "{\"id\":1,\"presence\":{\"channel\":\"a\"}}\r\n{\"id\":2,\"history\":{\"channel\":\"a\"}}\r\n",
        "  {\"id\":1,\"presence\":{\"channel\":\"a\"}}  \r\n\r\n\t{\"id\":2,\"history\":{\"channel\":\"a\"}}",
    ];
    for frame in frames {
        let cmds = decode(frame);
        assert_eq!(cmds.len(), 2, "frame {frame:?}");
        assert_eq!(cmds[0].presence.as_ref().unwrap().channel, "a");
        assert_eq!(cmds[1].history.as_ref().unwrap().channel, "a");
    }
    assert!(decode("").is_empty());
    assert!(decode("\n\r\n \n").is_empty());
}

#[test]
fn raw_data_decodes_to_exact_text() {
    let cases = [
        (r#"{"id":1,"publish":{"channel":"c","data":{"a": 1}}}"#, r#"{"a": 1}"#),
        (r#"{"id":1,"publish":{"channel":"c","data":"hi"}}"#, r#""hi""#),
        (r#"{"id":1,"publish":{"channel":"c","data":7}}"#, "7"),
        (r#"{"id":1,"publish":{"channel":"c","data":[1, 2]}}"#, "[1, 2]"),
        (r#"{"id":1,"publish":{"channel":"c","data":null}}"#, "null"),
    ];
    for (line, data) in cases {
        let cmd = decode_one(line);
        assert_eq!(&cmd.publish.unwrap().data[..], data.as_bytes(), "line {line}");
    }
    let cmd = decode_one(r#"{"id":9,"rpc":{"method":"m","data":{"q":[true]}}}"#);
    let rpc = cmd.rpc.unwrap();
    assert_eq!((rpc.method.as_str(), &rpc.data[..]), ("m", &br#"{"q":[true]}"#[..]));
    let cmd = decode_one(r#"{"send":{"data":"x"}}"#);
    assert_eq!(&cmd.send.unwrap().data[..], br#""x""#);
}

#[test]
fn large_integers_decode() {
    let cmd =
        decode_one(r#"{"id":4294967295,"subscribe":{"channel":"c","recover":true,"offset":18446744073709551615}}"#);
    assert_eq!(cmd.id, u32::MAX);
    assert_eq!(cmd.subscribe.unwrap().offset, u64::MAX);
    let cmd =
        decode_one(r#"{"id":1,"history":{"channel":"c","limit":-1,"since":{"offset":5,"epoch":"e"},"reverse":true}}"#);
    let h = cmd.history.unwrap();
    assert_eq!((h.limit, h.since.unwrap().offset, h.reverse), (-1, 5, true));
}

#[test]
fn pong_is_empty_command() {
    let pong = decode_one("{}");
    assert!(pong.is_pong());
    assert!(pong.method().is_none());
    assert!(decode_one(r#"{"id":0}"#).is_pong());
    let send = decode_one(r#"{"send":{"data":{}}}"#);
    assert!(!send.is_pong());
    assert!(matches!(send.method(), Some(Method::Send(_))));
    assert!(!decode_one(r#"{"id":1,"connect":{}}"#).is_pong());
}

#[test]
fn method_picks_first_present_request() {
    let cmd = decode_one(r#"{"id":1,"sub_refresh":{"channel":"x"},"subscribe":{"channel":"a"},"connect":{}}"#);
    assert_eq!(cmd.method().unwrap().name(), "connect");
    let cmd = decode_one(r#"{"id":1,"rpc":{},"publish":{"channel":"a"}}"#);
    assert!(matches!(cmd.method(), Some(Method::Publish(p)) if p.channel == "a"));
    let names = [
        ("connect", r#"{"id":1,"connect":{}}"#),
        ("subscribe", r#"{"id":1,"subscribe":{}}"#),
        ("unsubscribe", r#"{"id":1,"unsubscribe":{}}"#),
        ("publish", r#"{"id":1,"publish":{}}"#),
        ("presence", r#"{"id":1,"presence":{}}"#),
        ("presence_stats", r#"{"id":1,"presence_stats":{}}"#),
        ("history", r#"{"id":1,"history":{}}"#),
        ("ping", r#"{"id":1,"ping":{}}"#),
        ("send", r#"{"send":{}}"#),
        ("rpc", r#"{"id":1,"rpc":{}}"#),
        ("refresh", r#"{"id":1,"refresh":{}}"#),
        ("sub_refresh", r#"{"id":1,"sub_refresh":{}}"#),
    ];
    for (name, line) in names {
        assert_eq!(decode_one(line).method().map(|m| m.name()), Some(name), "line {line}");
    }
    // `null` counts as absent.
    assert!(decode_one(r#"{"id":1,"connect":null}"#).method().is_none());
}

#[test]
fn malformed_lines_are_json_errors() {
    let bad = [
        r#"{"id":1"#,
        "not json",
        "[1,2]",
        r#""string""#,
        "null",
        r#"{"id":-1}"#,
        r#"{"id":"1"}"#,
        r#"{"id":4294967296}"#,
        r#"{"id":1,"connect":5}"#,
        r#"{"id":1,"subscribe":{"channel":7}}"#,
        r#"{"id":1,"publish":{"channel":"c","data":}}"#,
        "{\"id\":1}\n{\"id\":2,",
        "{\"id\":1}\n\ngarbage\n{\"id\":3}",
        r#"{"id":1} {"id":2}"#,
    ];
    for frame in bad {
        let err = decode_commands(Encoding::Json, Bytes::copy_from_slice(frame.as_bytes()), 100).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{frame:?} gave {err:?}");
    }
    let err = decode_commands(Encoding::Json, Bytes::from_static(&[b'{', 0xff, b'}']), 100).unwrap_err();
    assert!(matches!(err, DecodeError::Json(_)));
}

#[test]
fn max_commands_enforced() {
    let frame = Bytes::from_static(b"{}\n{}\n\n{}\n");
    assert_eq!(decode_commands(Encoding::Json, frame.clone(), 3).unwrap().len(), 3);
    assert_eq!(decode_commands(Encoding::Json, frame.clone(), 2), Err(DecodeError::TooManyCommands));
    assert_eq!(decode_commands(Encoding::Json, frame, 0), Err(DecodeError::TooManyCommands));
    // Blank lines do not count.
    assert_eq!(decode_commands(Encoding::Json, Bytes::from_static(b"\n\n\n{}"), 1).unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Client side: commands out, replies in (used by herald-client)
// ---------------------------------------------------------------------------------------------

#[test]
fn commands_encode_like_the_sdk() {
    let cmd = Command {
        id: 1,
        connect: Some(ConnectRequest { token: "t".into(), name: "js".into(), ..Default::default() }),
        ..Default::default()
    };
    let mut out = Vec::new();
    encode_command(Encoding::Json, &cmd, &mut out);
    assert_eq!(out, br#"{"id":1,"connect":{"token":"t","name":"js"}}"#);

    let cmd = Command {
        id: 2,
        subscribe: Some(SubscribeRequest { channel: "news".into(), flag: 1, ..Default::default() }),
        ..Default::default()
    };
    let mut out = Vec::new();
    encode_command(Encoding::Json, &cmd, &mut out);
    assert_eq!(out, br#"{"id":2,"subscribe":{"channel":"news","flag":1}}"#);

    let mut out = Vec::new();
    encode_command(Encoding::Json, &Command::default(), &mut out);
    assert_eq!(out, b"{}");
}

#[test]
fn json_round_trips_every_reply_line_of_the_transcript() {
    let lines = [
        r#"{"id":1,"connect":{"client":"c1","version":"x","ping":25,"pong":true}}"#,
        r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"e1","positioned":true}}"#,
        r#"{"push":{"channel":"news","pub":{"data":{"n":1},"offset":1}}}"#,
        r#"{"push":{"channel":"news","pub":{"data":{"n":2},"offset":2}}}"#,
        "{}",
    ];
    let frame = lines.join("\n");
    let replies = decode_replies(Encoding::Json, Bytes::from(frame.clone())).unwrap();
    assert_eq!(replies.len(), 5);
    assert_eq!(replies[0].connect.as_ref().unwrap().client, "c1");
    assert_eq!(replies[2].push.as_ref().unwrap().publication.as_ref().unwrap().offset, 1);
    assert_eq!(replies[4], Reply::default());
    for (reply, line) in replies.iter().zip(lines) {
        let got: Value = serde_json::from_str(&encode(reply)).unwrap();
        assert_eq!(got, serde_json::from_str::<Value>(line).unwrap());
    }
    // The SDK tolerates a trailing newline; so does the decoder.
    assert_eq!(decode_replies(Encoding::Json, Bytes::from(frame + "\n")).unwrap().len(), 5);
    assert!(matches!(decode_replies(Encoding::Json, Bytes::from_static(b"{")), Err(DecodeError::Json(_))));
}
