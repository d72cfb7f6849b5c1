//! Lifecycle webhooks: best-effort batched notifications of connects, disconnects,
//! subscriptions and unsubscriptions to a backend endpoint (Herald's own feature).
//!
//! - `config`: the `webhooks` section;
//! - [`Webhooks`]: the section checked against `proxies[]` (the endpoint is a named proxy);
//! - [`LifecycleSink`]: the port the server implements (a bounded queue and a sender task);
//!   sessions push a [`LifecycleEvent`] into it and never wait;
//! - `batcher`: the queue, batching and retry logic without I/O;
//! - [`encode_batch`]: the request body.
//!
//! The session only builds an event when its kind is switched on: with webhooks off an event
//! costs one branch.

pub mod batcher;
pub mod config;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use uuid::Uuid;

use crate::config::ConfigError;
use crate::proxy::{Proxies, ProxySpec};
pub use batcher::{Batcher, Next, Settings};
pub use config::{EVENT_NAMES, WebhookConfig};

/// The lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Connect = 0,
    Disconnect = 1,
    Subscribe = 2,
    Unsubscribe = 3,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        EVENT_NAMES[self as usize]
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// One event, as queued.
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    pub kind: EventKind,
    pub client: Uuid,
    pub user: Arc<str>,
    /// The channel of a subscribe or unsubscribe.
    pub channel: Option<Arc<str>>,
    /// Disconnect or unsubscribe code and reason (0 and empty for connect and subscribe).
    pub code: u32,
    pub reason: Cow<'static, str>,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub transport: &'static str,
}

/// Where sessions push events: the server's bounded queue. Must not block.
pub trait LifecycleSink: Send + Sync {
    fn push(&self, event: LifecycleEvent);

    /// At shutdown: sends what is queued without waiting for `flush_interval` or retry
    /// delays, for at most `limit`; resolves to the number of events left unsent.
    fn drain(&self, limit: std::time::Duration) -> crate::broker::BoxFuture<'_, usize> {
        let _ = limit;
        Box::pin(std::future::ready(0))
    }

    /// A configuration reload changed the section: batches from now on (a retried one
    /// included) go as `webhooks` says; the queue is kept.
    fn reconfigure(&self, webhooks: &Webhooks) {
        let _ = webhooks;
    }
}

/// The `webhooks` section, checked: which events, which proxy, which bounds.
#[derive(Debug, Clone)]
pub struct Webhooks {
    pub spec: ProxySpec,
    mask: u8,
    pub settings: Settings,
}

impl Webhooks {
    /// `None` when webhooks are off; errors name the key to fix.
    pub fn compile(c: &WebhookConfig, proxies: &Proxies) -> Result<Option<Webhooks>, ConfigError> {
        if !c.enabled {
            return Ok(None);
        }
        if c.proxy_name.is_empty() {
            return Err(ConfigError::new("webhooks.proxy_name", "must name an entry of proxies[] (the endpoint)"));
        }
        let spec = proxies.named(&c.proxy_name).ok_or_else(|| {
            ConfigError::new("webhooks.proxy_name", format!("no proxy named {:?} in proxies", c.proxy_name))
        })?;
        let mut mask = 0u8;
        for (i, name) in c.events.iter().enumerate() {
            let Some(bit) = EVENT_NAMES.iter().position(|e| e == name) else {
                return Err(ConfigError::new(
                    format!("webhooks.events[{i}]"),
                    format!("{name:?} is not one of {}", EVENT_NAMES.join(", ")),
                ));
            };
            mask |= 1 << bit;
        }
        if mask == 0 {
            return Err(ConfigError::new("webhooks.events", "must list at least one event"));
        }
        for (key, value) in [("webhooks.max_batch", c.max_batch), ("webhooks.max_queue", c.max_queue)] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than zero"));
            }
        }
        if c.retry_backoff_min.is_zero() {
            return Err(ConfigError::new("webhooks.retry_backoff_min", "must be greater than zero"));
        }
        if c.retry_backoff_max < c.retry_backoff_min {
            return Err(ConfigError::new("webhooks.retry_backoff_max", "must not be less than retry_backoff_min"));
        }
        Ok(Some(Webhooks { spec: spec.clone(), mask, settings: Settings::from_config(c) }))
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.mask & kind.bit() != 0
    }

    /// The switched-on events as a bit set (bit = `EventKind as u8`).
    pub fn mask(&self) -> u8 {
        self.mask
    }
}

/// A node's webhooks: the checked section (`None` when off) and the sink the server installs.
pub struct Hooks {
    webhooks: arc_swap::ArcSwapOption<Webhooks>,
    /// The events sessions report (0 when off: the one branch an event pays).
    mask: std::sync::atomic::AtomicU8,
    sink: std::sync::OnceLock<Arc<dyn LifecycleSink>>,
}

