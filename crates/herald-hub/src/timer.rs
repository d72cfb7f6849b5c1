//! One coarse timing wheel for every connection's pings, pong checks, stale checks and expiry.
//!
//! Why: a tokio timer per connection costs memory and contends on the runtime's timer lock at
//! scale. Here each connection has at most one live entry (a weak pointer and a deadline, 24
//! bytes), slots are one second wide, and cancellation is lazy: an entry whose deadline no
//! longer matches the link's `scheduled` value is dropped when its slot comes round.
//!
//! The wheel is sans-IO: the server calls [`TimerWheel::advance`] once a second with the
//! current tick.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::link::{ClientLink, Fired};

const SLOTS: usize = 64;

struct Entry {
    deadline: u32,
    link: Weak<dyn ClientLink>,
}

/// Shared timing wheel with one-second slots.
pub struct TimerWheel {
    slots: Box<[Mutex<Vec<Entry>>]>,
    /// Last tick processed (written under `advancing`).
    last: AtomicU32,
    /// Serialises `advance` calls.
    advancing: Mutex<()>,
    ping_every: u32,
    pong_timeout: u32,
}

impl TimerWheel {
    /// `ping_every` and `pong_timeout` in seconds (0 disables pings / pong checks).
    pub fn new(ping_every: u32, pong_timeout: u32) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            last: AtomicU32::new(0),
            advancing: Mutex::new(()),
            ping_every,
            pong_timeout,
        }
    }

    pub fn ping_every(&self) -> u32 {
        self.ping_every
    }

    /// Makes sure `link` fires no later than `deadline`. An earlier live entry is kept.
    pub fn schedule(&self, link: &Arc<dyn ClientLink>, deadline: u32) {
        let deadline = deadline.max(1);
        let scheduled = &link.timers().scheduled;
        let mut cur = scheduled.load(Ordering::Acquire);
        loop {
            if cur != 0 && cur <= deadline {
                return;
            }
            match scheduled.compare_exchange(cur, deadline, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        let entry = Entry { deadline, link: Arc::downgrade(link) };
        // A deadline whose tick was already processed goes to the next tick's slot, not to a
        // slot that comes round only after a full lap.
        let slot_tick = deadline.max(self.last.load(Ordering::Acquire) + 1);
        self.slots[slot_tick as usize % SLOTS].lock().expect("wheel slot").push(entry);
    }

    /// Processes every slot up to tick `now`. Returns how many entries fired.
    pub fn advance(&self, now: u32) -> usize {
        let _guard = self.advancing.lock().expect("wheel advance");
        let last = self.last.load(Ordering::Acquire);
        if now <= last {
            return 0;
        }
        let from = (last + 1).max(now.saturating_sub(SLOTS as u32 - 1));
        let mut fired = 0;
        for tick in from..=now {
            // Publish progress first: entries scheduled for `tick` from now on land in the
            // next slot instead of this one, which is being drained.
            self.last.store(tick, Ordering::Release);
            fired += self.run_slot(tick as usize % SLOTS, now);
        }
        fired
    }

    fn run_slot(&self, slot: usize, now: u32) -> usize {
        let entries = std::mem::take(&mut *self.slots[slot].lock().expect("wheel slot"));
        let mut keep = Vec::new();
        let mut fired = 0;
        for entry in entries {
            if entry.deadline > now {
                keep.push(entry);
                continue;
            }
            let Some(link) = entry.link.upgrade() else { continue };
            let timers = link.timers();
            // Claim the entry; a mismatch means it was superseded (lazy cancellation).
            if timers.scheduled.compare_exchange(entry.deadline, 0, Ordering::AcqRel, Ordering::Acquire).is_err() {
                continue;
            }
            fired += 1;
            if let Fired::Reschedule(next) = timers.fire(&*link, now, self.ping_every, self.pong_timeout) {
                self.schedule(&link, next);
            }
        }
        if !keep.is_empty() {
            self.slots[slot].lock().expect("wheel slot").append(&mut keep);
        }
        fired
    }

    /// Entries held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.slots.iter().map(|s| s.lock().expect("wheel slot").len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use bytes::Bytes;
    use herald_proto::DisconnectReason;
    use herald_proto::envelope::{self, Envelope};
    use uuid::Uuid;

    use super::*;
    use crate::link::{Control, LinkTimers};

    struct Probe {
        timers: LinkTimers,
        closed: StdMutex<Option<u32>>,
        /// Answers every ping before `send_now` returns, like a client whose pong is read on
        /// another worker while the timer thread is still in `send_now`.
        instant_pong: bool,
        pings: StdMutex<u32>,
    }

    impl Default for Probe {
        fn default() -> Self {
            Probe {
                timers: LinkTimers::new(true),
                closed: StdMutex::new(None),
                instant_pong: false,
                pings: StdMutex::new(0),
            }
        }
    }

    impl ClientLink for Probe {
        fn id(&self) -> Uuid {
            Uuid::nil()
        }
        fn envelope(&self) -> Envelope {
            Envelope::WsJson
        }
        fn ping_frame(&self) -> Bytes {
            envelope::ping(self.envelope())
        }
        fn send(&self, _frame: Bytes) {}
        fn send_now(&self, _frame: Bytes) {
            *self.pings.lock().unwrap() += 1;
            if self.instant_pong {
                self.timers.pong_received();
            }
        }
        fn close(&self, reason: DisconnectReason) {
            *self.closed.lock().unwrap() = Some(reason.code);
        }
        fn control(&self, _ctrl: Control) {}
        fn timers(&self) -> &LinkTimers {
            &self.timers
        }
    }

    #[test]
    fn stale_deadline_fires_and_dead_links_are_dropped() {
        let wheel = TimerWheel::new(25, 8);
        let probe = Arc::new(Probe::default());
        probe.timers.set_stale(5);
        let link: Arc<dyn ClientLink> = probe.clone();
        wheel.schedule(&link, 5);
        assert_eq!(wheel.advance(4), 0);
        assert_eq!(wheel.advance(5), 1);
        assert_eq!(*probe.closed.lock().unwrap(), Some(3502));

        let gone: Arc<dyn ClientLink> = Arc::new(Probe::default());
        wheel.schedule(&gone, 7);
        drop(gone);
        assert_eq!(wheel.advance(7), 0);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_pong_that_beats_the_ping_call_counts() {
        // Pings every 10 ticks, pong timeout 3.
        let wheel = TimerWheel::new(10, 3);
        let probe = Arc::new(Probe { instant_pong: true, ..Probe::default() });
        probe.timers.set_connected(10);
        let link: Arc<dyn ClientLink> = probe.clone();
        wheel.schedule(&link, 10);
        for tick in 10..=35 {
            wheel.advance(tick);
        }
        assert_eq!(*probe.pings.lock().unwrap(), 3, "pings at 10, 20 and 30");
        assert_eq!(*probe.closed.lock().unwrap(), None, "closed although every ping was answered");

        // Without pongs the same schedule closes with 3012 at the first pong deadline.
        let silent = Arc::new(Probe::default());
        silent.timers.set_connected(10);
        let link: Arc<dyn ClientLink> = silent.clone();
        let wheel = TimerWheel::new(10, 3);
        wheel.schedule(&link, 10);
        for tick in 10..=13 {
            wheel.advance(tick);
        }
        assert_eq!(*silent.closed.lock().unwrap(), Some(3012));
    }

    #[test]
    fn a_link_without_pongs_is_only_pinged() {
        let wheel = TimerWheel::new(10, 3);
        let probe = Arc::new(Probe { timers: LinkTimers::new(false), ..Probe::default() });
        probe.timers.set_connected(10);
        let link: Arc<dyn ClientLink> = probe.clone();
        wheel.schedule(&link, 10);
        for tick in 10..=35 {
            wheel.advance(tick);
        }
        assert_eq!(*probe.pings.lock().unwrap(), 3, "pings at 10, 20 and 30");
        assert_eq!(*probe.closed.lock().unwrap(), None, "a one-way transport's client never answers");
    }

    #[test]
    fn deadline_in_the_past_fires_on_the_next_tick_not_a_lap_later() {
        let wheel = TimerWheel::new(25, 8);
        wheel.advance(10);
        let probe = Arc::new(Probe::default());
        probe.timers.set_stale(3);
        let link: Arc<dyn ClientLink> = probe.clone();
        wheel.schedule(&link, 3);
        assert_eq!(wheel.advance(11), 1);
        assert_eq!(*probe.closed.lock().unwrap(), Some(3502));
    }

    #[test]
    fn earlier_deadline_supersedes_later_one() {
        let wheel = TimerWheel::new(25, 8);
        let probe = Arc::new(Probe::default());
        probe.timers.set_stale(4);
        let link: Arc<dyn ClientLink> = probe;
        wheel.schedule(&link, 20);
        wheel.schedule(&link, 4);
        assert_eq!(wheel.advance(4), 1);
        // The superseded entry at 20 is dropped without firing.
        assert_eq!(wheel.advance(20), 0);
        assert!(wheel.is_empty());
    }
}
