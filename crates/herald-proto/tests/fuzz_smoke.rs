//! Stable-toolchain smoke run of the fuzz targets in `/fuzz` (cargo-fuzz needs nightly).
//!
//! Feeds the same harness functions (the file is shared with `#[path]`) a few thousand inputs per
//! target: valid seeds, mutated seeds and random bytes, from a fixed seed so failures reproduce.
//! A panic anywhere fails the test; the failing input is printed first.

use std::collections::BTreeMap;

use bytes::Bytes;
use herald_proto::{
    ClientInfo, Command, ConnectRequest, ConnectResult, Encoding, HistoryRequest, HistoryResult, PresenceResult,
    Publication, PublishRequest, Push, Reply, RpcRequest, StreamPosition, SubscribeRequest, SubscribeResult,
    encode_command, encode_reply,
};

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/lib.rs"]
mod harness;

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/smoke.rs"]
mod smoke;

use smoke::smoke;

// ---------------------------------------------------------------------------------------------
// Seeds
// ---------------------------------------------------------------------------------------------

fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    herald_proto::ws::put_client_frame(&mut out, fin, opcode, payload, Some(mask));
    out
}

fn ws_seeds() -> Vec<Vec<u8>> {
    let m = [0x37, 0xFA, 0x21, 0x3D];
    let frames: Vec<Vec<u8>> = vec![
        client_frame(true, 1, br#"{"connect":{"name":"js"},"id":1}"#, m),
        client_frame(true, 2, &[0, 1, 2, 3], m),
        client_frame(true, 9, b"ping", m),
        client_frame(true, 10, b"", m),
        client_frame(true, 8, &[0x03, 0xE8, b'b', b'y', b'e'], m),
        client_frame(true, 8, &[], m),
        [
            client_frame(false, 1, "héllo ".as_bytes(), m),
            client_frame(true, 9, b"", m),
            client_frame(true, 0, "wörld".as_bytes(), m),
        ]
        .concat(),
        [
            client_frame(false, 2, &[1; 100], m),
            client_frame(false, 0, &[2; 100], m),
            client_frame(true, 0, &[3; 100], m),
        ]
        .concat(),
        client_frame(true, 2, &[7; 300], m),     // 16-bit length
        client_frame(true, 2, &[7; 600], m),     // over MAX_MESSAGE
        client_frame(true, 1, &[0xE2, 0x82], m), // invalid UTF-8
        {
            let mut f = client_frame(true, 2, &[1; 10], m);
            f[1] = 0x80 | 127; // 64-bit length form with a short payload
            f.splice(2..2, [0, 0, 0, 0, 0, 0, 0]);
            f
        },
        vec![0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], // unmasked
    ];
    let mut seeds = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        // First byte: where the harness splits the input into two reads.
        seeds.push([&[(i * 37) as u8][..], f].concat());
    }
    seeds.push([&[128u8][..], &frames.concat()].concat());
    seeds
}

