//! Unit tests of the connect seam: a session established from an identity that no token
//! carried, through a test [`Authenticator`]. The protocol itself is tested end to end in
//! `tests/session.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use herald_auth::{SubOptions, SubscribeClaims, TokenError};
use herald_proto::codes::*;
use herald_proto::envelope::{self, Envelope};
use herald_proto::{Command, ConnectRequest, DisconnectReason, SubscribeRequest};
use uuid::Uuid;

use super::{Flow, Session};
use crate::broker::BoxFuture;
use crate::clock::ManualClock;
use crate::config::{ChannelOptions, HubConfig, Namespace};
use crate::conn::ConnectionInfo;
use crate::link::{ClientLink, Control, LinkTimers};
use crate::node::{Node, NodeIdentity};
use crate::ports::{Authenticator, ConnectAttempt, Identity, Refusal};
use crate::session::Ports;

const NOW: i64 = 1_700_000_000;

/// Answers connects the way a backend would: from the connect request's `data`, not a token.
struct Backend {
    seen: Mutex<Vec<(Uuid, Bytes)>>,
}

impl Authenticator for Backend {
    fn connect<'a>(&'a self, attempt: ConnectAttempt<'a>) -> BoxFuture<'a, Result<Identity, Refusal>> {
        self.seen.lock().unwrap().push((attempt.client, attempt.request.data.clone()));
        let answer = if attempt.request.data.as_ref() == b"\"let me in\"" {
            let mut subs = BTreeMap::new();
            let options = SubOptions { info: Bytes::from_static(b"{\"role\":\"reader\"}"), ..Default::default() };
            subs.insert("news:a".to_owned(), options);
            Ok(Identity {
                user: "backend-user".into(),
                expire_at: Some(attempt.now + 600),
                info: Bytes::from_static(b"{\"name\":\"Ann\"}"),
                data: Bytes::from_static(b"{\"welcome\":true}"),
                channels: vec!["ignored:because-subs-win".into()],
                subs,
                ..Default::default()
            })
        } else {
            Err(DISCONNECT_PERMISSION_DENIED.into())
        };
        Box::pin(std::future::ready(answer))
    }

    fn refresh_token(&self, _token: &str, _now: i64) -> Result<Identity, TokenError> {
        Err(TokenError::Invalid("no tokens here".into()))
    }

    fn subscription_token(&self, _token: &str, _now: i64) -> Result<SubscribeClaims, TokenError> {
        Err(TokenError::Invalid("no tokens here".into()))
    }
}

pub(super) struct Recorder {
    pub(super) frames: Mutex<Vec<Bytes>>,
    pub(super) closes: Mutex<Vec<DisconnectReason>>,
    pub(super) timers: LinkTimers,
}

impl ClientLink for Recorder {
    fn id(&self) -> Uuid {
        Uuid::from_u128(7)
    }
    fn envelope(&self) -> Envelope {
        Envelope::WsJson
    }
    fn ping_frame(&self) -> Bytes {
        envelope::ping(Envelope::WsJson)
    }
    fn send(&self, frame: Bytes) {
        self.frames.lock().unwrap().push(frame);
    }
    fn close(&self, reason: DisconnectReason) {
        self.closes.lock().unwrap().push(reason);
    }
    fn control(&self, _ctrl: Control) {}
    fn timers(&self) -> &LinkTimers {
        &self.timers
    }
}

impl Recorder {
    pub(super) fn new() -> Self {
        Recorder { frames: Mutex::default(), closes: Mutex::default(), timers: LinkTimers::new(true) }
    }

    /// Whether a queued frame contains `text` (frames are JSON here).
    pub(super) fn sent(&self, text: &str) -> bool {
        self.frames.lock().unwrap().iter().any(|f| f.windows(text.len()).any(|w| w == text.as_bytes()))
    }
}

fn node() -> Arc<Node> {
    let mut cfg = HubConfig::default();
    let sub = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    cfg.channel.namespaces = vec![Namespace { name: "news".into(), options: sub }];
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    Node::new(cfg, identity, Arc::new(ManualClock::new(NOW * 1000))).expect("valid config")
}

