//! Cluster surveys: one node asks every live node a question through the engine's control
//! channel and merges the answers, for the server API calls that must see the whole cluster
//! (`channels`, `connections`).
//!
//! The asker answers for itself locally, sends [`crate::cluster::Command::Survey`] to every
//! node, and waits for one [`crate::cluster::Command::SurveyReply`] from each node its registry
//! lists as live, or for a deadline the caller gives (the hub has no timers). A node that did
//! not answer in time is named in the result, never waited for again. Answers are bounded: a
//! node lists at most the `limit` the asker names (and never more than [`MAX_ENTRIES`]).
//!
//! Answering happens in the engine's delivery task, which must not call back into the engine:
//! replies wait in a bounded outbox that [`crate::node::Node::run_survey_replies`] sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Hub;

/// The most entries (channels, connections) one node puts in an answer, whatever the asker
/// asks: an answer travels as one engine message.
pub const MAX_ENTRIES: usize = 100_000;
/// Replies waiting to be sent; past this a question is not answered (the asker counts that
/// node as missing) and `herald_survey_replies_dropped_total` grows.
pub const MAX_OUTBOX: usize = 256;

/// A question for every node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Query {
    /// Channels with local subscribers whose names match a glob (empty: all).
    Channels { pattern: String, limit: usize },
    /// The connections of one user.
    Connections { user: String, limit: usize },
}

impl Query {
    /// The metric label.
    pub fn op(&self) -> &'static str {
        match self {
            Query::Channels { .. } => "channels",
            Query::Connections { .. } => "connections",
        }
    }
}

/// One connection as a node describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ConnectionEntry {
    pub client: String,
    pub channels: Vec<String>,
    pub traced: bool,
}

/// One node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Answer {
    /// Channel → local subscribers; `truncated` when the node had more than the limit.
    Channels {
        channels: BTreeMap<String, usize>,
        truncated: bool,
    },
    Connections {
        connections: Vec<ConnectionEntry>,
        truncated: bool,
    },
}

/// Computes this node's answer from its hub.
pub fn answer(hub: &Hub, query: &Query) -> Answer {
    match query {
        Query::Channels { pattern, limit } => {
            let limit = (*limit).min(MAX_ENTRIES);
            // An invalid pattern was refused by the asker; a node that cannot compile it
            // answers nothing rather than everything.
            let matcher = if pattern.is_empty() { None } else { crate::node::glob(pattern) };
            if !pattern.is_empty() && matcher.is_none() {
                return Answer::Channels { channels: BTreeMap::new(), truncated: false };
            }
            let mut channels = BTreeMap::new();
            let mut truncated = false;
            for (name, n) in hub.channels() {
                if matcher.as_ref().is_some_and(|m| !m.is_match(&name)) {
                    continue;
                }
                if channels.len() == limit {
                    truncated = true;
                    break;
                }
                channels.insert(name, n);
            }
            Answer::Channels { channels, truncated }
        }
        Query::Connections { user, limit } => {
            let links = hub.user_links(user);
            let limit = (*limit).min(MAX_ENTRIES);
            let truncated = links.len() > limit;
            let connections = links
                .iter()
                .take(limit)
                .map(|link| ConnectionEntry {
                    client: link.id().to_string(),
                    channels: hub.channels_of(link),
                    traced: link.timers().is_traced(),
                })
                .collect();
            Answer::Connections { connections, truncated }
        }
    }
}

/// One node's answer with the node's uid and name.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeAnswer {
    pub uid: String,
    pub name: String,
    pub answer: Answer,
}

/// What a survey gathered: the answers (the asker's first) and the names of the live nodes that
/// did not answer before the deadline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub answers: Vec<NodeAnswer>,
    pub missing: Vec<String>,
}

/// Merged `channels`: subscriber counts summed over nodes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MergedChannels {
    pub channels: BTreeMap<String, usize>,
    /// Some node listed only part of its channels, or the merged list was cut at the limit.
    pub truncated: bool,
    pub missing: Vec<String>,
}

/// Merged `connections`: every node's connections of the user, with the node's name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MergedConnections {
    pub connections: Vec<(String, ConnectionEntry)>,
    pub truncated: bool,
    pub missing: Vec<String>,
}

impl Outcome {
    /// Sums channel counts over the answers, keeping at most `limit` channels (the first by
    /// name, so the cut does not depend on which node answered first).
    pub fn channels(self, limit: usize) -> MergedChannels {
        let mut merged = MergedChannels { missing: self.missing, ..Default::default() };
        for a in self.answers {
            if let Answer::Channels { channels, truncated } = a.answer {
                merged.truncated |= truncated;
                for (name, n) in channels {
                    *merged.channels.entry(name).or_default() += n;
                }
            }
        }
        if merged.channels.len() > limit {
            merged.truncated = true;
            while merged.channels.len() > limit {
                merged.channels.pop_last();
            }
        }
        merged
    }