impl Hooks {
    pub fn new(webhooks: Option<Webhooks>) -> Hooks {
        let mask = webhooks.as_ref().map_or(0, |w| w.mask);
        Hooks {
            webhooks: arc_swap::ArcSwapOption::from_pointee(webhooks),
            mask: std::sync::atomic::AtomicU8::new(mask),
            sink: std::sync::OnceLock::new(),
        }
    }

    /// The checked `webhooks` section, when webhooks are on.
    pub fn config(&self) -> Option<Arc<Webhooks>> {
        self.webhooks.load_full()
    }

    /// Replaces the section (a configuration reload): events from now on are reported as
    /// `webhooks` says (none when `None`); the installed sink, if any, is told, and keeps what
    /// it has queued. Turning webhooks on when no sink was installed is the server's to finish
    /// ([`Hooks::install`]).
    pub fn replace(&self, webhooks: Option<Webhooks>) {
        if let (Some(w), Some(sink)) = (&webhooks, self.sink.get()) {
            sink.reconfigure(w);
        }
        let mask = webhooks.as_ref().map_or(0, |w| w.mask);
        self.webhooks.store(webhooks.map(Arc::new));
        self.mask.store(mask, std::sync::atomic::Ordering::Relaxed);
    }

    /// Installs where events go (once; `false` if one was installed already). Until then
    /// sessions report nothing.
    pub fn install(&self, sink: Arc<dyn LifecycleSink>) -> bool {
        self.sink.set(sink).is_ok()
    }

    /// Whether a sink was installed.
    pub fn has_sink(&self) -> bool {
        self.sink.get().is_some()
    }

    /// Sends what is queued for at most `limit` (shutdown); the number of events left.
    pub async fn drain(&self, limit: std::time::Duration) -> usize {
        match self.sink.get() {
            Some(sink) => sink.drain(limit).await,
            None => 0,
        }
    }

    /// The sink, when `kind` is switched on and a sink is installed.
    pub fn sink(&self, kind: EventKind) -> Option<&dyn LifecycleSink> {
        if self.mask.load(std::sync::atomic::Ordering::Relaxed) & kind.bit() == 0 {
            return None;
        }
        self.sink.get().map(|s| &**s)
    }
}

#[derive(Serialize)]
struct WireEvent<'a> {
    event: &'static str,
    seq: u64,
    time: i64,
    client: String,
    user: &'a str,
    transport: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct WireBatch<'a> {
    node: &'a str,
    events: Vec<WireEvent<'a>>,
}

