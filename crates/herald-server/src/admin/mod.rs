//! The admin console at `admin.handler_prefix` (off by default): the embedded page and its
//! script and style, the login (password → signed session cookie), and the console's JSON
//! endpoints. Every action goes through the server API's one method table
//! ([`crate::api::methods::METHODS`]), after the session and CSRF checks here.
//!
//! Paths under the prefix `P` (empty: `/`):
//! - `P/`, `P/app.js`, `P/app.css`: the console (no external resources);
//! - `POST P/admin/login` `{"password"}`: sets the session cookie, answers `{csrf, expires}`;
//!   a wrong password waits [`FAILURE_DELAY`] and counts against `admin.login_failures_per_minute`;
//! - `POST P/admin/logout`; `GET P/admin/session`: `{csrf, expires}` of the current session;
//! - `POST P/admin/api/<method>`: a server API method (session cookie, `X-Herald-CSRF` and a
//!   same-origin `Origin` required);
//! - `GET P/admin/trace`: trace lines as Server-Sent Events (see [`trace`]).

pub mod auth;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::api::{self, Body, transport_error};
use crate::config::Config;
use crate::config_error::ConfigError;
use crate::state::AppState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// How long a wrong password waits before its answer.
pub const FAILURE_DELAY: Duration = Duration::from_millis(400);
/// How long a trace read waits for a new line.
pub const TRACE_WAIT: Duration = Duration::from_secs(10);
/// Most trace lines in one answer.
const TRACE_BATCH: usize = 500;
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-herald-csrf";

/// The console's state.
pub struct Admin {
    keys: auth::Keys,
    failures: Mutex<auth::Failures>,
    insecure: bool,
}

impl Admin {
    /// The console, when `admin.enabled`.
    pub fn new(config: &Config) -> Option<Admin> {
        let cfg = &config.admin;
        if !cfg.enabled {
            return None;
        }
        let secret = if cfg.secret.is_empty() {
            // `admin.insecure` without a secret: CSRF tokens still need a key.
            rand::random::<[u8; 32]>().to_vec()
        } else {
            cfg.secret.as_bytes().to_vec()
        };
        if cfg.insecure {
            tracing::warn!(
                "admin.insecure is on: the admin console at {:?} needs no login and can publish, disconnect \
                 and trace users; use it only on a trusted development machine",
                base(config).to_owned() + "/"
            );
        }
        Some(Admin {
            keys: auth::Keys::new(&secret, &cfg.password),
            failures: Mutex::new(auth::Failures::default()),
            insecure: cfg.insecure,
        })
    }
}

/// Refuses a console that would be open by mistake, and bad limits.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    let a = &cfg.admin;
    if !a.handler_prefix.is_empty() && !a.handler_prefix.starts_with('/') {
        return Err(ConfigError::invalid(
            "admin.handler_prefix",
            format!("{:?} must start with '/'", a.handler_prefix),
        ));
    }
    if !a.enabled {
        return Ok(());
    }
    if !a.insecure {
        for (key, value) in [("admin.password", &a.password), ("admin.secret", &a.secret)] {
            if value.is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "required when admin.enabled is on (or turn on admin.insecure, for development only)",
                ));
            }
        }
    }
    for (key, value) in [("admin.session_ttl", a.session_ttl), ("admin.trace_max_duration", a.trace_max_duration)] {
        if value.as_secs() == 0 {
            return Err(ConfigError::invalid(key, "must be at least 1s"));
        }
    }
    if a.login_failures_per_minute == 0 {
        return Err(ConfigError::invalid("admin.login_failures_per_minute", "must be at least 1"));
    }
    let api = cfg.http_api.handler_prefix.trim_end_matches('/');
    if !cfg.http_api.disabled && base(cfg) == api {
        return Err(ConfigError::invalid(
            "admin.handler_prefix",
            format!("{api:?} is already used by http_api.handler_prefix"),
        ));
    }
    Ok(())
}

fn base(cfg: &Config) -> &str {
    cfg.admin.handler_prefix.trim_end_matches('/')
}

/// The part of `path` under the console's prefix (`""` for the prefix itself), when the
/// console is on and `path` is under it.
pub fn subpath<'a>(cfg: &Config, path: &'a str) -> Option<&'a str> {
    if !cfg.admin.enabled {
        return None;
    }
    let rest = path.strip_prefix(base(cfg))?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// The process's resident memory in bytes (Linux `VmRSS`; 0 where unknown), for the dashboard
