//! Per-user tracing ("dyed" logs): which users are traced and until when, and the bounded
//! buffer of trace lines the admin console reads.
//!
//! Cost when nothing is traced: every traced connection carries a flag in its [`LinkTimers`]
//! (set by [`crate::hub::Hub`] when the trace starts or the user connects), so a session pays
//! one relaxed load of its own link per command and reply; a fan-out pays one relaxed load of
//! [`Tracer::any`] per publication and looks at subscriber flags only while a trace runs.
//!
//! A traced line is logged at info level (target `herald::trace`, fields `user`, `client`,
//! `trace_kind`, `method`, `payload`), kept in a ring of [`Tracer::capacity`] lines for the
//! console, and queued (bounded) to be sent to the other nodes of a cluster.
//!
//! [`LinkTimers`]: crate::link::LinkTimers

use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use herald_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::cluster::Command;

/// The longest payload rendering in a trace line, bytes (cut on a character boundary, `…`).
pub const MAX_PAYLOAD: usize = 512;
/// Lines kept for the console when none is configured.
pub const DEFAULT_CAPACITY: usize = 2_000;
/// Most local lines waiting to be sent to the other nodes; more are counted as dropped.
pub const MAX_OUTBOX: usize = 200;

/// What a trace line is about.
pub mod kind {
    /// A command from the client.
    pub const COMMAND: &str = "command";
    /// A reply to the client (including pushes the session itself sends).
    pub const REPLY: &str = "reply";
    /// A push from a channel the client is subscribed to.
    pub const PUSH: &str = "push";
    /// A call to a logic-layer proxy made for the client, and its outcome.
    pub const PROXY: &str = "proxy";
    /// The trace started or ended.
    pub const TRACE: &str = "trace";
}

/// One trace line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct TraceLine {
    /// Position in this node's ring (assigned when the line is stored here).
    pub seq: u64,
    /// Unix ms.
    pub time: i64,
    /// Name of the node whose connection the line is about.
    pub node: String,
    pub user: String,
    pub client: String,
    pub kind: String,
    pub method: String,
    pub payload: String,
}

#[derive(Default)]
struct Inner {
    /// Traced users and when their trace ends (Unix ms).
    users: HashMap<String, i64>,
    lines: VecDeque<TraceLine>,
    next_seq: u64,
    outbox: Vec<TraceLine>,
    outbox_dropped: u64,
}

/// The node's traces.
pub struct Tracer {
    /// Traced users: the gate checked on the delivery path.
    active: AtomicUsize,
    capacity: usize,
    node: Mutex<String>,
    inner: Mutex<Inner>,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new(DEFAULT_CAPACITY)
    }
}

impl Tracer {
    pub fn new(capacity: usize) -> Self {
        Tracer {
            active: AtomicUsize::new(0),
            capacity: capacity.max(1),
            node: Mutex::new(String::new()),
            inner: Mutex::new(Inner { next_seq: 1, ..Default::default() }),
        }
    }

    /// The node name written into local lines.
    pub fn set_node(&self, name: &str) {
        *self.node.lock().expect("trace node") = name.to_owned();
    }

    /// Lines kept for the console.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether any user is traced: the one check paid when none is.
    #[inline]
    pub fn any(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("tracer")
    }

    /// Traces `user` until `until_ms` (a running trace is extended or shortened). Returns
    /// whether the trace is new.
    pub fn start(&self, user: &str, until_ms: i64) -> bool {
        let mut inner = self.inner();
        let new = inner.users.insert(user.to_owned(), until_ms).is_none();
        self.active.store(inner.users.len(), Ordering::Relaxed);
        new
    }

    /// Ends the trace of `user`; whether one was running.
    pub fn stop(&self, user: &str) -> bool {
        let mut inner = self.inner();
        let was = inner.users.remove(user).is_some();
        self.active.store(inner.users.len(), Ordering::Relaxed);
        was
    }

    /// Whether `user` is traced at `now_ms`.
    pub fn is_traced(&self, user: &str, now_ms: i64) -> bool {
        self.any() && self.inner().users.get(user).is_some_and(|until| *until > now_ms)
    }

