//! Bidirectional emulation: the registry of SSE and HTTP-streaming sessions and the
//! `/emulation` endpoint, where their clients send every command after connect.
//!
//! A session id is a random secret made with the link and sent only in that client's connect
//! result (with this node's id); client ids are not used because other clients can see them
//! in presence. `POST /emulation` names `node` and `session`:
//! - `node` is another live node of the cluster: the encoded commands are forwarded to it
//!   through the engine's control channel (`herald_hub::cluster::Command::Emulation`), 204
//!   once the engine took them, 503 when it did not; that node runs them as if posted there
//!   ([`Forwarded`]). A node that is not a live member (or no cluster): 404, what the SDK
//!   reconnects on;
//! - an unknown or closed session on this node: 204, as Centrifugo answers (the stream is gone
//!   or going; the client learns it from the stream);
//! - otherwise the commands are decoded in the session's encoding and handed to its task
//!   ([`SocketLink::deliver`]), which runs them in arrival order: 204; the replies go out on
//!   the stream. Malformed: 400; over `emulation.max_request_body_size`: 413; more than
//!   `client.max_commands_per_frame` commands waiting for the task: 429.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use herald_hub::cluster::EmulationSink;
use herald_hub::{ClientLink, EmulationForward};
use herald_proto::decode_commands;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::request::{HttpMethod, StreamHead, emulation_body};
use crate::api::{Body, transport_error};
use crate::state::AppState;
use crate::transport::link::SocketLink;
use crate::transport::origin_allowed;

/// Live emulation sessions of this node, by session id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Box<str>, Weak<SocketLink>>>,
}

impl Sessions {
    pub(crate) fn insert(&self, link: &Arc<SocketLink>) {
        if let Some(id) = link.emulation_session() {
            self.map.lock().expect("sessions").insert(id.into(), Arc::downgrade(link));
        }
    }

    pub(crate) fn remove(&self, link: &SocketLink) {
        if let Some(id) = link.emulation_session() {
            self.map.lock().expect("sessions").remove(id);
        }
    }

