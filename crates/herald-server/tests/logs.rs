//! Log outputs: `log.file` instead of stderr, `log.error_file` (warn and error lines),
//! `log.access_file` (one line per API request and per connection closed), JSON fields, trace
//! ids continued from `traceparent`, and the files reopened on SIGHUP (logrotate).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A herald writing its logs to files only, killed (by PID) when dropped.
struct Logged {
    child: Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logged {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(dir: &Path) -> String {
        let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        json!({"log": {
            "level": "info",
            "format": "json",
            "file": file("herald.log"),
            "error_file": file("error.log"),
            "access_file": file("access.log"),
        }})
        .to_string()
    }

    fn start() -> Logged {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), Logged::config(dir.path())).unwrap();
        let port = support::redis::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--port", &port.to_string(), "--address", "127.0.0.1", "--config"])
            .arg(dir.path().join("config.json"))
            .env_clear()
            .env("HERALD_HTTP_API_KEY", API_KEY)
            .env("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn herald");
        let logged = Logged { child, addr: ([127, 0, 0, 1], port).into(), dir };
        logged.wait_line("herald.log", "the listening line", |l| {
            l["message"].as_str().is_some_and(|m| m.starts_with("herald listening on"))
        });
        logged
    }

    /// The JSON lines of a log file (each line must be JSON).
    fn lines(&self, name: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path(name)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {l}")))
            .collect()
    }

    /// Waits for a line of `name` that matches.
    fn wait_line(&self, name: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.lines(name).into_iter().find(|l| matches(l)) {
                return line;
            }
            assert!(Instant::now() < deadline, "{what} not in {name}: {:#?}", self.lines(name));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test]
async fn json_lines_go_to_the_configured_files_and_are_reopened_on_sighup() {
    let herald = Logged::start();
    let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");

    // An API call with a trace: its access line.
    let body = json!({}).to_string();
    let headers = [("X-API-Key", API_KEY), ("traceparent", traceparent.as_str())];
    let resp = http_at(herald.addr, "POST", "/api/info", &headers, body.as_bytes()).await;
    assert_eq!(resp.status, 200);
    let api = herald.wait_line("access.log", "the API access line", |l| l["kind"] == "api");
    assert_eq!(api["method"], "info");
    assert_eq!(api["status"], 200);
    assert_eq!(api["address"], "127.0.0.1");
    assert_eq!(api["trace_id"], TRACE);
    assert_eq!(api["bytes"].as_u64(), Some(resp.body.len() as u64));
    assert!(api["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{api}");
    for field in ["timestamp", "level", "target", "message"] {
        assert!(api.get(field).is_some(), "{field} missing: {api}");
    }

    // A WebSocket connection with a trace: its access line when it closes.
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[("traceparent", traceparent.as_str())]).await;
    ws.send_json(&json!({"id": 1, "connect": {"token": token("carol")}})).await;
    let replies = ws.recv_json().await;
    let client = replies[0]["connect"]["client"].as_str().expect("connected").to_owned();
    ws.send_frame(8, &1000u16.to_be_bytes()).await;
    let _ = ws.until_closed(WAIT).await;
    let closed = herald.wait_line("access.log", "the connection access line", |l| l["kind"] == "connection");
    assert_eq!(closed["client"], client.as_str());
    assert_eq!(closed["user"], "carol");
    assert_eq!(closed["transport"], "websocket");
    assert_eq!(closed["trace_id"], TRACE);
    assert_eq!(closed["code"], 3000);
    assert_eq!(closed["address"], "127.0.0.1");
    assert!(closed["duration_ms"].as_u64().is_some(), "{closed}");

    // Access lines stay out of the main log; the main log has the rest.
    assert!(herald.lines("herald.log").iter().all(|l| l.get("kind").is_none()), "access lines in the main log");
    assert!(herald.lines("access.log").iter().all(|l| l["target"] == "herald::access"));
    assert!(herald.lines("error.log").is_empty(), "{:?}", herald.lines("error.log"));

    // logrotate: the files are moved away, SIGHUP reopens them. The reload itself fails (the
    // config file is broken now): an error line, in the new main log and in the error file.
    for name in ["herald.log", "error.log", "access.log"] {
        std::fs::rename(herald.path(name), herald.path(&format!("{name}.1"))).unwrap();
    }
    std::fs::write(herald.path("config.json"), "{ not json").unwrap();
    let hup = Command::new("kill").args(["-HUP", &herald.child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let refused = |l: &Value| l["message"].as_str().is_some_and(|m| m.starts_with("configuration reload refused"));
    let error = herald.wait_line("error.log", "the reload error", refused);
    assert_eq!(error["level"], "ERROR");
    herald.wait_line("herald.log", "the reload error", refused);
    assert!(herald.lines("herald.log.1").iter().all(|l| !refused(l)), "written to the rotated file");
    assert!(herald.lines("error.log").iter().all(|l| l["level"] == "ERROR" || l["level"] == "WARN"));
    // Access lines go to the new access file.
    let resp = http_at(herald.addr, "POST", "/api/info", &[("X-API-Key", API_KEY)], b"{}").await;
    assert_eq!(resp.status, 200);
    let api = herald.wait_line("access.log", "an access line after the rotation", |l| l["kind"] == "api");
    assert!(api.get("trace_id").is_none(), "no trace without traceparent: {api}");
    assert_eq!(herald.lines("access.log.1").len(), 2);
}

#[test]
fn a_log_file_that_cannot_be_opened_stops_start_up_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--port", "0", "--address", "127.0.0.1"])
        .env_clear()
        .env("HERALD_LOG_ERROR_FILE", "/nonexistent-dir/error.log")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("log.error_file") && stderr.contains("/nonexistent-dir/error.log"), "{stderr}");
}

/// `log.access = true` without a file: access lines in the main log (stderr here).
#[tokio::test]
async fn access_lines_can_go_to_the_main_log() {
    let herald = Herald::start(&[("HERALD_LOG_ACCESS", "true"), ("HERALD_LOG_FORMAT", "json")]);
    let resp = http_at(herald.addr, "POST", "/api/info", &[("X-API-Key", API_KEY)], b"{}").await;
    assert_eq!(resp.status, 200);
    wait_for("the access line on stderr", WAIT, || async {
        herald.logs().lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).any(|l| {
            l["target"] == "herald::access" && l["kind"] == "api" && l["method"] == "info" && l["status"] == 200
        })
    })
    .await;
    // Without log.access, no access line.
    let quiet = Herald::start(&[("HERALD_LOG_FORMAT", "json")]);
    let resp = http_at(quiet.addr, "POST", "/api/info", &[("X-API-Key", API_KEY)], b"{}").await;
    assert_eq!(resp.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!quiet.logs().contains("herald::access"), "{}", quiet.logs());
}
