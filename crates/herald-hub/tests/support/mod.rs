//! Sans-IO harness for session tests: a recording [`ClientLink`], a driver that runs commands and
//! controls to completion with `now_or_never`, a manual clock, and a broker wrapper that can
//! inject publications while a subscriber is pending (to test the race-free subscribe).

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use herald_hub::broker::{
    BoxFuture, Broker, BrokerError, BrokerHandler, ErrorKind, HistoryQuery, HistorySlice, MemoryBroker, MemoryPresence,
    PublishOptions, PublishOutcome,
};
use herald_hub::config::{ChannelOptions, Namespace};
use herald_hub::{
    ClientLink, Clock, ConnectionInfo, Control, Flow, HubConfig, LinkTimers, ManualClock, Node, NodeIdentity, Session,
};
use herald_proto::envelope;
use herald_proto::{
    ClientInfo, Command, ConnectRequest, ConnectResult, DisconnectReason, Envelope, Publication, Reply,
    SubscribeRequest, SubscribeResult, decode_replies,
};
use uuid::Uuid;

pub(crate) const SECRET: &str = "herald-test-secret";
/// Start of every test clock (a whole second, so ticks and Unix seconds line up).
pub(crate) const T0_MS: i64 = 1_700_000_000_000;
pub(crate) const VERSION: &str = "herald-test-1.0";

/// Unix seconds at the start of a test.
pub(crate) fn t0() -> i64 {
    T0_MS / 1000
}

/// A connection token signed with [`SECRET`].
pub(crate) fn token(claims: serde_json::Value) -> String {
    herald_auth::sign_hmac(&claims, SECRET, "HS256").expect("sign")
}

/// A connection token for `user` without expiry.
pub(crate) fn user_token(user: &str) -> String {
    token(serde_json::json!({ "sub": user }))
}

pub(crate) fn ns(name: &str, options: ChannelOptions) -> Namespace {
    Namespace { name: name.into(), options }
}

pub(crate) fn history(size: usize, ttl_secs: u64) -> ChannelOptions {
    ChannelOptions { history_size: size, history_ttl: Duration::from_secs(ttl_secs), ..Default::default() }
}

/// The configuration most tests start from.
///
/// - without namespace: clients may subscribe;
/// - `plain`: clients may subscribe, nothing else;
/// - `anon`: anonymous clients may subscribe too;
/// - `strict`: a channel regex;
/// - `users`: user-limited channels;
/// - `pos`: forced positioning with history; `rec`: forced recovery with history;
/// - `hist`: history, clients may ask for positioning/recovery through history access;
/// - `chat`: presence, join/leave, subscriber rights for publish/presence/history;
/// - `closed`: no rights at all.
pub(crate) fn base_config() -> HubConfig {
    let mut cfg = HubConfig::default();
    cfg.client.token.hmac_secret_key = SECRET.into();
    cfg.channel.without_namespace = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    let sub = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    cfg.channel.namespaces = vec![
        ns("plain", sub.clone()),
        ns("anon", ChannelOptions { allow_subscribe_for_anonymous: true, ..sub.clone() }),
        ns("strict", ChannelOptions { channel_regex: "^[a-z0-9]+$".into(), ..sub.clone() }),
        ns("users", ChannelOptions { allow_user_limited_channels: true, ..sub }),
        ns("pos", ChannelOptions { force_positioning: true, allow_subscribe_for_client: true, ..history(10, 300) }),
        ns("rec", ChannelOptions { force_recovery: true, allow_subscribe_for_client: true, ..history(10, 300) }),
        ns(
            "hist",
            ChannelOptions {
                allow_subscribe_for_client: true,
                allow_history_for_client: true,
                allow_publish_for_client: true,
                ..history(10, 300)
            },
        ),
        ns(
            "chat",
            ChannelOptions {
                presence: true,
                join_leave: true,
                allow_subscribe_for_client: true,
                allow_publish_for_subscriber: true,
                allow_presence_for_subscriber: true,
                allow_history_for_subscriber: true,
                ..history(10, 300)
            },
        ),
        ns("closed", ChannelOptions::default()),
    ];
    cfg
}

fn identity() -> NodeIdentity {
    NodeIdentity { uid: "node-uid".into(), name: "node-1".into(), version: VERSION.into() }
}

