//! The engine-independent cluster layer: the control messages nodes send each other through
//! [`crate::broker::Broker::publish_control`], the registry of live nodes, and the delivery
//! probe behind `/health`.
//!
//! Format: one JSON object per message, `{"from": "<node uid>", "type": "...", ...}`. JSON,
//! not protobuf: control traffic is a few messages per second per node and stays readable in
//! `redis-cli MONITOR`. Unknown types are ignored, so a newer node can add commands.
//!
//! - Every node announces itself ([`Command::Node`]) every [`HEARTBEAT`]; a node not heard
//!   from for [`NODE_EXPIRY`] is dropped from the registry (what the `info` API lists).
//! - Server-API actions on users (disconnect, unsubscribe, subscribe, refresh) are applied by
//!   the node that got the call to its own connections and sent to every other node, which
//!   applies them to its connections; a node ignores its own echo.
//! - User traces ([`Command::Trace`]) are started and stopped on every node like the user
//!   commands; each node sends the lines of its own traced connections to the others about
//!   once a second ([`Command::TraceLines`], at most [`crate::trace::MAX_OUTBOX`] a time).
//! - The probe: every [`HEARTBEAT`] a node sends [`Command::Probe`] to itself through the
//!   engine. A node whose last probe came back more than [`PROBE_STALE`] ago is not delivering,
//!   and `/health` says so.
//! - Surveys ([`Command::Survey`], [`Command::SurveyReply`]): questions every node answers to
//!   the asker, merged there; the logic is in [`crate::survey`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use herald_proto::StreamPosition;
use serde::{Deserialize, Serialize};

use crate::hub::Hub;
use crate::link::{Control, ServerSubscribe};

/// How often a node announces itself and probes delivery, ms.
pub const HEARTBEAT: i64 = 3_000;
/// A node not heard from for this long is dropped from the registry, ms.
pub const NODE_EXPIRY: i64 = 2 * HEARTBEAT + 1_000;
/// With no probe back for this long the node reports it is not delivering, ms.
pub const PROBE_STALE: i64 = 3 * HEARTBEAT + 1_000;

/// What a node tells the others about itself (and what the `info` API lists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct NodeInfo {
    pub uid: String,
    pub name: String,
    pub version: String,
    pub num_clients: usize,
    pub num_users: usize,
    pub num_channels: usize,
    pub num_subs: usize,
    pub uptime: u64,
    /// Publications handed to the node's subscribers per second (sampled over the last
    /// announcement period).
    pub publications_per_second: u64,
    /// Publications fanned out to this node's subscribers since start.
    pub num_msgs_in: u64,
    /// Pushes queued to this node's clients since start.
    pub num_msgs_out: u64,
    /// Resident memory, bytes (0: unknown).
    pub rss: u64,
}

/// A rate sampled from a growing counter: recomputed when at least a second passed since the
/// last sample, so reads between heartbeats see the last period's rate.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    count: u64,
    at_ms: i64,
    per_second: u64,
}

impl Rate {
    pub fn new(count: u64, now_ms: i64) -> Rate {
        Rate { count, at_ms: now_ms, per_second: 0 }
    }

    /// The rate given the counter's value `count` at `now_ms`.
    pub fn sample(&mut self, count: u64, now_ms: i64) -> u64 {
        let elapsed = now_ms - self.at_ms;
        if elapsed >= 1_000 {
            self.per_second = count.saturating_sub(self.count).saturating_mul(1_000) / elapsed as u64;
            self.count = count;
            self.at_ms = now_ms;
        }
        self.per_second
    }
}

/// A server-side subscription as carried between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RemoteSubscribe {
    pub channel: String,
    pub info: Vec<u8>,
    pub data: Vec<u8>,
    pub recover_since: Option<StreamPosition>,
    pub expire_at: Option<i64>,
    #[serde(rename = "override")]
    pub override_: herald_auth::Override,
}

