//! The idle scenario: opens the connections in checkpoint stages, samples server memory at
//! each, then measures server CPU over a window in which the connections only answer pings.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    JobSpec, base, client_fields, connect_fields, cpu_delta, finish, jobs, memory, merge, print_connect, print_memory,
    ramp_deadline, sample, setup,
};
use crate::cli::{ChannelMode, IdleArgs};
use crate::fleet::Fleet;
use crate::job::{Channels, Cmd};
use crate::procfs;
use crate::report::round;

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
    let spec = JobSpec {
        channels,
        strict_order: true,
        max_seq: 0,
        churn_percent: None,
        handshake: None,
        api: None,
        stalled_share: 0.0,
        reconnect: None,
    };
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
