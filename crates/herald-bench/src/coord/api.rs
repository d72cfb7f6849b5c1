//! The api scenario: worker processes publish over keep-alive HTTP connections as fast as
//! the server answers; measures requests per second, latency and server CPU per request (with
//! `--batch K`: K publications per `/api/batch` request, also per publication).

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::{JobSpec, base, cpu_delta, finish, jobs, merge, sample, setup};
use crate::cli::ApiArgs;
use crate::fleet::Fleet;
use crate::job::{ApiJob, Channels, Cmd, Target};
use crate::procfs;
use crate::report::round;
use crate::stats;

pub async fn api(a: ApiArgs) -> Result<(), String> {
    let s = setup(&a.common, 50, Some(2), true)?;
    let duration = s.c.duration.unwrap_or(Duration::from_secs(10));
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_api".into());
    let (path, headers, herald_channel) = match (&a.path, s.c.target) {
        (Some(path), _) => {
            (format!("{}{path}", s.urls[0].prefix), a.headers.iter().map(|h| format!("{h}\r\n")).collect(), None)
        }
        (None, Target::Herald) => (
            format!("{}/api/{}", s.urls[0].prefix, if a.batch.is_some() { "batch" } else { "publish" }),
            s.c.api_key.as_ref().map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default(),
            Some(channel.clone()),
        ),
        (None, Target::Nchan) => (format!("{}/pub/{channel}", s.urls[0].prefix), String::new(), None),
    };
    let batch = a.batch.unwrap_or(0) as usize;
    if batch > 0 && s.c.target != Target::Herald {
        return Err("--batch is Herald's /api/batch".into());
    }
    let what = match (&a.path, batch) {
        (Some(_), _) => format!("posting to {path}"),
        (None, 0) => format!("publishing to {channel}"),
        (None, k) => {
            format!("publishing to {channel} in batches of {k}{}", if a.parallel { " (parallel)" } else { "" })
        }
    };
    eprintln!(
        "api: {} keep-alive connections over {} process(es) {what} on {} ({}) for {:.0} s",
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
            any_2xx: a.path.is_some(),
            batch,
            parallel: a.parallel,
        }),
        stalled_share: 0.0,
        reconnect: None,
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
    if batch > 0 {
        let pubs = ok * batch as u64;
        m.insert("batch".into(), json!(batch));
        m.insert("parallel".into(), json!(a.parallel));
        m.insert("publications_per_s".into(), json!(round(pubs as f64 / secs.max(1e-9), 1)));
        m.insert(
            "server_cpu_us_per_publication".into(),
            json!(cpu.filter(|_| pubs > 0).map(|c| round(c * 1e6 / pubs as f64, 2))),
        );
        eprintln!(
            "  batches of {batch}: {} publications/s, server CPU {} µs per publication",
            m["publications_per_s"], m["server_cpu_us_per_publication"]
        );
    }
    eprintln!(
        "  {} requests ({} errors) in {:.2} s = {} {}/s; latency {}; server CPU {} % ({} µs per request); client CPU {} s",
        merged.api_requests,
        merged.api_errors,
        secs,
        m["requests_per_s"],
        if batch > 0 { "requests" } else { "publishes" },
        stats::human(&m["api_latency"]),
        m["server_cpu_pct"],
        m["server_cpu_us_per_request"],
        m["client_cpu_s"]
    );
    finish(&s, m)
}
