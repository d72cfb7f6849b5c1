//! The test upstream of the gateway-route tests: a hyper HTTP/1.1 server on its own free
//! loopback port, in the test's runtime. It records every request it serves (method, path with
//! query, headers, body) and answers by the path:
//!
//! - `.../health`: 200, or 503 while [`Upstream::set_healthy`] is false (not recorded);
//! - `.../slow?ms=N`: after N ms; a call dropped before that (its connection closed by the
//!   caller) is counted by [`Upstream::cancelled`];
//! - `.../fail`: 500;
//! - `.../stream`: a chunked body, `first\n`, then `last\n` 400 ms later;
//! - anything else: 200 `{"upstream": name, "path": ..., "body": ...}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

#[derive(Debug, Clone)]
pub struct Record {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    name: String,
    records: Mutex<Vec<Record>>,
    sick: AtomicBool,
    cancelled: AtomicUsize,
    health_checks: AtomicUsize,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { name: name.into(), ..Default::default() });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| serve(shared.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Upstream { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn records(&self) -> Vec<Record> {
        self.shared.records.lock().unwrap().clone()
    }

    pub fn served(&self) -> usize {
        self.shared.records.lock().unwrap().len()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.shared.sick.store(!healthy, Ordering::SeqCst);
    }

    pub fn cancelled(&self) -> usize {
        self.shared.cancelled.load(Ordering::SeqCst)
    }

    pub fn health_checks(&self) -> usize {
        self.shared.health_checks.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counts a slow call dropped before it answered.
struct Pending(Arc<Shared>, bool);

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Reply = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Reply>, Infallible> {
    let target = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let path = req.uri().path().to_owned();
    if path.ends_with("/health") {
        shared.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = if shared.sick.load(Ordering::SeqCst) { 503 } else { 200 };
        return Ok(full(status, "{}".into()));
    }
    let method = req.method().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let query = req.uri().query().unwrap_or("").to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
    shared.records.lock().unwrap().push(Record { method, target: target.clone(), headers, body: body.clone() });
    if path.contains("/slow") {
        let ms = query.split('&').find_map(|kv| kv.strip_prefix("ms=")).and_then(|v| v.parse().ok()).unwrap_or(1000);
        let mut pending = Pending(shared.clone(), false);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        pending.1 = true;
    }
    if path.contains("/fail") {
        return Ok(full(500, json!({"error": "failing on purpose"}).to_string()));
    }
    if path.contains("/stream") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"first\n")))).await;
            tokio::time::sleep(Duration::from_millis(400)).await;
            let _ = tx.send(Ok(Frame::data(Bytes::from_static(b"last\n")))).await;
        });
        let stream = tokio_stream_from(rx);
        let mut response = Response::new(StreamBody::new(stream).boxed());
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok(full(200, json!({"upstream": shared.name, "path": target, "body": text}).to_string()))
}

fn full(status: u16, body: String) -> Response<Reply> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    response
}

/// An mpsc receiver as a stream of frames.
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
