//! Lifecycle events as sessions report them, without sockets: a recording sink, a connect
//! decided by a scripted proxy (its `channels` become server-side subscriptions), a server
//! unsubscribe and a close with a code. A refused connect reports nothing.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use herald_proto::codes::*;
use herald_proto::{Command, ConnectRequest, DisconnectReason};

use super::Session;
use super::tests::Recorder;
use crate::broker::{BoxFuture, MemoryBroker, MemoryPresence};
use crate::clock::ManualClock;
use crate::config::{HubConfig, NamedProxy, ProxyOptions};
use crate::conn::ConnectionInfo;
use crate::link::Control;
use crate::node::{Node, NodeIdentity};
use crate::proxy::{ProxyFailure, ProxyPort, ProxyRequest};
use crate::webhook::{EventKind, LifecycleEvent, LifecycleSink, WebhookConfig};

/// Lets `ann` in with channel `c1`, or refuses `deny`.
struct Connect;

impl ProxyPort for Connect {
    fn call<'a>(&'a self, request: ProxyRequest<'a>) -> BoxFuture<'a, Result<bytes::Bytes, ProxyFailure>> {
        let deny = String::from_utf8_lossy(&request.body).contains("deny");
        let answer: &'static str = if deny {
            r#"{"error":{"code":1001,"message":"no"}}"#
        } else {
            r#"{"result":{"user":"ann","channels":["c1"]}}"#
        };
        Box::pin(std::future::ready(Ok(bytes::Bytes::from_static(answer.as_bytes()))))
    }
}

#[derive(Default)]
struct Sink(Mutex<Vec<LifecycleEvent>>);

impl LifecycleSink for Sink {
    fn push(&self, event: LifecycleEvent) {
        self.0.lock().unwrap().push(event);
    }
}

fn node() -> (Arc<Node>, Arc<Sink>) {
    let mut cfg = HubConfig::default();
    let endpoint = |path: &str| ProxyOptions { endpoint: format!("http://127.0.0.1:9{path}"), ..Default::default() };
    cfg.client.proxy.connect.enabled = true;
    cfg.client.proxy.connect.proxy = endpoint("/connect");
    cfg.proxies = vec![NamedProxy { name: "hooks".into(), proxy: endpoint("/hooks") }];
    cfg.webhooks = WebhookConfig { enabled: true, proxy_name: "hooks".into(), ..Default::default() };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let broker = Arc::new(MemoryBroker::new(clock.clone()));
    let presence = Arc::new(MemoryPresence::default());
    let node = Node::with_parts(cfg, identity, clock, broker, presence, Some(Arc::new(Connect))).expect("valid");
    let sink = Arc::new(Sink::default());
    assert!(node.hooks().install(sink.clone()));
    (node, sink)
}

fn connect(data: &str) -> Command {
    let req = ConnectRequest { data: bytes::Bytes::from(data.to_owned()), ..Default::default() };
    Command { id: 1, connect: Some(req), ..Default::default() }
}

#[test]
fn a_session_reports_its_lifecycle_in_order() {
    let (node, sink) = node();
    let mut session = Session::new(Arc::new(Recorder::new()), ConnectionInfo::default());
    session.handle_command(&node, &connect(r#"{"a":1}"#)).now_or_never().expect("ready");
    assert!(session.is_connected());
    let unsubscribe = Control::Unsubscribe { channel: "c1".into(), code: UNSUBSCRIBE_SERVER };
    session.handle_control(&node, unsubscribe).now_or_never().expect("ready");
    let bye = DisconnectReason { code: 4100, reason: Cow::Borrowed("custom") };
    session.close_with(&node, bye).now_or_never().expect("ready");

    let events = sink.0.lock().unwrap().clone();
    let seen: Vec<(EventKind, Option<&str>, u32, &str)> =
        events.iter().map(|e| (e.kind, e.channel.as_deref(), e.code, &*e.reason)).collect();
    assert_eq!(
        seen,
        vec![
            (EventKind::Connect, None, 0, ""),
            (EventKind::Subscribe, Some("c1"), 0, ""),
            (EventKind::Unsubscribe, Some("c1"), 2000, "server unsubscribe"),
            (EventKind::Disconnect, None, 4100, "custom"),
        ]
    );
    for e in &events {
        assert_eq!((&*e.user, e.client, e.time_ms), ("ann", uuid::Uuid::from_u128(7), 1_700_000_000_000));
        assert_eq!(e.transport, ConnectionInfo::default().transport().name());
    }
}

#[test]
fn a_refused_connect_reports_nothing() {
    let (node, sink) = node();
    let mut session = Session::new(Arc::new(Recorder::new()), ConnectionInfo::default());
    session.handle_command(&node, &connect(r#"{"deny":1}"#)).now_or_never().expect("ready");
    assert!(!session.is_connected());
    session.close(&node).now_or_never().expect("ready");
    assert!(sink.0.lock().unwrap().is_empty());
}