/// A node, its clock and (optionally) the hook broker it runs on.
pub(crate) struct Env {
    pub(crate) node: Arc<Node>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) hooks: Option<Arc<HookBroker>>,
}

impl Env {
    pub(crate) fn new(cfg: HubConfig) -> Env {
        let clock = Arc::new(ManualClock::new(T0_MS));
        let node = Node::new(cfg, identity(), clock.clone()).expect("valid config");
        Env { node, clock, hooks: None }
    }

    pub(crate) fn base() -> Env {
        Env::new(base_config())
    }

    /// A node on a [`HookBroker`] (memory engine plus injected publications).
    pub(crate) fn with_hooks(cfg: HubConfig) -> Env {
        let clock = Arc::new(ManualClock::new(T0_MS));
        let hooks = Arc::new(HookBroker::new(clock.clone()));
        let node =
            Node::with_engines(cfg, identity(), clock.clone(), hooks.clone(), Arc::new(MemoryPresence::default()))
                .expect("valid config");
        Env { node, clock, hooks: Some(hooks) }
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now_secs()
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.node, Envelope::WsJson)
    }

    pub(crate) fn client_with(&self, envelope: Envelope) -> Client {
        Client::new(&self.node, envelope)
    }

    /// A connected client of `user` (WebSocket JSON).
    pub(crate) fn connected(&self, user: &str) -> Client {
        self.connected_with(Envelope::WsJson, user)
    }

    pub(crate) fn connected_with(&self, envelope: Envelope, user: &str) -> Client {
        let mut c = Client::new(&self.node, envelope);
        c.connect_ok(&self.node, &user_token(user));
        c
    }

    /// Moves time on one second at a time, running the timer wheel and delivering controls to
    /// the given clients after each second.
    pub(crate) fn advance(&self, secs: u32, clients: &mut [&mut Client]) {
        for _ in 0..secs {
            self.clock.advance(1000);
            self.node.run_timers();
            for c in clients.iter_mut() {
                c.pump(&self.node);
            }
        }
    }

    /// Publishes through the server API; returns the stream offset (0 without history).
    pub(crate) fn publish(&self, channel: &str, data: &str) -> u64 {
        assert!(serde_json::from_str::<serde_json::Value>(data).is_ok(), "test payloads are JSON: {data}");
        let req = herald_hub::node::ApiPublish { data: Bytes::copy_from_slice(data.as_bytes()), ..Default::default() };
        let out = self.node.api_publish(channel, &req).now_or_never().expect("ready").expect("api publish");
        out.position.map(|p| p.offset).unwrap_or(0)
    }

    /// The current stream position of a history channel (through the API).
    pub(crate) fn top(&self, channel: &str) -> (u64, String) {
        let slice = self.node.api_history(channel, 0, None, false).now_or_never().expect("ready").expect("history");
        (slice.top.offset, slice.top.epoch)
    }
}

/// A [`ClientLink`] that records everything the hub and session do to it.
pub(crate) struct TestLink {
    id: Uuid,
    envelope: Envelope,
    frames: Mutex<Vec<Bytes>>,
    closes: Mutex<Vec<DisconnectReason>>,
    controls: Mutex<Vec<Control>>,
    timers: LinkTimers,
}

impl TestLink {
    pub(crate) fn new(envelope: Envelope) -> Arc<TestLink> {
        Arc::new(TestLink {
            id: Uuid::new_v4(),
            envelope,
            frames: Mutex::new(Vec::new()),
            closes: Mutex::new(Vec::new()),
            controls: Mutex::new(Vec::new()),
            timers: LinkTimers::new(true),
        })
    }

    pub(crate) fn frames(&self) -> Vec<Bytes> {
        self.frames.lock().unwrap().clone()
    }

    /// The first close reason asked for (the one a transport would use).
    pub(crate) fn close_reason(&self) -> Option<DisconnectReason> {
        self.closes.lock().unwrap().first().cloned()
    }

    pub(crate) fn closes(&self) -> Vec<DisconnectReason> {
        self.closes.lock().unwrap().clone()
    }

    pub(crate) fn take_controls(&self) -> Vec<Control> {
        std::mem::take(&mut *self.controls.lock().unwrap())
    }
}