/// One cluster command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Node(NodeInfo),
    Probe {
        seq: u64,
    },
    Disconnect {
        user: String,
        client: String,
        whitelist: Vec<String>,
        code: u32,
        reason: String,
    },
    Unsubscribe {
        user: String,
        client: String,
        channel: String,
        code: u32,
    },
    Subscribe {
        user: String,
        client: String,
        subscribe: RemoteSubscribe,
    },
    Refresh {
        user: String,
        client: String,
        expired: bool,
        expire_at: Option<i64>,
        info: Option<Vec<u8>>,
    },
    /// Trace `user` until `until` (Unix ms); `until` 0 ends the trace.
    Trace {
        user: String,
        until: i64,
    },
    /// Trace lines of the sender's connections, for the other nodes' consoles; `dropped`
    /// lines did not fit the sender's rate bound.
    TraceLines {
        lines: Vec<crate::trace::TraceLine>,
        dropped: u64,
    },
    /// Survey `id` of the sender: every other node answers it with [`Command::SurveyReply`].
    Survey {
        id: u64,
        query: crate::survey::Query,
    },
    /// The sender's answer to survey `id` of the node it is sent to.
    SurveyReply {
        id: u64,
        answer: crate::survey::Answer,
    },
    /// Commands posted to `/emulation` on the sender for emulation session `session` of node
    /// `node`: the request's `data`, still encoded (JSON or protobuf, as the session speaks),
    /// at most the sender's `emulation.max_request_body_size` (base64 here).
    Emulation {
        node: String,
        session: String,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
}

/// Binary fields as base64 strings: a quarter more than the bytes, where serde's default (a
/// JSON array of numbers) costs up to four times.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD.decode(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// Where a node hands the commands another node forwarded to one of its emulation sessions
/// ([`Command::Emulation`]). The sessions belong to the server's transports, so the server
/// registers this with [`crate::Node::set_emulation_sink`]; called from the engine's delivering
/// task, it must not block.
pub trait EmulationSink: Send + Sync {
    fn deliver(&self, session: &str, data: Bytes);
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    command: Command,
}

/// Encodes a command sent by node `from`.
pub fn encode(from: &str, command: &Command) -> Bytes {
    let env = Envelope { from: from.to_owned(), command: command.clone() };
    Bytes::from(serde_json::to_vec(&env).expect("control messages serialize"))
}

/// Decodes a control message into (sender, command); `None` for anything else.
pub fn decode(payload: &[u8]) -> Option<(String, Command)> {
    let env: Envelope = serde_json::from_slice(payload).ok()?;
    Some((env.from, env.command))
}

#[derive(Debug, Default)]
struct Probe {
    /// Sequence of the last probe sent, and when (ms).
    sent: u64,
    sent_at: i64,
    /// When the newest probe came back (ms), 0 never.
    returned_at: i64,
}

/// The node's view of the cluster: live nodes and the delivery probe. Shared by the node (which
/// sends) and its delivery sink (which receives); holds no engine and no node.
pub struct Cluster {
    uid: String,
    started_at: i64,
    nodes: Mutex<HashMap<String, (NodeInfo, i64)>>,
    probe: Mutex<Probe>,
    surveys: crate::survey::Surveys,
    /// Takes [`Command::Emulation`] for this node's sessions (unset: they are dropped).
    emulation: OnceLock<Arc<dyn EmulationSink>>,
}

impl Cluster {
    pub fn new(uid: String, now_ms: i64) -> Self {
        Cluster {
            uid,
            started_at: now_ms,
            nodes: Mutex::new(HashMap::new()),
            probe: Mutex::new(Probe::default()),
            surveys: crate::survey::Surveys::default(),
            emulation: OnceLock::new(),
        }
    }

    /// The surveys this node waits for and the replies it owes.
    pub fn surveys(&self) -> &crate::survey::Surveys {
        &self.surveys
    }

    /// Registers where forwarded emulation commands go; only the first registration counts.
    pub fn set_emulation_sink(&self, sink: Arc<dyn EmulationSink>) {
        let _ = self.emulation.set(sink);
    }

    /// Whether node `uid` announced itself within [`NODE_EXPIRY`] of `now_ms`.
    pub fn knows(&self, uid: &str, now_ms: i64) -> bool {
        let nodes = self.nodes.lock().expect("cluster nodes");
        nodes.get(uid).is_some_and(|(_, seen)| now_ms - *seen <= NODE_EXPIRY)
    }

    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// Records a node's announcement heard at `now_ms`.
    pub fn node_seen(&self, info: NodeInfo, now_ms: i64) {
        self.nodes.lock().expect("cluster nodes").insert(info.uid.clone(), (info, now_ms));
    }

