//! Publishing through the server API for the fanout, personal and churn runs: the publisher
//! tasks that send on schedule, the log of what was accepted, the publishing phase with its
//! backlog watch and drain, and the delivery figures measured against that log.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{Merged, Setup, cpu_delta, sample};
use crate::fleet::Fleet;
use crate::http::{OnResponse, Pipeline, Response};
use crate::job::Target;
use crate::procfs::{self, Sample};
use crate::report::round;
use crate::stats;
use crate::util::now_ns;
use crate::worker::publish_ok;

/// What was published under one sequence number (one publication, or one personal round).
#[derive(Debug, Clone, Copy, Default)]
struct SeqLog {
    first_ns: u64,
    last_ns: u64,
    ok: u64,
    failed: u64,
}

#[derive(Default)]
struct PubLog {
    seqs: BTreeMap<u64, SeqLog>,
    ok: u64,
    failed: u64,
    /// Publish requests sent (answered ones are `ok` + `failed`).
    sent: u64,
    first_ns: u64,
    last_ns: u64,
    errors_shown: u32,
}

/// Publications awaiting an answer, per connection, before the publisher waits.
const PUBLISH_INFLIGHT: usize = 1000;

/// Sends publications on schedule over pipelined keep-alive connections (one per server), so
/// the offered rate does not depend on how fast the server answers, and per-channel order is
/// kept. Answers are counted in the shared [`PubLog`] as they come.
struct Publisher {
    pipes: Vec<Pipeline<u64>>,
    target: Target,
    prefix: String,
    headers: String,
    payload: usize,
    body: Vec<u8>,
    path: String,
    log: Rc<RefCell<PubLog>>,
}

impl Publisher {
    fn new(s: &Setup, log: Rc<RefCell<PubLog>>) -> Publisher {
        let headers = match (&s.c.api_key, s.c.target) {
            (Some(k), Target::Herald) => format!("X-API-Key: {k}\r\n"),
            _ => String::new(),
        };
        let herald = s.c.target == Target::Herald;
        let on_answer: OnResponse<u64> = {
            let log = log.clone();
            Rc::new(move |seq: u64, resp: Option<Response>| {
                let ok = resp.as_ref().is_some_and(|r| publish_ok(herald, r.status, &r.body));
                let mut l = log.borrow_mut();
                if !ok && l.errors_shown < 5 {
                    l.errors_shown += 1;
                    match &resp {
                        Some(r) => {
                            eprintln!("publish {seq} answered {}: {}", r.status, String::from_utf8_lossy(&r.body))
                        }
                        None => eprintln!("publish {seq}: connection failed before the answer"),
                    }
                }
                let e = l.seqs.entry(seq).or_default();
                if ok {
                    e.ok += 1;
                    l.ok += 1;
                } else {
                    e.failed += 1;
                    l.failed += 1;
                }
            })
        };
        Publisher {
            pipes: s.urls.iter().map(|u| Pipeline::new(u.addr, &u.host, PUBLISH_INFLIGHT, on_answer.clone())).collect(),
            target: s.c.target,
            prefix: s.urls[0].prefix.clone(),
            headers,
            payload: s.c.payload,
            body: Vec::with_capacity(s.c.payload + 128),
            path: String::new(),
            log,
        }
    }

    /// Sends payload `seq` to `channel` on server `node` (the answer is counted when it comes).
    async fn publish(&mut self, node: usize, channel: &str, seq: u64) {
        self.body.clear();
        self.path.clear();
        let t = now_ns();
        match self.target {
            Target::Herald => {
                self.path.push_str(&self.prefix);
                self.path.push_str("/api/publish");
                self.body.extend_from_slice(b"{\"channel\":\"");
                self.body.extend_from_slice(channel.as_bytes());
                self.body.extend_from_slice(b"\",\"data\":");
                crate::payload::write(&mut self.body, seq, t, self.payload);
                self.body.push(b'}');
            }
            Target::Nchan => {
                self.path.push_str(&self.prefix);
                self.path.push_str("/pub/");
                self.path.push_str(channel);
                crate::payload::write(&mut self.body, seq, t, self.payload);
            }
        }
        {
            let mut l = self.log.borrow_mut();
            let e = l.seqs.entry(seq).or_default();
            if e.first_ns == 0 {
                e.first_ns = t;
            }
            e.last_ns = t;
            if l.first_ns == 0 {
                l.first_ns = t;
            }
            l.last_ns = t;
            l.sent += 1;
        }
        self.pipes[node].send(&self.path, &self.headers, &self.body, seq).await;
    }

