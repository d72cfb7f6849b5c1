//! The reconnect storm: N subscribed connections, then the server is stopped and started again
//! by a shell command (`--restart-cmd`), and every client reconnects on its own (at once, or
//! with the SDKs' jittered backoff). Measured: the time until everyone is connected and
//! subscribed again (from the stop and from the restart), the failed attempts by kind, and the
//! CPU of the old server while it shut down and of the new one until the storm was over.

use std::cell::Cell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::{JobSpec, client_fields, connect_all, finish, merge, sample, setup};
use crate::cli::StormArgs;
use crate::job::{Backoff, Channels, Cmd, Progress};
use crate::procfs;
use crate::report::round;
use crate::stats;
use crate::util::now_ns;

/// The PID in the last `pid <N>` line of the restart command's output (bench/herald.sh prints it).
pub(crate) fn restarted_pid(output: &str) -> Option<u32> {
    output.lines().rev().find_map(|l| l.trim().strip_prefix("pid ")?.trim().parse().ok())
}

/// Whether the storm is over by the workers' latest progress: as many connections open as
/// before, at least that many handshakes since the start, none in flight.
pub(crate) fn storm_over(progress: &[Progress], before: u64) -> bool {
    let open: u64 = progress.iter().map(|p| p.open).sum();
    let again: u64 = progress.iter().map(|p| p.handshakes_measured).sum();
    let pending: u64 = progress.iter().map(|p| p.pending).sum();
    open >= before && again >= before && pending == 0
}

/// Seconds from one wall-clock time to another; negative when `to` came first (clients back
/// before the restart command returned: it polls the new server's health every 100 ms).
fn secs_between(from_ns: u64, to_ns: u64) -> Option<f64> {
    (from_ns > 0 && to_ns > 0).then(|| round((to_ns as f64 - from_ns as f64) / 1e9, 3))
}

