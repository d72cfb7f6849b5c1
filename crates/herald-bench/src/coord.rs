//! The coordinator: resolves the options, starts the worker processes, publishes through the
//! server API, samples the server from /proc, merges what the workers measured, and writes the
//! summary and the result line.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cli::{ApiArgs, ChannelMode, ChurnArgs, Common, FanoutArgs, IdleArgs, PersonalArgs};
use crate::fleet::Fleet;
use crate::http::{OnResponse, Pipeline, Response};
use crate::job::{ApiJob, Channels, Cmd, HandshakeJob, Job, Target, WorkerResult};
use crate::procfs::{self, Sample};
use crate::report::{self, round};
use crate::stats::{self, PubAgg};
use crate::util::{BaseUrl, now_ns, parse_ip_list, parse_url};
use crate::worker::{MAX_SEQ, publish_ok};

/// Most connections one worker process may hold (the per-process limit is 20,000 files).
pub(crate) const MAX_PER_WORKER: u64 = 19_000;
/// Connections per server above which loopback runs use [`AUTO_SOURCE_IPS`] by default.
pub(crate) const AUTO_SOURCE_IPS_ABOVE: u64 = 5_000;
pub(crate) const AUTO_SOURCE_IPS: &str = "127.0.0.2-127.0.0.9";
/// Default connections per worker when --procs is not given.
const DEFAULT_PER_WORKER: u64 = 15_000;

/// Options resolved for a run.
struct Setup {
    c: Common,
    /// One or more servers; connection `i` goes to `urls[i % urls.len()]`.
    urls: Vec<BaseUrl>,
    ws_path: String,
    n: u64,
    procs: usize,
    source_ips: Vec<IpAddr>,
    deadline: Instant,
}

/// `held`: the connections stay open at once (false for the handshake-rate load).
fn setup(c: &Common, default_n: u64, default_procs: Option<usize>, held: bool) -> Result<Setup, String> {
    let default_url = match c.target {
        Target::Herald => "http://127.0.0.1:8000",
        Target::Nchan => "http://127.0.0.1:8081",
    };
    let urls = if c.url.is_empty() { vec![default_url.to_owned()] } else { c.url.clone() };
    let urls = urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;
    let prefix = urls[0].prefix.clone();
    let ws_path = c.ws_path.clone().unwrap_or_else(|| match c.target {
        Target::Herald => format!("{prefix}/connection/websocket"),
        Target::Nchan => format!("{prefix}/sub/{{channel}}"),
    });
    let n = c.connections.unwrap_or(default_n);
    if n == 0 {
        return Err("--connections must be at least 1".into());
    }
    let procs = c.procs.or(default_procs).unwrap_or_else(|| n.div_ceil(DEFAULT_PER_WORKER) as usize).max(1);
    if held && n.div_ceil(procs as u64) > MAX_PER_WORKER {
        return Err(format!(
            "{n} connections over {procs} processes is more than {MAX_PER_WORKER} per process; raise --procs"
        ));
    }
    let source_ips = match c.source_ips.as_deref() {
        Some("none") => Vec::new(),
        Some(s) => parse_ip_list(s)?,
        // Without an explicit local address, connect() draws ports for one destination from a
        // single range; past ~10,000 connections the kernel's search for a free port slows
        // handshakes several times over. Spread large loopback runs over 8 source addresses.
        None if urls.iter().all(|u| u.addr.ip().is_loopback()) && n / urls.len() as u64 > AUTO_SOURCE_IPS_ABOVE => {
            parse_ip_list(AUTO_SOURCE_IPS)?
        }
        None => Vec::new(),
    };
    if c.target == Target::Herald && c.hmac_secret.is_none() {
        eprintln!("note: no --hmac-secret: connecting without a token (needs allow_anonymous_connect_without_token)");
    }
    Ok(Setup { c: c.clone(), urls, ws_path, n, procs, source_ips, deadline: Instant::now() + c.output.max_time })
}

/// Worker jobs for `stages` (cumulative connection counts; the last is N), split evenly.
struct JobSpec {
    channels: Channels,
    strict_order: bool,
    max_seq: u64,
    churn_percent: Option<f64>,
    handshake: Option<HandshakeJob>,
    api: Option<ApiJob>,
}