    /// Waits (bounded) for the answers still owed.
    async fn finish(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in &self.pipes {
            p.drain(deadline).await;
        }
    }
}

/// How publications are laid out.
#[derive(Clone)]
pub(super) enum Plan {
    /// `count` publications to one channel at `rate`/s; seq = publication number. `cluster`:
    /// each is sent through the first server only (the servers share a broker), else through
    /// every server.
    Fanout { channel: String, rate: f64, count: u64, cluster: bool },
    /// `rounds` rounds; in each, one message to every channel `<prefix><i>` (i < n); `rate`
    /// messages/s in total over `publishers` connections; seq = round number.
    Personal { prefix: String, n: u64, rate: f64, rounds: u64, publishers: usize },
}

impl Plan {
    pub(super) fn max_seq(&self) -> u64 {
        match self {
            Plan::Fanout { count, .. } => *count,
            Plan::Personal { rounds, .. } => *rounds,
        }
    }
}

/// Starts the publisher tasks; `done` is set when they have all finished.
fn start_publishing(
    s: &Setup,
    plan: &Plan,
    deadline: Instant,
    log: Rc<RefCell<PubLog>>,
    stop: Rc<Cell<bool>>,
    done: Rc<Cell<usize>>,
) -> usize {
    let t0 = Instant::now();
    match plan.clone() {
        Plan::Fanout { channel, rate, count, cluster } => {
            let mut p = Publisher::new(s, log);
            tokio::task::spawn_local(async move {
                for k in 1..=count {
                    let at = t0 + Duration::from_secs_f64((k - 1) as f64 / rate);
                    if at >= deadline || stop.get() {
                        break;
                    }
                    tokio::time::sleep_until(at).await;
                    if stop.get() {
                        break;
                    }
                    // One publication per server (several independent servers: each gets the
                    // same seq), or one through the first server of a cluster.
                    let nodes = if cluster { 1 } else { p.pipes.len() };
                    for node in 0..nodes {
                        p.publish(node, &channel, k).await;
                    }
                }
                p.finish().await;
                done.set(done.get() + 1);
            });
            1
        }
        Plan::Personal { prefix, n, rate, rounds, publishers } => {
            for j in 0..publishers as u64 {
                let mut p = Publisher::new(s, log.clone());
                let (stop, done, prefix) = (stop.clone(), done.clone(), prefix.clone());
                tokio::task::spawn_local(async move {
                    'rounds: for r in 1..=rounds {
                        let mut i = j;
                        while i < n {
                            let m = (r - 1) * n + i;
                            let at = t0 + Duration::from_secs_f64(m as f64 / rate);
                            if at >= deadline || stop.get() {
                                break 'rounds;
                            }
                            tokio::time::sleep_until(at).await;
                            if stop.get() {
                                break 'rounds;
                            }
                            let node = (i % p.pipes.len() as u64) as usize;
                            p.publish(node, &format!("{prefix}{i}"), r).await;
                            i += publishers as u64;
                        }
                    }
                    p.finish().await;
                    done.set(done.get() + 1);
                });
            }
            publishers
        }
    }
}

pub(super) struct Backlog {
    pub(super) threshold: Duration,
    pub(super) secs: u32,
}

pub(super) struct PublishOutcome {
    log: PubLog,
    stopped_early: Option<String>,
    pub(super) cpu_before: Sample,
    pub(super) cpu_after: Sample,
    published_s: f64,
    drained: bool,
}

/// Deliveries expected from `ok` accepted publishes of one sequence number.
fn expected_for(ok: u64, per_publish: f64) -> u64 {
    (ok as f64 * per_publish).round() as u64
}

fn expected_total(log: &PubLog, per_publish: f64) -> u64 {
    log.seqs.values().map(|l| expected_for(l.ok, per_publish)).sum()
}

