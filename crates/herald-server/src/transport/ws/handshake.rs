//! The WebSocket handshake: the upgrade checks (`herald_proto::ws::check_upgrade`), the origin
//! policy, encoding negotiation and the 101 response; an accepted connection gets its link and
//! its task ([`super::conn::run`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use herald_hub::{ConnectionInfo, Transport};
use herald_proto::Encoding;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Endpoint, conn, echo, link};
use crate::state::AppState;
use crate::transport::reject;

/// Answers a WebSocket upgrade request whose head (and any bytes after it) is `head`, and on
/// success spawns the connection task.
pub(crate) async fn upgrade(
    state: Arc<AppState>,
    mut stream: TcpStream,
    head: Vec<u8>,
    peer: SocketAddr,
    endpoint: Endpoint,
) {
    if state.shutting_down.load(Ordering::Relaxed) {
        return reject(stream, 503, "shutting down", "").await;
    }
    // Everything needed from the borrowed request is extracted before any await.
    let decision = {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return reject(stream, 400, "malformed request", "").await,
        };
        let query = req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q).unwrap_or("");
        match herald_proto::ws::check_upgrade(req.method.unwrap_or(""), req.headers) {
            Err(e) => Err((e.status, e.message)),
            Ok(up) => {
                if !origin_allowed(up.origin, up.host, &state.config.client.allowed_origins) {
                    Err((403, "origin not allowed"))
                } else {
                    // The echo endpoint speaks no client protocol: no subprotocol to choose.
                    let (encoding, protocol) = match endpoint {
                        Endpoint::Client => negotiate(&up.protocols, query),
                        Endpoint::Echo => (Encoding::Json, None),
                    };
                    let native_ping = query.split('&').any(|kv| kv == "cf_ws_frame_ping_pong=true");
                    let kept = keep_headers(req.headers, &state.connect_headers);
                    Ok((herald_proto::ws::switching_protocols(up.key, protocol), encoding, native_ping, head_len, kept))
                }
            }
        }
    };
    let (response, encoding, native_ping, head_len, kept) = match decision {
        Ok(d) => d,
        Err((status, message)) => {
            let extra = match status {
                426 => "Sec-WebSocket-Version: 13\r\n",
                // RFC 9110 §15.5.6: a 405 names the allowed methods.
                405 => "Allow: GET\r\n",
                _ => "",
            };
            return reject(stream, status, message, extra).await;
        }
    };
    if stream.write_all(&response).await.is_err() {
        return;
    }
    let early = head[head_len..].to_vec();
    if endpoint == Endpoint::Echo {
        let link = link::build_link(stream, encoding, false, &state.ws);
        tokio::spawn(echo::run(link, state, early));
        return;
    }
    let link = link::new_link(stream, encoding, native_ping, &state.node, &state.ws);
    // The long-lived task holds only the connection loop, not this handshake's state.
    let conn = ConnectionInfo::new(peer, Transport::WebSocket);
    tokio::spawn(conn::run(link, state, early, conn, kept));
}

/// The request headers the connect proxy forwards (`names`: lower-case), repeated ones joined
/// (cookies with `; `, others with `, `).
fn keep_headers(headers: &[httparse::Header<'_>], names: &[String]) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = Vec::new();
    if names.is_empty() {
        return kept;
    }
    for h in headers {
        let Some(name) = names.iter().find(|n| h.name.eq_ignore_ascii_case(n)) else { continue };
        let Ok(value) = std::str::from_utf8(h.value) else { continue };
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

/// Chooses the encoding from offered subprotocols and query parameters.
/// Returns the encoding and the subprotocol to echo.
fn negotiate(protocols: &[&str], query: &str) -> (Encoding, Option<&'static str>) {
    if protocols.contains(&"centrifuge-protobuf") {
        return (Encoding::Protobuf, Some("centrifuge-protobuf"));
    }
    let query_proto = query.split('&').any(|kv| kv == "format=protobuf" || kv == "cf_protocol=protobuf");
    if query_proto {
        return (Encoding::Protobuf, None);
    }
    if protocols.contains(&"centrifuge-json") {
        return (Encoding::Json, Some("centrifuge-json"));
    }
    (Encoding::Json, None)
}

/// Checks `Origin` against `client.allowed_origins` (patterns with `*`). Without patterns the
/// origin's host must equal the `Host` header. Requests without `Origin` are allowed.
fn origin_allowed(origin: Option<&str>, host: Option<&str>, allowed: &[String]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_encoding() {
        assert_eq!(negotiate(&["centrifuge-protobuf"], ""), (Encoding::Protobuf, Some("centrifuge-protobuf")));
        assert_eq!(
            negotiate(&["centrifuge-json", "centrifuge-protobuf"], ""),
            (Encoding::Protobuf, Some("centrifuge-protobuf"))
        );
        assert_eq!(negotiate(&["centrifuge-json"], ""), (Encoding::Json, Some("centrifuge-json")));
        assert_eq!(negotiate(&[], "cf_protocol=protobuf"), (Encoding::Protobuf, None));
        assert_eq!(negotiate(&[], "a=1&format=protobuf"), (Encoding::Protobuf, None));
        assert_eq!(negotiate(&[], ""), (Encoding::Json, None));
    }

    #[test]
    fn checks_origins() {
        assert!(origin_allowed(None, Some("a"), &[]));
        assert!(origin_allowed(Some("http://localhost:8000"), Some("localhost:8000"), &[]));
        assert!(!origin_allowed(Some("http://evil.com"), Some("localhost:8000"), &[]));
        let allowed = vec!["https://*.example.com".to_string(), "http://localhost:3000".to_string()];
        assert!(origin_allowed(Some("https://app.example.com"), None, &allowed));
        assert!(origin_allowed(Some("HTTP://localhost:3000"), None, &allowed));
        assert!(!origin_allowed(Some("https://example.org"), None, &allowed));
        assert!(origin_allowed(Some("http://x"), None, &["*".to_string()]));
    }
}