    /// Ends the traces that are over at `now_ms` and returns their users.
    pub fn expire(&self, now_ms: i64) -> Vec<String> {
        if !self.any() {
            return Vec::new();
        }
        let mut inner = self.inner();
        let over: Vec<String> =
            inner.users.iter().filter(|(_, until)| **until <= now_ms).map(|(u, _)| u.clone()).collect();
        for user in &over {
            inner.users.remove(user);
        }
        self.active.store(inner.users.len(), Ordering::Relaxed);
        over
    }

    /// Traced users and when their traces end (Unix ms), by user.
    pub fn traced(&self) -> Vec<(String, i64)> {
        let mut list: Vec<(String, i64)> = self.inner().users.iter().map(|(u, t)| (u.clone(), *t)).collect();
        list.sort();
        list
    }

    /// Logs and stores a line about a connection of this node. `payload` is rendered with
    /// [`render`] semantics (bounded).
    pub fn record(&self, now_ms: i64, user: &str, client: &str, kind: &str, method: &str, payload: &dyn fmt::Display) {
        let payload = bounded(payload, MAX_PAYLOAD);
        tracing::info!(
            target: "herald::trace",
            user,
            client,
            trace_kind = kind,
            method,
            payload = payload.as_str(),
            "user trace"
        );
        crate::metrics::trace_line(kind);
        let line = TraceLine {
            seq: 0,
            time: now_ms,
            node: self.node.lock().expect("trace node").clone(),
            user: user.to_owned(),
            client: client.to_owned(),
            kind: kind.to_owned(),
            method: method.to_owned(),
            payload,
        };
        let mut inner = self.inner();
        if inner.outbox.len() < MAX_OUTBOX {
            inner.outbox.push(line.clone());
        } else {
            inner.outbox_dropped += 1;
        }
        self.store(&mut inner, line);
    }

    /// Stores lines another node sent (they are not logged again, nor sent on).
    pub fn record_remote(&self, lines: Vec<TraceLine>) {
        let mut inner = self.inner();
        for line in lines.into_iter().take(self.capacity) {
            self.store(&mut inner, line);
        }
    }

    fn store(&self, inner: &mut Inner, mut line: TraceLine) {
        line.seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.lines.len() >= self.capacity {
            inner.lines.pop_front();
        }
        inner.lines.push_back(line);
    }

    /// Up to `limit` stored lines after `seq`, and the sequence of the newest line stored so
    /// far (a reader that fell behind the ring's start gets its oldest lines).
    pub fn lines_after(&self, seq: u64, limit: usize) -> (Vec<TraceLine>, u64) {
        let inner = self.inner();
        let newest = inner.next_seq - 1;
        let lines = inner.lines.iter().filter(|l| l.seq > seq).take(limit).cloned().collect();
        (lines, newest)
    }

    /// Takes the local lines waiting to be sent to the other nodes, and how many were dropped
    /// since the last call because the queue was full.
    pub fn take_outbox(&self) -> (Vec<TraceLine>, u64) {
        let mut inner = self.inner();
        let dropped = std::mem::take(&mut inner.outbox_dropped);
        (std::mem::take(&mut inner.outbox), dropped)
    }
}

/// Renders `value` into at most `max` bytes, cut on a character boundary with `…` after it.
/// Formatting stops at the limit, so a large payload costs no more than `max` bytes of work.
pub fn bounded(value: &dyn fmt::Display, max: usize) -> String {
    struct Capped {
        out: String,
        max: usize,
        cut: bool,
    }
    impl fmt::Write for Capped {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = self.max - self.out.len();
            if s.len() <= room {
                self.out.push_str(s);
                return Ok(());
            }
            let mut end = room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.out.push_str(&s[..end]);
            self.cut = true;
            Err(fmt::Error)
        }
    }
    let mut w = Capped { out: String::new(), max, cut: false };
    let _ = write!(w, "{value}");
    if w.cut {
        w.out.push('…');
    }
    w.out
}

/// A serializable value shown as compact JSON (for commands and replies in trace lines).
pub struct Json<'a, T: Serialize>(pub &'a T);

impl<T: Serialize> fmt::Display for Json<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Adapter<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl std::io::Write for Adapter<'_, '_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let s = String::from_utf8_lossy(buf);
                self.0.write_str(&s).map_err(|_| std::io::Error::other("trace payload cut"))?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        serde_json::to_writer(Adapter(f), self.0).map_err(|_| fmt::Error)
    }
}

