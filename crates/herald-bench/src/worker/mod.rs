//! A worker process: opens its share of client connections, answers pings, counts and times
//! what arrives, and reports to the coordinator over stdout (JSON lines). Commands come on
//! stdin; when stdin closes (the coordinator is gone) the worker exits.
//!
//! One single-threaded runtime per process, one small task per connection, one read buffer
//! shared by all of them.
//!
//! This module owns the process (job and command intake, the runtime), the shared counters
//! (`Ctx`), progress and result reporting, and the command loop of each load. The client
//! connections themselves (dial, handshake, receive, ramp, churn) are in `conn`; the server
//! API load is in `api`.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::LocalSet;

use crate::job::{Cmd, HandshakeJob, Job, Msg, Progress, Ready, WorkerResult};
use crate::payload;
use crate::stats::{self, PubAgg};
use crate::wsclient::WsError;

mod api;
mod conn;
mod http;

use api::run_api;
use conn::{Conns, acquire, churn, open_stage, spawn_conn, wait_pending};

/// Largest per-publication table a worker keeps.
pub const MAX_SEQ: u64 = 2_000_000;

pub fn main() -> ExitCode {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.trim().is_empty() {
        eprintln!("herald-bench worker: expected a JSON job on stdin");
        return ExitCode::from(2);
    }
    let job: Job = match serde_json::from_str(&line) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("herald-bench worker: bad job: {e}");
            return ExitCode::from(2);
        }
    };
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Cmd>(line.trim()) {
                Ok(cmd) => {
                    if tx.send(cmd).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("herald-bench worker: bad command {line:?}: {e}"),
            }
        }
    });
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald-bench worker: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let max_time = Duration::from_millis(job.max_time_ms);
    let local = LocalSet::new();
    let outcome = local.block_on(&rt, async move { tokio::time::timeout(max_time, run(job, rx)).await });
    match outcome {
        Ok(()) => {}
        Err(_) => emit(&Msg::Fatal { error: "worker hit its time limit".into() }),
    }
    // Exit without tearing down thousands of tasks one by one; the kernel closes the sockets.
    std::process::exit(0)
}

/// Writes one message line to stdout; exits if the coordinator is gone.
fn emit(msg: &Msg) {
    let mut out = std::io::stdout().lock();
    let line = serde_json::to_string(msg).expect("messages serialize");
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
}

#[derive(Default)]
struct Stats {
    handshakes: u64,
    handshakes_measured: u64,
    errors: u64,
    errors_measured: u64,
    error_kinds: std::collections::BTreeMap<String, u64>,
    server_closed: std::collections::BTreeMap<String, u64>,
    deliveries: u64,
    unique: u64,
    gaps: u64,
    dups: u64,
    out_of_order: u64,
    other_messages: u64,
    pings: u64,
    bytes_in: u64,
    first_recv_ns: u64,
    last_recv_ns: u64,
    pubs: Vec<PubAgg>,
    dirty: Vec<u64>,
    is_dirty: Vec<bool>,
    api_requests: u64,
    api_errors: u64,
}

struct Ctx {
    job: Job,
    stats: RefCell<Stats>,
    delivery_hist: RefCell<Histogram<u64>>,
    handshake_hist: RefCell<Histogram<u64>>,
    api_hist: RefCell<Histogram<u64>>,
    scratch: RefCell<Vec<u8>>,
    sem: Arc<Semaphore>,
    open: Cell<u64>,
    /// Connection attempts whose handshake has not finished.
    pending: Cell<u64>,
    /// Ready connections that stopped reading (`job.stalled_share`).
    stalled: Cell<u64>,
    /// Wall time (ns) of the latest handshake and of the first drop after `start` (storm).
    last_ready_ns: Cell<u64>,
    first_drop_ns: Cell<u64>,
    measuring: Cell<bool>,
    /// Close each connection as soon as it is ready (handshake-rate load).
    close_when_ready: bool,
    zero_linger: bool,
    connect_timeout: Duration,
}

impl Ctx {
    fn fail(&self, e: &WsError) {
        let mut st = self.stats.borrow_mut();
        st.errors += 1;
        if self.measuring.get() {
            st.errors_measured += 1;
        }
        *st.error_kinds.entry(e.kind.clone()).or_default() += 1;
        if st.errors <= 3 {
            eprintln!("worker {}: connection failed: {e}", self.job.worker);
        }
    }

    fn on_ready(&self, started: Instant) {
        let mut st = self.stats.borrow_mut();
        st.handshakes += 1;
        if self.measuring.get() {
            st.handshakes_measured += 1;
        }
        stats::record(&mut self.handshake_hist.borrow_mut(), started.elapsed().as_micros() as u64);
        self.last_ready_ns.set(crate::util::now_ns());
    }

    /// A ready connection was closed by the server (`kind`: close code or error).
    fn dropped(&self, kind: String) {
        *self.stats.borrow_mut().server_closed.entry(kind).or_default() += 1;
        if self.measuring.get() && self.first_drop_ns.get() == 0 {
            self.first_drop_ns.set(crate::util::now_ns());
        }
    }

