//! Herald clients over the unidirectional HTTP transports: `uni_sse` (one GET, then SSE events
//! read like newline-delimited messages) and `uni_long_poll` (a connect POST, then polls on one
//! keep-alive connection). The channel comes from the token's `channels` claim (a server-side
//! subscription), so no subscribe command is needed. Pings (`{}`) are counted, never answered.

use std::rc::Rc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::Ctx;
use super::conn::Guard;
use crate::job::ClientTransport;
use crate::util::now_ns;
use crate::wsclient::{self, WsError, WsStream};

const MAX_READS: usize = 4;

fn token(ctx: &Ctx, idx: u64, channel: &str) -> Result<String, WsError> {
    let claims = serde_json::json!({ "sub": idx.to_string(), "channels": [channel] });
    match &ctx.job.hmac_secret {
        Some(secret) => herald_auth::sign_hmac(&claims, secret, "HS256").map_err(|e| WsError::new("token", e)),
        None => Ok(String::new()),
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn http_conn_task(ctx: Rc<Ctx>, idx: u64, permit: OwnedSemaphorePermit) {
    let started = Instant::now();
    let mut guard = Guard::new(ctx.clone(), permit);
    let job = &ctx.job;
    let source = (!job.source_ips.is_empty()).then(|| job.source_ips[(idx as usize) % job.source_ips.len()]);
    let (addr, host) = job.servers[(idx as usize) % job.servers.len()].clone();
    let deadline = tokio::time::Instant::now() + ctx.connect_timeout;
    let stream = match tokio::time::timeout_at(deadline, wsclient::tcp_connect(addr, source, ctx.zero_linger)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ctx.fail(&e),
        Err(_) => return ctx.fail(&WsError::new("timeout", "connect timed out")),
    };
    let channel = ctx.job.channels.name(idx);
    let token = match token(&ctx, idx, &channel) {
        Ok(t) => t,
        Err(e) => return ctx.fail(&e),
    };
    let connect = serde_json::json!({ "token": token, "name": "bench" }).to_string();
    let ended = match job.transport {
        ClientTransport::UniLongPoll => long_poll(&ctx, stream, &host, &connect, deadline, started, &mut guard).await,
        _ => uni_sse(&ctx, stream, &host, &connect, deadline, started, &mut guard).await,
    };
    if let Err(e) = ended {
        if guard.is_open() {
            *ctx.stats.borrow_mut().server_closed.entry(e.kind).or_default() += 1;
        } else {
            ctx.fail(&e);
        }
    }
}

/// Handles one newline-free line of a uni_sse stream or long-poll batch; `true` once the
/// connect push was seen.
fn on_line(ctx: &Ctx, line: &[u8], last: &mut u64, now: u64) -> Result<bool, WsError> {
    let data = line.strip_prefix(b"data: ").unwrap_or(line);
    if data == b"{}" {
        ctx.stats.borrow_mut().pings += 1;
    } else if data.starts_with(b"{\"connect\"") {
        return Ok(true);
    } else if data.starts_with(b"{\"disconnect\"") {
        return Err(WsError::new("disconnect_push", String::from_utf8_lossy(data).into_owned()));
    } else if data.starts_with(b"{") {
        ctx.deliver(last, data, now);
    }
    Ok(false)
}

async fn uni_sse(
    ctx: &Rc<Ctx>,
    mut stream: TcpStream,
    host: &str,
    connect: &str,
    deadline: tokio::time::Instant,
    started: Instant,
    guard: &mut Guard,
) -> Result<(), WsError> {
    let path = ctx.job.ws_path.replace("{channel}", "");
    let req = format!("GET {path}?cf_connect={} HTTP/1.1\r\nHost: {host}\r\n\r\n", percent_encode(connect));
    stream.write_all(req.as_bytes()).await.map_err(|e| WsError::io("request_write", &e))?;
    let mut ws = WsStream::raw(stream);
    let mut last = 0u64;
    let mut ready = false;
    let mut status_checked = false;
    loop {
        let read = if ready {
            ws.read(&ctx.scratch, MAX_READS).await
        } else {
            tokio::time::timeout_at(deadline, ws.read(&ctx.scratch, MAX_READS))
                .await
                .map_err(|_| WsError::new("timeout", "no connect push in time"))?
        };
        let now = now_ns();
        let (len, fresh) = read?.ok_or_else(|| WsError::new("eof", "stream ended"))?;
        ctx.stats.borrow_mut().bytes_in += fresh as u64;
        let buf = ctx.scratch.borrow();
        let mut failure = None;
        let mut connected = false;
        ws.lines(&buf[..len], |line| {
            if failure.is_some() {
                return;
            }
            if !status_checked {
                status_checked = true;
                if !line.starts_with(b"HTTP/1.1 200") {
                    failure = Some(WsError::new("http_status", String::from_utf8_lossy(line).into_owned()));
                }
                return;
            }
            match on_line(ctx, line, &mut last, now) {
                Ok(c) => connected |= c,
                Err(e) => failure = Some(e),
            }
        })?;
        drop(buf);
        if let Some(e) = failure {
            return Err(e);
        }
        if connected && !ready {
            ready = true;
            ctx.on_ready(started);
            guard.opened();
            if ctx.close_when_ready {
                return Ok(());
            }
        }
    }
}

/// Reads one HTTP response on a keep-alive connection: status, `Herald-Session`, `Herald-Seq`,
/// body.
async fn response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(u16, String, u64, Vec<u8>), WsError> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| {
                        l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
                    })
                    .unwrap_or("")
                    .to_owned()
            };
            let len: usize = header("content-length").parse().unwrap_or(0);
            while buf.len() < end + 4 + len {
                buf.reserve(end + 4 + len - buf.len());
                let n = stream.read_buf(buf).await.map_err(|e| WsError::io("read", &e))?;
                if n == 0 {
                    return Err(WsError::new("eof", "connection closed mid-response"));
                }
            }
            let body = buf[end + 4..end + 4 + len].to_vec();
            buf.drain(..end + 4 + len);
            let seq = header("herald-seq").parse().unwrap_or(0);
            return Ok((status, header("herald-session"), seq, body));
        }
        buf.reserve(4096);
        let n = stream.read_buf(buf).await.map_err(|e| WsError::io("read", &e))?;
        if n == 0 {
            return Err(WsError::new("eof", "connection closed"));
        }
    }
}

