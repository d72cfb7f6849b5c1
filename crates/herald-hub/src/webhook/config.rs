//! The `webhooks` section (Herald's own: Centrifugo has no lifecycle notifications): which
//! events go to which named proxy, and the bounds of the batching queue.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Event names accepted in `webhooks.events`, in the order of [`super::EventKind`].
pub const EVENT_NAMES: [&str; 4] = ["connect", "disconnect", "subscribe", "unsubscribe"];

/// `webhooks`: best-effort batched notifications of connects, disconnects, subscriptions and
/// unsubscriptions to a backend endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    pub enabled: bool,
    /// A name from `proxies[]`: its `endpoint`, `timeout` and static headers are used.
    pub proxy_name: String,
    /// Which events are sent (default: all four).
    pub events: Vec<String>,
    /// At most this many events per request.
    pub max_batch: usize,
    /// How long the first queued event waits for others before a batch is sent.
    #[serde(with = "crate::duration")]
    pub flush_interval: Duration,
    /// At most this many events held in memory (queued and being sent); more are dropped.
    pub max_queue: usize,
    /// A batch that failed this many more times is dropped (0: one attempt only).
    pub max_retries: u32,
    /// The first retry's delay; doubled per attempt, with jitter.
    #[serde(with = "crate::duration")]
    pub retry_backoff_min: Duration,
    /// The largest retry delay.
    #[serde(with = "crate::duration")]
    pub retry_backoff_max: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            proxy_name: String::new(),
            events: EVENT_NAMES.iter().map(|s| (*s).to_owned()).collect(),
            max_batch: 100,
            flush_interval: Duration::from_millis(100),
            max_queue: 10_000,
            max_retries: 5,
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(10),
        }
    }
}