impl ClientLink for TestLink {
    fn id(&self) -> Uuid {
        self.id
    }

    fn envelope(&self) -> Envelope {
        self.envelope
    }

    fn ping_frame(&self) -> Bytes {
        envelope::ping(self.envelope)
    }

    /// SSE and HTTP-streaming links are emulation sessions (one fixed id is enough here).
    fn emulation_session(&self) -> Option<&str> {
        matches!(self.envelope, Envelope::Sse | Envelope::StreamJson | Envelope::StreamProtobuf).then_some("session-1")
    }

    fn send(&self, frame: Bytes) {
        self.frames.lock().unwrap().push(frame);
    }

    fn close(&self, reason: DisconnectReason) {
        self.closes.lock().unwrap().push(reason);
    }

    fn control(&self, ctrl: Control) {
        self.controls.lock().unwrap().push(ctrl);
    }

    fn timers(&self) -> &LinkTimers {
        &self.timers
    }
}

/// The reply bytes inside one item written to the link, checking that it is exactly one
/// complete item of the link's envelope.
pub(crate) fn payload(envelope: Envelope, frame: &Bytes) -> Bytes {
    envelope::open(envelope, frame).unwrap_or_else(|| panic!("not one {envelope:?} item: {frame:?}"))
}

/// Decodes every reply of one server frame.
pub(crate) fn decode_frame(envelope: Envelope, frame: &Bytes) -> Vec<Reply> {
    decode_replies(envelope.encoding(), payload(envelope, frame)).expect("decodable frame")
}

/// A session plus its link: runs commands and controls to completion.
pub(crate) struct Client {
    pub(crate) link: Arc<TestLink>,
    pub(crate) dyn_link: Arc<dyn ClientLink>,
    pub(crate) session: Session,
    pub(crate) envelope: Envelope,
    next_id: u32,
    seen: usize,
}

impl Client {
    /// A fresh connection, with the stale deadline armed the way the transport does it.
    pub(crate) fn new(node: &Node, envelope: Envelope) -> Client {
        let link = TestLink::new(envelope);
        let dyn_link: Arc<dyn ClientLink> = link.clone();
        let stale_at = node.tick() + node.config().client.stale_close_delay.as_secs() as u32;
        link.timers().set_stale(stale_at);
        node.timers().schedule(&dyn_link, stale_at);
        let session = Session::new(dyn_link.clone(), ConnectionInfo::default());
        Client { link, dyn_link, session, envelope, next_id: 0, seen: 0 }
    }

    pub(crate) fn id(&self) -> String {
        self.link.id().to_string()
    }

    /// Runs one command as is (the id is not touched).
    pub(crate) fn run(&mut self, node: &Node, cmd: Command) -> Flow {
        Box::pin(self.session.handle_command(node, &cmd)).now_or_never().expect("memory engine never pends")
    }

    /// Runs one command with the next id and returns every reply written since the last read.
    pub(crate) fn call(&mut self, node: &Node, mut cmd: Command) -> Vec<Reply> {
        self.next_id += 1;
        cmd.id = self.next_id;
        self.run(node, cmd);
        self.take()
    }

    /// Runs one command with the next id (WebSocket JSON); returns the raw JSON written since the
    /// last read.
    pub(crate) fn call_json(&mut self, node: &Node, mut cmd: Command) -> Vec<String> {
        self.next_id += 1;
        cmd.id = self.next_id;
        self.run(node, cmd);
        self.take_json()
    }

    /// The id the next [`Client::call`] uses.
    pub(crate) fn next_id(&self) -> u32 {
        self.next_id + 1
    }

