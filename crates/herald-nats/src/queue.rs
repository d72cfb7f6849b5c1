//! Per-channel append turns: within one node, appends to a channel's JetStream subject run one
//! at a time, in the order the node accepted them, so the optimistic append (expected last
//! sequence per subject) can only collide with appends from other nodes.
//!
//! A channel has an entry here only while someone holds its turn; callers that find the turn
//! taken wait in the channel's FIFO queue. The holder's [`Turn`] hands itself to the next
//! waiter when dropped, and the last one removes the entry, so idle channels cost nothing.
//! Waiting is bounded per channel and per node: a caller past either limit is refused at once
//! with [`QueueFull`] instead of holding its publication in memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::metrics;

/// Which waiting limit refused a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueFull {
    /// `append_queue_per_channel` callers already wait for this channel.
    Channel(usize),
    /// `append_queue_total` callers already wait on this node, all channels together.
    Node(usize),
}

#[derive(Default)]
struct Inner {
    /// channel → callers waiting for its turn (present while the turn is held).
    channels: HashMap<String, VecDeque<oneshot::Sender<Turn>>>,
    /// Waiting callers over all channels.
    waiting: usize,
}

/// The append turns of one node.
pub(crate) struct AppendQueues {
    inner: Arc<Mutex<Inner>>,
    per_channel: usize,
    total: usize,
}

/// The right to append to one channel; dropping it passes the turn on.
pub(crate) struct Turn {
    inner: Arc<Mutex<Inner>>,
    channel: String,
    /// False for a turn that could not be handed over (its waiter gave up): dropping it must
    /// not pass anything on, the handing loop goes on with the next waiter.
    armed: bool,
}

/// Where a caller stands after [`AppendQueues::enter`].
pub(crate) enum Entered {
    Now(Turn),
    Later(oneshot::Receiver<Turn>),
}

impl AppendQueues {
    pub(crate) fn new(per_channel: usize, total: usize) -> AppendQueues {
        AppendQueues { inner: Arc::default(), per_channel: per_channel.max(1), total: total.max(1) }
    }

