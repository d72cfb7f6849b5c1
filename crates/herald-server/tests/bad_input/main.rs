//! The bad-input suite: every hostile or malformed input Herald is documented to answer, sent
//! over real sockets to a real `herald`, each with its exact answer (HTTP status and JSON body,
//! WebSocket close code and reason, reply error, or "closed within a deadline"), while a healthy
//! subscriber connected for the whole run must receive every publication of a concurrent
//! publisher exactly once and in order, and the node must still be healthy afterwards.
//!
//! One node per group of cases (a group shares a configuration; its cases cannot affect each
//! other and run concurrently): [`http_edge`], [`frames`], [`protocol`], [`server_api`],
//! [`slow_consumer`]. A case is a row of a table ([`Case`]): a name, an input (what to send over
//! which kind of connection) and the expected [`Answer`]; the input returns what it observed,
//! which must equal the expected answer. Failures name their case.

#[path = "../support/mod.rs"]
mod support;

mod edge;
mod frames;
mod http_edge;
mod protocol;
mod server_api;
mod slow_consumer;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use herald_proto::{Command, ConnectRequest, Encoding};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};

/// The healthy subscriber's channel (namespace `hist`: history, so offsets are checked too).
const WATCH_CHANNEL: &str = "hist:watch";

/// Publications the healthy client must get at least (the publisher runs until then).
const MIN_PUBLICATIONS: u64 = 50;

/// What a case observed, and what it must observe.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP response: status, the JSON body (`Null` when the body is empty), and the header
    /// the case asked about (name, value if present).
    Http { status: u16, body: Value, header: Option<(&'static str, Option<String>)> },
    /// A WebSocket close frame (code, reason), after which the server closed the TCP connection.
    Close(u16, String),
    /// The replies to the case's commands (in order); the connection stays open and usable.
    Replies(Vec<Value>),
    /// The replies to the case's commands, after which the next message is answered with this
    /// close (code, reason): a connection whose connect failed.
    RepliesThenClose(Vec<Value>, u16, String),
    /// The TCP connection was closed without a byte of answer, within the case's deadline.
    Closed,
    /// The connection was closed with this disconnect code (counted in the metrics), whether or
    /// not its close frame could still be written (a client that does not read).
    Disconnected(u16),
    /// This many commands sent, all answered in order without an error; the connection stays
    /// open.
    AllAnswered(usize),
    /// Anything else (a description of what happened).
    Other(String),
}

impl Answer {
    /// The code a disconnect with this answer is counted under.
    fn disconnect_code(&self) -> Option<u16> {
        match self {
            Answer::Close(code, _) | Answer::RepliesThenClose(_, code, _) | Answer::Disconnected(code) => Some(*code),
            _ => None,
        }
    }
}

/// The value of the sample named `sample` (name and labels, as rendered) in a Prometheus text.
pub fn sample(text: &str, sample: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

/// Disconnects by code must be exactly those the answers imply (3000, a client that hung up, is
/// not an answer), and each of `expected` must have its value.
async fn check_metrics(
    herald: &Herald,
    disconnects: &BTreeMap<u16, u64>,
    expected: &[(&str, u64)],
) -> Result<(), String> {
    let text = herald.metrics().await;
    let mut wrong = Vec::new();
    let prefix = "herald_client_disconnects_total{code=\"";
    let mut codes: Vec<u16> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix)?.split('"').next()?.parse().ok())
        .filter(|&code| code != 3000)
        .collect();
    codes.extend(disconnects.keys());
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        let got = sample(&text, &format!("{prefix}{code}\"}}")).unwrap_or(0);
        let want = disconnects.get(&code).copied().unwrap_or(0);
        if got != want {
            wrong
                .push(format!("herald_client_disconnects_total{{code=\"{code}\"}} is {got}, the answers imply {want}"));
        }
    }
    for (name, want) in expected {
        let got = sample(&text, name);
        if got != Some(*want) {
            wrong.push(format!("{name} is {got:?}, expected {want}"));
        }
    }
    if wrong.is_empty() { Ok(()) } else { Err(format!("metrics:\n  {}", wrong.join("\n  "))) }
}

/// An HTTP answer without a header check.
pub fn http(status: u16, body: Value) -> Answer {
    Answer::Http { status, body, header: None }
}

/// An HTTP answer whose header `name` must be `value`.
pub fn http_with(status: u16, body: Value, name: &'static str, value: &str) -> Answer {
    Answer::Http { status, body, header: Some((name, Some(value.to_owned()))) }
}

/// `{"error": message}`: the body of a refused request.
pub fn refused(message: &str) -> Value {
    json!({ "error": message })
}

pub fn close(code: u16, reason: &str) -> Answer {
    Answer::Close(code, reason.to_owned())
}

