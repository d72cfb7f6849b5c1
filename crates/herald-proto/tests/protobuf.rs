//! Protobuf encoding of the client protocol (reference §1.1, §2), through the public API.
//!
//! Field numbers are checked against bytes computed by hand from the reference tables, so a
//! wrong tag in `protocol.rs` shows up here even when encode and decode agree with each other.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_proto::codes::ERROR_PERMISSION_DENIED;
use herald_proto::{
    ClientInfo, Command, Connect, ConnectRequest, ConnectResult, DecodeError, Disconnect, Encoding, Error, FilterNode,
    HistoryRequest, HistoryResult, Join, Leave, Message, PingRequest, PingResult, PresenceRequest, PresenceResult,
    PresenceStatsRequest, PresenceStatsResult, Publication, PublishRequest, PublishResult, Push, Refresh,
    RefreshRequest, RefreshResult, Reply, RpcRequest, RpcResult, SendRequest, StreamPosition, SubRefreshRequest,
    SubRefreshResult, Subscribe, SubscribeRequest, SubscribeResult, Unsubscribe, UnsubscribeRequest, UnsubscribeResult,
    decode_commands, decode_replies, encode_batch, encode_command, encode_reply,
};
use prost::Message as _;

fn pb_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    encode_reply(Encoding::Protobuf, reply, &mut out).expect("protobuf always encodes");
    out
}

fn pb_command(cmd: &Command) -> Vec<u8> {
    let mut out = Vec::new();
    encode_command(Encoding::Protobuf, cmd, &mut out);
    out
}

fn decode_cmds(bytes: &[u8]) -> Result<Vec<Command>, DecodeError> {
    decode_commands(Encoding::Protobuf, Bytes::copy_from_slice(bytes), 1000)
}

