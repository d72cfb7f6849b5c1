//! The coordinator: resolves the options, starts the worker processes, publishes through the
//! server API, samples the server from /proc, merges what the workers measured, and writes the
//! summary and the result line.
//!
//! This module owns the run plumbing every scenario shares: the resolved options (`Setup`),
//! the worker jobs, opening the connections, memory and CPU samples, merging the worker results
//! and the common fields of the result line. Publishing through the server API lives in
//! `publish`; each scenario family has its own file (`idle`, `fanout` with `personal`, `churn`
//! with the handshake-rate load, `storm`, `api`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::cli::Common;
use crate::fleet::Fleet;
use crate::job::{ApiJob, Backoff, Channels, HandshakeJob, Job, Target, WorkerResult};
use crate::procfs::{self, Sample};
use crate::report::{self, round};
use crate::stats::{self, PubAgg};
use crate::util::{BaseUrl, parse_ip_list, parse_url};

mod api;
mod churn;
mod fanout;
mod idle;
mod publish;
mod storm;

pub use api::api;
pub use churn::churn;
pub use fanout::{fanout, personal};
pub use idle::idle;
pub use storm::storm;

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
        Target::Herald => format!("{prefix}/connection/{}", c.transport.as_str()),
        Target::Nchan => format!("{prefix}/sub/{{channel}}"),
    });
    if c.transport != crate::job::ClientTransport::Websocket
        && (c.target != Target::Herald || c.encoding != crate::job::Enc::Json)
    {
        return Err("--transport uni_sse / uni_long_poll: Herald with JSON only".into());
    }
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
    stalled_share: f64,
    reconnect: Option<Backoff>,
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
                transport: s.c.transport,
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
                stalled_share: spec.stalled_share,
                reconnect: spec.reconnect,
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
        m.insert("transport".into(), json!(s.c.transport.as_str()));
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

pub(crate) fn client_fields(m: &mut Map<String, Value>, merged: &Merged) {
    m.insert("client_cpu_s".into(), json!(round(merged.client_cpu_s, 3)));
    m.insert("client_rss_kb".into(), json!(merged.client_rss_kb));
    m.insert("server_closed".into(), json!(merged.server_closed));
    m.insert("connect_error_kinds".into(), json!(merged.error_kinds));
    m.insert("handshake_latency".into(), stats::summary(merged.handshake.as_ref().expect("set")));
    m.insert("pings_answered".into(), json!(merged.pings));
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