async fn long_poll(
    ctx: &Rc<Ctx>,
    mut stream: TcpStream,
    host: &str,
    connect: &str,
    deadline: tokio::time::Instant,
    started: Instant,
    guard: &mut Guard,
) -> Result<(), WsError> {
    let path = ctx.job.ws_path.replace("{channel}", "");
    let req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n\r\n{connect}", connect.len());
    stream.write_all(req.as_bytes()).await.map_err(|e| WsError::io("request_write", &e))?;
    let mut buf = Vec::new();
    let (status, session, mut seq, body) = tokio::time::timeout_at(deadline, response(&mut stream, &mut buf))
        .await
        .map_err(|_| WsError::new("timeout", "no connect answer in time"))??;
    if status != 200 || session.is_empty() {
        return Err(WsError::new(format!("http_{status}"), String::from_utf8_lossy(&body).into_owned()));
    }
    let mut last = 0u64;
    let now = now_ns();
    for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        on_line(ctx, line, &mut last, now)?;
    }
    ctx.on_ready(started);
    guard.opened();
    if ctx.close_when_ready {
        return Ok(());
    }
    loop {
        let req = format!("GET {path}?session={session}&seq={seq} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.map_err(|e| WsError::io("request_write", &e))?;
        let (status, _, next, body) = response(&mut stream, &mut buf).await?;
        if status != 200 {
            return Err(WsError::new(format!("http_{status}"), String::from_utf8_lossy(&body).into_owned()));
        }
        let now = now_ns();
        ctx.stats.borrow_mut().bytes_in += body.len() as u64;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            on_line(ctx, line, &mut last, now)?;
        }
        seq = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_request_is_percent_encoded() {
        assert_eq!(percent_encode(r#"{"token":"a b"}"#), "%7B%22token%22%3A%22a%20b%22%7D");
    }
}
