//! Harness for the end-to-end tests: runs a real `herald` process on an ephemeral port and talks
//! to it over real sockets.
//!
//! - [`Herald`]: the child process (configured through `HERALD_*` variables), its address, its
//!   captured stderr (printed when a test panics), tiny HTTP/1.1 requests and the server API;
//! - [`RawWs`]: a hand-rolled WebSocket client over a tokio `TcpStream` (handshake by hand,
//!   masked client frames, unmasked server frames) for sending malformed input;
//! - `herald_client::Client` for well-behaved clients.
//!
//! Every wait has a generous deadline; conditions are polled rather than slept on.

#![allow(dead_code, unreachable_pub)] // every test file uses a different subset

pub mod backend;
pub mod nats;
pub mod redis;
pub mod tls_backend;
pub mod upstream;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_client::{Client, ClientOptions};
use herald_proto::{ConnectResult, Encoding, Push, SubscribeRequest};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const API_KEY: &str = "test-api-key";
pub const SECRET: &str = "test-hmac-secret";
pub const WS_PATH: &str = "/connection/websocket";
/// The RFC 6455 example key and its accept value.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// Namespace `hist`: history (size 100, TTL 5 min) and presence, open to clients.
pub const NAMESPACES: &str =
    r#"[{"name":"hist","history_size":100,"history_ttl":"5m","presence":true,"allow_subscribe_for_client":true}]"#;
/// Default deadline for anything the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_HTTP_API_KEY", API_KEY.into()),
        ("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", SECRET.into()),
        ("HERALD_CHANNEL_WITHOUT_NAMESPACE_ALLOW_SUBSCRIBE_FOR_CLIENT", "true".into()),
        ("HERALD_CHANNEL_NAMESPACES", NAMESPACES.into()),
        ("HERALD_LOG_LEVEL", "debug".into()),
    ]
}

/// A running `herald` process, killed (by PID) when dropped.
pub struct Herald {
    pub addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.clone().next() == Some('[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl Herald {
    /// Starts `herald --port 0 --address 127.0.0.1` with the harness defaults (API key, HMAC
    /// secret, namespace `hist`, channels without namespace open to clients) overridden by `env`,
    /// and waits for its `herald listening on` line.
    pub fn start(env: &[(&str, &str)]) -> Herald {
        Herald::start_with_args(env, &[])
    }

    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Herald {
        Herald::spawn(Command::new(env!("CARGO_BIN_EXE_herald")), env, args)
    }

    /// `start` under a file-descriptor limit of `files` (set by `sh`, which then `exec`s herald,
    /// so the PID is herald's).
    pub fn start_with_file_limit(files: u32, env: &[(&str, &str)]) -> Herald {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("ulimit -n {files} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_herald")]);
        Herald::spawn(cmd, env, &[])
    }

    fn spawn(mut cmd: Command, env: &[(&str, &str)], args: &[&str]) -> Herald {
        cmd.args(["--port", "0", "--address", "127.0.0.1"]).args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(|n| n.starts_with("HERALD_") || n == "RUST_LOG") {
                cmd.env_remove(&name);
            }
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in base_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        // An empty value removes a default variable (e.g. `HERALD_LOG_LEVEL`, to let a config
        // file decide).
        for (k, _) in env.iter().filter(|(_, v)| v.is_empty()) {
            cmd.env_remove(k);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn herald");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = strip_ansi(&String::from_utf8_lossy(&line));
                    if let Some(rest) = line.split("herald listening on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").parse::<SocketAddr>();
                        if let (Some(tx), Ok(addr)) = (tx.take(), addr) {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut logs = logs.lock().unwrap();
                    logs.push_str(&line);
                    logs.push('\n');
                }
            });
        }
        match rx.recv_timeout(WAIT) {
            Ok(addr) => Herald { addr, child, logs, exit: None },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("herald did not start ({status:?}); stderr:\n{}", logs.lock().unwrap());
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far (ANSI codes removed).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    #[allow(unsafe_code)]
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the PID is our own, not yet reaped,
        // child, so it cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed: {}", std::io::Error::last_os_error());
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exit {
                return Some(status);
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{WS_PATH}", self.addr)
    }

    /// One HTTP/1.1 request (`Connection: close`).
    pub async fn http(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        http_at(self.addr, method, path, headers, body).await
    }

    /// `POST /api/<method>` with the API key; returns the status and the JSON body.
    pub async fn api(&self, method: &str, body: Value) -> (u16, Value) {
        api_at(self.addr, method, body).await
    }

    /// `api` that must succeed: returns `result` (or the whole body for `batch`).
    pub async fn api_ok(&self, method: &str, body: Value) -> Value {
        let (status, v) = self.api(method, body.clone()).await;
        assert_eq!(status, 200, "{method} {body}: {v}");
        if method == "batch" {
            return v;
        }
        assert!(v.get("error").is_none(), "{method} {body}: {v}");
        v["result"].clone()
    }

    pub async fn publish(&self, channel: &str, data: Value) -> Value {
        self.api_ok("publish", json!({ "channel": channel, "data": data })).await
    }

    pub async fn num_clients(&self) -> u64 {
        self.api_ok("info", json!({})).await["nodes"][0]["num_clients"].as_u64().expect("num_clients")
    }

    pub async fn metrics(&self) -> String {
        let resp = self.http("GET", "/metrics", &[], b"").await;
        assert_eq!(resp.status, 200);
        resp.text()
    }

    pub fn client_options(&self, user: &str) -> ClientOptions {
        ClientOptions { url: self.ws_url(), token: token(user), ..ClientOptions::default() }
    }

    /// A connected JSON client for `user`.
    pub async fn client(&self, user: &str) -> (Client, ConnectResult) {
        Client::connect(&self.client_options(user)).await.unwrap_or_else(|e| panic!("connect {user}: {e}"))
    }

    /// A connected client subscribed to `channel`.
    pub async fn subscriber(&self, user: &str, channel: &str) -> (Client, ConnectResult) {
        let (mut client, connected) = self.client(user).await;
        subscribe(&mut client, channel).await;
        (client, connected)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if self.exit.is_none() && self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill(); // SIGKILL to the child's PID
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            // Give the stderr thread a moment to read the last lines.
            std::thread::sleep(Duration::from_millis(50));
            eprintln!("----- herald stderr ({}) -----\n{}", self.addr, self.logs());
        }
    }
}

