//! Cross-thread wake-ups, batched per fan-out.
//!
//! The server runs one single-threaded runtime per worker thread, and a connection's task lives
//! on the worker that accepted it. Waking a task of another runtime costs a write to that
//! runtime's eventfd, so a fan-out to 10,000 subscribers spread over two workers would make
//! about 5,000 such writes. Inside [`batch`], wake-ups for tasks of other workers are collected
//! per worker and handed over in chunks of [`CHUNK`] and at the end: one mailbox lock and at
//! most one cross-thread wake-up per chunk. Each worker runs a [`relay`] that wakes what its mailbox
//! receives, from its own thread, where waking is a queue push.
//!
//! Threads that are not registered workers (tests, other runtimes) get plain wake-ups.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::{Mutex, OnceLock};
use std::task::{Poll, Waker};

/// Workers that can take batched wake-ups; tasks of workers past this index are woken directly.
pub const MAX_WORKERS: usize = 256;

/// Wake-ups collected for one worker before they are handed over without waiting for the end of
/// the batch, so that the other worker starts writing while this one is still fanning out.
const CHUNK: usize = 512;

/// "Not a worker thread."
pub const NO_WORKER: u16 = u16::MAX;

#[derive(Default)]
struct Mailbox {
    inner: Mutex<MailboxInner>,
}

#[derive(Default)]
struct MailboxInner {
    wakers: Vec<Waker>,
    /// The relay task, when it is waiting for work.
    relay: Option<Waker>,
}

static MAILBOXES: [OnceLock<Mailbox>; MAX_WORKERS] = [const { OnceLock::new() }; MAX_WORKERS];

thread_local! {
    static CURRENT: Cell<u16> = const { Cell::new(NO_WORKER) };
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

#[derive(Default)]
struct Pending {
    depth: u32,
    /// Wake-ups collected per worker index.
    per_worker: Vec<Vec<Waker>>,
}

/// The worker index of the calling thread, or [`NO_WORKER`].
pub fn current_worker() -> u16 {
    CURRENT.with(Cell::get)
}

/// Marks the calling thread as worker `index` and returns the relay future the worker must run
/// (spawn it on the worker's runtime). `None` when `index` is out of range: that worker's tasks
/// are then woken directly.
pub fn register_worker(index: u16) -> Option<impl Future<Output = ()> + Send + 'static> {
    let slot = MAILBOXES.get(usize::from(index))?;
    let mailbox = slot.get_or_init(Mailbox::default);
    CURRENT.with(|c| c.set(index));
    Some(relay(mailbox))
}

/// Wakes `waker`, whose task runs on worker `worker`: at once when that is this thread, not a
/// worker, or no batch is open; otherwise when the current batch ends.
pub fn wake(worker: u16, waker: Waker) {
    if worker == NO_WORKER || usize::from(worker) >= MAX_WORKERS || worker == current_worker() {
        return waker.wake();
    }
    let i = usize::from(worker);
    let outcome = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if p.depth == 0 {
            return Err(waker);
        }
        if p.per_worker.len() <= i {
            p.per_worker.resize_with(i + 1, Vec::new);
        }
        let list = &mut p.per_worker[i];
        list.push(waker);
        Ok((list.len() >= CHUNK).then(|| std::mem::take(list)))
    });
    match outcome {
        Err(waker) => waker.wake(),
        Ok(Some(full)) => keep_spare(i, hand_over(i, full)),
        Ok(None) => {}
    }
}

/// Puts an emptied vector back as worker `i`'s list, so the next batch does not allocate.
fn keep_spare(i: usize, spare: Vec<Waker>) {
    PENDING.with(|p| {
        if let Some(slot) = p.borrow_mut().per_worker.get_mut(i)
            && slot.capacity() == 0
        {
            *slot = spare;
        }
    });
}

/// Runs `f` with cross-thread wake-ups collected, then hands them over.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    let _batch = Batch::open();
    f()
}

