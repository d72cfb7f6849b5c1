//! Connect, refresh and connection expiry.
//!
//! Connect is two steps: the [`Authenticator`](crate::ports::Authenticator) decides who the
//! client is (an [`Identity`]), then [`Session::establish`] applies that identity: channel
//! expansion, authorization of requested channels, limits, registration, timers and the reply.
//! Either step can be answered by a backend without touching the other.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use herald_auth::{Override, SubOptions, TokenError};
use herald_proto::codes::*;
use herald_proto::{ConnectRequest, ConnectResult, RefreshRequest, RefreshResult, Reply};
use rand::Rng;

use super::subscribe::{SubSpec, activation_offset};
use super::{CmdResult, Flow, MAX_EXPIRY_SECS, Session, State, bad_request, ttl};
use crate::auth::DISCONNECT_TOKEN_NOT_YET_VALID;
use crate::channel::ChannelError;
use crate::metrics;
use crate::ports::{ConnectAttempt, Identity, Ports};
use crate::proxy::{Decision, ProxyKind, wire};
use crate::webhook::EventKind;

impl Session {
    pub(super) async fn connect(&mut self, p: &Ports<'_>, id: u32, req: &ConnectRequest) -> CmdResult {
        let conn = self.conn;
        // The kept headers are for this connect only.
        let headers = self.ext.as_mut().map(|e| std::mem::take(&mut e.headers)).unwrap_or_default();
        let attempt = ConnectAttempt {
            client: self.link.id(),
            conn: &conn,
            request: req,
            now: p.time().now_secs(),
            encoding: self.link.envelope().encoding(),
            headers: &headers,
        };
        let identity = p.auth.connect(attempt).await;
        // Later proxy calls continue the client's trace too.
        if let Some(traceparent) = headers.into_iter().find(|(name, _)| name == "traceparent")
            && let Some(ext) = self.ext.as_mut()
        {
            ext.traceparent = vec![traceparent];
        }
        let identity = identity?;
        self.establish(p, id, req, identity).await
    }