fn connect(data: &'static [u8]) -> Command {
    let mut req = ConnectRequest { data: Bytes::from_static(data), ..Default::default() };
    req.subs.insert("news:b".into(), SubscribeRequest::default());
    Command { id: 1, connect: Some(req), ..Default::default() }
}

#[test]
fn a_connect_decided_without_a_token_is_established() {
    let node = node();
    let backend = Backend { seen: Mutex::new(Vec::new()) };
    let live = node.live();
    let mut ports = Ports::new(&node, &live);
    ports.auth = &backend;
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());

    let flow = session.dispatch(ports, &connect(b"\"let me in\"")).now_or_never().expect("ready");

    assert_eq!(flow, Flow::Continue);
    assert!(session.is_connected());
    assert_eq!(session.user(), "backend-user");
    assert_eq!(backend.seen.lock().unwrap()[0], (link.id(), Bytes::from_static(b"\"let me in\"")));
    // The identity's `subs` (not its `channels`) plus the permitted channel the client asked for.
    let mut channels: Vec<&str> = session.channels().collect();
    channels.sort();
    assert_eq!(channels, ["news:a", "news:b"]);
    assert_eq!(node.hub().num_clients(), 1);
    assert_eq!(node.hub().num_subscribers("news:a"), 1);
    assert!(link.sent("\"data\":{\"welcome\":true}"), "connect data reaches the client");
    assert!(link.sent("\"expires\":true,\"ttl\":600"), "the identity's expiry applies");
    assert!(link.timers.session_deadline() > 0, "expiry is armed");
    assert!(link.closes.lock().unwrap().is_empty());

    session.close(&node).now_or_never().expect("ready");
    assert_eq!(node.hub().num_clients(), 0);
    assert_eq!(node.hub().num_subscribers("news:a"), 0);
}

#[test]
fn a_refusal_from_the_authenticator_is_the_connect_outcome() {
    let node = node();
    let backend = Backend { seen: Mutex::new(Vec::new()) };
    let live = node.live();
    let mut ports = Ports::new(&node, &live);
    ports.auth = &backend;
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());

    let flow = session.dispatch(ports, &connect(b"\"no\"")).now_or_never().expect("ready");

    assert_eq!(flow, Flow::Stop);
    assert!(!session.is_connected());
    assert_eq!(link.closes.lock().unwrap().as_slice(), [DISCONNECT_PERMISSION_DENIED]);
    assert_eq!(node.hub().num_clients(), 0);
}

/// `client.command_rate_limit`: the burst passes, the next command gets 111, and one more than
/// `disconnect_after` refusals in a row closes the connection with 3013; time refills.
#[test]
fn commands_over_the_rate_get_111_then_a_disconnect() {
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let mut cfg = HubConfig::default();
    let sub = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    cfg.channel.namespaces = vec![Namespace { name: "news".into(), options: sub }];
    cfg.client.command_rate_limit =
        crate::limits::CommandRateLimit { rate: 2, burst: 2, disconnect_after: 2, ..Default::default() };
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let node = Node::new(cfg, identity, clock.clone()).expect("valid config");
    let backend = Backend { seen: Mutex::new(Vec::new()) };
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());
    let mut run = |cmd: &Command| {
        let live = node.live();
        let mut ports = Ports::new(&node, &live);
        ports.auth = &backend;
        session.dispatch(ports, cmd).now_or_never().expect("ready")
    };
    assert_eq!(run(&connect(b"\"let me in\"")), Flow::Continue, "connect is not counted");
    let stats = |id| Command {
        id,
        presence_stats: Some(herald_proto::PresenceStatsRequest { channel: "news:a".into() }),
        ..Default::default()
    };
    let errors = |link: &Recorder| {
        link.frames.lock().unwrap().iter().filter(|f| f.windows(10).any(|w| w == b"\"code\":111")).count()
    };
    assert_eq!(run(&stats(2)), Flow::Continue);
    assert_eq!(run(&stats(3)), Flow::Continue);
    assert_eq!(errors(&link), 0, "the burst passes");
    assert_eq!(run(&stats(4)), Flow::Continue);
    assert_eq!(errors(&link), 1, "the next command gets 111");
    clock.advance(500);
    assert_eq!(run(&stats(5)), Flow::Continue);
    assert_eq!(errors(&link), 1, "a token came back after 500 ms at 2/s");
    assert_eq!(run(&stats(6)), Flow::Continue);
    assert_eq!(run(&stats(7)), Flow::Continue);
    assert_eq!(errors(&link), 3);
    assert!(link.closes.lock().unwrap().is_empty());
    assert_eq!(run(&stats(8)), Flow::Stop);
    assert_eq!(link.closes.lock().unwrap().as_slice(), [DISCONNECT_TOO_MANY_REQUESTS]);
}

