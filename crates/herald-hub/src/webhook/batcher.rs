//! The webhook queue without I/O: events wait in a bounded FIFO until a batch is full or the
//! oldest has waited `flush_interval`; one batch is in flight at a time and a failed batch is
//! retried (jittered exponential backoff) before anything queued after it, so every client's
//! events reach the backend in the order they happened. Times are milliseconds from any
//! monotonic origin the caller picks (tests pass a manual clock).

use std::collections::VecDeque;
use std::time::Duration;

use super::config::WebhookConfig;

/// The bounds and delays of a [`Batcher`], in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub max_batch: usize,
    pub flush_interval_ms: i64,
    pub max_queue: usize,
    pub max_retries: u32,
    pub backoff_min_ms: i64,
    pub backoff_max_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Settings {
    pub fn from_config(c: &WebhookConfig) -> Settings {
        Settings {
            max_batch: c.max_batch,
            flush_interval_ms: ms(c.flush_interval),
            max_queue: c.max_queue,
            max_retries: c.max_retries,
            backoff_min_ms: ms(c.retry_backoff_min),
            backoff_max_ms: ms(c.retry_backoff_max),
        }
    }

    /// The delay before retry number `attempt` (1 = the first retry): `backoff_min` doubled per
    /// attempt up to `backoff_max`, then scaled into its upper half by `jitter` in [0, 1) so that
    /// nodes restarted together do not retry in step.
    pub fn backoff_ms(&self, attempt: u32, jitter: f64) -> i64 {
        let doublings = attempt.saturating_sub(1).min(32);
        let full = self.backoff_min_ms.saturating_mul(1i64 << doublings).min(self.backoff_max_ms).max(1);
        let jitter = jitter.clamp(0.0, 1.0);
        (full as f64 * (0.5 + jitter / 2.0)).round().max(1.0) as i64
    }
}

/// What the sender should do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<E> {
    /// Send these events as one request, then report [`Batcher::succeeded`] or
    /// [`Batcher::failed`].
    Send(Vec<E>),
    /// Nothing to send before this time (ms), or before the next push when `None`.
    Wait(Option<i64>),
}

/// A failed batch waiting for its retry.
#[derive(Debug)]
struct Retry<E> {
    events: Vec<E>,
    at: i64,
}

/// The bounded webhook queue.
#[derive(Debug)]
pub struct Batcher<E> {
    settings: Settings,
    /// Queued events with the time each arrived.
    queue: VecDeque<(i64, E)>,
    /// Events handed to the sender or waiting for a retry (they count against `max_queue`).
    held: usize,
    /// Attempts made for the held batch.
    attempts: u32,
    sending: bool,
    retry: Option<Retry<E>>,
}

impl<E> Batcher<E> {
    pub fn new(settings: Settings) -> Self {
        Batcher { settings, queue: VecDeque::new(), held: 0, attempts: 0, sending: false, retry: None }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// New bounds (a configuration reload) for what comes next: events queued beyond a smaller
    /// `max_queue` stay queued (only new ones are refused until the queue shrinks), the batch
    /// in flight and its retry count are kept.
    pub fn set_settings(&mut self, settings: Settings) {
        self.settings = settings;
    }

    /// Events in memory: queued plus the batch in flight or awaiting a retry.
    pub fn depth(&self) -> usize {
        self.queue.len() + self.held
    }

    /// Queues an event, or gives it back when `max_queue` events are already held. `Ok(true)`
    /// means the sender should look again now (the queue was empty, so a flush deadline starts,
    /// or a batch just filled up); other pushes need no wake-up.
    pub fn push(&mut self, event: E, now: i64) -> Result<bool, E> {
        if self.depth() >= self.settings.max_queue {
            return Err(event);
        }
        self.queue.push_back((now, event));
        let n = self.queue.len();
        Ok(n == 1 || n == self.settings.max_batch)
    }

    /// The next step at time `now`.
    pub fn poll(&mut self, now: i64) -> Next<E> {
        if self.sending {
            return Next::Wait(None);
        }
        if let Some(retry) = self.retry.take() {
            if now < retry.at {
                let at = retry.at;
                self.retry = Some(retry);
                return Next::Wait(Some(at));
            }
            self.sending = true;
            return Next::Send(retry.events);
        }
        let Some(&(oldest, _)) = self.queue.front() else { return Next::Wait(None) };
        let due = oldest.saturating_add(self.settings.flush_interval_ms);
        if self.queue.len() < self.settings.max_batch && now < due {
            return Next::Wait(Some(due));
        }
        let n = self.queue.len().min(self.settings.max_batch.max(1));
        let batch: Vec<E> = self.queue.drain(..n).map(|(_, e)| e).collect();
        self.held = batch.len();
        self.attempts = 1;
        self.sending = true;
        Next::Send(batch)
    }

    /// The batch handed out by [`poll`](Batcher::poll) was delivered.
    pub fn succeeded(&mut self) {
        self.sending = false;
        self.held = 0;
        self.attempts = 0;
    }

    /// The batch handed out failed at `now`: it is kept for a retry (returns `None`), or given
    /// back to be counted as dropped after `max_retries` retries. `jitter` is in [0, 1).
    pub fn failed(&mut self, events: Vec<E>, now: i64, jitter: f64) -> Option<Vec<E>> {
        self.sending = false;
        if self.attempts > self.settings.max_retries {
            self.held = 0;
            self.attempts = 0;
            return Some(events);
        }
        let at = now.saturating_add(self.settings.backoff_ms(self.attempts, jitter));
        self.attempts += 1;
        self.retry = Some(Retry { events, at });
        None
    }

    /// Attempts made so far for the batch being sent (1 for its first attempt).
    pub fn attempt(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            max_batch: 3,
            flush_interval_ms: 100,
            max_queue: 5,
            max_retries: 2,
            backoff_min_ms: 100,
            backoff_max_ms: 1000,
        }
    }

