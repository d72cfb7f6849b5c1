//! The server HTTP API (`POST /api/<method>`), `GET /health` and `GET /metrics`.
//!
//! Request and response shapes follow the Centrifugo v5+ HTTP API: the body is the method's
//! request object, the answer is HTTP 200 with `{"result": ...}` or `{"error": {code, message}}`.
//! Transport-level problems get a status and a JSON body `{"error": "..."}`: 401 without a valid
//! key, 400 for a body that is not valid JSON for the method, 404 for an unknown method, 405
//! for a method other than POST, 413 for a body over `http_api.max_body_size`.
//! With `X-Herald-Error-Mode: transport` (or `X-Centrifugo-Error-Mode`) API errors are returned
//! as bare `{code, message}` objects with a matching HTTP status instead.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use bytes::Bytes;
use herald_auth::Override;
use herald_hub::ServerSubscribe;
use herald_hub::node::{ApiPublish, Target};
use herald_proto::codes::*;
use herald_proto::{ClientInfo, DisconnectReason, ErrorCode, Publication, StreamPosition, raw};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::server::AppState;

type Body = Full<Bytes>;

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn transport_error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, json!({ "error": message }).to_string().into_bytes())
}

/// Counts an API request. Handles are cached per (method, status): a registry lookup with
/// label allocation on every request showed up in profiles of the publish path.
fn api_metric(method: &'static str, status: u16) {
    use herald_hub::metrics::{Handles, cached};
    static H: Handles<(&'static str, u16)> = OnceLock::new();
    cached(
        &H,
        (method, status),
        || metrics::counter!("herald_api_requests_total", "method" => method, "status" => status.to_string()),
    )
    .increment(1);
}

/// Entry point for every non-WebSocket HTTP request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let cfg = &state.config;
    if cfg.health.enabled && path == cfg.health.handler_prefix {
        if state.shutting_down.load(Ordering::Relaxed) {
            return Ok(transport_error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        }
        return Ok(json_response(StatusCode::OK, b"{}".to_vec()));
    }
    if cfg.prometheus.enabled && path == cfg.prometheus.handler_prefix {
        return Ok(metrics_response(&state));
    }
    if !cfg.websocket.disabled && path == cfg.websocket.handler_prefix {
        return Ok(transport_error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade (it must be the first request on its connection)",
        ));
    }
    let prefix = cfg.http_api.handler_prefix.trim_end_matches('/');
    if !cfg.http_api.disabled
        && let Some(method) = path.strip_prefix(prefix).and_then(|m| m.strip_prefix('/'))
    {
        let method = method.to_owned();
        let response = api(&state, &method, req).await;
        let label = METHODS.iter().copied().find(|m| *m == method).unwrap_or("unknown");
        api_metric(label, response.status().as_u16());
        return Ok(response);
    }
    Ok(transport_error(StatusCode::NOT_FOUND, "not found"))
}

fn metrics_response(state: &AppState) -> Response<Body> {
    let stats = state.node.stats();
    metrics::gauge!("herald_connections").set(stats.num_clients as f64);
    metrics::gauge!("herald_users").set(stats.num_users as f64);
    metrics::gauge!("herald_channels").set(stats.num_channels as f64);
    metrics::gauge!("herald_subscriptions").set(stats.num_subs as f64);
    metrics::gauge!("herald_transport_connections", "transport" => "websocket")
        .set(crate::ws::OPEN_CONNECTIONS.load(Ordering::Relaxed) as f64);
    let workers = state.pinned_workers.min(crate::ws::WORKER_CONNECTIONS.len());
    for (i, n) in crate::ws::WORKER_CONNECTIONS[..workers].iter().enumerate() {
        metrics::gauge!("herald_worker_connections", "worker" => i.to_string()).set(n.load(Ordering::Relaxed) as f64);
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(state.metrics.render())))
        .expect("valid response")
}

const METHODS: &[&str] = &[
    "publish",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "disconnect",
    "refresh",
    "presence",
    "presence_stats",
    "history",
    "history_remove",
    "channels",
    "info",
    "batch",
];

