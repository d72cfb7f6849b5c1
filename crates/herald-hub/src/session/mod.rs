//! The per-client protocol state machine: connect, then commands, then close.
//!
//! A session takes decoded commands (and [`Control`]s from the server API and timers) one at a
//! time, applies the protocol rules (ordering, limits, permissions, tokens, recovery) and writes
//! replies and pushes to its [`ClientLink`]. It owns no socket and reaches the rest of the node
//! only through the `Ports` the node hands out, so it is tested without I/O (see
//! `tests/session.rs`).
//!
//! This file owns the session state, command and control dispatch, and the reply helpers. The
//! command families live in `connect` (connect, refresh, expiry), `subscribe` (subscriptions,
//! recovery, server-side subscriptions), `publish` (publish, presence, history) and `rpc`
//! (rpc and send).
//!
//! Where Centrifugo's behaviour is ambiguous or surprising, Herald's choices are listed in
//! `docs/protocol.md` ("Herald choices").

mod connect;
#[cfg(test)]
mod proxy_tests;
mod publish;
mod rpc;
mod subscribe;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod webhook_tests;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use herald_proto::codes::*;
use herald_proto::envelope;
use herald_proto::{ClientInfo, Command, DisconnectReason, Method, Push, Reply};

use crate::channel::{ChannelError, Resolved};
use crate::conn::ConnectionInfo;
use crate::limits::{CommandBudget, OverRate};
use crate::link::{ClientLink, Control};
use crate::metrics;
use crate::node::Node;
use crate::ports::{Ports, Refusal};
use crate::proxy::connect::protocol_of;
use crate::proxy::wire::{self, Common};
use crate::proxy::{Decision, ProxyKind, ProxySpec};
use crate::trace;
use crate::webhook::{EventKind, LifecycleEvent};

/// Per-subscription flags kept in the session.
mod sub_flags {
    pub(super) const SERVER_SIDE: u8 = 1;
    pub(super) const POSITIONED: u8 = 2;
    pub(super) const RECOVERABLE: u8 = 4;
    pub(super) const PUSH_JOIN_LEAVE: u8 = 8;
    pub(super) const PRESENCE: u8 = 16;
    pub(super) const EMIT_JOIN_LEAVE: u8 = 32;
    /// Extended by the sub_refresh proxy at its expiry (the client is not told to refresh).
    pub(super) const PROXY_REFRESH: u8 = 64;
}
use sub_flags::*;

/// One subscription of this session.
#[derive(Debug)]
struct Sub {
    channel: Arc<str>,
    flags: u8,
    /// Unix seconds when the subscription expires (0: never).
    expire_at: i64,
    chan_info: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for connect.
    Fresh,
    Connected,
    /// Connect failed with an error reply: any further command is a bad request.
    Unusable,
}

/// What the caller should do after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop processing the rest of this batch (the session usually asked its link to close).
    Stop,
}

type CmdResult = Result<(), Refusal>;

/// The protocol state of one client connection.
pub struct Session {
    link: Arc<dyn ClientLink>,
    state: State,
    conn: ConnectionInfo,
    user: Arc<str>,
    conn_info: Bytes,
    /// Unix seconds when the connection expires (0: never).
    expire_at: i64,
    /// The refresh proxy extends this connection at `expire_at`.
    server_refresh: bool,
    subs: Vec<Sub>,
    /// Rarely present parts, boxed so an ordinary session does not carry them.
    ext: Option<Box<Extras>>,
}

/// What only some sessions need.
#[derive(Debug, Default)]
struct Extras {
    /// Client HTTP headers kept for the connect proxy; dropped once connected.
    headers: Vec<(String, String)>,
    /// Private connection meta (raw JSON) for proxies with `include_connection_meta`.
    meta: Bytes,
    /// `client.command_rate_limit` state, from the first command after connect.
    budget: Option<CommandBudget>,
    /// The `traceparent` the client connected with (one header), continued by every proxy call
    /// made for this connection.
    traceparent: Vec<(String, String)>,
    /// While the link is traced: the hub whose tracer records this session's lines.
    trace: Option<TraceHub>,
}

/// The hub a traced session records through (shown as a name in `Debug`).
struct TraceHub(Arc<crate::hub::Hub>);

impl std::fmt::Debug for TraceHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceHub")
    }
}

fn bad_request() -> Refusal {
    Refusal::Disconnect(DISCONNECT_BAD_REQUEST)
}

/// `Channels::check` as a client command answers it: an empty channel disconnects with 3501 (as
/// Centrifugo does), any other refusal is an error reply (107 or 102), as in the server API.
fn check_channel<'p>(p: &Ports<'p>, channel: &'p str) -> Result<Resolved<'p>, Refusal> {
    p.channels().check(channel).map_err(|e| {
        metrics::channel_refused("client", e.label());
        if e == ChannelError::Empty { bad_request() } else { e.code().into() }
    })
}