    /// Delivers queued controls to the session, as the transport's task does.
    pub(crate) fn pump(&mut self, node: &Node) -> Flow {
        for ctrl in self.link.take_controls() {
            let flow = Box::pin(self.session.handle_control(node, ctrl)).now_or_never().expect("never pends");
            if flow == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Hands one control to the session directly.
    pub(crate) fn control(&mut self, node: &Node, ctrl: Control) -> Flow {
        Box::pin(self.session.handle_control(node, ctrl)).now_or_never().expect("never pends")
    }

    /// Replies written since the last read, decoded.
    pub(crate) fn take(&mut self) -> Vec<Reply> {
        let frames = self.link.frames();
        let new = &frames[self.seen..];
        self.seen = frames.len();
        new.iter().flat_map(|f| decode_frame(self.envelope, f)).collect()
    }

    /// Raw payloads (JSON text or Protobuf bytes) written since the last read.
    pub(crate) fn take_raw(&mut self) -> Vec<Bytes> {
        let frames = self.link.frames();
        let new = &frames[self.seen..];
        self.seen = frames.len();
        new.iter().map(|f| payload(self.envelope, f)).collect()
    }

    /// Raw JSON text of the frames written since the last read.
    pub(crate) fn take_json(&mut self) -> Vec<String> {
        assert_eq!(self.envelope, Envelope::WsJson);
        self.take_raw().into_iter().map(|b| String::from_utf8(b.to_vec()).expect("utf-8")).collect()
    }

    /// Close code asked for, if any.
    pub(crate) fn closed(&self) -> Option<u32> {
        self.link.close_reason().map(|r| r.code)
    }

    /// Runs the session's cleanup, as the transport does when the connection ends.
    pub(crate) fn close(&mut self, node: &Node) {
        Box::pin(self.session.close(node)).now_or_never().expect("never pends");
    }

    pub(crate) fn connect_ok(&mut self, node: &Node, token: &str) -> ConnectResult {
        self.connect_req_ok(node, ConnectRequest { token: token.into(), ..Default::default() })
    }

    pub(crate) fn connect_req_ok(&mut self, node: &Node, req: ConnectRequest) -> ConnectResult {
        self.connect_full(node, req).0
    }

    /// Connects; asserts success and that the connect reply comes first. Returns the result and
    /// the pushes written after it.
    pub(crate) fn connect_full(&mut self, node: &Node, req: ConnectRequest) -> (ConnectResult, Vec<Reply>) {
        let id = self.next_id();
        let mut replies = self.call(node, Command { connect: Some(req), ..Default::default() });
        assert_eq!(self.closed(), None, "connect closed the connection: {replies:?}");
        assert!(!replies.is_empty(), "no connect reply");
        let first = replies.remove(0);
        assert_eq!(first.id, id, "the connect reply comes first: {first:?}");
        assert_eq!(first.error, None, "connect failed");
        (first.connect.expect("connect result"), replies)
    }

    /// Subscribes; asserts success and that the reply comes first. Returns the result and the
    /// pushes written after the reply.
    pub(crate) fn subscribe_req(&mut self, node: &Node, req: SubscribeRequest) -> (SubscribeResult, Vec<Reply>) {
        let id = self.next_id();
        let mut replies = self.call(node, Command { subscribe: Some(req), ..Default::default() });
        assert_eq!(self.closed(), None, "subscribe closed the connection");
        assert!(!replies.is_empty(), "no subscribe reply");
        let first = replies.remove(0);
        assert_eq!(first.id, id, "the subscribe reply comes first: {first:?}");
        assert_eq!(first.error, None, "subscribe failed");
        (first.subscribe.expect("subscribe result"), replies)
    }

    pub(crate) fn subscribe_ok(&mut self, node: &Node, channel: &str) -> SubscribeResult {
        let (result, rest) = self.subscribe_req(node, sub_req(channel));
        assert!(rest.is_empty(), "unexpected pushes after subscribe: {rest:?}");
        result
    }

    /// Runs a command that must fail with an error reply; returns the code.
    pub(crate) fn error(&mut self, node: &Node, cmd: Command) -> u32 {
        let id = self.next_id();
        let replies = self.call(node, cmd);
        assert_eq!(self.closed(), None, "expected an error reply, got a close: {replies:?}");
        assert_eq!(replies.len(), 1, "expected exactly one reply: {replies:?}");
        assert_eq!(replies[0].id, id);
        replies[0].error.as_ref().expect("error reply").code
    }

    /// Runs a command (with the next id) that must close the connection; returns the close code.
    pub(crate) fn disconnect(&mut self, node: &Node, mut cmd: Command) -> u32 {
        self.next_id += 1;
        cmd.id = self.next_id;
        self.disconnect_raw(node, cmd)
    }

    /// Runs a command as is (id untouched) that must close the connection; returns the code.
    pub(crate) fn disconnect_raw(&mut self, node: &Node, cmd: Command) -> u32 {
        let flow = self.run(node, cmd);
        assert_eq!(flow, Flow::Stop, "expected the session to stop");
        let replies = self.take();
        assert!(replies.is_empty(), "no reply expected before a disconnect: {replies:?}");
        self.closed().expect("closed")
    }
}

// Command builders.

pub(crate) fn connect_cmd(token: &str) -> Command {
    Command { connect: Some(ConnectRequest { token: token.into(), ..Default::default() }), ..Default::default() }
}

pub(crate) fn sub_req(channel: &str) -> SubscribeRequest {
    SubscribeRequest { channel: channel.into(), ..Default::default() }
}

pub(crate) fn subscribe_cmd(channel: &str) -> Command {
    Command { subscribe: Some(sub_req(channel)), ..Default::default() }
}

pub(crate) fn subscribe_with(req: SubscribeRequest) -> Command {
    Command { subscribe: Some(req), ..Default::default() }
}

pub(crate) fn unsubscribe_cmd(channel: &str) -> Command {
    Command { unsubscribe: Some(herald_proto::UnsubscribeRequest { channel: channel.into() }), ..Default::default() }
}

pub(crate) fn publish_cmd(channel: &str, data: &str) -> Command {
    Command {
        publish: Some(herald_proto::PublishRequest {
            channel: channel.into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }),
        ..Default::default()
    }
}

pub(crate) fn presence_cmd(channel: &str) -> Command {
    Command { presence: Some(herald_proto::PresenceRequest { channel: channel.into() }), ..Default::default() }
}

pub(crate) fn presence_stats_cmd(channel: &str) -> Command {
    Command {
        presence_stats: Some(herald_proto::PresenceStatsRequest { channel: channel.into() }),
        ..Default::default()
    }
}

pub(crate) fn history_cmd(req: herald_proto::HistoryRequest) -> Command {
    Command { history: Some(req), ..Default::default() }
}

pub(crate) fn refresh_cmd(token: &str) -> Command {
    Command { refresh: Some(herald_proto::RefreshRequest { token: token.into() }), ..Default::default() }
}

pub(crate) fn sub_refresh_cmd(channel: &str, token: &str) -> Command {
    Command {
        sub_refresh: Some(herald_proto::SubRefreshRequest { channel: channel.into(), token: token.into() }),
        ..Default::default()
    }
}

// Reading pushes.

/// Publications pushed for `channel`, as (offset, data text).
pub(crate) fn pubs(replies: &[Reply], channel: &str) -> Vec<(u64, String)> {
    replies
        .iter()
        .filter_map(|r| r.push.as_ref())
        .filter(|p| p.channel == channel)
        .filter_map(|p| p.publication.as_ref())
        .map(|p| (p.offset, String::from_utf8_lossy(&p.data).into_owned()))
        .collect()
}

/// Every publication push (any channel).
pub(crate) fn publications(replies: &[Reply]) -> Vec<Publication> {
    replies.iter().filter_map(|r| r.push.as_ref()).filter_map(|p| p.publication.clone()).collect()
}

/// Joins pushed for `channel`: the joining client ids.
pub(crate) fn joins(replies: &[Reply], channel: &str) -> Vec<ClientInfo> {
    replies
        .iter()
        .filter_map(|r| r.push.as_ref())
        .filter(|p| p.channel == channel)
        .filter_map(|p| p.join.as_ref().and_then(|j| j.info.clone()))
        .collect()
}

pub(crate) fn leaves(replies: &[Reply], channel: &str) -> Vec<ClientInfo> {
    replies
        .iter()
        .filter_map(|r| r.push.as_ref())
        .filter(|p| p.channel == channel)
        .filter_map(|p| p.leave.as_ref().and_then(|j| j.info.clone()))
        .collect()
}

/// Unsubscribe pushes for `channel`: their codes.
pub(crate) fn unsubscribes(replies: &[Reply], channel: &str) -> Vec<u32> {
    replies
        .iter()
        .filter_map(|r| r.push.as_ref())
        .filter(|p| p.channel == channel)
        .filter_map(|p| p.unsubscribe.as_ref().map(|u| u.code))
        .collect()
}

/// When the [`HookBroker`] publishes an injected publication relative to a history read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Published just before the stream is read (it is part of what the read sees).
    BeforeRead,
    /// Published right after the stream was read (newer than what the read saw).
    AfterRead,
}

struct Hook {
    phase: Phase,
    channel: String,
    data: Bytes,
    opts: PublishOptions,
}

/// The memory broker plus publications injected around the next history read of a channel:
/// the way a concurrent publisher would interleave with a subscribe on a real engine.
pub(crate) struct HookBroker {
    inner: MemoryBroker,
    hooks: Mutex<Vec<Hook>>,
    /// History reads seen (channel names).
    pub(crate) reads: Mutex<Vec<String>>,
    /// Make the next history reads fail.
    pub(crate) fail_history: std::sync::atomic::AtomicBool,
    /// Make publishes fail.
    pub(crate) fail_publish: std::sync::atomic::AtomicBool,
    /// Make node subscriptions (first local subscriber of a channel) fail.
    pub(crate) fail_subscribe: std::sync::atomic::AtomicBool,
}

impl HookBroker {
    fn new(clock: Arc<dyn Clock>) -> HookBroker {
        HookBroker {
            inner: MemoryBroker::new(clock),
            hooks: Mutex::new(Vec::new()),
            reads: Mutex::new(Vec::new()),
            fail_history: Default::default(),
            fail_publish: Default::default(),
            fail_subscribe: Default::default(),
        }
    }

