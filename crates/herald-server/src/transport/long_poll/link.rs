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
use std::time::Instant;

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
    task_waker: Option<Waker>,
    /// The held poll, with the worker that runs it.
    poll_waker: Option<(u16, Waker)>,
    /// Bumped by every poll: a held poll whose number is not the latest answers at once.
    poll_gen: u64,
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

    fn wake_task(&self, inner: &mut Inner) {
        if let Some(w) = inner.task_waker.take() {
            herald_hub::wake::wake(self.worker, w);
        }
    }

    fn wake_poll(inner: &mut Inner) {
        if let Some((worker, w)) = inner.poll_waker.take() {
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
        let close = inner.close.take();
        inner.closing |= close.is_some();
        Poll::Ready(TaskWake { controls: std::mem::take(&mut inner.controls), close })
    }

    /// The session task ended: `last` (its disconnect push, if any) is the final item.
    pub(crate) fn end(&self, last: Option<Bytes>) {
        let mut inner = self.lock();
        if let Some(item) = last {
            inner.bytes += item.len();
            inner.items.push_back(item);
        }
        inner.ended = true;
        Self::wake_poll(&mut inner);
    }

    /// A poll starts: drops the items before `seq` (the client has them) and returns this
    /// poll's number; `Err(next)` when `seq` is beyond the last item sent.
    pub(crate) fn begin_poll(&self, seq: u64) -> Result<u64, u64> {
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
        // A poll this one replaces answers now.
        Self::wake_poll(&mut inner);
        Ok(inner.poll_gen)
    }

    /// Ready when items are held, the session is over, or a newer poll replaced poll `ticket`.
    pub(crate) fn poll_items(&self, cx: &mut Context<'_>, ticket: u64) -> Poll<Batch> {
        let mut inner = self.lock();
        if inner.items.is_empty() && !inner.ended && inner.poll_gen == ticket {
            inner.poll_waker = Some((herald_hub::wake::current_worker(), cx.waker().clone()));
            return Poll::Pending;
        }
        Poll::Ready(Self::batch(&inner))
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
            self.wake_task(&mut inner);
            return;
        }
        inner.bytes += frame.len();
        inner.items.push_back(frame);
        Self::wake_poll(&mut inner);
    }

    fn close(&self, reason: DisconnectReason) {
        let mut inner = self.lock();
        if inner.close.is_none() && !inner.closing && !inner.ended {
            inner.close = Some(reason);
            self.wake_task(&mut inner);
        }
    }

    fn control(&self, ctrl: Control) {
        let mut inner = self.lock();
        inner.controls.push(ctrl);
        self.wake_task(&mut inner);
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

    fn items(b: Batch) -> (u64, Vec<Bytes>, bool) {
        (b.from, b.items, b.ended)
    }

    #[test]
    fn items_stay_until_acknowledged() {
        let link = PollLink::new(1024);
        link.send(Bytes::from_static(b"a\n"));
        link.send(Bytes::from_static(b"b\n"));
        assert_eq!(link.begin_poll(0), Ok(1));
        let (from, got, ended) = items(link.take_now());
        assert_eq!((from, got.len(), ended), (0, 2, false));
        link.end_poll();
        // The answer was lost: the same poll again gets the same items.
        link.begin_poll(0).unwrap();
        assert_eq!(items(link.take_now()).1.len(), 2);
        link.end_poll();
        // Acknowledged one.
        link.begin_poll(1).unwrap();
        let (from, got, _) = items(link.take_now());
        assert_eq!((from, got), (1, vec![Bytes::from_static(b"b\n")]));
        link.end_poll();
        assert_eq!(link.begin_poll(3), Err(2), "seq ahead of what was sent");
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
        link.begin_poll(0).unwrap();
        let (from, got, ended) = items(link.take_now());
        assert_eq!((from, got, ended), (1, vec![Bytes::from_static(b"bye\n")], true));
    }

    #[test]
    fn a_newer_poll_releases_the_held_one() {
        let link = PollLink::new(1024);
        let mut cx = Context::from_waker(Waker::noop());
        let first = link.begin_poll(0).unwrap();
        assert!(link.poll_items(&mut cx, first).is_pending());
        let second = link.begin_poll(0).unwrap();
        assert!(link.poll_items(&mut cx, first).is_ready());
        assert!(link.poll_items(&mut cx, second).is_pending());
        link.end_poll();
        assert!(link.idle_since().is_none(), "one poll still held");
        link.end_poll();
        assert!(link.idle_since().is_some());
    }
}
