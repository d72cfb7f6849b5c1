//! One coarse timing wheel for every connection's pings, pong checks, stale checks and expiry.
//!
//! Why: a tokio timer per connection costs memory and contends on the runtime's timer lock at
//! scale. Here each connection has at most one live entry (a weak pointer and a deadline, 24
//! bytes), slots are one second wide, and cancellation is lazy: an entry whose deadline no
//! longer matches the link's `scheduled` value is dropped when its slot comes round.
//!
//! The wheel is sans-IO: the server calls [`TimerWheel::advance`] once a second with the
//! current tick.

use std::sync::atomic::Ordering;
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
    /// Last tick processed.
    last: Mutex<u32>,
    ping_every: u32,
    pong_timeout: u32,
}

impl TimerWheel {
    /// `ping_every` and `pong_timeout` in seconds (0 disables pings / pong checks).
    pub fn new(ping_every: u32, pong_timeout: u32) -> Self {
        TimerWheel {
            slots: (0..SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
            last: Mutex::new(0),
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
        self.slots[deadline as usize % SLOTS].lock().expect("wheel slot").push(entry);
    }

    /// Processes every slot up to tick `now`. Returns how many entries fired.
    pub fn advance(&self, now: u32) -> usize {
        let from = {
            let mut last = self.last.lock().expect("wheel last");
            if now <= *last {
                return 0;
            }
            let from = (*last + 1).max(now.saturating_sub(SLOTS as u32 - 1));
            *last = now;
            from
        };
        let mut fired = 0;
        for tick in from..=now {
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
