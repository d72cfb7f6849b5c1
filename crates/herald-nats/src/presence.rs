//! Presence in a JetStream key-value bucket (`<prefix>_presence`), one key per channel and
//! client: `<channel>.<client>`, each segment escaped. The bucket's `max_age` is the presence
//! TTL; every node re-puts the entries of its own clients every third of it, so the entries of
//! a node that died vanish within one TTL. A channel's presence is read with a short-lived
//! consumer over the channel's keys (last value per key), so a read costs one consumer,
//! whatever the number of channels in the bucket.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use herald_hub::broker::{BoxFuture, BrokerError, ErrorKind, PresenceManager};
use herald_proto::ClientInfo;
use parking_lot::Mutex;
use prost::Message;

use crate::history::error;
use crate::subject::{Names, kv_segment};
use crate::{NatsConfig, metrics};

/// Presence over a NATS key-value bucket. Cheap to clone handles are kept inside.
pub struct NatsPresence {
    inner: Arc<Inner>,
    refresher: tokio::task::JoinHandle<()>,
}

struct Inner {
    client: async_nats::Client,
    kv: kv::Store,
    stream: stream::Stream<()>,
    bucket: String,
    timeout: Duration,
    /// Entries this node added and keeps alive: key → encoded info.
    local: Mutex<HashMap<String, Bytes>>,
}

impl Drop for NatsPresence {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl NatsPresence {
    /// Creates (or updates) the bucket and starts refreshing this node's entries.
    pub async fn open(client: async_nats::Client, cfg: &NatsConfig) -> Result<NatsPresence, BrokerError> {
        let names = Names::new(&cfg.prefix);
        let js = jetstream::new(client.clone());
        let bucket = names.presence_bucket();
        let kv = open_bucket(&js, &bucket, cfg.presence_ttl, cfg)
            .await
            .map_err(|e| error(ErrorKind::Unavailable, "nats presence setup", std::io::Error::other(e)))?;
        let stream = js
            .get_stream_no_info(format!("KV_{bucket}"))
            .await
            .map_err(|e| error(ErrorKind::Unavailable, "nats presence setup", e))?;
        let inner = Arc::new(Inner {
            client,
            kv,
            stream,
            bucket,
            timeout: cfg.write_timeout,
            local: Mutex::new(HashMap::new()),
        });
        let period = (cfg.presence_ttl / 3).max(Duration::from_millis(100));
        let refresher = tokio::spawn(refresh(Arc::downgrade(&inner), period));
        Ok(NatsPresence { inner, refresher })
    }
}

/// Creates or updates a key-value bucket (kept in memory: its entries are short-lived) whose
/// entries live `max_age`. The bucket's stream is set up directly, with the settings of a
/// key-value bucket, because async-nats cannot read NATS 2.9's answer to a bucket creation.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    cfg: &NatsConfig,
) -> Result<kv::Store, async_nats::Error> {
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::Memory,
        num_replicas: cfg.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    js.create_or_update_stream(config).await?;
    Ok(js.get_key_value(bucket).await?)
}

/// Re-puts this node's entries every `period` (a third of the TTL) without waiting for acks: a
/// lost refresh is repaired by the next one, well before the entry expires.
async fn refresh(inner: std::sync::Weak<Inner>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let entries: Vec<(String, Bytes)> = inner.local.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, value) in entries {
            if inner.client.publish(format!("$KV.{}.{key}", inner.bucket), value).await.is_err() {
                metrics::error("nats presence refresh");
                break;
            }
        }
    }
}

fn key(channel: &str, client: &str) -> String {
    format!("{}.{}", kv_segment(channel), kv_segment(client))
}

impl Inner {
    async fn read(&self, channel: &str) -> Result<HashMap<String, ClientInfo>, BrokerError> {
        let what = "nats presence read";
        let config = consumer::pull::Config {
            filter_subject: format!("$KV.{}.{}.*", self.bucket, kv_segment(channel)),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        };
        let consumer = self.stream.create_consumer(config).await.map_err(|e| error(ErrorKind::Unavailable, what, e))?;
        let name = consumer.cached_info().name.clone();
        let mut pending = consumer.cached_info().num_pending as usize;
        let mut out = HashMap::new();
        let result: Result<(), BrokerError> = async {
            while pending > 0 {
                let mut batch = consumer
                    .fetch()
                    .max_messages(pending)
                    .expires(self.timeout)
                    .messages()
                    .await
                    .map_err(|e| error(ErrorKind::Unavailable, what, e))?;
                let mut got = 0;
                while let Some(m) = batch.next().await {
                    let m = m.map_err(|e| error(ErrorKind::Unavailable, what, std::io::Error::other(e)))?;
                    got += 1;
                    let deleted = m
                        .message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("KV-Operation"))
                        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                    if deleted {
                        continue;
                    }
                    match ClientInfo::decode(m.message.payload.clone()) {
                        Ok(info) => {
                            out.insert(info.client.clone(), info);
                        }
                        Err(_) => metrics::malformed(),
                    }
                }
                if got == 0 {
                    return Err(BrokerError::new(ErrorKind::Timeout, what));
                }
                pending = pending.saturating_sub(got);
            }
            Ok(())
        }
        .await;
        // The consumer was only for this read; removing it is not worth waiting for.
        let stream = self.stream.clone();
        tokio::spawn(async move {
            let _ = stream.delete_consumer(&name).await;
        });
        result.map(|()| out)
    }
}

impl PresenceManager for NatsPresence {
    fn add_presence<'a>(&'a self, channel: &'a str, info: ClientInfo) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = key(channel, &info.client);
            let value = Bytes::from(info.encode_to_vec());
            self.inner.local.lock().insert(key.clone(), value.clone());
            self.inner.kv.put(&key, value).await.map_err(|e| error(ErrorKind::Unavailable, "nats presence add", e))?;
            Ok(())
        })
    }

    fn remove_presence<'a>(&'a self, channel: &'a str, client: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let key = key(channel, client);
            self.inner.local.lock().remove(&key);
            self.inner.kv.delete(&key).await.map_err(|e| error(ErrorKind::Unavailable, "nats presence remove", e))
        })
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<HashMap<String, ClientInfo>, BrokerError>> {
        Box::pin(self.inner.read(channel))
    }

    fn presence_stats<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(u32, u32), BrokerError>> {
        Box::pin(async move {
            let all = self.inner.read(channel).await?;
            let users: HashSet<&str> = all.values().map(|i| i.user.as_str()).collect();
            Ok((all.len() as u32, users.len() as u32))
        })
    }

    fn healthy(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }
}