/// A connection token for `user`, valid for an hour.
pub fn token(user: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    herald_auth::sign_hmac(&json!({ "sub": user, "exp": exp }), SECRET, "HS256").expect("sign token")
}

pub async fn subscribe(client: &mut Client, channel: &str) {
    client
        .subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("subscribe {channel}: {e}"));
}

/// The next push, within [`WAIT`].
pub async fn next_push(client: &mut Client) -> Push {
    match tokio::time::timeout(WAIT, client.next_push()).await {
        Ok(Ok(push)) => push,
        Ok(Err(e)) => panic!("waiting for a push: {e}"),
        Err(_) => panic!("no push within {WAIT:?}"),
    }
}

/// The JSON payload of the next push, which must be a publication on `channel`.
pub async fn next_publication(client: &mut Client, channel: &str) -> (Value, u64) {
    let push = next_push(client).await;
    assert_eq!(push.channel, channel, "{push:?}");
    let Some(publication) = push.publication.clone() else { panic!("not a publication: {push:?}") };
    (serde_json::from_slice(&publication.data).expect("JSON publication"), publication.offset)
}

/// Reads pushes until `n` publications on `channel` arrived; returns (data.n, offset) pairs.
pub async fn collect_numbered(client: &mut Client, channel: &str, n: usize, within: Duration) -> Vec<(u64, u64)> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        let push = match tokio::time::timeout_at(deadline, client.next_push()).await {
            Ok(Ok(push)) => push,
            Ok(Err(e)) => panic!("client failed after {} publications: {e}", got.len()),
            Err(_) => panic!("only {} of {n} publications arrived: {got:?}", got.len()),
        };
        if push.channel != channel {
            continue;
        }
        if let Some(p) = push.publication {
            let v: Value = serde_json::from_slice(&p.data).unwrap();
            got.push((v["n"].as_u64().unwrap(), p.offset));
        }
    }
    got
}

/// Polls `check` every 20 ms until it returns true; panics after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("HTTP {} body is not JSON ({e}): {:?}", self.status, self.text()))
    }
}

/// A response head: status, headers, and its length in bytes.
type Head = (u16, Vec<(String, String)>, usize);

/// Parses a response head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let headers = resp
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            Some((resp.code.expect("status code"), headers, n))
        }
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!("malformed HTTP response ({e}): {:?}", String::from_utf8_lossy(buf)),
    }
}

/// One HTTP/1.1 request (`Connection: close`) to `addr`.
pub async fn http_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw_http(addr, &bytes).await
}

/// `POST /api/<method>` to `addr` with the API key; returns the status and the JSON body.
pub async fn api_at(addr: SocketAddr, method: &str, body: Value) -> (u16, Value) {
    let resp = Box::pin(http_at(
        addr,
        "POST",
        &format!("/api/{method}"),
        &[("X-API-Key", API_KEY)],
        body.to_string().as_bytes(),
    ))
    .await;
    (resp.status, resp.json())
}

