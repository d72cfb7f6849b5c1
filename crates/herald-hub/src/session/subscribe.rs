//! Subscriptions: subscribe and unsubscribe commands, sub_refresh, server-side subscriptions
//! (from connect and the server API), positioning and recovery, and the shared machinery that
//! sets a subscription up (pending → reply → live) and tears it down.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use herald_auth::{Override, TokenError};
use herald_proto::codes::*;
use herald_proto::{
    ErrorCode, Push, Reply, StreamPosition, SubRefreshRequest, SubRefreshResult, Subscribe, SubscribeRequest,
    SubscribeResult, Unsubscribe, UnsubscribeCode, UnsubscribeRequest, UnsubscribeResult,
};

use super::sub_flags::*;
use super::{CmdResult, Flow, MAX_EXPIRY_SECS, Session, Sub, bad_request, check_channel, ttl};
use crate::auth::ERROR_TOKEN_NOT_YET_VALID;
use crate::broker::HistoryQuery;
use crate::channel::ChannelError;
use crate::config::{ChannelOptions, RecoveryMode};
use crate::hub;
use crate::link::ServerSubscribe;
use crate::ports::{BackendError, Ports, Refusal};
use crate::proxy::{Decision, ProxyKind, ProxySpec, wire};
use crate::recovery;
use crate::webhook::EventKind;

/// How one subscription is set up (client-side, from a token, or server-side).
#[derive(Debug, Clone, Default)]
pub(super) struct SubSpec {
    flags: u8,
    pub(super) chan_info: Bytes,
    pub(super) data: Bytes,
    expire_at: i64,
    pub(super) recover: bool,
    pub(super) offset: u64,
    pub(super) epoch: String,
    reject_unrecovered: bool,
    mode: RecoveryMode,
}