    /// Counts what one data message carries. `last` is the connection's last sequence number.
    fn deliver(&self, last: &mut u64, message: &[u8], now: u64) {
        let mut st = self.stats.borrow_mut();
        let st = &mut *st;
        let mut hist = self.delivery_hist.borrow_mut();
        let strict = self.job.strict_order;
        let found = payload::scan(message, |seq, t| {
            let us = now.saturating_sub(t) / 1000;
            st.deliveries += 1;
            stats::record(&mut hist, us);
            if st.first_recv_ns == 0 {
                st.first_recv_ns = now;
            }
            st.last_recv_ns = now;
            if seq == 0 || seq > self.job.max_seq {
                st.other_messages += 1;
                return;
            }
            let i = seq as usize;
            if st.pubs.len() <= i {
                st.pubs.resize(i + 1, PubAgg::default());
                st.is_dirty.resize(i + 1, false);
            }
            st.pubs[i].add(us);
            if !st.is_dirty[i] {
                st.is_dirty[i] = true;
                st.dirty.push(seq);
            }
            if *last == 0 {
                if strict {
                    st.gaps += seq - 1;
                }
                st.unique += 1;
                *last = seq;
            } else if seq > *last {
                st.gaps += seq - *last - 1;
                st.unique += 1;
                *last = seq;
            } else if seq == *last {
                st.dups += 1;
            } else {
                st.out_of_order += 1;
            }
        });
        if found == 0 {
            st.other_messages += 1;
        }
    }

    fn take_dirty(&self) -> Vec<[u64; 4]> {
        let mut st = self.stats.borrow_mut();
        let dirty = std::mem::take(&mut st.dirty);
        dirty
            .into_iter()
            .map(|seq| {
                st.is_dirty[seq as usize] = false;
                let p = st.pubs[seq as usize];
                [seq, p.min_us, p.max_us, p.count]
            })
            .collect()
    }

    fn progress(&self) -> Progress {
        let pubs = self.take_dirty();
        let st = self.stats.borrow();
        Progress {
            open: self.open.get(),
            pending: self.pending.get(),
            handshakes_measured: st.handshakes_measured,
            last_ready_ns: self.last_ready_ns.get(),
            first_drop_ns: self.first_drop_ns.get(),
            handshakes: st.handshakes,
            errors: st.errors,
            deliveries: st.deliveries,
            pings: st.pings,
            pubs,
            api_requests: st.api_requests,
        }
    }

    fn channel_path(&self, idx: u64) -> (String, String) {
        let channel = self.job.channels.name(idx);
        let path = self.job.ws_path.replace("{channel}", &channel);
        (channel, path)
    }
}

async fn progress_loop(ctx: Rc<Ctx>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        emit(&Msg::Progress(ctx.progress()));
    }
}

fn result(ctx: &Ctx, measured: Duration, api_elapsed: Duration) -> WorkerResult {
    let pubs = {
        let st = ctx.stats.borrow();
        st.pubs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.count > 0)
            .map(|(i, p)| [i as u64, p.min_us, p.max_us, p.count])
            .collect()
    };
    let st = ctx.stats.borrow();
    WorkerResult {
        worker: ctx.job.worker,
        open: ctx.open.get(),
        handshakes: st.handshakes,
        handshakes_measured: st.handshakes_measured,
        errors: st.errors,
        errors_measured: st.errors_measured,
        error_kinds: st.error_kinds.clone(),
        server_closed: st.server_closed.clone(),
        deliveries: st.deliveries,
        unique: st.unique,
        gaps: st.gaps,
        dups: st.dups,
        out_of_order: st.out_of_order,
        other_messages: st.other_messages,
        pings: st.pings,
        bytes_in: st.bytes_in,
        first_recv_ns: st.first_recv_ns,
        last_recv_ns: st.last_recv_ns,
        delivery_hist: stats::encode(&ctx.delivery_hist.borrow()),
        handshake_hist: stats::encode(&ctx.handshake_hist.borrow()),
        pubs,
        api_requests: st.api_requests,
        api_errors: st.api_errors,
        api_hist: stats::encode(&ctx.api_hist.borrow()),
        api_elapsed_ms: api_elapsed.as_millis() as u64,
        measured_ms: measured.as_millis() as u64,
        cpu_s: crate::procfs::self_cpu_seconds(),
        rss_kb: crate::procfs::self_rss_kb(),
    }
}

/// Waits for `Start` (true) or `Stop`/EOF (false), ignoring `Next`.
async fn wait_start(rx: &mut mpsc::UnboundedReceiver<Cmd>) -> bool {
    loop {
        match rx.recv().await {
            Some(Cmd::Start) => return true,
            Some(Cmd::Next) => {}
            Some(Cmd::Stop) | None => return false,
        }
    }
}

