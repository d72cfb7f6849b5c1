//! The result line: machine facts, date, git revision, and where it goes.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::procfs;
use crate::util::utc_datetime;

pub fn machine() -> Value {
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "mem_total_kb": procfs::meminfo_kb("MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_owned()),
        "clk_tck": procfs::clk_tck(),
    })
}

/// The fields every result line starts with.
pub fn header(scenario: &str, target: &str, label: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), json!(scenario));
    m.insert("target".into(), json!(target));
    m.insert("label".into(), json!(label));
    m.insert("date".into(), json!(date()));
    m.insert("git".into(), json!(git_describe()));
    m.insert("machine".into(), machine());
    m
}

pub fn date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc_datetime(secs)
}

/// `git describe --always --dirty --tags` of the source tree, if it is a git checkout.
pub fn git_describe() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--tags"])
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|s| !s.is_empty())
}

/// Prints the JSON line (last line of stdout) and appends it to `json_out` if given.
pub fn emit(result: &Map<String, Value>, json_out: Option<&Path>) -> Result<(), String> {
    let line = serde_json::to_string(result).expect("results serialize");
    if let Some(path) = json_out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|e| format!("stdout: {e}"))
}

/// Rounds to `digits` decimals (keeps the JSON readable).
pub fn round(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}
