//! The per-client protocol state machine: connect, then commands, then close.
//!
//! A session takes decoded commands (and [`Control`]s from the server API and timers) one at a
//! time, applies the protocol rules (ordering, limits, permissions, tokens, recovery) and writes
//! replies and pushes to its [`ClientLink`]. It owns no socket and reads time from the node's
//! clock, so it is tested without I/O (see `tests/session.rs`).
//!
//! Where Centrifugo's behaviour is ambiguous or surprising, Herald's choices are listed in
//! `docs/protocol.md` ("Herald choices").

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use herald_auth::{Override, TokenError};
use herald_proto::codes::*;
use herald_proto::envelope;
use herald_proto::{
    ClientInfo, Command, ConnectRequest, ConnectResult, DisconnectReason, ErrorCode, HistoryRequest, HistoryResult,
    Method, PresenceRequest, PresenceResult, PresenceStatsRequest, PresenceStatsResult, Publication, PublishRequest,
    PublishResult, Push, RefreshRequest, RefreshResult, Reply, StreamPosition, SubRefreshRequest, SubRefreshResult,
    Subscribe, SubscribeRequest, SubscribeResult, Unsubscribe, UnsubscribeCode, UnsubscribeRequest, UnsubscribeResult,
};
use rand::Rng;

use crate::broker::HistoryQuery;
use crate::config::{ChannelOptions, RecoveryMode};
use crate::conn::ConnectionInfo;
use crate::hub;
use crate::link::{ClientLink, Control, ServerSubscribe};
use crate::metrics;
use crate::node::Node;
use crate::recovery;

/// Per-subscription flags kept in the session.
mod sub_flags {
    pub(super) const SERVER_SIDE: u8 = 1;
    pub(super) const POSITIONED: u8 = 2;
    pub(super) const RECOVERABLE: u8 = 4;
    pub(super) const PUSH_JOIN_LEAVE: u8 = 8;
    pub(super) const PRESENCE: u8 = 16;
    pub(super) const EMIT_JOIN_LEAVE: u8 = 32;
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

/// Why a command failed: an error reply or a disconnect.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fail {
    Error(ErrorCode),
    Disconnect(DisconnectReason),
}

impl From<ErrorCode> for Fail {
    fn from(e: ErrorCode) -> Self {
        Fail::Error(e)
    }
}

impl From<DisconnectReason> for Fail {
    fn from(d: DisconnectReason) -> Self {
        Fail::Disconnect(d)
    }
}

type CmdResult = Result<(), Fail>;

/// How one subscription is set up (client-side, from a token, or server-side).
#[derive(Debug, Clone, Default)]
struct SubSpec {
    flags: u8,
    chan_info: Bytes,
    data: Bytes,
    expire_at: i64,
    recover: bool,
    offset: u64,
    epoch: String,
    reject_unrecovered: bool,
    mode: RecoveryMode,
}

impl SubSpec {
    /// Flags from namespace options with a token/API override applied.
    fn from_options(o: &ChannelOptions, ov: &Override, server_side: bool) -> SubSpec {
        let pick = |v: Option<bool>, d: bool| v.unwrap_or(d);
        let mut flags = if server_side { SERVER_SIDE } else { 0 };
        if pick(ov.force_positioning, o.force_positioning) {
            flags |= POSITIONED;
        }
        if pick(ov.force_recovery, o.force_recovery) {
            flags |= RECOVERABLE | POSITIONED;
        }
        if pick(ov.presence, o.presence) {
            flags |= PRESENCE;
        }
        if pick(ov.join_leave, o.join_leave) {
            flags |= EMIT_JOIN_LEAVE;
        }
        if pick(ov.force_push_join_leave, o.force_push_join_leave) {
            flags |= PUSH_JOIN_LEAVE;
        }
        SubSpec { flags, mode: o.force_recovery_mode, ..Default::default() }
    }
}

/// The protocol state of one client connection.
pub struct Session {
    link: Arc<dyn ClientLink>,
    state: State,
    conn: ConnectionInfo,
    user: Arc<str>,
    conn_info: Bytes,
    /// Unix seconds when the connection expires (0: never).
    expire_at: i64,
    subs: Vec<Sub>,
}

