//! The server HTTP API (`POST /api/<method>`) and the plain HTTP endpoints next to it
//! (`GET /health`, `GET /metrics`, JSON errors): the HTTP side of the API. The methods
//! themselves (request and response types, handlers, the method table) are in [`methods`].
//!
//! Request and response shapes follow the Centrifugo v5+ HTTP API: the body is the method's
//! request object, the answer is HTTP 200 with `{"result": ...}` or `{"error": {code, message}}`.
//! Transport-level problems get a status and a JSON body `{"error": "..."}`: 401 without a valid
//! key, 400 for a body that is not valid JSON for the method, 404 for an unknown method, 405
//! for a method other than POST, 413 for a body over `http_api.max_body_size`. The two shapes
//! differ as Centrifugo's do: SDKs parse `error.code` of a 200 answer and only the status of the
//! others.
//! With `X-Herald-Error-Mode: transport` (or `X-Centrifugo-Error-Mode`) API errors are returned
//! as bare `{code, message}` objects with a matching HTTP status instead.

pub mod methods;
pub mod ops;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use herald_proto::ErrorCode;
use herald_proto::codes::ERROR_METHOD_NOT_FOUND;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::state::AppState;
use methods::{ApiContext, ApiMethod, BadJson};

pub type Body = Full<Bytes>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// A transport-level error: `status` with `{"error": message}`.
pub fn transport_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, json!({ "error": message }).to_string().into_bytes())
}

/// How an API request ended, for `herald_api_requests_total` (the `result` label, as in
/// `herald_client_commands_total`): a method error is HTTP 200 like a success, so the status
/// alone cannot tell them apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tally {
    /// `result="ok"`.
    Ok,
    /// `result="error"` with the API error code (one of the protocol's codes, a bounded set).
    Error(u32),
    /// `result="rejected"`: refused before the method ran (401, 400, 404, 405, 413).
    Rejected,
}