/// and the `info` API.
pub fn rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) * 1024
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn counted_login(result: &'static str) {
    metrics::counter!("herald_admin_logins_total", "result" => result).increment(1);
}

/// Answers a request under the console's prefix (`rest`: the path after it).
pub async fn handle(state: &AppState, req: Request<Incoming>, peer: SocketAddr, rest: &str) -> Response<Body> {
    let Some(admin) = state.admin.as_ref() else {
        return transport_error(StatusCode::NOT_FOUND, "not found");
    };
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match rest {
        "" => redirect(&(base(&state.config).to_owned() + "/")),
        "/" | "/index.html" if get => asset(INDEX, "text/html; charset=utf-8"),
        "/app.js" if get => asset(SCRIPT, "text/javascript; charset=utf-8"),
        "/app.css" if get => asset(STYLE, "text/css; charset=utf-8"),
        "/admin/login" => match post_only(&req) {
            Some(refused) => refused,
            None => login(state, admin, req, peer).await,
        },
        "/admin/logout" => match post_only(&req).or_else(|| same_origin(&req).err().map(refuse)) {
            Some(refused) => refused,
            None => logout(state),
        },
        "/admin/session" => match session(admin, &req) {
            Ok(s) => json(StatusCode::OK, &session_answer(admin, &s)),
            Err(refused) => refuse(refused),
        },
        "/admin/trace" if get => match session(admin, &req) {
            Ok(_) => trace(state, &req).await,
            Err(refused) => refuse(refused),
        },
        _ if rest.starts_with("/admin/api/") => {
            if let Some(refused) = post_only(&req) {
                return refused;
            }
            if let Err(refused) = session(admin, &req).and_then(|s| csrf(admin, &s, &req)) {
                return refuse(refused);
            }
            if let Err(refused) = same_origin(&req) {
                return refuse(refused);
            }
            call(state, &rest["/admin/api/".len()..], req, peer).await
        }
        _ => transport_error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The page and its parts: no caching (a new binary may serve a new console), and a policy
/// that allows only this origin's script and style.
fn asset(text: &'static str, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = transport_error(status, "");
    *response.body_mut() = Full::new(Bytes::from(value.to_string()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn post_only(req: &Request<Incoming>) -> Option<Response<Body>> {
    (req.method() != Method::POST).then(|| {
        let mut response = transport_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        response
    })
}

/// An action must come from a page of this origin: its `Origin` names the host it was sent to.
/// Why a console request is refused: its status and message.
type Refused = (StatusCode, &'static str);

fn refuse((status, message): Refused) -> Response<Body> {
    transport_error(status, message)
}

fn same_origin(req: &Request<Incoming>) -> Result<(), Refused> {
    let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let Some(origin) = header(header::ORIGIN) else {
        return Err((StatusCode::FORBIDDEN, "forbidden: the Origin header is required"));
    };
    let host = header(header::HOST).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    if host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
        return Err((StatusCode::FORBIDDEN, "forbidden: cross-origin request"));
    }
    Ok(())
}

/// The request's session, or the 401 that says why there is none.
fn session(admin: &Admin, req: &Request<Incoming>) -> Result<auth::Session, Refused> {
    if admin.insecure {
        return Ok(auth::Session { nonce: "insecure".into(), expires_ms: i64::MAX });
    }
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| auth::cookie(h, auth::COOKIE));
    let Some(cookie) = cookie else {
        return Err((StatusCode::UNAUTHORIZED, "unauthorized: log in first"));
    };
    admin.keys.verify(cookie, now_ms()).map_err(|why| (StatusCode::UNAUTHORIZED, why))
}

fn csrf(admin: &Admin, session: &auth::Session, req: &Request<Incoming>) -> Result<(), Refused> {
    let token = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if admin.keys.csrf_matches(session, token) {
        Ok(())
    } else {
        Err((StatusCode::FORBIDDEN, "forbidden: missing or wrong X-Herald-CSRF token"))
    }
}

fn session_answer(admin: &Admin, s: &auth::Session) -> serde_json::Value {
    let expires = if admin.insecure { 0 } else { s.expires_ms };
    json!({ "csrf": admin.keys.csrf(s), "expires": expires, "insecure": admin.insecure })
}

async fn body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Body>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(transport_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))
        }
        Err(_) => Err(transport_error(StatusCode::BAD_REQUEST, "cannot read request body")),
    }
}