/// Runs the publishing phase and the drain; `per_publish` is how many deliveries one
/// accepted publish should produce.
pub(super) async fn publish_phase(
    s: &Setup,
    drain: Duration,
    fleet: &mut Fleet,
    plan: &Plan,
    duration: Duration,
    per_publish: f64,
    backlog: Option<Backlog>,
) -> PublishOutcome {
    let log = Rc::new(RefCell::new(PubLog::default()));
    let stop = Rc::new(Cell::new(false));
    let done = Rc::new(Cell::new(0usize));
    let cpu_before = sample(s);
    let t0 = Instant::now();
    let publish_deadline = (t0 + duration).min(s.deadline);
    let tasks = start_publishing(s, plan, publish_deadline, log.clone(), stop.clone(), done.clone());
    let mut stopped_early = None;
    let mut bad_secs = 0u32;
    let mut next_check = t0 + Duration::from_secs(1);
    let hard = (publish_deadline + Duration::from_secs(15)).min(s.deadline);
    loop {
        let d = done.clone();
        let all_done = fleet.pump_until(next_check.min(hard), move |_| d.get() >= tasks).await;
        if all_done || Instant::now() >= hard {
            break;
        }
        next_check += Duration::from_secs(1);
        if let (Some(b), None) = (&backlog, &stopped_early) {
            let p99 = backlog_p99(fleet, &log.borrow(), per_publish);
            if let Some(p99) = p99 {
                if p99 > b.threshold {
                    bad_secs += 1;
                    eprintln!("  backlog: p99 publish→last ≥ {:.0} ms ({bad_secs} s over)", p99.as_secs_f64() * 1000.0);
                } else {
                    bad_secs = 0;
                }
                if bad_secs >= b.secs {
                    let why = format!(
                        "p99 publish→last over {} ms for {} s after {:.1} s",
                        b.threshold.as_millis(),
                        b.secs,
                        t0.elapsed().as_secs_f64()
                    );
                    eprintln!("  stopping early: {why}");
                    stopped_early = Some(why);
                    stop.set(true);
                }
            }
        }
    }
    stop.set(true);
    let published_s = t0.elapsed().as_secs_f64();
    let expected = expected_total(&log.borrow(), per_publish);
    let drained = fleet.pump_until((Instant::now() + drain).min(s.deadline), |f| f.deliveries() >= expected).await;
    let cpu_after = sample(s);
    let log = std::mem::take(&mut *log.borrow_mut());
    PublishOutcome { log, stopped_early, cpu_before, cpu_after, published_s, drained }
}

/// p99 of publish→last over publications sent 2–3 s ago (incomplete ones count with their age).
fn backlog_p99(fleet: &Fleet, log: &PubLog, per_publish: f64) -> Option<Duration> {
    let now = now_ns();
    let (from, to) = (now.saturating_sub(3_000_000_000), now.saturating_sub(2_000_000_000));
    let mut lasts: Vec<u64> = log
        .seqs
        .iter()
        .filter(|(_, l)| l.last_ns >= from && l.last_ns < to && l.ok > 0)
        .map(|(seq, l)| {
            let agg = fleet.pub_agg(*seq);
            if agg.count >= expected_for(l.ok, per_publish) { agg.max_us } else { (now - l.first_ns) / 1000 }
        })
        .collect();
    if lasts.is_empty() {
        return None;
    }
    lasts.sort_unstable();
    let i = ((lasts.len() as f64 * 0.99).ceil() as usize).clamp(1, lasts.len()) - 1;
    Some(Duration::from_micros(lasts[i]))
}

