//! Requests that arrive on a keep-alive connection hyper serves (browsers and `fetch` reuse
//! pooled connections) but are served on the raw socket: a stream's opening request and a
//! long poll. hyper answers refusals and preflights itself; an accepted request is recorded
//! here, hyper's placeholder answer (with `Connection: close`, so that hyper lets the
//! connection go) is discarded by the socket wrapper in `crate::entry`, and the request is then
//! served on the raw socket like a first request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::StreamKind;
use super::request::{Payload, StreamHead, cors_headers, preflight_headers};
use crate::api::{self, Body};
use crate::state::AppState;

/// A streaming request hyper read on a keep-alive connection, to be served on the raw socket
/// once hyper lets it go: hyper answers it with `Connection: close` (so it ends the
/// connection), that answer is discarded by [`Rewind`], and the stream's own response follows.
#[derive(Default)]
pub(crate) struct Handoff {
    /// Set once hyper's answer is to be discarded.
    discard: AtomicBool,
    request: Mutex<Option<Taken>>,
}

/// An accepted request waiting for the raw socket.
pub(crate) enum Taken {
    /// A stream's opening request and its connect payload.
    Stream { kind: StreamKind, head: StreamHead, data: Vec<u8> },
    /// A long poll.
    LongPoll(Box<crate::transport::long_poll::raw::Handed>),
}

impl Handoff {
    /// Whether writes to the socket are to be discarded (hyper's placeholder answer).
    pub(crate) fn discarding(&self) -> bool {
        self.discard.load(Ordering::Relaxed)
    }

    /// The accepted request, once hyper let the connection go.
    pub(crate) fn take(&self) -> Option<Taken> {
        self.request.lock().expect("handoff").take()
    }

    /// Records `taken` and returns hyper's placeholder answer: discarded, and it ends hyper's
    /// hold on the connection.
    pub(crate) fn hand_over(&self, taken: Taken) -> Response<Body> {
        self.discard.store(true, Ordering::Relaxed);
        *self.request.lock().expect("handoff") = Some(taken);
        let mut r = Response::new(Body::default());
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        r
    }
}

/// Serves a handed-over stream on the raw socket.
pub(crate) async fn serve(
    state: Arc<AppState>,
    stream: TcpStream,
    kind: StreamKind,
    head: StreamHead,
    data: Vec<u8>,
    peer: SocketAddr,
) {
    super::open(state, stream, head, data, peer, kind).await;
}

/// Serves a streaming endpoint's request that came through hyper: refusals and preflights are
/// answered here; an accepted request is handed over ([`Handoff`]).
pub(crate) async fn answer(
    state: &AppState,
    req: Request<Incoming>,
    kind: StreamKind,
    handoff: &Handoff,
) -> Response<Body> {
    let head = match StreamHead::new(
        req.method().as_str(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    ) {
        Ok(mut h) => {
            h.kept = crate::transport::keep_headers(
                req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
                &state.connect_headers.load(),
            );
            h
        }
        Err(message) => return api::transport_error(StatusCode::BAD_REQUEST, message),
    };
    let limit = kind.config(&state.config).body_limit();
    let (status, extra, message) = match super::check(state, kind, &head, limit) {
        Ok(Some(payload)) => {
            let data = match payload {
                Payload::Query(data) => data,
                Payload::Body(_) => match Limited::new(req.into_body(), limit).collect().await {
                    Ok(b) => b.to_bytes().to_vec(),
                    Err(_) => return api::transport_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                },
            };
            return handoff.hand_over(Taken::Stream { kind, head, data });
        }
        Ok(None) => (
            StatusCode::NO_CONTENT,
            preflight_headers(head.origin.as_deref(), head.request_headers.as_deref(), kind.allowed_methods()),
            None,
        ),
        Err(r) => {
            let mut extra = cors_headers(head.origin.as_deref());
            if r.status == 405 {
                extra.push_str(&format!("Allow: {}\r\n", kind.allowed_methods()));
            }
            (StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), extra, Some(r.message))
        }
    };
    let mut response = match message {
        Some(m) => api::transport_error(status, &m),
        None => {
            let mut r = Response::new(Body::default());
            *r.status_mut() = status;
            r
        }
    };
    for line in extra.split("\r\n").filter(|l| !l.is_empty()) {
        if let Some((name, value)) = line.split_once(": ")
            && let (Ok(n), Ok(v)) = (http::HeaderName::try_from(name), http::HeaderValue::from_str(value))
        {
            response.headers_mut().append(n, v);
        }
    }
    response
}