impl SubSpec {
    /// Flags from namespace options with a token/API override applied.
    pub(super) fn from_options(o: &ChannelOptions, ov: &Override, server_side: bool) -> SubSpec {
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

/// Pushes with an offset up to this were covered by the reply (recovered or positioned).
pub(super) fn activation_offset(result: &SubscribeResult) -> u64 {
    if !result.positioned {
        return 0;
    }
    result.publications.last().map(|p| p.offset).unwrap_or(0).max(result.offset)
}

impl Session {
    pub(super) async fn subscribe(&mut self, p: &Ports<'_>, id: u32, req: &SubscribeRequest) -> CmdResult {
        let channel = req.channel.as_str();
        // Centrifugo's order of checks; the two channel rules decided before the namespace
        // lookup are counted like the rest (`check_channel`).
        if channel.is_empty() {
            crate::metrics::channel_refused("client", ChannelError::Empty.label());
            return Err(bad_request());
        }
        if !req.delta.is_empty() && req.delta != "fossil" {
            return Err(bad_request());
        }
        if req.sub_type != 0 {
            return Err(ERROR_NOT_AVAILABLE.into());
        }
        if p.channels().too_long(channel) {
            crate::metrics::channel_refused("client", ChannelError::TooLong.label());
            return Err(ERROR_BAD_REQUEST.into());
        }
        if req.tf.is_some() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        if self.find(channel).is_some() {
            return Err(ERROR_ALREADY_SUBSCRIBED.into());
        }
        if self.subs.len() >= p.rules().channel_limit {
            return Err(ERROR_LIMIT_EXCEEDED.into());
        }
        let resolved = check_channel(p, channel)?;
        if p.channels().is_private(channel) && req.token.is_empty() {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        let o = resolved.options();
        let now = p.time().now_secs();
        let mut spec;
        if !req.token.is_empty() {
            let claims = match p.auth.subscription_token(&req.token, now) {
                Ok(c) => c,
                Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
                Err(TokenError::NotYetValid) => return Err(ERROR_TOKEN_NOT_YET_VALID.into()),
                Err(TokenError::Invalid(e)) => {
                    tracing::debug!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), error = %e, "invalid subscription token");
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
            let limited = p.channels().user_limited(channel, o, &self.user);
            let proxy =
                if limited.is_none() { p.backend().table().channel_route(o, ProxyKind::Subscribe) } else { None };
            if let Some(proxy) = proxy {
                spec = self.proxy_subscribe(p, proxy, req, o, now).await?;
            } else {
                let allowed = match limited {
                    Some(listed) => listed,
                    None => o.allow_subscribe_for_client && (!self.user.is_empty() || o.allow_subscribe_for_anonymous),
                };
                if !allowed {
                    return Err(ERROR_PERMISSION_DENIED.into());
                }
                spec = SubSpec::from_options(o, &Override::default(), false);
            }
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
        let result = self.prepare_subscription(p, channel, spec).await?;
        let after = activation_offset(&result);
        self.send(&Reply { id, subscribe: Some(result), ..Default::default() });
        self.activate(p, channel, after).await;
        self.notify(p, EventKind::Subscribe, Some(channel), 0, Cow::Borrowed(""));
        self.reschedule(p);
        Ok(())
    }

    pub(super) async fn unsubscribe(&mut self, p: &Ports<'_>, id: u32, req: &UnsubscribeRequest) -> CmdResult {
        if req.channel.is_empty() {
            return Err(bad_request());
        }
        if self.find(&req.channel).is_some() {
            self.remove_sub(p, &req.channel, true).await;
            self.notify(p, EventKind::Unsubscribe, Some(&req.channel), 0, Cow::Borrowed("client unsubscribe"));
        }
        self.send(&Reply { id, unsubscribe: Some(UnsubscribeResult {}), ..Default::default() });
        Ok(())
    }

    pub(super) fn sub_refresh(&mut self, p: &Ports<'_>, id: u32, req: &SubRefreshRequest) -> CmdResult {
        if req.channel.is_empty() {
            return Err(bad_request());
        }
        let Some(i) = self.find(&req.channel) else { return Err(ERROR_PERMISSION_DENIED.into()) };
        if req.token.is_empty() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        let now = p.time().now_secs();
        let claims = match p.auth.subscription_token(&req.token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
            Err(TokenError::NotYetValid) => return Err(ERROR_TOKEN_NOT_YET_VALID.into()),
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
        self.reschedule(p);
        Ok(())
    }

    /// Sets up one subscription up to (not including) its reply: registers the subscriber as
    /// pending in the hub, reads the stream position or recovers, and records presence. The
    /// caller sends the reply and then calls [`Session::activate`].
    pub(super) async fn prepare_subscription(
        &mut self,
        p: &Ports<'_>,
        channel: &str,
        spec: SubSpec,
    ) -> Result<SubscribeResult, Refusal> {
        let hub_flags = if spec.flags & PUSH_JOIN_LEAVE != 0 { hub::flags::PUSH_JOIN_LEAVE } else { 0 };
        let channel: Arc<str> = Arc::from(channel);
        let first = p.registry().add_pending(&channel, &self.link, hub_flags);
        // Exact growth: most sessions hold one or two subscriptions for hours, and the default
        // growth reserved four (256 bytes) per idle connection.
        self.subs.reserve_exact(1);
        self.subs.push(Sub {
            channel: channel.clone(),
            flags: spec.flags,
            expire_at: spec.expire_at,
            chan_info: spec.chan_info.clone(),
        });
        let result = self.position_and_recover(p, &channel, &spec, first).await;
        let result = match result {
            Ok(r) => r,
            Err(refusal) => {
                self.remove_sub(p, &channel, false).await;
                return Err(refusal);
            }
        };
        if spec.flags & PRESENCE != 0 {
            let info = self.client_info(spec.chan_info.clone());
            if p.engine().presence().add_presence(&channel, info).await.is_err() {
                self.remove_sub(p, &channel, false).await;
                return Err(DISCONNECT_SERVER_ERROR.into());
            }
        }
        Ok(result)
    }

    async fn position_and_recover(
        &self,
        p: &Ports<'_>,
        channel: &str,
        spec: &SubSpec,
        first: bool,
    ) -> Result<SubscribeResult, Refusal> {
        let broker = p.engine().broker();
        if first && broker.subscribe(channel).await.is_err() {
            return Err(ERROR_INTERNAL.into());
        }
        let now = p.time().now_secs();
        let mut result =
            SubscribeResult { data: spec.data.clone(), was_recovering: spec.recover, ..Default::default() };
        if spec.expire_at > 0 && spec.flags & PROXY_REFRESH == 0 {
            result.expires = true;
            result.ttl = ttl(spec.expire_at, now);
        }
        if spec.flags & (POSITIONED | RECOVERABLE) == 0 {
            return Ok(result);
        }
        let resolved = p.channels().resolve(channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
        let meta_ttl = p.engine().meta_ttl(resolved.options());
        result.positioned = true;
        result.recoverable = spec.flags & RECOVERABLE != 0;
        let recovering = spec.recover && result.recoverable;
        let max = p.rules().recovery_max_publication_limit;
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
        let slice = broker.history(channel, query).await.map_err(|_| Refusal::Disconnect(DISCONNECT_SERVER_ERROR))?;
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
    pub(super) async fn activate(&self, p: &Ports<'_>, channel: &str, after: u64) {
        p.registry().activate(channel, &self.link, after);
        if let Some(sub) = self.find(channel).map(|i| &self.subs[i])
            && sub.flags & EMIT_JOIN_LEAVE != 0
        {
            let info = self.client_info(sub.chan_info.clone());
            if let Err(e) = p.engine().broker().publish_join(channel, info).await {
                tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), channel, error = %e, "join publish failed");
            }
        }
    }

    /// Removes a subscription everywhere (hub, presence, broker interest), emitting the leave.
    pub(super) async fn remove_sub(&mut self, p: &Ports<'_>, channel: &str, emit_leave: bool) {
        let Some(i) = self.find(channel) else { return };
        let sub = self.subs.swap_remove(i);
        if p.registry().remove(channel, &self.link) {
            let _ = p.engine().broker().unsubscribe(channel).await;
        }
        if sub.flags & PRESENCE != 0 {
            let client = self.client_id();
            let _ = p.engine().presence().remove_presence(channel, &client).await;
        }
        if emit_leave && sub.flags & EMIT_JOIN_LEAVE != 0 {
            let info = self.client_info(sub.chan_info);
            if let Err(e) = p.engine().broker().publish_leave(channel, info).await {
                tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), channel, error = %e, "leave publish failed");
            }
        }
    }

    pub(super) async fn drop_all(&mut self, p: &Ports<'_>) {
        while let Some(sub) = self.subs.last() {
            let channel = sub.channel.clone();
            self.remove_sub(p, &channel, false).await;
        }
    }

    /// Removes a subscription first, then tells the client (so an immediate resubscribe after a
    /// ≥ 2500 code does not get 105).
    pub(super) async fn server_unsubscribe(&mut self, p: &Ports<'_>, channel: &str, code: UnsubscribeCode) {
        if self.find(channel).is_some() {
            self.remove_sub(p, channel, true).await;
            self.notify(p, EventKind::Unsubscribe, Some(channel), code.code, Cow::Borrowed(code.reason));
        }
        self.push(Push {
            channel: channel.to_owned(),
            unsubscribe: Some(Unsubscribe { code: code.code, reason: code.reason.to_owned() }),
            ..Default::default()
        });
    }

    /// Server API `unsubscribe` of one channel, or of every channel when `channel` is empty.
    pub(super) async fn server_unsubscribe_matching(&mut self, p: &Ports<'_>, channel: String, code: UnsubscribeCode) {
        let channels: Vec<String> = if channel.is_empty() {
            self.subs.iter().map(|s| s.channel.to_string()).collect()
        } else if self.find(&channel).is_some() {
            vec![channel]
        } else {
            Vec::new()
        };
        for channel in channels {
            self.server_unsubscribe(p, &channel, code).await;
        }
    }

    /// The engine lost this channel's stream continuity: a client-side subscription is
    /// unsubscribed so the client resubscribes and recovers; a server-side one cannot be, so the
    /// connection closes.
    pub(super) async fn insufficient(&mut self, p: &Ports<'_>, channel: &str) -> Flow {
        match self.find(channel) {
            Some(i) if self.subs[i].flags & SERVER_SIDE != 0 => self.disconnect(DISCONNECT_INSUFFICIENT_STATE),
            Some(_) => {
                self.server_unsubscribe(p, channel, UNSUBSCRIBE_INSUFFICIENT).await;
                Flow::Continue
            }
            None => Flow::Continue,
        }
    }

    pub(super) async fn server_subscribe(&mut self, p: &Ports<'_>, sub: ServerSubscribe) -> Flow {
        if self.find(&sub.channel).is_some() {
            return Flow::Continue;
        }
        if self.subs.len() >= p.rules().channel_limit {
            return self.disconnect(DISCONNECT_CHANNEL_LIMIT);
        }
        let Some(resolved) = p.channels().resolve(&sub.channel) else { return Flow::Continue };
        let mut spec = SubSpec::from_options(resolved.options(), &sub.override_, true);
        spec.chan_info = sub.info;
        spec.data = sub.data;
        if let Some(t) = sub.expire_at.filter(|t| *t > 0) {
            if t <= p.time().now_secs() {
                return Flow::Continue;
            }
            spec.expire_at = t;
        }
        if let Some(since) = sub.recover_since {
            spec.recover = true;
            spec.offset = since.offset;
            spec.epoch = since.epoch;
        }
        let result = match self.prepare_subscription(p, &sub.channel, spec).await {
            Ok(r) => r,
            Err(Refusal::Disconnect(d)) => return self.disconnect(d),
            Err(Refusal::Error(ErrorCode { code, .. }) | Refusal::Backend(BackendError { code, .. })) => {
                tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), channel = %sub.channel, code, "server-side subscribe failed");
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
        self.activate(p, &sub.channel, after).await;
        self.notify(p, EventKind::Subscribe, Some(&sub.channel), 0, Cow::Borrowed(""));
        self.reschedule(p);
        Flow::Continue
    }
}

impl Session {
    /// Asks the subscribe proxy; its answer sets the channel info, the subscribe data, option
    /// overrides and an expiry (extended by the sub_refresh proxy when the namespace has one).
    async fn proxy_subscribe(
        &self,
        p: &Ports<'_>,
        proxy: &ProxySpec,
        req: &SubscribeRequest,
        o: &ChannelOptions,
        now: i64,
    ) -> Result<SubSpec, Refusal> {
        let body = {
            let (common, binary) = self.proxy_common(proxy);
            let payload = wire::payload(&req.data, binary);
            let body = wire::ChannelRequest { common, channel: &req.channel, token: "", payload };
            serde_json::to_vec(&body).expect("serializable")
        };
        let r: wire::SubscribeResult = self.ask(p, proxy, ProxyKind::Subscribe, body).await?;
        let info = wire::bytes_of(r.info.as_deref(), r.b64info.as_deref());
        let data = wire::bytes_of(r.data.as_deref(), r.b64data.as_deref());
        let (Ok(info), Ok(data)) = (info, data) else {
            tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), channel = %req.channel, "subscribe proxy answered invalid base64");
            return Err(ERROR_INTERNAL.into());
        };
        let mut spec = SubSpec::from_options(o, &r.override_.unwrap_or_default(), false);
        spec.chan_info = info;
        spec.data = data;
        if r.expire_at > 0 {
            if r.expire_at <= now {
                return Err(ERROR_EXPIRED.into());
            }
            spec.expire_at = r.expire_at.min(now + MAX_EXPIRY_SECS);
            if p.backend().table().channel_route(o, ProxyKind::SubRefresh).is_some() {
                spec.flags |= PROXY_REFRESH;
            }
        }
        Ok(spec)
    }

    /// A proxy-refreshed subscription reached its expiry: the sub_refresh proxy extends it or
    /// ends it (`expired`, an error or a disconnect answer: unsubscribed with 2501). A failed
    /// call keeps it and asks again later.
    pub(super) async fn proxy_sub_refresh(&mut self, p: &Ports<'_>, channel: &str, now: i64) {
        let route = p
            .channels()
            .resolve(channel)
            .and_then(|r| p.backend().table().channel_route(r.options(), ProxyKind::SubRefresh));
        let Some(proxy) = route else {
            self.server_unsubscribe(p, channel, UNSUBSCRIBE_EXPIRED).await;
            return;
        };
        let body = {
            let (common, _) = self.proxy_common(proxy);
            let body = wire::ChannelRequest { common, channel, token: "", payload: Default::default() };
            serde_json::to_vec(&body).expect("serializable")
        };
        let peer = self.conn.peer().ip();
        let trace = self.trace_headers();
        let decision = p.backend().call::<wire::RefreshResult>(proxy, ProxyKind::SubRefresh, body, trace, peer).await;
        let Some(i) = self.find(channel) else { return };
        let result = match decision {
            Ok(Decision::Allow(r)) => r,
            Ok(Decision::Refuse(_)) => return self.server_unsubscribe(p, channel, UNSUBSCRIBE_EXPIRED).await,
            Err(_) => {
                self.subs[i].expire_at = now + super::connect::REFRESH_RETRY_SECS;
                return;
            }
        };
        if result.expired || (result.expire_at > 0 && result.expire_at <= now) {
            return self.server_unsubscribe(p, channel, UNSUBSCRIBE_EXPIRED).await;
        }
        let sub = &mut self.subs[i];
        sub.expire_at = if result.expire_at > 0 { result.expire_at.min(now + MAX_EXPIRY_SECS) } else { 0 };
        if let Ok(info) = wire::bytes_of(result.info.as_deref(), result.b64info.as_deref())
            && !info.is_empty()
        {
            sub.chan_info = info;
        }
    }
}
