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
    assert!(v.get("rss_series").is_none(), "{v}");

    // Slow consumers: 5 of 50 never read after subscribing; the readers lose nothing.
    let v = bench(
        &server,
        &["fanout", "-n", "50", "--procs", "2", "--rate", "20", "--duration", "1s", "--stalled-share", "0.1"],
    );
    assert_eq!(u(&v, "stalled"), 5, "{v}");
    assert_eq!(u(&v, "readers"), 45, "{v}");
    assert_clean_delivery(&v, 50);
    assert_eq!(u(&v, "expected_deliveries"), u(&v, "publications") * 45);
    assert!(v["server_disconnects"].is_object(), "server /metrics not read: {v}");

    // Soak sampling: the server's RSS series.
    let v = bench(
        &server,
        &[
            "churn",
            "-n",
            "50",
            "--procs",
            "1",
            "--rate",
            "5",
            "--duration",
            "2s",
            "--rss-every",
            "500ms",
            "--rss-fit",
            "1s",
        ],
    );
    let rss = &v["rss_series"];
    assert!(u(rss, "samples") >= 3, "{v}");
    assert!(u(rss, "first_kb") > 0 && u(rss, "max_kb") >= u(rss, "min_kb"), "{v}");
    assert!(rss["slope_kb_per_min"].as_f64().is_some(), "{v}");

    let v = bench(&server, &["churn", "--handshake-rate", "-n", "200", "--duration", "3s"]);
    assert_eq!(u(&v, "handshakes"), 200, "{v}");
    assert_eq!(u(&v, "connect_errors"), 0, "{v}");

    let v = bench(&server, &["api", "-n", "4", "--procs", "2", "--duration", "1s"]);
    assert!(u(&v, "requests") > 0, "{v}");
    assert_eq!(u(&v, "api_errors"), 0, "{v}");
    assert!(v["requests_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{v}");

    eprintln!("smoke test took {:.1} s", started.elapsed().as_secs_f64());
}

/// The reconnect storm against a Herald started by bench/herald.sh (so the restart command can
/// stop and start it on the same port): every client comes back after the restart.
#[test]
fn storm_reconnects_everyone_after_a_restart() {
    let bin = build_herald();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string();
    let script = root().join("bench/herald.sh");
    let sh = |args: &[&str]| {
        let out = Command::new(&script).args(args).env("HERALD_BIN", &bin).output().expect("run bench/herald.sh");
        assert!(out.status.success(), "herald.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pid = sh(&["start", &port]).trim().trim_start_matches("pid ").to_owned();
    // Stops whichever Herald the script recorded for the port, also when an assertion fails.
    struct StopOnDrop(PathBuf, String);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = Command::new(&self.0).args(["stop", &self.1]).output();
        }
    }
    let _stop = StopOnDrop(script.clone(), port.clone());
    let restart = format!("'{0}' stop {port} && '{0}' start {port}", script.display());
    for backoff_min in ["0s", "100ms"] {
        let out = Command::new(BENCH)
            .args(["storm", "-n", "40", "--procs", "2", "--url", &format!("http://127.0.0.1:{port}")])
            .args(["--restart-cmd", &restart, "--backoff-min", backoff_min, "--backoff-max", "1s"])
            .args(["--server-pid", &pid, "--settle", "200ms", "--max-time", "90s"])
            .args(["--hmac-secret", "bench-hmac-secret", "--api-key", "bench-api-key"])
            .env("HERALD_BIN", &bin)
            .stdin(Stdio::null())
            .output()
            .expect("run herald-bench storm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "storm failed:\n{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("JSON result");
        assert_eq!(v["complete"], true, "{v}");
        assert_eq!(u(&v, "connections_before"), 40, "{v}");
        assert_eq!(u(&v, "connections_at_end"), 40, "{v}");
        assert!(u(&v, "reconnects") >= 40, "{v}");
        assert!(v["all_back_after_stop_s"].as_f64().unwrap() >= v["all_back_after_restart_s"].as_f64().unwrap());
        assert!(v["new_server_cpu_s"].as_f64().is_some(), "{v}");
        assert_eq!(u(&v["server_closed"], "close_3001"), 40, "every client hears the shutdown: {v}");
    }
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