fn authorized(state: &AppState, req: &Request<Incoming>) -> bool {
    let cfg = &state.config.http_api;
    if cfg.insecure {
        return true;
    }
    if cfg.key.is_empty() {
        return false;
    }
    let key = cfg.key.as_bytes();
    let headers = req.headers();
    if headers.get("x-api-key").is_some_and(|v| constant_eq(v.as_bytes(), key)) {
        return true;
    }
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, value)) = v.split_once(' ')
        && scheme.eq_ignore_ascii_case("apikey")
        && constant_eq(value.trim().as_bytes(), key)
    {
        return true;
    }
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("api_key="))
        .any(|v| constant_eq(v.as_bytes(), key))
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

async fn api(state: &AppState, method: &str, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        // RFC 9110 §15.5.6: a 405 names the allowed methods.
        let mut response = transport_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        response.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return response;
    }
    if !authorized(state, &req) {
        return transport_error(StatusCode::UNAUTHORIZED, "unauthorized: missing or invalid API key");
    }
    if !METHODS.contains(&method) {
        return transport_error(StatusCode::NOT_FOUND, "unknown API method");
    }
    let transport = transport_mode(&req);
    let limit = state.config.http_api.max_body_size;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return transport_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Err(_) => return transport_error(StatusCode::BAD_REQUEST, "cannot read request body"),
    };
    let result = match call(state, method, &body).await {
        Ok(r) => r,
        Err(BadJson(msg)) => return transport_error(StatusCode::BAD_REQUEST, &format!("invalid request: {msg}")),
    };
    match result {
        // Batch answers `{"replies": [...]}` without a `result` wrapper, as Centrifugo does.
        Ok(value) if method == "batch" => json_response(StatusCode::OK, value.to_string().into_bytes()),
        Ok(value) => {
            let mut body = Vec::with_capacity(64);
            body.extend_from_slice(b"{\"result\":");
            serde_json::to_writer(&mut body, &value).expect("JSON values serialize");
            body.push(b'}');
            json_response(StatusCode::OK, body)
        }
        Err(e) if transport => json_response(
            error_status(e.code),
            json!({ "code": e.code, "message": api_message(e) }).to_string().into_bytes(),
        ),
        Err(e) => json_response(StatusCode::OK, json!({ "error": error_json(e) }).to_string().into_bytes()),
    }
}

fn api_message(e: ErrorCode) -> &'static str {
    if e.code == ERROR_METHOD_NOT_FOUND.code { "not found" } else { e.message }
}

fn error_json(e: ErrorCode) -> Value {
    json!({ "code": e.code, "message": api_message(e) })
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

/// The body is not valid JSON for the method (HTTP 400).
struct BadJson(String);

type ApiResult = Result<Value, ErrorCode>;

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadJson> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}" as &[u8] } else { body };
    // Fast path without path tracking; on failure parse again to name the bad field.
    serde_json::from_slice(body).map_err(|_| {
        let de = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Err(e) if e.path().to_string() != "." => BadJson(format!("{}: {}", e.path(), e.inner())),
            Err(e) => BadJson(e.inner().to_string()),
            Ok(_) => BadJson("invalid JSON".into()),
        }
    })
}

async fn call(state: &AppState, method: &str, body: &[u8]) -> Result<ApiResult, BadJson> {
    Ok(match method {
        "publish" => publish(state, parse(body)?).await,
        "broadcast" => broadcast(state, parse(body)?).await,
        "subscribe" => subscribe(state, parse(body)?),
        "unsubscribe" => unsubscribe(state, parse(body)?),
        "disconnect" => disconnect(state, parse(body)?),
        "refresh" => refresh(state, parse(body)?),
        "presence" => presence(state, parse(body)?).await,
        "presence_stats" => presence_stats(state, parse(body)?).await,
        "history" => history(state, parse(body)?).await,
        "history_remove" => history_remove(state, parse(body)?).await,
        "channels" => channels(state, parse(body)?),
        "info" => Ok(info(state)),
        "batch" => batch(state, parse(body)?).await,
        _ => Err(ERROR_METHOD_NOT_FOUND),
    })
}

/// Payload from `data` (raw JSON) or `b64data` (base64 bytes).
fn payload(data: &Option<Box<RawValue>>, b64data: &str) -> Result<Bytes, ErrorCode> {
    if let Some(raw) = data {
        return Ok(raw::json_payload(raw));
    }
    if !b64data.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64data)
            .map(Bytes::from)
            .map_err(|_| ERROR_BAD_REQUEST);
    }
    Ok(Bytes::new())
}