/// Writes `request` as is and reads the response until the server closes the connection (a
/// reset after a complete response counts as the end too: the server may close with unread
/// request bytes).
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> HttpResponse {
    let fut = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The server may answer and close before reading everything (413, 431).
        let _ = stream.write_all(request).await;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some((_, headers, n)) = parse_head(&buf) {
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok());
                if len.is_some_and(|len| buf.len() >= n + len) {
                    break;
                }
            }
        }
        let (status, headers, n) =
            parse_head(&buf).unwrap_or_else(|| panic!("incomplete HTTP response: {:?}", String::from_utf8_lossy(&buf)));
        let mut body = buf[n..].to_vec();
        if let Some(len) = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        {
            assert!(body.len() >= len, "short body: {} < {len}", body.len());
            body.truncate(len);
        }
        HttpResponse { status, headers, body }
    };
    tokio::time::timeout(WAIT, fut).await.expect("HTTP response within the deadline")
}

/// A WebSocket upgrade request for `path` with the standard headers plus `extra`.
pub fn upgrade_request(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket

pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

const MASK: [u8; 4] = [0x3a, 0x91, 0x5c, 0xe7];

/// Encodes a client frame; `masked: false` produces the (invalid) unmasked form.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::new();
    herald_proto::ws::put_client_frame(&mut out, fin, opcode, payload, masked.then_some(MASK));
    out
}

/// One server frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// Close code and reason of a close frame.
    pub fn close(&self) -> (Option<u16>, String) {
        assert_eq!(self.opcode, op::CLOSE);
        if self.payload.len() < 2 {
            return (None, String::new());
        }
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (Some(code), String::from_utf8(self.payload[2..].to_vec()).expect("UTF-8 close reason"))
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).expect("UTF-8 text frame")
    }
}

/// Why no frame could be read.
#[derive(Debug)]
pub enum ReadEnd {
    /// The server closed the TCP connection (EOF) or reset it.
    Closed(String),
    Timeout,
}

/// How a connection ended (see [`RawWs::until_closed`]).
#[derive(Debug)]
pub struct Ending {
    /// The close frame, if one was read.
    pub close: Option<(Option<u16>, String)>,
    /// Data frames read before the end.
    pub data_frames: usize,
    /// The TCP connection was closed (EOF or reset) by the server.
    pub tcp_closed: bool,
}

/// A hand-rolled WebSocket client.
pub struct RawWs {
    pub stream: TcpStream,
    /// Bytes read but not parsed yet.
    buf: Vec<u8>,
    /// The handshake response.
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl RawWs {
    /// Writes `request` (a handshake, possibly followed by frames) and reads the response head.
    pub async fn handshake(addr: SocketAddr, request: &[u8]) -> RawWs {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawWs::handshake_on(stream, request).await
    }

    /// [`handshake`](Self::handshake) on an already connected stream.
    pub async fn handshake_on(mut stream: TcpStream, request: &[u8]) -> RawWs {
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(request).await.expect("write handshake");
        let mut buf = Vec::new();
        let head = tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(head) = parse_head(&buf) {
                    return head;
                }
                let n = stream.read(&mut chunk).await.expect("read handshake response");
                assert!(n > 0, "connection closed during the handshake: {:?}", String::from_utf8_lossy(&buf));
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("handshake response within the deadline");
        let (status, headers, n) = head;
        buf.drain(..n);
        RawWs { stream, buf, status, headers }
    }

    /// Opens a WebSocket on `path` (with query) and asserts `101`.
    pub async fn open(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> RawWs {
        let ws = RawWs::handshake(addr, &upgrade_request(addr, path, extra)).await;
        assert_eq!(ws.status, 101, "handshake refused: {:?}", ws.headers);
        ws
    }

    /// A JSON WebSocket connected with a token for `user` (command id 1).
    pub async fn connected(herald: &Herald, user: &str) -> RawWs {
        let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
        ws.send_json(&json!({"id": 1, "connect": {"token": token(user)}})).await;
        let replies = ws.recv_json().await;
        assert_eq!(replies[0]["id"], 1, "{replies:?}");
        assert!(replies[0]["connect"]["client"].is_string(), "{replies:?}");
        ws
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        self.send_bytes(&client_frame(true, opcode, payload, true)).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(op::TEXT, text.as_bytes()).await;
    }

    pub async fn send_json(&mut self, v: &Value) {
        self.send_text(&v.to_string()).await;
    }

    /// Parses one complete frame from the buffer, if there is one.
    fn take_frame(&mut self) -> Option<Frame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "server frames must not be masked");
        let (len, header) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < header + len {
            return None;
        }
        let frame = Frame { fin: b[0] & 0x80 != 0, opcode: b[0] & 0x0f, payload: b[header..header + len].to_vec() };
        self.buf.drain(..header + len);
        Some(frame)
    }