    fn sent(next: Next<u32>) -> Vec<u32> {
        match next {
            Next::Send(v) => v,
            Next::Wait(w) => panic!("expected a batch, got Wait({w:?})"),
        }
    }

    #[test]
    fn a_batch_waits_for_the_flush_interval_or_fills_up() {
        let mut b = Batcher::new(settings());
        assert_eq!(b.poll(0), Next::Wait(None));
        assert_eq!(b.push(1, 10), Ok(true), "the first event wakes the sender to start its deadline");
        assert_eq!(b.push(2, 20), Ok(false));
        assert_eq!(b.poll(20), Next::Wait(Some(110)), "due 100 ms after the oldest event");
        assert_eq!(sent(b.poll(110)), vec![1, 2]);
        b.succeeded();
        assert_eq!(b.push(3, 200), Ok(true));
        assert_eq!(b.push(4, 201), Ok(false));
        assert_eq!(b.push(5, 202), Ok(true), "a full batch wakes the sender");
        assert_eq!(sent(b.poll(202)), vec![3, 4, 5], "full: sent before the interval");
        b.succeeded();
        assert_eq!(b.depth(), 0);
    }

    #[test]
    fn one_batch_in_flight_and_the_rest_keep_their_order() {
        let mut b = Batcher::new(settings());
        for (i, e) in (1..=5).enumerate() {
            b.push(e, i as i64).unwrap();
        }
        assert_eq!(sent(b.poll(5)), vec![1, 2, 3]);
        assert_eq!(b.poll(500), Next::Wait(None), "nothing else while a batch is in flight");
        b.succeeded();
        assert_eq!(b.poll(5), Next::Wait(Some(103)), "the rest waits from its own oldest event");
        assert_eq!(sent(b.poll(103)), vec![4, 5]);
    }

    #[test]
    fn the_bound_counts_the_batch_in_flight() {
        let mut b = Batcher::new(settings());
        for e in 1..=5 {
            b.push(e, 0).unwrap();
        }
        assert_eq!(b.push(6, 0), Err(6), "max_queue 5");
        let batch = sent(b.poll(0));
        assert_eq!(b.depth(), 5);
        assert_eq!(b.push(6, 0), Err(6), "the batch being sent still holds memory");
        b.failed(batch, 0, 0.0);
        assert_eq!(b.push(6, 0), Err(6), "and so does one waiting for its retry");
        assert_eq!(b.depth(), 5);
    }

    #[test]
    fn a_failed_batch_is_retried_first_with_growing_delays_then_dropped() {
        let mut b = Batcher::new(settings());
        b.push(1, 0).unwrap();
        b.push(2, 0).unwrap();
        let batch = sent(b.poll(100));
        assert_eq!(b.attempt(), 1);
        // Events queued during the outage wait behind the failed batch.
        b.push(3, 150).unwrap();
        assert_eq!(b.failed(batch, 200, 0.0), None);
        assert_eq!(b.poll(200), Next::Wait(Some(250)), "first retry after 100 ms, jitter 0 halves it");
        assert_eq!(b.poll(249), Next::Wait(Some(250)));
        let batch = sent(b.poll(250));
        assert_eq!(batch, vec![1, 2], "the same batch, before event 3");
        assert_eq!(b.attempt(), 2);
        assert_eq!(b.failed(batch, 250, 0.999), None);
        assert_eq!(b.poll(250), Next::Wait(Some(450)), "second retry: 200 ms, jitter near 1 keeps it whole");
        let batch = sent(b.poll(450));
        assert_eq!(b.failed(batch, 450, 0.0), Some(vec![1, 2]), "max_retries 2: dropped after the third attempt");
        assert_eq!(b.depth(), 1);
        assert_eq!(sent(b.poll(450)), vec![3], "the queue goes on");
    }

    #[test]
    fn a_retried_batch_that_succeeds_frees_its_room() {
        let mut b = Batcher::new(settings());
        for e in 1..=3 {
            b.push(e, 0).unwrap();
        }
        let batch = sent(b.poll(0));
        b.failed(batch, 0, 0.5);
        let batch = sent(b.poll(1_000));
        assert_eq!(batch, vec![1, 2, 3]);
        b.succeeded();
        assert_eq!(b.depth(), 0);
        assert_eq!(b.attempt(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let s = settings();
        assert_eq!(s.backoff_ms(1, 0.999_999), 100);
        assert_eq!(s.backoff_ms(2, 0.999_999), 200);
        assert_eq!(s.backoff_ms(4, 0.999_999), 800);
        assert_eq!(s.backoff_ms(5, 0.999_999), 1000);
        assert_eq!(s.backoff_ms(40, 0.999_999), 1000, "no overflow for large attempt counts");
        assert_eq!(s.backoff_ms(5, 0.0), 500, "jitter keeps at least half of the delay");
    }

    #[test]
    fn zero_flush_interval_sends_what_is_there() {
        let mut b = Batcher::new(Settings { flush_interval_ms: 0, ..settings() });
        b.push(1, 7).unwrap();
        assert_eq!(sent(b.poll(7)), vec![1]);
    }
}