#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
struct PublishBody {
    channel: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
}

fn position_json(p: Option<StreamPosition>) -> Value {
    match p {
        Some(p) => json!({ "offset": p.offset, "epoch": p.epoch }),
        None => json!({}),
    }
}

/// The publish options shared by `publish` and `broadcast` bodies.
fn publish_request(
    data: &Option<Box<RawValue>>,
    b64data: &str,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
) -> Result<ApiPublish, ErrorCode> {
    Ok(ApiPublish { data: payload(data, b64data)?, skip_history, tags, idempotency_key, exclude_client })
}

async fn publish(state: &AppState, b: PublishBody) -> ApiResult {
    let req = publish_request(&b.data, &b.b64data, b.skip_history, b.tags, b.idempotency_key, b.exclude_client)?;
    let outcome = state.node.api_publish(&b.channel, &req).await?;
    Ok(position_json(outcome.position))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BroadcastBody {
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
}

async fn broadcast(state: &AppState, b: BroadcastBody) -> ApiResult {
    if b.channels.is_empty() {
        return Err(ERROR_BAD_REQUEST);
    }
    let req = publish_request(&b.data, &b.b64data, b.skip_history, b.tags, b.idempotency_key, b.exclude_client)?;
    if req.data.is_empty() {
        return Err(ERROR_BAD_REQUEST);
    }
    let mut responses = Vec::with_capacity(b.channels.len());
    for channel in &b.channels {
        responses.push(match state.node.api_publish(channel, &req).await {
            Ok(o) => json!({ "result": position_json(o.position) }),
            Err(e) => json!({ "error": error_json(e) }),
        });
    }
    Ok(json!({ "responses": responses }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SubscribeBody {
    user: String,
    channel: String,
    client: String,
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    recover_since: Option<StreamPosition>,
    expire_at: i64,
    #[serde(rename = "override")]
    override_: Override,
}

fn subscribe(state: &AppState, b: SubscribeBody) -> ApiResult {
    let sub = ServerSubscribe {
        channel: b.channel,
        info: payload(&b.info, &b.b64info)?,
        data: payload(&b.data, &b.b64data)?,
        recover_since: b.recover_since,
        expire_at: (b.expire_at > 0).then_some(b.expire_at),
        override_: b.override_,
    };
    state.node.api_subscribe(&Target { user: b.user, client: b.client }, sub)?;
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct UnsubscribeBody {
    user: String,
    channel: String,
    client: String,
}

fn unsubscribe(state: &AppState, b: UnsubscribeBody) -> ApiResult {
    state.node.api_unsubscribe(&Target { user: b.user, client: b.client }, &b.channel)?;
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectBody {
    user: String,
    client: String,
    whitelist: Vec<String>,
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectSpec {
    code: u32,
    reason: String,
}

fn disconnect(state: &AppState, b: DisconnectBody) -> ApiResult {
    let reason = match b.disconnect {
        None => DISCONNECT_FORCE_NO_RECONNECT,
        Some(d) => {
            // Must be a code a WebSocket close frame can carry, outside the reserved 3000.
            if !(3001..=4999).contains(&d.code) {
                return Err(ERROR_BAD_REQUEST);
            }
            DisconnectReason { code: d.code, reason: d.reason.into() }
        }
    };
    state.node.api_disconnect(&Target { user: b.user, client: b.client }, &b.whitelist, reason);
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RefreshBody {
    user: String,
    client: String,
    expired: bool,
    expire_at: Option<i64>,
    info: Option<Box<RawValue>>,
    b64info: String,
}

fn refresh(state: &AppState, b: RefreshBody) -> ApiResult {
    let info = payload(&b.info, &b.b64info)?;
    let info = (!info.is_empty()).then_some(info);
    state.node.api_refresh(&Target { user: b.user, client: b.client }, b.expired, b.expire_at, info);
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelBody {
    channel: String,
}

/// JSON for a ClientInfo in API answers: `conn_info`/`chan_info` as raw JSON when they are
/// JSON, otherwise base64 in `b64conn_info`/`b64chan_info`.
fn client_info_json(info: &ClientInfo) -> Value {
    let mut v = json!({ "user": info.user, "client": info.client });
    put_payload(&mut v, "conn_info", &info.conn_info);
    put_payload(&mut v, "chan_info", &info.chan_info);
    v
}

fn put_payload(v: &mut Value, key: &str, data: &Bytes) {
    if data.is_empty() {
        return;
    }
    let obj = v.as_object_mut().expect("object");
    match std::str::from_utf8(data).ok().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
        Some(parsed) => {
            obj.insert(key.to_owned(), parsed);
        }
        None => {
            obj.insert(format!("b64{key}"), Value::String(base64::engine::general_purpose::STANDARD.encode(data)));
        }
    }
}

async fn presence(state: &AppState, b: ChannelBody) -> ApiResult {
    let map = state.node.api_presence(&b.channel).await?;
    let presence: serde_json::Map<String, Value> = map.iter().map(|(k, v)| (k.clone(), client_info_json(v))).collect();
    Ok(json!({ "presence": presence }))
}

async fn presence_stats(state: &AppState, b: ChannelBody) -> ApiResult {
    let (clients, users) = state.node.api_presence_stats(&b.channel).await?;
    Ok(json!({ "num_clients": clients, "num_users": users }))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryBody {
    channel: String,
    limit: i64,
    since: Option<StreamPosition>,
    reverse: bool,
}

fn publication_json(p: &Publication) -> Value {
    let mut v = json!({});
    put_payload(&mut v, "data", &p.data);
    let obj = v.as_object_mut().expect("object");
    if let Some(info) = &p.info {
        obj.insert("info".into(), client_info_json(info));
    }
    if p.offset > 0 {
        obj.insert("offset".into(), json!(p.offset));
    }
    if !p.tags.is_empty() {
        obj.insert("tags".into(), json!(p.tags));
    }
    v
}

async fn history(state: &AppState, b: HistoryBody) -> ApiResult {
    let slice = state.node.api_history(&b.channel, b.limit, b.since, b.reverse).await?;
    let publications: Vec<Value> = slice.publications.iter().map(publication_json).collect();
    Ok(json!({ "publications": publications, "offset": slice.top.offset, "epoch": slice.top.epoch }))
}

async fn history_remove(state: &AppState, b: ChannelBody) -> ApiResult {
    state.node.api_history_remove(&b.channel).await?;
    Ok(json!({}))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChannelsBody {
    pattern: String,
}

fn channels(state: &AppState, b: ChannelsBody) -> ApiResult {
    let channels = state.node.api_channels(&b.pattern)?;
    let map: serde_json::Map<String, Value> =
        channels.into_iter().map(|(name, n)| (name, json!({ "num_clients": n }))).collect();
    Ok(json!({ "channels": map }))
}

#[derive(Serialize)]
struct NodeInfo<'a> {
    uid: &'a str,
    name: &'a str,
    version: &'a str,
    num_clients: usize,
    num_users: usize,
    num_channels: usize,
    num_subs: usize,
    #[serde(skip_serializing_if = "is_zero")]
    uptime: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn info(state: &AppState) -> Value {
    let id = state.node.identity();
    let stats = state.node.stats();
    let node = NodeInfo {
        uid: &id.uid,
        name: &id.name,
        version: &id.version,
        num_clients: stats.num_clients,
        num_users: stats.num_users,
        num_channels: stats.num_channels,
        num_subs: stats.num_subs,
        uptime: stats.uptime_secs,
    };
    json!({ "nodes": [node] })
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BatchBody {
    commands: Vec<serde_json::Map<String, Value>>,
    /// Accepted for compatibility; commands run in order either way.
    #[allow(dead_code)]
    parallel: bool,
}

async fn batch(state: &AppState, b: BatchBody) -> ApiResult {
    let mut replies = Vec::with_capacity(b.commands.len());
    for command in b.commands {
        let Some((method, params)) = command.into_iter().find(|(k, _)| METHODS.contains(&k.as_str()) && k != "batch")
        else {
            replies.push(json!({ "error": error_json(ERROR_METHOD_NOT_FOUND) }));
            continue;
        };
        let body = params.to_string();
        let reply = match Box::pin(call(state, &method, body.as_bytes())).await {
            Ok(Ok(result)) => json!({ method: result }),
            Ok(Err(e)) => json!({ "error": error_json(e) }),
            Err(BadJson(_)) => json!({ "error": error_json(ERROR_BAD_REQUEST) }),
        };
        replies.push(reply);
    }
    Ok(json!({ "replies": replies }))
}