fn json_seeds() -> Vec<Vec<u8>> {
    let lines: Vec<&str> = vec![
        "{\"connect\":{\"token\":\"t\",\"name\":\"js\"},\"id\":1}\n{\"subscribe\":{\"channel\":\"news\",\"flag\":1},\"id\":2}",
        "{\"connect\":{\"token\":\"t\",\"name\":\"js\",\"subs\":{\"a\":{\"recover\":true,\"offset\":2,\"epoch\":\"e\"}},\"headers\":{\"x\":\"y\"},\"data\":{\"k\":[1,2]}},\"id\":3}\r\n",
        "{\"subscribe\":{\"channel\":\"news\",\"flag\":3,\"recover\":true,\"offset\":18446744073709551615,\"epoch\":\"e1\",\"tf\":{\"op\":\"and\",\"nodes\":[{\"key\":\"k\",\"cmp\":\"in\",\"vals\":[\"a\"]}]}},\"id\":4}",
        "{\"publish\":{\"channel\":\"c\",\"data\":\"str\"},\"id\":5}\n\n{\"rpc\":{\"method\":\"m\",\"data\":[1,{\"a\":null}]},\"id\":6}\n",
        "{}",
        "{}\n{}\n{}",
        "{\"send\":{\"data\":1.5e10}}",
        "{\"history\":{\"channel\":\"c\",\"limit\":-1,\"since\":{\"offset\":1,\"epoch\":\"e\"},\"reverse\":true},\"id\":7}",
        "{\"presence\":{\"channel\":\"c\"},\"id\":8}\n{\"presence_stats\":{\"channel\":\"c\"},\"id\":9}\n{\"unsubscribe\":{\"channel\":\"c\"},\"id\":10}",
        "{\"refresh\":{\"token\":\"t\"},\"id\":11}\n{\"sub_refresh\":{\"channel\":\"c\",\"token\":\"t\"},\"id\":12}\n{\"ping\":{},\"id\":13}",
        // Replies, for decode_replies.
        "{\"id\":1,\"connect\":{\"client\":\"c1\",\"version\":\"x\",\"ping\":25,\"pong\":true,\"subs\":{\"s\":{\"recoverable\":true}}}}",
        "{\"id\":4,\"subscribe\":{\"recoverable\":true,\"positioned\":true,\"epoch\":\"e1\",\"offset\":2,\"recovered\":true,\"was_recovering\":true,\"publications\":[{\"data\":{\"n\":3},\"offset\":3}]}}",
        "{\"push\":{\"channel\":\"news\",\"pub\":{\"data\":{\"n\":1},\"offset\":1,\"info\":{\"user\":\"u\",\"client\":\"c\",\"conn_info\":{}},\"tags\":{\"a\":\"b\"}}}}",
        "{\"id\":5,\"presence\":{\"presence\":{\"c\":{\"user\":\"u\",\"client\":\"c\"}}}}\n{\"id\":6,\"presence_stats\":{\"num_clients\":1,\"num_users\":1}}",
        "{\"id\":7,\"history\":{\"publications\":[],\"epoch\":\"\",\"offset\":0}}\n{\"id\":3,\"error\":{\"code\":103,\"message\":\"permission denied\"}}",
        "{\"push\":{\"channel\":\"c\",\"unsubscribe\":{\"code\":2500,\"reason\":\"r\"}}}\n{\"push\":{\"disconnect\":{\"code\":3001,\"reason\":\"shutdown\"}}}",
        "{\"push\":{\"connect\":{\"client\":\"c\",\"subs\":{\"#1\":{}},\"ping\":25,\"session\":\"s\"}}}",
    ];
    let mut seeds: Vec<Vec<u8>> = lines.iter().map(|l| l.as_bytes().to_vec()).collect();
    // Deep nesting inside a raw payload and inside the tags filter: must be an error or a value,
    // never a stack overflow.
    let deep = format!(r#"{{"publish":{{"channel":"c","data":{}{}}},"id":1}}"#, "[".repeat(5000), "]".repeat(5000));
    seeds.push(deep.into_bytes());
    let mut tf = String::from("{}");
    for _ in 0..300 {
        tf = format!(r#"{{"op":"not","nodes":[{tf}]}}"#);
    }
    seeds.push(format!(r#"{{"subscribe":{{"channel":"c","tf":{tf}}},"id":1}}"#).into_bytes());
    seeds
}

fn varint(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn protobuf_seeds() -> Vec<Vec<u8>> {
    let mut subs = BTreeMap::new();
    subs.insert(
        "s".to_owned(),
        SubscribeRequest { channel: "s".into(), recover: true, offset: 9, epoch: "e".into(), ..Default::default() },
    );
    let commands = vec![
        Command {
            id: 1,
            connect: Some(ConnectRequest {
                token: "t".into(),
                name: "go".into(),
                data: Bytes::from_static(&[0xFF, 0x00]),
                subs,
                ..Default::default()
            }),
            ..Default::default()
        },
        Command {
            id: 2,
            subscribe: Some(SubscribeRequest { channel: "news".into(), flag: 1, ..Default::default() }),
            ..Default::default()
        },
        Command {
            id: 3,
            publish: Some(PublishRequest { channel: "c".into(), data: Bytes::from_static(b"{\"a\":1}") }),
            ..Default::default()
        },
        Command {
            id: 4,
            history: Some(HistoryRequest {
                channel: "c".into(),
                limit: 10,
                since: Some(StreamPosition { offset: 1, epoch: "e".into() }),
                reverse: false,
            }),
            ..Default::default()
        },
        Command {
            id: 5,
            rpc: Some(RpcRequest { method: "m".into(), data: Bytes::from_static(b"1") }),
            ..Default::default()
        },
        Command::default(),
    ];
    let mut mut_presence = BTreeMap::new();
    mut_presence.insert("c".to_owned(), ClientInfo { user: "u".into(), client: "c".into(), ..Default::default() });
    let replies = vec![
        Reply {
            id: 1,
            connect: Some(ConnectResult { client: "c".into(), ping: 25, pong: true, ..Default::default() }),
            ..Default::default()
        },
        Reply {
            id: 2,
            subscribe: Some(SubscribeResult {
                recoverable: true,
                publications: vec![Publication { data: Bytes::from_static(&[1, 2]), offset: 1, ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        },
        Reply { id: 3, presence: Some(PresenceResult { presence: mut_presence }), ..Default::default() },
        Reply { id: 4, history: Some(HistoryResult::default()), ..Default::default() },
        Reply::push(Push {
            channel: "c".into(),
            publication: Some(Publication { data: Bytes::from_static(b"\"x\""), ..Default::default() }),
            ..Default::default()
        }),
        Reply::default(),
    ];
    let mut seeds = Vec::new();
    let mut all = Vec::new();
    for cmd in &commands {
        let mut one = Vec::new();
        encode_command(Encoding::Protobuf, cmd, &mut one);
        all.extend_from_slice(&one);
        seeds.push(one);
    }
    seeds.push(all);
    let mut all = Vec::new();
    for reply in &replies {
        let mut one = Vec::new();
        encode_reply(Encoding::Protobuf, reply, &mut one).unwrap();
        all.extend_from_slice(&one);
        seeds.push(one);
    }
    seeds.push(all);
    // A tags filter nested past prost's recursion limit.
    let mut node = Vec::new();
    for _ in 0..150 {
        let mut outer = vec![0x32];
        varint(node.len(), &mut outer);
        outer.extend_from_slice(&node);
        node = outer;
    }
    let mut sub = vec![0x0A, 0x01, b'c', 0x6A];
    varint(node.len(), &mut sub);
    sub.extend_from_slice(&node);
    let mut cmd = vec![0x08, 0x01, 0x2A];
    varint(sub.len(), &mut cmd);
    cmd.extend_from_slice(&sub);
    let mut framed = Vec::new();
    varint(cmd.len(), &mut framed);
    framed.extend_from_slice(&cmd);
    seeds.push(framed);
    seeds
}

fn upgrade_seeds() -> Vec<Vec<u8>> {
    let valid = "GET /connection/websocket HTTP/1.1\r\nHost: localhost:8000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: centrifuge-protobuf\r\nOrigin: http://localhost:8000\r\n\r\n";
    vec![
        valid.as_bytes().to_vec(),
        valid.replace("GET", "POST").into_bytes(),
        valid.replace(": 13", ": 8").into_bytes(),
        valid.replace("dGhlIHNhbXBsZSBub25jZQ==", "short").into_bytes(),
        valid.replace("Connection: Upgrade", "Connection: keep-alive, Upgrade").into_bytes(),
        valid.replace("centrifuge-protobuf", " centrifuge-json ,, centrifuge-protobuf ").into_bytes(),
        b"upgrade:websocket\nconnection:upgrade\nsec-websocket-version:13\nsec-websocket-key:dGhlIHNhbXBsZSBub25jZQ==\nsec-websocket-protocol:a\r,b".to_vec(),
    ]
}

/// First byte: the SSE id length (mod 8); then the id; then the push payload.
fn envelope_seeds() -> Vec<Vec<u8>> {
    let payloads: Vec<Vec<u8>> = vec![
        br#"{"a":1}"#.to_vec(),
        b"{\"a\":\r\n1,\r\"b\":\r\r2}".to_vec(),
        b"[1,\r2]\r".to_vec(),
        b"\r\n\"x\"\r\n".to_vec(),
        br#""escaped \n and \r stay escaped""#.to_vec(),
        b"{\"s\":\"raw \r in a string\"}".to_vec(),
        format!("\"{}\"", "x".repeat(300)).into_bytes(),
        vec![0xFF, 0x00, b'\n'],
        Vec::new(),
    ];
    let ids: [&[u8]; 4] = [b"", b"7:e1", b"a\nb", b"\r"];
    let mut seeds = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let id = ids[i % ids.len()];
        seeds.push([&[id.len() as u8][..], id, payload].concat());
    }
    seeds
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// `seeds` and the target's committed seed files (`fuzz/seeds/<target>/`).
fn with_committed(mut seeds: Vec<Vec<u8>>, target: &str) -> Vec<Vec<u8>> {
    seeds.extend(smoke::committed_seeds(env!("CARGO_MANIFEST_DIR"), target));
    seeds
}

#[test]
fn smoke_ws_frames() {
    smoke("ws_frames", 0x5EED_0001, &with_committed(ws_seeds(), "ws_frames"), 5000, 1000, &harness::ws_frames);
}

#[test]
fn smoke_decode_json() {
    let seeds = json_seeds();
    // The seeds themselves are meaningful: the command lines decode.
    for seed in &seeds[..10] {
        herald_proto::decode_commands(Encoding::Json, Bytes::copy_from_slice(seed), harness::MAX_COMMANDS)
            .expect("seed decodes");
    }
    smoke("decode_json", 0x5EED_0002, &with_committed(seeds, "decode_json"), 5000, 1000, &harness::decode_json);
}

#[test]
fn smoke_decode_protobuf() {
    smoke(
        "decode_protobuf",
        0x5EED_0003,
        &with_committed(protobuf_seeds(), "decode_protobuf"),
        5000,
        1000,
        &harness::decode_protobuf,
    );
}

#[test]
fn smoke_ws_upgrade() {
    smoke("ws_upgrade", 0x5EED_0004, &with_committed(upgrade_seeds(), "ws_upgrade"), 5000, 1000, &harness::ws_upgrade);
}

#[test]
fn smoke_envelopes() {
    smoke("envelopes", 0x5EED_0005, &with_committed(envelope_seeds(), "envelopes"), 5000, 1000, &harness::envelopes);
}

#[test]
fn harness_accepts_its_valid_seeds() {
    // A sanity check that the harness assertions hold on well-formed input (catches a harness
    // that would reject everything).
    for seed in ws_seeds() {
        harness::ws_frames(&seed);
    }
    let upgrade = upgrade_seeds().remove(0);
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut req = httparse::Request::new(&mut headers);
    assert!(req.parse(&upgrade).unwrap().is_complete());
    assert!(herald_proto::ws::check_upgrade("GET", req.headers).is_ok());
    for seed in envelope_seeds() {
        harness::envelopes(&seed);
    }
}

#[test]
fn committed_command_seeds_decode() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");
    for (path, encoding) in [
        ("decode_json/connect", Encoding::Json),
        ("decode_json/pipelined", Encoding::Json),
        ("decode_protobuf/connect", Encoding::Protobuf),
        ("decode_protobuf/subscribe_publish", Encoding::Protobuf),
    ] {
        let seed = std::fs::read(format!("{dir}/{path}")).expect("seed");
        herald_proto::decode_commands(encoding, Bytes::from(seed), harness::MAX_COMMANDS)
            .unwrap_or_else(|e| panic!("{path}: {e:?}"));
    }
}