fn jobs(s: &Setup, stages: &[u64], spec: &JobSpec) -> Vec<Job> {
    let p = s.procs as u64;
    (0..s.procs)
        .map(|w| {
            let w64 = w as u64;
            let mut prev = 0;
            let ranges = stages
                .iter()
                .map(|&end| {
                    let size = end - prev;
                    let r = (prev + size * w64 / p, prev + size * (w64 + 1) / p);
                    prev = end;
                    r
                })
                .collect();
            let mut api = spec.api.clone();
            if let Some(a) = &mut api {
                let total = a.conns as u64;
                a.conns = (total * (w64 + 1) / p - total * w64 / p) as usize;
            }
            Job {
                worker: w,
                target: s.c.target,
                encoding: s.c.encoding,
                servers: s.urls.iter().map(|u| (u.addr, u.host.clone())).collect(),
                ws_path: s.ws_path.clone(),
                source_ips: s.source_ips.clone(),
                stages: ranges,
                channels: spec.channels.clone(),
                hmac_secret: s.c.hmac_secret.clone(),
                ramp: s.c.ramp / p as f64,
                max_inflight: s.c.max_inflight,
                connect_timeout_ms: s.c.connect_timeout.as_millis() as u64,
                strict_order: spec.strict_order,
                max_seq: spec.max_seq,
                churn_percent: spec.churn_percent,
                handshake: spec.handshake.clone(),
                api,
                raw: false,
                max_time_ms: (s.c.output.max_time + Duration::from_secs(60)).as_millis() as u64,
            }
        })
        .collect()
}

/// Time allowed to open `n` connections: the ramp plus generous slack.
fn ramp_deadline(s: &Setup, n: u64) -> Instant {
    let ramp = if s.c.ramp > 0.0 { n as f64 / s.c.ramp } else { 0.0 };
    let t = Instant::now() + Duration::from_secs_f64(ramp) + s.c.connect_timeout * 2 + Duration::from_secs(60);
    t.min(s.deadline)
}

/// Fields every result line has.
fn base(s: &Setup, scenario: &str) -> Map<String, Value> {
    let mut m = report::header(scenario, s.c.target.as_str(), s.c.output.label.as_deref());
    let urls: Vec<String> = s.urls.iter().map(|u| format!("http://{}{}", u.host, u.prefix)).collect();
    m.insert("url".into(), json!(urls.join(",")));
    m.insert("nodes".into(), json!(s.urls.len()));
    if s.c.target == Target::Herald {
        m.insert("encoding".into(), json!(s.c.encoding.as_str()));
    }
    m.insert("connections_requested".into(), json!(s.n));
    m.insert("procs".into(), json!(s.procs));
    m.insert("source_ips".into(), json!(s.source_ips.len()));
    m.insert("ramp".into(), json!(s.c.ramp));
    m.insert("payload".into(), json!(s.c.payload));
    m.insert("server_pids".into(), json!(s.c.server_pids));
    m
}

impl Setup {
    fn hosts(&self) -> String {
        self.urls.iter().map(|u| u.host.as_str()).collect::<Vec<_>>().join(",")
    }
}

fn sample(s: &Setup) -> Sample {
    procfs::sample(&s.c.server_pids)
}

/// Memory figures between a baseline and a sample taken with `conns` connections up.
fn memory(before: &Sample, after: &Sample, conns: u64) -> Value {
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if conns > 0 => Some(round((b as f64 - a as f64) * 1024.0 / conns as f64, 1)),
        _ => None,
    };
    json!({
        "connections": conns,
        "server_rss_before_kb": before.rss_kb,
        "server_rss_after_kb": after.rss_kb,
        "rss_per_conn_bytes": per(before.rss_kb, after.rss_kb),
        "slab_before_kb": before.slab_kb,
        "slab_after_kb": after.slab_kb,
        "slab_delta_kb": match (before.slab_kb, after.slab_kb) { (Some(a), Some(b)) => Some(b as i64 - a as i64), _ => None },
        "slab_per_conn_bytes": per(before.slab_kb, after.slab_kb),
    })
}

fn cpu_delta(a: &Sample, b: &Sample) -> Option<f64> {
    Some(b.cpu_s? - a.cpu_s?)
}

/// Connection figures after the ramp.
/// `ready_after`: from the start of the ramp to all ready; `ramp`: time spent opening
/// connections (the sum over stages when there are several).
fn connect_fields(m: &mut Map<String, Value>, fleet: &Fleet, ready_after: Duration, ramp: Duration) {
    let open = fleet.ready_open();
    let elapsed = ramp;
    m.insert("connections".into(), json!(open));
    m.insert("connect_errors".into(), json!(fleet.ready_errors()));
    m.insert("ready_s".into(), json!(round(ready_after.as_secs_f64(), 3)));
    m.insert("ramp_s".into(), json!(round(elapsed.as_secs_f64(), 3)));
    let hs = if elapsed.as_secs_f64() > 0.0 { open as f64 / elapsed.as_secs_f64() } else { 0.0 };
    m.insert("handshakes_per_s".into(), json!(round(hs, 1)));
}

