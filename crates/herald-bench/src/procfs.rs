//! Server-side measurements from /proc: resident memory, CPU time, kernel slab.

use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second for /proc/PID/stat times.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kb(&status, "VmRSS:")
}

/// `utime + stime` of a process, in seconds.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let (utime, stime) = cpu_ticks(pid)?;
    Some((utime + stime) as f64 / clk_tck() as f64)
}

/// `(utime, stime)` in clock ticks from `/proc/<who>/stat`; `who` is a PID, `self` or
/// `thread-self` (the calling thread only).
pub fn cpu_ticks(who: &str) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{who}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

/// Time on CPU in nanoseconds from `/proc/<who>/schedstat` (the scheduler's own count, not
/// tick samples); `None` where the kernel lacks it.
pub fn run_ns(who: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{who}/schedstat")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// CPU time of one thread or process: tick-sampled user/system split plus the scheduler's
/// nanosecond total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_ticks: u64,
    pub sys_ticks: u64,
    pub run_ns: Option<u64>,
}

impl CpuTimes {
    pub fn read(who: &str) -> Option<CpuTimes> {
        let (user_ticks, sys_ticks) = cpu_ticks(who)?;
        Some(CpuTimes { user_ticks, sys_ticks, run_ns: run_ns(who) })
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user_ticks: self.user_ticks.saturating_sub(earlier.user_ticks),
            sys_ticks: self.sys_ticks.saturating_sub(earlier.sys_ticks),
            run_ns: self.run_ns.zip(earlier.run_ns).map(|(a, b)| a.saturating_sub(b)),
        }
    }

    pub fn add(&mut self, o: &CpuTimes) {
        self.user_ticks += o.user_ticks;
        self.sys_ticks += o.sys_ticks;
        self.run_ns = self.run_ns.zip(o.run_ns).map(|(a, b)| a + b);
    }

    pub fn user_s(&self) -> f64 {
        self.user_ticks as f64 / clk_tck() as f64
    }

    pub fn sys_s(&self) -> f64 {
        self.sys_ticks as f64 / clk_tck() as f64
    }
}

/// Machine-wide CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineCpu {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl MachineCpu {
    pub fn read() -> Option<MachineCpu> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let f = |i: usize| v.get(i).copied().unwrap_or(0);
        Some(MachineCpu {
            user: f(0),
            nice: f(1),
            system: f(2),
            idle: f(3),
            iowait: f(4),
            irq: f(5),
            softirq: f(6),
            steal: f(7),
        })
    }
}

/// Machine-wide CPU seconds between two `/proc/stat` readings, by kind, plus the CPU of the
/// `ksoftirqd` threads (network receive work the kernel deferred out of the sending process).
pub fn machine_cpu_delta(a: &Sample, b: &Sample) -> serde_json::Value {
    let (Some(x), Some(y)) = (a.machine, b.machine) else { return serde_json::Value::Null };
    let t = clk_tck() as f64;
    let d = |p: u64, q: u64| ((q.saturating_sub(p)) as f64 / t * 1000.0).round() / 1000.0;
    serde_json::json!({
        "user_s": d(x.user + x.nice, y.user + y.nice),
        "system_s": d(x.system, y.system),
        "softirq_s": d(x.softirq + x.irq, y.softirq + y.irq),
        "idle_s": d(x.idle + x.iowait, y.idle + y.iowait),
        "steal_s": d(x.steal, y.steal),
        "ksoftirqd_s": a.ksoftirqd_s.zip(b.ksoftirqd_s).map(|(p, q)| ((q - p) * 1000.0).round() / 1000.0),
    })
}

/// CPU seconds used so far by every `ksoftirqd/N` kernel thread.
pub fn ksoftirqd_seconds() -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    let dir = std::fs::read_dir("/proc").ok()?;
    // Kernel threads have low PIDs; a bounded scan of /proc is enough.
    for entry in dir.flatten().take(100_000) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else { continue };
        if comm.starts_with("ksoftirqd/")
            && let Some(s) = cpu_seconds(pid)
        {
            total += s;
            found = true;
        }
    }
    found.then_some(total)
}

/// Write-family system calls (`write`, `writev`, ...; not `send`/`sendmsg`) a process has made,
/// from `syscw` in `/proc/<who>/io` (all threads; needs the same user or root).
pub fn write_syscalls(who: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{who}/io")).ok()?;
    let line = text.lines().find(|l| l.starts_with("syscw:"))?;
    line["syscw:".len()..].trim().parse().ok()
}

/// A `/proc/meminfo` field, in KiB.
pub fn meminfo_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    field_kb(&text, &format!("{key}:"))
}

fn field_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// One sample of the server processes and the kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Sum of `VmRSS` over the server PIDs (KiB); `None` without PIDs or when one vanished.
    pub rss_kb: Option<u64>,
    /// Sum of CPU seconds over the server PIDs.
    pub cpu_s: Option<f64>,
    /// Kernel `Slab` (KiB), whole machine.
    pub slab_kb: Option<u64>,
    /// Machine-wide CPU counters.
    #[serde(skip)]
    pub machine: Option<MachineCpu>,
    /// CPU seconds of the `ksoftirqd` threads so far.
    #[serde(skip)]
    pub ksoftirqd_s: Option<f64>,
    /// Sum of the server PIDs' write-family system calls so far.
    #[serde(skip)]
    pub write_syscalls: Option<u64>,
    #[serde(skip)]
    pub at: Option<Instant>,
}

pub fn sample(pids: &[u32]) -> Sample {
    let (rss_kb, cpu_s) = if pids.is_empty() {
        (None, None)
    } else {
        let rss: Option<Vec<u64>> = pids.iter().map(|p| rss_kb(*p)).collect();
        let cpu: Option<Vec<f64>> = pids.iter().map(|p| cpu_seconds(&p.to_string())).collect();
        (rss.map(|v| v.iter().sum()), cpu.map(|v| v.iter().sum()))
    };
    Sample {
        rss_kb,
        cpu_s,
        slab_kb: meminfo_kb("Slab"),
        machine: MachineCpu::read(),
        write_syscalls: if pids.is_empty() {
            None
        } else {
            pids.iter().map(|p| write_syscalls(&p.to_string())).sum::<Option<u64>>()
        },
        ksoftirqd_s: ksoftirqd_seconds(),
        at: Some(Instant::now()),
    }
}

/// Sum of `VmRSS` over `pids` (KiB); `None` without PIDs or when one is gone.
pub fn sample_rss_kb(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_kb(*p)).sum()
}

/// CPU seconds used by this process so far.
pub fn self_cpu_seconds() -> f64 {
    cpu_seconds("self").unwrap_or(0.0)
}

/// `VmRSS` of this process, KiB.
pub fn self_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| field_kb(&s, "VmRSS:")).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 0);
        assert!(cpu_seconds(&pid.to_string()).is_some());
        assert!(meminfo_kb("MemTotal").unwrap() > 0);
        assert!(clk_tck() > 0);
        let s = sample(&[pid]);
        assert!(s.rss_kb.is_some() && s.cpu_s.is_some());
        assert!(s.write_syscalls.is_some());
        assert!(sample(&[]).rss_kb.is_none());
        let t = CpuTimes::read("thread-self").unwrap();
        assert_eq!(t.since(&t), CpuTimes { run_ns: t.run_ns.map(|_| 0), ..Default::default() });
        let m = MachineCpu::read().unwrap();
        assert!(m.user + m.system + m.idle > 0);
        let v = machine_cpu_delta(&s, &sample(&[]));
        assert!(v["idle_s"].as_f64().is_some(), "{v}");
    }
}