/// Counts an API request. Handles are cached per label set: a registry lookup with label
/// allocation on every request showed up in profiles of the publish path.
pub(crate) fn api_metric(method: &'static str, status: u16, tally: Tally) {
    use herald_hub::metrics::{Handles, cached};
    static H: Handles<(&'static str, u16, Tally)> = OnceLock::new();
    cached(&H, (method, status, tally), || {
        let (result, code) = match tally {
            Tally::Ok => ("ok", String::new()),
            Tally::Error(code) => ("error", code.to_string()),
            Tally::Rejected => ("rejected", String::new()),
        };
        metrics::counter!(
            "herald_api_requests_total",
            "method" => method, "status" => status.to_string(), "result" => result, "code" => code
        )
    })
    .increment(1);
}

/// `GET /health`: `{}`, or 503 with the reason once shutting down or while the engine is
/// unreachable or not delivering (a cluster node's probe through the broker did not return).
pub fn health(state: &AppState) -> Response<Body> {
    if state.shutting_down.load(Ordering::Relaxed) {
        return transport_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    if let Err(reason) = state.node.health() {
        return transport_error(StatusCode::SERVICE_UNAVAILABLE, &reason);
    }
    json_response(StatusCode::OK, b"{}".to_vec())
}

/// `GET /metrics`: gauges sampled now, then the Prometheus text exposition.
pub fn metrics(state: &AppState) -> Response<Body> {
    crate::telemetry::sample_process(state.connections.total());
    let stats = state.node.stats();
    metrics::gauge!("herald_connections").set(stats.num_clients as f64);
    metrics::gauge!("herald_users").set(stats.num_users as f64);
    metrics::gauge!("herald_channels").set(stats.num_channels as f64);
    metrics::gauge!("herald_subscriptions").set(stats.num_subs as f64);
    // One pass over the connections, at scrape time only: the write path keeps no shared
    // total (one lock per connection for its queue).
    let (mut queued, mut json, mut protobuf) = (0, 0, 0);
    for link in state.node.hub().all_links() {
        queued += link.queued_bytes();
        match link.envelope().encoding() {
            herald_proto::Encoding::Json => json += 1,
            herald_proto::Encoding::Protobuf => protobuf += 1,
        }
    }
    metrics::gauge!("herald_queued_bytes").set(queued as f64);
    for (encoding, n) in [(herald_proto::Encoding::Json, json), (herald_proto::Encoding::Protobuf, protobuf)] {
        metrics::gauge!("herald_connections_by_encoding", "encoding" => encoding.as_str()).set(f64::from(n));
    }
    for (transport, open) in state.connections.by_transport() {
        metrics::gauge!("herald_transport_connections", "transport" => transport.name()).set(open as f64);
    }
    for (i, open) in state.connections.by_worker().enumerate() {
        metrics::gauge!("herald_worker_connections", "worker" => i.to_string()).set(open as f64);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(state.metrics.render())))
        .expect("valid response")
}

/// Answers an API request for `method` (`None`: the path names no method), coming from `peer`.
pub async fn handle(
    state: &AppState,
    method: Option<&'static ApiMethod>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let name = method.map_or("unknown", |m| m.name);
    // The caller's trace, continued: its id tags every line logged while the call runs.
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let trace_id = traceparent.and_then(crate::proxy::parse_traceparent).map(|(trace, _)| trace.to_owned());
    #[cfg(feature = "otlp")]
    let otel = crate::telemetry::otlp::api_span(name, traceparent);
    // A span only for traced calls: an untraced publish pays no span.
    let span = match &trace_id {
        Some(id) => tracing::info_span!("api", method = name, trace_id = id.as_str()),
        None => tracing::Span::none(),
    };
    let (response, tally) = call(state, method, req, peer).instrument(span).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    api_metric(name, status, tally);
    api_duration(name).record(elapsed.as_secs_f64());
    let bytes = hyper::body::Body::size_hint(response.body()).exact().unwrap_or(0);
    let code = match tally {
        Tally::Error(code) => Some(code),
        _ => None,
    };
    #[cfg(feature = "otlp")]
    if let Some(span) = otel {
        span.end(status, code);
    }
    tracing::info!(
        target: crate::telemetry::ACCESS,
        kind = "api",
        address = %peer.ip(),
        method = name,
        status,
        code,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        bytes,
        trace_id = trace_id.as_deref(),
        "api {name} {status}"
    );
    response
}

/// The latency histogram of an API method (cached, as [`api_metric`]).
fn api_duration(method: &'static str) -> metrics::Histogram {
    static H: OnceLock<std::sync::Mutex<std::collections::HashMap<&'static str, metrics::Histogram>>> = OnceLock::new();
    let mut map = H.get_or_init(Default::default).lock().expect("metric handles");
    map.entry(method).or_insert_with(|| metrics::histogram!(crate::telemetry::API_DURATION, "method" => method)).clone()
}

/// Checks the API key (header `X-API-Key`, `Authorization: apikey <key>` or `?api_key=`); the
/// error says whether no key was given or a wrong one, never what the key is. Gateway routes
/// with `auth = "api_key"` use it too.
pub(crate) fn authorize(state: &AppState, req: &Request<Incoming>) -> Result<(), &'static str> {
    let cfg = &state.config.http_api;
    if cfg.insecure {
        return Ok(());
    }
    if cfg.key.is_empty() {
        return Err("unauthorized: the server has no API key (http_api.key) and http_api.insecure is off");
    }
    let key = cfg.key.as_bytes();
    let headers = req.headers();
    let header_key = headers.get("x-api-key").map(|v| v.as_bytes());
    let auth_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("apikey"))
        .map(|(_, value)| value.trim().as_bytes());
    let query = req.uri().query().unwrap_or("");
    let mut query_keys = query.split('&').filter_map(|kv| kv.strip_prefix("api_key=")).map(str::as_bytes).peekable();
    let given = header_key.is_some() || auth_key.is_some() || query_keys.peek().is_some();
    if header_key.into_iter().chain(auth_key).chain(query_keys).any(|k| constant_eq(k, key)) {
        return Ok(());
    }
    Err(if given {
        "unauthorized: invalid API key"
    } else {
        "unauthorized: no API key (send it in X-API-Key, Authorization: apikey <key> or ?api_key=)"
    })
}