pub async fn storm(a: StormArgs) -> Result<(), String> {
    let s = setup(&a.common, 1000, None, true)?;
    if a.backoff_min > a.backoff_max {
        return Err("--backoff-min is above --backoff-max".into());
    }
    if s.c.server_pids.len() > 1 {
        return Err("storm measures one server process: give at most one --server-pid".into());
    }
    let backoff = Backoff { min_ms: a.backoff_min.as_millis() as u64, max_ms: a.backoff_max.as_millis() as u64 };
    let channel = s.c.channel.clone().unwrap_or_else(|| "bench_storm".into());
    let policy = if backoff.min_ms == 0 {
        "at once (failed attempts every 100 ms)".to_owned()
    } else {
        format!("backoff {}–{} ms, full jitter", backoff.min_ms, backoff.max_ms)
    };
    eprintln!("storm: {} subscribers of {channel} on {}, reconnect {policy}", s.n, s.hosts());
    let spec = JobSpec {
        channels: Channels::Shared(channel),
        strict_order: false,
        max_seq: 0,
        churn_percent: None,
        handshake: None,
        api: None,
        stalled_share: 0.0,
        reconnect: Some(backoff),
    };
    let mut m = super::base(&s, "storm");
    m.insert("backoff_min_ms".into(), json!(backoff.min_ms));
    m.insert("backoff_max_ms".into(), json!(backoff.max_ms));
    m.insert("max_inflight".into(), json!(s.c.max_inflight));
    let (mut fleet, _) = connect_all(&s, &spec, &mut m).await?;
    let before = fleet.ready_open();
    fleet.send_all(Cmd::Start).await;
    // Let `start` reach the workers before the drops begin.
    fleet.pump_until(Instant::now() + Duration::from_millis(500), |_| false).await;

    let old_pid = s.c.server_pids.first().copied();
    let cpu0 = sample(&s);
    // The old server's CPU is read until it is gone: its last reading covers the shutdown.
    let old_cpu_last = Rc::new(Cell::new(cpu0.cpu_s));
    let watcher = old_pid.map(|pid| {
        let last = old_cpu_last.clone();
        tokio::task::spawn_local(async move {
            while let Some(c) = procfs::cpu_seconds(&pid.to_string()) {
                last.set(Some(c));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .abort_handle()
    });
    let stop_ns = now_ns();
    eprintln!("  restarting the server: {}", a.restart_cmd);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&a.restart_cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the restart command: {e}"))?;
    let output = Rc::new(Cell::new(None::<Result<String, String>>));
    {
        let output = output.clone();
        let mut stdout = child.stdout.take().expect("piped stdout");
        tokio::task::spawn_local(async move {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text).await;
            let r = match child.wait().await {
                Ok(st) if st.success() => Ok(text),
                Ok(st) => Err(format!("the restart command failed ({st}): {text}")),
                Err(e) => Err(format!("the restart command: {e}")),
            };
            output.set(Some(r));
        });
    }
    let restart_deadline = (Instant::now() + a.restart_timeout).min(s.deadline);
    let o = output.clone();
    fleet
        .pump_until(restart_deadline, move |_| {
            let v = o.take();
            let done = v.is_some();
            o.set(v);
            done
        })
        .await;
    if let Some(w) = watcher {
        w.abort();
    }
    let up_ns = now_ns();
    let restarted = match output.take() {
        Some(Ok(text)) => text,
        Some(Err(e)) => {
            fleet.shutdown().await;
            return Err(e);
        }
        None => {
            fleet.shutdown().await;
            return Err(format!("the restart command did not finish in {:?}", a.restart_timeout));
        }
    };
    let new_pid = restarted_pid(&restarted);
    eprintln!(
        "  restarted after {:.2} s (new pid {new_pid:?}); waiting for the clients",
        (up_ns - stop_ns) as f64 / 1e9
    );
    let storm_deadline = (Instant::now() + a.storm_timeout).min(s.deadline);
    let complete = fleet.pump_until(storm_deadline, |f| storm_over(&f.progress, before)).await;
    let new_cpu = new_pid.and_then(|p| procfs::cpu_seconds(&p.to_string()));
    let end = procfs::sample(&new_pid.into_iter().collect::<Vec<_>>());
    let last_ready_ns = fleet.progress.iter().map(|p| p.last_ready_ns).max().unwrap_or(0);
    let first_drop_ns = fleet.progress.iter().map(|p| p.first_drop_ns).filter(|&t| t > 0).min().unwrap_or(0);
    fleet.stop(Instant::now() + Duration::from_secs(20)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;

    m.insert("complete".into(), json!(complete));
    m.insert("connections_before".into(), json!(before));
    m.insert("connections_at_end".into(), json!(merged.open));
    m.insert("restart_s".into(), json!(secs_between(stop_ns, up_ns)));
    m.insert("first_drop_after_s".into(), json!(secs_between(stop_ns, first_drop_ns)));
    m.insert("all_back_after_stop_s".into(), json!(complete.then(|| secs_between(stop_ns, last_ready_ns)).flatten()));
    m.insert("all_back_after_restart_s".into(), json!(complete.then(|| secs_between(up_ns, last_ready_ns)).flatten()));
    m.insert("reconnects".into(), json!(merged.handshakes_measured));
    m.insert("failed_attempts".into(), json!(merged.errors_measured));
    m.insert("old_server_cpu_s".into(), json!(cpu0.cpu_s.zip(old_cpu_last.get()).map(|(a, b)| round(b - a, 3))));
    m.insert("new_server_pid".into(), json!(new_pid));
    m.insert("new_server_cpu_s".into(), json!(new_cpu.map(|c| round(c, 3))));
    m.insert("new_server_rss_kb".into(), json!(end.rss_kb));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&cpu0, &end));
    client_fields(&mut m, &merged);
    eprintln!(
        "  {} of {before} back ({}) {} s after the stop, {} s after the restart; {} reconnects, {} failed attempts {:?}",
        merged.open,
        if complete { "complete" } else { "INCOMPLETE" },
        m["all_back_after_stop_s"],
        m["all_back_after_restart_s"],
        merged.handshakes_measured,
        merged.errors_measured,
        merged.error_kinds
    );
    eprintln!("  closed by the old server: {:?}", merged.server_closed);
    eprintln!(
        "  server CPU: old {} s while stopping, new {} s until all were back; handshake latency {}",
        m["old_server_cpu_s"],
        m["new_server_cpu_s"],
        stats::human(&m["handshake_latency"])
    );
    finish(&s, m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_from_the_restart_output() {
        assert_eq!(restarted_pid("stopped\npid 4242\n"), Some(4242));
        assert_eq!(restarted_pid("pid 1\nsomething\npid 7"), Some(7));
        assert_eq!(restarted_pid("no pid here"), None);
    }

    #[test]
    fn seconds_between_wall_clock_times() {
        assert_eq!(secs_between(1_000_000_000, 3_500_000_000), Some(2.5));
        assert_eq!(secs_between(3_000_000_000, 2_000_000_000), Some(-1.0));
        assert_eq!(secs_between(0, 2_000_000_000), None);
        assert_eq!(secs_between(1, 0), None);
    }

    #[test]
    fn over_only_when_everyone_is_back() {
        let p = |open, again, pending| Progress { open, handshakes_measured: again, pending, ..Default::default() };
        // Before the drops: all open, but nobody reconnected yet.
        assert!(!storm_over(&[p(50, 0, 0), p(50, 0, 0)], 100));
        // Some reconnected twice, one still out.
        assert!(!storm_over(&[p(50, 60, 0), p(49, 49, 0)], 100));
        assert!(!storm_over(&[p(50, 50, 1), p(50, 50, 0)], 100));
        assert!(storm_over(&[p(50, 50, 0), p(50, 52, 0)], 100));
    }
}
