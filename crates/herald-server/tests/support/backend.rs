//! The test backend of the logic-layer proxy tests: `proxy_backend.py` (Python standard
//! library) run as a separate process on its own loopback port, killed by PID when dropped.
//! What it answers is decided by words in the request (see the script); it records every
//! request it receives so tests can assert the exact bodies and headers.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Backend {
    pub addr: SocketAddr,
    child: Child,
}

impl Backend {
    pub fn start() -> Backend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/proxy_backend.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3 proxy_backend.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("backend port");
        let port: u16 = line.trim().trim_start_matches("listening on ").parse().expect("a port");
        Backend { addr: SocketAddr::from(([127, 0, 0, 1], port)), child }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far: `{"path", "headers" (lower-case names), "body"}`.
    pub async fn requests(&self) -> Vec<Value> {
        let resp = super::http_at(self.addr, "GET", "/_requests", &[], b"").await;
        assert_eq!(resp.status, 200);
        serde_json::from_str::<Vec<Value>>(&resp.text()).expect("records")
    }

    /// The requests received on `path`.
    pub async fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests().await.into_iter().filter(|r| r["path"] == path).collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
