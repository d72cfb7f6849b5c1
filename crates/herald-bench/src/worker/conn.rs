//! The client connections of a worker: dialing, the WebSocket (and Herald connect/subscribe)
//! handshake, the receive loop that answers pings and counts deliveries, plain TCP readers for
//! `floor`, and opening them at the ramp rate or reopening them under churn.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_proto::{Command, ConnectRequest, Encoding, SubscribeRequest};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::AbortHandle;

use super::Ctx;
use crate::job::{ClientTransport, Enc, Target, is_stalled};
use crate::util::now_ns;
use crate::wsclient::{self, OP_BINARY, OP_TEXT, Pump, WsError, WsStream};

/// Reads per readiness wake-up before yielding to other connections.
const MAX_READS: usize = 4;

/// Decrements the counters a connection task holds when it ends, including by abort.
pub(super) struct Guard {
    ctx: Rc<Ctx>,
    handshaking: bool,
    open: bool,
    permit: Option<OwnedSemaphorePermit>,
}

impl Guard {
    pub(super) fn new(ctx: Rc<Ctx>, permit: OwnedSemaphorePermit) -> Self {
        Guard { ctx, handshaking: true, open: false, permit: Some(permit) }
    }

    /// The connection is ready: counted open until the guard drops.
    pub(super) fn opened(&mut self) {
        self.handshake_done();
        self.open = true;
        self.ctx.open.set(self.ctx.open.get() + 1);
    }

    pub(super) fn is_open(&self) -> bool {
        self.open
    }

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

/// How one session of a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Never became ready (counted by `Ctx::fail`).
    Failed,
    /// Was ready, then the server closed it or the socket broke (counted in `server_closed`).
    Dropped,
    /// Closed by us (handshake-rate load).
    Done,
}

fn failed(ctx: &Ctx, e: &WsError) -> Ended {
    ctx.fail(e);
    Ended::Failed
}

/// Consecutive failed attempts after which a reconnecting client gives up.
const MAX_FAILED_ATTEMPTS: u32 = 200;

/// One client connection; with `job.reconnect`, it reconnects (after the backoff) whenever the
/// server drops it or an attempt fails, up to [`MAX_FAILED_ATTEMPTS`] failures in a row.
async fn conn_task(ctx: Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) {
    let mut ended = session(ctx.clone(), idx, permit).await;
    let Some(backoff) = ctx.job.reconnect else { return };
    let (mut attempt, mut failures) = (0u32, 0u32);
    loop {
        match ended {
            Ended::Done => return,
            Ended::Dropped => (attempt, failures) = (0, 0),
            Ended::Failed => failures += 1,
        }
        if failures >= MAX_FAILED_ATTEMPTS {
            return;
        }
        let seed = idx.rotate_left(20) ^ u64::from(attempt) ^ now_ns();
        let delay = backoff.delay_ms(attempt, unit(seed));
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        attempt = attempt.saturating_add(1);
        let permit = acquire(&ctx).await;
        ctx.pending.set(ctx.pending.get() + 1);
        ended = session(ctx.clone(), idx, permit).await;
    }
}

