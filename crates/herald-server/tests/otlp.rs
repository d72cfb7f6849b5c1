//! OpenTelemetry span export (built with `--features otlp`): a small OTLP/HTTP collector in the
//! test (a hyper server recording `POST /v1/traces` protobuf bodies) receives the server span
//! of an API publish carrying the trace id and parent of the `traceparent` sent, and the client
//! span of a connect proxy call whose id is the parent the backend got.
#![cfg(feature = "otlp")]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;
use support::backend::Backend;
use support::*;
use tokio::net::TcpListener;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// Every span the collector received, with the path it was posted to.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    async fn start() -> (Collector, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let c = collector.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let c = c.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let c = c.clone();
                        async move {
                            c.paths.lock().unwrap().push(req.uri().path().to_owned());
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            if let Ok(export) = ExportTraceServiceRequest::decode(body) {
                                let spans =
                                    export.resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
                                c.spans.lock().unwrap().extend(spans);
                            }
                            // An empty ExportTraceServiceResponse: everything accepted.
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, addr)
    }

    fn find(&self, name: &str) -> Option<Span> {
        self.spans.lock().unwrap().iter().find(|s| s.name == name).cloned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn api_and_proxy_spans_reach_the_collector_with_the_callers_trace() {
    let (collector, at) = Collector::start().await;
    let backend = Backend::start();
    let endpoint = format!("http://{at}/v1/traces");
    let connect = backend.url("/connect");
    let h = Herald::start(&[
        ("HERALD_OPENTELEMETRY_ENABLED", "true"),
        ("HERALD_OPENTELEMETRY_API", "true"),
        ("HERALD_OPENTELEMETRY_PROXY", "true"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
        // Batches leave every 100 ms instead of every 5 s: the test waits less.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("HERALD_CLIENT_PROXY_CONNECT_ENABLED", "true"),
        ("HERALD_CLIENT_PROXY_CONNECT_ENDPOINT", &connect),
        ("HERALD_CLIENT_PROXY_CONNECT_TIMEOUT", "2s"),
    ]);
    let traceparent = format!("00-{TRACE}-{PARENT}-01");

    // An API publish carrying the caller's trace.
    let headers = [("X-API-Key", API_KEY), ("traceparent", traceparent.as_str()), ("Content-Type", "application/json")];
    let resp = h.http("POST", "/api/publish", &headers, br#"{"channel":"news","data":{"n":1}}"#).await;
    assert_eq!(resp.status, 200, "{}", resp.text());

    // A connect through the proxy, from a connection carrying the same trace.
    let mut ws = RawWs::open(h.addr, WS_PATH, &[("traceparent", traceparent.as_str())]).await;
    ws.send_json(&json!({"id": 1, "connect": {"data": {"action": "allow", "user": "alice"}}})).await;
    let reply = ws.recv_json().await;
    assert!(reply[0]["connect"]["client"].is_string(), "{reply:?}");
    let sent = backend.requests_to("/connect").await[0]["headers"]["traceparent"].as_str().unwrap().to_owned();

    wait_for("the API and proxy spans at the collector", Duration::from_secs(10), || async {
        collector.find("api publish").is_some() && collector.find("proxy connect").is_some()
    })
    .await;
    assert!(collector.paths.lock().unwrap().iter().all(|p| p == "/v1/traces"));

    let api = collector.find("api publish").unwrap();
    assert_eq!(hex(&api.trace_id), TRACE, "the caller's trace is continued");
    assert_eq!(hex(&api.parent_span_id), PARENT, "under the caller's span");
    assert_eq!(api.kind, 2, "a server span");
    let status = api.attributes.iter().find(|a| a.key == "http.response.status_code").and_then(|a| a.value.clone());
    assert_eq!(status.and_then(|v| v.value), Some(AnyValue::IntValue(200)), "{api:?}");

    let proxy = collector.find("proxy connect").unwrap();
    assert_eq!(hex(&proxy.trace_id), TRACE);
    assert_eq!(hex(&proxy.parent_span_id), PARENT, "under the connection's traceparent");
    assert_eq!(proxy.kind, 3, "a client span");
    assert_eq!(sent, format!("00-{TRACE}-{}-01", hex(&proxy.span_id)), "the backend's parent is the proxy span");
}