fn ttl(expire_at: i64, now: i64) -> u32 {
    (expire_at - now).clamp(0, u32::MAX as i64) as u32
}

const MAX_EXPIRY_SECS: i64 = 365 * 24 * 3600;

impl Session {
    pub fn new(link: Arc<dyn ClientLink>, conn: ConnectionInfo) -> Session {
        Session {
            link,
            state: State::Fresh,
            conn,
            user: Arc::from(""),
            conn_info: Bytes::new(),
            expire_at: 0,
            server_refresh: false,
            subs: Vec::new(),
            ext: None,
        }
    }

    /// A session whose transport kept client headers for the connect proxy.
    pub fn with_headers(link: Arc<dyn ClientLink>, conn: ConnectionInfo, headers: Vec<(String, String)>) -> Session {
        let mut session = Session::new(link, conn);
        if !headers.is_empty() {
            session.ext = Some(Box::new(Extras { headers, ..Default::default() }));
        }
        session
    }

    /// The fields every proxy request carries, and whether payloads go as base64.
    fn proxy_common(&self, spec: &ProxySpec) -> (Common<'_>, bool) {
        let (protocol, binary) = protocol_of(self.link.envelope().encoding(), spec.binary);
        let meta = if spec.include_meta { self.ext.as_ref().and_then(|e| wire::raw(&e.meta)) } else { None };
        let common = Common {
            client: self.client_id(),
            transport: self.conn.transport().name(),
            protocol,
            encoding: if binary { "binary" } else { "json" },
            user: &self.user,
            meta,
        };
        (common, binary)
    }

    /// Calls a channel or RPC proxy: an answer that is not `result` refuses the command; a
    /// failed call is error 100 (temporary, so SDKs retry).
    async fn ask<R: for<'de> serde::Deserialize<'de> + Default>(
        &self,
        p: &Ports<'_>,
        spec: &ProxySpec,
        kind: ProxyKind,
        body: Vec<u8>,
    ) -> Result<R, Refusal> {
        let traced = self.link.timers().is_traced();
        if traced {
            self.trace(
                trace::kind::PROXY,
                kind.name(),
                &String::from_utf8_lossy(&body[..body.len().min(trace::MAX_PAYLOAD + 4)]),
            );
        }
        let outcome = match p.backend().call::<R>(spec, kind, body, self.trace_headers(), self.conn.peer().ip()).await {
            Ok(Decision::Allow(r)) => Ok(r),
            Ok(Decision::Refuse(r)) => Err(r),
            Err(_) => Err(ERROR_INTERNAL.into()),
        };
        if traced {
            let answer = match &outcome {
                Ok(_) => "allowed".to_owned(),
                Err(refusal) => format!("refused: {refusal:?}"),
            };
            self.trace(trace::kind::PROXY, kind.name(), &answer);
        }
        outcome
    }

    /// Reports a lifecycle event when webhooks want its kind: one branch when they are off, a
    /// push into a bounded queue (never a wait) when on.
    fn notify(&self, p: &Ports<'_>, kind: EventKind, channel: Option<&str>, code: u32, reason: Cow<'static, str>) {
        if let Some(sink) = p.lifecycle(kind) {
            sink.push(LifecycleEvent {
                kind,
                client: self.link.id(),
                user: self.user.clone(),
                channel: channel.map(Arc::from),
                code,
                reason,
                time_ms: p.time().now_ms(),
                transport: self.conn.transport().name(),
            });
        }
    }

    pub fn link(&self) -> &Arc<dyn ClientLink> {
        &self.link
    }

    /// The connection as its transport accepted it (peer address, transport).
    pub fn connection(&self) -> &ConnectionInfo {
        &self.conn
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// The W3C trace id of the `traceparent` the client connected with, if it sent one.
    pub fn trace_id(&self) -> Option<&str> {
        let (_, value) = self.ext.as_ref()?.traceparent.first()?;
        value.trim().split('-').nth(1).filter(|id| id.len() == 32)
    }

    /// The headers every proxy call after connect carries: the connection's `traceparent`.
    fn trace_headers(&self) -> &[(String, String)] {
        self.ext.as_ref().map_or(&[], |e| &e.traceparent)
    }

    /// Channels this session is subscribed to.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.subs.iter().map(|s| &*s.channel)
    }

    fn client_id(&self) -> String {
        self.link.id().to_string()
    }

