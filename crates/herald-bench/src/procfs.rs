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
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck() as f64)
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
    Sample { rss_kb, cpu_s, slab_kb: meminfo_kb("Slab"), at: Some(Instant::now()) }
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
        assert!(sample(&[]).rss_kb.is_none());
    }
}
