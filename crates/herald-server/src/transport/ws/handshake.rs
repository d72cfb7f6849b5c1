//! The WebSocket handshake: the upgrade checks (`herald_proto::ws::check_upgrade`), the origin
//! policy, encoding negotiation and the 101 response; an accepted connection gets its link and
//! its task ([`super::conn::run`]). [`decide`] is the I/O-free part, shared with TLS
//! connections (`crate::tls_entry`), which answer through their own stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use herald_hub::{ClientLink, ConnectionInfo, Session, Transport};
use herald_proto::{Encoding, Envelope};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Endpoint, conn, echo};
use crate::state::AppState;
use crate::transport::link::{self, LinkOptions};
use crate::transport::records::Records;
use crate::transport::{origin_allowed, reject};

/// Answers a WebSocket upgrade request whose head (and any bytes after it) is `head`, and on
/// success spawns the connection task.
pub(crate) async fn upgrade(
    state: Arc<AppState>,
    mut stream: TcpStream,
    head: Vec<u8>,
    peer: SocketAddr,
    endpoint: Endpoint,
) {
    let accepted = match decide(&state, &head, endpoint) {
        Ok(accepted) => accepted,
        Err(rejection) => return reject(stream, rejection.status, rejection.message, rejection.extra).await,
    };
    if stream.write_all(&accepted.response).await.is_err() {
        return;
    }
    start(state, stream, None, &head, accepted, peer, endpoint);
}

/// Why an upgrade request is refused: the HTTP answer.
pub(crate) struct Rejection {
    pub status: u16,
    pub message: &'static str,
    /// Header lines (each ending in CRLF).
    pub extra: &'static str,
}

/// An accepted upgrade: the 101 response to send, and what the connection is made with.
pub(crate) struct Accepted {
    pub response: Vec<u8>,
    encoding: Encoding,
    native_ping: bool,
    head_len: usize,
    first: Vec<herald_proto::Command>,
    kept: Vec<(String, String)>,
}

/// Checks an upgrade request (shutdown, upgrade headers, origin, the uni_websocket connect
/// request) and negotiates its encoding, without I/O: a plain and a TLS connection answer it
/// the same way.
pub(crate) fn decide(state: &AppState, head: &[u8], endpoint: Endpoint) -> Result<Accepted, Rejection> {
    let refuse = |status, message| {
        let extra = match status {
            426 => "Sec-WebSocket-Version: 13\r\n",
            // RFC 9110 §15.5.6: a 405 names the allowed methods.
            405 => "Allow: GET\r\n",
            _ => "",
        };
        Rejection { status, message, extra }
    };
    if state.shutting_down.load(Ordering::Relaxed) {
        return Err(refuse(503, "shutting down"));
    }
    let mut headers = [httparse::EMPTY_HEADER; crate::entry::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(refuse(400, "malformed request")),
    };
    let query = req.path.and_then(|p| p.split_once('?')).map(|(_, q)| q).unwrap_or("");
    let up = herald_proto::ws::check_upgrade(req.method.unwrap_or(""), req.headers)
        .map_err(|e| refuse(e.status, e.message))?;
    if !origin_allowed(up.origin, up.host, &state.node.config().client.allowed_origins) {
        return Err(refuse(403, "origin not allowed"));
    }
    // The echo endpoint speaks no client protocol: no subprotocol to choose.
    let (encoding, protocol) = match endpoint {
        Endpoint::Client => negotiate(&up.protocols, query),
        Endpoint::Echo | Endpoint::Uni => (Encoding::Json, None),
    };
    let native_ping = query.split('&').any(|kv| kv == "cf_ws_frame_ping_pong=true");
    // uni_websocket: the connect request may come in the query (v6.3+).
    let first = match endpoint {
        Endpoint::Uni => uni_connect(query).map_err(|message| refuse(400, message))?,
        _ => Vec::new(),
    };
    let kept =
        crate::transport::keep_headers(req.headers.iter().map(|h| (h.name, h.value)), &state.connect_headers.load());
    Ok(Accepted {
        response: herald_proto::ws::switching_protocols(up.key, protocol),
        encoding,
        native_ping,
        head_len,
        first,
        kept,
    })
}

/// Builds the link of an accepted upgrade (after its 101 response was sent) and spawns its
/// task. `tls`: the record layer of a connection served over TLS.
pub(crate) fn start(
    state: Arc<AppState>,
    stream: TcpStream,
    tls: Option<Box<Records>>,
    head: &[u8],
    accepted: Accepted,
    peer: SocketAddr,
    endpoint: Endpoint,
) {
    let Accepted { encoding, native_ping, head_len, first, kept, .. } = accepted;
    let early = head[head_len..].to_vec();
    let uni = endpoint == Endpoint::Uni;
    let options = LinkOptions {
        envelope: if uni { Envelope::UniWs } else { Envelope::websocket(encoding) },
        native_ping,
        // WebSocket clients answer pings (protocol or native), so a missing pong closes;
        // unidirectional clients are not expected to answer.
        pong_expected: !uni,
        emulation: false,
        queue_max: state.ws.queue_max,
    };
    if endpoint == Endpoint::Echo {
        let link = link::build_link_with(stream, tls, LinkOptions { native_ping: false, ..options });
        tokio::spawn(echo::run(link, state, early));
        return;
    }
    let link = link::new_link(stream, tls, options, &state.node, state.ws.stale_after);
    // The long-lived task holds only the connection loop, not this handshake's state.
    let conn = ConnectionInfo::new(peer, if uni { Transport::UniWebSocket } else { Transport::WebSocket });
    let dyn_link: Arc<dyn ClientLink> = link.clone();
    let session = Box::new(Session::with_headers(dyn_link, conn, kept));
    tokio::spawn(conn::run(link, state, early, first, session));
}

/// The connect command of a uni_websocket request from its `cf_connect` query parameter
/// (none: the connect request is the first message).
fn uni_connect(query: &str) -> Result<Vec<herald_proto::Command>, &'static str> {
    let Some(value) = query.split('&').find_map(|kv| kv.strip_prefix("cf_connect=")) else {
        return Ok(Vec::new());
    };
    let data =
        crate::transport::stream::request::percent_decode(value).ok_or("cf_connect is not valid percent-encoding")?;
    let req: herald_proto::ConnectRequest = serde_json::from_slice(&data).map_err(|_| "malformed cf_connect")?;
    Ok(vec![herald_proto::Command { id: 1, connect: Some(req), ..Default::default() }])
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