/// Sums of what the workers reported.
#[derive(Default)]
pub(crate) struct Merged {
    pub(crate) open: u64,
    pub(crate) handshakes: u64,
    pub(crate) handshakes_measured: u64,
    pub(crate) errors: u64,
    pub(crate) errors_measured: u64,
    pub(crate) error_kinds: BTreeMap<String, u64>,
    pub(crate) server_closed: BTreeMap<String, u64>,
    pub(crate) deliveries: u64,
    pub(crate) unique: u64,
    pub(crate) gaps: u64,
    pub(crate) dups: u64,
    pub(crate) out_of_order: u64,
    pub(crate) other_messages: u64,
    pub(crate) pings: u64,
    pub(crate) bytes_in: u64,
    pub(crate) first_recv_ns: u64,
    pub(crate) last_recv_ns: u64,
    pub(crate) delivery: Option<Histogram<u64>>,
    pub(crate) handshake: Option<Histogram<u64>>,
    pub(crate) api: Option<Histogram<u64>>,
    pub(crate) pubs: BTreeMap<u64, PubAgg>,
    pub(crate) api_requests: u64,
    pub(crate) api_errors: u64,
    pub(crate) api_elapsed_ms: u64,
    pub(crate) measured_ms: u64,
    pub(crate) client_cpu_s: f64,
    pub(crate) client_rss_kb: u64,
    pub(crate) workers: usize,
}