async fn login(state: &AppState, admin: &Admin, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if let Err(refused) = same_origin(&req) {
        return refuse(refused);
    }
    let cfg = &state.config.admin;
    let limit = cfg.login_failures_per_minute;
    if !admin.failures.lock().expect("login failures").allowed(peer.ip(), limit, now_ms()) {
        counted_login("limited");
        let mut response = transport_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address (admin.login_failures_per_minute): wait a minute",
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return response;
    }
    let secure = state.tls.is_some();
    let body = match body(req, 4096).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    #[derive(Deserialize)]
    struct Login {
        password: String,
    }
    let Ok(Login { password }) = serde_json::from_slice::<Login>(&body) else {
        return transport_error(StatusCode::BAD_REQUEST, r#"invalid login: send {"password": "..."}"#);
    };
    if admin.insecure {
        return json(
            StatusCode::OK,
            &session_answer(admin, &auth::Session { nonce: "insecure".into(), expires_ms: 0 }),
        );
    }
    if !admin.keys.password_matches(&password) {
        admin.failures.lock().expect("login failures").failed(peer.ip(), now_ms());
        counted_login("wrong_password");
        tracing::warn!(peer = %peer, "admin console: wrong password");
        tokio::time::sleep(FAILURE_DELAY).await;
        return transport_error(StatusCode::UNAUTHORIZED, "unauthorized: wrong password");
    }
    admin.failures.lock().expect("login failures").succeeded(peer.ip());
    counted_login("ok");
    let ttl = cfg.session_ttl;
    let expires_ms = now_ms() + ttl.as_millis() as i64;
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let cookie = admin.keys.issue(&nonce, expires_ms);
    let mut response = json(StatusCode::OK, &session_answer(admin, &auth::Session { nonce, expires_ms }));
    let attributes = cookie_attributes(state, ttl.as_secs(), secure);
    if let Ok(v) = HeaderValue::from_str(&format!("{}={cookie}; {attributes}", auth::COOKIE)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    tracing::info!(peer = %peer, "admin console: logged in");
    response
}

fn cookie_attributes(state: &AppState, max_age: u64, secure: bool) -> String {
    let path = base(&state.config).to_owned() + "/";
    let secure = if secure { "; Secure" } else { "" };
    format!("Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

fn logout(state: &AppState) -> Response<Body> {
    let mut response = json(StatusCode::OK, &json!({}));
    let attributes = cookie_attributes(state, 0, state.tls.is_some());
    if let Ok(v) = HeaderValue::from_str(&format!("{}=; {attributes}", auth::COOKIE)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// A server API method, run as `/api/<method>` runs it.
async fn call(state: &AppState, name: &str, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let Some(method) = api::methods::find(name) else {
        return transport_error(StatusCode::NOT_FOUND, &format!("unknown API method `{}`", api::methods::Short(name)));
    };
    let body = match body(req, state.config.http_api.max_body_size).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let (response, tally) = api::run(state, method, &body, peer, false).await;
    api::api_metric(method.name, response.status().as_u16(), tally);
    response
}

/// Trace lines as Server-Sent Events: the lines after the request's `Last-Event-ID` (or
/// `?after=`), each an event `line` with its sequence as the event id, then an event `traces`
/// listing the running traces. The response ends as soon as it has lines, or after
/// [`TRACE_WAIT`]; `retry` makes the browser's EventSource reconnect at once with the last id,
/// so the console follows the stream without a long-lived response (hyper's bodies here are
/// whole buffers).
async fn trace(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    let from_header = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let from_query = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok());
    let after: u64 = from_header.or(from_query).unwrap_or(0);
    let tracer = state.node.hub().tracer();
    let deadline = tokio::time::Instant::now() + TRACE_WAIT;
    let (lines, newest) = loop {
        let (lines, newest) = tracer.lines_after(after, TRACE_BATCH);
        let done = !lines.is_empty()
            || after > newest
            || tokio::time::Instant::now() >= deadline
            || state.shutting_down.load(std::sync::atomic::Ordering::Relaxed);
        if done {
            break (lines, newest);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut out = String::from("retry: 250\n\n");
    for line in &lines {
        let data = serde_json::to_string(line).expect("trace lines serialize");
        out.push_str(&format!("id: {}\nevent: line\ndata: {data}\n\n", line.seq));
    }
    let traces: Vec<_> =
        tracer.traced().into_iter().map(|(user, until)| json!({"user": user, "until": until})).collect();
    // `after` past the newest line: the ring was renumbered by a restart; start over from it.
    let reset = if after > newest { format!("id: {newest}\n") } else { String::new() };
    out.push_str(&format!("{reset}event: traces\ndata: {}\n\n", json!(traces)));
    let mut response = Response::new(Full::new(Bytes::from(out)));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