    /// Live nodes (dropping those not heard from for [`NODE_EXPIRY`]), by name.
    pub fn nodes(&self, now_ms: i64) -> Vec<NodeInfo> {
        let mut nodes = self.nodes.lock().expect("cluster nodes");
        nodes.retain(|_, (_, seen)| now_ms - *seen <= NODE_EXPIRY);
        let mut list: Vec<NodeInfo> = nodes.values().map(|(i, _)| i.clone()).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.uid.cmp(&b.uid)));
        list
    }

    /// The next probe to send at `now_ms`.
    pub fn next_probe(&self, now_ms: i64) -> Command {
        let mut p = self.probe.lock().expect("probe");
        p.sent += 1;
        p.sent_at = now_ms;
        Command::Probe { seq: p.sent }
    }

    /// A probe came back at `now_ms`; returns its round trip in ms when it is the newest one.
    pub fn probe_returned(&self, seq: u64, now_ms: i64) -> Option<i64> {
        let mut p = self.probe.lock().expect("probe");
        if seq != p.sent {
            return None;
        }
        p.returned_at = now_ms;
        Some(now_ms - p.sent_at)
    }

    /// `Err(reason)` when no probe came back for [`PROBE_STALE`] (after a start-up grace of
    /// the same length).
    pub fn delivering(&self, now_ms: i64) -> Result<(), String> {
        let p = self.probe.lock().expect("probe");
        let since = if p.returned_at == 0 { self.started_at } else { p.returned_at };
        if now_ms - since > PROBE_STALE {
            let ago = if p.returned_at == 0 {
                "no probe has come back since start".to_owned()
            } else {
                format!("the last probe came back {} s ago", (now_ms - p.returned_at) / 1000)
            };
            return Err(format!("broker is not delivering: {ago}"));
        }
        Ok(())
    }

    /// Handles a control message: registry and probe updates, or a command on this node's
    /// connections. Never calls into the engine or the node.
    pub fn handle(&self, hub: &Hub, payload: &[u8], now_ms: i64) {
        let Some((from, command)) = decode(payload) else {
            crate::metrics::control_received("invalid");
            return;
        };
        let own = from == self.uid;
        match command {
            Command::Node(info) => {
                crate::metrics::control_received("node");
                self.node_seen(info, now_ms)
            }
            Command::TraceLines { lines, dropped } if !own => {
                crate::metrics::control_received("trace_lines");
                if dropped > 0 {
                    tracing::debug!(from, dropped, "trace lines dropped by the sending node");
                }
                hub.tracer().record_remote(lines);
            }
            Command::TraceLines { .. } => {}
            Command::Probe { seq } => {
                if own && let Some(rtt) = self.probe_returned(seq, now_ms) {
                    crate::metrics::probe_latency(rtt as f64 / 1000.0);
                }
            }
            // The asker answered for itself; replies are addressed to the asker only.
            Command::Survey { .. } | Command::SurveyReply { .. } if own => {}
            Command::Survey { id, query } => {
                crate::metrics::control_received("survey");
                let answer = crate::survey::answer(hub, &query);
                self.surveys.queue_reply(from, encode(&self.uid, &Command::SurveyReply { id, answer }));
            }
            Command::SurveyReply { id, answer } => {
                crate::metrics::control_received("survey_reply");
                self.surveys.record(id, &from, answer);
            }
            Command::Emulation { node, session, data } if node == self.uid => {
                crate::metrics::control_received("emulation");
                match self.emulation.get() {
                    Some(sink) => sink.deliver(&session, Bytes::from(data)),
                    None => tracing::debug!(from, "emulation commands dropped: no sink registered"),
                }
            }
            // Sent to another node (an engine that delivers to every node).
            Command::Emulation { .. } => {}
            // The sender applied its command to its own connections already.
            _ if own => {}
            command => {
                crate::metrics::control_received("command");
                apply(hub, command);
            }
        }
    }
}