pub(crate) fn merge(results: &[Option<WorkerResult>]) -> Result<Merged, String> {
    let mut m = Merged {
        delivery: Some(stats::new_hist()),
        handshake: Some(stats::new_hist()),
        api: Some(stats::new_hist()),
        ..Default::default()
    };
    for r in results.iter().flatten() {
        m.workers += 1;
        m.open += r.open;
        m.handshakes += r.handshakes;
        m.handshakes_measured += r.handshakes_measured;
        m.errors += r.errors;
        m.errors_measured += r.errors_measured;
        for (k, v) in &r.error_kinds {
            *m.error_kinds.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &r.server_closed {
            *m.server_closed.entry(k.clone()).or_default() += v;
        }
        m.deliveries += r.deliveries;
        m.unique += r.unique;
        m.gaps += r.gaps;
        m.dups += r.dups;
        m.out_of_order += r.out_of_order;
        m.other_messages += r.other_messages;
        m.pings += r.pings;
        m.bytes_in += r.bytes_in;
        if r.first_recv_ns > 0 && (m.first_recv_ns == 0 || r.first_recv_ns < m.first_recv_ns) {
            m.first_recv_ns = r.first_recv_ns;
        }
        m.last_recv_ns = m.last_recv_ns.max(r.last_recv_ns);
        stats::merge(m.delivery.as_mut().expect("set"), &stats::decode(&r.delivery_hist)?);
        stats::merge(m.handshake.as_mut().expect("set"), &stats::decode(&r.handshake_hist)?);
        stats::merge(m.api.as_mut().expect("set"), &stats::decode(&r.api_hist)?);
        for [seq, min_us, max_us, count] in &r.pubs {
            m.pubs.entry(*seq).or_default().merge(&PubAgg { min_us: *min_us, max_us: *max_us, count: *count });
        }
        m.api_requests += r.api_requests;
        m.api_errors += r.api_errors;
        m.api_elapsed_ms = m.api_elapsed_ms.max(r.api_elapsed_ms);
        m.measured_ms = m.measured_ms.max(r.measured_ms);
        m.client_cpu_s += r.cpu_s;
        m.client_rss_kb += r.rss_kb;
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Publishing

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
enum Plan {
    /// `count` publications to one channel at `rate`/s; seq = publication number.
    Fanout { channel: String, rate: f64, count: u64 },
    /// `rounds` rounds; in each, one message to every channel `<prefix><i>` (i < n); `rate`
    /// messages/s in total over `publishers` connections; seq = round number.
    Personal { prefix: String, n: u64, rate: f64, rounds: u64, publishers: usize },
}

impl Plan {
    fn max_seq(&self) -> u64 {
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
        Plan::Fanout { channel, rate, count } => {
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
                    // One publication per server (several servers: each gets the same seq).
                    for node in 0..p.pipes.len() {
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

struct Backlog {
    threshold: Duration,
    secs: u32,
}

struct PublishOutcome {
    log: PubLog,
    stopped_early: Option<String>,
    cpu_before: Sample,
    cpu_after: Sample,
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
async fn publish_phase(
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
fn delivery_fields(
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

pub(crate) fn client_fields(m: &mut Map<String, Value>, merged: &Merged) {
    m.insert("client_cpu_s".into(), json!(round(merged.client_cpu_s, 3)));
    m.insert("client_rss_kb".into(), json!(merged.client_rss_kb));
    m.insert("server_closed".into(), json!(merged.server_closed));
    m.insert("connect_error_kinds".into(), json!(merged.error_kinds));
    m.insert("handshake_latency".into(), stats::summary(merged.handshake.as_ref().expect("set")));
    m.insert("pings_answered".into(), json!(merged.pings));
}

fn print_delivery_summary(m: &Map<String, Value>) {
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

fn print_memory(v: &Value) {
    eprintln!(
        "  server RSS {} → {} KiB: {} B/conn; kernel slab Δ {} KiB: {} B/conn (both ends of loopback)",
        v["server_rss_before_kb"],
        v["server_rss_after_kb"],
        v["rss_per_conn_bytes"],
        v["slab_delta_kb"],
        v["slab_per_conn_bytes"]
    );
}

fn print_connect(m: &Map<String, Value>) {
    eprintln!(
        "  connections {} of {} ({} errors), ready after {} s, {} handshakes/s",
        m["connections"], m["connections_requested"], m["connect_errors"], m["ready_s"], m["handshakes_per_s"]
    );
}

fn finish(s: &Setup, m: Map<String, Value>) -> Result<(), String> {
    report::emit(&m, s.c.output.json_out.as_deref())
}

/// Opens all connections of a single-stage run and samples memory once they are idle.
async fn connect_all(s: &Setup, spec: &JobSpec, m: &mut Map<String, Value>) -> Result<(Fleet, Sample), String> {
    let before = sample(s);
    let t0 = Instant::now();
    let mut fleet = Fleet::spawn(jobs(s, &[s.n], spec)).await?;
    eprintln!("  {} worker process(es): {:?}", fleet.workers(), fleet.pids());
    let r = fleet.wait_ready(0, ramp_deadline(s, s.n)).await.and_then(|_| fleet.require_open());
    if let Err(e) = r {
        fleet.shutdown().await;
        return Err(e);
    }
    connect_fields(m, &fleet, t0.elapsed(), fleet.ready_elapsed());
    print_connect(m);
    fleet.pump_until((Instant::now() + s.c.settle).min(s.deadline), |_| false).await;
    let after = sample(s);
    let mem = memory(&before, &after, fleet.ready_open());
    print_memory(&mem);
    m.insert("memory".into(), mem);
    Ok((fleet, after))
}

// ---------------------------------------------------------------------------------------------
// Scenarios

pub async fn idle(a: IdleArgs) -> Result<(), String> {
    let mut checkpoints = a.checkpoints.clone();
    checkpoints.sort_unstable();
    checkpoints.dedup();
    let default_n = checkpoints.last().copied().unwrap_or(1000);
    let s = setup(&a.common, default_n, None, true)?;
    if checkpoints.last().is_none_or(|&c| c < s.n) {
        checkpoints.push(s.n);
    }
    checkpoints.retain(|&c| c > 0 && c <= s.n);
    let channels = match a.channels {
        ChannelMode::Shared => Channels::Shared(s.c.channel.clone().unwrap_or_else(|| "bench_idle".into())),
        ChannelMode::Own => Channels::PerConn(s.c.channel.clone().unwrap_or_else(|| "idle_".into())),
    };
    let spec = JobSpec { channels, strict_order: true, max_seq: 0, churn_percent: None, handshake: None, api: None };
    eprintln!("idle: {} connections to {} ({}), checkpoints {:?}", s.n, s.hosts(), s.c.target.as_str(), checkpoints);
    let mut m = base(&s, "idle");
    m.insert("channels".into(), json!(format!("{:?}", a.channels).to_lowercase()));
    let before = sample(&s);
    let t0 = Instant::now();
    let mut fleet = Fleet::spawn(jobs(&s, &checkpoints, &spec)).await?;
    eprintln!("  {} worker process(es): {:?}", fleet.workers(), fleet.pids());
    let mut points = Vec::new();
    let mut result = Ok(());
    let (mut ramp, mut ready_after) = (Duration::ZERO, t0.elapsed());
    for (i, &c) in checkpoints.iter().enumerate() {
        let stage_start = Instant::now();
        if i > 0 {
            fleet.send_all(Cmd::Next).await;
        }
        if let Err(e) = fleet.wait_ready(i, ramp_deadline(&s, c)).await.and_then(|_| fleet.require_open()) {
            result = Err(e);
            break;
        }
        ramp += fleet.ready_elapsed();
        ready_after += stage_start.elapsed();
        eprintln!(
            "  checkpoint {c}: {} open, {} errors; stage opened in {:.2} s",
            fleet.ready_open(),
            fleet.ready_errors(),
            fleet.ready_elapsed().as_secs_f64()
        );
        fleet.pump_until((Instant::now() + s.c.settle).min(s.deadline), |_| false).await;
        let after = sample(&s);
        let mem = memory(&before, &after, fleet.ready_open());
        print_memory(&mem);
        points.push(mem);
    }
    if let Err(e) = result {
        fleet.shutdown().await;
        return Err(e);
    }
    connect_fields(&mut m, &fleet, ready_after, ramp);
    print_connect(&m);
    m.insert("memory".into(), points.last().cloned().unwrap_or(Value::Null));
    m.insert("checkpoints".into(), json!(points));

    // The idle window: CPU of the server while it only pings. Workers report every second:
    // take in a fresh report first so the ping count at the start is current.
    fleet.send_all(Cmd::Start).await;
    fleet.pump_until((Instant::now() + Duration::from_millis(1100)).min(s.deadline), |_| false).await;
    let pings0 = fleet.pings();
    let cpu0 = sample(&s);
    let window_end = (Instant::now() + a.window).min(s.deadline);
    eprintln!("  idle for {:.0} s ...", a.window.as_secs_f64());
    fleet.pump_until(window_end, |_| false).await;
    let cpu1 = sample(&s);
    let window = cpu1.at.zip(cpu0.at).map(|(b, a)| (b - a).as_secs_f64()).unwrap_or(0.0);
    let pings_window = fleet.pings().saturating_sub(pings0);
    fleet.stop((Instant::now() + Duration::from_secs(20)).min(s.deadline + Duration::from_secs(20))).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    let cpu = cpu_delta(&cpu0, &cpu1);
    m.insert("window_s".into(), json!(round(window, 3)));
    m.insert("idle_server_cpu_s".into(), json!(cpu.map(|c| round(c, 3))));
    m.insert("idle_cpu_pct".into(), json!(cpu.filter(|_| window > 0.0).map(|c| round(c * 100.0 / window, 3))));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&cpu0, &cpu1));
    m.insert("pings_in_window".into(), json!(pings_window));
    m.insert("pings_per_s".into(), json!(round(pings_window as f64 / window.max(1e-9), 1)));
    m.insert("connections_at_end".into(), json!(merged.open));
    client_fields(&mut m, &merged);
    if merged.open > 0 {
        m.insert(
            "client_rss_per_conn_bytes".into(),
            json!(round(merged.client_rss_kb as f64 * 1024.0 / merged.open as f64, 1)),
        );
    }
    eprintln!(
        "  idle window {:.1} s: server CPU {} s = {} % of a core; {} pings answered; {} still open",
        window, m["idle_server_cpu_s"], m["idle_cpu_pct"], pings_window, merged.open
    );
    finish(&s, m)
}

/// A fanout or personal run.
struct PublishRun {
    scenario: &'static str,
    plan: Plan,
    channels: Channels,
    duration: Duration,
    /// Deliveries per successful publish (default: every connection).
    per_publish: Option<f64>,
    backlog: Option<Backlog>,
    extra: Map<String, Value>,
}

async fn publish_scenario(s: Setup, run: PublishRun) -> Result<(), String> {
    let PublishRun { scenario, plan, channels, duration, per_publish: per_publish_override, backlog, extra } = run;
    let max_seq = plan.max_seq();
    if max_seq > MAX_SEQ {
        return Err(format!("too many publications/rounds ({max_seq}, at most {MAX_SEQ})"));
    }
    let spec = JobSpec { channels, strict_order: true, max_seq, churn_percent: None, handshake: None, api: None };
    let mut m = base(&s, scenario);
    m.extend(extra);
    let (mut fleet, _) = connect_all(&s, &spec, &mut m).await?;
    let open = fleet.ready_open();
    let per_publish = per_publish_override.unwrap_or(open as f64 / s.urls.len() as f64);
    fleet.send_all(Cmd::Start).await;
    eprintln!("  publishing ...");
    let out = publish_phase(&s, s.c.drain, &mut fleet, &plan, duration, per_publish, backlog).await;
    fleet.stop(Instant::now() + Duration::from_secs(20)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    delivery_fields(&mut m, &merged, &out, per_publish, true);
    client_fields(&mut m, &merged);
    m.insert("connections_at_end".into(), json!(merged.open));
    print_delivery_summary(&m);
    finish(&s, m)
}

pub async fn fanout(a: FanoutArgs) -> Result<(), String> {
    let s = setup(&a.common, 1000, None, true)?;
    let rate = s.c.rate.unwrap_or(20.0);
    if rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let duration = s.c.duration.unwrap_or(Duration::from_secs(20));
    let count = s.c.count.unwrap_or_else(|| (rate * duration.as_secs_f64()).ceil() as u64).max(1);
    let duration = if s.c.count.is_some() && s.c.duration.is_none() { Duration::from_secs(3600) } else { duration };
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_fanout".into());
    eprintln!(
        "fanout: {} subscribers of {channel} on {} ({}), {rate}/s for up to {:.0} s / {count} publications",
        s.n,
        s.hosts(),
        s.c.target.as_str(),
        duration.as_secs_f64()
    );
    let mut extra = Map::new();
    extra.insert("rate".into(), json!(rate));
    extra.insert("duration_s".into(), json!(duration.as_secs_f64()));
    extra.insert("count".into(), json!(count));
    extra.insert("max_backlog_ms".into(), json!(a.max_backlog.map(|d| d.as_millis() as u64)));
    let backlog = a.max_backlog.map(|threshold| Backlog { threshold, secs: a.max_backlog_secs.max(1) });
    let plan = Plan::Fanout { channel: channel.clone(), rate, count };
    let run = PublishRun {
        scenario: "fanout",
        plan,
        channels: Channels::Shared(channel),
        duration,
        per_publish: None,
        backlog,
        extra,
    };
    publish_scenario(s, run).await
}

pub async fn personal(a: PersonalArgs) -> Result<(), String> {
    let s = setup(&a.common, 1000, None, true)?;
    let rate = s.c.rate.unwrap_or(s.n as f64);
    if rate <= 0.0 {
        return Err("--rate must be positive".into());
    }
    let duration = s.c.duration.unwrap_or(Duration::from_secs(20));
    let rounds = s.c.count.unwrap_or_else(|| ((rate * duration.as_secs_f64()) / s.n as f64).floor() as u64).max(1);
    let duration = if s.c.count.is_some() && s.c.duration.is_none() { Duration::from_secs(3600) } else { duration };
    let prefix = s.c.channel.clone().unwrap_or_else(|| match s.c.target {
        Target::Herald => "personal:".into(),
        Target::Nchan => "personal_".into(),
    });
    eprintln!(
        "personal: {} subscribers on {prefix}<i> at {} ({}), {rate} messages/s, {rounds} round(s)",
        s.n,
        s.hosts(),
        s.c.target.as_str()
    );
    let mut extra = Map::new();
    extra.insert("rate".into(), json!(rate));
    extra.insert("duration_s".into(), json!(duration.as_secs_f64()));
    extra.insert("rounds".into(), json!(rounds));
    extra.insert("publishers".into(), json!(a.publishers));
    let backlog = a.max_backlog.map(|threshold| Backlog { threshold, secs: a.max_backlog_secs.max(1) });
    let plan = Plan::Personal { prefix: prefix.clone(), n: s.n, rate, rounds, publishers: a.publishers.max(1) };
    let run = PublishRun {
        scenario: "personal",
        plan,
        channels: Channels::PerConn(prefix),
        duration,
        per_publish: Some(1.0),
        backlog,
        extra,
    };
    publish_scenario(s, run).await
}

pub async fn churn(a: ChurnArgs) -> Result<(), String> {
    if a.handshake_rate {
        return handshake_rate(a).await;
    }
    let s = setup(&a.common, 1000, None, true)?;
    let rate = s.c.rate.unwrap_or(5.0);
    let duration = s.c.duration.unwrap_or(Duration::from_secs(20));
    let count = (rate * duration.as_secs_f64()).ceil().max(1.0) as u64;
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_churn".into());
    eprintln!(
        "churn: {} connections on {} ({}), {}% reconnecting per second for {:.0} s, fan-out {rate}/s on {channel}",
        s.n,
        s.hosts(),
        s.c.target.as_str(),
        a.churn_percent,
        duration.as_secs_f64()
    );
    let spec = JobSpec {
        channels: Channels::Shared(channel.clone()),
        strict_order: false,
        max_seq: count,
        churn_percent: Some(a.churn_percent),
        handshake: None,
        api: None,
    };
    let mut m = base(&s, "churn");
    m.insert("churn_percent".into(), json!(a.churn_percent));
    m.insert("rate".into(), json!(rate));
    m.insert("duration_s".into(), json!(duration.as_secs_f64()));
    let (mut fleet, _) = connect_all(&s, &spec, &mut m).await?;
    let open = fleet.ready_open();
    fleet.send_all(Cmd::Start).await;
    let plan = Plan::Fanout { channel, rate, count };
    // Under churn not every publication reaches every connection: a short drain suffices.
    let drain = s.c.drain.min(Duration::from_secs(2));
    let per_publish = open as f64 / s.urls.len() as f64;
    let out = publish_phase(&s, drain, &mut fleet, &plan, duration, per_publish, None).await;
    fleet.stop(Instant::now() + Duration::from_secs(20)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    // Under churn a publication reaches whoever is connected, so "last" and "lost" are
    // approximate; loss is judged by gaps inside each connection's session.
    delivery_fields(&mut m, &merged, &out, per_publish, false);
    client_fields(&mut m, &merged);
    let secs = merged.measured_ms as f64 / 1000.0;
    let cpu = cpu_delta(&out.cpu_before, &out.cpu_after);
    m.insert("reconnects_per_s_target".into(), json!(round(open as f64 * a.churn_percent / 100.0, 1)));
    m.insert("handshakes_measured".into(), json!(merged.handshakes_measured));
    m.insert("handshakes_per_s_measured".into(), json!(round(merged.handshakes_measured as f64 / secs.max(1e-9), 1)));
    m.insert("connect_errors_measured".into(), json!(merged.errors_measured));
    m.insert("connections_at_end".into(), json!(merged.open));
    m.insert("lost".into(), json!(merged.gaps));
    eprintln!(
        "  churn: {} reconnects in {:.1} s = {}/s (target {}), {} errors",
        merged.handshakes_measured,
        secs,
        m["handshakes_per_s_measured"],
        m["reconnects_per_s_target"],
        merged.errors_measured
    );
    eprintln!("  in-session gaps (lost) {}, dups {}", merged.gaps, merged.dups);
    eprintln!("  per delivery     {}", stats::human(&m["latency_delivery"]));
    eprintln!(
        "  server CPU {} s ({} %)",
        cpu.map(|c| round(c, 3)).map(|c| c.to_string()).unwrap_or("-".into()),
        m["server_cpu_pct"]
    );
    finish(&s, m)
}

async fn handshake_rate(a: ChurnArgs) -> Result<(), String> {
    let s = setup(&a.common, 10_000, Some(1), false)?;
    let duration = s.c.duration.unwrap_or(Duration::from_secs(10));
    eprintln!(
        "handshake rate: up to {} handshakes in {:.0} s on {} ({}), {} in flight per process",
        s.n,
        duration.as_secs_f64(),
        s.hosts(),
        s.c.target.as_str(),
        s.c.max_inflight
    );
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_handshake".into());
    let spec = JobSpec {
        channels: Channels::Shared(channel),
        strict_order: false,
        max_seq: 0,
        churn_percent: None,
        handshake: Some(HandshakeJob { total: s.n.div_ceil(s.procs as u64), duration_ms: duration.as_millis() as u64 }),
        api: None,
    };
    let mut m = base(&s, "handshake");
    let mut fleet = Fleet::spawn(jobs(&s, &[s.n], &spec)).await?;
    if let Err(e) = fleet.wait_ready(0, Instant::now() + Duration::from_secs(30)).await {
        fleet.shutdown().await;
        return Err(e);
    }
    let cpu0 = sample(&s);
    fleet.send_all(Cmd::Start).await;
    let end = (Instant::now() + duration + s.c.connect_timeout + Duration::from_secs(10)).min(s.deadline);
    fleet.pump_until(end, |f| f.all_results()).await;
    let cpu1 = sample(&s);
    fleet.stop(Instant::now() + Duration::from_secs(10)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    let secs = merged.measured_ms as f64 / 1000.0;
    let cpu = cpu_delta(&cpu0, &cpu1);
    m.insert("duration_s".into(), json!(duration.as_secs_f64()));
    m.insert("handshakes".into(), json!(merged.handshakes_measured));
    m.insert("connect_errors".into(), json!(merged.errors_measured));
    m.insert("seconds".into(), json!(round(secs, 3)));
    m.insert("handshakes_per_s".into(), json!(round(merged.handshakes_measured as f64 / secs.max(1e-9), 1)));
    m.insert("server_cpu_s".into(), json!(cpu.map(|c| round(c, 3))));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&cpu0, &cpu1));
    m.insert(
        "server_cpu_us_per_handshake".into(),
        json!(
            cpu.filter(|_| merged.handshakes_measured > 0)
                .map(|c| round(c * 1e6 / merged.handshakes_measured as f64, 2))
        ),
    );
    client_fields(&mut m, &merged);
    eprintln!(
        "  {} handshakes in {:.2} s = {}/s, {} errors {:?}; latency {}; server CPU {} µs per handshake",
        merged.handshakes_measured,
        secs,
        m["handshakes_per_s"],
        merged.errors_measured,
        merged.error_kinds,
        stats::human(&m["handshake_latency"]),
        m["server_cpu_us_per_handshake"]
    );
    finish(&s, m)
}

pub async fn api(a: ApiArgs) -> Result<(), String> {
    let s = setup(&a.common, 50, Some(2), true)?;
    let duration = s.c.duration.unwrap_or(Duration::from_secs(10));
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_api".into());
    let (path, headers, herald_channel) = match s.c.target {
        Target::Herald => (
            format!("{}/api/publish", s.urls[0].prefix),
            s.c.api_key.as_ref().map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default(),
            Some(channel.clone()),
        ),
        Target::Nchan => (format!("{}/pub/{channel}", s.urls[0].prefix), String::new(), None),
    };
    eprintln!(
        "api: {} keep-alive connections over {} process(es) publishing to {channel} on {} ({}) for {:.0} s",
        s.n,
        s.procs,
        s.hosts(),
        s.c.target.as_str(),
        duration.as_secs_f64()
    );
    let spec = JobSpec {
        channels: Channels::Shared(channel),
        strict_order: false,
        max_seq: 0,
        churn_percent: None,
        handshake: None,
        api: Some(ApiJob {
            conns: s.n as usize,
            path,
            headers,
            herald_channel,
            payload: s.c.payload,
            duration_ms: duration.as_millis() as u64,
        }),
    };
    let mut m = base(&s, "api");
    let mut fleet = Fleet::spawn(jobs(&s, &[s.n], &spec)).await?;
    if let Err(e) =
        fleet.wait_ready(0, Instant::now() + Duration::from_secs(30)).await.and_then(|_| fleet.require_open())
    {
        fleet.shutdown().await;
        return Err(e);
    }
    m.insert("connections".into(), json!(fleet.ready_open()));
    m.insert("connect_errors".into(), json!(fleet.ready_errors()));
    let cpu0 = sample(&s);
    fleet.send_all(Cmd::Start).await;
    let end = (Instant::now() + duration + Duration::from_secs(20)).min(s.deadline);
    fleet.pump_until(end, |f| f.all_results()).await;
    let cpu1 = sample(&s);
    fleet.stop(Instant::now() + Duration::from_secs(10)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    let secs = merged.api_elapsed_ms as f64 / 1000.0;
    let ok = merged.api_requests - merged.api_errors;
    let cpu = cpu_delta(&cpu0, &cpu1);
    m.insert("duration_s".into(), json!(duration.as_secs_f64()));
    m.insert("requests".into(), json!(merged.api_requests));
    m.insert("api_errors".into(), json!(merged.api_errors));
    m.insert("seconds".into(), json!(round(secs, 3)));
    m.insert("requests_per_s".into(), json!(round(ok as f64 / secs.max(1e-9), 1)));
    m.insert("api_latency".into(), stats::summary(merged.api.as_ref().expect("set")));
    m.insert("server_cpu_s".into(), json!(cpu.map(|c| round(c, 3))));
    m.insert("server_cpu_us_per_request".into(), json!(cpu.filter(|_| ok > 0).map(|c| round(c * 1e6 / ok as f64, 2))));
    let window = cpu1.at.zip(cpu0.at).map(|(b, a)| (b - a).as_secs_f64()).unwrap_or(0.0);
    m.insert("server_cpu_pct".into(), json!(cpu.filter(|_| window > 0.0).map(|c| round(c * 100.0 / window, 1))));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&cpu0, &cpu1));
    m.insert("client_cpu_s".into(), json!(round(merged.client_cpu_s, 3)));
    eprintln!(
        "  {} requests ({} errors) in {:.2} s = {} publishes/s; latency {}; server CPU {} % ({} µs per request); client CPU {} s",
        merged.api_requests,
        merged.api_errors,
        secs,
        m["requests_per_s"],
        stats::human(&m["api_latency"]),
        m["server_cpu_pct"],
        m["server_cpu_us_per_request"],
        m["client_cpu_s"]
    );
    finish(&s, m)
}