pub type Observed = Pin<Box<dyn Future<Output = Answer> + Send>>;

/// One row of a table.
pub struct Case {
    pub name: String,
    pub input: Box<dyn FnOnce(SocketAddr) -> Observed + Send>,
    pub expect: Answer,
}

impl Case {
    pub fn new<F, Fut>(name: impl Into<String>, input: F, expect: Answer) -> Case
    where
        F: FnOnce(SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        Case { name: name.into(), input: Box::new(move |addr| Box::pin(input(addr))), expect }
    }
}

/// Runs `cases` concurrently against a node started with `env` while the healthy subscriber
/// and the publisher run, then checks the metrics (`herald_client_disconnects_total` by code
/// as the answers imply, and `metrics`: exact values of whole sample names), that the
/// subscriber got everything and that the node is healthy. Panics with every failed case's name.
pub async fn run_group(group: &str, env: &[(&str, &str)], cases: Vec<Case>, metrics: &[(&str, u64)]) {
    let started = Instant::now();
    let herald = Herald::start(env);
    let watch = Watch::start(&herald).await;
    let addr = herald.addr;

    let mut running = JoinSet::new();
    let count = cases.len();
    let mut disconnects = BTreeMap::new();
    for case in &cases {
        if let Some(code) = case.expect.disconnect_code() {
            *disconnects.entry(code).or_insert(0u64) += 1;
        }
    }
    for case in cases {
        let Case { name, input, expect } = case;
        running.spawn(async move {
            // A panic inside the case (a helper's deadline) is reported under its name.
            let observed = tokio::spawn(input(addr)).await;
            (name, expect, observed)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = running.join_next().await {
        let (name, expect, observed) = joined.expect("case runner");
        match observed {
            Ok(got) if got == expect => {}
            Ok(got) => failures.push(format!("case `{name}`:\n  expected {expect:?}\n  got      {got:?}")),
            Err(e) => failures.push(format!("case `{name}` panicked: {}", panic_text(e))),
        }
    }
    if let Err(e) = check_metrics(&herald, &disconnects, metrics).await {
        failures.push(e);
    }
    if let Err(e) = watch.finish(&herald).await {
        failures.push(e);
    }
    assert!(failures.is_empty(), "{group} ({count} cases): {} failures:\n{}", failures.len(), failures.join("\n"));
    println!("{group}: {count} cases in {:?}", started.elapsed());
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "(non-text panic)".into()),
        Err(e) => e.to_string(),
    }
}

/// The healthy subscriber and the publisher that run beside a group's cases.
struct Watch {
    stop: Arc<AtomicBool>,
    /// Publications so far.
    published: Arc<AtomicU64>,
    publisher: JoinHandle<Result<u64, String>>,
    reader: JoinHandle<Result<Vec<(u64, u64)>, String>>,
}

impl Watch {
    async fn start(herald: &Herald) -> Watch {
        let (mut client, _) = herald.subscriber("healthy", WATCH_CHANNEL).await;
        // Each publication is (n, offset); the marker `{"done": true}` ends the run.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let push = match tokio::time::timeout(Duration::from_secs(30), client.next_push()).await {
                    Ok(Ok(push)) => push,
                    Ok(Err(e)) => return Err(format!("healthy client failed after {} publications: {e}", got.len())),
                    Err(_) => return Err(format!("healthy client got nothing for 30 s after {}", got.len())),
                };
                let Some(publication) = push.publication else { continue };
                let data: Value = serde_json::from_slice(&publication.data).map_err(|e| e.to_string())?;
                if data["done"] == true {
                    return Ok(got);
                }
                got.push((data["n"].as_u64().ok_or("publication without n")?, publication.offset));
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let addr = herald.addr;
        let published = Arc::new(AtomicU64::new(0));
        let publisher = tokio::spawn({
            let stop = stop.clone();
            let count = published.clone();
            async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) =
                        api_at(addr, "publish", json!({"channel": WATCH_CHANNEL, "data": {"n": n}})).await;
                    if status != 200 || body["result"]["offset"] != n + 1 {
                        return Err(format!("publish {n}: {status} {body}"));
                    }
                    n += 1;
                    count.store(n, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(n)
            }
        });
        Watch { stop, published, publisher, reader }
    }

    /// Stops the publisher; checks every publication reached the healthy client once, in order,
    /// and that the node still answers `/health` and takes a fresh client.
    async fn finish(self, herald: &Herald) -> Result<(), String> {
        // A group's cases can be over in a moment: let the stream run long enough to matter.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.published.load(Ordering::Relaxed) < MIN_PUBLICATIONS && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        let published = self.publisher.await.map_err(|e| format!("publisher: {}", panic_text(e)))??;
        herald.publish(WATCH_CHANNEL, json!({"done": true})).await;
        let got = self.reader.await.map_err(|e| format!("healthy client: {}", panic_text(e)))??;
        let expected: Vec<(u64, u64)> = (0..published).map(|n| (n, n + 1)).collect();
        if got != expected {
            let first_bad =
                got.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(got.len().min(expected.len()));
            return Err(format!(
                "healthy client: {} publications received, {published} published; first difference at {first_bad}",
                got.len()
            ));
        }
        if published < MIN_PUBLICATIONS {
            return Err(format!("only {published} publications during the run"));
        }
        let health = herald.http("GET", "/health", &[], b"").await;
        if health.status != 200 {
            return Err(format!("/health answered {} after the run", health.status));
        }
        let (mut fresh, _) = herald.subscriber("fresh", "after-run").await;
        herald.publish("after-run", json!({"fresh": true})).await;
        let (data, _) = next_publication(&mut fresh, "after-run").await;
        if data != json!({"fresh": true}) {
            return Err(format!("a fresh client got {data}"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Observing answers

/// Reads one HTTP response from `stream` (until its `Content-Length` or the end of the
/// connection). A connection closed before any byte is [`Answer::Closed`].
pub async fn read_answer(stream: &mut TcpStream, header: Option<&'static str>) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if let Some((head, len)) = response_head(&buf)
                && buf.len() >= head + len
            {
                return true;
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        return Answer::Other(format!("no complete answer within {WAIT:?}: {:?}", String::from_utf8_lossy(&buf)));
    }
    if buf.is_empty() {
        return Answer::Closed;
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(&buf) else {
        return Answer::Other(format!("not an HTTP response: {:?}", String::from_utf8_lossy(&buf)));
    };
    let value = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let len = value("content-length").and_then(|v| v.trim().parse::<usize>().ok()).unwrap_or(buf.len() - head);
    let Some(body) = buf.get(head..head + len) else {
        return Answer::Other(format!("short body: {:?}", String::from_utf8_lossy(&buf)));
    };
    let content_type = value("content-type");
    let body = if body.is_empty() {
        Value::Null
    } else if content_type.as_deref() != Some("application/json") {
        return Answer::Other(format!(
            "a body with Content-Type {content_type:?}: {:?}",
            String::from_utf8_lossy(body)
        ));
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => Value::String(format!("(not JSON) {}", String::from_utf8_lossy(body))),
        }
    };
    Answer::Http { status: resp.code.unwrap_or(0), body, header: header.map(|h| (h, value(h))) }
}

/// The length of a complete response head in `buf` and its body length (0 without
/// `Content-Length`).
fn response_head(buf: &[u8]) -> Option<(usize, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf).ok()? else { return None };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    Some((head, len))
}

/// Waits until the server closes `stream` without sending anything; the time it took.
pub async fn closed_silently(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    limit: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
        Err(_) => Err(format!("still open after {limit:?}")),
        Ok(Ok(0) | Err(_)) => Ok(start.elapsed()),
        Ok(Ok(n)) => Err(format!("answered instead: {:?}", String::from_utf8_lossy(&chunk[..n]))),
    }
}

/// Writes raw bytes on a fresh connection and reads the answer.
pub fn raw(bytes: impl Into<Vec<u8>>) -> impl FnOnce(SocketAddr) -> Observed {
    raw_with(bytes, None)
}

/// [`raw`], also capturing the response header `header`.
pub fn raw_with(bytes: impl Into<Vec<u8>>, header: Option<&'static str>) -> impl FnOnce(SocketAddr) -> Observed {
    let bytes = bytes.into();
    move |addr| {
        Box::pin(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            // The server may answer and close before reading everything.
            let _ = stream.write_all(&bytes).await;
            read_answer(&mut stream, header).await
        })
    }
}

/// How a WebSocket case's connection is set up before its bytes are sent.
#[derive(Clone, Copy, Debug)]
pub enum Conn {
    /// Upgraded (JSON), no connect command yet.
    Fresh,
    /// Upgraded (JSON) and connected as user `bad`.
    Json,
    /// Upgraded with the `centrifuge-protobuf` subprotocol, no connect command yet.
    Protobuf,
    /// Upgraded with the Protobuf subprotocol and connected.
    ProtobufConnected,
}

/// Opens a WebSocket as `conn` says.
pub async fn open(addr: SocketAddr, conn: Conn) -> Result<RawWs, Answer> {
    let protobuf: &[(&str, &str)] = &[("Sec-WebSocket-Protocol", "centrifuge-protobuf")];
    let headers = if matches!(conn, Conn::Protobuf | Conn::ProtobufConnected) { protobuf } else { &[] };
    let mut ws = RawWs::handshake(addr, &upgrade_request(addr, WS_PATH, headers)).await;
    if ws.status != 101 {
        return Err(Answer::Other(format!("handshake answered {}", ws.status)));
    }
    match conn {
        Conn::Fresh | Conn::Protobuf => {}
        Conn::Json => {
            ws.send_json(&json!({"id": 1, "connect": {"token": token("bad")}})).await;
            let replies = ws.recv_json().await;
            if !replies[0]["connect"].is_object() {
                return Err(Answer::Other(format!("connect failed: {replies:?}")));
            }
        }
        Conn::ProtobufConnected => {
            let connect = Command {
                id: 1,
                connect: Some(ConnectRequest { token: token("bad"), ..Default::default() }),
                ..Default::default()
            };
            ws.send_frame(op::BINARY, &encode(Encoding::Protobuf, &connect)).await;
            let frame = ws.read_frame().await;
            if frame.opcode != op::BINARY {
                return Err(Answer::Other(format!("connect failed: {frame:?}")));
            }
        }
    }
    Ok(ws)
}

/// Sends `bytes` on a WebSocket set up as `conn` and observes the kind of answer `expect` is:
/// a close, or as many replies as `expect` lists (then checks the connection is still usable).
pub fn ws(conn: Conn, bytes: Vec<u8>, expect: &Answer) -> impl FnOnce(SocketAddr) -> Observed + use<> {
    let replies = match expect {
        Answer::Replies(r) | Answer::RepliesThenClose(r, ..) => Some(r.len()),
        _ => None,
    };
    move |addr| {
        Box::pin(async move {
            let mut ws = match open(addr, conn).await {
                Ok(ws) => ws,
                Err(answer) => return answer,
            };
            ws.send_bytes(&bytes).await;
            match replies {
                Some(n) => observe_replies(&mut ws, n, !matches!(conn, Conn::Fresh | Conn::Protobuf)).await,
                None => observe_close(&mut ws).await,
            }
        })
    }
}

/// Text frames of JSON lines, one per command.
pub fn text_frames(commands: &[Value]) -> Vec<u8> {
    commands.iter().flat_map(|c| client_frame(true, op::TEXT, c.to_string().as_bytes(), true)).collect()
}

/// Reads until the server closes the connection: [`Answer::Close`] with the close frame's code
/// and reason.
pub async fn observe_close(ws: &mut RawWs) -> Answer {
    let ending = ws.until_closed(WAIT).await;
    match ending.close {
        Some((Some(code), reason)) if ending.tcp_closed => Answer::Close(code, reason),
        _ => Answer::Other(format!("{ending:?}")),
    }
}

/// Collects `n` JSON replies (skipping server pings), then checks the connection still answers
/// a command (a connect if it is not `connected`).
pub async fn observe_replies(ws: &mut RawWs, n: usize, connected: bool) -> Answer {
    let mut replies = Vec::new();
    while replies.len() < n {
        match next_replies(ws).await {
            Ok(more) => replies.extend(more),
            Err(end) => return end,
        }
    }
    let probe = if connected {
        json!({"id": 9999, "unsubscribe": {"channel": "probe"}})
    } else {
        json!({"id": 9999, "connect": {"token": token("bad")}})
    };
    ws.send_json(&probe).await;
    match next_replies(ws).await {
        Ok(probe) if probe.len() == 1 && probe[0]["id"] == 9999 && probe[0].get("error").is_none() => {
            Answer::Replies(replies)
        }
        Ok(probe) => Answer::Other(format!("replies {replies:?}, then the probe got {probe:?}")),
        Err(Answer::Close(code, reason)) => {
            // The close frame was read already: what is left is the end of the TCP connection.
            let ending = ws.until_closed(WAIT).await;
            if ending.tcp_closed && ending.close.is_none() && ending.data_frames == 0 {
                Answer::RepliesThenClose(replies, code, reason)
            } else {
                Answer::Other(format!("replies {replies:?}, closed {code} {reason:?}, then {ending:?}"))
            }
        }
        Err(end) => Answer::Other(format!("replies {replies:?}, then the probe got {end:?}")),
    }
}

/// The replies of the next JSON frame that is not a ping; a close is returned as the error.
pub async fn next_replies(ws: &mut RawWs) -> Result<Vec<Value>, Answer> {
    loop {
        let frame = match ws.read_frame_within(WAIT).await {
            Ok(frame) => frame,
            Err(e) => return Err(Answer::Other(format!("no reply: {e:?}"))),
        };
        match frame.opcode {
            op::CLOSE => {
                let (code, reason) = frame.close();
                return Err(Answer::Close(code.unwrap_or(0), reason));
            }
            op::TEXT => {
                let lines: Vec<Value> = frame
                    .text()
                    .split('\n')
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
                    .collect();
                if lines == [json!({})] {
                    ws.send_text("{}").await;
                    continue;
                }
                return Ok(lines);
            }
            _ => {}
        }
    }
}