    fn find(&self, session: &str) -> Option<Arc<SocketLink>> {
        self.map.lock().expect("sessions").get(session).and_then(Weak::upgrade)
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where an `/emulation` request goes.
pub(crate) enum Target {
    Local(Arc<SocketLink>),
    /// This node, but no such session (closed, or never existed).
    Gone,
    /// Another node's session: the commands are forwarded to `node` ([`forward`]).
    OtherNode,
}

pub(crate) fn route(state: &AppState, node: &str, session: &str) -> Target {
    if node != state.node.identity().uid {
        return Target::OtherNode;
    }
    match state.emulation.find(session) {
        Some(link) => Target::Local(link),
        None => Target::Gone,
    }
}

fn counted(outcome: &'static str, response: Response<Body>) -> Response<Body> {
    metrics::counter!("herald_emulation_requests_total", "result" => outcome).increment(1);
    response
}

/// Adds the CORS headers of an answer to an allowed origin; `expose` names response headers a
/// page may read (long-polling's session headers). Shared by `/emulation` and long-polling.
pub(crate) fn with_cors(
    mut response: Response<Body>,
    origin: Option<&str>,
    expose: Option<&'static str>,
) -> Response<Body> {
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        if let Some(expose) = expose {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(expose));
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Answers `POST /emulation` (and its CORS preflight).
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let head = match StreamHead::new(
        req.method().as_str(),
        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(""),
        req.headers().iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    ) {
        Ok(h) => h,
        Err(message) => return counted("rejected", transport_error(StatusCode::BAD_REQUEST, message)),
    };
    let origin = head.origin.as_deref();
    if !origin_allowed(origin, head.host.as_deref(), &state.node.config().client.allowed_origins) {
        return counted("rejected", transport_error(StatusCode::FORBIDDEN, "origin not allowed"));
    }
    let response = match head.method {
        HttpMethod::Options => {
            let mut r = empty(StatusCode::NO_CONTENT);
            let h = r.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("300"));
            if let Some(v) = head.request_headers.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
            counted("preflight", r)
        }
        HttpMethod::Post => accept(state, req, head.protobuf).await,
        _ => {
            let mut r = transport_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed (allowed: POST, OPTIONS)");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            counted("rejected", r)
        }
    };
    with_cors(response, origin, None)
}

async fn accept(state: &AppState, req: Request<Incoming>, protobuf: bool) -> Response<Body> {
    let limit = state.config.emulation.max_request_body_size;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return counted("rejected", transport_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"));
        }
        Err(_) => return counted("rejected", transport_error(StatusCode::BAD_REQUEST, "request body not received")),
    };
    let (node, session, data) = match emulation_body(protobuf, &body) {
        Ok(parts) => parts,
        Err(r) => return counted("rejected", transport_error(StatusCode::BAD_REQUEST, &r.message)),
    };
    if node.is_empty() || session.is_empty() {
        return counted("rejected", transport_error(StatusCode::BAD_REQUEST, "node and session are required"));
    }
    let link = match route(state, &node, &session) {
        Target::Local(link) => link,
        Target::Gone => return counted("unknown_session", empty(StatusCode::NO_CONTENT)),
        Target::OtherNode => return forward(state, &node, &session, &data).await,
    };
    let max = state.ws.max_commands;
    let cmds = match decode_commands(link.envelope.encoding(), &data, max) {
        Ok(c) => c,
        Err(e) => return counted("rejected", transport_error(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    if link.deliver(cmds, max) {
        counted("ok", empty(StatusCode::NO_CONTENT))
    } else if link.is_closing() {
        counted("unknown_session", empty(StatusCode::NO_CONTENT))
    } else {
        counted(
            "rejected",
            transport_error(StatusCode::TOO_MANY_REQUESTS, "too many commands waiting for this session"),
        )
    }
}

/// Sends an `/emulation` request's commands to node `node`, which holds the session: 204 once
/// the engine took them (as a local post answers before the commands run), 404 when `node` is
/// not a live node of the cluster, 503 when the engine is unreachable (the client may retry).
async fn forward(state: &AppState, node: &str, session: &str, data: &[u8]) -> Response<Body> {
    match state.node.forward_emulation(node, session, data).await {
        EmulationForward::Sent => counted("forwarded", empty(StatusCode::NO_CONTENT)),
        EmulationForward::UnknownNode => {
            counted("unknown_node", transport_error(StatusCode::NOT_FOUND, "unknown node"))
        }
        EmulationForward::BrokerDown(reason) => {
            let message = format!("cannot reach the session's node: broker unavailable ({reason})");
            counted("broker_unavailable", transport_error(StatusCode::SERVICE_UNAVAILABLE, &message))
        }
    }
}

/// Runs the commands other nodes forwarded to this node's sessions, checked as a local post
/// is (size, decoding, the waiting-commands bound); the sender has already answered its client,
/// so the outcome is only counted (`herald_emulation_forwarded_total{result}`).
pub(crate) struct Forwarded(Weak<AppState>);

impl Forwarded {
    /// Registers the node's sink for forwarded commands.
    pub(crate) fn register(state: &Arc<AppState>) {
        state.node.set_emulation_sink(Arc::new(Forwarded(Arc::downgrade(state))));
    }
}

impl EmulationSink for Forwarded {
    fn deliver(&self, session: &str, data: Bytes) {
        let Some(state) = self.0.upgrade() else { return };
        let outcome = if data.len() > state.config.emulation.max_request_body_size {
            "too_large"
        } else if let Some(link) = state.emulation.find(session) {
            let max = state.ws.max_commands;
            match decode_commands(link.envelope.encoding(), &data, max) {
                Err(_) => "rejected",
                Ok(cmds) => match link.deliver(cmds, max) {
                    true => "ok",
                    false if link.is_closing() => "unknown_session",
                    false => "too_many",
                },
            }
        } else {
            "unknown_session"
        };
        metrics::counter!("herald_emulation_forwarded_total", "result" => outcome).increment(1);
    }
}
