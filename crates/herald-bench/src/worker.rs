//! A worker process: opens its share of client connections, answers pings, counts and times
//! what arrives, and reports to the coordinator over stdout (JSON lines). Commands come on
//! stdin; when stdin closes (the coordinator is gone) the worker exits.
//!
//! One single-threaded runtime per process, one small task per connection, one read buffer
//! shared by all of them.

use std::cell::{Cell, RefCell};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use herald_proto::{Command, ConnectRequest, Encoding, SubscribeRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{AbortHandle, LocalSet};

use crate::http::HttpConn;
use crate::job::{ApiJob, Cmd, Enc, HandshakeJob, Job, Msg, Progress, Ready, Target, WorkerResult};
use crate::payload;
use crate::stats::{self, PubAgg};
use crate::util::now_ns;
use crate::wsclient::{self, OP_BINARY, OP_TEXT, Pump, WsError, WsStream};

/// Reads per readiness wake-up before yielding to other connections.
const MAX_READS: usize = 4;
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

/// Decrements the counters a connection task holds when it ends, including by abort.
struct Guard {
    ctx: Rc<Ctx>,
    handshaking: bool,
    open: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl Guard {
    fn handshake_done(&mut self) {
        if self.handshaking {
            self.handshaking = false;
            self.ctx.pending.set(self.ctx.pending.get() - 1);
        }
        self.permit = None;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.handshake_done();
        if self.open {
            self.ctx.open.set(self.ctx.open.get() - 1);
        }
    }
}

/// The commands that open a Herald session: connect + subscribe, in one frame.
fn herald_hello(enc: Enc, token: String, channel: String) -> Vec<u8> {
    let encoding = match enc {
        Enc::Json => Encoding::Json,
        Enc::Protobuf => Encoding::Protobuf,
    };
    let connect = Command {
        id: 1,
        connect: Some(ConnectRequest { token, name: "bench".into(), ..Default::default() }),
        ..Default::default()
    };
    let subscribe =
        Command { id: 2, subscribe: Some(SubscribeRequest { channel, ..Default::default() }), ..Default::default() };
    let mut out = Vec::with_capacity(256);
    herald_proto::encode_command(encoding, &connect, &mut out);
    if encoding == Encoding::Json {
        out.push(b'\n');
    }
    herald_proto::encode_command(encoding, &subscribe, &mut out);
    out
}

/// Looks for the replies to connect (id 1) and subscribe (id 2) in a message. `None`: the
/// message holds no reply (a push). `Some(Ok(true))`: subscribed.
fn herald_handshake_reply(enc: Enc, message: &[u8]) -> Option<Result<bool, WsError>> {
    let encoding = if enc == Enc::Json { Encoding::Json } else { Encoding::Protobuf };
    let replies = match herald_proto::decode_replies(encoding, Bytes::copy_from_slice(message)) {
        Ok(r) => r,
        Err(e) => return Some(Err(WsError::new("bad_reply", e.to_string()))),
    };
    let (mut any, mut subscribed) = (false, false);
    for r in &replies {
        if let Some(d) = r.push.as_ref().and_then(|p| p.disconnect.as_ref()) {
            return Some(Err(WsError::new(format!("disconnect_{}", d.code), d.reason.clone())));
        }
        match (r.id, &r.error) {
            (1, Some(e)) => return Some(Err(WsError::new(format!("connect_{}", e.code), e.message.clone()))),
            (2, Some(e)) => return Some(Err(WsError::new(format!("subscribe_{}", e.code), e.message.clone()))),
            (1, None) => any = true,
            (2, None) => (any, subscribed) = (true, true),
            _ => {}
        }
    }
    any.then_some(Ok(subscribed))
}

fn is_ping(target: Target, enc: Enc, op: u8, message: &[u8]) -> Option<&'static [u8]> {
    if target != Target::Herald {
        return None;
    }
    match (enc, op) {
        (Enc::Json, OP_TEXT) if message == b"{}" => Some(b"{}"),
        (Enc::Protobuf, OP_BINARY) if message == [0u8] => Some(&[0u8]),
        _ => None,
    }
}

async fn dial(ctx: &Ctx, idx: u64) -> Result<(WsStream, String), WsError> {
    let job = &ctx.job;
    let source = (!job.source_ips.is_empty()).then(|| job.source_ips[(idx as usize) % job.source_ips.len()]);
    let (addr, host) = &job.servers[(idx as usize) % job.servers.len()];
    let stream = wsclient::tcp_connect(*addr, source, ctx.zero_linger).await?;
    let (channel, path) = ctx.channel_path(idx);
    let protocol = (job.target == Target::Herald && job.encoding == Enc::Protobuf).then_some("centrifuge-protobuf");
    let ws = wsclient::handshake(stream, host, &path, protocol, (idx as u32).wrapping_mul(2_654_435_761)).await?;
    Ok((ws, channel))
}

/// One client connection: dial, handshake (+ connect/subscribe for Herald), then receive until
/// the server closes or the task is aborted.
async fn conn_task(ctx: Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    let mut guard = Guard { ctx: ctx.clone(), handshaking: true, open: false, permit: Some(permit) };
    let (mut ws, channel) = match tokio::time::timeout_at(deadline, dial(&ctx, idx)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return ctx.fail(&e),
        Err(_) => return ctx.fail(&WsError::new("timeout", "connect/upgrade timed out")),
    };
    let job = &ctx.job;
    let mut ready = job.target != Target::Herald;
    if !ready {
        let token = match &job.hmac_secret {
            Some(secret) => {
                let claims = serde_json::json!({ "sub": idx.to_string() });
                match herald_auth::sign_hmac(&claims, secret, "HS256") {
                    Ok(t) => t,
                    Err(e) => return ctx.fail(&WsError::new("token", e)),
                }
            }
            None => String::new(),
        };
        let hello = herald_hello(job.encoding, token, channel);
        let op = if job.encoding == Enc::Json { OP_TEXT } else { OP_BINARY };
        if let Err(e) = ws.send(op, &hello).await {
            return ctx.fail(&WsError::io("hello_write", &e));
        }
    } else {
        ctx.on_ready(started);
        guard.handshake_done();
        guard.open = true;
        ctx.open.set(ctx.open.get() + 1);
        if ctx.close_when_ready {
            return;
        }
    }
    let mut last = 0u64;
    loop {
        let read = if ready {
            ws.read(&ctx.scratch, MAX_READS).await
        } else {
            match tokio::time::timeout_at(deadline, ws.read(&ctx.scratch, MAX_READS)).await {
                Ok(r) => r,
                Err(_) => return ctx.fail(&WsError::new("timeout", "no subscribe reply in time")),
            }
        };
        let now = now_ns();
        let mut handshake: Option<Result<bool, WsError>> = None;
        let result = match read {
            Ok(None) => Ok(Pump::Closed(None)),
            Err(e) => Err(e),
            Ok(Some((len, fresh))) => {
                ctx.stats.borrow_mut().bytes_in += fresh as u64;
                let buf = ctx.scratch.borrow();
                ws.parse(&buf[..len], |op, message, replies| {
                    if let Some(pong) = is_ping(job.target, job.encoding, op, message) {
                        replies.push((op, pong));
                        ctx.stats.borrow_mut().pings += 1;
                        return;
                    }
                    if !ready && !matches!(handshake, Some(Ok(true)) | Some(Err(_))) {
                        match herald_handshake_reply(job.encoding, message) {
                            Some(Ok(done)) => {
                                handshake = Some(Ok(done));
                                return;
                            }
                            Some(Err(e)) => {
                                handshake = Some(Err(e));
                                return;
                            }
                            None => {}
                        }
                    }
                    ctx.deliver(&mut last, message, now);
                })
            }
        };
        match handshake {
            Some(Ok(true)) if !ready => {
                ready = true;
                ctx.on_ready(started);
                guard.handshake_done();
                guard.open = true;
                ctx.open.set(ctx.open.get() + 1);
                if ctx.close_when_ready {
                    return;
                }
            }
            Some(Err(e)) => return ctx.fail(&e),
            _ => {}
        }
        match result {
            Ok(Pump::Open) => {}
            Ok(Pump::Closed(code)) => {
                let kind = code.map(|c| format!("close_{c}")).unwrap_or_else(|| "eof".into());
                if ready {
                    *ctx.stats.borrow_mut().server_closed.entry(kind).or_default() += 1;
                    return;
                }
                return ctx.fail(&WsError::new(kind, "closed during the handshake"));
            }
            Err(e) => {
                if ready {
                    *ctx.stats.borrow_mut().server_closed.entry(e.kind).or_default() += 1;
                    return;
                }
                return ctx.fail(&e);
            }
        }
    }
}

struct Conns {
    /// `(global index, task)` for every connection this worker opened (for churn).
    tasks: Vec<(u64, AbortHandle)>,
}

/// One plain TCP connection (`floor`): connect, then receive newline-terminated payloads until
/// the server closes or the task is aborted. Reads exactly like a WebSocket connection does.
async fn raw_conn_task(ctx: Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let mut guard = Guard { ctx: ctx.clone(), handshaking: true, open: false, permit: Some(permit) };
    let job = &ctx.job;
    let source = (!job.source_ips.is_empty()).then(|| job.source_ips[(idx as usize) % job.source_ips.len()]);
    let (addr, _) = &job.servers[(idx as usize) % job.servers.len()];
    let stream = match tokio::time::timeout(ctx.connect_timeout, wsclient::tcp_connect(*addr, source, false)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.fail(&e),
        Err(_) => return ctx.fail(&WsError::new("timeout", "connect timed out")),
    };
    ctx.on_ready(started);
    guard.handshake_done();
    guard.open = true;
    ctx.open.set(ctx.open.get() + 1);
    let mut ws = WsStream::raw(stream);
    let mut last = 0u64;
    loop {
        let read = ws.read(&ctx.scratch, MAX_READS).await;
        let now = now_ns();
        let closed = match read {
            Ok(None) => "eof".to_owned(),
            Err(e) => e.kind,
            Ok(Some((len, fresh))) => {
                ctx.stats.borrow_mut().bytes_in += fresh as u64;
                let buf = ctx.scratch.borrow();
                match ws.lines(&buf[..len], |message| ctx.deliver(&mut last, message, now)) {
                    Ok(()) => continue,
                    Err(e) => e.kind,
                }
            }
        };
        *ctx.stats.borrow_mut().server_closed.entry(closed).or_default() += 1;
        return;
    }
}

fn spawn_conn(ctx: &Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) -> AbortHandle {
    ctx.pending.set(ctx.pending.get() + 1);
    if ctx.job.raw {
        return tokio::task::spawn_local(raw_conn_task(ctx.clone(), idx, permit)).abort_handle();
    }
    tokio::task::spawn_local(conn_task(ctx.clone(), idx, permit)).abort_handle()
}

async fn acquire(ctx: &Ctx) -> OwnedSemaphorePermit {
    ctx.sem.clone().acquire_owned().await.expect("semaphore never closed")
}

/// Waits until every started handshake has finished (each is bounded by the connect timeout).
async fn wait_pending(ctx: &Ctx) {
    while ctx.pending.get() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens the connections of one stage at the worker's ramp rate.
async fn open_stage(ctx: &Rc<Ctx>, conns: &mut Conns, range: (u64, u64)) -> Duration {
    let t0 = tokio::time::Instant::now();
    let ramp = ctx.job.ramp;
    for (k, idx) in (range.0..range.1).enumerate() {
        if ramp > 0.0 {
            tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / ramp)).await;
        }
        let permit = acquire(ctx).await;
        let h = spawn_conn(ctx, idx, permit);
        conns.tasks.push((idx, h));
    }
    wait_pending(ctx).await;
    t0.elapsed()
}