    /// Injects a publication of `data` into `channel` at `phase` of its next history read.
    pub(crate) fn inject(&self, phase: Phase, channel: &str, data: &str, opts: PublishOptions) {
        self.hooks.lock().unwrap().push(Hook {
            phase,
            channel: channel.into(),
            data: Bytes::copy_from_slice(data.as_bytes()),
            opts,
        });
    }

    fn run_hooks(&self, channel: &str, phase: Phase) {
        let due: Vec<Hook> = {
            let mut hooks = self.hooks.lock().unwrap();
            let (due, keep) = hooks.drain(..).partition(|h| h.channel == channel && h.phase == phase);
            *hooks = keep;
            due
        };
        for h in due {
            let publication = Publication { data: h.data, ..Default::default() };
            self.inner.publish(&h.channel, publication, &h.opts).now_or_never().expect("ready").expect("publish");
        }
    }
}

impl Broker for HookBroker {
    fn set_handler(&self, handler: Arc<dyn BrokerHandler>) -> Result<(), BrokerError> {
        self.inner.set_handler(handler)
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        publication: Publication,
        opts: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<PublishOutcome, BrokerError>> {
        if self.fail_publish.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(injected("publish"))));
        }
        self.inner.publish(channel, publication, opts)
    }

    fn publish_join<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_join(channel, info)
    }

    fn publish_leave<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_leave(channel, info)
    }

    fn publish_control<'a>(&'a self, node: Option<&'a str>, payload: Bytes) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_control(node, payload)
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        if self.fail_subscribe.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(injected("subscribe"))));
        }
        self.inner.subscribe(channel)
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.unsubscribe(channel)
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistorySlice, BrokerError>> {
        self.reads.lock().unwrap().push(channel.to_owned());
        if self.fail_history.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(injected("history"))));
        }
        self.run_hooks(channel, Phase::BeforeRead);
        let slice = self.inner.history(channel, query).now_or_never().expect("ready");
        self.run_hooks(channel, Phase::AfterRead);
        Box::pin(std::future::ready(slice))
    }

    fn remove_history<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.remove_history(channel)
    }

    fn housekeep(&self, now_ms: i64) {
        self.inner.housekeep(now_ms);
    }

    fn healthy(&self) -> bool {
        self.inner.healthy()
    }
}

/// The failure the hook broker injects into `op`.
fn injected(op: &'static str) -> BrokerError {
    BrokerError::new(ErrorKind::Unavailable, format!("injected {op} failure"))
}

/// Publish options matching a namespace made with [`history`] (size, ttl).
pub(crate) fn history_opts(size: usize, ttl_secs: u64) -> PublishOptions {
    PublishOptions {
        history_size: size,
        history_ttl: Duration::from_secs(ttl_secs),
        history_meta_ttl: Duration::from_secs(720 * 3600),
        ..Default::default()
    }
}
