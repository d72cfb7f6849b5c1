//! Channel commands that need no subscription state of their own: publish, presence,
//! presence_stats and history, with their namespace and permission checks.

use herald_proto::codes::*;
use herald_proto::{
    HistoryRequest, HistoryResult, PresenceRequest, PresenceResult, PresenceStatsRequest, PresenceStatsResult,
    Publication, PublishRequest, PublishResult, Reply,
};

use super::{CmdResult, Session, check_channel};
use crate::config::ChannelOptions;
use crate::ports::{Ports, Refusal};
use crate::proxy::{ProxyKind, wire};

impl Session {
    /// Channel checks shared by publish, presence and history: 3501, 107, 102.
    fn resolve_for_command<'p>(&self, p: &Ports<'p>, channel: &'p str) -> Result<&'p ChannelOptions, Refusal> {
        Ok(&check_channel(p, channel)?.ns.options)
    }

    /// The for_client / for_subscriber / for_anonymous permission pattern.
    fn permitted(&self, channel: &str, for_client: bool, for_subscriber: bool, anonymous: bool) -> bool {
        let who_ok = !self.user.is_empty() || anonymous;
        (for_client && who_ok) || (for_subscriber && who_ok && self.find(channel).is_some())
    }

    pub(super) async fn publish(&mut self, p: &Ports<'_>, id: u32, req: &PublishRequest) -> CmdResult {
        let ns = check_channel(p, &req.channel)?.ns;
        let o = &ns.options;
        let proxy = p.backend().table().channel_route(o, ProxyKind::Publish);
        // With a publish proxy the backend decides instead of the `allow_publish_*` options.
        if proxy.is_none()
            && !self.permitted(
                &req.channel,
                o.allow_publish_for_client,
                o.allow_publish_for_subscriber,
                o.allow_publish_for_anonymous,
            )
        {
            return Err(ERROR_PERMISSION_DENIED.into());
        }
        if req.data.is_empty() {
            return Err(ERROR_BAD_REQUEST.into());
        }
        if !ns.admit_publication(p.time().now_ms()) {
            return Err(ERROR_TOO_MANY_REQUESTS.into());
        }
        let mut data = req.data.clone();
        let mut skip_history = false;
        if let Some(proxy) = proxy {
            let body = {
                let (common, binary) = self.proxy_common(proxy);
                let payload = wire::payload(&req.data, binary);
                let body = wire::ChannelRequest { common, channel: &req.channel, token: "", payload };
                serde_json::to_vec(&body).expect("serializable")
            };
            let r: wire::PublishResult = self.ask(p, proxy, ProxyKind::Publish, body).await?;
            match wire::bytes_of(r.data.as_deref(), r.b64data.as_deref()) {
                Ok(replaced) if !replaced.is_empty() => data = replaced,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), channel = %req.channel, error = %e, "publish proxy answered invalid data");
                    return Err(ERROR_INTERNAL.into());
                }
            }
            skip_history = r.skip_history;
        }
        let chan_info = self.find(&req.channel).map(|i| self.subs[i].chan_info.clone()).unwrap_or_default();
        let publication = Publication { data, info: Some(self.client_info(chan_info)), ..Default::default() };
        let mut opts = p.engine().publish_options(o);
        if skip_history {
            opts.history_size = 0;
        }
        p.engine().publish_with(&req.channel, publication, &opts).await?;
        self.send(&Reply { id, publish: Some(PublishResult {}), ..Default::default() });
        Ok(())
    }

    fn presence_checks(&self, p: &Ports<'_>, channel: &str) -> CmdResult {
        let o = self.resolve_for_command(p, channel)?;
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

    pub(super) async fn presence(&mut self, p: &Ports<'_>, id: u32, req: &PresenceRequest) -> CmdResult {
        self.presence_checks(p, &req.channel)?;
        let map = p.engine().presence().presence(&req.channel).await.map_err(|_| ERROR_INTERNAL)?;
        let result = PresenceResult { presence: map.into_iter().collect() };
        self.send(&Reply { id, presence: Some(result), ..Default::default() });
        Ok(())
    }

    pub(super) async fn presence_stats(&mut self, p: &Ports<'_>, id: u32, req: &PresenceStatsRequest) -> CmdResult {
        self.presence_checks(p, &req.channel)?;
        let (num_clients, num_users) =
            p.engine().presence().presence_stats(&req.channel).await.map_err(|_| ERROR_INTERNAL)?;
        let result = PresenceStatsResult { num_clients, num_users };
        self.send(&Reply { id, presence_stats: Some(result), ..Default::default() });
        Ok(())
    }

    pub(super) async fn history(&mut self, p: &Ports<'_>, id: u32, req: &HistoryRequest) -> CmdResult {
        let o = self.resolve_for_command(p, &req.channel)?;
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
        let max = p.rules().history_max_publication_limit as i64;
        let mut limit = req.limit as i64;
        if max > 0 && (limit < 0 || limit > max) {
            limit = max;
        }
        let slice = p.engine().read_history(&req.channel, o, limit, req.since.clone(), req.reverse).await?;
        let result =
            HistoryResult { publications: slice.publications, epoch: slice.top.epoch, offset: slice.top.offset };
        self.send(&Reply { id, history: Some(result), ..Default::default() });
        Ok(())
    }
}
