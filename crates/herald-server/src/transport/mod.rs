//! Transports: how a client connection carries protocol frames.
//!
//! A transport takes a routed request (the socket and the bytes of its head), accepts or
//! rejects it, builds a link (`herald_hub::ClientLink`: where the hub and the session queue
//! frames for the client) and runs the connection until it ends, handing the session a
//! `herald_hub::ConnectionInfo` (peer address, transport) and counting itself in
//! [`crate::state::Connections`].
//!
//! Each transport is one folder here plus one [`crate::router::Route`]: [`ws`] (WebSocket and
//! unidirectional WebSocket) and [`stream`] (SSE and HTTP streaming, bidirectional emulation and
//! unidirectional, and `/emulation`) and [`long_poll`] (HTTP long-polling, served on the raw socket).
//!
//! This module also holds what transports share: [`link::SocketLink`] (the `ClientLink` of a
//! connection that owns its socket, with its outbound [`queue`] and, over TLS, its [`records`]), `reject` (a plain HTTP error
//! written straight to the socket) and the byte counters.

pub mod link;
pub mod long_poll;
pub(crate) mod queue;
pub mod records;
pub mod stream;
pub mod ws;

use std::sync::OnceLock;

use metrics::Counter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A plain HTTP response written straight to the socket (before hyper is involved).
fn raw_response(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status_reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers `status` with `{"error": message}` (and `extra` header lines, each ending in CRLF)
/// and closes the connection.
pub(crate) async fn reject(mut stream: TcpStream, status: u16, message: &str, extra: &str) {
    let _ = stream.write_all(&rejection(status, message, extra)).await;
    let _ = stream.shutdown().await;
}

/// The bytes of [`reject`]'s answer (counted), for a caller that writes them itself (TLS).
pub(crate) fn rejection(status: u16, message: &str, extra: &str) -> Vec<u8> {
    metrics::counter!("herald_transport_rejected_total", "status" => status.to_string()).increment(1);
    let body = serde_json::json!({ "error": message }).to_string();
    raw_response(status, status_reason(status), extra, &body)
}

fn counter(cell: &'static OnceLock<Counter>, name: &'static str) -> &'static Counter {
    cell.get_or_init(|| metrics::counter!(name))
}

pub(crate) fn bytes_in(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_in_total").increment(n as u64);
}

pub(crate) fn bytes_out(n: usize) {
    static C: OnceLock<Counter> = OnceLock::new();
    counter(&C, "herald_transport_bytes_out_total").increment(n as u64);
}

/// Checks `Origin` against `client.allowed_origins` (patterns with `*`). Without patterns the
/// origin's host must equal the `Host` header. Requests without `Origin` are allowed.
pub(crate) fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
    let Some(origin) = origin else { return true };
    if allowed.is_empty() {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        return host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
    }
    allowed.iter().any(|p| wildcard_match(&p.to_ascii_lowercase(), &origin.to_ascii_lowercase()))
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(mut remaining) = text.strip_prefix(prefix) else { return false };
            if rest.is_empty() {
                return true;
            }
            loop {
                if wildcard_match(rest, remaining) {
                    return true;
                }
                let mut chars = remaining.chars();
                if chars.next().is_none() {
                    return false;
                }
                remaining = chars.as_str();
            }
        }
    }
}

/// The request headers the connect proxy forwards (`names`: lower-case), repeated ones joined
/// (cookies with `; `, others with `, `). Every transport keeps them from its request head.
pub(crate) fn keep_headers<'h>(
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    names: &[String],
) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = Vec::new();
    if names.is_empty() {
        return kept;
    }
    for (header, value) in headers {
        let Some(name) = names.iter().find(|n| header.eq_ignore_ascii_case(n)) else { continue };
        let Ok(value) = std::str::from_utf8(value) else { continue };
        match kept.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => {
                v.push_str(if name == "cookie" { "; " } else { ", " });
                v.push_str(value);
            }
            None => kept.push((name.clone(), value.to_owned())),
        }
    }
    kept
}
