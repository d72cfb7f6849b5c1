//! Sans-IO tests of the session state machine (`herald_hub::Session`): connect, commands,
//! permissions, recovery, race-free subscribe, join/leave, timers and the server API, driven
//! through a recording link, a manual clock and `now_or_never` (the memory engine never pends).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use herald_hub::config::{ChannelOptions, RecoveryMode};
use herald_hub::node::{ApiPublish, Target};
use herald_hub::{Control, Flow, ServerSubscribe};
use herald_proto::codes::*;
use herald_proto::{
    Command, ConnectRequest, Envelope, FilterNode, HistoryRequest, PingRequest, RpcRequest, SendRequest,
    StreamPosition, SubscribeRequest, SubscribeResult,
};
use serde_json::json;
use support::*;

const ENVELOPES: [Envelope; 2] = [Envelope::WsJson, Envelope::WsProtobuf];

fn bytes(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn target(user: &str) -> Target {
    Target { user: user.into(), client: String::new() }
}

fn api_publish(env: &Env, channel: &str, req: &ApiPublish) -> Result<herald_hub::broker::PublishOutcome, u32> {
    env.node.api_publish(channel, req).now_or_never().expect("ready").map_err(|e| e.code)
}

fn recover_req(channel: &str, offset: u64, epoch: &str) -> SubscribeRequest {
    SubscribeRequest { channel: channel.into(), recover: true, offset, epoch: epoch.into(), ..Default::default() }
}

fn sub_token(claims: serde_json::Value) -> String {
    token(claims)
}

fn anonymous_env(f: impl FnOnce(&mut herald_hub::HubConfig)) -> Env {
    let mut cfg = base_config();
    cfg.client.allow_anonymous_connect_without_token = true;
    f(&mut cfg);
    Env::new(cfg)
}

fn anonymous(env: &Env) -> Client {
    let mut c = env.client();
    let res = c.connect_ok(&env.node, "");
    assert_eq!(c.session.user(), "");
    assert!(!res.client.is_empty());
    c
}

fn no_ping(cfg: &mut herald_hub::HubConfig) {
    cfg.client.ping_interval = Duration::ZERO;
}

// ---------------------------------------------------------------------------------------------
// Connect

#[test]
fn command_before_connect_is_bad_request() {
    let env = Env::base();
    let node = &env.node;
    let before = [
        subscribe_cmd("plain:a"),
        publish_cmd("plain:a", "{}"),
        presence_cmd("chat:a"),
        history_cmd(HistoryRequest { channel: "hist:a".into(), ..Default::default() }),
        refresh_cmd(&user_token("42")),
        Command { ping: Some(PingRequest {}), ..Default::default() },
        Command { rpc: Some(RpcRequest::default()), ..Default::default() },
    ];
    for cmd in before {
        let mut c = env.client();
        assert_eq!(c.disconnect(node, cmd), 3501);
        assert!(!c.session.is_connected());
    }
    // A pong `{}` and a send (both id 0) before connect.
    let mut c = env.client();
    assert_eq!(c.disconnect_raw(node, Command::default()), 3501);
    let mut c = env.client();
    assert_eq!(c.disconnect_raw(node, Command { send: Some(SendRequest::default()), ..Default::default() }), 3501);
    // A connect without an id.
    let mut c = env.client();
    assert_eq!(c.disconnect_raw(node, connect_cmd(&user_token("42"))), 3501);
    assert_eq!(node.hub().num_clients(), 0);
}

#[test]
fn second_connect_is_bad_request() {
    let env = Env::base();
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(&env.node, connect_cmd(&user_token("42"))), 3501);
}

#[test]
fn connect_with_valid_token() {
    let env = Env::base();
    for envelope in ENVELOPES {
        let mut c = env.client_with(envelope);
        let res = c.connect_ok(&env.node, &user_token("42"));
        assert_eq!(res.client, c.id());
        assert_eq!(res.version, VERSION);
        assert_eq!(res.ping, 25);
        assert!(res.pong);
        assert!(!res.expires);
        assert_eq!(res.ttl, 0);
        assert!(res.subs.is_empty());
        assert_eq!(res.time, 0, "server time is opt-in");
        assert!(c.session.is_connected());
        assert_eq!(c.session.user(), "42");
    }
    assert_eq!(env.node.hub().num_clients(), 2);
    assert_eq!(env.node.hub().num_users(), 1);
}

#[test]
fn connect_reply_json_shape() {
    let env = Env::base();
    let mut c = env.client();
    let mut cmd = connect_cmd(&user_token("42"));
    cmd.id = 1;
    assert_eq!(c.run(&env.node, cmd), Flow::Continue);
    let json = c.take_json();
    assert_eq!(
        json,
        vec![format!(r#"{{"id":1,"connect":{{"client":"{}","version":"{VERSION}","ping":25,"pong":true}}}}"#, c.id())]
    );
}

#[test]
fn connect_includes_server_time_when_enabled() {
    let mut cfg = base_config();
    cfg.client.connect_include_server_time = true;
    let env = Env::new(cfg);
    let mut c = env.client();
    let res = c.connect_ok(&env.node, &user_token("42"));
    assert_eq!(res.time, T0_MS);
}

#[test]
fn connect_token_expiry_sets_expires_and_ttl() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    let cases = [
        (json!({"sub": "42", "exp": now + 100}), Some(100)),
        // expire_at wins over exp.
        (json!({"sub": "42", "exp": now + 100, "expire_at": now + 50}), Some(50)),
        // expire_at 0: never expires (exp still verified).
        (json!({"sub": "42", "exp": now + 100, "expire_at": 0}), None),
        (json!({"sub": "42", "expire_at": now + 7}), Some(7)),
        (json!({"sub": "42"}), None),
    ];
    for envelope in ENVELOPES {
        for (claims, ttl) in &cases {
            let mut c = env.client_with(envelope);
            let res = c.connect_ok(node, &token(claims.clone()));
            assert_eq!(res.expires, ttl.is_some(), "{claims}");
            assert_eq!(res.ttl, ttl.unwrap_or(0), "{claims}");
        }
    }
}

#[test]
fn expired_token_is_error_109_then_unusable() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    for claims in [
        json!({"sub": "42", "exp": now - 1}),
        // exp must be strictly after now.
        json!({"sub": "42", "exp": now}),
        // nbf in the future is 109 too ("token not yet valid", below).
        json!({"sub": "42", "nbf": now + 10}),
    ] {
        let mut c = env.client();
        assert_eq!(c.error(node, connect_cmd(&token(claims.clone()))), 109, "{claims}");
        assert!(!c.session.is_connected());
        // The connection is unusable: anything else is a bad request, even a valid connect.
        assert_eq!(c.disconnect(node, connect_cmd(&user_token("42"))), 3501);
    }
    let mut c = env.client();
    assert_eq!(c.error(node, connect_cmd(&token(json!({"sub": "42", "exp": now - 1})))), 109);
    assert_eq!(c.disconnect(node, subscribe_cmd("plain:a")), 3501);
    let mut c = env.client();
    assert_eq!(c.error(node, connect_cmd(&token(json!({"sub": "42", "exp": now - 1})))), 109);
    assert_eq!(c.disconnect_raw(node, Command::default()), 3501, "even a pong");
    assert_eq!(node.hub().num_clients(), 0, "failed connects are not registered");
}

#[test]
fn connect_expire_at_in_the_past_is_error_110() {
    let env = Env::base();
    let now = env.now();
    let mut c = env.client();
    let t = token(json!({"sub": "42", "exp": now + 100, "expire_at": now - 5}));
    assert_eq!(c.error(&env.node, connect_cmd(&t)), 110);
    assert_eq!(c.disconnect(&env.node, subscribe_cmd("plain:a")), 3501);
}

#[test]
fn invalid_connection_token_is_3500() {
    let env = Env::base();
    let node = &env.node;
    let wrong_secret = herald_auth::sign_hmac(&json!({"sub": "42"}), "another-secret", "HS256").unwrap();
    let valid = user_token("42");
    let (head, _) = valid.rsplit_once('.').unwrap();
    let tampered = format!("{head}.AAAA");
    for t in [
        wrong_secret,
        tampered,
        "not-a-jwt".to_owned(),
        "a.b.c".to_owned(),
        // A connection token must not carry `channel`.
        token(json!({"sub": "42", "channel": "plain:a"})),
    ] {
        let mut c = env.client();
        assert_eq!(c.disconnect(node, connect_cmd(&t)), 3500, "{t}");
    }
    assert_eq!(node.hub().num_clients(), 0);
}

#[test]
fn connect_without_token() {
    // Anonymous allowed: user "".
    let env = anonymous_env(|_| {});
    let mut c = env.client();
    let res = c.connect_ok(&env.node, "");
    assert_eq!(res.client, c.id());
    assert_eq!(c.session.user(), "");
    // Not allowed: bad request.
    let env = Env::base();
    let mut c = env.client();
    assert_eq!(c.disconnect(&env.node, connect_cmd("")), 3501);
}

#[test]
fn anonymous_connection_tokens() {
    let env = Env::base();
    let mut c = env.client();
    c.connect_ok(&env.node, &token(json!({"sub": ""})));
    assert_eq!(c.session.user(), "");
    let mut c = env.client();
    c.connect_ok(&env.node, &token(json!({"info": {"a": 1}})));
    assert_eq!(c.session.user(), "");

    let mut cfg = base_config();
    cfg.client.disallow_anonymous_connection_tokens = true;
    let env = Env::new(cfg);
    for claims in [json!({"sub": ""}), json!({"info": {"a": 1}})] {
        let mut c = env.client();
        assert_eq!(c.disconnect(&env.node, connect_cmd(&token(claims))), 3507);
    }
    let mut c = env.client();
    c.connect_ok(&env.node, &user_token("42"));
}

#[test]
fn user_connection_limit() {
    let env = anonymous_env(|cfg| cfg.client.user_connection_limit = 2);
    let node = &env.node;
    let mut a = env.connected("42");
    let _b = env.connected("42");
    let mut c = env.client();
    assert_eq!(c.disconnect(node, connect_cmd(&user_token("42"))), 3504);
    // Other users are not affected.
    let _d = env.connected("43");
    // Anonymous connections are not limited.
    let _anon: Vec<Client> = (0..4).map(|_| anonymous(&env)).collect();
    // After one connection of the user goes away, another may connect.
    a.close(node);
    let _e = env.connected("42");
    let mut f = env.client();
    assert_eq!(f.disconnect(node, connect_cmd(&user_token("42"))), 3504);
}

#[test]
fn user_connection_limit_evicting_the_oldest() {
    let env = anonymous_env(|cfg| {
        cfg.client.user_connection_limit = 2;
        cfg.client.user_connection_limit_mode = "evict_oldest".into();
    });
    let a = env.connected("42");
    env.clock.advance(10);
    let b = env.connected("42");
    env.clock.advance(10);
    // A third connection is admitted; the oldest one is closed with 3504.
    let c = env.connected("42");
    assert_eq!(a.closed(), Some(3504));
    assert_eq!((b.closed(), c.closed()), (None, None));
    let _other = env.connected("43");
    assert_eq!(b.closed(), None);
    // With a limit of 1: one connection per user, the newest wins.
    let env = anonymous_env(|cfg| {
        cfg.client.user_connection_limit = 1;
        cfg.client.user_connection_limit_mode = "evict_oldest".into();
    });
    let first = env.connected("7");
    env.clock.advance(10);
    let second = env.connected("7");
    assert_eq!((first.closed(), second.closed()), (Some(3504), None));
}

#[test]
fn user_connection_limit_mode_is_checked() {
    let mut cfg = base_config();
    cfg.client.user_connection_limit_mode = "kick".into();
    let identity = herald_hub::NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let clock = std::sync::Arc::new(herald_hub::ManualClock::new(0));
    let err = herald_hub::Node::new(cfg, identity, clock).err().expect("refused");
    assert!(err.to_string().contains("client.user_connection_limit_mode"), "{err}");
}