fn bad_request() -> Fail {
    Fail::Disconnect(DISCONNECT_BAD_REQUEST)
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
            subs: Vec::new(),
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

    /// Encodes and queues one reply; a payload the client's encoding cannot carry closes it.
    fn send(&self, reply: &Reply) {
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

    /// Handles one command from the client.
    pub async fn handle_command(&mut self, node: &Node, cmd: &Command) -> Flow {
        let method = cmd.method();
        let name = method.map(|m| m.name()).unwrap_or("pong");
        if self.state == State::Fresh {
            return match method {
                Some(Method::Connect(req)) if cmd.id > 0 => {
                    // Boxed: the connect state is large and needed once per connection.
                    let r = Box::pin(self.connect(node, cmd.id, req)).await;
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
        let r = match method {
            Method::Connect(_) => Err(bad_request()),
            Method::Subscribe(req) => Box::pin(self.subscribe(node, cmd.id, req)).await,
            Method::Unsubscribe(req) => self.unsubscribe(node, cmd.id, req).await,
            Method::Publish(req) => self.publish(node, cmd.id, req).await,
            Method::Presence(req) => self.presence(node, cmd.id, req).await,
            Method::PresenceStats(req) => self.presence_stats(node, cmd.id, req).await,
            Method::History(req) => self.history(node, cmd.id, req).await,
            Method::Ping(_) => Err(ERROR_NOT_AVAILABLE.into()),
            // No backend is configured for client messages (no proxy yet).
            Method::Send(_) => Err(DISCONNECT_NOT_AVAILABLE.into()),
            Method::Rpc(_) => Err(ERROR_METHOD_NOT_FOUND.into()),
            Method::Refresh(req) => self.refresh(node, cmd.id, req),
            Method::SubRefresh(req) => self.sub_refresh(node, cmd.id, req),
        };
        self.finish(name, cmd.id, r)
    }

    fn finish(&mut self, name: &'static str, id: u32, r: CmdResult) -> Flow {
        match r {
            Ok(()) => {
                metrics::command(name, "ok");
                Flow::Continue
            }
            Err(Fail::Error(e)) => {
                metrics::command(name, "error");
                metrics::error_reply(e.code);
                self.send(&Reply::error(id, e.into()));
                Flow::Continue
            }
            Err(Fail::Disconnect(d)) => {
                metrics::command(name, "disconnect");
                self.disconnect(d)
            }
        }
    }

    async fn connect(&mut self, node: &Node, id: u32, req: &ConnectRequest) -> CmdResult {
        let cfg = &node.cfg.client;
        let now = node.clock.now_secs();
        let mut server_subs: Vec<(String, SubSpec)> = Vec::new();
        let (user, info, expires_at) = if !req.token.is_empty() {
            let claims = match node.tokens.verify_connect(&req.token, now) {
                Ok(c) => c,
                Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
                Err(TokenError::Invalid(e)) => {
                    tracing::debug!(error = %e, "invalid connection token");
                    return Err(DISCONNECT_INVALID_TOKEN.into());
                }
            };
            if claims.user.is_empty() && cfg.disallow_anonymous_connection_tokens {
                return Err(DISCONNECT_PERMISSION_DENIED.into());
            }
            // Token channels: `subs` wins over `channels`. Namespace rules, not permissions, apply.
            let entries: Vec<(String, Override, Bytes, Bytes)> = if !claims.subs.is_empty() {
                claims.subs.iter().map(|(c, o)| (c.clone(), o.override_, o.info.clone(), o.data.clone())).collect()
            } else {
                claims.channels.iter().map(|c| (c.clone(), Override::default(), Bytes::new(), Bytes::new())).collect()
            };
            for (channel, ov, info, data) in entries {
                let resolved = node.channels.resolve(&channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
                let mut spec = SubSpec::from_options(resolved.options(), &ov, true);
                spec.chan_info = info;
                spec.data = data;
                server_subs.push((channel, spec));
            }
            let expires_at = claims.connection_expires_at();
            (claims.user, claims.info, expires_at)
        } else if cfg.allow_anonymous_connect_without_token {
            (String::new(), Bytes::new(), None)
        } else {
            return Err(DISCONNECT_BAD_REQUEST.into());
        };
        let personal = &cfg.subscribe_to_user_personal_channel;
        if personal.enabled && !user.is_empty() {
            let channel = node.channels.personal_channel(&personal.personal_channel_namespace, &user);
            let ns = node.channels.namespace(&personal.personal_channel_namespace).ok_or(ERROR_UNKNOWN_CHANNEL)?;
            if !server_subs.iter().any(|(c, _)| *c == channel) {
                server_subs.push((channel, SubSpec::from_options(&ns.options, &Override::default(), true)));
            }
        }
        // Channels the client asks for in `subs` become server-side subscriptions when it may
        // subscribe to them without a token (the unidirectional use case).
        for channel in req.subs.keys() {
            if server_subs.iter().any(|(c, _)| c == channel) {
                continue;
            }
            let Some(resolved) = node.channels.resolve(channel) else { return Err(DISCONNECT_BAD_REQUEST.into()) };
            let o = resolved.options();
            let allowed = !node.channels.is_private(channel)
                && node.channels.valid_name(channel, &resolved)
                && match node.channels.user_limited(channel, o, &user) {
                    Some(listed) => listed && !user.is_empty(),
                    None => o.allow_subscribe_for_client && (!user.is_empty() || o.allow_subscribe_for_anonymous),
                };
            if allowed {
                let spec = SubSpec::from_options(o, &Override::default(), true);
                server_subs.push((channel.clone(), spec));
            }
        }
        if server_subs.len() > cfg.channel_limit {
            return Err(DISCONNECT_CHANNEL_LIMIT.into());
        }
        let expires_at = expires_at.map(|t| t.min(now + MAX_EXPIRY_SECS));
        if let Some(t) = expires_at
            && t < now
        {
            return Err(ERROR_EXPIRED.into());
        }
        if node.hub.add_user(&user, &self.link, cfg.user_connection_limit).is_err() {
            return Err(DISCONNECT_CONNECTION_LIMIT.into());
        }
        self.user = Arc::from(user);
        self.conn_info = info;
        self.expire_at = expires_at.unwrap_or(0);

        let mut results = BTreeMap::new();
        for (channel, mut spec) in server_subs {
            if let Some(r) = req.subs.get(&channel) {
                spec.recover = r.recover;
                spec.offset = r.offset;
                spec.epoch = r.epoch.clone();
            }
            match self.prepare_subscription(node, &channel, spec).await {
                Ok(result) => {
                    results.insert(channel, result);
                }
                Err(fail) => {
                    self.drop_all(node).await;
                    node.hub.remove_user(&self.user, &self.link);
                    return Err(fail);
                }
            }
        }
        let ping = cfg.ping_interval.as_secs() as u32;
        let mut result = ConnectResult {
            client: self.client_id(),
            version: node.identity().version.clone(),
            ping,
            pong: ping > 0,
            subs: results,
            ..Default::default()
        };
        if self.expire_at > 0 {
            result.expires = true;
            result.ttl = ttl(self.expire_at, now);
        }
        if cfg.connect_include_server_time {
            result.time = node.clock.now_ms();
        }
        let after: Vec<(String, u64)> = result.subs.iter().map(|(c, r)| (c.clone(), activation_offset(r))).collect();
        self.send(&Reply { id, connect: Some(result), ..Default::default() });
        self.state = State::Connected;
        for (channel, offset) in after {
            self.activate(node, &channel, offset).await;
        }
        // Timers: first ping at a random point in [interval/2, interval] to spread load.
        let tick = node.tick();
        let first_ping = if ping > 0 { tick + rand::rng().random_range(ping / 2..=ping).max(1) } else { 0 };
        self.link.timers().set_connected(first_ping);
        if first_ping > 0 {
            node.timers.schedule(&self.link, first_ping);
        }
        self.reschedule(node);
        Ok(())
    }

    /// Sets up one subscription up to (not including) its reply: registers the subscriber as
    /// pending in the hub, reads the stream position or recovers, and records presence. The
    /// caller sends the reply and then calls [`Session::activate`].
    async fn prepare_subscription(
        &mut self,
        node: &Node,
        channel: &str,
        spec: SubSpec,
    ) -> Result<SubscribeResult, Fail> {
        let hub_flags = if spec.flags & PUSH_JOIN_LEAVE != 0 { hub::flags::PUSH_JOIN_LEAVE } else { 0 };
        let channel: Arc<str> = Arc::from(channel);
        let first = node.hub.add_pending(&channel, &self.link, hub_flags);
        // Exact growth: most sessions hold one or two subscriptions for hours, and the default
        // growth reserved four (256 bytes) per idle connection.
        self.subs.reserve_exact(1);
        self.subs.push(Sub {
            channel: channel.clone(),
            flags: spec.flags,
            expire_at: spec.expire_at,
            chan_info: spec.chan_info.clone(),
        });
        let result = self.position_and_recover(node, &channel, &spec, first).await;
        let result = match result {
            Ok(r) => r,
            Err(fail) => {
                self.remove_sub(node, &channel, false).await;
                return Err(fail);
            }
        };
        if spec.flags & PRESENCE != 0 {
            let info = self.client_info(spec.chan_info.clone());
            if node.presence.add_presence(&channel, info).await.is_err() {
                self.remove_sub(node, &channel, false).await;
                return Err(DISCONNECT_SERVER_ERROR.into());
            }
        }
        Ok(result)
    }

    async fn position_and_recover(
        &self,
        node: &Node,
        channel: &str,
        spec: &SubSpec,
        first: bool,
    ) -> Result<SubscribeResult, Fail> {
        if first && node.broker.subscribe(channel).await.is_err() {
            return Err(ERROR_INTERNAL.into());
        }
        let now = node.clock.now_secs();
        let mut result =
            SubscribeResult { data: spec.data.clone(), was_recovering: spec.recover, ..Default::default() };
        if spec.expire_at > 0 {
            result.expires = true;
            result.ttl = ttl(spec.expire_at, now);
        }
        if spec.flags & (POSITIONED | RECOVERABLE) == 0 {
            return Ok(result);
        }
        let resolved = node.channels.resolve(channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
        let meta_ttl = node.meta_ttl(resolved.options());
        result.positioned = true;
        result.recoverable = spec.flags & RECOVERABLE != 0;
        let recovering = spec.recover && result.recoverable;
        let max = node.cfg.client.recovery_max_publication_limit;
        let query = match (recovering, spec.mode) {
            (true, RecoveryMode::Stream) => HistoryQuery {
                since: Some(StreamPosition { offset: spec.offset, epoch: spec.epoch.clone() }),
                limit: (max as i64).saturating_add(1),
                reverse: false,
                meta_ttl,
            },
            (true, RecoveryMode::Cache) => HistoryQuery { since: None, limit: 1, reverse: true, meta_ttl },
            (false, _) => HistoryQuery { since: None, limit: 0, reverse: false, meta_ttl },
        };
        let slice = node.broker.history(channel, query).await.map_err(|_| Fail::Disconnect(DISCONNECT_SERVER_ERROR))?;
        result.epoch = slice.top.epoch.clone();
        result.offset = slice.top.offset;
        if recovering {
            let r = match spec.mode {
                RecoveryMode::Stream => recovery::stream(spec.offset, &spec.epoch, slice.publications, &slice.top, max),
                RecoveryMode::Cache => {
                    recovery::cache(spec.offset, &spec.epoch, slice.publications.into_iter().next(), &slice.top)
                }
            };
            if !r.recovered && spec.reject_unrecovered {
                return Err(ERROR_UNRECOVERABLE_POSITION.into());
            }
            result.recovered = r.recovered;
            if r.recovered && spec.mode == RecoveryMode::Stream {
                result.offset = spec.offset;
            }
            result.publications = r.publications;
        }
        Ok(result)
    }

    /// Makes a prepared subscription live (after its reply was queued) and emits the join.
    async fn activate(&self, node: &Node, channel: &str, after: u64) {
        node.hub.activate(channel, &self.link, after);
        if let Some(sub) = self.find(channel).map(|i| &self.subs[i])
            && sub.flags & EMIT_JOIN_LEAVE != 0
        {
            let info = self.client_info(sub.chan_info.clone());
            if let Err(e) = node.broker.publish_join(channel, info).await {
                tracing::warn!(channel, error = %e, "join publish failed");
            }
        }
    }

    /// Removes a subscription everywhere (hub, presence, broker interest), emitting the leave.
    async fn remove_sub(&mut self, node: &Node, channel: &str, emit_leave: bool) {
        let Some(i) = self.find(channel) else { return };
        let sub = self.subs.swap_remove(i);
        if node.hub.remove(channel, &self.link) {
            let _ = node.broker.unsubscribe(channel).await;
        }
        if sub.flags & PRESENCE != 0 {
            let client = self.client_id();
            let _ = node.presence.remove_presence(channel, &client).await;
        }
        if emit_leave && sub.flags & EMIT_JOIN_LEAVE != 0 {
            let info = self.client_info(sub.chan_info);
            if let Err(e) = node.broker.publish_leave(channel, info).await {
                tracing::warn!(channel, error = %e, "leave publish failed");
            }
        }
    }

    async fn drop_all(&mut self, node: &Node) {
        while let Some(sub) = self.subs.last() {
            let channel = sub.channel.clone();
            self.remove_sub(node, &channel, false).await;
        }
    }

    /// Cleans up after the connection is gone: subscriptions, presence, leaves, user index.
    pub async fn close(&mut self, node: &Node) {
        self.link.timers().set_closed();
        while let Some(sub) = self.subs.last() {
            let channel = sub.channel.clone();
            self.remove_sub(node, &channel, true).await;
        }
        if self.state == State::Connected || self.state == State::Unusable {
            node.hub.remove_user(&self.user, &self.link);
        }
    }

    async fn subscribe(&mut self, node: &Node, id: u32, req: &SubscribeRequest) -> CmdResult {
        let channel = req.channel.as_str();
        if channel.is_empty() {
            return Err(bad_request());
        }
        if !req.delta.is_empty() && req.delta != "fossil" {
            return Err(bad_request());
        }
        if req.sub_type != 0 {
            return Err(ERROR_NOT_AVAILABLE.into());
        }
        let cfg = &node.cfg.client;
        if node.channels.too_long(channel) || req.tf.is_some() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        if self.find(channel).is_some() {
            return Err(ERROR_ALREADY_SUBSCRIBED.into());
        }
        if self.subs.len() >= cfg.channel_limit {
            return Err(ERROR_LIMIT_EXCEEDED.into());
        }
        let resolved = node.channels.resolve(channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
        if !node.channels.valid_name(channel, &resolved) {
            return Err(ERROR_BAD_REQUEST.into());
        }
        if node.channels.is_private(channel) && req.token.is_empty() {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        let o = resolved.options();
        let now = node.clock.now_secs();
        let mut spec;
        if !req.token.is_empty() {
            let claims = match node.sub_token_verifier().verify_subscribe(&req.token, now) {
                Ok(c) => c,
                Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
                Err(TokenError::Invalid(e)) => {
                    tracing::debug!(error = %e, "invalid subscription token");
                    return Err(ERROR_PERMISSION_DENIED.into());
                }
            };
            if claims.channel != channel || claims.user != *self.user {
                return Err(DISCONNECT_INVALID_TOKEN.into());
            }
            if !claims.client.is_empty() && claims.client != self.client_id() {
                return Err(DISCONNECT_INVALID_TOKEN.into());
            }
            spec = SubSpec::from_options(o, &claims.override_, false);
            spec.chan_info = claims.info.clone();
            spec.data = claims.data.clone();
            if let Some(t) = claims.subscription_expires_at() {
                spec.expire_at = t.min(now + MAX_EXPIRY_SECS);
            }
        } else {
            let allowed = match node.channels.user_limited(channel, o, &self.user) {
                Some(listed) => listed,
                None => o.allow_subscribe_for_client && (!self.user.is_empty() || o.allow_subscribe_for_anonymous),
            };
            if !allowed {
                return Err(ERROR_PERMISSION_DENIED.into());
            }
            spec = SubSpec::from_options(o, &Override::default(), false);
        }
        // What the client may ask for on top of the namespace's forced options.
        let anonymous_ok = |anon: bool| !self.user.is_empty() || anon;
        let history_access = (o.allow_history_for_client || o.allow_history_for_subscriber)
            && anonymous_ok(o.allow_history_for_anonymous);
        let presence_access = (o.allow_presence_for_client || o.allow_presence_for_subscriber)
            && anonymous_ok(o.allow_presence_for_anonymous);
        if req.positioned && (o.allow_positioning || history_access) {
            spec.flags |= POSITIONED;
        }
        if req.recoverable && (o.allow_recovery || history_access) {
            spec.flags |= RECOVERABLE | POSITIONED;
        }
        if spec.flags & RECOVERABLE != 0 && !o.history_enabled() {
            // Recovery without history cannot work; keep positioning only.
            spec.flags &= !RECOVERABLE;
        }
        if req.join_leave && o.join_leave && presence_access {
            spec.flags |= PUSH_JOIN_LEAVE;
        }
        if spec.expire_at > 0 && spec.expire_at <= now {
            return Err(ERROR_EXPIRED.into());
        }
        spec.recover = req.recover;
        spec.offset = req.offset;
        spec.epoch = req.epoch.clone();
        spec.reject_unrecovered = req.flag & 2 != 0;
        let result = self.prepare_subscription(node, channel, spec).await?;
        let after = activation_offset(&result);
        self.send(&Reply { id, subscribe: Some(result), ..Default::default() });
        self.activate(node, channel, after).await;
        self.reschedule(node);
        Ok(())
    }

    async fn unsubscribe(&mut self, node: &Node, id: u32, req: &UnsubscribeRequest) -> CmdResult {
        if req.channel.is_empty() {
            return Err(bad_request());
        }
        self.remove_sub(node, &req.channel, true).await;
        self.send(&Reply { id, unsubscribe: Some(UnsubscribeResult {}), ..Default::default() });
        Ok(())
    }

    /// Namespace checks shared by publish, presence and history: 3501, 102, 107.
    fn resolve_for_command<'n>(&self, node: &'n Node, channel: &'n str) -> Result<&'n ChannelOptions, Fail> {
        if channel.is_empty() {
            return Err(bad_request());
        }
        let resolved = node.channels.resolve(channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
        if !node.channels.valid_name(channel, &resolved) {
            return Err(ERROR_BAD_REQUEST.into());
        }
        Ok(&resolved.ns.options)
    }

    /// The for_client / for_subscriber / for_anonymous permission pattern.
    fn permitted(&self, channel: &str, for_client: bool, for_subscriber: bool, anonymous: bool) -> bool {
        let who_ok = !self.user.is_empty() || anonymous;
        (for_client && who_ok) || (for_subscriber && who_ok && self.find(channel).is_some())
    }

    async fn publish(&mut self, node: &Node, id: u32, req: &PublishRequest) -> CmdResult {
        let o = self.resolve_for_command(node, &req.channel)?;
        if !self.permitted(
            &req.channel,
            o.allow_publish_for_client,
            o.allow_publish_for_subscriber,
            o.allow_publish_for_anonymous,
        ) {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        if req.data.is_empty() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        let chan_info = self.find(&req.channel).map(|i| self.subs[i].chan_info.clone()).unwrap_or_default();
        let publication =
            Publication { data: req.data.clone(), info: Some(self.client_info(chan_info)), ..Default::default() };
        let opts = node.publish_options(o);
        node.publish_with(&req.channel, publication, &opts).await?;
        self.send(&Reply { id, publish: Some(PublishResult {}), ..Default::default() });
        Ok(())
    }

    fn presence_checks(&self, node: &Node, channel: &str) -> CmdResult {
        let o = self.resolve_for_command(node, channel)?;
        if !o.presence {
            return Err(ERROR_NOT_AVAILABLE.into());
        }
        if !self.permitted(
            channel,
            o.allow_presence_for_client,
            o.allow_presence_for_subscriber,
            o.allow_presence_for_anonymous,
        ) {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        Ok(())
    }

    async fn presence(&mut self, node: &Node, id: u32, req: &PresenceRequest) -> CmdResult {
        self.presence_checks(node, &req.channel)?;
        let map = node.presence.presence(&req.channel).await.map_err(|_| ERROR_INTERNAL)?;
        let result = PresenceResult { presence: map.into_iter().collect() };
        self.send(&Reply { id, presence: Some(result), ..Default::default() });
        Ok(())
    }

    async fn presence_stats(&mut self, node: &Node, id: u32, req: &PresenceStatsRequest) -> CmdResult {
        self.presence_checks(node, &req.channel)?;
        let (num_clients, num_users) = node.presence.presence_stats(&req.channel).await.map_err(|_| ERROR_INTERNAL)?;
        let result = PresenceStatsResult { num_clients, num_users };
        self.send(&Reply { id, presence_stats: Some(result), ..Default::default() });
        Ok(())
    }

    async fn history(&mut self, node: &Node, id: u32, req: &HistoryRequest) -> CmdResult {
        let o = self.resolve_for_command(node, &req.channel)?;
        if !o.history_enabled() {
            return Err(ERROR_NOT_AVAILABLE.into());
        }
        if !self.permitted(
            &req.channel,
            o.allow_history_for_client,
            o.allow_history_for_subscriber,
            o.allow_history_for_anonymous,
        ) {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        let max = node.cfg.client.history_max_publication_limit as i64;
        let mut limit = req.limit as i64;
        if max > 0 && (limit < 0 || limit > max) {
            limit = max;
        }
        let slice = node.read_history(&req.channel, o, limit, req.since.clone(), req.reverse).await?;
        let result =
            HistoryResult { publications: slice.publications, epoch: slice.top.epoch, offset: slice.top.offset };
        self.send(&Reply { id, history: Some(result), ..Default::default() });
        Ok(())
    }

    fn refresh(&mut self, node: &Node, id: u32, req: &RefreshRequest) -> CmdResult {
        if req.token.is_empty() {
            return Err(bad_request());
        }
        let now = node.clock.now_secs();
        let claims = match node.tokens.verify_connect(&req.token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(DISCONNECT_EXPIRED.into()),
            Err(TokenError::Invalid(_)) => return Err(DISCONNECT_INVALID_TOKEN.into()),
        };
        if claims.user != *self.user {
            return Err(DISCONNECT_INVALID_TOKEN.into());
        }
        let mut result = RefreshResult::default();
        match claims.connection_expires_at() {
            Some(t) if t <= now => return Err(ERROR_EXPIRED.into()),
            Some(t) => {
                self.expire_at = t.min(now + MAX_EXPIRY_SECS);
                result.expires = true;
                result.ttl = ttl(self.expire_at, now);
            }
            None => self.expire_at = 0,
        }
        if !claims.info.is_empty() {
            self.conn_info = claims.info;
        }
        self.send(&Reply { id, refresh: Some(result), ..Default::default() });
        self.reschedule(node);
        Ok(())
    }

    fn sub_refresh(&mut self, node: &Node, id: u32, req: &SubRefreshRequest) -> CmdResult {
        if req.channel.is_empty() {
            return Err(bad_request());
        }
        let Some(i) = self.find(&req.channel) else { return Err(ERROR_PERMISSION_DENIED.into()) };
        if req.token.is_empty() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        let now = node.clock.now_secs();
        let claims = match node.sub_token_verifier().verify_subscribe(&req.token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
            Err(TokenError::Invalid(_)) => return Err(DISCONNECT_INVALID_TOKEN.into()),
        };
        if claims.channel != req.channel
            || claims.user != *self.user
            || (!claims.client.is_empty() && claims.client != self.client_id())
        {
            return Err(DISCONNECT_INVALID_TOKEN.into());
        }
        let mut result = SubRefreshResult::default();
        let sub = &mut self.subs[i];
        match claims.subscription_expires_at() {
            Some(t) if t <= now => return Err(ERROR_EXPIRED.into()),
            Some(t) => {
                sub.expire_at = t.min(now + MAX_EXPIRY_SECS);
                result.expires = true;
                result.ttl = ttl(sub.expire_at, now);
            }
            None => sub.expire_at = 0,
        }
        if !claims.info.is_empty() {
            sub.chan_info = claims.info;
        }
        self.send(&Reply { id, sub_refresh: Some(result), ..Default::default() });
        self.reschedule(node);
        Ok(())
    }

    /// Arms the session deadline on the link: the earliest connection or subscription expiry
    /// plus its grace period.
    fn reschedule(&self, node: &Node) {
        let cfg = &node.cfg.client;
        let conn = (self.expire_at > 0).then(|| self.expire_at + cfg.expired_close_delay.as_secs() as i64);
        let subs = self
            .subs
            .iter()
            .filter(|s| s.expire_at > 0)
            .map(|s| s.expire_at + cfg.expired_sub_close_delay.as_secs() as i64);
        let next = conn.into_iter().chain(subs).min();
        let timers = self.link.timers();
        match next {
            Some(at) => {
                let tick = node.tick_at(at);
                timers.set_session_deadline(tick);
                node.timers.schedule(&self.link, tick);
            }
            None => timers.set_session_deadline(0),
        }
    }

    /// Handles a server-side action or timer event.
    pub async fn handle_control(&mut self, node: &Node, ctrl: Control) -> Flow {
        if self.state != State::Connected {
            return Flow::Continue;
        }
        match ctrl {
            Control::CheckExpiry => self.check_expiry(node).await,
            Control::Subscribe(sub) => self.server_subscribe(node, *sub).await,
            Control::Unsubscribe { channel, code } => {
                let channels: Vec<String> = if channel.is_empty() {
                    self.subs.iter().map(|s| s.channel.to_string()).collect()
                } else if self.find(&channel).is_some() {
                    vec![channel]
                } else {
                    Vec::new()
                };
                for channel in channels {
                    self.server_unsubscribe(node, &channel, code).await;
                }
                Flow::Continue
            }
            Control::Refresh { expired, expire_at, info } => {
                let now = node.clock.now_secs();
                if let Some(info) = info {
                    self.conn_info = info;
                }
                if expired {
                    return self.disconnect(DISCONNECT_EXPIRED);
                }
                match expire_at {
                    Some(t) if t > 0 && t <= now => return self.disconnect(DISCONNECT_EXPIRED),
                    Some(t) if t > 0 => self.expire_at = t.min(now + MAX_EXPIRY_SECS),
                    Some(_) => self.expire_at = 0,
                    None => {}
                }
                self.reschedule(node);
                Flow::Continue
            }
            Control::Insufficient { channel } => match self.find(&channel) {
                Some(i) if self.subs[i].flags & SERVER_SIDE != 0 => self.disconnect(DISCONNECT_INSUFFICIENT_STATE),
                Some(_) => {
                    self.server_unsubscribe(node, &channel, UNSUBSCRIBE_INSUFFICIENT).await;
                    Flow::Continue
                }
                None => Flow::Continue,
            },
        }
    }

    /// Removes a subscription first, then tells the client (so an immediate resubscribe after a
    /// ≥ 2500 code does not get 105).
    async fn server_unsubscribe(&mut self, node: &Node, channel: &str, code: UnsubscribeCode) {
        self.remove_sub(node, channel, true).await;
        self.push(Push {
            channel: channel.to_owned(),
            unsubscribe: Some(Unsubscribe { code: code.code, reason: code.reason.to_owned() }),
            ..Default::default()
        });
    }

    async fn server_subscribe(&mut self, node: &Node, sub: ServerSubscribe) -> Flow {
        if self.find(&sub.channel).is_some() {
            return Flow::Continue;
        }
        if self.subs.len() >= node.cfg.client.channel_limit {
            return self.disconnect(DISCONNECT_CHANNEL_LIMIT);
        }
        let Some(resolved) = node.channels.resolve(&sub.channel) else { return Flow::Continue };
        let mut spec = SubSpec::from_options(resolved.options(), &sub.override_, true);
        spec.chan_info = sub.info;
        spec.data = sub.data;
        if let Some(t) = sub.expire_at.filter(|t| *t > 0) {
            if t <= node.clock.now_secs() {
                return Flow::Continue;
            }
            spec.expire_at = t;
        }
        if let Some(since) = sub.recover_since {
            spec.recover = true;
            spec.offset = since.offset;
            spec.epoch = since.epoch;
        }
        let result = match self.prepare_subscription(node, &sub.channel, spec).await {
            Ok(r) => r,
            Err(Fail::Disconnect(d)) => return self.disconnect(d),
            Err(Fail::Error(e)) => {
                tracing::warn!(channel = %sub.channel, code = e.code, "server-side subscribe failed");
                return Flow::Continue;
            }
        };
        let after = activation_offset(&result);
        self.push(Push {
            channel: sub.channel.clone(),
            subscribe: Some(Subscribe {
                recoverable: result.recoverable,
                epoch: result.epoch.clone(),
                offset: result.offset,
                positioned: result.positioned,
                data: result.data.clone(),
            }),
            ..Default::default()
        });
        for publication in result.publications {
            self.push(Push { channel: sub.channel.clone(), publication: Some(publication), ..Default::default() });
        }
        self.activate(node, &sub.channel, after).await;
        self.reschedule(node);
        Flow::Continue
    }

    async fn check_expiry(&mut self, node: &Node) -> Flow {
        let cfg = &node.cfg.client;
        let now = node.clock.now_secs();
        if self.expire_at > 0 && now >= self.expire_at + cfg.expired_close_delay.as_secs() as i64 {
            return self.disconnect(DISCONNECT_EXPIRED);
        }
        let grace = cfg.expired_sub_close_delay.as_secs() as i64;
        let expired: Vec<(Arc<str>, bool)> = self
            .subs
            .iter()
            .filter(|s| s.expire_at > 0 && now >= s.expire_at + grace)
            .map(|s| (s.channel.clone(), s.flags & SERVER_SIDE != 0))
            .collect();
        for (channel, server_side) in expired {
            if server_side {
                return self.disconnect(DISCONNECT_SUB_EXPIRED);
            }
            self.server_unsubscribe(node, &channel, UNSUBSCRIBE_EXPIRED).await;
        }
        self.reschedule(node);
        Flow::Continue
    }
}

/// Pushes with an offset up to this were covered by the reply (recovered or positioned).
fn activation_offset(result: &SubscribeResult) -> u64 {
    if !result.positioned {
        return 0;
    }
    result.publications.last().map(|p| p.offset).unwrap_or(0).max(result.offset)
}