    /// Takes the channel's turn or a place in its queue (synchronous: the order of calls is
    /// the order of turns).
    pub(crate) fn enter(&self, channel: &str) -> Result<Entered, QueueFull> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let Some(queue) = inner.channels.get_mut(channel) else {
            inner.channels.insert(channel.to_owned(), VecDeque::new());
            metrics::append_channels(inner.channels.len());
            return Ok(Entered::Now(Turn { inner: self.inner.clone(), channel: channel.to_owned(), armed: true }));
        };
        if queue.len() >= self.per_channel || inner.waiting >= self.total {
            // Callers that gave up still hold places until the turn reaches them: drop those first.
            let before = queue.len();
            queue.retain(|tx| !tx.is_closed());
            inner.waiting -= before - queue.len();
            metrics::append_waiting(inner.waiting);
            if queue.len() >= self.per_channel {
                metrics::append_queue_full("channel");
                return Err(QueueFull::Channel(self.per_channel));
            }
            if inner.waiting >= self.total {
                metrics::append_queue_full("node");
                return Err(QueueFull::Node(self.total));
            }
        }
        let (tx, rx) = oneshot::channel();
        queue.push_back(tx);
        inner.waiting += 1;
        metrics::append_waiting(inner.waiting);
        Ok(Entered::Later(rx))
    }

    /// Waits for the channel's turn.
    pub(crate) async fn turn(&self, channel: &str) -> Result<Turn, QueueFull> {
        loop {
            match self.enter(channel)? {
                Entered::Now(turn) => return Ok(turn),
                Entered::Later(rx) => {
                    // A sender is dropped unsent only when its receiver is gone (pruning, a failed
                    // handover), so this does not fail; if it ever did, queue again.
                    if let Ok(turn) = rx.await {
                        return Ok(turn);
                    }
                }
            }
        }
    }

    /// Channels whose turn is held now (tests and the idle check).
    #[cfg(test)]
    pub(crate) fn channels(&self) -> usize {
        self.inner.lock().channels.len()
    }

    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.inner.lock().waiting
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        loop {
            let next = {
                let mut inner = self.inner.lock();
                let inner = &mut *inner;
                let Some(queue) = inner.channels.get_mut(&self.channel) else { return };
                match queue.pop_front() {
                    Some(tx) => {
                        inner.waiting -= 1;
                        metrics::append_waiting(inner.waiting);
                        tx
                    }
                    None => {
                        inner.channels.remove(&self.channel);
                        metrics::append_channels(inner.channels.len());
                        return;
                    }
                }
            };
            let turn = Turn { inner: self.inner.clone(), channel: std::mem::take(&mut self.channel), armed: true };
            match next.send(turn) {
                Ok(()) => return,
                Err(mut turn) => {
                    turn.armed = false;
                    self.channel = std::mem::take(&mut turn.channel);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now(e: Entered) -> Turn {
        match e {
            Entered::Now(t) => t,
            Entered::Later(_) => panic!("expected the turn at once"),
        }
    }

    fn later(e: Result<Entered, QueueFull>) -> oneshot::Receiver<Turn> {
        match e {
            Ok(Entered::Later(rx)) => rx,
            Ok(Entered::Now(_)) => panic!("expected to wait"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    #[test]
    fn turns_pass_in_the_order_callers_entered_and_idle_channels_are_forgotten() {
        let q = AppendQueues::new(10, 100);
        let first = now(q.enter("a").unwrap());
        let mut rxs: Vec<_> = (0..5).map(|_| later(q.enter("a"))).collect();
        // Another channel does not wait for "a".
        let other = now(q.enter("b").unwrap());
        assert_eq!((q.channels(), q.waiting()), (2, 5));
        drop(other);
        assert_eq!(q.channels(), 1);
        let mut held = first;
        for i in 0..5 {
            // Only the head of the queue has the turn.
            for rx in rxs.iter_mut().skip(1) {
                assert!(rx.try_recv().is_err(), "waiter behind {i} got the turn early");
            }
            drop(held);
            held = rxs.remove(0).try_recv().expect("the next waiter has the turn");
            assert_eq!(q.waiting(), 4 - i);
        }
        assert_eq!(q.channels(), 1);
        drop(held);
        assert_eq!((q.channels(), q.waiting()), (0, 0));
        // The entry is gone: the next caller has the turn at once.
        drop(now(q.enter("a").unwrap()));
    }

    #[test]
    fn waiters_that_gave_up_are_skipped() {
        let q = AppendQueues::new(10, 100);
        let first = now(q.enter("a").unwrap());
        let gone = later(q.enter("a"));
        let mut next = later(q.enter("a"));
        drop(gone);
        drop(first);
        let t = next.try_recv().expect("the turn skips a waiter that gave up");
        assert_eq!(q.waiting(), 0);
        drop(t);
        assert_eq!(q.channels(), 0);
        // A turn handed over but never received (the waiter went away after) passes on too.
        let first = now(q.enter("a").unwrap());
        let lost = later(q.enter("a"));
        let mut last = later(q.enter("a"));
        drop(first);
        drop(lost);
        let t = last.try_recv().expect("a turn dropped unreceived passes on");
        drop(t);
        assert_eq!((q.channels(), q.waiting()), (0, 0));
    }

    #[test]
    fn waiting_is_bounded_per_channel_and_per_node() {
        let q = AppendQueues::new(2, 3);
        let _a = now(q.enter("a").unwrap());
        let _w1 = later(q.enter("a"));
        let w2 = later(q.enter("a"));
        assert_eq!(q.enter("a").err(), Some(QueueFull::Channel(2)));
        let _b = now(q.enter("b").unwrap());
        let _w3 = later(q.enter("b"));
        assert_eq!(q.enter("b").err(), Some(QueueFull::Node(3)));
        // A waiter that gave up frees its place.
        drop(w2);
        let _w4 = later(q.enter("a"));
        assert_eq!(q.waiting(), 3);
    }

    #[tokio::test]
    async fn concurrent_tasks_append_one_at_a_time_in_entry_order() {
        let q = Arc::new(AppendQueues::new(1000, 1000));
        let log = Arc::new(Mutex::new(Vec::new()));
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..50 {
            // Entering here, in order, fixes the order of turns whatever the scheduling.
            let entered = q.enter("c").unwrap();
            let (log, busy) = (log.clone(), busy.clone());
            tasks.push(tokio::spawn(async move {
                let turn = match entered {
                    Entered::Now(t) => t,
                    Entered::Later(rx) => rx.await.unwrap(),
                };
                assert!(!busy.swap(true, std::sync::atomic::Ordering::SeqCst), "two turns at once");
                tokio::task::yield_now().await;
                log.lock().push(i);
                busy.store(false, std::sync::atomic::Ordering::SeqCst);
                drop(turn);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*log.lock(), (0..50).collect::<Vec<_>>());
        assert_eq!((q.channels(), q.waiting()), (0, 0));
    }
}
