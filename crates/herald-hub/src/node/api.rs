//! The node's server-API operations: publish, server-side subscribe and unsubscribe,
//! disconnect, refresh, presence, history and channels, each answered with the protocol's
//! error codes.

use super::*;

impl Node {
    /// The channel rules clients get (`Channels::check`), answered as API errors: 107 for an
    /// empty, too long, NUL-carrying or invalid name, 102 for an unknown namespace.
    fn api_resolve<'a>(&self, live: &'a Live, channel: &'a str) -> Result<Resolved<'a>, ErrorCode> {
        check_in(live, channel).map_err(ChannelError::code)
    }

    /// The channel rules clients get, for a channel named in a server API call: what is wrong
    /// with it, counted like every refusal. The API checks first with this so that its answer
    /// can say why (the `api_*` operations check again and answer only the code).
    pub fn api_check(&self, channel: &str) -> Result<(), ChannelError> {
        check_in(&self.live(), channel).map(|_| ())
    }

    /// Server API `publish`.
    pub async fn api_publish(&self, channel: &str, req: &ApiPublish) -> Result<PublishOutcome, ErrorCode> {
        if req.data.is_empty() {
            return Err(ERROR_BAD_REQUEST);
        }
        let live = self.live();
        let resolved = self.api_resolve(&live, channel)?;
        if !resolved.ns.admit_publication(self.time.now_ms()) {
            return Err(ERROR_TOO_MANY_REQUESTS);
        }
        let mut opts = self.publish_options(resolved.options());
        if req.skip_history {
            opts.history_size = 0;
        }
        if !req.idempotency_key.is_empty() {
            opts.idempotency_key = Some(req.idempotency_key.clone());
        }
        if !req.exclude_client.is_empty() {
            opts.exclude_client = Some(Uuid::parse_str(&req.exclude_client).map_err(|_| ERROR_BAD_REQUEST)?);
        }
        let publication = Publication { data: req.data.clone(), tags: req.tags.clone(), ..Default::default() };
        self.publish_with(channel, publication, &opts).await
    }

    fn targets(&self, target: &Target) -> Vec<Arc<dyn ClientLink>> {
        let mut links = self.hub.user_links(&target.user);
        if !target.client.is_empty() {
            links.retain(|l| l.id().to_string() == target.client);
        }
        links
    }

    /// Server API `subscribe`: server-side subscription of a user's live connections, on every
    /// node of the cluster.
    pub async fn api_subscribe(&self, target: &Target, sub: ServerSubscribe) -> Result<(), ErrorCode> {
        self.api_resolve(&self.live(), &sub.channel)?;
        for link in self.targets(target) {
            link.control(Control::Subscribe(Box::new(sub.clone())));
        }
        let subscribe = RemoteSubscribe {
            channel: sub.channel,
            info: sub.info.to_vec(),
            data: sub.data.to_vec(),
            recover_since: sub.recover_since,
            expire_at: sub.expire_at,
            override_: sub.override_,
        };
        self.tell_cluster(Command::Subscribe { user: target.user.clone(), client: target.client.clone(), subscribe })
            .await
    }

    /// Server API `unsubscribe` (empty channel: all channels), on every node.
    pub async fn api_unsubscribe(&self, target: &Target, channel: &str) -> Result<(), ErrorCode> {
        if !channel.is_empty() {
            self.api_resolve(&self.live(), channel)?;
        }
        for link in self.targets(target) {
            link.control(Control::Unsubscribe { channel: channel.to_owned(), code: UNSUBSCRIBE_SERVER });
        }
        self.tell_cluster(Command::Unsubscribe {
            user: target.user.clone(),
            client: target.client.clone(),
            channel: channel.to_owned(),
            code: UNSUBSCRIBE_SERVER.code,
        })
        .await
    }

    /// Server API `disconnect`: closes the user's connections except the whitelisted ones, on
    /// every node.
    pub async fn api_disconnect(
        &self,
        target: &Target,
        whitelist: &[String],
        reason: DisconnectReason,
    ) -> Result<(), ErrorCode> {
        for link in self.targets(target) {
            let id = link.id().to_string();
            if !whitelist.contains(&id) {
                link.close(reason.clone());
            }
        }
        self.tell_cluster(Command::Disconnect {
            user: target.user.clone(),
            client: target.client.clone(),
            whitelist: whitelist.to_vec(),
            code: reason.code,
            reason: reason.reason.into_owned(),
        })
        .await
    }