/// A user trace: the connection is marked when the trace starts, its commands and replies
/// are recorded with their payloads, a push through the fan-out too, and nothing after the
/// trace is over (manual clock, no sockets).
#[test]
fn a_traced_session_records_commands_replies_and_pushes_until_the_trace_ends() {
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let mut cfg = HubConfig::default();
    let sub = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    cfg.channel.namespaces = vec![Namespace { name: "news".into(), options: sub }];
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let node = Node::new(cfg, identity, clock.clone()).expect("valid config");
    let backend = Backend { seen: Mutex::new(Vec::new()) };
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());
    let mut run = |cmd: &Command| {
        let live = node.live();
        let mut ports = Ports::new(&node, &live);
        ports.auth = &backend;
        session.dispatch(ports, cmd).now_or_never().expect("ready")
    };
    let stats = |id| Command {
        id,
        presence_stats: Some(herald_proto::PresenceStatsRequest { channel: "news:a".into() }),
        ..Default::default()
    };
    run(&connect(b"\"let me in\""));
    run(&stats(2));
    let tracer = node.hub().tracer();
    assert!(tracer.lines_after(0, 100).0.is_empty(), "nothing is recorded without a trace");
    assert!(!link.timers.is_traced());

    assert_eq!(node.hub().trace_start("backend-user", NOW * 1000 + 5_000), 1);
    assert!(link.timers.is_traced());
    run(&stats(3));
    let publication = herald_proto::Publication { data: Bytes::from_static(b"{\"x\":1}"), ..Default::default() };
    assert_eq!(node.hub().broadcast_publication("news:a", &publication, None), 1);
    let (lines, _) = tracer.lines_after(0, 100);
    let kinds: Vec<(&str, &str)> = lines.iter().map(|l| (l.kind.as_str(), l.method.as_str())).collect();
    assert_eq!(kinds, [("trace", "start"), ("command", "presence_stats"), ("reply", ""), ("push", "news:a")]);
    assert!(lines.iter().all(|l| l.user == "backend-user" && l.node == "n"));
    assert_eq!(lines[1].client, Uuid::from_u128(7).to_string());
    assert!(lines[1].payload.contains("\"channel\":\"news:a\""), "{}", lines[1].payload);
    assert!(lines[3].payload.contains("\"x\":1"), "{}", lines[3].payload);

    clock.advance(5_000);
    node.hub().trace_sweep();
    assert!(!link.timers.is_traced(), "the trace ended by itself");
    assert!(!tracer.any());
    let (newest_lines, newest) = tracer.lines_after(0, 100);
    assert_eq!(newest_lines.last().map(|l| l.method.as_str()), Some("end"));
    run(&stats(4));
    node.hub().broadcast_publication("news:a", &publication, None);
    assert_eq!(tracer.lines_after(newest, 100).0.len(), 0, "nothing after the end");
    assert_eq!(node.hub().messages(), (2, 2), "publications in, pushes out");
}

/// Transports keep a `Session` per connection: it must not grow unnoticed.
#[test]
fn session_stays_small() {
    let size = std::mem::size_of::<Session>();
    assert!(size <= 128, "Session grew to {size} bytes");
}