/// A length-delimited message: varint length (one byte here) + body.
fn delimited(body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut out = vec![body.len() as u8];
    out.extend_from_slice(body);
    out
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Ping / pong
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_reply_is_single_zero_byte() {
    assert_eq!(pb_reply(&Reply::default()), [0x00]);
    let mut out = Vec::new();
    encode_batch(Encoding::Protobuf, &[Reply::default(), Reply::default()], &mut out).unwrap();
    assert_eq!(out, [0x00, 0x00], "no separator between delimited messages");
    assert_eq!(decode_replies(Encoding::Protobuf, Bytes::from_static(&[0])).unwrap(), vec![Reply::default()]);
}

#[test]
fn empty_command_decodes_as_pong() {
    let cmds = decode_cmds(&[0x00]).unwrap();
    assert_eq!(cmds.len(), 1);
    assert!(cmds[0].is_pong());
    assert!(cmds[0].method().is_none());
    assert_eq!(pb_command(&Command::default()), [0x00]);
    assert_eq!(decode_cmds(&[0, 0, 0]).unwrap().len(), 3);
    assert!(decode_cmds(&[]).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Field numbers, by hand
// ---------------------------------------------------------------------------------------------

#[test]
fn subscribe_command_bytes() {
    let cmd = Command {
        id: 1,
        subscribe: Some(SubscribeRequest { channel: "a".into(), ..Default::default() }),
        ..Default::default()
    };
    // id = 1 varint: 0x08 0x01; subscribe = 5 length-delimited: 0x2A len;
    // channel = 1 length-delimited: 0x0A 0x01 'a'.
    let want = delimited(&[0x08, 0x01, 0x2A, 0x03, 0x0A, 0x01, b'a']);
    assert_eq!(pb_command(&cmd), want);
    assert_eq!(decode_cmds(&want).unwrap(), vec![cmd]);

    // The SDK's subscribe with flag = 14 (varint key 0x70).
    let cmd = Command {
        id: 2,
        subscribe: Some(SubscribeRequest { channel: "news".into(), flag: 1, ..Default::default() }),
        ..Default::default()
    };
    let want = delimited(&[0x08, 0x02, 0x2A, 0x08, 0x0A, 0x04, b'n', b'e', b'w', b's', 0x70, 0x01]);
    assert_eq!(pb_command(&cmd), want);
}

#[test]
fn recovering_subscribe_bytes() {
    let req = SubscribeRequest {
        channel: "c".into(),
        token: "t".into(),
        recover: true,
        epoch: "e".into(),
        offset: 300,
        data: b("{}"),
        positioned: true,
        recoverable: true,
        join_leave: true,
        delta: "fossil".into(),
        flag: 3,
        ..Default::default()
    };
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[0x0A, 0x01, b'c'][..],       // channel = 1
        &[0x12, 0x01, b't'],           // token = 2
        &[0x18, 0x01],                 // recover = 3
        &[0x32, 0x01, b'e'],           // epoch = 6
        &[0x38, 0xAC, 0x02],           // offset = 7 (300 as varint)
        &[0x42, 0x02, b'{', b'}'],     // data = 8
        &[0x48, 0x01],                 // positioned = 9
        &[0x50, 0x01],                 // recoverable = 10
        &[0x58, 0x01],                 // join_leave = 11
        &[0x62, 0x06], b"fossil",      // delta = 12
        &[0x70, 0x03],                 // flag = 14
    ]
    .concat();
    assert_eq!(req.encode_to_vec(), want);
}

#[test]
fn connect_command_bytes() {
    let cmd = Command {
        id: 1,
        connect: Some(ConnectRequest { token: "t".into(), name: "js".into(), ..Default::default() }),
        ..Default::default()
    };
    // connect = 4 (0x22); token = 1 (0x0A); name = 4 (0x22).
    let want = delimited(&[0x08, 0x01, 0x22, 0x07, 0x0A, 0x01, b't', 0x22, 0x02, b'j', b's']);
    assert_eq!(pb_command(&cmd), want);
}

#[test]
fn command_request_field_numbers() {
    // Each request, empty, goes to its own field: key = (n << 3) | 2, then length 0.
    let cases: Vec<(Command, u8)> = vec![
        (Command { connect: Some(Default::default()), ..Default::default() }, 4),
        (Command { subscribe: Some(Default::default()), ..Default::default() }, 5),
        (Command { unsubscribe: Some(Default::default()), ..Default::default() }, 6),
        (Command { publish: Some(Default::default()), ..Default::default() }, 7),
        (Command { presence: Some(Default::default()), ..Default::default() }, 8),
        (Command { presence_stats: Some(Default::default()), ..Default::default() }, 9),
        (Command { history: Some(Default::default()), ..Default::default() }, 10),
        (Command { ping: Some(Default::default()), ..Default::default() }, 11),
        (Command { send: Some(Default::default()), ..Default::default() }, 12),
        (Command { rpc: Some(Default::default()), ..Default::default() }, 13),
        (Command { refresh: Some(Default::default()), ..Default::default() }, 14),
        (Command { sub_refresh: Some(Default::default()), ..Default::default() }, 15),
    ];
    for (cmd, field) in cases {
        let bytes = pb_command(&cmd);
        assert_eq!(bytes, [0x02, (field << 3) | 2, 0x00], "field {field}");
        assert_eq!(decode_cmds(&bytes).unwrap(), vec![cmd]);
    }
}

#[test]
fn connect_reply_bytes() {
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
    #[rustfmt::skip]
    let want = delimited(&[
        0x08, 0x01,                   // id = 1
        0x2A, 0x0B,                   // connect = 5, 11 bytes
        0x0A, 0x02, b'c', b'1',       // client = 1
        0x12, 0x01, b'x',             // version = 2
        0x38, 25,                     // ping = 7
        0x40, 0x01,                   // pong = 8
    ]);
    assert_eq!(pb_reply(&reply), want);
    assert_eq!(decode_replies(Encoding::Protobuf, Bytes::from(want)).unwrap(), vec![reply]);
}

#[test]
fn connect_push_and_connect_result_have_different_field_numbers() {
    let result = ConnectResult {
        client: "c1".into(),
        expires: true,
        ttl: 60,
        data: b("{}"),
        session: "s".into(),
        node: "n".into(),
        time: 1,
        ..Default::default()
    };
    #[rustfmt::skip]
    let result_bytes: Vec<u8> = [
        &[0x0A, 0x02, b'c', b'1'][..], // client = 1
        &[0x18, 0x01],                 // expires = 3
        &[0x20, 60],                   // ttl = 4
        &[0x2A, 0x02, b'{', b'}'],     // data = 5
        &[0x4A, 0x01, b's'],           // session = 9
        &[0x52, 0x01, b'n'],           // node = 10
        &[0x58, 0x01],                 // time = 11
    ]
    .concat();
    assert_eq!(result.encode_to_vec(), result_bytes);

    let push = Connect {
        client: "c1".into(),
        expires: true,
        ttl: 60,
        data: b("{}"),
        session: "s".into(),
        node: "n".into(),
        time: 1,
        ..Default::default()
    };
    #[rustfmt::skip]
    let push_bytes: Vec<u8> = [
        &[0x0A, 0x02, b'c', b'1'][..], // client = 1
        &[0x1A, 0x02, b'{', b'}'],     // data = 3
        &[0x28, 0x01],                 // expires = 5
        &[0x30, 60],                   // ttl = 6
        &[0x4A, 0x01, b's'],           // session = 9
        &[0x52, 0x01, b'n'],           // node = 10
        &[0x58, 0x01],                 // time = 11
    ]
    .concat();
    assert_eq!(push.encode_to_vec(), push_bytes);

    // subs: ConnectResult = 6, Connect = 4.
    let mut subs = BTreeMap::new();
    subs.insert("a".to_owned(), SubscribeResult::default());
    let r = ConnectResult { subs: subs.clone(), ..Default::default() }.encode_to_vec();
    let p = Connect { subs, ..Default::default() }.encode_to_vec();
    assert_eq!(r[0], 0x32);
    assert_eq!(p[0], 0x22);

    // Push.connect is field 10; decoding a ConnectResult's bytes as a Connect mixes fields up.
    let reply = Reply::push(Push { connect: Some(push.clone()), ..Default::default() });
    let bytes = reply.encode_to_vec();
    assert_eq!(&bytes[..2], &[0x22, bytes.len() as u8 - 2]);
    assert_eq!(bytes[2], 0x52);
    // (here: ConnectResult.expires, a varint, lands on Connect.data, a bytes field).
    assert_ne!(Connect::decode(&result_bytes[..]).ok(), Some(push));
}

#[test]
fn publication_push_bytes() {
    let reply = Reply::push(Push {
        channel: "news".into(),
        publication: Some(Publication { data: b(r#"{"n":1}"#), offset: 1, ..Default::default() }),
        ..Default::default()
    });
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[0x15][..],                           // length 21
        &[0x22, 0x13],                         // push = 4, 19 bytes
        &[0x12, 0x04], b"news",                // channel = 2
        &[0x22, 0x0B],                         // pub = 4, 11 bytes
        &[0x22, 0x07], br#"{"n":1}"#,          // data = 4
        &[0x30, 0x01],                         // offset = 6
    ]
    .concat();
    assert_eq!(pb_reply(&reply), want);
}

#[test]
fn shared_structure_field_numbers() {
    let info = ClientInfo { user: "u".into(), client: "c".into(), conn_info: b("1"), chan_info: b("2") };
    assert_eq!(info.encode_to_vec(), [0x0A, 1, b'u', 0x12, 1, b'c', 0x1A, 1, b'1', 0x22, 1, b'2']);

    let mut tags = BTreeMap::new();
    tags.insert("k".to_owned(), "v".to_owned());
    let publication = Publication {
        info: Some(ClientInfo::default()),
        tags,
        delta: true,
        time: 2,
        channel: "c".into(),
        epoch: "e".into(),
        ..Default::default()
    };
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[0x2A, 0x00][..],                                  // info = 5
        &[0x3A, 0x06, 0x0A, 0x01, b'k', 0x12, 0x01, b'v'],  // tags = 7 (map entry key 1, value 2)
        &[0x40, 0x01],                                      // delta = 8
        &[0x48, 0x02],                                      // time = 9
        &[0x52, 0x01, b'c'],                                // channel = 10
        &[0x72, 0x01, b'e'],                                // epoch = 14
    ]
    .concat();
    assert_eq!(publication.encode_to_vec(), want);

    let unsub = Unsubscribe { code: 2000, reason: "r".into() };
    assert_eq!(unsub.encode_to_vec(), [0x10, 0xD0, 0x0F, 0x1A, 0x01, b'r']);
    let sub = Subscribe { recoverable: true, epoch: "e".into(), offset: 1, positioned: true, data: b("0") };
    assert_eq!(sub.encode_to_vec(), [0x08, 1, 0x22, 1, b'e', 0x28, 1, 0x30, 1, 0x3A, 1, b'0']);
    let disc = Disconnect { code: 3001, reason: "s".into(), reconnect: true };
    assert_eq!(disc.encode_to_vec(), [0x08, 0xB9, 0x17, 0x12, 1, b's', 0x18, 1]);
    assert_eq!(Refresh { expires: true, ttl: 5 }.encode_to_vec(), [0x08, 1, 0x10, 5]);
    let error = Error { code: 103, message: "m".into(), temporary: true };
    assert_eq!(error.encode_to_vec(), [0x08, 103, 0x12, 1, b'm', 0x18, 1]);
    let hist = HistoryRequest {
        channel: "c".into(),
        limit: -1,
        since: Some(StreamPosition { offset: 1, epoch: "e".into() }),
        reverse: true,
    };
    #[rustfmt::skip]
    let want: Vec<u8> = [
        &[0x0A, 1, b'c'][..],
        &[0x38, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], // limit = 7, int32 -1
        &[0x42, 5, 0x08, 1, 0x12, 1, b'e'],                                  // since = 8
        &[0x48, 1],                                                          // reverse = 9
    ]
    .concat();
    assert_eq!(hist.encode_to_vec(), want);
    let hist = HistoryResult { publications: vec![Publication::default()], epoch: "e".into(), offset: 7 };
    assert_eq!(hist.encode_to_vec(), [0x0A, 0, 0x12, 1, b'e', 0x18, 7]);
    let stats = PresenceStatsResult { num_clients: 2, num_users: 1 };
    assert_eq!(stats.encode_to_vec(), [0x08, 2, 0x10, 1]);
    let rpc = RpcRequest { data: b("1"), method: "m".into() };
    assert_eq!(rpc.encode_to_vec(), [0x0A, 1, b'1', 0x12, 1, b'm']);
    let refresh = RefreshResult { client: "c".into(), version: "v".into(), expires: true, ttl: 9 };
    assert_eq!(refresh.encode_to_vec(), [0x0A, 1, b'c', 0x12, 1, b'v', 0x18, 1, 0x20, 9]);
    let sub_refresh = SubRefreshRequest { channel: "c".into(), token: "t".into() };
    assert_eq!(sub_refresh.encode_to_vec(), [0x0A, 1, b'c', 0x12, 1, b't']);
    let result = SubscribeResult {
        expires: true,
        ttl: 1,
        recoverable: true,
        epoch: "e".into(),
        publications: vec![Publication::default()],
        recovered: true,
        offset: 2,
        positioned: true,
        data: b("3"),
        was_recovering: true,
        delta: true,
        id: 4,
    };
    #[rustfmt::skip]
    let want = [
        0x08, 1, 0x10, 1, 0x18, 1, 0x32, 1, b'e', 0x3A, 0, 0x40, 1, 0x48, 2, 0x50, 1,
        0x5A, 1, b'3', 0x60, 1, 0x68, 1, 0x70, 4,
    ];
    assert_eq!(result.encode_to_vec(), want);
    let push = Push { id: 1, channel: "c".into(), ..Default::default() };
    assert_eq!(push.encode_to_vec(), [0x08, 1, 0x12, 1, b'c']);
}

#[test]
fn present_but_empty_results_are_encoded() {
    // Reply field number of every result, each with an empty (default) result.
    let cases: Vec<(Reply, u8)> = vec![
        (Reply { id: 5, error: Some(Error::default()), ..Default::default() }, 2),
        (Reply { id: 5, push: Some(Push::default()), ..Default::default() }, 4),
        (Reply { id: 5, connect: Some(ConnectResult::default()), ..Default::default() }, 5),
        (Reply { id: 5, subscribe: Some(SubscribeResult::default()), ..Default::default() }, 6),
        (Reply { id: 5, unsubscribe: Some(UnsubscribeResult {}), ..Default::default() }, 7),
        (Reply { id: 5, publish: Some(PublishResult {}), ..Default::default() }, 8),
        (Reply { id: 5, presence: Some(PresenceResult::default()), ..Default::default() }, 9),
        (Reply { id: 5, presence_stats: Some(PresenceStatsResult::default()), ..Default::default() }, 10),
        (Reply { id: 5, history: Some(HistoryResult::default()), ..Default::default() }, 11),
        (Reply { id: 5, ping: Some(PingResult {}), ..Default::default() }, 12),
        (Reply { id: 5, rpc: Some(RpcResult::default()), ..Default::default() }, 13),
        (Reply { id: 5, refresh: Some(RefreshResult::default()), ..Default::default() }, 14),
        (Reply { id: 5, sub_refresh: Some(SubRefreshResult::default()), ..Default::default() }, 15),
    ];
    for (reply, field) in cases {
        let bytes = pb_reply(&reply);
        assert_eq!(bytes, [0x04, 0x08, 0x05, (field << 3) | 2, 0x00], "field {field}");
        let back = decode_replies(Encoding::Protobuf, Bytes::from(bytes)).unwrap();
        assert_eq!(back, vec![reply], "field {field} survives as present");
    }
}

#[test]
fn error_reply_bytes() {
    let reply = Reply::error(3, ERROR_PERMISSION_DENIED.into());
    let mut want = vec![25, 0x08, 3, 0x12, 21, 0x08, 103, 0x12, 17];
    want.extend_from_slice(b"permission denied");
    assert_eq!(pb_reply(&reply), want);
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

fn info(n: &str) -> ClientInfo {
    ClientInfo {
        user: format!("user-{n}"),
        client: format!("client-{n}"),
        conn_info: Bytes::from(format!(r#"{{"conn":"{n}"}}"#)),
        chan_info: Bytes::from(format!(r#"["{n}"]"#)),
    }
}

fn full_publication(offset: u64) -> Publication {
    let mut tags = BTreeMap::new();
    tags.insert("k".to_owned(), "v".to_owned());
    tags.insert("k2".to_owned(), String::new());
    Publication {
        data: b(r#"{"text":"hello"}"#),
        info: Some(info("p")),
        offset,
        tags,
        delta: true,
        time: 1_700_000_000_123,
        channel: "chat:room".into(),
        epoch: "epoch".into(),
    }
}

fn full_subscribe_request(channel: &str) -> SubscribeRequest {
    SubscribeRequest {
        channel: channel.into(),
        token: "sub-token".into(),
        recover: true,
        epoch: "e1".into(),
        offset: u64::MAX,
        data: b(r#"{"sub":true}"#),
        positioned: true,
        recoverable: true,
        join_leave: true,
        delta: "fossil".into(),
        tf: Some(FilterNode {
            op: "and".into(),
            nodes: vec![FilterNode {
                key: "k".into(),
                cmp: "in".into(),
                vals: vec!["a".into(), "b".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
        flag: 3,
        sub_type: 0,
    }
}

fn full_subscribe_result() -> SubscribeResult {
    SubscribeResult {
        expires: true,
        ttl: 3600,
        recoverable: true,
        epoch: "e1".into(),
        publications: vec![full_publication(1), full_publication(2)],
        recovered: true,
        offset: 2,
        positioned: true,
        data: b(r#""sub-data""#),
        was_recovering: true,
        delta: false,
        id: 77,
    }
}

fn all_commands() -> Vec<Command> {
    let mut subs = BTreeMap::new();
    subs.insert("server-side".to_owned(), full_subscribe_request("server-side"));
    let mut headers = BTreeMap::new();
    headers.insert("authorization".to_owned(), "Bearer x".to_owned());
    let cmd = |id| Command { id, ..Default::default() };
    vec![
        Command {
            connect: Some(ConnectRequest {
                token: "jwt".into(),
                data: b(r#"{"hello":[1,2,3]}"#),
                subs,
                name: "js".into(),
                version: "1.2.3".into(),
                headers,
                flag: 0,
            }),
            ..cmd(1)
        },
        Command { subscribe: Some(full_subscribe_request("news")), ..cmd(2) },
        Command { unsubscribe: Some(UnsubscribeRequest { channel: "news".into() }), ..cmd(3) },
        Command { publish: Some(PublishRequest { channel: "news".into(), data: b("[1]") }), ..cmd(4) },
        Command { presence: Some(PresenceRequest { channel: "news".into() }), ..cmd(5) },
        Command { presence_stats: Some(PresenceStatsRequest { channel: "news".into() }), ..cmd(6) },
        Command {
            history: Some(HistoryRequest {
                channel: "news".into(),
                limit: 10,
                since: Some(StreamPosition { offset: 5, epoch: "e1".into() }),
                reverse: true,
            }),
            ..cmd(7)
        },
        Command { ping: Some(PingRequest {}), ..cmd(8) },
        Command { send: Some(SendRequest { data: b(r#"{"fire":"forget"}"#) }), ..cmd(0) },
        Command { rpc: Some(RpcRequest { data: b("42"), method: "sum".into() }), ..cmd(10) },
        Command { refresh: Some(RefreshRequest { token: "new".into() }), ..cmd(11) },
        Command {
            sub_refresh: Some(SubRefreshRequest { channel: "news".into(), token: "sub".into() }),
            ..cmd(u32::MAX)
        },
        Command::default(),
    ]
}

fn all_replies() -> Vec<Reply> {
    let mut subs = BTreeMap::new();
    subs.insert("#42".to_owned(), full_subscribe_result());
    let mut presence = BTreeMap::new();
    presence.insert("client-a".to_owned(), info("a"));
    presence.insert("client-b".to_owned(), ClientInfo::default());
    let reply = |id| Reply { id, ..Default::default() };
    let push = |push: Push| Reply::push(Push { channel: "news".into(), ..push });
    vec![
        Reply {
            connect: Some(ConnectResult {
                client: "c1".into(),
                version: "0.1.0".into(),
                expires: true,
                ttl: 60,
                data: b(r#"{"welcome":true}"#),
                subs: subs.clone(),
                ping: 25,
                pong: true,
                session: "sess".into(),
                node: "node".into(),
                time: 1_700_000_000_000,
            }),
            ..reply(1)
        },
        Reply { subscribe: Some(full_subscribe_result()), ..reply(2) },
        Reply { unsubscribe: Some(UnsubscribeResult {}), ..reply(3) },
        Reply { publish: Some(PublishResult {}), ..reply(4) },
        Reply { presence: Some(PresenceResult { presence }), ..reply(5) },
        Reply { presence_stats: Some(PresenceStatsResult { num_clients: 10, num_users: 7 }), ..reply(6) },
        Reply {
            history: Some(HistoryResult {
                publications: vec![full_publication(9), full_publication(10)],
                epoch: "e1".into(),
                offset: 10,
            }),
            ..reply(7)
        },
        Reply { ping: Some(PingResult {}), ..reply(8) },
        Reply { rpc: Some(RpcResult { data: b(r#"{"sum":3}"#) }), ..reply(10) },
        Reply {
            refresh: Some(RefreshResult { client: "c1".into(), version: "v".into(), expires: true, ttl: 30 }),
            ..reply(11)
        },
        Reply { sub_refresh: Some(SubRefreshResult { expires: true, ttl: 40 }), ..reply(12) },
        Reply::error(13, Error { code: 111, message: "too many requests".into(), temporary: true }),
        push(Push { publication: Some(full_publication(3)), ..Default::default() }),
        push(Push { id: -1, publication: Some(Publication::default()), ..Default::default() }),
        push(Push { join: Some(Join { info: Some(info("j")) }), ..Default::default() }),
        push(Push { leave: Some(Leave { info: Some(info("l")) }), ..Default::default() }),
        push(Push {
            unsubscribe: Some(Unsubscribe { code: 2500, reason: "insufficient state".into() }),
            ..Default::default()
        }),
        push(Push { message: Some(Message { data: b(r#""hi""#) }), ..Default::default() }),
        push(Push {
            subscribe: Some(Subscribe {
                recoverable: true,
                epoch: "e".into(),
                offset: 3,
                positioned: true,
                data: b("{}"),
            }),
            ..Default::default()
        }),
        push(Push {
            connect: Some(Connect {
                client: "c".into(),
                version: "v".into(),
                data: b("1"),
                subs,
                expires: true,
                ttl: 5,
                ping: 25,
                pong: false,
                session: "s".into(),
                node: "n".into(),
                time: 9,
            }),
            ..Default::default()
        }),
        push(Push {
            disconnect: Some(Disconnect { code: 3001, reason: "shutdown".into(), reconnect: false }),
            ..Default::default()
        }),
        push(Push { refresh: Some(Refresh { expires: true, ttl: 100 }), ..Default::default() }),
        Reply::default(),
    ]
}

#[test]
fn every_command_round_trips() {
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let cmds = all_commands();
        let mut frame = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            if i > 0 && encoding == Encoding::Json {
                frame.push(b'\n');
            }
            let mut one = Vec::new();
            encode_command(encoding, cmd, &mut one);
            // Each one alone…
            let back = decode_commands(encoding, Bytes::from(one.clone()), 1).unwrap();
            assert_eq!(back, vec![cmd.clone()], "{encoding:?} {:?}", cmd.method().map(|m| m.name()));
            frame.extend_from_slice(&one);
        }
        // …and all of them in one frame, in order.
        let back = decode_commands(encoding, Bytes::from(frame), cmds.len()).unwrap();
        assert_eq!(back, cmds, "{encoding:?} batch");
    }
}

#[test]
fn every_reply_round_trips() {
    for encoding in [Encoding::Protobuf, Encoding::Json] {
        let replies = all_replies();
        for reply in &replies {
            let mut one = Vec::new();
            encode_reply(encoding, reply, &mut one).unwrap();
            assert_eq!(decode_replies(encoding, Bytes::from(one)).unwrap(), vec![reply.clone()], "{encoding:?}");
        }
        let mut frame = Vec::new();
        encode_batch(encoding, &replies, &mut frame).unwrap();
        assert_eq!(decode_replies(encoding, Bytes::from(frame)).unwrap(), replies, "{encoding:?} batch");
    }
}

#[test]
fn binary_payloads_round_trip_in_protobuf() {
    let data = Bytes::from((0..=255u8).collect::<Vec<_>>());
    let reply = Reply::push(Push {
        channel: "bin".into(),
        publication: Some(Publication { data: data.clone(), offset: 1, ..Default::default() }),
        ..Default::default()
    });
    let bytes = pb_reply(&reply);
    // > 127 bytes: the length prefix takes two varint bytes.
    assert!(bytes[0] & 0x80 != 0);
    let back = decode_replies(Encoding::Protobuf, Bytes::from(bytes)).unwrap();
    assert_eq!(back[0].push.as_ref().unwrap().publication.as_ref().unwrap().data, data);

    let cmd = Command { id: 1, publish: Some(PublishRequest { channel: "bin".into(), data }), ..Default::default() };
    assert_eq!(decode_cmds(&pb_command(&cmd)).unwrap(), vec![cmd]);
}

// ---------------------------------------------------------------------------------------------
// Malformed input and leniency
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_and_garbage_input_is_protobuf_error() {
    let valid = pb_command(&Command {
        id: 1,
        subscribe: Some(SubscribeRequest { channel: "abc".into(), ..Default::default() }),
        ..Default::default()
    });
    // Every strict prefix of a valid message is an error.
    for cut in 1..valid.len() {
        let err = decode_cmds(&valid[..cut]).unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf(_)), "cut {cut}: {err:?}");
    }
    let garbage: Vec<&[u8]> = vec![
        &[0x80],                               // incomplete length varint
        &[0xFF; 11],                           // length varint too long
        &[0x07, 0x08, 0x01],                   // length beyond the buffer
        &[0x02, 0x0F, 0x00],                   // wire type 7 does not exist
        &[0x03, 0x0A, 0x01, 0x00],             // id (varint field) sent length-delimited
        &[0x04, 0x2A, 0x02, 0x0A, 0x05],       // nested length beyond the message
        &[0x05, 0x2A, 0x03, 0x0A, 0x01, 0xFF], // channel is not UTF-8
        &[0x02, 0x00, 0x00],                   // field number 0
        &[0x01, 0x1B],                         // unterminated group
        &[0x02, 0x08, 0x80],                   // truncated varint value
        &[0x00, 0x02, 0x08],                   // a valid pong, then a truncated message
    ];
    for bytes in garbage {
        let err = decode_cmds(bytes).unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf(_)), "{bytes:?} gave {err:?}");
        let err = decode_replies(Encoding::Protobuf, Bytes::copy_from_slice(bytes)).unwrap_err();
        assert!(matches!(err, DecodeError::Protobuf(_)), "reply {bytes:?} gave {err:?}");
    }
}

#[test]
fn unknown_fields_are_skipped() {
    #[rustfmt::skip]
    let body: Vec<u8> = [
        &[0x10, 0x01][..],                           // field 2 (reserved v1 method), varint
        &[0x1A, 0x02, 0xAB, 0xCD],                   // field 3 (reserved v1 params), bytes
        &[0x98, 0x06, 0x2A],                         // field 99, varint
        &[0x81, 0x01, 1, 2, 3, 4, 5, 6, 7, 8],       // field 16, fixed64
        &[0x8D, 0x01, 1, 2, 3, 4],                   // field 17, fixed32
        &[0x08, 0x07],                               // id = 7
        &[0x2A, 0x09],                               // subscribe = 5
        &[0x0A, 0x01, b'c'],                         //   channel
        &[0x80, 0x01, 0x01],                         //   field 16 (map "phase"), unknown
        &[0xA2, 0x01, 0x00],                         //   field 20, empty bytes
    ]
    .concat();
    let cmds = decode_cmds(&delimited(&body)).unwrap();
    assert_eq!(
        cmds,
        vec![Command {
            id: 7,
            subscribe: Some(SubscribeRequest { channel: "c".into(), ..Default::default() }),
            ..Default::default()
        }]
    );

    // ConnectRequest dict = 8 and profile = 9 (2026) are not modelled.
    let body = [0x08, 0x01, 0x22, 0x08, 0x22, 0x02, b'j', b's', 0x42, 0x00, 0x4A, 0x00];
    let cmds = decode_cmds(&delimited(&body)).unwrap();
    assert_eq!(cmds[0].connect.as_ref().unwrap().name, "js");

    // Replies too: ConnectResult dict = 13 and a future Reply field 99.
    let body = [0x08, 0x01, 0x2A, 0x04, 0x38, 25, 0x6A, 0x00, 0x98, 0x06, 0x01];
    let replies = decode_replies(Encoding::Protobuf, Bytes::from(delimited(&body))).unwrap();
    assert_eq!(replies[0].connect.as_ref().unwrap().ping, 25);
}

#[test]
fn max_commands_enforced() {
    assert_eq!(decode_commands(Encoding::Protobuf, Bytes::from_static(&[0, 0, 0]), 3).unwrap().len(), 3);
    assert_eq!(
        decode_commands(Encoding::Protobuf, Bytes::from_static(&[0, 0, 0]), 2),
        Err(DecodeError::TooManyCommands)
    );
    assert_eq!(decode_commands(Encoding::Protobuf, Bytes::from_static(&[0]), 0), Err(DecodeError::TooManyCommands));
    assert!(decode_commands(Encoding::Protobuf, Bytes::new(), 0).unwrap().is_empty());
}
