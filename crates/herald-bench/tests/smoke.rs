//! Smoke test: every scenario of `herald-bench` against a real `herald` process, with tiny
//! numbers (50 connections, 2 worker processes, a second or two each).
//!
//! The server binary is built first with the same cargo and profile (quick when it is already
//! built), then started with the benchmark config on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_herald-bench");

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `herald` into the directory that holds this test's `herald-bench` binary.
fn build_herald() -> PathBuf {
    let profile_dir = Path::new(BENCH).parent().expect("binary has a directory").to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-q", "-p", "herald-server", "--bin", "herald"]).current_dir(root());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p herald-server failed");
    let bin = profile_dir.join("herald");
    assert!(bin.exists(), "no herald binary at {}", bin.display());
    bin
}

fn start_herald(bin: &Path) -> Server {
    let config = root().join("bench/herald-bench.toml");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start herald");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(i) = line.find("herald listening on ") {
                let addr = line[i + "herald listening on ".len()..].split_whitespace().next().unwrap_or("").to_owned();
                let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(port);
                sent = true;
            }
        }
    });
    let mut server = Server { child, port: 0 };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(port)) => server.port = port,
        other => panic!("herald did not report its port: {other:?}"),
    }
    server
}

/// Runs one scenario and returns its result line.
fn bench(server: &Server, args: &[&str]) -> Value {
    let started = Instant::now();
    let url = format!("http://127.0.0.1:{}", server.port);
    let pid = server.child.id().to_string();
    let out = Command::new(BENCH)
        .args(args)
        .args(["--url", &url, "--server-pid", &pid, "--settle", "200ms", "--max-time", "60s"])
        .args(["--hmac-secret", "bench-hmac-secret", "--api-key", "bench-api-key"])
        .stdin(Stdio::null())
        .output()
        .expect("run herald-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench {args:?} failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output from {args:?}:\n{stderr}"));
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON ({e}): {last}"));
    eprintln!("{args:?}: {:.1} s", started.elapsed().as_secs_f64());
    v
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} missing or not a count in {v}"))
}

fn assert_clean_delivery(v: &Value, subscribers: u64) {
    assert_eq!(u(v, "connections"), subscribers, "{v}");
    assert_eq!(u(v, "connect_errors"), 0, "{v}");
    let pubs = u(v, "publications");
    assert!(pubs > 0, "{v}");
    assert_eq!(u(v, "publish_errors"), 0, "{v}");
    assert_eq!(u(v, "lost"), 0, "{v}");
    assert_eq!(u(v, "dups"), 0, "{v}");
    assert_eq!(u(v, "gaps"), 0, "{v}");
    assert_eq!(u(v, "out_of_order"), 0, "{v}");
    assert_eq!(u(v, "deliveries"), u(v, "expected_deliveries"), "{v}");
    assert!(v["latency_last"]["p99_ms"].as_f64().is_some(), "{v}");
    assert!(v["server_cpu_s"].as_f64().is_some(), "{v}");
    assert!(v["memory"]["rss_per_conn_bytes"].as_f64().is_some(), "{v}");
}

#[test]
fn every_scenario_against_herald() {
    let started = Instant::now();
    let bin = build_herald();
    let server = start_herald(&bin);

    let v = bench(&server, &["fanout", "-n", "50", "--procs", "2", "--rate", "20", "--duration", "2s"]);
    assert_clean_delivery(&v, 50);
    assert_eq!(u(&v, "expected_deliveries"), u(&v, "publications") * 50);
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["encoding"], "json");

    let v = bench(
        &server,
        &["fanout", "-n", "50", "--procs", "2", "--rate", "20", "--duration", "1s", "--encoding", "protobuf"],
    );
    assert_clean_delivery(&v, 50);
    assert_eq!(v["encoding"], "protobuf");

    let v = bench(&server, &["personal", "-n", "50", "--procs", "2", "--rate", "100", "--duration", "1s"]);
    assert_clean_delivery(&v, 50);
    assert_eq!(u(&v, "publications"), 100);

    let v = bench(&server, &["idle", "-n", "50", "--procs", "2", "--window", "1s", "--checkpoints", "20,50"]);
    assert_eq!(u(&v, "connections"), 50, "{v}");
    assert_eq!(u(&v, "connections_at_end"), 50, "{v}");
    assert_eq!(v["checkpoints"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(v["idle_cpu_pct"].as_f64().is_some(), "{v}");
    assert!(v["memory"]["slab_per_conn_bytes"].as_f64().is_some(), "{v}");

    let v = bench(
        &server,
        &["churn", "-n", "50", "--procs", "2", "--churn-percent", "20", "--rate", "10", "--duration", "2s"],
    );
    assert_eq!(u(&v, "connections"), 50, "{v}");
    assert!(u(&v, "handshakes_measured") >= 10, "{v}");
    assert_eq!(u(&v, "connect_errors_measured"), 0, "{v}");
    assert_eq!(u(&v, "lost"), 0, "{v}");
    assert_eq!(u(&v, "dups"), 0, "{v}");
    assert!(u(&v, "deliveries") > 0, "{v}");

    let v = bench(&server, &["churn", "--handshake-rate", "-n", "200", "--duration", "3s"]);
    assert_eq!(u(&v, "handshakes"), 200, "{v}");
    assert_eq!(u(&v, "connect_errors"), 0, "{v}");

    let v = bench(&server, &["api", "-n", "4", "--procs", "2", "--duration", "1s"]);
    assert!(u(&v, "requests") > 0, "{v}");
    assert_eq!(u(&v, "api_errors"), 0, "{v}");
    assert!(v["requests_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    eprintln!("smoke test took {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn floor_needs_no_server() {
    let out = Command::new(BENCH)
        .args(["floor", "-n", "60", "--procs", "2", "--writers", "2", "--rounds", "3", "--interval", "100ms"])
        .args(["--settle", "100ms", "--max-time", "60s"])
        .stdin(Stdio::null())
        .output()
        .expect("run herald-bench floor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench floor failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_else(|| panic!("no output:\n{stderr}"));
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON ({e}): {last}"));
    assert_eq!(v["scenario"], "floor");
    assert_eq!(u(&v, "connections"), 60, "{v}");
    assert_eq!(u(&v, "writes"), 180, "{v}");
    assert_eq!(u(&v, "deliveries"), 180, "{v}");
    assert_eq!(u(&v, "lost"), 0, "{v}");
    assert_eq!(u(&v, "dups"), 0, "{v}");
    assert_eq!(u(&v, "payload"), 130, "{v}");
    assert_eq!(v["latency_last"]["count"], 3, "{v}");
    assert!(v["writer_cpu_us_per_write"].as_f64().is_some(), "{v}");
}