    /// Lists every node's connections, at most `limit` in all.
    pub fn connections(self, limit: usize) -> MergedConnections {
        let mut merged = MergedConnections { missing: self.missing, ..Default::default() };
        for a in self.answers {
            if let Answer::Connections { connections, truncated } = a.answer {
                merged.truncated |= truncated;
                for c in connections {
                    if merged.connections.len() == limit {
                        merged.truncated = true;
                        break;
                    }
                    merged.connections.push((a.name.clone(), c));
                }
            }
        }
        merged
    }
}

struct Pending {
    op: &'static str,
    /// Nodes still expected: uid → name.
    expecting: BTreeMap<String, String>,
    answers: Vec<NodeAnswer>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Outbox {
    replies: VecDeque<(String, Bytes)>,
    waker: Option<Waker>,
}

/// The surveys a node has asked and waits for, and the replies it owes others.
#[derive(Default)]
pub struct Surveys {
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    outbox: Mutex<Outbox>,
}

impl Surveys {
    /// Starts waiting for answers from `expecting` (uid, name); returns the survey's id.
    pub fn start(&self, op: &'static str, expecting: impl IntoIterator<Item = (String, String)>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let pending = Pending { op, expecting: expecting.into_iter().collect(), answers: Vec::new(), waker: None };
        self.pending.lock().expect("surveys").insert(id, pending);
        id
    }

    /// An answer from node `from` to survey `id`; false (ignored) when the survey is over or
    /// the node was not expected (it joined after the question, or answered twice).
    pub fn record(&self, id: u64, from: &str, answer: Answer) -> bool {
        let mut pending = self.pending.lock().expect("surveys");
        let Some(p) = pending.get_mut(&id) else { return false };
        let Some(name) = p.expecting.remove(from) else { return false };
        crate::metrics::survey_answer(p.op);
        p.answers.push(NodeAnswer { uid: from.to_owned(), name, answer });
        if p.expecting.is_empty()
            && let Some(w) = p.waker.take()
        {
            w.wake();
        }
        true
    }