    fn client_info(&self, chan_info: Bytes) -> ClientInfo {
        ClientInfo {
            user: self.user.to_string(),
            client: self.client_id(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }

    fn find(&self, channel: &str) -> Option<usize> {
        self.subs.iter().position(|s| &*s.channel == channel)
    }

    /// Records a trace line when the link is traced (the caller checked the flag).
    fn trace(&self, kind: &str, method: &str, payload: &dyn std::fmt::Display) {
        if let Some(TraceHub(hub)) = self.ext.as_ref().and_then(|e| e.trace.as_ref()) {
            let now = hub.tracer_now_ms();
            hub.tracer().record(now, &self.user, &self.client_id(), kind, method, payload);
        }
    }

    /// Keeps the hub while the link is traced, so replies can be recorded; drops it after.
    fn follow_trace(&mut self, p: &Ports<'_>) {
        if self.link.timers().is_traced() {
            if self.ext.as_ref().is_none_or(|e| e.trace.is_none()) {
                self.ext.get_or_insert_with(Default::default).trace = Some(TraceHub(p.hub()));
            }
        } else if let Some(ext) = &mut self.ext {
            ext.trace = None;
        }
    }

    /// Encodes and queues one reply; a payload the client's encoding cannot carry closes it.
    fn send(&self, reply: &Reply) {
        if self.link.timers().is_traced() {
            let method = if reply.push.is_some() { "push" } else { "" };
            self.trace(trace::kind::REPLY, method, &trace::Json(reply));
        }
        match envelope::encode(self.link.envelope(), reply) {
            Some(frame) => self.link.send(frame),
            None => self.link.close(DISCONNECT_INAPPROPRIATE_PROTOCOL),
        }
    }

    fn push(&self, push: Push) {
        self.send(&Reply::push(push));
    }

    fn disconnect(&self, reason: DisconnectReason) -> Flow {
        self.link.close(reason);
        Flow::Stop
    }

    /// Handles one command from the client, with the reloadable configuration as it is when
    /// the command begins (held until it ends).
    pub async fn handle_command(&mut self, node: &Node, cmd: &Command) -> Flow {
        let live = node.live();
        self.dispatch(Ports::new(node, &live), cmd).await
    }

    /// Handles one command through the given ports.
    async fn dispatch(&mut self, p: Ports<'_>, cmd: &Command) -> Flow {
        let method = cmd.method();
        let name = method.map(|m| m.name()).unwrap_or("pong");
        // The one check a command pays for user traces (its own link's flag).
        if self.link.timers().is_traced() || self.ext.as_ref().is_some_and(|e| e.trace.is_some()) {
            self.follow_trace(&p);
            if self.link.timers().is_traced() {
                self.trace(trace::kind::COMMAND, name, &trace::Json(cmd));
            }
        }
        if self.state == State::Fresh {
            return match method {
                Some(Method::Connect(req)) if cmd.id > 0 => {
                    // Boxed: the connect state is large and needed once per connection.
                    let started = std::time::Instant::now();
                    let r = Box::pin(self.connect(&p, cmd.id, req)).await;
                    metrics::command_duration(name, started);
                    let flow = self.finish(name, cmd.id, r);
                    if self.state == State::Fresh && flow == Flow::Continue {
                        // After a connect error the rest of the batch is dropped (as Go does)
                        // and the next message closes the connection with 3501. Closing at once
                        // would race an SDK that is fetching a new token after 109.
                        self.state = State::Unusable;
                        return Flow::Stop;
                    }
                    flow
                }
                _ => {
                    metrics::command(name, "disconnect");
                    self.disconnect(DISCONNECT_BAD_REQUEST)
                }
            };
        }
        if self.state == State::Unusable {
            metrics::command(name, "disconnect");
            return self.disconnect(DISCONNECT_BAD_REQUEST);
        }
        let Some(method) = method else {
            if cmd.id == 0 {
                // Pong. Herald accepts pongs leniently (no ping outstanding is not an error).
                self.link.timers().pong_received();
                return Flow::Continue;
            }
            metrics::command("unknown", "disconnect");
            return self.disconnect(DISCONNECT_BAD_REQUEST);
        };
        if cmd.id == 0 && !matches!(method, Method::Send(_)) {
            metrics::command(name, "disconnect");
            return self.disconnect(DISCONNECT_BAD_REQUEST);
        }
        let limit = &p.rules().command_rate_limit;
        if limit.enabled() {
            // The one check a command pays when the limit is on (a delivery pays none).
            let now = p.time().now_ms();
            let user = &self.user;
            let budget = self.ext.get_or_insert_with(Default::default).budget.get_or_insert_with(|| {
                if limit.user_rate > 0 && !user.is_empty() {
                    CommandBudget::with_user(limit, now, p.user_buckets().get(user, &limit.user_rate(), now))
                } else {
                    CommandBudget::new(limit, now)
                }
            });
            match budget.check(limit, now) {
                Ok(()) => {}
                Err(OverRate::Refuse) => {
                    metrics::limit_refused("command_rate", "error");
                    return self.finish(name, cmd.id, Err(ERROR_TOO_MANY_REQUESTS.into()));
                }
                Err(OverRate::Disconnect) => {
                    metrics::limit_refused("command_rate", "disconnect");
                    metrics::command(name, "disconnect");
                    return self.disconnect(DISCONNECT_TOO_MANY_REQUESTS);
                }
            }
        }
        let started = std::time::Instant::now();
        let r = match method {
            Method::Connect(_) => Err(bad_request()),
            Method::Subscribe(req) => Box::pin(self.subscribe(&p, cmd.id, req)).await,
            Method::Unsubscribe(req) => self.unsubscribe(&p, cmd.id, req).await,
            // Boxed: a proxied publish or RPC awaits a backend.
            Method::Publish(req) => Box::pin(self.publish(&p, cmd.id, req)).await,
            Method::Presence(req) => self.presence(&p, cmd.id, req).await,
            Method::PresenceStats(req) => self.presence_stats(&p, cmd.id, req).await,
            Method::History(req) => self.history(&p, cmd.id, req).await,
            Method::Ping(_) => Err(ERROR_NOT_AVAILABLE.into()),
            Method::Send(req) => self.send_message(req),
            Method::Rpc(req) => Box::pin(self.rpc(&p, cmd.id, req)).await,
            Method::Refresh(req) => self.refresh(&p, cmd.id, req),
            Method::SubRefresh(req) => self.sub_refresh(&p, cmd.id, req),
        };
        metrics::command_duration(name, started);
        self.finish(name, cmd.id, r)
    }

    fn finish(&mut self, name: &'static str, id: u32, r: CmdResult) -> Flow {
        match r {
            Ok(()) => {
                metrics::command(name, "ok");
                Flow::Continue
            }
            Err(Refusal::Error(e)) => {
                metrics::command(name, "error");
                metrics::error_reply(e.code);
                self.send(&Reply::error(id, e.into()));
                Flow::Continue
            }
            Err(Refusal::Backend(e)) => {
                metrics::command(name, "error");
                metrics::error_reply(e.code);
                let error = herald_proto::Error { code: e.code, message: e.message, temporary: e.temporary };
                self.send(&Reply::error(id, error));
                Flow::Continue
            }
            Err(Refusal::Disconnect(d)) => {
                metrics::command(name, "disconnect");
                self.disconnect(d)
            }
        }
    }

    /// Handles a server-side action or timer event.
    pub async fn handle_control(&mut self, node: &Node, ctrl: Control) -> Flow {
        let live = node.live();
        self.control(Ports::new(node, &live), ctrl).await
    }

    async fn control(&mut self, p: Ports<'_>, ctrl: Control) -> Flow {
        if self.state != State::Connected {
            return Flow::Continue;
        }
        if self.link.timers().is_traced() || self.ext.as_ref().is_some_and(|e| e.trace.is_some()) {
            self.follow_trace(&p);
        }
        match ctrl {
            // Boxed: a refresh may await a backend.
            Control::CheckExpiry => Box::pin(self.check_expiry(&p)).await,
            Control::Subscribe(sub) => self.server_subscribe(&p, *sub).await,
            Control::Unsubscribe { channel, code } => {
                self.server_unsubscribe_matching(&p, channel, code).await;
                Flow::Continue
            }
            Control::Refresh { expired, expire_at, info } => self.server_refresh(&p, expired, expire_at, info),
            Control::Insufficient { channel } => self.insufficient(&p, &channel).await,
        }
    }

    /// Cleans up after the connection is gone: subscriptions, presence, leaves, user index.
    /// Lifecycle webhooks see it as closed by the client (3000); transports that know the
    /// reason call [`close_with`](Session::close_with).
    pub async fn close(&mut self, node: &Node) {
        self.close_with(node, DISCONNECT_CONNECTION_CLOSED).await
    }

    /// [`close`](Session::close) with the code and reason the connection ended with, as the
    /// lifecycle webhooks report them.
    pub async fn close_with(&mut self, node: &Node, reason: DisconnectReason) {
        let live = node.live();
        self.clean_up(Ports::new(node, &live), reason).await
    }

    async fn clean_up(&mut self, p: Ports<'_>, reason: DisconnectReason) {
        self.link.timers().set_closed();
        let connected = self.state == State::Connected;
        while let Some(sub) = self.subs.last() {
            let channel = sub.channel.clone();
            self.remove_sub(&p, &channel, true).await;
            if connected {
                self.notify(&p, EventKind::Unsubscribe, Some(&channel), reason.code, reason.reason.clone());
            }
        }
        if connected {
            self.notify(&p, EventKind::Disconnect, None, reason.code, reason.reason);
        }
        if self.state == State::Connected || self.state == State::Unusable {
            p.registry().remove_user(&self.user, &self.link);
            p.engine().release_user(&self.user, &self.client_id()).await;
        }
    }
}