/// A number in [0, 1) from `seed` (splitmix64): the backoff's jitter, no RNG state to share.
fn unit(seed: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// One session: dial, handshake (+ connect/subscribe for Herald), then receive until the server
/// closes or the task is aborted. A stalled connection (`job.stalled_share`) stops reading once
/// subscribed and holds its socket until the worker exits.
async fn session(ctx: Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) -> Ended {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    let mut guard = Guard { ctx: ctx.clone(), handshaking: true, open: false, permit: Some(permit) };
    let (mut ws, channel) = match tokio::time::timeout_at(deadline, dial(&ctx, idx)).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => return failed(&ctx, &e),
        Err(_) => return failed(&ctx, &WsError::new("timeout", "connect/upgrade timed out")),
    };
    let job = &ctx.job;
    let mut ready = job.target != Target::Herald;
    if !ready {
        let token = match &job.hmac_secret {
            Some(secret) => {
                let claims = serde_json::json!({ "sub": idx.to_string() });
                match herald_auth::sign_hmac(&claims, secret, "HS256") {
                    Ok(t) => t,
                    Err(e) => return failed(&ctx, &WsError::new("token", e)),
                }
            }
            None => String::new(),
        };
        let hello = herald_hello(job.encoding, token, channel);
        let op = if job.encoding == Enc::Json { OP_TEXT } else { OP_BINARY };
        if let Err(e) = ws.send(op, &hello).await {
            return failed(&ctx, &WsError::io("hello_write", &e));
        }
    } else {
        ctx.on_ready(started);
        guard.handshake_done();
        guard.open = true;
        ctx.open.set(ctx.open.get() + 1);
        if ctx.close_when_ready {
            return Ended::Done;
        }
    }
    let mut last = 0u64;
    loop {
        let read = if ready {
            ws.read(&ctx.scratch, MAX_READS).await
        } else {
            match tokio::time::timeout_at(deadline, ws.read(&ctx.scratch, MAX_READS)).await {
                Ok(r) => r,
                Err(_) => return failed(&ctx, &WsError::new("timeout", "no subscribe reply in time")),
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
                    return Ended::Done;
                }
                if is_stalled(idx, job.stalled_share) {
                    ctx.stalled.set(ctx.stalled.get() + 1);
                    // Never read again: the server's queue for this client grows until it
                    // closes the connection; the socket stays open on this side.
                    let _held = ws;
                    return std::future::pending().await;
                }
            }
            Some(Err(e)) => return failed(&ctx, &e),
            _ => {}
        }
        match result {
            Ok(Pump::Open) => {}
            Ok(Pump::Closed(code)) => {
                let kind = code.map(|c| format!("close_{c}")).unwrap_or_else(|| "eof".into());
                if ready {
                    ctx.dropped(kind);
                    return Ended::Dropped;
                }
                return failed(&ctx, &WsError::new(kind, "closed during the handshake"));
            }
            Err(e) => {
                if ready {
                    ctx.dropped(e.kind);
                    return Ended::Dropped;
                }
                return failed(&ctx, &e);
            }
        }
    }
}

pub(super) struct Conns {
    /// `(global index, task)` for every connection this worker opened (for churn).
    pub(super) tasks: Vec<(u64, AbortHandle)>,
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

pub(super) fn spawn_conn(ctx: &Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) -> AbortHandle {
    ctx.pending.set(ctx.pending.get() + 1);
    if ctx.job.raw {
        return tokio::task::spawn_local(raw_conn_task(ctx.clone(), idx, permit)).abort_handle();
    }
    if ctx.job.transport != ClientTransport::Websocket {
        return tokio::task::spawn_local(super::http::http_conn_task(ctx.clone(), idx, permit)).abort_handle();
    }
    tokio::task::spawn_local(conn_task(ctx.clone(), idx, permit)).abort_handle()
}

pub(super) async fn acquire(ctx: &Ctx) -> OwnedSemaphorePermit {
    ctx.sem.clone().acquire_owned().await.expect("semaphore never closed")
}

/// Waits until every started handshake has finished (each is bounded by the connect timeout).
pub(super) async fn wait_pending(ctx: &Ctx) {
    while ctx.pending.get() > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens the connections of one stage at the worker's ramp rate.
pub(super) async fn open_stage(ctx: &Rc<Ctx>, conns: &mut Conns, range: (u64, u64)) -> Duration {
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
pub(super) async fn churn(ctx: Rc<Ctx>, conns: Rc<RefCell<Conns>>, percent: f64) {
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
    fn jitter_is_uniform_enough() {
        let xs: Vec<f64> = (0..10_000u64).map(unit).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(xs.iter().filter(|x| **x < 0.1).count() > 800);
    }

    #[test]
    fn pings_by_encoding() {
        assert_eq!(is_ping(Target::Herald, Enc::Json, OP_TEXT, b"{}"), Some(&b"{}"[..]));
        assert_eq!(is_ping(Target::Herald, Enc::Protobuf, OP_BINARY, &[0]), Some(&[0u8][..]));
        assert_eq!(is_ping(Target::Nchan, Enc::Json, OP_TEXT, b"{}"), None);
    }
}