/// Applies a user command to this node's connections.
pub(crate) fn apply(hub: &Hub, command: Command) {
    let targets = |user: &str, client: &str| {
        let mut links = hub.user_links(user);
        if !client.is_empty() {
            links.retain(|l| l.id().to_string() == client);
        }
        links
    };
    match command {
        Command::Disconnect { user, client, whitelist, code, reason } => {
            for link in targets(&user, &client) {
                if !whitelist.contains(&link.id().to_string()) {
                    link.close(herald_proto::DisconnectReason { code, reason: reason.clone().into() });
                }
            }
        }
        Command::Unsubscribe { user, client, channel, code } => {
            let code = unsubscribe_code(code);
            for link in targets(&user, &client) {
                link.control(Control::Unsubscribe { channel: channel.clone(), code });
            }
        }
        Command::Subscribe { user, client, subscribe } => {
            let sub = ServerSubscribe {
                channel: subscribe.channel,
                info: subscribe.info.into(),
                data: subscribe.data.into(),
                recover_since: subscribe.recover_since,
                expire_at: subscribe.expire_at,
                override_: subscribe.override_,
            };
            for link in targets(&user, &client) {
                link.control(Control::Subscribe(Box::new(sub.clone())));
            }
        }
        Command::Refresh { user, client, expired, expire_at, info } => {
            let info: Option<Bytes> = info.map(Bytes::from);
            for link in targets(&user, &client) {
                link.control(Control::Refresh { expired, expire_at, info: info.clone() });
            }
        }
        Command::Trace { user, until } => {
            if until > 0 {
                hub.trace_start(&user, until);
            } else {
                hub.trace_stop(&user, "stopped");
            }
        }
        Command::Node(_)
        | Command::Probe { .. }
        | Command::TraceLines { .. }
        | Command::Survey { .. }
        | Command::SurveyReply { .. }
        | Command::Emulation { .. } => {}
    }
}

