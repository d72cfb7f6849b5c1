//! The proxy paths of the session without sockets: a scripted [`ProxyPort`] answers, a manual
//! clock drives expiry. Covers what the integration tests cannot time cheaply: the refresh
//! proxy's retry after an outage (one minute later) and the expiry it then decides.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::FutureExt;
use herald_proto::codes::*;
use herald_proto::{Command, ConnectRequest, DisconnectReason};
use serde_json::Value;

use super::tests::Recorder;
use super::{Flow, Session};
use crate::broker::{BoxFuture, MemoryBroker, MemoryPresence};
use crate::clock::ManualClock;
use crate::config::{HubConfig, ProxyOptions};
use crate::conn::ConnectionInfo;
use crate::link::Control;
use crate::node::{Node, NodeIdentity};
use crate::proxy::{ProxyFailure, ProxyPort, ProxyRequest};

const NOW: i64 = 1_700_000_000;

/// Answers calls from a script, in order, and records (kind, body) of each.
#[derive(Default)]
struct Script {
    answers: Mutex<VecDeque<Result<&'static str, ProxyFailure>>>,
    seen: Mutex<Vec<(&'static str, Value)>>,
}

impl ProxyPort for Script {
    fn call<'a>(&'a self, request: ProxyRequest<'a>) -> BoxFuture<'a, Result<Bytes, ProxyFailure>> {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        self.seen.lock().unwrap().push((request.kind.name(), body));
        let answer = self.answers.lock().unwrap().pop_front().expect("a scripted answer");
        Box::pin(std::future::ready(answer.map(|s: &'static str| Bytes::from_static(s.as_bytes()))))
    }
}

fn setup(script: Arc<Script>) -> (Arc<Node>, Arc<ManualClock>) {
    let mut cfg = HubConfig::default();
    let endpoint = |path: &str| ProxyOptions { endpoint: format!("http://127.0.0.1:9{path}"), ..Default::default() };
    cfg.client.proxy.connect.enabled = true;
    cfg.client.proxy.connect.proxy = endpoint("/connect");
    cfg.client.proxy.refresh.enabled = true;
    cfg.client.proxy.refresh.proxy = endpoint("/refresh");
    cfg.client.proxy.refresh.proxy.include_connection_meta = true;
    let clock = Arc::new(ManualClock::new(NOW * 1000));
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let broker = Arc::new(MemoryBroker::new(clock.clone()));
    let node =
        Node::with_parts(cfg, identity, clock.clone(), broker, Arc::new(MemoryPresence::default()), Some(script))
            .expect("valid config");
    (node, clock)
}

fn closes(link: &Recorder) -> Vec<DisconnectReason> {
    link.closes.lock().unwrap().clone()
}

#[test]
fn the_refresh_proxy_extends_retries_after_an_outage_and_ends_on_expired() {
    let script = Arc::new(Script::default());
    let (node, clock) = setup(script.clone());
    let connect = r#"{"result":{"user":"ann","expire_at":1700000010,"meta":{"plan":"gold"}}}"#;
    script.answers.lock().unwrap().extend([
        Ok(connect),
        Err(ProxyFailure::Timeout),
        Ok(r#"{"result":{"expire_at":1700000200,"info":{"v":2}}}"#),
        Ok(r#"{"result":{"expired":true}}"#),
    ]);
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());
    let cmd = Command { id: 1, connect: Some(ConnectRequest::default()), ..Default::default() };
    assert_eq!(session.handle_command(&node, &cmd).now_or_never().expect("ready"), Flow::Continue);
    assert!(session.is_connected());
    assert_eq!(session.user(), "ann");
    assert!(!link.sent("\"expires\""), "the client is not asked to refresh: {:?}", link.frames.lock().unwrap());
    let deadline = link.timers.session_deadline();
    assert_eq!(deadline, node.tick_at(NOW + 10), "armed at expire_at, without the client grace period");

    // Expiry with the backend down: kept, asked again a minute later.
    clock.set((NOW + 10) * 1000);
    let flow = session.handle_control(&node, Control::CheckExpiry).now_or_never().expect("ready");
    assert_eq!(flow, Flow::Continue);
    assert!(closes(&link).is_empty());
    assert_eq!(link.timers.session_deadline(), node.tick_at(NOW + 70));
    // The retry extends it; the refresh request carries the user and the connection meta.
    clock.set((NOW + 70) * 1000);
    session.handle_control(&node, Control::CheckExpiry).now_or_never().expect("ready");
    assert!(closes(&link).is_empty());
    assert_eq!(link.timers.session_deadline(), node.tick_at(NOW + 200));
    let seen = script.seen.lock().unwrap().clone();
    assert_eq!(seen[2].0, "refresh");
    assert_eq!(seen[2].1["user"], "ann");
    assert_eq!(seen[2].1["meta"], serde_json::json!({"plan": "gold"}));
    // `expired` ends it.
    clock.set((NOW + 200) * 1000);
    let flow = session.handle_control(&node, Control::CheckExpiry).now_or_never().expect("ready");
    assert_eq!(flow, Flow::Stop);
    assert_eq!(closes(&link), [DISCONNECT_EXPIRED]);
}

#[test]
fn backend_codes_outside_their_ranges_are_a_failed_call() {
    let script = Arc::new(Script::default());
    let (node, _clock) = setup(script.clone());
    script.answers.lock().unwrap().extend([Ok(r#"{"disconnect":{"code":3001,"reason":"x"}}"#)]);
    let link = Arc::new(Recorder::new());
    let mut session = Session::new(link.clone(), ConnectionInfo::default());
    let cmd = Command { id: 1, connect: Some(ConnectRequest::default()), ..Default::default() };
    session.handle_command(&node, &cmd).now_or_never().expect("ready");
    assert!(!session.is_connected());
    assert!(closes(&link).is_empty(), "not passed on as a disconnect");
    assert!(link.sent("\"code\":100"), "error 100 instead");
}