async fn wait_stop(rx: &mut mpsc::UnboundedReceiver<Cmd>) {
    while let Some(cmd) = rx.recv().await {
        if cmd == Cmd::Stop {
            return;
        }
    }
}

async fn run(job: Job, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let close_when_ready = job.handshake.is_some();
    let zero_linger = job.churn_percent.is_some() || close_when_ready;
    let ctx = Rc::new(Ctx {
        sem: Arc::new(Semaphore::new(job.max_inflight.max(1))),
        connect_timeout: Duration::from_millis(job.connect_timeout_ms),
        stats: RefCell::new(Stats {
            pubs: Vec::with_capacity(job.max_seq.min(MAX_SEQ) as usize + 1),
            ..Default::default()
        }),
        delivery_hist: RefCell::new(stats::new_hist()),
        handshake_hist: RefCell::new(stats::new_hist()),
        api_hist: RefCell::new(stats::new_hist()),
        scratch: RefCell::new(Vec::with_capacity(64 * 1024)),
        open: Cell::new(0),
        pending: Cell::new(0),
        stalled: Cell::new(0),
        last_ready_ns: Cell::new(0),
        first_drop_ns: Cell::new(0),
        measuring: Cell::new(false),
        close_when_ready,
        zero_linger,
        job,
    });
    tokio::task::spawn_local(progress_loop(ctx.clone()));

    if let Some(api) = ctx.job.api.clone() {
        return run_api(ctx, api, rx).await;
    }
    if let Some(hs) = ctx.job.handshake.clone() {
        return run_handshakes(ctx, hs, rx).await;
    }

    let conns = Rc::new(RefCell::new(Conns { tasks: Vec::new() }));
    let stages = ctx.job.stages.clone();
    let mut started = false;
    for (i, range) in stages.iter().enumerate() {
        let mut c = std::mem::replace(&mut *conns.borrow_mut(), Conns { tasks: Vec::new() });
        let elapsed = open_stage(&ctx, &mut c, *range).await;
        *conns.borrow_mut() = c;
        let (errors, error_kinds) = {
            let st = ctx.stats.borrow();
            (st.errors, st.error_kinds.clone())
        };
        emit(&Msg::Ready(Ready {
            stage: i,
            open: ctx.open.get(),
            errors,
            elapsed_ms: elapsed.as_millis() as u64,
            error_kinds,
            stalled: ctx.stalled.get(),
        }));
        if i + 1 == stages.len() {
            break;
        }
        match rx.recv().await {
            Some(Cmd::Next) => {}
            Some(Cmd::Start) => {
                started = true;
                break;
            }
            Some(Cmd::Stop) | None => {
                emit(&Msg::Result(Box::new(result(&ctx, Duration::ZERO, Duration::ZERO))));
                return;
            }
        }
    }
    if !started && !wait_start(&mut rx).await {
        emit(&Msg::Result(Box::new(result(&ctx, Duration::ZERO, Duration::ZERO))));
        return;
    }
    ctx.measuring.set(true);
    let t0 = Instant::now();
    let churner =
        ctx.job.churn_percent.map(|p| tokio::task::spawn_local(churn(ctx.clone(), conns.clone(), p)).abort_handle());
    wait_stop(&mut rx).await;
    if let Some(c) = churner {
        c.abort();
    }
    emit(&Msg::Result(Box::new(result(&ctx, t0.elapsed(), Duration::ZERO))));
}

/// Handshake-rate load: open, handshake, close, as fast as `max_inflight` allows.
async fn run_handshakes(ctx: Rc<Ctx>, hs: HandshakeJob, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    emit(&Msg::Ready(Ready::default()));
    if !wait_start(&mut rx).await {
        emit(&Msg::Result(Box::new(result(&ctx, Duration::ZERO, Duration::ZERO))));
        return;
    }
    ctx.measuring.set(true);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(hs.duration_ms);
    let base = ctx.job.stages.first().map(|r| r.0).unwrap_or(0);
    let mut n = 0u64;
    while n < hs.total && tokio::time::Instant::now() < deadline {
        let permit = tokio::select! {
            p = acquire(&ctx) => p,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        spawn_conn(&ctx, base + n, permit);
        n += 1;
    }
    wait_pending(&ctx).await;
    let elapsed = t0.elapsed();
    emit(&Msg::Result(Box::new(result(&ctx, elapsed, Duration::ZERO))));
    wait_stop(&mut rx).await;
}

/// Whether a publish answer means "published": Herald 200 `{"result":…}`, Nchan 201/202.
pub fn publish_ok(herald: bool, status: u16, body: &[u8]) -> bool {
    if herald { status == 200 && !body.windows(8).any(|w| w == b"\"error\":") } else { status == 201 || status == 202 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_answers() {
        assert!(publish_ok(true, 200, br#"{"result":{}}"#));
        assert!(!publish_ok(true, 200, br#"{"error":{"code":102}}"#));
        assert!(publish_ok(false, 202, b""));
    }
}