    /// Ready when every expected node answered (or the survey is unknown).
    pub fn poll_complete(&self, id: u64, cx: &mut Context<'_>) -> Poll<()> {
        let mut pending = self.pending.lock().expect("surveys");
        match pending.get_mut(&id) {
            Some(p) if !p.expecting.is_empty() => {
                p.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }

    /// Ends survey `id`: its answers, and the nodes that did not answer (counted as timeouts).
    pub fn finish(&self, id: u64) -> Outcome {
        let Some(p) = self.pending.lock().expect("surveys").remove(&id) else { return Outcome::default() };
        if !p.expecting.is_empty() {
            crate::metrics::survey_missing(p.op, p.expecting.len());
        }
        Outcome { answers: p.answers, missing: p.expecting.into_values().collect() }
    }

    /// Surveys still waiting (for tests and the drop guard).
    pub fn pending(&self) -> usize {
        self.pending.lock().expect("surveys").len()
    }

    /// Queues a reply for node `to`; false when the outbox is full (the reply is dropped).
    pub fn queue_reply(&self, to: String, payload: Bytes) -> bool {
        let mut outbox = self.outbox.lock().expect("survey outbox");
        if outbox.replies.len() >= MAX_OUTBOX {
            crate::metrics::survey_reply_dropped();
            return false;
        }
        outbox.replies.push_back((to, payload));
        if let Some(w) = outbox.waker.take() {
            w.wake();
        }
        true
    }

    /// The next reply to send, waiting for one.
    pub fn next_reply(&self) -> impl Future<Output = (String, Bytes)> + '_ {
        poll_fn(move |cx| {
            let mut outbox = self.outbox.lock().expect("survey outbox");
            match outbox.replies.pop_front() {
                Some(reply) => Poll::Ready(reply),
                None => {
                    outbox.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
    }
}

/// Ends a survey when its asker stops waiting, however it stops (answered, deadline, or the
/// API request dropped), so no pending entry outlives its caller.
pub(crate) struct Waiting<'a> {
    pub(crate) surveys: &'a Surveys,
    pub(crate) id: u64,
}

impl Waiting<'_> {
    pub(crate) fn finish(self) -> Outcome {
        let outcome = self.surveys.finish(self.id);
        std::mem::forget(self);
        outcome
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.surveys.finish(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn channels(list: &[(&str, usize)], truncated: bool) -> Answer {
        Answer::Channels { channels: list.iter().map(|(n, c)| (n.to_string(), *c)).collect(), truncated }
    }

    fn node(uid: &str) -> (String, String) {
        (uid.to_owned(), format!("node-{uid}"))
    }

    #[test]
    fn completes_when_every_expected_node_answered() {
        let s = Surveys::default();
        let id = s.start("channels", [node("b"), node("c")]);
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(s.poll_complete(id, &mut cx).is_pending());
        assert!(s.record(id, "b", channels(&[("x", 1)], false)));
        assert!(!flag.0.load(Ordering::SeqCst), "one node still expected");
        assert!(!s.record(id, "b", channels(&[("x", 5)], false)), "a second answer is ignored");
        assert!(!s.record(id, "z", channels(&[("x", 5)], false)), "an unexpected node is ignored");
        assert!(!s.record(id + 1, "c", channels(&[("x", 5)], false)), "an unknown survey is ignored");
        assert!(s.record(id, "c", channels(&[("x", 2), ("y", 1)], false)));
        assert!(flag.0.load(Ordering::SeqCst), "the last answer wakes the asker");
        assert!(s.poll_complete(id, &mut cx).is_ready());
        let out = s.finish(id);
        assert!(out.missing.is_empty());
        assert_eq!(out.answers.len(), 2);
        assert_eq!(s.pending(), 0);
        assert!(!s.record(id, "c", channels(&[], false)), "a late answer after finish is ignored");
    }

    #[test]
    fn a_deadline_names_the_nodes_that_did_not_answer() {
        let s = Surveys::default();
        let id = s.start("connections", [node("b"), node("c"), node("d")]);
        s.record(id, "c", Answer::Connections { connections: vec![], truncated: false });
        let out = s.finish(id);
        assert_eq!(out.missing, ["node-b", "node-d"]);
        assert_eq!(out.answers.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(), ["node-c"]);
    }

    #[test]
    fn channel_counts_are_summed_and_cut_at_the_limit() {
        let out = Outcome {
            answers: vec![
                NodeAnswer { uid: "a".into(), name: "A".into(), answer: channels(&[("a", 1), ("b", 2)], false) },
                NodeAnswer { uid: "b".into(), name: "B".into(), answer: channels(&[("b", 3), ("c", 4)], false) },
            ],
            missing: vec!["C".into()],
        };
        let all = out.clone().channels(10);
        assert_eq!(all.channels, BTreeMap::from([("a".into(), 1), ("b".into(), 5), ("c".into(), 4)]));
        assert!(!all.truncated);
        assert_eq!(all.missing, ["C"]);
        let cut = out.channels(2);
        assert_eq!(cut.channels, BTreeMap::from([("a".into(), 1), ("b".into(), 5)]));
        assert!(cut.truncated);
    }

    #[test]
    fn a_truncated_node_answer_marks_the_merge_truncated() {
        let out = Outcome {
            answers: vec![NodeAnswer { uid: "a".into(), name: "A".into(), answer: channels(&[("a", 1)], true) }],
            missing: vec![],
        };
        assert!(out.channels(10).truncated);
    }

    #[test]
    fn connections_carry_their_node_and_are_bounded() {
        let conn = |c: &str| ConnectionEntry { client: c.into(), channels: vec!["ch".into()], traced: false };
        let out = Outcome {
            answers: vec![
                NodeAnswer {
                    uid: "a".into(),
                    name: "A".into(),
                    answer: Answer::Connections { connections: vec![conn("1")], truncated: false },
                },
                NodeAnswer {
                    uid: "c".into(),
                    name: "C".into(),
                    answer: Answer::Connections { connections: vec![conn("2"), conn("3")], truncated: false },
                },
            ],
            missing: vec![],
        };
        let all = out.clone().connections(10);
        let listed: Vec<(&str, &str)> = all.connections.iter().map(|(n, c)| (n.as_str(), c.client.as_str())).collect();
        assert_eq!(listed, [("A", "1"), ("C", "2"), ("C", "3")]);
        assert!(!all.truncated);
        let cut = out.connections(2);
        assert_eq!(cut.connections.len(), 2);
        assert!(cut.truncated);
    }

    #[test]
    fn the_reply_outbox_is_bounded_and_wakes_its_sender() {
        let s = Surveys::default();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut next = Box::pin(s.next_reply());
        assert!(next.as_mut().poll(&mut cx).is_pending());
        assert!(s.queue_reply("a".into(), Bytes::from_static(b"1")));
        assert!(flag.0.load(Ordering::SeqCst));
        assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(("a".to_owned(), Bytes::from_static(b"1"))));
        for i in 0..MAX_OUTBOX {
            assert!(s.queue_reply(i.to_string(), Bytes::new()));
        }
        assert!(!s.queue_reply("over".into(), Bytes::new()), "full: dropped");
    }

    #[test]
    fn a_dropped_waiter_ends_its_survey() {
        let s = Surveys::default();
        let id = s.start("channels", [node("b")]);
        drop(Waiting { surveys: &s, id });
        assert_eq!(s.pending(), 0);
        let id = s.start("channels", [node("b")]);
        let out = Waiting { surveys: &s, id }.finish();
        assert_eq!(out.missing, ["node-b"]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn queries_and_answers_round_trip_as_json() {
        let q = Query::Channels { pattern: "chat:*".into(), limit: 5 };
        assert_eq!(serde_json::from_str::<Query>(&serde_json::to_string(&q).unwrap()).unwrap(), q);
        let a = Answer::Connections {
            connections: vec![ConnectionEntry { client: "c".into(), channels: vec!["x".into()], traced: true }],
            truncated: false,
        };
        assert_eq!(serde_json::from_str::<Answer>(&serde_json::to_string(&a).unwrap()).unwrap(), a);
    }
}