/// While alive, cross-thread wake-ups of this thread are collected; they are handed over when
/// the outermost open `Batch` is dropped (also on unwinding).
#[must_use = "the batch ends when this is dropped"]
pub struct Batch {
    // Not Send: the batch belongs to the thread that opened it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Batch {
    pub fn open() -> Batch {
        PENDING.with(|p| p.borrow_mut().depth += 1);
        Batch { _thread: std::marker::PhantomData }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let batches = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            p.depth -= 1;
            if p.depth > 0 {
                return Vec::new();
            }
            p.per_worker
                .iter_mut()
                .enumerate()
                .filter(|(_, w)| !w.is_empty())
                .map(|(i, w)| (i, std::mem::take(w)))
                .collect::<Vec<_>>()
        });
        for (worker, wakers) in batches {
            keep_spare(worker, hand_over(worker, wakers));
        }
    }
}

/// Hands `wakers` to `worker`'s relay; returns an empty vector to reuse.
fn hand_over(worker: usize, mut wakers: Vec<Waker>) -> Vec<Waker> {
    let Some(mailbox) = MAILBOXES.get(worker).and_then(OnceLock::get) else {
        // No relay registered for that index: wake directly.
        wakers.drain(..).for_each(Waker::wake);
        return wakers;
    };
    let relay = {
        let mut inner = mailbox.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.wakers.is_empty() {
            std::mem::swap(&mut inner.wakers, &mut wakers);
        } else {
            inner.wakers.append(&mut wakers);
        }
        inner.relay.take()
    };
    if let Some(relay) = relay {
        relay.wake();
    }
    wakers
}

/// Wakes, on its own thread, what other threads hand over to `mailbox`. Runs forever.
async fn relay(mailbox: &'static Mailbox) {
    let mut batch = Vec::new();
    loop {
        poll_fn(|cx| {
            let mut inner = mailbox.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.wakers.is_empty() {
                match &mut inner.relay {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            } else {
                std::mem::swap(&mut inner.wakers, &mut batch);
                Poll::Ready(())
            }
        })
        .await;
        batch.drain(..).for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    #[test]
    fn outside_a_batch_wakes_at_once() {
        let (c, w) = counter();
        wake(200, w);
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn batched_wakes_reach_the_other_worker_through_its_relay() {
        // Worker 201's relay runs on another thread, polled by a tiny executor loop.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let relay_thread = std::thread::spawn(move || {
            let relay = register_worker(201).expect("in range");
            let mut relay = Box::pin(relay);
            let (polls, waker) = counter();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(relay.as_mut().poll(&mut cx).is_pending());
            ready_tx.send(()).unwrap();
            // Poll again whenever the relay was woken, until told to stop.
            let mut seen = 0;
            while stop_rx.try_recv().is_err() {
                let now = polls.0.load(Ordering::SeqCst);
                if now != seen {
                    seen = now;
                    assert!(relay.as_mut().poll(&mut cx).is_pending());
                }
                std::thread::yield_now();
            }
            polls.0.load(Ordering::SeqCst)
        });
        ready_rx.recv().unwrap();
        let tasks: Vec<_> = (0..100).map(|_| counter()).collect();
        batch(|| {
            for (_, w) in &tasks {
                wake(201, w.clone());
            }
            // Nothing is woken before the batch ends.
            assert!(tasks.iter().all(|(c, _)| c.0.load(Ordering::SeqCst) == 0));
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while tasks.iter().any(|(c, _)| c.0.load(Ordering::SeqCst) == 0) && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        stop_tx.send(()).unwrap();
        let relay_wakes = relay_thread.join().unwrap();
        assert!(tasks.iter().all(|(c, _)| c.0.load(Ordering::SeqCst) == 1), "every task woken once");
        assert_eq!(relay_wakes, 1, "one cross-thread wake-up for the whole batch");
    }

    #[test]
    fn own_worker_and_nested_batches() {
        std::thread::spawn(|| {
            let _relay = register_worker(202).expect("in range");
            assert_eq!(current_worker(), 202);
            let (c, w) = counter();
            batch(|| wake(202, w));
            assert_eq!(c.0.load(Ordering::SeqCst), 1, "own tasks are woken at once");
        })
        .join()
        .unwrap();
        let (c, w) = counter();
        batch(|| {
            batch(|| wake(203, w));
            assert_eq!(c.0.load(Ordering::SeqCst), 0, "inner batch does not hand over");
        });
        // Worker 203 never registered a mailbox: handed over as direct wake-ups.
        assert_eq!(c.0.load(Ordering::SeqCst), 1);
    }
}
