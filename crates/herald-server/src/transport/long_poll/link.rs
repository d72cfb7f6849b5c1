//! [`PollLink`]: the `ClientLink` of one long-polling session. It owns no socket: pushes wait in
//! a bounded buffer of encoded items until a poll takes them, and stay there until a later poll
//! acknowledges them (`seq`), so an answer lost on the way is sent again.
//!
//! Items are numbered from 0 (the connect push) in the order they were queued; `base` is the
//! number of the first item still held. Past `client.queue_max_size` bytes of unacknowledged
//! items the buffer is dropped and the session closed with 3008 (slow): its disconnect push is
//! the last item the client gets, the signal that what followed its last item is gone (a
//! reconnect with `recover` positions then gets it from history where the channel keeps one).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_hub::{ClientLink, Control, LinkTimers};
use herald_proto::DisconnectReason;
use herald_proto::codes::DISCONNECT_SLOW;
use herald_proto::envelope::{self, Envelope};
use uuid::Uuid;

/// The long-poll envelope: bare pushes as newline-delimited JSON (a batch is their
/// concatenation).
pub(crate) const ENVELOPE: Envelope = Envelope::UniStream;

#[derive(Default)]
struct Inner {
    /// Unacknowledged items; `items[0]` is item number `base`.
    items: VecDeque<Bytes>,
    base: u64,
    bytes: usize,
    /// A close the session task has not acted on yet (the first reason wins).
    close: Option<DisconnectReason>,
    /// The session task took the close: nothing more is queued but its disconnect push.
    closing: bool,
    /// The session is over: the items held are the last ones.
    ended: bool,
    controls: Vec<Control>,
    /// The session's waker: a task awaiting controls, or the parked session (`mod.rs`).
    task_waker: Option<Waker>,
    /// The held poll, with the worker that runs it: the waker of a task awaiting it, or of a
    /// poll parked without a task (`raw`), which spawns one to answer.
    poll_waker: Option<(u16, Waker)>,
    /// Bumped by every poll: a held poll whose number is not the latest answers at once.
    poll_gen: u64,
    /// When the latest poll is answered empty; the node's sweeper acts on it ([`PollLink::expire`]),
    /// so a held poll holds no timer of its own.
    deadline: Option<Instant>,
    /// The latest poll the sweeper found past its deadline: polls up to it answer now.
    expired: u64,
    /// Polls in progress (0 or 1, briefly 2 while one replaces another).
    polling: u32,
    /// When the last poll ended (or the session started).
    idle_since: Option<Instant>,
}

/// What woke the session task.
pub(crate) struct TaskWake {
    pub controls: Vec<Control>,
    pub close: Option<DisconnectReason>,
}

/// What a poll gets: the items from number `from` on (possibly none, when the poll timed out),
/// and whether the session is over.
pub(crate) struct Batch {
    pub from: u64,
    pub items: Vec<Bytes>,
    pub ended: bool,
}

pub struct PollLink {
    id: Uuid,
    /// The secret the client's polls name; sent in the connect push.
    pub(crate) session: Box<str>,
    timers: LinkTimers,
    /// The worker whose runtime runs the session task.
    pub(crate) worker: u16,
    queue_max: usize,
    inner: Mutex<Inner>,
}

