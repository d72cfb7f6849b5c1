//! Transports: how a client connection carries protocol frames.
//!
//! A transport takes a routed request (the socket and the bytes of its head), accepts or
//! rejects it, builds a link (`herald_hub::ClientLink`: where the hub and the session queue
//! frames for the client) and runs the connection until it ends, handing the session a
//! `herald_hub::ConnectionInfo` (peer address, transport) and counting itself in
//! [`crate::state::Connections`].
//!
//! Each transport is one folder here plus one [`crate::router::Route`]: [`ws`] today; SSE
//! (`sse`), HTTP streaming (`http_stream`) and long polling (`long_poll`) go next to it.
//!
//! This module also holds what transports share before any protocol runs: `reject`, a plain
//! HTTP error written straight to the socket.

pub mod ws;

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
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Answers `status` with `{"error": message}` (and `extra` header lines, each ending in CRLF)
/// and closes the connection.
pub(crate) async fn reject(mut stream: TcpStream, status: u16, message: &str, extra: &str) {
    metrics::counter!("herald_transport_rejected_total", "status" => status.to_string()).increment(1);
    let body = serde_json::json!({ "error": message }).to_string();
    let _ = stream.write_all(&raw_response(status, status_reason(status), extra, &body)).await;
    let _ = stream.shutdown().await;
}