#[test]
fn token_channels_create_server_side_subscriptions() {
    let env = Env::base();
    let node = &env.node;
    let t = token(json!({"sub": "42", "channels": ["plain:a", "rec:b"]}));
    let mut c = env.client();
    let (res, after) = c.connect_full(node, ConnectRequest { token: t, ..Default::default() });
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["plain:a", "rec:b"]);
    assert_eq!(res.subs["plain:a"], SubscribeResult::default());
    let rec = &res.subs["rec:b"];
    assert!(rec.recoverable && rec.positioned);
    assert_eq!(rec.offset, 0);
    assert_eq!(rec.epoch.len(), 4);
    assert_eq!(node.hub().num_subscribers("plain:a"), 1);
    assert_eq!(c.session.channels().count(), 2);
    // Publications flow to server-side subscriptions.
    env.publish("plain:a", r#"{"n":1}"#);
    env.publish("rec:b", r#"{"n":2}"#);
    let got = c.take();
    assert_eq!(pubs(&got, "plain:a"), [(0, r#"{"n":1}"#.to_owned())]);
    assert_eq!(pubs(&got, "rec:b"), [(1, r#"{"n":2}"#.to_owned())]);
    // A client subscribe to a server-side channel: already subscribed.
    assert_eq!(c.error(node, subscribe_cmd("plain:a")), 105);
}

#[test]
fn token_subs_claim_wins_over_channels_and_applies_overrides() {
    let env = Env::base();
    let node = &env.node;
    let t = token(json!({
        "sub": "42",
        "channels": ["plain:ignored"],
        "subs": {
            "plain:a": {
                "info": {"role": "x"},
                "data": {"hello": 1},
                "override": {"join_leave": {"value": true}, "force_push_join_leave": {"value": true}}
            },
            "hist:b": {"override": {"force_recovery": {"value": true}}},
            "hist:c": {}
        }
    }));
    for envelope in ENVELOPES {
        let mut c = env.client_with(envelope);
        let (res, after) = c.connect_full(node, ConnectRequest { token: t.clone(), ..Default::default() });
        assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["hist:b", "hist:c", "plain:a"]);
        assert_eq!(text(&res.subs["plain:a"].data), r#"{"hello":1}"#);
        assert!(res.subs["hist:b"].recoverable && res.subs["hist:b"].positioned);
        assert!(!res.subs["hist:c"].positioned, "no override: namespace options");
        // join_leave + force_push_join_leave overrides: the client gets its own join, after the
        // connect reply, carrying the subs entry's info as chan_info.
        let j = joins(&after, "plain:a");
        assert_eq!(j.len(), 1, "{after:?}");
        assert_eq!(j[0].client, c.id());
        assert_eq!(j[0].user, "42");
        assert_eq!(text(&j[0].chan_info), r#"{"role":"x"}"#);
        c.close(node);
    }
}

#[test]
fn unknown_namespace_in_token_channels_is_error_102() {
    let env = Env::base();
    let node = &env.node;
    for t in [
        token(json!({"sub": "42", "channels": ["plain:a", "nope:x"]})),
        token(json!({"sub": "42", "subs": {"nope:x": {}}})),
    ] {
        let mut c = env.client();
        assert_eq!(c.error(node, connect_cmd(&t)), 102);
        assert_eq!(c.disconnect(node, subscribe_cmd("plain:a")), 3501);
    }
    assert_eq!(node.hub().num_subscribers("plain:a"), 0);
    assert_eq!(node.hub().num_clients(), 0);
}

#[test]
fn personal_channel() {
    let mut cfg = base_config();
    cfg.client.allow_anonymous_connect_without_token = true;
    cfg.client.subscribe_to_user_personal_channel.enabled = true;
    cfg.client.subscribe_to_user_personal_channel.personal_channel_namespace = "personal".into();
    cfg.channel.namespaces.push(ns("personal", ChannelOptions { presence: true, ..history(10, 60) }));
    let env = Env::new(cfg);
    let node = &env.node;
    let mut c = env.client();
    let res = c.connect_ok(node, &user_token("42"));
    assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["personal:#42"]);
    let presence = node.api_presence("personal:#42").now_or_never().unwrap().unwrap();
    assert_eq!(presence.keys().collect::<Vec<_>>(), [&c.id()]);
    env.publish("personal:#42", r#"{"dm":1}"#);
    assert_eq!(pubs(&c.take(), "personal:#42"), [(1, r#"{"dm":1}"#.to_owned())]);
    // Anonymous connections have no personal channel.
    let mut a = env.client();
    assert!(a.connect_ok(node, "").subs.is_empty());
    // A token channel equal to the personal channel is not duplicated.
    let mut d = env.client();
    let res = d.connect_ok(node, &token(json!({"sub": "43", "channels": ["personal:#43"]})));
    assert_eq!(res.subs.len(), 1);

    // Without a personal namespace the channel is `#user` (top-level options).
    let mut cfg = base_config();
    cfg.client.subscribe_to_user_personal_channel.enabled = true;
    let env = Env::new(cfg);
    let mut c = env.client();
    let res = c.connect_ok(&env.node, &user_token("42"));
    assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["#42"]);
}

#[test]
fn connect_subs_recover_server_side_subscription() {
    let env = Env::base();
    let node = &env.node;
    for i in 1..=3 {
        env.publish("rec:feed", &format!(r#"{{"n":{i}}}"#));
    }
    let (top, epoch) = env.top("rec:feed");
    assert_eq!(top, 3);
    let t = token(json!({"sub": "42", "channels": ["rec:feed"]}));
    for envelope in ENVELOPES {
        let mut c = env.client_with(envelope);
        let mut subs = BTreeMap::new();
        subs.insert("rec:feed".to_owned(), recover_req("", 1, &epoch));
        let (res, after) = c.connect_full(node, ConnectRequest { token: t.clone(), subs, ..Default::default() });
        let r = &res.subs["rec:feed"];
        assert!(r.recovered && r.was_recovering && r.recoverable && r.positioned);
        assert_eq!(r.offset, 1, "the client's own offset");
        assert_eq!(r.epoch, epoch);
        let offsets: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [2, 3]);
        assert_eq!(text(&r.publications[0].data), r#"{"n":2}"#);
        assert!(after.is_empty(), "recovered publications are not pushed again: {after:?}");
        c.close(node);
    }
    // Wrong epoch: not recovered, position at the top, nothing returned.
    let mut c = env.client();
    let mut subs = BTreeMap::new();
    subs.insert("rec:feed".to_owned(), recover_req("", 1, "_"));
    let res = c.connect_req_ok(node, ConnectRequest { token: t, subs, ..Default::default() });
    let r = &res.subs["rec:feed"];
    assert!(r.was_recovering && !r.recovered);
    assert_eq!((r.offset, r.epoch.as_str()), (3, epoch.as_str()));
    assert!(r.publications.is_empty());
    // Later publications are pushed.
    env.publish("rec:feed", r#"{"n":4}"#);
    assert_eq!(pubs(&c.take(), "rec:feed"), [(4, r#"{"n":4}"#.to_owned())]);
}

#[test]
fn connect_subs_requested_by_client() {
    let env = Env::base();
    let node = &env.node;
    let mut subs = BTreeMap::new();
    for ch in ["plain:x", "closed:y", "$plain:z", "users:a#42", "users:a#43", "strict:UP"] {
        subs.insert(ch.to_owned(), SubscribeRequest::default());
    }
    let mut c = env.client();
    let res = c.connect_req_ok(node, ConnectRequest { token: user_token("42"), subs, ..Default::default() });
    // Only channels the client could subscribe to without a token.
    assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["plain:x", "users:a#42"]);
    // An unknown namespace is a bad request.
    let mut subs = BTreeMap::new();
    subs.insert("nope:x".to_owned(), SubscribeRequest::default());
    let mut c = env.client();
    let cmd = Command {
        connect: Some(ConnectRequest { token: user_token("42"), subs, ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(c.disconnect(node, cmd), 3501);
}

#[test]
fn channel_limit_at_connect_is_3505() {
    let mut cfg = base_config();
    cfg.client.channel_limit = 2;
    let env = Env::new(cfg);
    let mut c = env.client();
    let t = token(json!({"sub": "42", "channels": ["plain:a", "plain:b", "plain:c"]}));
    assert_eq!(c.disconnect(&env.node, connect_cmd(&t)), 3505);
    assert_eq!(env.node.hub().num_subscribers("plain:a"), 0);
    let mut c = env.client();
    let res = c.connect_ok(&env.node, &token(json!({"sub": "42", "channels": ["plain:a", "plain:b"]})));
    assert_eq!(res.subs.len(), 2);
    // At the limit, a client subscribe is refused with 106.
    assert_eq!(c.error(&env.node, subscribe_cmd("plain:c")), 106);
}

// ---------------------------------------------------------------------------------------------
// Subscribe: permissions and validation

#[test]
fn subscribe_validation_errors() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    assert_eq!(c.error(node, subscribe_cmd("nope:x")), 102);
    // Length is checked before the namespace (so an over-long unknown namespace is 107).
    assert_eq!(c.error(node, subscribe_cmd(&format!("plain:{}", "x".repeat(250)))), 107);
    assert_eq!(c.error(node, subscribe_cmd(&format!("nope:{}", "x".repeat(251)))), 107);
    c.subscribe_ok(node, &format!("plain:{}", "x".repeat(249)));
    // Regex mismatch, and non-ASCII without a regex.
    assert_eq!(c.error(node, subscribe_cmd("strict:UPPER")), 107);
    c.subscribe_ok(node, "strict:lower1");
    assert_eq!(c.error(node, subscribe_cmd("plain:café")), 107);
    assert_eq!(c.error(node, subscribe_cmd("café")), 107);
    // Tags filter is not supported.
    let tf = SubscribeRequest { tf: Some(FilterNode { key: "k".into(), ..Default::default() }), ..sub_req("plain:t") };
    assert_eq!(c.error(node, subscribe_with(tf)), 107);
    // Map / shared-poll subscription types are not available.
    assert_eq!(c.error(node, subscribe_with(SubscribeRequest { sub_type: 1, ..sub_req("plain:m") })), 108);
    // Delta: fossil is accepted (not negotiated), anything else is a bad request.
    let (res, _) = c.subscribe_req(node, SubscribeRequest { delta: "fossil".into(), ..sub_req("plain:d") });
    assert!(!res.delta);
    assert!(c.session.is_connected());
    assert_eq!(
        c.disconnect(node, subscribe_with(SubscribeRequest { delta: "bogus".into(), ..sub_req("plain:e") })),
        3501
    );
    // Empty channel.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, subscribe_cmd("")), 3501);
    // A request with id 0 that is not `send`.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect_raw(node, subscribe_cmd("plain:a")), 3501);
    assert_eq!(node.hub().num_subscribers("plain:a"), 0);
}

#[test]
fn subscribe_permissions() {
    let env = anonymous_env(|_| {});
    let node = &env.node;
    let mut c = env.connected("42");
    c.subscribe_ok(node, "plain:a");
    c.subscribe_ok(node, "top-level");
    assert_eq!(c.error(node, subscribe_cmd("closed:a")), 103);
    // Private channels need a token.
    assert_eq!(c.error(node, subscribe_cmd("$plain:secret")), 103);
    // Anonymous connections: for_client alone is not enough.
    let mut a = anonymous(&env);
    assert_eq!(a.error(node, subscribe_cmd("plain:a")), 103);
    a.subscribe_ok(node, "anon:a");
    assert_eq!(a.error(node, subscribe_cmd("closed:a")), 103);
}

#[test]
fn subscribe_user_limited_channels() {
    let env = anonymous_env(|_| {});
    let node = &env.node;
    let mut c = env.connected("42");
    c.subscribe_ok(node, "users:room#42,43");
    c.subscribe_ok(node, "users:dm#42");
    assert_eq!(c.error(node, subscribe_cmd("users:room#4,43")), 103);
    assert_eq!(c.error(node, subscribe_cmd("users:room#")), 103);
    let mut d = env.connected("43");
    d.subscribe_ok(node, "users:room#42,43");
    // Without `allow_user_limited_channels`, `#` is an ordinary character.
    c.subscribe_ok(node, "plain:room#99");
    assert_eq!(c.error(node, subscribe_cmd("closed:room#42")), 103);
    // Anonymous: only a literal empty entry matches.
    let mut a = anonymous(&env);
    assert_eq!(a.error(node, subscribe_cmd("users:room#42")), 103);
}

#[test]
fn subscribe_with_subscription_token() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        let t = sub_token(json!({
            "sub": "42", "channel": "$plain:s", "exp": now + 60, "info": {"i": 1}, "data": {"d": 2}
        }));
        let (res, rest) = c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
        assert!(rest.is_empty());
        assert!(res.expires);
        assert_eq!(res.ttl, 60);
        assert_eq!(text(&res.data), r#"{"d":2}"#);
        // A token also works on a channel the client could not subscribe to otherwise.
        let t = sub_token(json!({"sub": "42", "channel": "closed:x"}));
        let (res, _) = c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("closed:x") });
        assert!(!res.expires);
        // The `client` claim, when set, must match.
        let t = sub_token(json!({"sub": "42", "channel": "$plain:mine", "client": c.id()}));
        c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:mine") });
        // Overrides from the token: join/leave pushed to this subscriber, with the token's info.
        let t = sub_token(json!({
            "sub": "42", "channel": "$plain:jl", "info": {"ci": true},
            "override": {"join_leave": {"value": true}, "force_push_join_leave": {"value": true}}
        }));
        let (_, rest) = c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:jl") });
        let j = joins(&rest, "$plain:jl");
        assert_eq!(j.len(), 1);
        assert_eq!(text(&j[0].chan_info), r#"{"ci":true}"#);
    }
}

#[test]
fn subscription_token_errors() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    let mut c = env.connected("42");
    let with = |t: String| subscribe_with(SubscribeRequest { token: t, ..sub_req("$plain:s") });
    // Expired (exp not after now) → 109.
    assert_eq!(c.error(node, with(sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": now - 1})))), 109);
    assert_eq!(c.error(node, with(sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": now})))), 109);
    // Invalid (bad signature, malformed, no channel claim) → 103.
    let bad = herald_auth::sign_hmac(&json!({"sub": "42", "channel": "$plain:s"}), "other", "HS256").unwrap();
    assert_eq!(c.error(node, with(bad)), 103);
    assert_eq!(c.error(node, with("garbage".into())), 103);
    assert_eq!(c.error(node, with(sub_token(json!({"sub": "42"})))), 103);
    // expire_at in the past with a valid exp → 110.
    let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": now + 60, "expire_at": now - 1}));
    assert_eq!(c.error(node, with(t)), 110);
    let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "expire_at": now}));
    assert_eq!(c.error(node, with(t)), 110);
    assert_eq!(node.hub().num_subscribers("$plain:s"), 0);
    // Wrong channel, wrong user, wrong client → disconnect 3500.
    for claims in [
        json!({"sub": "42", "channel": "$plain:other"}),
        json!({"sub": "43", "channel": "$plain:s"}),
        json!({"sub": "", "channel": "$plain:s"}),
        json!({"sub": "42", "channel": "$plain:s", "client": "someone-else"}),
    ] {
        let mut c = env.connected("42");
        assert_eq!(c.disconnect(node, with(sub_token(claims.clone()))), 3500, "{claims}");
    }
}

#[test]
fn subscribe_already_subscribed_and_channel_limit() {
    let mut cfg = base_config();
    cfg.client.channel_limit = 2;
    let env = Env::new(cfg);
    let node = &env.node;
    let mut c = env.connected("42");
    c.subscribe_ok(node, "plain:a");
    assert_eq!(c.error(node, subscribe_cmd("plain:a")), 105);
    c.subscribe_ok(node, "plain:b");
    assert_eq!(c.error(node, subscribe_cmd("plain:c")), 106);
    // 105 is checked before the limit.
    assert_eq!(c.error(node, subscribe_cmd("plain:b")), 105);
    c.call(node, unsubscribe_cmd("plain:a"));
    c.subscribe_ok(node, "plain:c");
}

#[test]
fn subscribe_client_options_need_permission() {
    let mut cfg = base_config();
    cfg.channel.namespaces.push(ns(
        "allowpos",
        ChannelOptions { allow_subscribe_for_client: true, allow_positioning: true, ..Default::default() },
    ));
    cfg.channel.namespaces.push(ns(
        "allowrec",
        ChannelOptions { allow_subscribe_for_client: true, allow_recovery: true, ..history(10, 60) },
    ));
    cfg.channel.namespaces.push(ns(
        "allowrecnohist",
        ChannelOptions { allow_subscribe_for_client: true, allow_recovery: true, ..Default::default() },
    ));
    let env = Env::new(cfg);
    let node = &env.node;
    let mut c = env.connected("42");
    let positioned = |ch: &str| SubscribeRequest { positioned: true, ..sub_req(ch) };
    let recoverable = |ch: &str| SubscribeRequest { recoverable: true, ..sub_req(ch) };
    // No permission: plain subscription.
    assert_eq!(c.subscribe_req(node, positioned("plain:a")).0, SubscribeResult::default());
    assert_eq!(c.subscribe_req(node, recoverable("plain:b")).0, SubscribeResult::default());
    // allow_positioning.
    let (r, _) = c.subscribe_req(node, positioned("allowpos:a"));
    assert!(r.positioned && !r.recoverable);
    assert_eq!(r.epoch.len(), 4);
    // allow_recovery, and history access (hist: allow_history_for_client).
    let (r, _) = c.subscribe_req(node, recoverable("allowrec:a"));
    assert!(r.positioned && r.recoverable);
    let (r, _) = c.subscribe_req(node, recoverable("hist:a"));
    assert!(r.positioned && r.recoverable);
    let (r, _) = c.subscribe_req(node, positioned("hist:b"));
    assert!(r.positioned && !r.recoverable);
    // Recovery without history cannot work: Herald keeps positioning only.
    let (r, _) = c.subscribe_req(node, recoverable("allowrecnohist:a"));
    assert!(r.positioned && !r.recoverable);
}

// ---------------------------------------------------------------------------------------------
// Subscribe: positioning and recovery (reference §5.3)

#[test]
fn not_positioned_subscription_result() {
    let env = Env::base();
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("plain:a", 5, "abcd"));
    assert_eq!(r, SubscribeResult { was_recovering: true, ..Default::default() });
    assert_eq!(c.subscribe_ok(&env.node, "plain:b"), SubscribeResult::default());
}

#[test]
fn positioned_only_result() {
    let env = Env::base();
    env.publish("pos:a", "1");
    env.publish("pos:a", "2");
    let (top, epoch) = env.top("pos:a");
    let mut c = env.connected("42");
    let r = c.subscribe_ok(&env.node, "pos:a");
    assert_eq!(r, SubscribeResult { positioned: true, offset: top, epoch: epoch.clone(), ..Default::default() });
    assert_eq!(top, 2);
    // Asking to recover on a positioned-only channel returns the top, no publications.
    let mut d = env.connected("42");
    let (r, _) = d.subscribe_req(&env.node, recover_req("pos:a", 1, &epoch));
    assert!(!r.recovered && !r.recoverable && r.positioned);
    assert_eq!(r.offset, 2);
    assert!(r.publications.is_empty());
}

#[test]
fn recoverable_without_recover_returns_top() {
    let env = Env::base();
    for i in 0..3 {
        env.publish("rec:a", &i.to_string());
    }
    let (_, epoch) = env.top("rec:a");
    let mut c = env.connected("42");
    let r = c.subscribe_ok(&env.node, "rec:a");
    assert_eq!(r, SubscribeResult { recoverable: true, positioned: true, offset: 3, epoch, ..Default::default() });
    // A subscription to an empty stream fixes its epoch.
    let r = c.subscribe_ok(&env.node, "rec:empty");
    assert_eq!(r.offset, 0);
    assert_eq!(r.epoch, env.top("rec:empty").1);
}

#[test]
fn recovery_possible_returns_missed_publications() {
    let env = Env::base();
    let mut round = 0;
    for envelope in ENVELOPES {
        for wildcard_epoch in [false, true] {
            round += 1;
            let channel = format!("rec:a{round}");
            for i in 1..=5 {
                env.publish(&channel, &format!(r#"{{"n":{i}}}"#));
            }
            let (top, epoch) = env.top(&channel);
            assert_eq!(top, 5);
            let req_epoch = if wildcard_epoch { "" } else { epoch.as_str() };
            let mut c = env.connected_with(envelope, "42");
            let (r, rest) = c.subscribe_req(&env.node, recover_req(&channel, 2, req_epoch));
            assert!(rest.is_empty(), "recovered publications are in the reply only");
            assert!(r.recovered && r.was_recovering && r.recoverable && r.positioned);
            assert_eq!(r.offset, 2, "the client's own offset");
            assert_eq!(r.epoch, epoch);
            let got: Vec<(u64, String)> = r.publications.iter().map(|p| (p.offset, text(&p.data))).collect();
            assert_eq!(got, (3..=5).map(|i| (i, format!(r#"{{"n":{i}}}"#))).collect::<Vec<_>>());
            let want = SubscribeResult {
                recoverable: true,
                positioned: true,
                was_recovering: true,
                recovered: true,
                offset: 2,
                epoch: epoch.clone(),
                publications: r.publications.clone(),
                ..Default::default()
            };
            assert_eq!(r, want);
            // Live publications continue after the recovered ones.
            let n = env.publish(&channel, r#"{"live":1}"#);
            assert_eq!(n, 6);
            assert_eq!(pubs(&c.take(), &channel), [(6, r#"{"live":1}"#.to_owned())]);
        }
    }
}

#[test]
fn recovery_at_top_is_recovered_with_nothing() {
    let env = Env::base();
    for i in 1..=3 {
        env.publish("rec:a", &i.to_string());
    }
    let (_, epoch) = env.top("rec:a");
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("rec:a", 3, &epoch));
    assert!(r.recovered && r.was_recovering);
    assert_eq!(r.offset, 3);
    assert!(r.publications.is_empty());
}

fn assert_unrecovered(r: &SubscribeResult, top: u64, epoch: &str) {
    // Reference §5.3, "recovery requested and not possible": position at the stream top, no
    // partial recovery.
    let want = SubscribeResult {
        recoverable: true,
        positioned: true,
        was_recovering: true,
        recovered: false,
        offset: top,
        epoch: epoch.into(),
        ..Default::default()
    };
    assert_eq!(r, &want);
}

#[test]
fn recovery_impossible_cases() {
    let mut cfg = base_config();
    cfg.channel.namespaces.push(ns(
        "small",
        ChannelOptions { force_recovery: true, allow_subscribe_for_client: true, ..history(3, 300) },
    ));
    let env = Env::new(cfg);
    let node = &env.node;
    for i in 1..=5 {
        env.publish("rec:a", &i.to_string());
    }
    let (top, epoch) = env.top("rec:a");
    let mut c = env.connected("42");
    // Epoch mismatch, including the SDK's "_" sentinel.
    let (r, _) = c.subscribe_req(node, recover_req("rec:a", 2, "zzzz"));
    assert_unrecovered(&r, top, &epoch);
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(node, recover_req("rec:a", 5, "_"));
    assert_unrecovered(&r, top, &epoch);
    // Offset ahead of the top.
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(node, recover_req("rec:a", 9, &epoch));
    assert_unrecovered(&r, top, &epoch);
    // History trimmed (size 3): client at 1, history keeps 4..=6.
    for i in 1..=6 {
        env.publish("small:a", &i.to_string());
    }
    let (stop, sepoch) = env.top("small:a");
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(node, recover_req("small:a", 1, &sepoch));
    assert_unrecovered(&r, stop, &sepoch);
    // ... while a client at 3 recovers 4..=6.
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(node, recover_req("small:a", 3, &sepoch));
    assert!(r.recovered);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [4, 5, 6]);
}

#[test]
fn recovery_after_history_ttl_keeps_position() {
    let env = Env::base();
    for i in 1..=3 {
        env.publish("rec:a", &i.to_string());
    }
    let (_, epoch) = env.top("rec:a");
    // rec: history_ttl 300 s. The items expire; offset and epoch stay.
    env.clock.advance(301_000);
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("rec:a", 1, &epoch));
    assert_unrecovered(&r, 3, &epoch);
    // A client already at the top still recovers (nothing missed).
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("rec:a", 3, &epoch));
    assert!(r.recovered);
    assert_eq!(r.offset, 3);
    // The stream continues from the kept position.
    assert_eq!(env.publish("rec:a", "4"), 4);
}

#[test]
fn recovery_after_meta_ttl_gets_a_new_epoch() {
    let mut cfg = base_config();
    cfg.channel.namespaces.push(ns(
        "short",
        ChannelOptions {
            force_recovery: true,
            allow_subscribe_for_client: true,
            history_meta_ttl: Duration::from_secs(60),
            ..history(10, 30)
        },
    ));
    let env = Env::new(cfg);
    env.publish("short:a", "1");
    env.publish("short:a", "2");
    let (_, old) = env.top("short:a");
    env.clock.advance(61_000);
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("short:a", 2, &old));
    assert!(r.was_recovering && !r.recovered);
    assert_ne!(r.epoch, old, "the stream was dropped and recreated");
    assert_eq!(r.offset, 0);
}

#[test]
fn recovery_publication_limit() {
    let mut cfg = base_config();
    cfg.client.recovery_max_publication_limit = 3;
    let env = Env::new(cfg);
    for i in 1..=5 {
        env.publish("rec:a", &i.to_string());
    }
    let (top, epoch) = env.top("rec:a");
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("rec:a", 1, &epoch));
    assert_unrecovered(&r, top, &epoch);
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("rec:a", 2, &epoch));
    assert!(r.recovered);
    assert_eq!(r.publications.len(), 3);
}

#[test]
fn reject_unrecovered_flag_is_error_112() {
    let env = Env::base();
    let node = &env.node;
    for i in 1..=3 {
        env.publish("rec:a", &i.to_string());
    }
    let (_, epoch) = env.top("rec:a");
    let mut c = env.connected("42");
    for flag in [2, 3] {
        let req = SubscribeRequest { flag, ..recover_req("rec:a", 1, "_") };
        assert_eq!(c.error(node, subscribe_with(req)), 112);
        assert_eq!(c.session.channels().count(), 0, "nothing left behind");
        assert_eq!(node.hub().num_subscribers("rec:a"), 0);
    }
    // Recoverable positions are fine with the flag.
    let (r, _) = c.subscribe_req(node, SubscribeRequest { flag: 3, ..recover_req("rec:a", 1, &epoch) });
    assert!(r.recovered);
    assert_eq!(r.publications.len(), 2);
    // Flag 1 (channel compaction) alone is ignored: no id in the result.
    let mut d = env.connected("42");
    let (r, _) = d.subscribe_req(node, SubscribeRequest { flag: 1, ..recover_req("rec:a", 1, "_") });
    assert!(!r.recovered);
    assert_eq!(r.id, 0);
}

#[test]
fn cache_recovery_mode_returns_latest_only() {
    let mut cfg = base_config();
    cfg.channel.namespaces.push(ns(
        "cache",
        ChannelOptions {
            force_recovery: true,
            force_recovery_mode: RecoveryMode::Cache,
            allow_subscribe_for_client: true,
            ..history(10, 300)
        },
    ));
    let env = Env::new(cfg);
    for i in 1..=3 {
        env.publish("cache:a", &i.to_string());
    }
    let (_, epoch) = env.top("cache:a");
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("cache:a", 1, &epoch));
    assert!(r.recovered);
    assert_eq!(r.offset, 3);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [3]);
    let mut c = env.connected("42");
    let (r, _) = c.subscribe_req(&env.node, recover_req("cache:a", 3, &epoch));
    assert!(r.recovered);
    assert!(r.publications.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Race-free subscribe

/// Publications injected into the stream while the subscriber is pending (around the history
/// read) reach the client exactly once: in the reply when the read saw them, as pushes after the
/// reply otherwise.
#[test]
fn publications_during_pending_subscribe_come_after_the_reply_once() {
    for envelope in ENVELOPES {
        let env = Env::with_hooks(base_config());
        let hooks = env.hooks.clone().unwrap();
        let node = &env.node;
        env.publish("rec:a", "1");
        env.publish("rec:a", "2");
        let (_, epoch) = env.top("rec:a");
        hooks.inject(Phase::BeforeRead, "rec:a", "3", history_opts(10, 300));
        hooks.inject(Phase::AfterRead, "rec:a", "4", history_opts(10, 300));
        let mut c = env.connected_with(envelope, "42");
        let (r, rest) = c.subscribe_req(node, recover_req("rec:a", 1, &epoch));
        assert!(r.recovered);
        assert_eq!(r.offset, 1);
        let recovered: Vec<(u64, String)> = r.publications.iter().map(|p| (p.offset, text(&p.data))).collect();
        assert_eq!(recovered, [(2, "2".to_owned()), (3, "3".to_owned())]);
        assert_eq!(pubs(&rest, "rec:a"), [(4, "4".to_owned())], "only the newer one, after the reply");
        assert_eq!(rest.len(), 1);
        env.publish("rec:a", "5");
        assert_eq!(pubs(&c.take(), "rec:a"), [(5, "5".to_owned())]);
    }
}

#[test]
fn positioned_subscribe_skips_what_the_position_covers() {
    let env = Env::with_hooks(base_config());
    let hooks = env.hooks.clone().unwrap();
    hooks.inject(Phase::BeforeRead, "pos:a", "1", history_opts(10, 300));
    hooks.inject(Phase::AfterRead, "pos:a", "2", history_opts(10, 300));
    hooks.inject(Phase::AfterRead, "pos:a", "3", history_opts(10, 300));
    let mut c = env.connected("42");
    let (r, rest) = c.subscribe_req(&env.node, sub_req("pos:a"));
    assert_eq!(r.offset, 1, "the read saw the first publication");
    assert_eq!(pubs(&rest, "pos:a"), [(2, "2".to_owned()), (3, "3".to_owned())]);
}

#[test]
fn connect_time_server_subs_are_race_free() {
    let env = Env::with_hooks(base_config());
    let hooks = env.hooks.clone().unwrap();
    env.publish("rec:feed", "1");
    let (_, epoch) = env.top("rec:feed");
    hooks.inject(Phase::BeforeRead, "rec:feed", "2", history_opts(10, 300));
    hooks.inject(Phase::AfterRead, "rec:feed", "3", history_opts(10, 300));
    let mut subs = BTreeMap::new();
    subs.insert("rec:feed".to_owned(), recover_req("", 1, &epoch));
    let t = token(json!({"sub": "42", "channels": ["rec:feed"]}));
    let mut c = env.client();
    let (res, after) = c.connect_full(&env.node, ConnectRequest { token: t, subs, ..Default::default() });
    let r = &res.subs["rec:feed"];
    assert!(r.recovered);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [2]);
    assert_eq!(pubs(&after, "rec:feed"), [(3, "3".to_owned())]);
    assert_eq!(after.len(), 1);
}

#[test]
fn api_server_subscribe_is_race_free() {
    let env = Env::with_hooks(base_config());
    let hooks = env.hooks.clone().unwrap();
    env.publish("rec:x", "1");
    env.publish("rec:x", "2");
    let (_, epoch) = env.top("rec:x");
    hooks.inject(Phase::BeforeRead, "rec:x", "3", history_opts(10, 300));
    hooks.inject(Phase::AfterRead, "rec:x", "4", history_opts(10, 300));
    let mut c = env.connected("42");
    let sub = ServerSubscribe {
        channel: "rec:x".into(),
        recover_since: Some(StreamPosition { offset: 1, epoch: epoch.clone() }),
        ..Default::default()
    };
    env.node.api_subscribe(&target("42"), sub).now_or_never().expect("ready").unwrap();
    c.pump(&env.node);
    let got = c.take();
    let push = got[0].push.as_ref().unwrap();
    let s = push.subscribe.as_ref().expect("Subscribe push first");
    assert_eq!(push.channel, "rec:x");
    assert!(s.recoverable && s.positioned);
    assert_eq!(s.epoch, epoch);
    let offsets: Vec<u64> = pubs(&got, "rec:x").into_iter().map(|(o, _)| o).collect();
    assert_eq!(offsets, [2, 3, 4], "recovered then live, each once");
}

#[test]
fn publish_before_and_after_subscribe() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    // Positioned: the earlier publication is covered by the position.
    env.publish("pos:a", r#""before""#);
    let (r, rest) = c.subscribe_req(node, sub_req("pos:a"));
    assert_eq!(r.offset, 1);
    assert!(rest.is_empty());
    env.publish("pos:a", r#""after""#);
    assert_eq!(pubs(&c.take(), "pos:a"), [(2, r#""after""#.to_owned())]);
    // Not positioned: only publications after the subscribe arrive.
    env.publish("plain:a", r#""before""#);
    let r = c.subscribe_ok(node, "plain:a");
    assert_eq!(r, SubscribeResult::default());
    env.publish("plain:a", r#""after""#);
    env.publish("plain:a", r#""again""#);
    assert_eq!(pubs(&c.take(), "plain:a"), [(0, r#""after""#.to_owned()), (0, r#""again""#.to_owned())]);
    assert_eq!(c.closed(), None);
}

#[test]
fn history_failure_during_subscribe_is_3004_and_cleans_up() {
    let env = Env::with_hooks(base_config());
    let hooks = env.hooks.clone().unwrap();
    let mut c = env.connected("42");
    hooks.fail_history.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(c.disconnect(&env.node, subscribe_cmd("rec:a")), 3004);
    assert_eq!(c.session.channels().count(), 0);
    assert_eq!(env.node.hub().num_subscribers("rec:a"), 0);
}

// ---------------------------------------------------------------------------------------------
// Unsubscribe

#[test]
fn unsubscribe_semantics() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    c.subscribe_ok(node, "plain:a");
    env.publish("plain:a", "1");
    assert_eq!(pubs(&c.take(), "plain:a").len(), 1);
    let id = c.next_id();
    assert_eq!(c.call_json(node, unsubscribe_cmd("plain:a")), [format!(r#"{{"id":{id},"unsubscribe":{{}}}}"#)]);
    assert_eq!(node.hub().num_subscribers("plain:a"), 0);
    env.publish("plain:a", "2");
    assert!(c.take().is_empty(), "no pushes after unsubscribe");
    // Unsubscribing from a channel that is not subscribed (or does not exist) succeeds.
    for ch in ["plain:zzz", "nope:x"] {
        let replies = c.call(node, unsubscribe_cmd(ch));
        assert_eq!(replies.len(), 1);
        assert!(replies[0].unsubscribe.is_some() && replies[0].error.is_none());
    }
    // Resubscribing works.
    c.subscribe_ok(node, "plain:a");
    env.publish("plain:a", "3");
    assert_eq!(pubs(&c.take(), "plain:a"), [(0, "3".to_owned())]);
    // Empty channel.
    assert_eq!(c.disconnect(node, unsubscribe_cmd("")), 3501);
}

#[test]
fn unsubscribe_reply_protobuf() {
    let env = Env::base();
    let mut c = env.connected_with(Envelope::WsProtobuf, "42");
    c.subscribe_ok(&env.node, "plain:a");
    let replies = c.call(&env.node, unsubscribe_cmd("plain:a"));
    assert_eq!(replies.len(), 1);
    assert!(replies[0].unsubscribe.is_some(), "an empty result is still present");
}

// ---------------------------------------------------------------------------------------------
// Publish

fn publish_env() -> Env {
    anonymous_env(|cfg| {
        let pubc = ChannelOptions { allow_publish_for_client: true, ..Default::default() };
        cfg.channel.namespaces.push(ns("pubc", pubc.clone()));
        cfg.channel.namespaces.push(ns("pubanon", ChannelOptions { allow_publish_for_anonymous: true, ..pubc }));
        cfg.channel.namespaces.push(ns(
            "pubsub",
            ChannelOptions {
                allow_publish_for_subscriber: true,
                allow_subscribe_for_client: true,
                allow_subscribe_for_anonymous: true,
                ..Default::default()
            },
        ));
    })
}

#[test]
fn publish_delivers_with_client_info() {
    let env = Env::base();
    let node = &env.node;
    for envelope in ENVELOPES {
        let mut sub = env.connected_with(envelope, "7");
        sub.subscribe_ok(node, "hist:room");
        let mut p = env.client_with(envelope);
        p.connect_ok(node, &token(json!({"sub": "42", "info": {"name": "Ann"}})));
        let id = p.next_id();
        let replies = p.call(node, publish_cmd("hist:room", r#"{"text":"hi"}"#));
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].id, id);
        assert!(replies[0].publish.is_some() && replies[0].error.is_none());
        let got = publications(&sub.take());
        assert_eq!(got.len(), 1);
        let publication = &got[0];
        assert_eq!(text(&publication.data), r#"{"text":"hi"}"#);
        assert!(publication.offset > 0);
        let info = publication.info.as_ref().expect("publisher info");
        assert_eq!(info.user, "42");
        assert_eq!(info.client, p.id());
        assert_eq!(text(&info.conn_info), r#"{"name":"Ann"}"#);
        assert!(info.chan_info.is_empty(), "the publisher is not subscribed");
    }
}

#[test]
fn publish_info_carries_chan_info_of_a_subscribed_publisher() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    let t = sub_token(json!({"sub": "42", "channel": "$hist:room", "info": {"seat": 3}}));
    c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$hist:room") });
    let replies = c.call(node, publish_cmd("$hist:room", r#"{"x":1}"#));
    // The publisher is subscribed, so it gets its own publication too. As with Centrifugo's
    // memory engine, delivery is synchronous and may precede the publish reply.
    assert_eq!(replies.len(), 2);
    assert_eq!(replies.iter().filter(|r| r.publish.is_some() && r.id > 0).count(), 1);
    let got = publications(&replies);
    assert_eq!(got.len(), 1);
    assert_eq!(text(&got[0].info.as_ref().unwrap().chan_info), r#"{"seat":3}"#);
    assert_eq!(got[0].offset, 1);
    assert_eq!(got[0].epoch, env.top("$hist:room").1, "the first publication carries the epoch");
}

#[test]
fn publish_permissions() {
    let env = publish_env();
    let node = &env.node;
    let mut c = env.connected("42");
    // for_client.
    assert!(c.call(node, publish_cmd("pubc:a", "1"))[0].publish.is_some());
    // for_subscriber needs a subscription.
    assert_eq!(c.error(node, publish_cmd("pubsub:a", "1")), 103);
    c.subscribe_ok(node, "pubsub:a");
    let replies = c.call(node, publish_cmd("pubsub:a", "1"));
    assert!(replies.iter().any(|r| r.publish.is_some() && r.id > 0 && r.error.is_none()));
    assert_eq!(pubs(&replies, "pubsub:a"), [(0, "1".to_owned())]);
    // No rights.
    assert_eq!(c.error(node, publish_cmd("closed:a", "1")), 103);
    assert_eq!(c.error(node, publish_cmd("plain:a", "1")), 103);
    // Anonymous: for_client needs allow_publish_for_anonymous.
    let mut a = anonymous(&env);
    assert_eq!(a.error(node, publish_cmd("pubc:a", "1")), 103);
    assert!(a.call(node, publish_cmd("pubanon:a", "1"))[0].publish.is_some());
    a.subscribe_ok(node, "pubsub:b");
    assert_eq!(a.error(node, publish_cmd("pubsub:b", "1")), 103, "subscriber, but anonymous");
}

#[test]
fn publish_validation() {
    let env = publish_env();
    let node = &env.node;
    let mut c = env.connected("42");
    assert_eq!(c.error(node, publish_cmd("nope:a", "1")), 102);
    assert_eq!(c.error(node, publish_cmd("strict:UP", "1")), 107);
    assert_eq!(c.error(node, publish_cmd("pubc:a", "")), 107);
    assert_eq!(c.disconnect(node, publish_cmd("", "1")), 3501);
}

#[test]
fn publish_broker_failure_is_error_100() {
    let mut cfg = base_config();
    cfg.channel.namespaces.push(ns("pubc", ChannelOptions { allow_publish_for_client: true, ..Default::default() }));
    let env = Env::with_hooks(cfg);
    let hooks = env.hooks.clone().unwrap();
    let mut c = env.connected("42");
    hooks.fail_publish.store(true, std::sync::atomic::Ordering::SeqCst);
    let replies = c.call(&env.node, publish_cmd("pubc:a", "1"));
    let e = replies[0].error.as_ref().unwrap();
    assert_eq!(e.code, 100);
    assert!(e.temporary);
    assert_eq!(c.closed(), None);
}

#[test]
fn binary_payload_closes_json_subscribers_only() {
    let env = Env::base();
    let node = &env.node;
    let mut j = env.connected_with(Envelope::WsJson, "1");
    let mut p = env.connected_with(Envelope::WsProtobuf, "2");
    j.subscribe_ok(node, "plain:bin");
    p.subscribe_ok(node, "plain:bin");
    let req = ApiPublish { data: Bytes::from_static(&[0xff, 0x00, 0x01]), ..Default::default() };
    api_publish(&env, "plain:bin", &req).unwrap();
    assert_eq!(j.closed(), Some(3506));
    assert!(j.take().is_empty());
    assert_eq!(p.closed(), None);
    let got = publications(&p.take());
    assert_eq!(&got[0].data[..], &[0xff, 0x00, 0x01]);
}

// ---------------------------------------------------------------------------------------------
// Presence

#[test]
fn presence_commands() {
    let env = anonymous_env(|cfg| {
        cfg.channel.namespaces.push(ns(
            "pres",
            ChannelOptions {
                presence: true,
                allow_presence_for_client: true,
                allow_subscribe_for_client: true,
                ..Default::default()
            },
        ));
    });
    let node = &env.node;
    let mut c = env.connected("42");
    // Order: 3501 (empty), 102, 107, then 108 (presence off), then 103.
    assert_eq!(c.error(node, presence_cmd("nope:a")), 102);
    assert_eq!(c.error(node, presence_stats_cmd("nope:a")), 102);
    assert_eq!(c.error(node, presence_cmd("plain:a")), 108);
    assert_eq!(c.error(node, presence_stats_cmd("plain:a")), 108);
    assert_eq!(c.error(node, presence_cmd("chat:a")), 103, "for_subscriber, not subscribed");
    assert_eq!(c.error(node, presence_stats_cmd("chat:a")), 103);
    // Empty presence: the map and both counters are always present in JSON.
    let id = c.next_id();
    assert_eq!(
        c.call_json(node, presence_cmd("pres:empty")),
        [format!(r#"{{"id":{id},"presence":{{"presence":{{}}}}}}"#)]
    );
    let id = c.next_id();
    assert_eq!(
        c.call_json(node, presence_stats_cmd("pres:empty")),
        [format!(r#"{{"id":{id},"presence_stats":{{"num_clients":0,"num_users":0}}}}"#)]
    );
    // Anonymous users need allow_presence_for_anonymous.
    let mut a = anonymous(&env);
    assert_eq!(a.error(node, presence_cmd("pres:a")), 103);
    assert_eq!(c.disconnect(node, presence_cmd("")), 3501);
}

#[test]
fn presence_lists_subscribers_and_counts_distinct_users() {
    let env = Env::base();
    let node = &env.node;
    let mut a = env.client_with(Envelope::WsProtobuf);
    a.connect_ok(node, &token(json!({"sub": "42", "info": {"who": "a"}})));
    let mut b = env.connected("42");
    let mut d = env.connected("43");
    for c in [&mut a, &mut b, &mut d] {
        c.subscribe_ok(node, "chat:room");
    }
    let (a_id, d_id) = (a.id(), d.id());
    for c in [&mut a, &mut d] {
        let replies = c.call(node, presence_cmd("chat:room"));
        let map = &replies[0].presence.as_ref().unwrap().presence;
        assert_eq!(map.len(), 3);
        assert_eq!(map[&a_id].user, "42");
        assert_eq!(map[&a_id].client, a_id);
        assert_eq!(text(&map[&a_id].conn_info), r#"{"who":"a"}"#);
        assert_eq!(map[&d_id].user, "43");
        let replies = c.call(node, presence_stats_cmd("chat:room"));
        let stats = replies[0].presence_stats.as_ref().unwrap();
        assert_eq!((stats.num_clients, stats.num_users), (3, 2));
    }
    b.close(node);
    let replies = a.call(node, presence_stats_cmd("chat:room"));
    let stats = replies[0].presence_stats.as_ref().unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (2, 2));
    d.call(node, unsubscribe_cmd("chat:room"));
    let replies = a.call(node, presence_stats_cmd("chat:room"));
    let stats = replies[0].presence_stats.as_ref().unwrap();
    assert_eq!((stats.num_clients, stats.num_users), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// History command

fn hist(channel: &str, limit: i32, since: Option<(u64, &str)>, reverse: bool) -> Command {
    history_cmd(HistoryRequest {
        channel: channel.into(),
        limit,
        since: since.map(|(offset, epoch)| StreamPosition { offset, epoch: epoch.into() }),
        reverse,
    })
}

fn history_offsets(c: &mut Client, env: &Env, cmd: Command) -> (Vec<u64>, u64, String) {
    let replies = c.call(&env.node, cmd);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let h = replies[0].history.as_ref().unwrap_or_else(|| panic!("history result: {replies:?}"));
    (h.publications.iter().map(|p| p.offset).collect(), h.offset, h.epoch.clone())
}

#[test]
fn history_command() {
    let mut cfg = base_config();
    cfg.client.history_max_publication_limit = 3;
    let env = Env::new(cfg);
    let node = &env.node;
    let mut c = env.connected("42");
    assert_eq!(c.error(node, hist("plain:a", 10, None, false)), 108);
    assert_eq!(c.error(node, hist("nope:a", 10, None, false)), 102);
    assert_eq!(c.error(node, hist("chat:a", 10, None, false)), 103, "for_subscriber, not subscribed");
    assert_eq!(c.error(node, hist("strict:UP", 10, None, false)), 107);
    // Empty stream: position only, with every field present in JSON.
    let epoch = env.top("hist:empty").1;
    let id = c.next_id();
    assert_eq!(
        c.call_json(node, hist("hist:empty", 10, None, false)),
        [format!(r#"{{"id":{id},"history":{{"publications":[],"epoch":"{epoch}","offset":0}}}}"#)]
    );
    for i in 1..=5 {
        env.publish("hist:a", &i.to_string());
    }
    let (_, epoch) = env.top("hist:a");
    // Limit capped by history_max_publication_limit (-1 = no limit, capped too).
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", -1, None, false)), (vec![1, 2, 3], 5, epoch.clone()));
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", 10, None, false)).0, [1, 2, 3]);
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", 2, None, false)).0, [1, 2]);
    // Limit 0: position only.
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", 0, None, false)), (vec![], 5, epoch.clone()));
    // Since.
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", -1, Some((2, &epoch)), false)).0, [3, 4, 5]);
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", -1, Some((5, &epoch)), false)).0, Vec::<u64>::new());
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", -1, Some((2, "")), false)).0, [3, 4, 5]);
    assert_eq!(c.error(node, hist("hist:a", -1, Some((2, "nope")), false)), 112);
    // Reverse.
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", 2, None, true)).0, [5, 4]);
    assert_eq!(history_offsets(&mut c, &env, hist("hist:a", -1, Some((4, &epoch)), true)).0, [3, 2, 1]);
    assert_eq!(c.error(node, hist("hist:a", -1, Some((0, &epoch)), true)), 107);
    // Subscribers of a for_subscriber namespace may read.
    c.subscribe_ok(node, "chat:a");
    assert_eq!(history_offsets(&mut c, &env, hist("chat:a", 10, None, false)).1, 0);
    assert_eq!(c.disconnect(node, hist("", 10, None, false)), 3501);
}

#[test]
fn history_command_protobuf() {
    let env = Env::base();
    for i in 1..=3 {
        env.publish("hist:a", &format!(r#"{{"i":{i}}}"#));
    }
    let mut c = env.connected_with(Envelope::WsProtobuf, "42");
    let replies = c.call(&env.node, hist("hist:a", -1, None, false));
    let h = replies[0].history.as_ref().unwrap();
    assert_eq!(h.offset, 3);
    assert_eq!(h.epoch, env.top("hist:a").1);
    assert_eq!(
        h.publications.iter().map(|p| text(&p.data)).collect::<Vec<_>>(),
        [r#"{"i":1}"#, r#"{"i":2}"#, r#"{"i":3}"#]
    );
    // An empty history result still decodes as present.
    let replies = c.call(&env.node, hist("hist:none", 0, None, false));
    assert!(replies[0].history.is_some());
}

// ---------------------------------------------------------------------------------------------
// Join and leave

#[test]
fn join_leave_delivery() {
    let env = Env::base();
    let node = &env.node;
    let jl = |ch: &str| SubscribeRequest { join_leave: true, ..sub_req(ch) };
    // chat: join_leave on, presence access for subscribers.
    let mut a = env.connected_with(Envelope::WsProtobuf, "1");
    let (_, rest) = a.subscribe_req(node, jl("chat:room"));
    let j = joins(&rest, "chat:room");
    assert_eq!(j.len(), 1, "the joiner gets its own join, after the reply");
    assert_eq!((j[0].user.as_str(), j[0].client.as_str()), ("1", a.id().as_str()));
    // b does not ask for join/leave: it gets none, but a sees b join.
    let mut b = env.connected("2");
    let (_, rest) = b.subscribe_req(node, sub_req("chat:room"));
    assert!(rest.is_empty());
    let j = joins(&a.take(), "chat:room");
    assert_eq!(j.iter().map(|i| i.client.clone()).collect::<Vec<_>>(), [b.id()]);
    // c asks too.
    let mut c = env.connected("3");
    let (_, rest) = c.subscribe_req(node, jl("chat:room"));
    assert_eq!(joins(&rest, "chat:room").len(), 1);
    assert_eq!(joins(&a.take(), "chat:room").len(), 1);
    assert!(b.take().is_empty());
    // b leaves: a and c see it, b gets nothing.
    b.call(node, unsubscribe_cmd("chat:room"));
    assert!(b.take().is_empty());
    let l = leaves(&a.take(), "chat:room");
    assert_eq!(l.iter().map(|i| (i.user.clone(), i.client.clone())).collect::<Vec<_>>(), [("2".into(), b.id())]);
    assert_eq!(leaves(&c.take(), "chat:room").len(), 1);
    // c unsubscribes: it does not get its own leave.
    let replies = c.call(node, unsubscribe_cmd("chat:room"));
    assert_eq!(replies.len(), 1, "only the reply: {replies:?}");
    assert_eq!(leaves(&a.take(), "chat:room").len(), 1);
    // The connection goes away: leave for a, seen by a new subscriber.
    let mut d = env.connected("4");
    d.subscribe_req(node, jl("chat:room"));
    d.take();
    a.take();
    a.close(node);
    let l = leaves(&d.take(), "chat:room");
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].client, a.id());
    let presence = node.api_presence("chat:room").now_or_never().unwrap().unwrap();
    assert_eq!(presence.keys().collect::<Vec<_>>(), [&d.id()], "presence removed on close");
}

#[test]
fn join_leave_needs_namespace_and_presence_access() {
    let mut cfg = base_config();
    // join_leave on but no presence access for clients: the request is ignored.
    cfg.channel.namespaces.push(ns(
        "nopres",
        ChannelOptions { join_leave: true, presence: true, allow_subscribe_for_client: true, ..Default::default() },
    ));
    // force_push_join_leave: every subscriber gets them.
    cfg.channel.namespaces.push(ns(
        "forced",
        ChannelOptions {
            join_leave: true,
            force_push_join_leave: true,
            allow_subscribe_for_client: true,
            ..Default::default()
        },
    ));
    let env = Env::new(cfg);
    let node = &env.node;
    let jl = |ch: &str| SubscribeRequest { join_leave: true, ..sub_req(ch) };
    let mut a = env.connected("1");
    let (_, rest) = a.subscribe_req(node, jl("nopres:x"));
    assert!(rest.is_empty());
    let (_, rest) = a.subscribe_req(node, jl("plain:x"));
    assert!(rest.is_empty(), "join_leave off in the namespace");
    let (_, rest) = a.subscribe_req(node, sub_req("forced:x"));
    assert_eq!(joins(&rest, "forced:x").len(), 1);
    let mut b = env.connected("2");
    let (_, rest) = b.subscribe_req(node, sub_req("forced:x"));
    assert_eq!(joins(&rest, "forced:x").len(), 1);
    assert_eq!(joins(&a.take(), "forced:x").len(), 1);
    b.close(node);
    assert_eq!(leaves(&a.take(), "forced:x").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Other commands

#[test]
fn rpc_ping_send_and_pong() {
    let env = Env::base();
    let node = &env.node;
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        let rpc = Command { rpc: Some(RpcRequest { method: "m".into(), data: bytes("{}") }), ..Default::default() };
        assert_eq!(c.error(node, rpc), 104);
        assert_eq!(c.error(node, Command { ping: Some(PingRequest {}), ..Default::default() }), 108);
        // Pongs are accepted even with no ping outstanding, and get no reply.
        for _ in 0..3 {
            assert_eq!(c.run(node, Command::default()), Flow::Continue);
        }
        assert!(c.take().is_empty());
        assert_eq!(c.closed(), None);
        // send: no backend.
        let send = Command { send: Some(SendRequest { data: bytes("{}") }), ..Default::default() };
        assert_eq!(c.disconnect_raw(node, send.clone()), 3508);
        let mut c = env.connected_with(envelope, "42");
        assert_eq!(c.disconnect(node, send), 3508, "with an id too");
    }
}

#[test]
fn id_zero_with_a_request_is_bad_request() {
    let env = Env::base();
    let node = &env.node;
    for cmd in [
        subscribe_cmd("plain:a"),
        publish_cmd("plain:a", "1"),
        history_cmd(HistoryRequest { channel: "hist:a".into(), ..Default::default() }),
        Command { rpc: Some(RpcRequest::default()), ..Default::default() },
        Command { ping: Some(PingRequest {}), ..Default::default() },
        refresh_cmd(&user_token("42")),
    ] {
        let mut c = env.connected("42");
        assert_eq!(c.disconnect_raw(node, cmd), 3501);
    }
    // id > 0 without any request.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, Command::default()), 3501);
}

// ---------------------------------------------------------------------------------------------
// Refresh

#[test]
fn refresh_command() {
    let env = Env::new({
        let mut cfg = base_config();
        no_ping(&mut cfg);
        cfg
    });
    let node = &env.node;
    let now = env.now();
    let mut c = env.client();
    let res = c.connect_ok(node, &token(json!({"sub": "42", "exp": now + 60})));
    assert_eq!(res.ttl, 60);
    // Valid refresh: new expiry.
    let replies = c.call(node, refresh_cmd(&token(json!({"sub": "42", "exp": now + 600, "info": {"v": 2}}))));
    let r = replies[0].refresh.as_ref().unwrap();
    assert!(r.expires);
    assert_eq!(r.ttl, 600);
    // The old deadline (60 + 25 s) passes without a close.
    env.advance(100, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    // The new info is the connection's info from now on.
    c.subscribe_ok(node, "hist:a");
    let replies = c.call(node, publish_cmd("hist:a", "1"));
    let got = publications(&replies);
    assert_eq!(text(&got[0].info.as_ref().unwrap().conn_info), r#"{"v":2}"#);
    // A token without exp clears the expiry: nothing closes after the 600 s deadline.
    let replies = c.call(node, refresh_cmd(&user_token("42")));
    assert_eq!(replies[0].refresh.as_ref().unwrap(), &herald_proto::RefreshResult::default());
    env.advance(700, &mut [&mut c]);
    assert_eq!(c.closed(), None);
}

#[test]
fn refresh_failures() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    let exp = |user: &str| token(json!({"sub": user, "exp": now + 60}));
    // Another user.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, refresh_cmd(&exp("43"))), 3500);
    // Invalid token.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, refresh_cmd("garbage")), 3500);
    // Expired token.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, refresh_cmd(&token(json!({"sub": "42", "exp": now - 1})))), 3005);
    // Empty token.
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, refresh_cmd("")), 3501);
    // expire_at already past: error 110, the connection stays.
    let mut c = env.connected("42");
    let t = token(json!({"sub": "42", "exp": now + 60, "expire_at": now}));
    assert_eq!(c.error(node, refresh_cmd(&t)), 110);
    assert!(c.session.is_connected());
}

// ---------------------------------------------------------------------------------------------
// Sub refresh

#[test]
fn sub_refresh_command() {
    let env = Env::new({
        let mut cfg = base_config();
        no_ping(&mut cfg);
        cfg
    });
    let node = &env.node;
    let now = env.now();
    let st = |claims: serde_json::Value| sub_token(claims);
    let mut c = env.connected("42");
    assert_eq!(c.error(node, sub_refresh_cmd("$plain:s", "x")), 103, "not subscribed");
    let t = st(json!({"sub": "42", "channel": "$plain:s", "exp": now + 30}));
    let (r, _) = c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
    assert_eq!(r.ttl, 30);
    assert_eq!(c.error(node, sub_refresh_cmd("$plain:s", "")), 107);
    let t = st(json!({"sub": "42", "channel": "$plain:s", "exp": now - 1}));
    assert_eq!(c.error(node, sub_refresh_cmd("$plain:s", &t)), 109);
    let t = st(json!({"sub": "42", "channel": "$plain:s", "exp": now + 60, "expire_at": now - 1}));
    assert_eq!(c.error(node, sub_refresh_cmd("$plain:s", &t)), 110);
    // Valid: new ttl, and the old deadline (30 + 25 s) passes.
    let t = st(json!({"sub": "42", "channel": "$plain:s", "exp": now + 300}));
    let replies = c.call(node, sub_refresh_cmd("$plain:s", &t));
    let r = replies[0].sub_refresh.as_ref().unwrap();
    assert!(r.expires);
    assert_eq!(r.ttl, 300);
    env.advance(60, &mut [&mut c]);
    assert!(c.take().is_empty(), "no unsubscribe");
    assert_eq!(c.session.channels().count(), 1);
    // No exp: the subscription no longer expires.
    let t = st(json!({"sub": "42", "channel": "$plain:s"}));
    let replies = c.call(node, sub_refresh_cmd("$plain:s", &t));
    assert_eq!(replies[0].sub_refresh.as_ref().unwrap(), &herald_proto::SubRefreshResult::default());
    env.advance(400, &mut [&mut c]);
    assert!(c.take().is_empty());
    assert_eq!(c.session.channels().count(), 1);
    // Wrong user / channel / client → 3500; empty channel → 3501.
    for claims in [
        json!({"sub": "43", "channel": "$plain:s"}),
        json!({"sub": "42", "channel": "$plain:other"}),
        json!({"sub": "42", "channel": "$plain:s", "client": "other"}),
    ] {
        let mut c = env.connected("42");
        c.subscribe_req(
            node,
            SubscribeRequest { token: st(json!({"sub": "42", "channel": "$plain:s"})), ..sub_req("$plain:s") },
        );
        assert_eq!(c.disconnect(node, sub_refresh_cmd("$plain:s", &st(claims.clone()))), 3500, "{claims}");
    }
    let mut c = env.connected("42");
    assert_eq!(c.disconnect(node, sub_refresh_cmd("", "x")), 3501);
    let mut c = env.connected("42");
    c.subscribe_req(
        node,
        SubscribeRequest { token: st(json!({"sub": "42", "channel": "$plain:s"})), ..sub_req("$plain:s") },
    );
    assert_eq!(c.disconnect(node, sub_refresh_cmd("$plain:s", "garbage")), 3500);
}

// ---------------------------------------------------------------------------------------------
// Timers

#[test]
fn stale_connection_is_closed_with_3502() {
    let env = Env::base();
    let mut c = env.client();
    env.advance(9, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3502));
    // A client that connects in time is not closed as stale.
    let mut d = env.client();
    env.advance(5, &mut [&mut d]);
    d.connect_ok(&env.node, &user_token("42"));
    env.advance(10, &mut [&mut d]);
    assert_eq!(d.closed(), None);
}

#[test]
fn unusable_connection_is_closed_as_stale() {
    let env = Env::base();
    let mut c = env.client();
    let t = token(json!({"sub": "42", "exp": env.now() - 1}));
    assert_eq!(c.error(&env.node, connect_cmd(&t)), 109);
    env.advance(10, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3502));
}

/// Advances one second at a time until a frame arrives; returns the seconds waited.
fn wait_for_frame(env: &Env, c: &mut Client, max: u32) -> Option<(u32, Vec<Bytes>)> {
    for waited in 1..=max {
        env.advance(1, &mut [&mut *c]);
        let raw = c.take_raw();
        if !raw.is_empty() {
            return Some((waited, raw));
        }
        if c.closed().is_some() {
            return None;
        }
    }
    None
}

#[test]
fn pings_at_interval_with_envelope_specific_frames() {
    let env = Env::base();
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        let frames_before = c.link.frames().len();
        let (first, raw) = wait_for_frame(&env, &mut c, 30).expect("a ping");
        assert!((12..=25).contains(&first), "first ping after {first} s");
        assert_eq!(raw.len(), 1);
        // The whole frame is the envelope's ping (its bytes are pinned in herald-proto's tests).
        let frame = c.link.frames()[frames_before].clone();
        assert_eq!(frame, herald_proto::envelope::ping(envelope));
        let decoded = decode_frame(envelope, &frame);
        assert_eq!(decoded, [herald_proto::Reply::default()], "an empty reply");
        // Answer, and the next pings follow every 25 s.
        c.run(&env.node, Command::default());
        for _ in 0..3 {
            let (after, _) = wait_for_frame(&env, &mut c, 30).expect("next ping");
            assert_eq!(after, 25);
            c.run(&env.node, Command::default());
        }
        assert_eq!(c.closed(), None);
    }
}

#[test]
fn missing_pong_is_3012() {
    let env = Env::base();
    let mut c = env.connected_with(Envelope::WsProtobuf, "42");
    wait_for_frame(&env, &mut c, 30).expect("a ping");
    // Pong timeout 8 s.
    env.advance(7, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3012));
}

#[test]
fn late_pong_within_timeout_keeps_the_connection() {
    let env = Env::base();
    let mut c = env.connected("42");
    for _ in 0..4 {
        wait_for_frame(&env, &mut c, 30).expect("a ping");
        env.advance(7, &mut [&mut c]);
        c.run(&env.node, Command::default());
    }
    env.advance(10, &mut [&mut c]);
    assert_eq!(c.closed(), None);
}

#[test]
fn pings_disabled() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let mut c = env.client();
    let res = c.connect_ok(&env.node, &user_token("42"));
    assert_eq!((res.ping, res.pong), (0, false));
    env.advance(120, &mut [&mut c]);
    assert!(c.take().is_empty());
    assert_eq!(c.closed(), None);
}

#[test]
fn connection_expiry_closes_with_3005_after_grace() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let mut c = env.client();
    let res = c.connect_ok(&env.node, &token(json!({"sub": "42", "exp": env.now() + 30})));
    assert_eq!(res.ttl, 30);
    // expired_close_delay: 25 s.
    env.advance(54, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3005));
}

#[test]
fn connection_expiry_with_pings_running() {
    // Pings and pongs do not hide the expiry deadline (one wheel entry per link).
    let env = Env::base();
    let mut c = env.client();
    c.connect_ok(&env.node, &token(json!({"sub": "42", "exp": env.now() + 40})));
    for _ in 0..65 {
        env.advance(1, &mut [&mut c]);
        if !c.take_raw().is_empty() {
            c.run(&env.node, Command::default());
        }
    }
    assert_eq!(c.closed(), Some(3005));
    assert_eq!(env.now(), t0() + 65);
}

#[test]
fn subscription_expiry_client_side_is_unsubscribe_2501() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let node = &env.node;
    let now = env.now();
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": env.now() + 30}));
        c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
        env.advance(54, &mut [&mut c]);
        assert!(c.take().is_empty());
        env.advance(1, &mut [&mut c]);
        let got = c.take();
        assert_eq!(unsubscribes(&got, "$plain:s"), [2501]);
        let u = got[0].push.as_ref().unwrap().unsubscribe.as_ref().unwrap();
        assert_eq!(u.reason, "subscription expired");
        assert_eq!(c.closed(), None);
        assert_eq!(node.hub().num_subscribers("$plain:s"), 0);
        // The subscription is gone before the push: an immediate resubscribe works.
        let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": env.now() + 30}));
        c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
        c.close(node);
    }
    assert!(env.now() > now);
}

#[test]
fn subscription_expiry_uses_its_own_grace() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    cfg.client.expired_sub_close_delay = Duration::from_secs(5);
    let env = Env::new(cfg);
    let mut c = env.connected("42");
    let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": env.now() + 10}));
    c.subscribe_req(&env.node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
    env.advance(14, &mut [&mut c]);
    assert!(c.take().is_empty());
    env.advance(1, &mut [&mut c]);
    assert_eq!(unsubscribes(&c.take(), "$plain:s"), [2501]);
}

#[test]
fn server_side_subscription_expiry_is_3006() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let mut c = env.connected("42");
    let sub = ServerSubscribe { channel: "plain:srv".into(), expire_at: Some(env.now() + 30), ..Default::default() };
    env.node.api_subscribe(&target("42"), sub).now_or_never().expect("ready").unwrap();
    c.pump(&env.node);
    assert!(c.take()[0].push.as_ref().unwrap().subscribe.is_some());
    env.advance(54, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3006));
}

// ---------------------------------------------------------------------------------------------
// Server API through the node

#[test]
fn api_subscribe_pushes_subscribe_then_publications() {
    let env = Env::base();
    let node = &env.node;
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        env.publish("rec:x", r#"{"old":1}"#);
        let (top, epoch) = env.top("rec:x");
        let sub = ServerSubscribe { channel: "rec:x".into(), data: bytes(r#"{"s":1}"#), ..Default::default() };
        node.api_subscribe(&target("42"), sub.clone()).now_or_never().expect("ready").unwrap();
        assert!(c.take().is_empty(), "nothing until the session handles the control");
        c.pump(node);
        let got = c.take();
        assert_eq!(got.len(), 1);
        let push = got[0].push.as_ref().unwrap();
        assert_eq!(push.channel, "rec:x");
        let s = push.subscribe.as_ref().unwrap();
        assert!(s.recoverable && s.positioned);
        assert_eq!((s.offset, s.epoch.clone()), (top, epoch));
        assert_eq!(text(&s.data), r#"{"s":1}"#);
        let n = env.publish("rec:x", r#"{"new":1}"#);
        assert_eq!(pubs(&c.take(), "rec:x"), [(n, r#"{"new":1}"#.to_owned())]);
        // Subscribing again is a no-op.
        node.api_subscribe(&target("42"), sub).now_or_never().expect("ready").unwrap();
        c.pump(node);
        assert!(c.take().is_empty());
        c.close(node);
    }
    assert_eq!(
        node.api_subscribe(&target("42"), ServerSubscribe { channel: "nope:x".into(), ..Default::default() })
            .now_or_never()
            .expect("ready")
            .unwrap_err()
            .code,
        102
    );
    assert_eq!(
        node.api_subscribe(&target("42"), ServerSubscribe::default()).now_or_never().expect("ready").unwrap_err().code,
        107
    );
}

#[test]
fn api_subscribe_targets_and_limits() {
    let mut cfg = base_config();
    cfg.client.channel_limit = 1;
    let env = Env::new(cfg);
    let node = &env.node;
    let mut a = env.connected("42");
    let mut b = env.connected("42");
    let sub = |ch: &str| ServerSubscribe { channel: ch.into(), ..Default::default() };
    // Only one client of the user.
    node.api_subscribe(&Target { user: "42".into(), client: b.id() }, sub("plain:x"))
        .now_or_never()
        .expect("ready")
        .unwrap();
    a.pump(node);
    b.pump(node);
    assert!(a.take().is_empty());
    assert_eq!(b.take().len(), 1);
    // At the channel limit, a server-side subscribe closes with 3505.
    node.api_subscribe(&target("42"), sub("plain:y")).now_or_never().expect("ready").unwrap();
    a.pump(node);
    assert_eq!(a.take().len(), 1, "a had room");
    assert_eq!(b.pump(node), Flow::Stop);
    assert_eq!(b.closed(), Some(3505));
    // A server-side subscription with an expiry in the past is skipped.
    let mut c = env.connected("43");
    let expired = ServerSubscribe { expire_at: Some(env.now() - 1), ..sub("plain:z") };
    node.api_subscribe(&target("43"), expired).now_or_never().expect("ready").unwrap();
    c.pump(node);
    assert!(c.take().is_empty());
    assert_eq!(c.session.channels().count(), 0);
}

#[test]
fn api_subscribe_with_recovery_position() {
    let env = Env::base();
    let node = &env.node;
    for i in 1..=3 {
        env.publish("rec:x", &i.to_string());
    }
    let (_, epoch) = env.top("rec:x");
    let mut c = env.connected("42");
    let sub = ServerSubscribe {
        channel: "rec:x".into(),
        recover_since: Some(StreamPosition { offset: 1, epoch }),
        ..Default::default()
    };
    node.api_subscribe(&target("42"), sub).now_or_never().expect("ready").unwrap();
    c.pump(node);
    let got = c.take();
    assert!(got[0].push.as_ref().unwrap().subscribe.is_some(), "Subscribe push first");
    assert_eq!(pubs(&got, "rec:x"), [(2, "2".to_owned()), (3, "3".to_owned())]);
}

#[test]
fn api_unsubscribe() {
    let env = Env::base();
    let node = &env.node;
    for envelope in ENVELOPES {
        let mut c = env.connected_with(envelope, "42");
        c.subscribe_ok(node, "plain:a");
        c.subscribe_ok(node, "plain:b");
        c.subscribe_ok(node, "plain:c");
        node.api_unsubscribe(&target("42"), "plain:a").now_or_never().expect("ready").unwrap();
        c.pump(node);
        let got = c.take();
        assert_eq!(unsubscribes(&got, "plain:a"), [2000]);
        assert_eq!(got[0].push.as_ref().unwrap().unsubscribe.as_ref().unwrap().reason, "server unsubscribe");
        env.publish("plain:a", "1");
        assert!(c.take().is_empty(), "no pushes after the unsubscribe push");
        // Not subscribed: nothing.
        node.api_unsubscribe(&target("42"), "plain:zzz").now_or_never().expect("ready").unwrap();
        c.pump(node);
        assert!(c.take().is_empty());
        // Empty channel: every channel.
        node.api_unsubscribe(&target("42"), "").now_or_never().expect("ready").unwrap();
        c.pump(node);
        let got = c.take();
        assert_eq!(unsubscribes(&got, "plain:b"), [2000]);
        assert_eq!(unsubscribes(&got, "plain:c"), [2000]);
        assert_eq!(c.session.channels().count(), 0);
        // The client may subscribe again.
        c.subscribe_ok(node, "plain:a");
        c.close(node);
    }
    assert_eq!(node.api_unsubscribe(&target("42"), "nope:x").now_or_never().expect("ready").unwrap_err().code, 102);
}

#[test]
fn api_disconnect_with_whitelist() {
    let env = Env::base();
    let node = &env.node;
    let mut cs: Vec<Client> = (0..3).map(|_| env.connected("42")).collect();
    let other = env.connected("43");
    let keep = cs[1].id();
    node.api_disconnect(&target("42"), std::slice::from_ref(&keep), DISCONNECT_FORCE_NO_RECONNECT)
        .now_or_never()
        .expect("ready")
        .unwrap();
    assert_eq!(cs[0].closed(), Some(3503));
    assert_eq!(cs[1].closed(), None);
    assert_eq!(cs[2].closed(), Some(3503));
    assert_eq!(other.closed(), None);
    // One client by id, custom reason.
    let reason = herald_proto::DisconnectReason::new(4001, "custom");
    node.api_disconnect(&Target { user: "42".into(), client: keep }, &[], reason.clone())
        .now_or_never()
        .expect("ready")
        .unwrap();
    assert_eq!(cs[1].link.close_reason(), Some(reason));
    for c in cs.iter_mut() {
        c.close(node);
    }
    assert_eq!(node.hub().num_clients(), 1);
}

#[test]
fn api_refresh() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let node = &env.node;
    let now = env.now();
    // expired → 3005.
    let mut c = env.connected("42");
    node.api_refresh(&target("42"), true, None, None).now_or_never().expect("ready").unwrap();
    assert_eq!(c.pump(node), Flow::Stop);
    assert_eq!(c.closed(), Some(3005));
    // expire_at in the past → 3005.
    let mut c = env.connected("43");
    node.api_refresh(&target("43"), false, Some(now - 1), None).now_or_never().expect("ready").unwrap();
    c.pump(node);
    assert_eq!(c.closed(), Some(3005));
    // expire_at in the future: the connection expires then (plus grace).
    let mut c = env.connected("44");
    node.api_refresh(&target("44"), false, Some(now + 10), Some(bytes(r#"{"new":true}"#)))
        .now_or_never()
        .expect("ready")
        .unwrap();
    c.pump(node);
    assert_eq!(c.closed(), None);
    c.subscribe_ok(node, "hist:a");
    let got = publications(&c.call(node, publish_cmd("hist:a", "1")));
    assert_eq!(text(&got[0].info.as_ref().unwrap().conn_info), r#"{"new":true}"#);
    env.advance(34, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3005));
    // expire_at 0: no expiry any more.
    let mut c = env.client();
    c.connect_ok(node, &token(json!({"sub": "45", "exp": env.now() + 10})));
    node.api_refresh(&target("45"), false, Some(0), None).now_or_never().expect("ready").unwrap();
    c.pump(node);
    env.advance(60, &mut [&mut c]);
    assert_eq!(c.closed(), None);
}

#[test]
fn api_publish_exclude_client_and_validation() {
    let env = Env::base();
    let node = &env.node;
    let mut a = env.connected("1");
    let mut b = env.connected("2");
    a.subscribe_ok(node, "plain:x");
    b.subscribe_ok(node, "plain:x");
    let req = ApiPublish { data: bytes(r#"{"a":1}"#), exclude_client: a.id(), ..Default::default() };
    let out = api_publish(&env, "plain:x", &req).unwrap();
    assert_eq!(out.position, None, "no history");
    assert!(!out.suppressed);
    assert!(a.take().is_empty());
    assert_eq!(pubs(&b.take(), "plain:x").len(), 1);
    let bad = ApiPublish { exclude_client: "not-a-uuid".into(), ..req.clone() };
    assert_eq!(api_publish(&env, "plain:x", &bad).unwrap_err(), 107);
    assert_eq!(api_publish(&env, "plain:x", &ApiPublish::default()).unwrap_err(), 107);
    assert_eq!(api_publish(&env, "", &req).unwrap_err(), 107);
    assert_eq!(api_publish(&env, "nope:x", &req).unwrap_err(), 102);
    // Tags pass through.
    let mut tags = BTreeMap::new();
    tags.insert("k".to_owned(), "v".to_owned());
    api_publish(&env, "plain:x", &ApiPublish { data: bytes("1"), tags: tags.clone(), ..Default::default() }).unwrap();
    let got = publications(&a.take());
    assert_eq!(got[0].tags, tags);
    assert!(got[0].info.is_none(), "API publications carry no client info");
}

#[test]
fn api_publish_idempotency_key() {
    let env = Env::base();
    let mut c = env.connected("42");
    c.subscribe_ok(&env.node, "hist:x");
    let req = ApiPublish { data: bytes("1"), idempotency_key: "k1".into(), ..Default::default() };
    let first = api_publish(&env, "hist:x", &req).unwrap();
    let second = api_publish(&env, "hist:x", &req).unwrap();
    assert!(!first.suppressed);
    assert!(second.suppressed);
    assert_eq!(first.position, second.position);
    assert_eq!(first.position.as_ref().unwrap().offset, 1);
    assert_eq!(pubs(&c.take(), "hist:x").len(), 1, "delivered once");
    let other = api_publish(&env, "hist:x", &ApiPublish { idempotency_key: "k2".into(), ..req.clone() }).unwrap();
    assert_eq!(other.position.unwrap().offset, 2);
    assert_eq!(pubs(&c.take(), "hist:x").len(), 1);
    // The key window is 300 s.
    env.clock.advance(301_000);
    let again = api_publish(&env, "hist:x", &req).unwrap();
    assert!(!again.suppressed);
}

#[test]
fn api_publish_skip_history() {
    let env = Env::base();
    let mut c = env.connected("42");
    c.subscribe_ok(&env.node, "hist:x");
    assert_eq!(env.publish("hist:x", "1"), 1);
    let out = api_publish(&env, "hist:x", &ApiPublish { data: bytes("2"), skip_history: true, ..Default::default() })
        .unwrap();
    assert_eq!(out.position, None);
    assert_eq!(pubs(&c.take(), "hist:x"), [(1, "1".to_owned()), (0, "2".to_owned())]);
    let slice = env.node.api_history("hist:x", -1, None, false).now_or_never().unwrap().unwrap();
    assert_eq!(slice.publications.len(), 1);
    assert_eq!(slice.top.offset, 1);
}

#[test]
fn api_history() {
    let mut cfg = base_config();
    cfg.client.history_max_publication_limit = 2;
    let env = Env::new(cfg);
    let node = &env.node;
    let h = |ch: &str, limit: i64, since: Option<(u64, &str)>, reverse: bool| {
        let since = since.map(|(offset, epoch)| StreamPosition { offset, epoch: epoch.into() });
        node.api_history(ch, limit, since, reverse).now_or_never().unwrap().map_err(|e| e.code)
    };
    assert_eq!(h("", 0, None, false).unwrap_err(), 107);
    assert_eq!(h("nope:x", 0, None, false).unwrap_err(), 102);
    assert_eq!(h("plain:x", 0, None, false).unwrap_err(), 108);
    for i in 1..=5 {
        env.publish("hist:x", &i.to_string());
    }
    let epoch = env.top("hist:x").1;
    assert_eq!(h("hist:x", 0, Some((1, "nope")), false).unwrap_err(), 112);
    assert_eq!(h("hist:x", -1, Some((0, &epoch)), true).unwrap_err(), 107);
    // No cap in the API.
    let all = h("hist:x", -1, None, false).unwrap();
    assert_eq!(all.publications.len(), 5);
    assert_eq!(all.top.offset, 5);
    let pos = h("hist:x", 0, None, false).unwrap();
    assert!(pos.publications.is_empty());
    assert_eq!(pos.top.epoch, epoch);
    // history_remove keeps the position.
    node.api_history_remove("hist:x").now_or_never().unwrap().unwrap();
    let after = h("hist:x", -1, None, false).unwrap();
    assert!(after.publications.is_empty());
    assert_eq!((after.top.offset, after.top.epoch), (5, epoch));
    assert_eq!(node.api_history_remove("plain:x").now_or_never().unwrap().unwrap_err().code, 108);
}

#[test]
fn api_channels_pattern() {
    let env = Env::base();
    let node = &env.node;
    let mut a = env.connected("1");
    let mut b = env.connected("2");
    a.subscribe_ok(node, "chat:a");
    b.subscribe_ok(node, "chat:a");
    a.subscribe_ok(node, "chat:b");
    b.subscribe_ok(node, "plain:c");
    let names = |p: &str| node.api_channels(p).map(|m| m.into_iter().collect::<Vec<_>>()).map_err(|e| e.code);
    assert_eq!(names("chat:*").unwrap(), [("chat:a".to_owned(), 2), ("chat:b".to_owned(), 1)]);
    assert_eq!(names("").unwrap().len(), 3);
    assert_eq!(names("*:c").unwrap(), [("plain:c".to_owned(), 1)]);
    assert_eq!(names("chat:?").unwrap().len(), 2);
    assert!(names("nothing*").unwrap().is_empty());
    assert_eq!(names("[ab").unwrap_err(), 107);
    b.close(node);
    assert_eq!(names("").unwrap(), [("chat:a".to_owned(), 1), ("chat:b".to_owned(), 1)]);
}

#[test]
fn api_presence_shapes() {
    let env = Env::base();
    let node = &env.node;
    let mut a = env.client();
    a.connect_ok(node, &token(json!({"sub": "1", "info": {"n": "a"}})));
    let t = sub_token(json!({"sub": "1", "channel": "chat:room", "info": {"c": 1}}));
    a.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("chat:room") });
    let mut b = env.connected("2");
    b.subscribe_ok(node, "chat:room");
    let p = node.api_presence("chat:room").now_or_never().unwrap().unwrap();
    assert_eq!(p.len(), 2);
    let ia = &p[&a.id()];
    assert_eq!((ia.user.as_str(), ia.client.as_str()), ("1", a.id().as_str()));
    assert_eq!(text(&ia.conn_info), r#"{"n":"a"}"#);
    assert_eq!(text(&ia.chan_info), r#"{"c":1}"#);
    let ib = &p[&b.id()];
    assert!(ib.conn_info.is_empty() && ib.chan_info.is_empty());
    assert_eq!(node.api_presence_stats("chat:room").now_or_never().unwrap().unwrap(), (2, 2));
    assert_eq!(node.api_presence_stats("chat:none").now_or_never().unwrap().unwrap(), (0, 0));
    assert!(node.api_presence("chat:none").now_or_never().unwrap().unwrap().is_empty());
    assert_eq!(node.api_presence("plain:x").now_or_never().unwrap().unwrap_err().code, 108);
    assert_eq!(node.api_presence_stats("plain:x").now_or_never().unwrap().unwrap_err().code, 108);
    assert_eq!(node.api_presence("nope:x").now_or_never().unwrap().unwrap_err().code, 102);
    assert_eq!(node.api_presence("").now_or_never().unwrap().unwrap_err().code, 107);
}

// ---------------------------------------------------------------------------------------------
// Controls and cleanup

#[test]
fn insufficient_state_control() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.client();
    c.connect_ok(node, &token(json!({"sub": "42", "channels": ["pos:srv"]})));
    c.subscribe_ok(node, "pos:a");
    // Client-side: unsubscribe 2500 (the client resubscribes), subscription removed first.
    assert_eq!(c.control(node, Control::Insufficient { channel: "pos:a".into() }), Flow::Continue);
    assert_eq!(unsubscribes(&c.take(), "pos:a"), [2500]);
    c.subscribe_ok(node, "pos:a");
    // Unknown channel: ignored.
    assert_eq!(c.control(node, Control::Insufficient { channel: "pos:zzz".into() }), Flow::Continue);
    // Server-side: disconnect 3010.
    assert_eq!(c.control(node, Control::Insufficient { channel: "pos:srv".into() }), Flow::Stop);
    assert_eq!(c.closed(), Some(3010));
}

#[test]
fn engine_resync_makes_the_affected_subscribers_recover() {
    // What a network engine asks after its PUB/SUB connection came back: every local
    // subscriber of the affected channels is unsubscribed with 2500 (the SDK resubscribes and
    // recovers), the others are left alone.
    let env = Env::base();
    let node = &env.node;
    let mut a = env.connected("42");
    a.subscribe_ok(node, "pos:a");
    a.subscribe_ok(node, "pos:b");
    let mut b = env.connected("43");
    b.subscribe_ok(node, "pos:a");
    a.take();
    b.take();
    assert_eq!(node.hub().resync(&|channel| channel == "pos:a"), 2);
    // A publication after the gap is not delivered before the unsubscribe: the SDK would take
    // its offset as the position to recover from and miss what came before it.
    let publish = |channel: &str| {
        let req = ApiPublish { data: bytes(r#"{"after":"gap"}"#), ..Default::default() };
        api_publish(&env, channel, &req).unwrap();
    };
    publish("pos:a");
    publish("pos:b");
    assert!(pubs(&b.take(), "pos:a").is_empty(), "a resyncing subscriber gets nothing more");
    let before_unsubscribe = a.take();
    assert!(pubs(&before_unsubscribe, "pos:a").is_empty());
    assert_eq!(pubs(&before_unsubscribe, "pos:b").len(), 1, "other channels deliver as before");
    assert_eq!(node.hub().resync(&|channel| channel == "pos:a"), 0, "told once");
    assert_eq!(a.pump(node), Flow::Continue);
    assert_eq!(b.pump(node), Flow::Continue);
    let pushed_a = a.take();
    assert_eq!(unsubscribes(&pushed_a, "pos:a"), [2500]);
    assert!(unsubscribes(&pushed_a, "pos:b").is_empty());
    assert_eq!(unsubscribes(&b.take(), "pos:a"), [2500]);
    assert_eq!(node.hub().resync(&|_| false), 0);
}

#[test]
fn controls_before_connect_are_ignored() {
    let env = Env::base();
    let mut c = env.client();
    let sub = ServerSubscribe { channel: "plain:x".into(), ..Default::default() };
    assert_eq!(c.control(&env.node, Control::Subscribe(Box::new(sub))), Flow::Continue);
    assert_eq!(c.control(&env.node, Control::Refresh { expired: true, expire_at: None, info: None }), Flow::Continue);
    assert!(c.take().is_empty());
    assert_eq!(c.closed(), None);
    c.connect_ok(&env.node, &user_token("42"));
    assert_eq!(c.session.channels().count(), 0);
}

#[test]
fn close_cleans_up_everything() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.client();
    c.connect_ok(node, &token(json!({"sub": "42", "channels": ["chat:srv"]})));
    c.subscribe_ok(node, "chat:room");
    c.subscribe_ok(node, "plain:x");
    assert_eq!(node.hub().num_clients(), 1);
    assert_eq!(node.hub().num_subs(), 3);
    c.close(node);
    assert_eq!(node.hub().num_clients(), 0);
    assert_eq!(node.hub().num_users(), 0);
    assert_eq!(node.hub().num_subs(), 0);
    assert_eq!(node.hub().num_channels(), 0);
    assert_eq!(node.api_presence_stats("chat:room").now_or_never().unwrap().unwrap(), (0, 0));
    assert_eq!(node.api_presence_stats("chat:srv").now_or_never().unwrap().unwrap(), (0, 0));
    // Closing a session that never connected is harmless.
    let mut d = env.client();
    d.close(node);
    let mut e = env.client();
    e.error(node, connect_cmd(&token(json!({"sub": "42", "exp": env.now() - 1}))));
    e.close(node);
    assert_eq!(node.hub().num_clients(), 0);
}

#[test]
fn subscription_and_connection_expiry_in_sequence() {
    let mut cfg = base_config();
    no_ping(&mut cfg);
    let env = Env::new(cfg);
    let node = &env.node;
    let now = env.now();
    let mut c = env.client();
    c.connect_ok(node, &token(json!({"sub": "42", "exp": now + 100})));
    for (ch, ttl) in [("$plain:a", 10), ("$plain:b", 20)] {
        let t = sub_token(json!({"sub": "42", "channel": ch, "exp": now + ttl}));
        c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req(ch) });
    }
    env.advance(35, &mut [&mut c]);
    let got = c.take();
    assert_eq!(unsubscribes(&got, "$plain:a"), [2501]);
    assert!(unsubscribes(&got, "$plain:b").is_empty());
    env.advance(10, &mut [&mut c]);
    assert_eq!(unsubscribes(&c.take(), "$plain:b"), [2501]);
    assert_eq!(c.closed(), None);
    env.advance(79, &mut [&mut c]);
    assert_eq!(c.closed(), None);
    env.advance(1, &mut [&mut c]);
    assert_eq!(c.closed(), Some(3005));
}

#[test]
fn api_subscribed_channel_counts_as_subscribed() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    node.api_subscribe(&target("42"), ServerSubscribe { channel: "plain:x".into(), ..Default::default() })
        .now_or_never()
        .expect("ready")
        .unwrap();
    c.pump(node);
    c.take();
    assert_eq!(c.error(node, subscribe_cmd("plain:x")), 105);
    // Publish for subscribers accepts a server-side subscription.
    node.api_subscribe(&target("42"), ServerSubscribe { channel: "chat:x".into(), ..Default::default() })
        .now_or_never()
        .expect("ready")
        .unwrap();
    c.pump(node);
    c.take();
    let replies = c.call(node, publish_cmd("chat:x", "1"));
    assert!(replies.iter().any(|r| r.publish.is_some()));
}

#[test]
fn pending_subscriber_overflow_is_slow() {
    let mut cfg = base_config();
    // The hub buffers queue_max_size / 64 pushes for a pending subscriber (at least 1024 / 64).
    cfg.client.queue_max_size = 1024;
    let env = Env::with_hooks(cfg);
    let hooks = env.hooks.clone().unwrap();
    for i in 0..17 {
        hooks.inject(Phase::AfterRead, "rec:a", &i.to_string(), history_opts(10, 300));
    }
    let mut c = env.connected("42");
    c.run(&env.node, {
        let mut cmd = subscribe_cmd("rec:a");
        cmd.id = 99;
        cmd
    });
    assert_eq!(c.closed(), Some(3008));
}

#[test]
fn json_wire_shapes() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    let run = |c: &mut Client, id: u32, mut cmd: Command| {
        cmd.id = id;
        c.run(node, cmd);
        c.take_json()
    };
    assert_eq!(run(&mut c, 10, subscribe_cmd("plain:a")), [r#"{"id":10,"subscribe":{}}"#]);
    assert_eq!(
        run(&mut c, 11, subscribe_cmd("closed:a")),
        [r#"{"id":11,"error":{"code":103,"message":"permission denied"}}"#]
    );
    let epoch = env.top("rec:a").1;
    assert_eq!(
        run(&mut c, 12, subscribe_cmd("rec:a")),
        [format!(r#"{{"id":12,"subscribe":{{"recoverable":true,"epoch":"{epoch}","positioned":true}}}}"#)]
    );
    env.publish("rec:a", "{\n  \"text\": \"hi\"\n}");
    assert_eq!(
        c.take_json(),
        [format!(
            r#"{{"push":{{"channel":"rec:a","pub":{{"data":{{  "text": "hi"}},"offset":1,"epoch":"{epoch}"}}}}}}"#
        )]
    );
    env.publish("plain:a", r#"{"n":2}"#);
    assert_eq!(c.take_json(), [r#"{"push":{"channel":"plain:a","pub":{"data":{"n":2}}}}"#]);
    node.api_unsubscribe(&target("42"), "plain:a").now_or_never().expect("ready").unwrap();
    c.pump(node);
    assert_eq!(
        c.take_json(),
        [r#"{"push":{"channel":"plain:a","unsubscribe":{"code":2000,"reason":"server unsubscribe"}}}"#]
    );
    let refresh = token(json!({"sub": "42", "exp": env.now() + 30}));
    assert_eq!(run(&mut c, 13, refresh_cmd(&refresh)), [r#"{"id":13,"refresh":{"expires":true,"ttl":30}}"#]);
}

#[test]
fn empty_results_are_present_in_protobuf() {
    let env = anonymous_env(|cfg| {
        cfg.channel.namespaces.push(ns(
            "pres",
            ChannelOptions {
                presence: true,
                allow_presence_for_client: true,
                allow_history_for_client: true,
                allow_subscribe_for_client: true,
                ..history(10, 60)
            },
        ));
    });
    let node = &env.node;
    let mut c = env.connected_with(Envelope::WsProtobuf, "42");
    let one = |replies: Vec<herald_proto::Reply>| {
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.into_iter().next().unwrap()
    };
    let r = one(c.call(node, subscribe_cmd("plain:a")));
    assert_eq!(r.subscribe, Some(SubscribeResult::default()));
    let r = one(c.call(node, presence_cmd("pres:a")));
    assert!(r.presence.unwrap().presence.is_empty());
    let r = one(c.call(node, presence_stats_cmd("pres:a")));
    assert_eq!(r.presence_stats, Some(herald_proto::PresenceStatsResult::default()));
    let r = one(c.call(node, hist("pres:a", 0, None, false)));
    let h = r.history.unwrap();
    assert!(h.publications.is_empty() && h.offset == 0 && h.epoch.len() == 4);
    let r = one(c.call(node, refresh_cmd(&user_token("42"))));
    assert_eq!(r.refresh, Some(herald_proto::RefreshResult::default()));
    let t = sub_token(json!({"sub": "42", "channel": "$plain:s"}));
    c.subscribe_req(node, SubscribeRequest { token: t.clone(), ..sub_req("$plain:s") });
    let r = one(c.call(node, sub_refresh_cmd("$plain:s", &t)));
    assert_eq!(r.sub_refresh, Some(herald_proto::SubRefreshResult::default()));
    let r = one(c.call(node, unsubscribe_cmd("plain:a")));
    assert_eq!(r.unsubscribe, Some(herald_proto::UnsubscribeResult {}));
    // An anonymous Protobuf connection's connect result is present too.
    let mut a = env.client_with(Envelope::WsProtobuf);
    assert_eq!(a.connect_ok(node, "").client, a.id());
}

#[test]
fn large_payloads_in_both_envelopes() {
    let env = Env::base();
    let node = &env.node;
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(70_000));
    let medium = format!(r#"{{"blob":"{}"}}"#, "y".repeat(500));
    let mut cs: Vec<Client> = ENVELOPES.iter().map(|f| env.connected_with(*f, "42")).collect();
    for c in cs.iter_mut() {
        c.subscribe_ok(node, "plain:big");
    }
    env.publish("plain:big", &big);
    env.publish("plain:big", &medium);
    for c in cs.iter_mut() {
        let got = pubs(&c.take(), "plain:big");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].1, big);
        assert_eq!(got[1].1, medium);
    }
}

#[test]
fn excluded_client_publication_is_still_in_history() {
    let env = Env::base();
    let mut a = env.connected("1");
    a.subscribe_ok(&env.node, "hist:x");
    let req = ApiPublish { data: bytes("1"), exclude_client: a.id(), ..Default::default() };
    let out = api_publish(&env, "hist:x", &req).unwrap();
    assert_eq!(out.position.unwrap().offset, 1);
    assert!(a.take().is_empty());
    assert_eq!(env.top("hist:x").0, 1);
}

#[test]
fn node_config_validation() {
    let mut cfg = base_config();
    cfg.client.subscribe_to_user_personal_channel.enabled = true;
    cfg.client.subscribe_to_user_personal_channel.personal_channel_namespace = "missing".into();
    let clock = std::sync::Arc::new(herald_hub::ManualClock::new(T0_MS));
    let id = herald_hub::NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let err = herald_hub::Node::new(cfg, id.clone(), clock.clone()).err().unwrap();
    assert!(err.to_string().contains("personal_channel_namespace"), "{err}");
    let mut cfg = base_config();
    cfg.client.pong_timeout = Duration::from_secs(25);
    let err = herald_hub::Node::new(cfg, id, clock).err().unwrap();
    assert!(err.to_string().contains("client.pong_timeout"), "{err}");
}

#[test]
fn engine_failures_during_connect_and_subscribe_clean_up() {
    use std::sync::atomic::Ordering::SeqCst;
    let env = Env::with_hooks(base_config());
    let hooks = env.hooks.clone().unwrap();
    let node = &env.node;
    let t = token(json!({"sub": "42", "channels": ["plain:a", "rec:b"]}));
    // History read failure while preparing a server-side subscription: 3004.
    hooks.fail_history.store(true, SeqCst);
    let mut c = env.client();
    assert_eq!(c.disconnect(node, connect_cmd(&t)), 3004);
    hooks.fail_history.store(false, SeqCst);
    assert_eq!(node.hub().num_clients(), 0);
    assert_eq!(node.hub().num_subs(), 0);
    // Node subscription failure: error 100 (temporary); the connection is unusable.
    hooks.fail_subscribe.store(true, SeqCst);
    let mut c = env.client();
    let id = c.next_id();
    let replies = c.call(node, connect_cmd(&t));
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].id, id);
    let e = replies[0].error.as_ref().unwrap();
    assert_eq!((e.code, e.temporary), (100, true));
    assert_eq!(node.hub().num_clients(), 0);
    assert_eq!(node.hub().num_subs(), 0);
    assert_eq!(c.disconnect(node, subscribe_cmd("plain:x")), 3501);
    // Client subscribe: error 100, nothing left behind; works once the engine recovers.
    let mut d = env.connected("43");
    let replies = d.call(node, subscribe_cmd("plain:x"));
    assert_eq!(replies[0].error.as_ref().unwrap().code, 100);
    assert_eq!(d.session.channels().count(), 0);
    assert_eq!(node.hub().num_subscribers("plain:x"), 0);
    hooks.fail_subscribe.store(false, SeqCst);
    d.subscribe_ok(node, "plain:x");
}

#[test]
fn api_server_side_subscription_join_leave_and_presence() {
    let env = Env::base();
    let node = &env.node;
    let mut watcher = env.connected("1");
    watcher.subscribe_req(node, SubscribeRequest { join_leave: true, ..sub_req("chat:x") });
    watcher.take();
    let mut c = env.connected("42");
    let sub = ServerSubscribe {
        channel: "chat:x".into(),
        info: bytes(r#"{"srv":1}"#),
        override_: herald_auth::Override { force_push_join_leave: Some(true), ..Default::default() },
        ..Default::default()
    };
    node.api_subscribe(&target("42"), sub).now_or_never().expect("ready").unwrap();
    c.pump(node);
    let got = c.take();
    assert!(got[0].push.as_ref().unwrap().subscribe.is_some(), "Subscribe push first");
    let own = joins(&got, "chat:x");
    assert_eq!(own.len(), 1, "own join (forced by the override), after the Subscribe push");
    assert_eq!(text(&own[0].chan_info), r#"{"srv":1}"#);
    assert_eq!(joins(&watcher.take(), "chat:x")[0].client, c.id());
    let p = node.api_presence("chat:x").now_or_never().unwrap().unwrap();
    assert_eq!(text(&p[&c.id()].chan_info), r#"{"srv":1}"#);
    node.api_unsubscribe(&target("42"), "chat:x").now_or_never().expect("ready").unwrap();
    c.pump(node);
    assert_eq!(unsubscribes(&c.take(), "chat:x"), [2000]);
    assert_eq!(leaves(&watcher.take(), "chat:x")[0].client, c.id());
    assert!(!node.api_presence("chat:x").now_or_never().unwrap().unwrap().contains_key(&c.id()));
}

// ---------------------------------------------------------------------------------------------
// Channel rules: one check for client commands and the server API

#[test]
fn channel_rules_are_the_same_for_clients_and_the_api() {
    let env = Env::base();
    let node = &env.node;
    let mut c = env.connected("42");
    let cases = [
        ("x".repeat(256), 107, "over channel.max_length"),
        (format!("hist:{}", "x".repeat(1 << 20)), 107, "1 MB name"),
        ("hist:a\0b".to_owned(), 107, "NUL byte"),
        ("\0".to_owned(), 107, "only a NUL byte"),
        ("strict:a\0".to_owned(), 107, "NUL byte where a regex would decide"),
        ("nope:x".to_owned(), 102, "unknown namespace"),
        ("strict:UP".to_owned(), 107, "fails channel_regex"),
        ("café".to_owned(), 107, "not ASCII without a regex"),
    ];
    let api = |r: Result<(), herald_proto::ErrorCode>| r.map_err(|e| e.code).unwrap_err();
    for (channel, code, what) in &cases {
        let channel = channel.as_str();
        let hist = HistoryRequest { channel: channel.into(), limit: 10, ..Default::default() };
        let client = [
            ("subscribe", c.error(node, subscribe_cmd(channel))),
            ("publish", c.error(node, publish_cmd(channel, "1"))),
            ("presence", c.error(node, presence_cmd(channel))),
            ("presence_stats", c.error(node, presence_stats_cmd(channel))),
            ("history", c.error(node, history_cmd(hist))),
        ];
        let req = ApiPublish { data: bytes("1"), ..Default::default() };
        let sub = ServerSubscribe { channel: channel.into(), ..Default::default() };
        let server = [
            ("api publish", api_publish(&env, channel, &req).map(|_| ()).unwrap_err()),
            ("api subscribe", api(node.api_subscribe(&target("42"), sub).now_or_never().expect("ready"))),
            ("api unsubscribe", api(node.api_unsubscribe(&target("42"), channel).now_or_never().expect("ready"))),
            ("api presence", api(node.api_presence(channel).now_or_never().unwrap().map(|_| ()))),
            ("api presence_stats", api(node.api_presence_stats(channel).now_or_never().unwrap().map(|_| ()))),
            ("api history", api(node.api_history(channel, 10, None, false).now_or_never().unwrap().map(|_| ()))),
            ("api history_remove", api(node.api_history_remove(channel).now_or_never().unwrap())),
        ];
        for (method, got) in client.iter().chain(&server) {
            assert_eq!(got, code, "{method}: {what}");
        }
    }
    // The connection survived every refusal, and a valid name still works both ways.
    c.subscribe_ok(node, "hist:ok");
    api_publish(&env, "hist:ok", &ApiPublish { data: bytes("1"), ..Default::default() }).unwrap();
    assert_eq!(pubs(&c.take(), "hist:ok").len(), 1);
}

#[test]
fn connect_subs_with_bad_names_are_not_subscribed() {
    let env = Env::base();
    let mut subs = BTreeMap::new();
    for ch in ["plain:ok", "plain:a\0", &format!("plain:{}", "x".repeat(300))] {
        subs.insert(ch.to_owned(), SubscribeRequest::default());
    }
    let mut c = env.client();
    let res = c.connect_req_ok(&env.node, ConnectRequest { token: user_token("42"), subs, ..Default::default() });
    assert_eq!(res.subs.keys().collect::<Vec<_>>(), ["plain:ok"]);
}

// ---------------------------------------------------------------------------------------------
// Tokens not valid yet

#[test]
fn nbf_in_the_future_is_109_token_not_yet_valid() {
    let env = Env::base();
    let node = &env.node;
    let now = env.now();
    let error_of = |replies: &[herald_proto::Reply]| {
        let e = replies[0].error.as_ref().unwrap_or_else(|| panic!("error reply: {replies:?}"));
        (e.code, e.message.clone())
    };
    let not_yet = (109, "token not yet valid".to_owned());
    // Connect: the code SDKs refresh on, the message saying why.
    let mut c = env.client();
    let replies = c.call(node, connect_cmd(&token(json!({"sub": "42", "nbf": now + 10}))));
    assert_eq!(error_of(&replies), not_yet);
    // An expired token still says expired.
    let mut c = env.client();
    let replies = c.call(node, connect_cmd(&token(json!({"sub": "42", "exp": now - 1}))));
    assert_eq!(error_of(&replies), (109, "token expired".to_owned()));
    // Subscribe and sub_refresh tokens.
    let mut c = env.connected("42");
    let early = sub_token(json!({"sub": "42", "channel": "$plain:s", "nbf": now + 10}));
    let replies = c.call(node, subscribe_with(SubscribeRequest { token: early.clone(), ..sub_req("$plain:s") }));
    assert_eq!(error_of(&replies), not_yet);
    let t = sub_token(json!({"sub": "42", "channel": "$plain:s", "exp": now + 60}));
    c.subscribe_req(node, SubscribeRequest { token: t, ..sub_req("$plain:s") });
    let replies = c.call(node, sub_refresh_cmd("$plain:s", &early));
    assert_eq!(error_of(&replies), not_yet);
    // Refresh: 3005 as for an expired token, with a reason that says why.
    assert_eq!(c.disconnect(node, refresh_cmd(&token(json!({"sub": "42", "nbf": now + 10})))), 3005);
    let reason = c.link.close_reason().expect("closed");
    assert_eq!((reason.code, reason.reason.as_ref()), (3005, "connection token not yet valid"));
}

/// Emulation transports (SSE, HTTP streaming) need `session` and `node` in the connect result to
/// route `/emulation` requests; other transports get neither.
#[test]
fn emulation_connect_results_carry_session_and_node() {
    let env = Env::new(base_config());
    for envelope in [Envelope::Sse, Envelope::StreamJson, Envelope::StreamProtobuf] {
        let mut c = env.client_with(envelope);
        let result = c.connect_ok(&env.node, &user_token("42"));
        assert_eq!((result.session.as_str(), result.node.as_str()), ("session-1", "node-uid"), "{envelope:?}");
    }
    let mut ws = env.client();
    let result = ws.connect_ok(&env.node, &user_token("42"));
    assert_eq!((result.session.as_str(), result.node.as_str()), ("", ""));
}