/// The unsubscribe code named in a command, as one of the protocol's constants (their reasons
/// are static strings).
fn unsubscribe_code(code: u32) -> herald_proto::UnsubscribeCode {
    use herald_proto::codes::*;
    [UNSUBSCRIBE_SERVER, UNSUBSCRIBE_INSUFFICIENT, UNSUBSCRIBE_EXPIRED]
        .into_iter()
        .find(|c| c.code == code)
        .unwrap_or(UNSUBSCRIBE_SERVER)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn rate_is_sampled_over_at_least_a_second() {
        let mut r = Rate::new(100, 0);
        assert_eq!(r.sample(150, 500), 0, "too early: no sample yet");
        assert_eq!(r.sample(400, 3_000), 100, "300 in 3 s");
        assert_eq!(r.sample(401, 3_400), 100, "kept between samples");
        assert_eq!(r.sample(401, 5_000), 0, "idle");
    }

    #[test]
    fn control_messages_round_trip_and_garbage_is_refused() {
        let cmd = Command::Disconnect {
            user: "u".into(),
            client: String::new(),
            whitelist: vec!["c1".into()],
            code: 3001,
            reason: "bye".into(),
        };
        let bytes = encode("node-a", &cmd);
        assert_eq!(decode(&bytes), Some(("node-a".to_owned(), cmd)));
        assert!(std::str::from_utf8(&bytes).unwrap().contains("\"type\":\"disconnect\""));
        assert_eq!(decode(b"not json"), None);
        assert_eq!(decode(br#"{"from":"x","type":"from_the_future"}"#), None);
    }

    #[test]
    fn registry_expires_silent_nodes() {
        let c = Cluster::new("a".into(), 0);
        c.node_seen(NodeInfo { uid: "a".into(), name: "A".into(), ..Default::default() }, 0);
        c.node_seen(NodeInfo { uid: "b".into(), name: "B".into(), ..Default::default() }, 3_000);
        assert_eq!(c.nodes(5_000).len(), 2);
        let left = c.nodes(NODE_EXPIRY + 1);
        assert_eq!(left.iter().map(|n| n.uid.as_str()).collect::<Vec<_>>(), ["b"]);
        assert!(c.nodes(3_000 + NODE_EXPIRY + 1).is_empty());
    }

    #[test]
    fn a_survey_from_another_node_is_answered_to_it_and_replies_reach_the_asker() {
        let hub = Hub::new(16, std::sync::Arc::new(crate::clock::ManualClock::new(0)));
        let c = Cluster::new("a".into(), 0);
        let query = crate::survey::Query::Channels { pattern: String::new(), limit: 10 };
        // Its own survey echoed back is not answered (the asker answers for itself).
        c.handle(&hub, &encode("a", &Command::Survey { id: 1, query: query.clone() }), 0);
        c.handle(&hub, &encode("b", &Command::Survey { id: 7, query }), 0);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut next = std::pin::pin!(c.surveys().next_reply());
        let std::task::Poll::Ready((to, payload)) = next.as_mut().poll(&mut cx) else { panic!("no reply queued") };
        assert_eq!(to, "b");
        let answer = crate::survey::Answer::Channels { channels: Default::default(), truncated: false };
        assert_eq!(decode(&payload), Some(("a".to_owned(), Command::SurveyReply { id: 7, answer: answer.clone() })));
        assert!(std::pin::pin!(c.surveys().next_reply()).poll(&mut cx).is_pending(), "one reply only");

        // A reply to this node's survey is recorded.
        let id = c.surveys().start("channels", [("b".to_owned(), "B".to_owned())]);
        c.handle(&hub, &encode("b", &Command::SurveyReply { id, answer }), 0);
        let out = c.surveys().finish(id);
        assert!(out.missing.is_empty());
        assert_eq!(out.answers[0].name, "B");
    }

    #[test]
    fn probe_reports_not_delivering_until_a_probe_returns() {
        let c = Cluster::new("a".into(), 0);
        assert!(c.delivering(PROBE_STALE).is_ok(), "grace after start");
        let err = c.delivering(PROBE_STALE + 1).unwrap_err();
        assert!(err.contains("no probe has come back"), "{err}");
        let Command::Probe { seq } = c.next_probe(20_000) else { panic!() };
        // A stale probe does not count; the newest one does.
        assert_eq!(c.probe_returned(seq + 1, 20_010), None);
        assert_eq!(c.probe_returned(seq, 20_012), Some(12));
        assert!(c.delivering(20_012 + PROBE_STALE).is_ok());
        let err = c.delivering(20_012 + PROBE_STALE + 2_000).unwrap_err();
        assert!(err.contains("last probe came back 12 s ago"), "{err}");
    }

    #[test]
    fn emulation_commands_reach_the_sink_of_the_named_node_only() {
        #[derive(Default)]
        struct Sink(Mutex<Vec<(String, Bytes)>>);
        impl EmulationSink for Sink {
            fn deliver(&self, session: &str, data: Bytes) {
                self.0.lock().unwrap().push((session.to_owned(), data));
            }
        }
        let cmd = Command::Emulation { node: "b".into(), session: "s1".into(), data: vec![0, 159, b'{'] };
        let bytes = encode("a", &cmd);
        assert!(std::str::from_utf8(&bytes).unwrap().contains(r#""data":"AJ97""#), "base64, not numbers");
        assert_eq!(decode(&bytes), Some(("a".to_owned(), cmd)));
        assert_eq!(decode(br#"{"from":"a","type":"emulation","node":"b","session":"s","data":"!!"}"#), None);

        let hub = Hub::new(16, std::sync::Arc::new(crate::clock::ManualClock::new(0)));
        let sink = Arc::new(Sink::default());
        let on_b = Cluster::new("b".into(), 0);
        on_b.set_emulation_sink(sink.clone());
        on_b.handle(&hub, &bytes, 0);
        let on_c = Cluster::new("c".into(), 0);
        on_c.set_emulation_sink(sink.clone());
        on_c.handle(&hub, &bytes, 0);
        assert_eq!(*sink.0.lock().unwrap(), [("s1".to_owned(), Bytes::from_static(&[0, 159, b'{']))]);
    }

    #[test]
    fn a_node_is_known_until_it_expires() {
        let c = Cluster::new("a".into(), 0);
        c.node_seen(NodeInfo { uid: "b".into(), ..Default::default() }, 1_000);
        assert!(c.knows("b", 1_000 + NODE_EXPIRY));
        assert!(!c.knows("b", 1_001 + NODE_EXPIRY));
        assert!(!c.knows("z", 0));
    }
}