/// Compares without an early exit, so the key cannot be guessed byte by byte from timing.
fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn transport_mode(req: &Request<Incoming>) -> bool {
    ["x-herald-error-mode", "x-centrifugo-error-mode"]
        .iter()
        .any(|h| req.headers().get(*h).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"transport")))
}

/// The method name in an API path (`/api/<name>`), for the 404 that names it.
fn method_in_path<'a>(state: &AppState, req: &'a Request<Incoming>) -> &'a str {
    let prefix = state.config.http_api.handler_prefix.trim_end_matches('/');
    let path = req.uri().path();
    path.strip_prefix(prefix).and_then(|m| m.strip_prefix('/')).unwrap_or(path)
}

async fn call(
    state: &AppState,
    method: Option<&'static ApiMethod>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> (Response<Body>, Tally) {
    let rejected = |status, message: &str| (transport_error(status, message), Tally::Rejected);
    if req.method() != Method::POST {
        // RFC 9110 §15.5.6: a 405 names the allowed methods.
        let mut response = transport_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return (response, Tally::Rejected);
    }
    if let Err(message) = authorize(state, &req) {
        return rejected(StatusCode::UNAUTHORIZED, message);
    }
    let Some(method) = method else {
        let message = match method_in_path(state, &req) {
            "" => "no API method in the path: use POST /api/<method>".to_owned(),
            name => format!("unknown API method `{}`", methods::Short(name)),
        };
        return rejected(StatusCode::NOT_FOUND, &message);
    };
    let transport = transport_mode(&req);
    let limit = state.config.http_api.max_body_size;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return rejected(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(_) => return rejected(StatusCode::BAD_REQUEST, "cannot read request body"),
    };
    run(state, method, &body, peer, transport).await
}

/// Runs `method` with `body` as its params and renders the answer as `/api/<method>` does
/// (`transport`: the bare error shape of `X-Herald-Error-Mode: transport`). The admin console
/// calls methods through here after its own checks.
pub(crate) async fn run(
    state: &AppState,
    method: &'static ApiMethod,
    body: &[u8],
    peer: SocketAddr,
    transport: bool,
) -> (Response<Body>, Tally) {
    let rejected = |status, message: &str| (transport_error(status, message), Tally::Rejected);
    let ctx = ApiContext { state, peer };
    let result = match (method.call)(&ctx, body).await {
        Ok(r) => r,
        Err(BadJson(msg)) => return rejected(StatusCode::BAD_REQUEST, &msg),
    };
    match result {
        Ok(value) if !method.wrap_result => {
            (json_response(StatusCode::OK, Box::<str>::from(value).into_string().into_bytes()), Tally::Ok)
        }
        Ok(value) => {
            let value = value.get();
            let mut body = Vec::with_capacity(value.len() + 11);
            body.extend_from_slice(b"{\"result\":");
            body.extend_from_slice(value.as_bytes());
            body.push(b'}');
            (json_response(StatusCode::OK, body), Tally::Ok)
        }
        Err(e) if transport => {
            let tally = Tally::Error(e.code);
            (json_response(error_status(e.code), serde_json::to_vec(&e).expect("API errors serialize")), tally)
        }
        Err(e) => {
            let tally = Tally::Error(e.code);
            (json_response(StatusCode::OK, json!({ "error": e }).to_string().into_bytes()), tally)
        }
    }
}

/// The message API answers carry for `e`.
fn api_message(e: ErrorCode) -> &'static str {
    if e.code == ERROR_METHOD_NOT_FOUND.code { "not found" } else { e.message }
}

fn error_status(code: u32) -> StatusCode {
    match code {
        102 | 104 => StatusCode::NOT_FOUND,
        107 | 108 => StatusCode::BAD_REQUEST,
        112 => StatusCode::RANGE_NOT_SATISFIABLE,
        113 => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
