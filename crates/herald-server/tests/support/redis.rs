//! A real `redis-server` for the cluster tests, on a free loopback port (never 6379), in a temp
//! directory, stopped by its PID when dropped; and the environment that points `herald` at it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Keep data across a restart (append-only file, fsync always).
    persistent: bool,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port != 6379 && port != 4222 {
            return port;
        }
    }
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::launch(false)
    }

    /// A server whose data survives [`RedisServer::restart`].
    pub fn start_persistent() -> RedisServer {
        RedisServer::launch(true)
    }

    fn launch(persistent: bool) -> RedisServer {
        let mut server = RedisServer { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, persistent };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(self.dir.path());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        self.child = Some(cmd.spawn().expect("redis-server is installed"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.ping() {
            assert!(Instant::now() < deadline, "redis-server on {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL to its PID).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `HERALD_*` variables for a node of a cluster over `addresses` with key prefix `prefix`.
pub fn engine_env(addresses: &[String], prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_ENGINE_TYPE", "redis".into()),
        ("HERALD_ENGINE_REDIS_ADDRESS", addresses.join(" ")),
        ("HERALD_ENGINE_REDIS_PREFIX", prefix.into()),
        ("HERALD_ENGINE_REDIS_IO_TIMEOUT", "1s".into()),
        ("HERALD_CHANNEL_NAMESPACES", CLUSTER_NAMESPACES.into()),
    ]
}

/// Namespace `hist`: history (size 1000, TTL 5 min), recovery forced, presence; `live`: no
/// history.
pub const CLUSTER_NAMESPACES: &str = r#"[{"name":"hist","history_size":1000,"history_ttl":"5m","presence":true,"force_recovery":true,"allow_subscribe_for_client":true,"allow_presence_for_subscriber":true,"allow_history_for_subscriber":true},{"name":"live","presence":true,"allow_subscribe_for_client":true}]"#;