impl crate::node::Node {
    /// Server API `trace_user`: traces `user`'s connections on every node for `duration_ms`.
    /// Returns when the trace ends (Unix ms) and how many connections this node marked.
    pub async fn api_trace_user(&self, user: &str, duration_ms: i64) -> Result<(i64, usize), ErrorCode> {
        let until = self.time_now_ms() + duration_ms;
        let marked = self.hub().trace_start(user, until);
        self.tell_cluster(Command::Trace { user: user.to_owned(), until }).await?;
        Ok((until, marked))
    }

    /// Server API `trace_stop`: ends the trace of `user` on every node; whether this node was
    /// tracing it.
    pub async fn api_trace_stop(&self, user: &str) -> Result<bool, ErrorCode> {
        let was = self.hub().trace_stop(user, "stopped");
        self.tell_cluster(Command::Trace { user: user.to_owned(), until: 0 }).await?;
        Ok(was)
    }

    /// Trace housekeeping; call about once a second: ends traces that are over and, in a
    /// cluster, sends this node's new lines to the others (one message, bounded).
    pub async fn trace_tick(&self) {
        self.hub().trace_sweep();
        if !self.clustered() {
            // Nobody to send them to: keep the queue from filling.
            let _ = self.hub().tracer().take_outbox();
            return;
        }
        let (lines, dropped) = self.hub().tracer().take_outbox();
        if lines.is_empty() && dropped == 0 {
            return;
        }
        // A failure is logged and counted by `tell_cluster`; the lines stay in this node's ring.
        let _ = self.tell_cluster(Command::TraceLines { lines, dropped }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_start_expire_and_gate() {
        let t = Tracer::new(4);
        assert!(!t.any());
        assert!(t.start("42", 1_000));
        assert!(!t.start("42", 2_000), "a running trace is extended");
        assert!(t.any());
        assert!(t.is_traced("42", 1_500));
        assert!(!t.is_traced("7", 1_500));
        assert!(t.expire(1_999).is_empty());
        assert_eq!(t.expire(2_000), vec!["42".to_owned()]);
        assert!(!t.any(), "the gate closes with the last trace");
        t.start("a", 10);
        assert!(t.stop("a"));
        assert!(!t.stop("a"));
        assert!(!t.any());
    }

    #[test]
    fn ring_is_bounded_and_read_by_sequence() {
        let t = Tracer::new(3);
        t.set_node("n1");
        for i in 0..5 {
            t.record(i, "42", "c", kind::COMMAND, "publish", &i);
        }
        let (lines, newest) = t.lines_after(0, 10);
        assert_eq!(newest, 5);
        assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [3, 4, 5], "the oldest lines are dropped");
        assert_eq!(lines[0].node, "n1");
        assert_eq!(lines[0].payload, "2");
        let (lines, _) = t.lines_after(4, 10);
        assert_eq!(lines.len(), 1);
        let (out, dropped) = t.take_outbox();
        assert_eq!((out.len(), dropped), (5, 0));
        assert!(t.take_outbox().0.is_empty());
        t.record_remote(vec![TraceLine { node: "n2".into(), seq: 99, ..Default::default() }]);
        let (lines, newest) = t.lines_after(5, 10);
        assert_eq!((lines[0].node.as_str(), lines[0].seq, newest), ("n2", 6, 6), "renumbered locally");
    }

    #[test]
    fn outbox_is_bounded() {
        let t = Tracer::new(10);
        for i in 0..MAX_OUTBOX + 7 {
            t.record(0, "u", "c", kind::PUSH, "", &i);
        }
        let (out, dropped) = t.take_outbox();
        assert_eq!((out.len(), dropped), (MAX_OUTBOX, 7));
    }

    #[test]
    fn payload_rendering_is_bounded_on_char_boundaries() {
        assert_eq!(bounded(&"short", 10), "short");
        assert_eq!(bounded(&"ééééé", 5), "éé…");
        let big = "x".repeat(10_000);
        assert_eq!(bounded(&big, MAX_PAYLOAD).len(), MAX_PAYLOAD + '…'.len_utf8());
        let json = bounded(&Json(&serde_json::json!({"data": big})), 20);
        assert_eq!(json, "{\"data\":\"xxxxxxxxxxx…");
    }
}