    /// Server API `refresh`, on every node.
    pub async fn api_refresh(
        &self,
        target: &Target,
        expired: bool,
        expire_at: Option<i64>,
        info: Option<Bytes>,
    ) -> Result<(), ErrorCode> {
        for link in self.targets(target) {
            link.control(Control::Refresh { expired, expire_at, info: info.clone() });
        }
        self.tell_cluster(Command::Refresh {
            user: target.user.clone(),
            client: target.client.clone(),
            expired,
            expire_at,
            info: info.map(|i| i.to_vec()),
        })
        .await
    }

    /// Sends a user command to the other nodes (nothing to do outside a cluster). A failure is
    /// error 100: the command reached this node's connections but maybe not the others'.
    pub(crate) async fn tell_cluster(&self, command: Command) -> Result<(), ErrorCode> {
        if !self.broker.delivers_control() {
            return Ok(());
        }
        let payload = cluster::encode(&self.identity.uid, &command);
        self.broker.publish_control(None, payload).await.map_err(|e| {
            metrics::control_send_failed();
            tracing::warn!(error = %e, "cluster command not sent");
            ERROR_INTERNAL
        })
    }

    /// Server API `presence`.
    pub async fn api_presence(&self, channel: &str) -> Result<BTreeMap<String, ClientInfo>, ErrorCode> {
        let live = self.live();
        let resolved = self.api_resolve(&live, channel)?;
        if !resolved.options().presence {
            return Err(ERROR_NOT_AVAILABLE);
        }
        let map = self.presence.presence(channel).await.map_err(|e| engine_failure("presence", channel, e))?;
        Ok(map.into_iter().collect())
    }

    /// Server API `presence_stats`: (clients, users).
    pub async fn api_presence_stats(&self, channel: &str) -> Result<(u32, u32), ErrorCode> {
        let live = self.live();
        let resolved = self.api_resolve(&live, channel)?;
        if !resolved.options().presence {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.presence.presence_stats(channel).await.map_err(|e| engine_failure("presence stats", channel, e))
    }

    /// Server API `history` (no limit cap, unlike the client command).
    pub async fn api_history(
        &self,
        channel: &str,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistorySlice, ErrorCode> {
        let live = self.live();
        let resolved = self.api_resolve(&live, channel)?;
        if !resolved.options().history_enabled() {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.read_history(channel, resolved.options(), limit, since, reverse).await
    }

    /// History read shared by the API and the client command.
    pub(crate) async fn read_history(
        &self,
        channel: &str,
        options: &ChannelOptions,
        limit: i64,
        since: Option<StreamPosition>,
        reverse: bool,
    ) -> Result<HistorySlice, ErrorCode> {
        if reverse && since.as_ref().is_some_and(|s| s.offset == 0) {
            return Err(ERROR_BAD_REQUEST);
        }
        let since_epoch = since.as_ref().map(|s| s.epoch.clone()).unwrap_or_default();
        let query = HistoryQuery { since, limit, reverse, meta_ttl: self.meta_ttl(options) };
        let slice = self.broker.history(channel, query).await.map_err(|e| engine_failure("history", channel, e))?;
        if !since_epoch.is_empty() && since_epoch != slice.top.epoch {
            return Err(ERROR_UNRECOVERABLE_POSITION);
        }
        Ok(slice)
    }

    /// Server API `history_remove`.
    pub async fn api_history_remove(&self, channel: &str) -> Result<(), ErrorCode> {
        let live = self.live();
        let resolved = self.api_resolve(&live, channel)?;
        if !resolved.options().history_enabled() {
            return Err(ERROR_NOT_AVAILABLE);
        }
        self.broker.remove_history(channel).await.map_err(|e| engine_failure("history remove", channel, e))
    }

    /// Server API `channels`: channels with local subscribers matching a glob pattern
    /// (`*` any run of characters, `?` one character; empty pattern: all).
    pub fn api_channels(&self, pattern: &str) -> Result<BTreeMap<String, usize>, ErrorCode> {
        let matcher = if pattern.is_empty() { None } else { Some(glob(pattern).ok_or(ERROR_BAD_REQUEST)?) };
        Ok(self
            .hub
            .channels()
            .into_iter()
            .filter(|(name, _)| matcher.as_ref().is_none_or(|m| m.is_match(name)))
            .collect())
    }
}

/// [`Node::api_check`] against one snapshot of the channel rules.
fn check_in<'a>(live: &'a Live, channel: &'a str) -> Result<Resolved<'a>, ChannelError> {
    live.channels().check(channel).inspect_err(|e| {
        metrics::channel_refused("api", e.label());
        tracing::debug!(error = %e, len = channel.len(), "server API channel refused");
    })
}