/// Delivery figures common to fanout, personal and churn.
pub(super) fn delivery_fields(
    m: &mut Map<String, Value>,
    merged: &Merged,
    out: &PublishOutcome,
    per_publish: f64,
    strict: bool,
) -> (f64, Option<f64>) {
    let log = &out.log;
    let expected = expected_total(log, per_publish);
    let mut first = stats::new_hist();
    let mut last = stats::new_hist();
    let mut incomplete = 0u64;
    for (seq, l) in &log.seqs {
        if l.ok == 0 {
            continue;
        }
        let agg = merged.pubs.get(seq).copied().unwrap_or_default();
        if agg.count == 0 {
            incomplete += 1;
            continue;
        }
        stats::record(&mut first, agg.min_us);
        if agg.count >= expected_for(l.ok, per_publish) {
            stats::record(&mut last, agg.max_us);
        } else {
            incomplete += 1;
        }
    }
    let span_s = if merged.last_recv_ns > log.first_ns && log.first_ns > 0 {
        (merged.last_recv_ns - log.first_ns) as f64 / 1e9
    } else {
        0.0
    };
    let dps = if span_s > 0.0 { merged.deliveries as f64 / span_s } else { 0.0 };
    let cpu = cpu_delta(&out.cpu_before, &out.cpu_after);
    m.insert("publications".into(), json!(log.ok));
    m.insert("publish_errors".into(), json!(log.failed));
    m.insert("publish_seconds".into(), json!(round(out.published_s, 3)));
    m.insert("publish_requests".into(), json!(log.sent));
    let send_span = log.last_ns.saturating_sub(log.first_ns) as f64 / 1e9;
    let achieved = if log.sent > 1 && send_span > 0.0 { (log.sent - 1) as f64 / send_span } else { 0.0 };
    m.insert("publish_rate_achieved".into(), json!(round(achieved, 1)));
    m.insert("stopped_early".into(), json!(out.stopped_early));
    m.insert("drained".into(), json!(out.drained));
    m.insert("expected_deliveries".into(), json!(expected));
    m.insert("deliveries".into(), json!(merged.deliveries));
    m.insert("unique_deliveries".into(), json!(merged.unique));
    m.insert("lost".into(), json!(if strict { Some(expected.saturating_sub(merged.unique)) } else { None }));
    m.insert("gaps".into(), json!(merged.gaps));
    m.insert("dups".into(), json!(merged.dups));
    m.insert("out_of_order".into(), json!(merged.out_of_order));
    m.insert("other_messages".into(), json!(merged.other_messages));
    m.insert("incomplete_publications".into(), json!(incomplete));
    m.insert("deliveries_per_s".into(), json!(round(dps, 1)));
    m.insert("delivery_span_s".into(), json!(round(span_s, 3)));
    m.insert("bytes_in".into(), json!(merged.bytes_in));
    m.insert("latency_first".into(), stats::summary(&first));
    m.insert("latency_last".into(), stats::summary(&last));
    m.insert("latency_delivery".into(), stats::summary(merged.delivery.as_ref().expect("set")));
    m.insert("server_cpu_s".into(), json!(cpu.map(|c| round(c, 3))));
    m.insert(
        "server_cpu_us_per_delivery".into(),
        json!(cpu.filter(|_| merged.deliveries > 0).map(|c| round(c * 1e6 / merged.deliveries as f64, 3))),
    );
    let window = out.cpu_after.at.zip(out.cpu_before.at).map(|(a, b)| (a - b).as_secs_f64()).unwrap_or(0.0);
    m.insert("server_cpu_pct".into(), json!(cpu.filter(|_| window > 0.0).map(|c| round(c * 100.0 / window, 1))));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&out.cpu_before, &out.cpu_after));
    // How many deliveries share one write: Herald writes with writev (counted); servers that
    // use send/sendmsg show fewer calls than they make.
    let writes = out.cpu_after.write_syscalls.zip(out.cpu_before.write_syscalls).map(|(a, b)| a.saturating_sub(b));
    m.insert("server_write_syscalls".into(), json!(writes));
    m.insert(
        "deliveries_per_write_syscall".into(),
        json!(writes.filter(|w| *w > 0).map(|w| round(merged.deliveries as f64 / w as f64, 3))),
    );
    (dps, cpu)
}

pub(super) fn print_delivery_summary(m: &Map<String, Value>) {
    let g = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    eprintln!(
        "  published {} ({} errors) in {}s; deliveries {} of {} expected, lost {}, dups {}, gaps {}",
        g("publications"),
        g("publish_errors"),
        g("publish_seconds"),
        g("deliveries"),
        g("expected_deliveries"),
        g("lost"),
        g("dups"),
        g("gaps")
    );
    eprintln!("  deliveries/s {}", g("deliveries_per_s"));
    eprintln!("  publish→first    {}", stats::human(&g("latency_first")));
    eprintln!("  publish→last     {}", stats::human(&g("latency_last")));
    eprintln!("  per delivery     {}", stats::human(&g("latency_delivery")));
    eprintln!(
        "  server CPU {} s ({} %), {} µs per delivery; client CPU {} s",
        g("server_cpu_s"),
        g("server_cpu_pct"),
        g("server_cpu_us_per_delivery"),
        g("client_cpu_s")
    );
}