    /// Applies an identity to this fresh session: server-side subscriptions from the identity's
    /// `subs` (or `channels`), the user's personal channel and the permitted channels of the
    /// request's `subs`; limits; registration; the connect reply; timers.
    pub(super) async fn establish(
        &mut self,
        p: &Ports<'_>,
        id: u32,
        req: &ConnectRequest,
        identity: Identity,
    ) -> CmdResult {
        let rules = p.rules();
        let now = p.time().now_secs();
        let Identity { user, expire_at, info, data, channels, subs, meta, server_refresh } = identity;
        let mut server_subs: Vec<(String, SubSpec)> = Vec::new();
        // Granted channels: `subs` wins over `channels`. Namespace rules, not permissions, apply.
        let granted: Vec<(String, SubOptions)> = if !subs.is_empty() {
            subs.into_iter().collect()
        } else {
            channels.into_iter().map(|c| (c, SubOptions::default())).collect()
        };
        for (channel, options) in granted {
            let resolved = p.channels().resolve(&channel).ok_or(ERROR_UNKNOWN_CHANNEL)?;
            let mut spec = SubSpec::from_options(resolved.options(), &options.override_, true);
            spec.chan_info = options.info;
            spec.data = options.data;
            server_subs.push((channel, spec));
        }
        let personal = &rules.subscribe_to_user_personal_channel;
        if personal.enabled && !user.is_empty() {
            let channel = p.channels().personal_channel(&personal.personal_channel_namespace, &user);
            let ns = p.channels().namespace(&personal.personal_channel_namespace).ok_or(ERROR_UNKNOWN_CHANNEL)?;
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
            // As before: an unknown namespace fails the connect, a name that breaks the other
            // rules is just not subscribed.
            let resolved = match p.channels().check(channel) {
                Ok(r) => r,
                Err(ChannelError::UnknownNamespace) => return Err(DISCONNECT_BAD_REQUEST.into()),
                Err(e) => {
                    metrics::channel_refused("client", e.label());
                    continue;
                }
            };
            let o = resolved.options();
            let allowed = !p.channels().is_private(channel)
                && match p.channels().user_limited(channel, o, &user) {
                    Some(listed) => listed && !user.is_empty(),
                    None => o.allow_subscribe_for_client && (!user.is_empty() || o.allow_subscribe_for_anonymous),
                };
            if allowed {
                let spec = SubSpec::from_options(o, &Override::default(), true);
                server_subs.push((channel.clone(), spec));
            }
        }
        if server_subs.len() > rules.channel_limit {
            return Err(DISCONNECT_CHANNEL_LIMIT.into());
        }
        let expires_at = expire_at.map(|t| t.min(now + MAX_EXPIRY_SECS));
        if let Some(t) = expires_at
            && t < now
        {
            return Err(ERROR_EXPIRED.into());
        }
        if p.registry().add_user(&user, &self.link).is_err() {
            return Err(DISCONNECT_CONNECTION_LIMIT.into());
        }
        let client = self.client_id();
        if let Err(reason) = p.engine().admit_user(&user, &client).await {
            p.registry().remove_user(&user, &self.link);
            return Err(reason.into());
        }
        self.user = Arc::from(user);
        self.conn_info = info;
        self.expire_at = expires_at.unwrap_or(0);
        self.server_refresh = server_refresh;
        if meta.is_empty() {
            // The kept headers are not needed once connected; a rate budget is made later.
            if self.ext.as_ref().is_some_and(|e| e.budget.is_none() && e.traceparent.is_empty() && e.trace.is_none()) {
                self.ext = None;
            }
        } else {
            self.ext.get_or_insert_with(Default::default).meta = meta;
        }

        let mut results = BTreeMap::new();
        for (channel, mut spec) in server_subs {
            if let Some(r) = req.subs.get(&channel) {
                spec.recover = r.recover;
                spec.offset = r.offset;
                spec.epoch = r.epoch.clone();
            }
            match self.prepare_subscription(p, &channel, spec).await {
                Ok(result) => {
                    results.insert(channel, result);
                }
                Err(refusal) => {
                    self.drop_all(p).await;
                    p.registry().remove_user(&self.user, &self.link);
                    p.engine().release_user(&self.user, &self.client_id()).await;
                    return Err(refusal);
                }
            }
        }
        let ping = rules.ping_interval.as_secs() as u32;
        let mut result = ConnectResult {
            client: self.client_id(),
            version: p.version().to_owned(),
            data,
            ping,
            pong: ping > 0,
            subs: results,
            ..Default::default()
        };
        if self.expire_at > 0 && !self.server_refresh {
            result.expires = true;
            result.ttl = ttl(self.expire_at, now);
        }
        if let Some(session) = self.link.emulation_session() {
            result.session = session.to_owned();
            result.node = p.node_uid().to_owned();
        }
        if rules.connect_include_server_time {
            result.time = p.time().now_ms();
        }
        let after: Vec<(String, u64)> = result.subs.iter().map(|(c, r)| (c.clone(), activation_offset(r))).collect();
        self.send(&Reply { id, connect: Some(result), ..Default::default() });
        self.state = State::Connected;
        self.notify(p, EventKind::Connect, None, 0, Cow::Borrowed(""));
        for (channel, offset) in after {
            self.activate(p, &channel, offset).await;
            self.notify(p, EventKind::Subscribe, Some(&channel), 0, Cow::Borrowed(""));
        }
        // Timers: first ping at a random point in [interval/2, interval] to spread load.
        let tick = p.time().tick();
        let first_ping = if ping > 0 { tick + rand::rng().random_range(ping / 2..=ping).max(1) } else { 0 };
        self.link.timers().set_connected(first_ping);
        if first_ping > 0 {
            p.time().timers().schedule(&self.link, first_ping);
        }
        self.reschedule(p);
        Ok(())
    }

    pub(super) fn refresh(&mut self, p: &Ports<'_>, id: u32, req: &RefreshRequest) -> CmdResult {
        if req.token.is_empty() {
            return Err(bad_request());
        }
        let now = p.time().now_secs();
        let identity = match p.auth.refresh_token(&req.token, now) {
            Ok(i) => i,
            Err(TokenError::Expired) => return Err(DISCONNECT_EXPIRED.into()),
            Err(TokenError::NotYetValid) => return Err(DISCONNECT_TOKEN_NOT_YET_VALID.into()),
            Err(TokenError::Invalid(_)) => return Err(DISCONNECT_INVALID_TOKEN.into()),
        };
        if identity.user != *self.user {
            return Err(DISCONNECT_INVALID_TOKEN.into());
        }
        let mut result = RefreshResult::default();
        match identity.expire_at {
            Some(t) if t <= now => return Err(ERROR_EXPIRED.into()),
            Some(t) => {
                self.expire_at = t.min(now + MAX_EXPIRY_SECS);
                result.expires = true;
                result.ttl = ttl(self.expire_at, now);
            }
            None => self.expire_at = 0,
        }
        if !identity.info.is_empty() {
            self.conn_info = identity.info;
        }
        self.send(&Reply { id, refresh: Some(result), ..Default::default() });
        self.reschedule(p);
        Ok(())
    }

    /// Server API `refresh`: new info and expiry, or an immediate expiry.
    pub(super) fn server_refresh(
        &mut self,
        p: &Ports<'_>,
        expired: bool,
        expire_at: Option<i64>,
        info: Option<Bytes>,
    ) -> Flow {
        let now = p.time().now_secs();
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
        self.reschedule(p);
        Flow::Continue
    }

