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
    /// Extra arguments (e.g. `--replicaof`).
    extra: Vec<String>,
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
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
            extra: vec![],
        };
        server.spawn();
        server
    }

    /// A server with extra arguments (cluster mode, TLS, a password), ready on its plain port.
    pub fn start_with(extra: Vec<String>) -> RedisServer {
        let mut server =
            RedisServer { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, persistent: false, extra };
        server.spawn();
        server
    }

    /// The server's working directory (certificates, cluster state).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// A replica of `master`.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent: false,
            extra: vec!["--replicaof".into(), "127.0.0.1".into(), master.port.to_string()],
        };
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
        cmd.args(&self.extra);
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
        // `-NOAUTH` also means the server is up (it has a password).
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
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

/// `redis-cli -p <port> <args>`: its standard output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One Redis Sentinel (`redis-server <conf> --sentinel`) watching `master` as `mymaster`, with a
/// quorum of 1 and short timeouts.
pub struct Sentinel {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub fn start(master: &RedisServer) -> Sentinel {
        Sentinel::launch(master, "")
    }

    /// A sentinel that requires `sentinel_password` and reaches the master with
    /// `master_password`.
    pub fn start_with_auth(master: &RedisServer, master_password: &str, sentinel_password: &str) -> Sentinel {
        Sentinel::launch(
            master,
            &format!("sentinel auth-pass mymaster {master_password}\nrequirepass {sentinel_password}\n"),
        )
    }

    /// A sentinel with these extra lines in its configuration (e.g. `tls-port`).
    pub fn start_with_config(master: &RedisServer, extra: &str) -> Sentinel {
        Sentinel::launch(master, extra)
    }

    fn launch(master: &RedisServer, extra: &str) -> Sentinel {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n{extra}",
                dir.path().display(),
                master.port
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(cli(port, &["PING"]).starts_with("PONG") || cli(port, &["PING"]).contains("NOAUTH")) {
            assert!(Instant::now() < deadline, "sentinel on {port} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sentinel { port, child, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}?sentinel_master_name=mymaster", self.port)
    }

    /// The port of the master the sentinel names now.
    pub fn master_port(&self) -> Option<u16> {
        cli(self.port, &["SENTINEL", "get-master-addr-by-name", "mymaster"]).lines().nth(1)?.trim().parse().ok()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `masters` masters (no replicas), each a `redis-server --cluster-enabled
/// yes` on its own port, joined by `redis-cli --cluster create`; ready once every node says
/// `cluster_state:ok`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                RedisServer::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "2000",
                    ]
                    .map(String::from)
                    .to_vec(),
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &self.nodes {
            while !cli(n.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "cluster node {} not ok", n.port);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