impl PollLink {
    pub(crate) fn new(queue_max: usize) -> Self {
        PollLink {
            id: Uuid::new_v4(),
            session: Uuid::new_v4().simple().to_string().into_boxed_str(),
            timers: LinkTimers::new(false),
            worker: herald_hub::wake::current_worker(),
            queue_max,
            inner: Mutex::new(Inner { idle_since: Some(Instant::now()), ..Default::default() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("poll link")
    }

    /// Wakes the session (a task awaiting it, or the session parked without a task, which
    /// spawns one). Called with the lock released, like [`PollLink::wake_poll`].
    fn wake_task(&self, waker: Option<Waker>) {
        if let Some(w) = waker {
            herald_hub::wake::wake(self.worker, w);
        }
    }

    /// Wakes a held poll taken from `Inner::poll_waker`. Called with the lock released: a parked
    /// poll's waker spawns its answer, and dropping one (a failed spawn) ends the poll, which
    /// locks the link.
    fn wake_poll(waker: Option<(u16, Waker)>) {
        if let Some((worker, w)) = waker {
            herald_hub::wake::wake(worker, w);
        }
    }

    /// For the session task: waits for controls or a close.
    pub(crate) fn poll_task(&self, cx: &mut Context<'_>) -> Poll<TaskWake> {
        let mut inner = self.lock();
        if inner.controls.is_empty() && inner.close.is_none() {
            inner.task_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Self::task_wake(&mut inner))
    }

    fn task_wake(inner: &mut Inner) -> TaskWake {
        let close = inner.close.take();
        inner.closing |= close.is_some();
        TaskWake { controls: std::mem::take(&mut inner.controls), close }
    }

    /// Parks the session without a task: `waker` is woken (on the session's worker) when
    /// controls or a close arrive. `Err` with them when some are waiting already.
    pub(crate) fn park_task(&self, waker: Waker) -> Result<(), TaskWake> {
        let mut inner = self.lock();
        if !inner.controls.is_empty() || inner.close.is_some() {
            let wake = Self::task_wake(&mut inner);
            drop(inner);
            drop(waker);
            return Err(wake);
        }
        let old = inner.task_waker.replace(waker);
        drop(inner);
        drop(old);
        Ok(())
    }

    /// The session task ended: `last` (its disconnect push, if any) is the final item.
    pub(crate) fn end(&self, last: Option<Bytes>) {
        let mut inner = self.lock();
        if let Some(item) = last {
            inner.bytes += item.len();
            inner.items.push_back(item);
        }
        inner.ended = true;
        let waker = inner.poll_waker.take();
        drop(inner);
        Self::wake_poll(waker);
    }

    /// A poll starts: drops the items before `seq` (the client has them) and returns this
    /// poll's number; `Err(next)` when `seq` is beyond the last item sent. It is answered
    /// empty once `timeout` has passed and the sweeper saw it ([`PollLink::expire`]).
    pub(crate) fn begin_poll(&self, seq: u64, timeout: Duration) -> Result<u64, u64> {
        let mut inner = self.lock();
        let next = inner.base + inner.items.len() as u64;
        if seq > next {
            return Err(next);
        }
        while inner.base < seq {
            if let Some(item) = inner.items.pop_front() {
                inner.bytes -= item.len();
            }
            inner.base += 1;
        }
        inner.poll_gen += 1;
        inner.polling += 1;
        inner.idle_since = None;
        inner.deadline = Some(Instant::now() + timeout);
        let ticket = inner.poll_gen;
        // A poll this one replaces answers now.
        let waker = inner.poll_waker.take();
        drop(inner);
        Self::wake_poll(waker);
        Ok(ticket)
    }

    /// Whether poll `ticket` waits: nothing to answer, the session on, no newer poll, and its
    /// deadline not seen passed.
    fn waits(inner: &Inner, ticket: u64) -> bool {
        inner.items.is_empty() && !inner.ended && inner.poll_gen == ticket && inner.expired < ticket
    }

    /// Ready when items are held, the session is over, a newer poll replaced poll `ticket`, or
    /// its deadline passed.
    pub(crate) fn poll_items(&self, cx: &mut Context<'_>, ticket: u64) -> Poll<Batch> {
        let mut inner = self.lock();
        if Self::waits(&inner, ticket) {
            let old = inner.poll_waker.replace((herald_hub::wake::current_worker(), cx.waker().clone()));
            drop(inner);
            drop(old);
            return Poll::Pending;
        }
        Poll::Ready(Self::batch(&inner))
    }

    /// Parks poll `ticket` without a task: `waker` (woken on worker `worker`) is woken when the
    /// poll is to be answered. `Err(waker)` when it is to be answered now.
    pub(crate) fn park(&self, ticket: u64, worker: u16, waker: Waker) -> Result<(), Waker> {
        let mut inner = self.lock();
        if !Self::waits(&inner, ticket) {
            return Err(waker);
        }
        let old = inner.poll_waker.replace((worker, waker));
        drop(inner);
        drop(old);
        Ok(())
    }

    /// For the sweeper: releases the latest poll if its deadline is before `now` (it answers
    /// empty).
    pub(crate) fn expire(&self, now: Instant) {
        let mut inner = self.lock();
        if inner.deadline.is_none_or(|d| d > now) {
            return;
        }
        inner.deadline = None;
        inner.expired = inner.poll_gen;
        let waker = inner.poll_waker.take();
        drop(inner);
        Self::wake_poll(waker);
    }

    /// What is held now (the timeout path).
    pub(crate) fn take_now(&self) -> Batch {
        Self::batch(&self.lock())
    }

    fn batch(inner: &Inner) -> Batch {
        Batch { from: inner.base, items: inner.items.iter().cloned().collect(), ended: inner.ended }
    }

    /// A poll ended (answered, or its connection went away).
    pub(crate) fn end_poll(&self) {
        let mut inner = self.lock();
        inner.polling = inner.polling.saturating_sub(1);
        if inner.polling == 0 {
            inner.deadline = None;
            inner.idle_since = Some(Instant::now());
        }
    }

    /// Since when no poll is held (`None` while one is).
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        self.lock().idle_since
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.lock().ended
    }

    /// Item number of the next item queued.
    #[cfg(test)]
    fn next_seq(&self) -> u64 {
        let inner = self.lock();
        inner.base + inner.items.len() as u64
    }
}

impl ClientLink for PollLink {
    fn id(&self) -> Uuid {
        self.id
    }

    fn envelope(&self) -> Envelope {
        ENVELOPE
    }

    fn send(&self, frame: Bytes) {
        let mut inner = self.lock();
        if inner.ended || inner.closing || inner.close.as_ref().is_some_and(|c| c.code == DISCONNECT_SLOW.code) {
            return;
        }
        if inner.bytes + frame.len() > self.queue_max {
            // The client does not poll fast enough: what it has not acknowledged is dropped
            // (numbering goes on, so its `seq` stays valid) and the session ends with 3008.
            let dropped = (inner.bytes + frame.len()) as u64;
            inner.base += inner.items.len() as u64;
            inner.items.clear();
            inner.bytes = 0;
            inner.close = Some(DISCONNECT_SLOW);
            metrics::counter!("herald_transport_slow_total", "transport" => "uni_long_poll").increment(1);
            metrics::counter!("herald_transport_dropped_bytes_total", "transport" => "uni_long_poll")
                .increment(dropped);
            let waker = inner.task_waker.take();
            drop(inner);
            self.wake_task(waker);
            return;
        }
        inner.bytes += frame.len();
        inner.items.push_back(frame);
        let waker = inner.poll_waker.take();
        drop(inner);
        Self::wake_poll(waker);
    }

    fn close(&self, reason: DisconnectReason) {
        let mut inner = self.lock();
        if inner.close.is_none() && !inner.closing && !inner.ended {
            inner.close = Some(reason);
            let waker = inner.task_waker.take();
            drop(inner);
            self.wake_task(waker);
        }
    }

    fn control(&self, ctrl: Control) {
        let mut inner = self.lock();
        inner.controls.push(ctrl);
        let waker = inner.task_waker.take();
        drop(inner);
        self.wake_task(waker);
    }

    fn timers(&self) -> &LinkTimers {
        &self.timers
    }

    fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn emulation_session(&self) -> Option<&str> {
        Some(&self.session)
    }

    fn ping_frame(&self) -> Bytes {
        envelope::ping(ENVELOPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    fn items(b: Batch) -> (u64, Vec<Bytes>, bool) {
        (b.from, b.items, b.ended)
    }

    #[test]
    fn items_stay_until_acknowledged() {
        let link = PollLink::new(1024);
        link.send(Bytes::from_static(b"a\n"));
        link.send(Bytes::from_static(b"b\n"));
        assert_eq!(link.begin_poll(0, T), Ok(1));
        let (from, got, ended) = items(link.take_now());
        assert_eq!((from, got.len(), ended), (0, 2, false));
        link.end_poll();
        // The answer was lost: the same poll again gets the same items.
        link.begin_poll(0, T).unwrap();
        assert_eq!(items(link.take_now()).1.len(), 2);
        link.end_poll();
        // Acknowledged one.
        link.begin_poll(1, T).unwrap();
        let (from, got, _) = items(link.take_now());
        assert_eq!((from, got), (1, vec![Bytes::from_static(b"b\n")]));
        link.end_poll();
        assert_eq!(link.begin_poll(3, T), Err(2), "seq ahead of what was sent");
        assert_eq!(link.next_seq(), 2);
    }

    #[test]
    fn overflow_drops_the_buffer_and_closes_slow() {
        let link = PollLink::new(8);
        link.send(Bytes::from_static(b"12345\n"));
        link.send(Bytes::from_static(b"67890\n"));
        assert_eq!(link.next_seq(), 1, "numbering goes on past the dropped item");
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(w) = link.poll_task(&mut cx) else { panic!("task not woken") };
        assert_eq!(w.close.map(|c| c.code), Some(DISCONNECT_SLOW.code));
        link.send(Bytes::from_static(b"x\n"));
        link.end(Some(Bytes::from_static(b"bye\n")));
        link.begin_poll(0, T).unwrap();
        let (from, got, ended) = items(link.take_now());
        assert_eq!((from, got, ended), (1, vec![Bytes::from_static(b"bye\n")], true));
    }

    #[test]
    fn a_newer_poll_releases_the_held_one() {
        let link = PollLink::new(1024);
        let mut cx = Context::from_waker(Waker::noop());
        let first = link.begin_poll(0, T).unwrap();
        assert!(link.poll_items(&mut cx, first).is_pending());
        let second = link.begin_poll(0, T).unwrap();
        assert!(link.poll_items(&mut cx, first).is_ready());
        assert!(link.poll_items(&mut cx, second).is_pending());
        link.end_poll();
        assert!(link.idle_since().is_none(), "one poll still held");
        link.end_poll();
        assert!(link.idle_since().is_some());
    }

    #[test]
    fn the_sweeper_releases_a_poll_past_its_deadline() {
        let link = PollLink::new(1024);
        let mut cx = Context::from_waker(Waker::noop());
        let ticket = link.begin_poll(0, Duration::from_millis(50)).unwrap();
        assert!(link.poll_items(&mut cx, ticket).is_pending());
        link.expire(Instant::now());
        assert!(link.poll_items(&mut cx, ticket).is_pending(), "deadline not passed yet");
        link.expire(Instant::now() + Duration::from_secs(1));
        let Poll::Ready(batch) = link.poll_items(&mut cx, ticket) else { panic!("not released") };
        assert_eq!((batch.from, batch.items.len(), batch.ended), (0, 0, false));
        link.end_poll();
        // The next poll waits again, with its own deadline.
        let next = link.begin_poll(0, T).unwrap();
        assert!(link.poll_items(&mut cx, next).is_pending());
    }

    /// A waker that counts its wake-ups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_parked_poll_is_woken_by_an_item_or_refused_when_one_waits() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let link = PollLink::new(1024);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let ticket = link.begin_poll(0, T).unwrap();
        assert!(link.park(ticket, herald_hub::wake::NO_WORKER, Waker::from(count.clone())).is_ok());
        link.send(Bytes::from_static(b"a\n"));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        link.end_poll();
        // An item already waits: nothing to park, answer now.
        let ticket = link.begin_poll(0, T).unwrap();
        assert!(link.park(ticket, herald_hub::wake::NO_WORKER, Waker::from(count.clone())).is_err());
        link.end_poll();
        // The deadline releases a parked poll too.
        let ticket = link.begin_poll(1, Duration::ZERO).unwrap();
        assert!(link.park(ticket, herald_hub::wake::NO_WORKER, Waker::from(count.clone())).is_ok());
        link.expire(Instant::now() + Duration::from_millis(1));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
}