/// Closes and reopens `percent`% of the connections per second, spread evenly over the second.
async fn churn(ctx: Rc<Ctx>, conns: Rc<RefCell<Conns>>, percent: f64) {
    let n = conns.borrow().tasks.len();
    let per_sec = (n as f64 * percent / 100.0).round();
    if n == 0 || per_sec < 1.0 {
        return;
    }
    let step = Duration::from_secs_f64(1.0 / per_sec);
    let t0 = tokio::time::Instant::now();
    let mut cursor = 0usize;
    for k in 1u64.. {
        tokio::time::sleep_until(t0 + step * (k as u32)).await;
        let permit = acquire(&ctx).await;
        let idx = {
            let c = conns.borrow();
            c.tasks[cursor].1.abort();
            c.tasks[cursor].0
        };
        let h = spawn_conn(&ctx, idx, permit);
        conns.borrow_mut().tasks[cursor].1 = h;
        cursor = (cursor + 1) % n;
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

/// Server API load: `conns` keep-alive connections, each sending one request at a time.
async fn run_api(ctx: Rc<Ctx>, api: ApiJob, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut conns = Vec::with_capacity(api.conns);
    for i in 0..api.conns {
        let job = &ctx.job;
        let source = (!job.source_ips.is_empty()).then(|| job.source_ips[i % job.source_ips.len()]);
        let (addr, host) = &job.servers[(i + job.worker * api.conns) % job.servers.len()];
        let mut c = HttpConn::new(*addr, host, source);
        match c.connect().await {
            Ok(()) => {
                conns.push(c);
                ctx.open.set(ctx.open.get() + 1);
            }
            Err(e) => ctx.fail(&WsError::io("api_connect", &e)),
        }
    }
    let (errors, error_kinds) = {
        let st = ctx.stats.borrow();
        (st.errors, st.error_kinds.clone())
    };
    emit(&Msg::Ready(Ready { stage: 0, open: ctx.open.get(), errors, elapsed_ms: 0, error_kinds }));
    if !wait_start(&mut rx).await {
        emit(&Msg::Result(Box::new(result(&ctx, Duration::ZERO, Duration::ZERO))));
        return;
    }
    ctx.measuring.set(true);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(api.duration_ms);
    let seq = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let ctx = ctx.clone();
        let api = api.clone();
        let seq = seq.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut body = Vec::with_capacity(api.payload + 128);
            while tokio::time::Instant::now() < deadline {
                let s = seq.get() + 1;
                seq.set(s);
                body.clear();
                if let Some(ch) = &api.herald_channel {
                    body.extend_from_slice(b"{\"channel\":\"");
                    body.extend_from_slice(ch.as_bytes());
                    body.extend_from_slice(b"\",\"data\":");
                }
                let sent = Instant::now();
                payload::write(&mut body, s, now_ns(), api.payload);
                if api.herald_channel.is_some() {
                    body.push(b'}');
                }
                let r = tokio::time::timeout_at(
                    deadline + Duration::from_secs(5),
                    conn.post(&api.path, &api.headers, &body),
                )
                .await;
                let ok = match &r {
                    Ok(Ok(resp)) => publish_ok(api.herald_channel.is_some(), resp.status, &resp.body),
                    _ => false,
                };
                let mut st = ctx.stats.borrow_mut();
                st.api_requests += 1;
                if ok {
                    stats::record(&mut ctx.api_hist.borrow_mut(), sent.elapsed().as_micros() as u64);
                } else {
                    st.api_errors += 1;
                    let timed_out = r.is_err();
                    if st.api_errors <= 3 {
                        match r {
                            Ok(Ok(resp)) => eprintln!(
                                "worker {}: API answered {}: {}",
                                ctx.job.worker,
                                resp.status,
                                String::from_utf8_lossy(&resp.body)
                            ),
                            Ok(Err(e)) => eprintln!("worker {}: API request failed: {e}", ctx.job.worker),
                            Err(_) => eprintln!("worker {}: API request timed out", ctx.job.worker),
                        }
                    }
                    drop(st);
                    if timed_out {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed();
    emit(&Msg::Result(Box::new(result(&ctx, elapsed, elapsed))));
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
    fn hello_frames_decode_as_two_commands() {
        for enc in [Enc::Json, Enc::Protobuf] {
            let hello = herald_hello(enc, "tok".into(), "news".into());
            let encoding = if enc == Enc::Json { Encoding::Json } else { Encoding::Protobuf };
            let cmds = herald_proto::decode_commands(encoding, &hello, 10).unwrap();
            assert_eq!(cmds.len(), 2);
            assert_eq!(cmds[0].connect.as_ref().unwrap().token, "tok");
            assert_eq!(cmds[1].subscribe.as_ref().unwrap().channel, "news");
        }
        let json = herald_hello(Enc::Json, "t".into(), "c".into());
        assert_eq!(
            String::from_utf8(json).unwrap(),
            "{\"id\":1,\"connect\":{\"token\":\"t\",\"name\":\"bench\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"c\"}}"
        );
    }

    #[test]
    fn handshake_replies() {
        let both = br#"{"id":1,"connect":{"client":"x","version":"0.1"}}
{"id":2,"subscribe":{}}"#;
        assert!(matches!(herald_handshake_reply(Enc::Json, both), Some(Ok(true))));
        assert!(matches!(herald_handshake_reply(Enc::Json, br#"{"id":1,"connect":{}}"#), Some(Ok(false))));
        let err = herald_handshake_reply(Enc::Json, br#"{"id":2,"error":{"code":103,"message":"permission denied"}}"#);
        assert_eq!(err.unwrap().unwrap_err().kind, "subscribe_103");
        assert!(herald_handshake_reply(Enc::Json, br#"{"push":{"channel":"c","pub":{"data":{}}}}"#).is_none());
    }

    #[test]
    fn pings_by_encoding() {
        assert_eq!(is_ping(Target::Herald, Enc::Json, OP_TEXT, b"{}"), Some(&b"{}"[..]));
        assert_eq!(is_ping(Target::Herald, Enc::Protobuf, OP_BINARY, &[0]), Some(&[0u8][..]));
        assert_eq!(is_ping(Target::Nchan, Enc::Json, OP_TEXT, b"{}"), None);
        assert!(publish_ok(true, 200, br#"{"result":{}}"#));
        assert!(!publish_ok(true, 200, br#"{"error":{"code":102}}"#));
        assert!(publish_ok(false, 202, b""));
    }
}
