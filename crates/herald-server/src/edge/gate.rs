//! Where the connection entry applies the edge policies: the PROXY protocol header before the
//! first request, and the lists and admission limits on each routed request.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::proxy_protocol::{self, Parsed};
use super::{Class, Refused, class};
use crate::router::Route;
use crate::state::AppState;

/// Reads the PROXY protocol header of a connection from a trusted proxy: the client's address
/// (`None`: the proxy's own, e.g. a health check) and the bytes read after the header.
pub async fn read_proxy_header(stream: &TcpStream) -> Result<(Option<SocketAddr>, Vec<u8>), String> {
    let mut buf = vec![0; proxy_protocol::MAX_HEADER];
    let mut len = 0;
    loop {
        stream.readable().await.map_err(|e| e.to_string())?;
        match stream.try_read(&mut buf[len..]) {
            Ok(0) => return Err("closed before the PROXY protocol header".into()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        }
        match proxy_protocol::parse(&buf[..len])? {
            Parsed::Incomplete if len == buf.len() => return Err("PROXY protocol header too long".into()),
            Parsed::Incomplete => {}
            Parsed::Done { len: header, source } => {
                buf.truncate(len);
                buf.drain(..header);
                return Ok((source, buf));
            }
        }
    }
}

/// Applies the policies to a request routed to `route` from `peer`: the client's address to
/// use from now on, or the refusal.
pub fn admit<'h>(
    state: &AppState,
    route: &Route<'_>,
    peer: SocketAddr,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
) -> Result<SocketAddr, Refused> {
    let edge = &state.edge;
    let class = class(route);
    // The headers are only collected when a proxy is trusted.
    let client = if edge.has_trusted_proxies() && edge.trusts(peer.ip()) {
        edge.client_address(peer, &headers.collect::<Vec<_>>())
    } else {
        peer
    };
    edge.allows(class, client.ip())?;
    match class {
        Class::ClientConnect => edge.admit_connection(client.ip(), state.connections.total())?,
        Class::Api => edge.admit_api()?,
        // The console's actions are API calls and pay the API's admission limit.
        Class::Admin if matches!(route, Route::Admin(p) if p.starts_with("/admin/api/")) => edge.admit_api()?,
        _ => {}
    }
    Ok(client)
}

/// [`admit`] for a connection's first request, from its raw head.
pub fn admit_head(state: &AppState, route: &Route<'_>, peer: SocketAddr, head: &[u8]) -> Result<SocketAddr, Refused> {
    if !state.edge.has_trusted_proxies() {
        return admit(state, route, peer, std::iter::empty());
    }
    let mut fields = [httparse::EMPTY_HEADER; crate::entry::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    // The head parsed when it was routed.
    let _ = req.parse(head);
    admit(state, route, peer, req.headers.iter().map(|h| (h.name, h.value)))
}
