//! The rpc scenario: `-n` WebSocket clients connected with a JWT each send RPC commands in a
//! closed loop (one outstanding per client) for `--duration`: round trips per second, latency
//! percentiles, and the server's CPU per call from `--server-pid`. With `--direct` the same
//! loop posts the RPC proxy's request body straight to a backend over keep-alive HTTP: the
//! floor a proxied call cannot beat. Pointing it at Herald without an RPC proxy (the method
//! answered locally with error 104) gives the gateway's own round trip, the other baseline.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::RpcArgs;
use crate::procfs;
use crate::report::{self, round};
use crate::stats;
use crate::wsclient::{self, OP_TEXT, Pump, WsError, WsStream};

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    failures: Vec<String>,
}

pub async fn run(a: RpcArgs) -> Result<(), String> {
    let hist = Rc::new(RefCell::new(stats::new_hist()));
    let tally = Rc::new(RefCell::new(Tally::default()));
    let mode = if a.direct.is_some() { "direct" } else { "herald" };
    eprintln!(
        "rpc: {} client(s) calling {:?} for {:.0} s ({mode}: {})",
        a.conns,
        a.method,
        a.duration.as_secs_f64(),
        a.direct.as_deref().unwrap_or(&a.addr.to_string())
    );
    let mut ready = Vec::new();
    for i in 0..a.conns {
        let conn = match &a.direct {
            Some(target) => Conn::direct(target).await,
            None => Conn::herald(&a, i).await,
        }
        .map_err(|e| format!("client {i}: {e}"))?;
        ready.push(conn);
    }
    let before = procfs::sample(&a.server_pids);
    let backend_before = procfs::sample(&a.backend_pids);
    let start = Instant::now();
    let deadline = start + a.duration;
    let tasks: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let (hist, tally, method) = (hist.clone(), tally.clone(), a.method.clone());
            tokio::task::spawn_local(async move { conn.call_loop(i, &method, deadline, &hist, &tally).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = procfs::sample(&a.server_pids);
    let backend_after = procfs::sample(&a.backend_pids);
    let tally = tally.borrow();
    let calls = tally.ok + tally.errors;
    let per_call = |b: &procfs::Sample, e: &procfs::Sample| match (b.cpu_s, e.cpu_s) {
        (Some(b), Some(e)) if calls > 0 => Some(round((e - b) * 1e6 / calls as f64, 2)),
        _ => None,
    };
    let latency = stats::summary(&hist.borrow());
    let mut m = Map::new();
    m.insert("scenario".into(), json!("rpc"));
    m.insert("mode".into(), json!(mode));
    m.insert("clients".into(), json!(a.conns));
    m.insert("method".into(), json!(a.method));
    m.insert("calls".into(), json!(calls));
    m.insert("ok".into(), json!(tally.ok));
    m.insert("error_replies".into(), json!(tally.errors));
    m.insert("failures".into(), json!(tally.failures));
    m.insert("calls_per_s".into(), json!(round(calls as f64 / elapsed, 1)));
    m.insert("latency_us".into(), latency.clone());
    m.insert("server_cpu_us_per_call".into(), json!(per_call(&before, &after)));
    m.insert("backend_cpu_us_per_call".into(), json!(per_call(&backend_before, &backend_after)));
    eprintln!(
        "  {calls} calls ({} ok, {} error replies) in {elapsed:.1} s: {:.0}/s",
        tally.ok,
        tally.errors,
        calls as f64 / elapsed
    );
    eprintln!("  round trip       {}", stats::human(&latency));
    eprintln!(
        "  server CPU/call  {:?} µs, backend CPU/call {:?} µs",
        per_call(&before, &after),
        per_call(&backend_before, &backend_after)
    );
    if !tally.failures.is_empty() {
        eprintln!("  failures: {:?}", tally.failures);
    }
    report::emit(&m, a.json_out.as_deref())
}

enum Conn {
    Herald(WsStream, RefCell<Vec<u8>>),
    Direct { stream: TcpStream, host: String, path: String },
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Conn {
    async fn herald(a: &RpcArgs, i: usize) -> Result<Conn, String> {
        let stream = wsclient::tcp_connect(a.addr, None, false).await.map_err(err)?;
        let mut ws = wsclient::handshake(stream, &a.addr.to_string(), "/connection/websocket", None, i as u32 + 1)
            .await
            .map_err(err)?;
        let claims = json!({"sub": format!("rpc{i}")});
        let token = herald_auth::sign_hmac(&claims, &a.hmac_secret, "HS256").map_err(err)?;
        let connect = json!({"id": 1, "connect": {"token": token, "name": "bench"}}).to_string();
        ws.send(OP_TEXT, connect.as_bytes()).await.map_err(err)?;
        let scratch = RefCell::new(Vec::new());
        let reply = next_reply(&mut ws, &scratch, 1).await.map_err(err)?;
        if reply.get("connect").is_none() {
            return Err(format!("connect refused: {reply}"));
        }
        Ok(Conn::Herald(ws, scratch))
    }

    async fn direct(target: &str) -> Result<Conn, String> {
        let (host, path) = target.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((target, "/".into()));
        let addr: SocketAddr = host.parse().map_err(|e| format!("--direct {target:?}: {e}"))?;
        let stream = TcpStream::connect(addr).await.map_err(err)?;
        stream.set_nodelay(true).map_err(err)?;
        Ok(Conn::Direct { stream, host: host.to_owned(), path })
    }

    async fn call_loop(
        mut self,
        i: usize,
        method: &str,
        deadline: Instant,
        hist: &RefCell<hdrhistogram::Histogram<u64>>,
        tally: &RefCell<Tally>,
    ) {
        let mut id = 1u32;
        while Instant::now() < deadline {
            id += 1;
            let sent = Instant::now();
            let outcome = match &mut self {
                Conn::Herald(ws, scratch) => herald_call(ws, scratch, id, method).await,
                Conn::Direct { stream, host, path } => direct_call(stream, host, path, i, method).await,
            };
            let us = sent.elapsed().as_micros() as u64;
            match outcome {
                Ok(ok) => {
                    stats::record(&mut hist.borrow_mut(), us);
                    let mut t = tally.borrow_mut();
                    if ok { t.ok += 1 } else { t.errors += 1 }
                }
                Err(e) => {
                    tally.borrow_mut().failures.push(format!("client {i}: {e}"));
                    return;
                }
            }
        }
    }
}

/// Reads frames until the reply with `id`; pushes and pings are skipped.
async fn next_reply(ws: &mut WsStream, scratch: &RefCell<Vec<u8>>, id: u32) -> Result<Value, WsError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline, ws.read(scratch, 4))
            .await
            .map_err(|_| WsError::new("timeout", "no reply within 10 s"))??;
        let (len, _) = read.ok_or_else(|| WsError::new("eof", "server closed"))?;
        let buf = scratch.borrow();
        let mut found = None;
        let pump = ws.parse(&buf[..len], |_, payload, _| {
            for line in payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(v) = serde_json::from_slice::<Value>(line)
                    && v["id"] == id
                {
                    found = Some(v);
                }
            }
        })?;
        if let Some(v) = found {
            return Ok(v);
        }
        if let Pump::Closed(code) = pump {
            return Err(WsError::new("closed", format!("server closed with {code:?}")));
        }
    }
}

/// One RPC through Herald; `Ok(false)` for an error reply (a method no backend serves).
async fn herald_call(ws: &mut WsStream, scratch: &RefCell<Vec<u8>>, id: u32, method: &str) -> Result<bool, String> {
    let cmd = json!({"id": id, "rpc": {"method": method, "data": {"n": id}}}).to_string();
    ws.send(OP_TEXT, cmd.as_bytes()).await.map_err(err)?;
    let reply = next_reply(ws, scratch, id).await.map_err(err)?;
    Ok(reply.get("rpc").is_some())
}

/// One RPC proxy request body posted straight to the backend.
async fn direct_call(stream: &mut TcpStream, host: &str, path: &str, i: usize, method: &str) -> Result<bool, String> {
    let body = json!({"client": format!("c{i}"), "transport": "websocket", "protocol": "json",
        "encoding": "json", "user": format!("rpc{i}"), "method": method, "data": {"n": 1}})
    .to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.map_err(err)?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.map_err(err)?;
        if n == 0 {
            return Err("backend closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(head) = resp.parse(&buf).map_err(err)? {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                .ok_or("no Content-Length in the backend's answer")?;
            if buf.len() >= head + len {
                return Ok(resp.code == Some(200));
            }
        }
    }
}