/// The request body of one batch: `{"node": uid, "events": [...]}`, each event with a
/// node-wide sequence number (`seq`) so a backend sees gaps left by dropped events.
pub fn encode_batch(node: &str, events: &[(u64, LifecycleEvent)]) -> Vec<u8> {
    let events = events
        .iter()
        .map(|(seq, e)| {
            let ends = matches!(e.kind, EventKind::Disconnect | EventKind::Unsubscribe);
            WireEvent {
                event: e.kind.name(),
                seq: *seq,
                time: e.time_ms,
                client: e.client.to_string(),
                user: &e.user,
                transport: e.transport,
                channel: e.channel.as_deref(),
                code: ends.then_some(e.code),
                reason: ends.then_some(&*e.reason),
            }
        })
        .collect();
    serde_json::to_vec(&WireBatch { node, events }).expect("a batch serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HubConfig;
    use crate::proxy::config::{NamedProxy, ProxyOptions};

    fn proxies() -> Proxies {
        let cfg = HubConfig {
            proxies: vec![NamedProxy {
                name: "hooks".into(),
                proxy: ProxyOptions { endpoint: "http://127.0.0.1:9/hooks".into(), ..Default::default() },
            }],
            ..Default::default()
        };
        Proxies::compile(&cfg).expect("valid")
    }

    fn enabled() -> WebhookConfig {
        WebhookConfig { enabled: true, proxy_name: "hooks".into(), ..Default::default() }
    }

    #[test]
    fn compile_checks_every_option() {
        let p = proxies();
        assert!(Webhooks::compile(&WebhookConfig::default(), &p).unwrap().is_none(), "off by default");
        let w = Webhooks::compile(&enabled(), &p).unwrap().expect("on");
        assert_eq!(w.spec.endpoint, "http://127.0.0.1:9/hooks");
        assert!(w.wants(EventKind::Connect) && w.wants(EventKind::Unsubscribe));
        let only = WebhookConfig { events: vec!["disconnect".into()], ..enabled() };
        let w = Webhooks::compile(&only, &p).unwrap().unwrap();
        assert!(w.wants(EventKind::Disconnect) && !w.wants(EventKind::Connect));
        assert_eq!(w.mask(), 1 << EventKind::Disconnect as u8);

        let key = |c: WebhookConfig| Webhooks::compile(&c, &p).unwrap_err().key;
        assert_eq!(key(WebhookConfig { proxy_name: String::new(), ..enabled() }), "webhooks.proxy_name");
        assert_eq!(key(WebhookConfig { proxy_name: "nope".into(), ..enabled() }), "webhooks.proxy_name");
        let bad_event = WebhookConfig { events: vec!["connect".into(), "publish".into()], ..enabled() };
        let err = Webhooks::compile(&bad_event, &p).unwrap_err();
        assert_eq!(err.key, "webhooks.events[1]");
        assert!(err.problem.contains("\"publish\""), "{err}");
        assert_eq!(key(WebhookConfig { events: vec![], ..enabled() }), "webhooks.events");
        assert_eq!(key(WebhookConfig { max_batch: 0, ..enabled() }), "webhooks.max_batch");
        assert_eq!(key(WebhookConfig { max_queue: 0, ..enabled() }), "webhooks.max_queue");
        let zero = WebhookConfig { retry_backoff_min: std::time::Duration::ZERO, ..enabled() };
        assert_eq!(key(zero), "webhooks.retry_backoff_min");
        let inverted = WebhookConfig { retry_backoff_max: std::time::Duration::from_millis(1), ..enabled() };
        assert_eq!(key(inverted), "webhooks.retry_backoff_max");
    }

    struct Count(std::sync::atomic::AtomicUsize);

    impl LifecycleSink for Count {
        fn push(&self, _: LifecycleEvent) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn hooks_give_a_sink_only_for_switched_on_events() {
        let off = Hooks::new(None);
        assert!(off.install(Arc::new(Count(Default::default()))));
        assert!(off.sink(EventKind::Connect).is_none(), "off: no event is built even with a sink");
        let only = WebhookConfig { events: vec!["disconnect".into()], ..enabled() };
        let on = Hooks::new(Webhooks::compile(&only, &proxies()).unwrap());
        assert!(on.sink(EventKind::Disconnect).is_none(), "no sink installed yet");
        assert!(on.install(Arc::new(Count(Default::default()))));
        assert!(!on.install(Arc::new(Count(Default::default()))), "installed once");
        assert!(on.sink(EventKind::Disconnect).is_some());
        assert!(on.sink(EventKind::Connect).is_none());
    }

    /// Counts the reconfigurations it is told of.
    struct Told(std::sync::atomic::AtomicUsize);

    impl LifecycleSink for Told {
        fn push(&self, _: LifecycleEvent) {}

        fn reconfigure(&self, _: &Webhooks) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_replaced_section_switches_events_and_tells_the_sink() {
        let only = |e: &str| Webhooks::compile(&WebhookConfig { events: vec![e.into()], ..enabled() }, &proxies());
        let hooks = Hooks::new(only("disconnect").unwrap());
        let told = Arc::new(Told(Default::default()));
        assert!(hooks.install(told.clone()));
        hooks.replace(only("connect").unwrap());
        assert!(hooks.sink(EventKind::Connect).is_some() && hooks.sink(EventKind::Disconnect).is_none());
        assert_eq!(told.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        hooks.replace(None);
        assert!(hooks.sink(EventKind::Connect).is_none() && hooks.config().is_none(), "off: nothing reported");
        assert_eq!(
            told.0.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "off keeps the sink as it is (its queue drains)"
        );
    }

    #[test]
    fn batch_body_has_every_field() {
        let client = Uuid::from_u128(7);
        let event = |kind, channel: Option<&str>, code, reason: &'static str| LifecycleEvent {
            kind,
            client,
            user: Arc::from("u1"),
            channel: channel.map(Arc::from),
            code,
            reason: Cow::Borrowed(reason),
            time_ms: 1_700_000_000_123,
            transport: "websocket",
        };
        let body = encode_batch(
            "node-1",
            &[
                (1, event(EventKind::Connect, None, 0, "")),
                (2, event(EventKind::Subscribe, Some("chat:a"), 0, "")),
                (3, event(EventKind::Unsubscribe, Some("chat:a"), 3000, "connection closed")),
                (4, event(EventKind::Disconnect, None, 3000, "connection closed")),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["node"], "node-1");
        let events = v["events"].as_array().unwrap();
        assert_eq!(
            events[0],
            serde_json::json!({"event": "connect", "seq": 1, "time": 1_700_000_000_123i64,
                "client": client.to_string(), "user": "u1", "transport": "websocket"})
        );
        assert_eq!(events[1]["channel"], "chat:a");
        assert!(events[1].get("code").is_none());
        assert_eq!(events[2]["code"], 3000);
        assert_eq!(events[3]["event"], "disconnect");
        assert_eq!(events[3]["reason"], "connection closed");
        assert!(events[3].get("channel").is_none());
    }
}
