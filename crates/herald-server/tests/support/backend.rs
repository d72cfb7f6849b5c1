//! The test backend of the logic-layer proxy and webhook tests: a real HTTP/1.1 server (hyper)
//! on its own loopback port, thread and runtime, stopped when dropped. It implements every
//! proxy endpoint and the webhook endpoint, records every request (path, lower-case headers,
//! JSON body) so tests can assert the exact bodies, and answers by a word in the request: the
//! connect data's `action`, the user (refresh), the channel (subscribe, publish, sub_refresh)
//! or the method (rpc):
//!
//! - `deny`: `{"error": {"code": 1001, "message": "denied by backend"}}`;
//! - `disconnect`: `{"disconnect": {"code": 4501, "reason": "backend says bye"}}`;
//! - `slow`: waits 3 s, then allows; `fail`: HTTP 500; `garbage`: 200 with a body that is not
//!   JSON; otherwise allowed, with a result described per endpoint below.
//!
//! The webhook endpoint (`/webhook`) answers as [`Backend::set_webhook_mode`] says: normally,
//! with 500, with garbage, or never (the request hangs). [`Backend::start_at`] and dropping
//! the backend give a backend that is not there, then comes back on the same port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch;

/// How the webhook endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Fail,
    Garbage,
    Hang,
}

#[derive(Default)]
struct Shared {
    records: Mutex<Vec<Value>>,
    webhook: Mutex<Option<Mode>>,
}

pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    /// A backend on a free loopback port.
    pub fn start() -> Backend {
        Backend::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A backend on `addr` (port 0: any free port).
    pub fn start_at(addr: SocketAddr) -> Backend {
        let listener = std::net::TcpListener::bind(addr).expect("bind the test backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared::default());
        let (stop, mut stopped) = watch::channel(false);
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = stopped.changed() => break,
                    };
                    let Ok((socket, _)) = accepted else { continue };
                    let state = state.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| handle(state.clone(), req));
                        let _ = http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
                    });
                }
            });
            // Dropping the runtime cancels the open connections, hanging answers included.
        });
        Backend { addr, shared, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request received so far: `{"path", "headers" (lower-case names), "body"}`.
    pub async fn requests(&self) -> Vec<Value> {
        self.shared.records.lock().unwrap().clone()
    }

    /// The requests received on `path`.
    pub async fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests().await.into_iter().filter(|r| r["path"] == path).collect()
    }

    /// How `/webhook` answers from now on.
    pub fn set_webhook_mode(&self, mode: Mode) {
        *self.shared.webhook.lock().unwrap() = Some(mode);
    }

    /// The events of every webhook batch answered 200, in arrival order.
    pub fn webhook_events(&self) -> Vec<Value> {
        let records = self.shared.records.lock().unwrap();
        records
            .iter()
            .filter(|r| r["path"] == "/webhook" && r["answered"] == true)
            .flat_map(|r| r["body"]["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Answer = (StatusCode, Option<Value>);

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn decide(word: &str, allow: impl FnOnce() -> Value) -> Answer {
    if word.contains("deny") {
        return (StatusCode::OK, Some(json!({"error": {"code": 1001, "message": "denied by backend"}})));
    }
    if word.contains("disconnect") {
        return (StatusCode::OK, Some(json!({"disconnect": {"code": 4501, "reason": "backend says bye"}})));
    }
    if word.contains("slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if word.contains("fail") {
        return (StatusCode::INTERNAL_SERVER_ERROR, Some(json!({"error": "internal"})));
    }
    if word.contains("garbage") {
        return (StatusCode::OK, None);
    }
    (StatusCode::OK, Some(allow()))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

async fn connect(body: &Value) -> Answer {
    let data = body["data"].clone();
    decide(text(&data, "action"), || {
        let mut result = json!({
            "user": data.get("user").cloned().unwrap_or(json!("proxy-user")),
            "info": {"from": "connect-proxy"},
            "data": {"welcome": true},
            "meta": {"tenant": "t1"},
        });
        if let Some(ttl) = data["expire_in"].as_i64() {
            result["expire_at"] = json!(now_secs() + ttl);
        }
        if let Some(channels) = data.get("channels") {
            result["channels"] = channels.clone();
        }
        json!({"result": result})
    })
    .await
}

fn refresh(body: &Value) -> Answer {
    let user = text(body, "user");
    if user.contains("refreshexpire") {
        return (StatusCode::OK, Some(json!({"result": {"expired": true}})));
    }
    if user.contains("refreshfail") {
        return (StatusCode::INTERNAL_SERVER_ERROR, Some(json!({"error": "down"})));
    }
    (StatusCode::OK, Some(json!({"result": {"expire_at": now_secs() + 60, "info": {"refreshed": true}}})))
}

async fn subscribe(body: &Value) -> Answer {
    let channel = text(body, "channel");
    decide(channel, || {
        let mut result = json!({"info": {"sub": "proxy"}, "data": {"hello": channel}});
        if channel.contains("expiring") {
            result["expire_at"] = json!(now_secs() + 2);
        }
        json!({"result": result})
    })
    .await
}

async fn publish(body: &Value) -> Answer {
    let channel = text(body, "channel");
    decide(channel, || {
        if channel.contains("replace") {
            json!({"result": {"data": {"replaced": true}}})
        } else if channel.contains("skiphist") {
            json!({"result": {"skip_history": true}})
        } else {
            json!({"result": {}})
        }
    })
    .await
}

fn sub_refresh(body: &Value) -> Answer {
    if text(body, "channel").contains("srdown") {
        return (StatusCode::INTERNAL_SERVER_ERROR, Some(json!({"error": "down"})));
    }
    (StatusCode::OK, Some(json!({"result": {"expire_at": now_secs() + 60}})))
}

async fn rpc(body: &Value) -> Answer {
    let method = text(body, "method");
    decide(method, || {
        if method.contains("whoami") {
            json!({"result": {"data": {"user": body.get("user"), "meta": body.get("meta")}}})
        } else if method.contains("b64") {
            json!({"result": {"b64data": "AAEC"}})
        } else {
            json!({"result": {"data": {"echo": body.get("data"), "method": method}}})
        }
    })
    .await
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("a response")
}

async fn handle(state: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if req.method() == hyper::Method::GET {
        let records = state.records.lock().unwrap().clone();
        return Ok(if path == "/_requests" {
            reply(StatusCode::OK, Bytes::from(Value::Array(records).to_string()))
        } else {
            reply(StatusCode::NOT_FOUND, Bytes::from_static(br#"{"error":"not found"}"#))
        });
    }
    let headers: serde_json::Map<String, Value> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("")))).collect();
    let raw = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&raw)
        .unwrap_or_else(|_| json!({"unparsable": String::from_utf8_lossy(&raw).into_owned()}));
    let webhook = if path == "/webhook" { Some(state.webhook.lock().unwrap().unwrap_or(Mode::Ok)) } else { None };
    // A webhook batch counts as delivered when answered 200, whatever the body.
    let answered = matches!(webhook, Some(Mode::Ok | Mode::Garbage));
    state.records.lock().unwrap().push(json!({"path": path, "headers": headers, "body": body, "answered": answered}));
    let (status, payload) = match (path.as_str(), webhook) {
        (_, Some(Mode::Ok)) => (StatusCode::OK, Some(json!({}))),
        (_, Some(Mode::Fail)) => (StatusCode::INTERNAL_SERVER_ERROR, Some(json!({"error": "down"}))),
        (_, Some(Mode::Garbage)) => (StatusCode::OK, None),
        (_, Some(Mode::Hang)) => std::future::pending().await,
        ("/connect", _) => connect(&body).await,
        ("/refresh", _) => refresh(&body),
        ("/subscribe", _) => subscribe(&body).await,
        ("/publish" | "/named/publish", _) => publish(&body).await,
        ("/sub_refresh", _) => sub_refresh(&body),
        ("/rpc" | "/named/rpc", _) => rpc(&body).await,
        _ => (StatusCode::NOT_FOUND, Some(json!({"error": "no such endpoint"}))),
    };
    Ok(match payload {
        Some(v) => reply(status, Bytes::from(v.to_string())),
        None => reply(status, Bytes::from_static(b"this is not json")),
    })
}