    /// Arms the session deadline on the link: the earliest connection or subscription expiry
    /// plus its grace period.
    pub(super) fn reschedule(&self, p: &Ports<'_>) {
        let rules = p.rules();
        // Proxy-refreshed expiries are acted on at once; client refreshes get a grace period.
        let grace = if self.server_refresh { 0 } else { rules.expired_close_delay.as_secs() as i64 };
        let conn = (self.expire_at > 0).then(|| self.expire_at + grace);
        let subs = self.subs.iter().filter(|s| s.expire_at > 0).map(|s| {
            let grace = if s.flags & super::PROXY_REFRESH != 0 { 0 } else { rules.expired_sub_close_delay.as_secs() };
            s.expire_at + grace as i64
        });
        let next = conn.into_iter().chain(subs).min();
        let timers = self.link.timers();
        match next {
            Some(at) => {
                let tick = p.time().tick_at(at);
                timers.set_session_deadline(tick);
                p.time().timers().schedule(&self.link, tick);
            }
            None => timers.set_session_deadline(0),
        }
    }

    /// The session deadline fired: closes an expired connection, unsubscribes expired
    /// subscriptions (a server-side one closes the connection), re-arms the deadline.
    pub(super) async fn check_expiry(&mut self, p: &Ports<'_>) -> Flow {
        let rules = p.rules();
        let now = p.time().now_secs();
        if self.server_refresh && self.expire_at > 0 && now >= self.expire_at {
            if self.proxy_refresh(p, now).await == Flow::Stop {
                return Flow::Stop;
            }
        } else if !self.server_refresh
            && self.expire_at > 0
            && now >= self.expire_at + rules.expired_close_delay.as_secs() as i64
        {
            return self.disconnect(DISCONNECT_EXPIRED);
        }
        let refreshed: Vec<Arc<str>> = self
            .subs
            .iter()
            .filter(|s| s.flags & super::PROXY_REFRESH != 0 && s.expire_at > 0 && now >= s.expire_at)
            .map(|s| s.channel.clone())
            .collect();
        for channel in refreshed {
            self.proxy_sub_refresh(p, &channel, now).await;
        }
        let grace = rules.expired_sub_close_delay.as_secs() as i64;
        let expired: Vec<(Arc<str>, bool)> = self
            .subs
            .iter()
            .filter(|s| s.flags & super::PROXY_REFRESH == 0 && s.expire_at > 0 && now >= s.expire_at + grace)
            .map(|s| (s.channel.clone(), s.flags & super::SERVER_SIDE != 0))
            .collect();
        for (channel, server_side) in expired {
            if server_side {
                return self.disconnect(DISCONNECT_SUB_EXPIRED);
            }
            self.server_unsubscribe(p, &channel, UNSUBSCRIBE_EXPIRED).await;
        }
        self.reschedule(p);
        Flow::Continue
    }
}

impl Session {
    /// The connection reached `expire_at` and the refresh proxy decides: extend it (new
    /// `expire_at`, `info`), or end it (`expired`, or an error or disconnect answer, which
    /// Centrifugo treats as expiry). A failed call never drops the client: it is retried after
    /// [`REFRESH_RETRY_SECS`].
    async fn proxy_refresh(&mut self, p: &Ports<'_>, now: i64) -> Flow {
        let Some(spec) = p.backend().table().refresh() else {
            return self.disconnect(DISCONNECT_EXPIRED);
        };
        let body = {
            let (common, _) = self.proxy_common(spec);
            serde_json::to_vec(&common).expect("serializable")
        };
        let decision = p
            .backend()
            .call::<wire::RefreshResult>(spec, ProxyKind::Refresh, body, self.trace_headers(), self.conn.peer().ip())
            .await;
        let result = match decision {
            Ok(Decision::Allow(r)) => r,
            Ok(Decision::Refuse(_)) => return self.disconnect(DISCONNECT_EXPIRED),
            Err(_) => {
                self.expire_at = now + REFRESH_RETRY_SECS;
                return Flow::Continue;
            }
        };
        if result.expired {
            return self.disconnect(DISCONNECT_EXPIRED);
        }
        match result.expire_at {
            t if t > now => self.expire_at = t.min(now + MAX_EXPIRY_SECS),
            t if t > 0 => return self.disconnect(DISCONNECT_EXPIRED),
            _ => self.expire_at = 0,
        }
        if let Ok(info) = wire::bytes_of(result.info.as_deref(), result.b64info.as_deref())
            && !info.is_empty()
        {
            self.conn_info = info;
        }
        if let Some(meta) = result.meta {
            self.ext.get_or_insert_with(Default::default).meta = Bytes::from(meta.get().to_owned());
        }
        Flow::Continue
    }
}

/// After a failed refresh or sub_refresh call, the connection or subscription is kept and the
/// backend asked again this much later (as Centrifugo does; longer than any proxy timeout).
pub(super) const REFRESH_RETRY_SECS: i64 = 60;
