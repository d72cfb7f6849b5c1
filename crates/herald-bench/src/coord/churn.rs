//! The churn scenario (a share of the connections reconnecting every second under a fan-out)
//! and, behind `--handshake-rate`, the handshake-rate load (open, handshake, close). With
//! `--rss-every` the churn run is a soak: the server's RSS is sampled all along.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::publish::{Plan, delivery_fields, publish_phase};
use super::{JobSpec, base, client_fields, connect_all, cpu_delta, finish, jobs, merge, sample, setup};
use crate::cli::ChurnArgs;
use crate::fleet::Fleet;
use crate::job::{Channels, Cmd, HandshakeJob};
use crate::procfs;
use crate::report::round;
use crate::series::{self, Point};
use crate::stats;

/// Samples the server's RSS on an interval while the run goes on (the soak's memory series).
struct RssSampler {
    points: Rc<RefCell<Vec<Point>>>,
    t0: Instant,
    task: tokio::task::AbortHandle,
}

impl RssSampler {
    fn start(pids: Vec<u32>, every: Duration) -> RssSampler {
        let points = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
        let task = {
            let points = points.clone();
            tokio::task::spawn_local(async move {
                let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Some(kb) = procfs::sample_rss_kb(&pids) {
                        points.borrow_mut().push((t0.elapsed().as_secs_f64(), kb));
                    }
                }
            })
            .abort_handle()
        };
        RssSampler { points, t0, task }
    }

    /// Stops sampling; one last sample closes the series.
    fn finish(self, pids: &[u32]) -> Vec<Point> {
        self.task.abort();
        let mut points = std::mem::take(&mut *self.points.borrow_mut());
        if let Some(kb) = procfs::sample_rss_kb(pids) {
            points.push((self.t0.elapsed().as_secs_f64(), kb));
        }
        points
    }
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
        stalled_share: 0.0,
        reconnect: None,
    };
    let mut m = base(&s, "churn");
    m.insert("churn_percent".into(), json!(a.churn_percent));
    m.insert("rate".into(), json!(rate));
    m.insert("duration_s".into(), json!(duration.as_secs_f64()));
    let (mut fleet, _) = connect_all(&s, &spec, &mut m).await?;
    let open = fleet.ready_open();
    fleet.send_all(Cmd::Start).await;
    let plan = Plan::Fanout { channel, rate, count, cluster: false };
    // Under churn not every publication reaches every connection: a short drain suffices.
    let drain = s.c.drain.min(Duration::from_secs(2));
    let per_publish = open as f64 / s.urls.len() as f64;
    let rss = a.rss_every.map(|every| RssSampler::start(s.c.server_pids.clone(), every));
    let out = publish_phase(&s, drain, &mut fleet, &plan, duration, per_publish, None).await;
    let rss = rss.map(|r| r.finish(&s.c.server_pids));
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
    if let Some(points) = &rss {
        let v = series::summary(points, a.rss_fit.as_secs_f64());
        eprintln!(
            "  server RSS over {} samples: first {} KiB, min {}, max {}, last {}; slope {} KiB/min over the last {:.0} s",
            v["samples"],
            v["first_kb"],
            v["min_kb"],
            v["max_kb"],
            v["last_kb"],
            v["slope_kb_per_min"],
            a.rss_fit.as_secs_f64()
        );
        m.insert("rss_series".into(), v);
    }
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
        stalled_share: 0.0,
        reconnect: None,
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