    /// The next frame, within `timeout`.
    pub async fn read_frame_within(&mut self, timeout: Duration) -> Result<Frame, ReadEnd> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(frame) = self.take_frame() {
                return Ok(frame);
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Err(ReadEnd::Timeout),
                Ok(Ok(0)) => return Err(ReadEnd::Closed("EOF".into())),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) => return Err(ReadEnd::Closed(e.to_string())),
            }
        }
    }

    /// The next frame, within [`WAIT`].
    pub async fn read_frame(&mut self) -> Frame {
        match self.read_frame_within(WAIT).await {
            Ok(frame) => frame,
            Err(e) => panic!("expected a frame: {e:?}"),
        }
    }

    /// The replies of the next data frame, which must be a text frame.
    pub async fn recv_json(&mut self) -> Vec<Value> {
        let frame = self.read_frame().await;
        assert_eq!(frame.opcode, op::TEXT, "expected a text frame, got {frame:?}");
        assert!(frame.fin);
        frame
            .text()
            .split('\n')
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
            .collect()
    }

    /// Reads frames (skipping data frames) until a close frame; returns its code and reason.
    /// Panics if the connection ends without one.
    pub async fn expect_close(&mut self) -> (Option<u16>, String) {
        let ending = self.until_closed(WAIT).await;
        let Some(close) = ending.close.clone() else { panic!("connection ended without a close frame: {ending:?}") };
        close
    }

    /// Reads until the server closes the TCP connection (EOF or reset) or `timeout` passes,
    /// counting data frames and keeping the close frame.
    pub async fn until_closed(&mut self, timeout: Duration) -> Ending {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ending = Ending { close: None, data_frames: 0, tcp_closed: false };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame_within(left).await {
                Ok(frame) if frame.opcode == op::CLOSE => {
                    ending.close.get_or_insert(frame.close());
                }
                Ok(frame) if frame.opcode == op::PING || frame.opcode == op::PONG => {}
                Ok(_) => ending.data_frames += 1,
                Err(ReadEnd::Closed(_)) => {
                    ending.tcp_closed = true;
                    return ending;
                }
                Err(ReadEnd::Timeout) => return ending,
            }
        }
    }

    /// Asserts that the server closes the connection with `code` (and the TCP connection after
    /// it).
    pub async fn assert_closed_with(&mut self, code: u16, what: &str) -> String {
        let ending = self.until_closed(WAIT).await;
        let Some((got, reason)) = ending.close.clone() else {
            panic!("{what}: no close frame: {ending:?}");
        };
        assert_eq!(got, Some(code), "{what}: close reason {reason:?}");
        assert!(ending.tcp_closed, "{what}: TCP connection still open after the close frame");
        reason
    }
}

/// Encodes one command for `encoding` (JSON line or delimited Protobuf).
pub fn encode(encoding: Encoding, cmd: &herald_proto::Command) -> Vec<u8> {
    let mut out = Vec::new();
    herald_proto::encode_command(encoding, cmd, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// HTTP streams

/// One item read from a stream: its SSE id (if any) and its JSON.
#[derive(Debug)]
pub struct Item {
    pub id: Option<String>,
    pub json: Value,
}

/// A streaming response (SSE or newline-delimited) read item by item, over a raw socket.
pub struct StreamReader {
    pub stream: TcpStream,
    buf: Vec<u8>,
    sse: bool,
    pub status: u16,
    /// The response head.
    pub headers: String,
}

impl StreamReader {
    pub async fn open(addr: SocketAddr, request: String, sse: bool) -> StreamReader {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut r = StreamReader { stream, buf: Vec::new(), sse, status: 0, headers: String::new() };
        loop {
            if let Some(end) = r.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(r.buf[..end].to_vec()).unwrap();
                r.buf.drain(..end + 4);
                r.status = head[9..12].parse().unwrap();
                r.headers = head;
                break;
            }
            assert!(r.fill().await, "no response head");
        }
        if sse && r.status == 200 {
            // The empty line that makes EventSource fire `open`.
            while r.buf.len() < 2 {
                assert!(r.fill().await);
            }
            assert_eq!(&r.buf[..2], b"\r\n");
            r.buf.drain(..2);
        }
        r
    }

    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("stream stalled") {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next item, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Option<Item> {
        loop {
            let sep: &[u8] = if self.sse { b"\n\n" } else { b"\n" };
            if let Some(end) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let raw = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                self.buf.drain(..end + sep.len());
                if !self.sse {
                    return Some(Item { id: None, json: serde_json::from_str(&raw).unwrap() });
                }
                let mut id = None;
                let mut data = Vec::new();
                for line in raw.split('\n') {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v);
                    } else {
                        panic!("unexpected SSE line {line:?}");
                    }
                }
                return Some(Item { id, json: serde_json::from_str(&data.join("\n")).unwrap() });
            }
            if !self.fill().await {
                return None;
            }
        }
    }
}
