//! OpenTelemetry span export over OTLP/HTTP (protobuf), built with the `otlp` cargo feature and
//! turned on by `opentelemetry.enabled`: a server span per server API call
//! (`opentelemetry.api`) and a client span per logic-layer proxy call (`opentelemetry.proxy`),
//! each continuing the caller's W3C `traceparent`.
//!
//! The collector is named by the standard variables (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, default `http://localhost:4318/v1/traces`), and batching by
//! `OTEL_BSP_*`, read by the OpenTelemetry SDK. Spans are batched by the SDK's own thread; the
//! HTTP requests run on a one-thread runtime of their own ("herald-otlp"), so an export never
//! waits for a busy worker and shutdown can flush from any thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::OpenTelemetryConfig;

/// A collector's answer larger than this is an error (it should be a few bytes).
const MAX_RESPONSE: usize = 64 * 1024;
/// One export request, connection included.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last spans to leave.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

struct Otlp {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    api: bool,
    proxy: bool,
}

static OTLP: OnceLock<Otlp> = OnceLock::new();

/// The exporter's HTTP client: hyper, driven by the exporter's own runtime.
#[derive(Debug)]
struct ExportClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient for ExportClient {
    // The trait is declared with `async_trait`; this is the signature it expands to.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        // Spawned on the exporter's runtime: the SDK polls this future from its batch thread,
        // which has no reactor.
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let request = hyper::Request::from_parts(parts, Full::new(body));
            let exchange = async {
                let response = client.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(EXPORT_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(HttpError::from("OTLP export timed out")),
            }
        });
        Box::pin(async move { task.await.map_err(|e| HttpError::from(e.to_string()))? })
    }
}

/// Starts the exporter when `opentelemetry.enabled` (once per process; a reload does not
/// change it). Errors name what failed, for the start-up message.
pub fn init(cfg: &OpenTelemetryConfig) -> Result<(), String> {
    if !cfg.enabled || OTLP.get().is_some() {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the OTLP runtime: {e}"))?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("herald-otlp".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))
        .map_err(|e| format!("cannot start the OTLP thread: {e}"))?;
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_http_client(ExportClient { runtime: handle, client })
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot build the OTLP span exporter: {e}"))?;
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource("herald")).build();
    let tracer = provider.tracer("herald");
    let _ = OTLP.set(Otlp { provider, tracer, api: cfg.api, proxy: cfg.proxy });
    tracing::info!(api = cfg.api, proxy = cfg.proxy, "OpenTelemetry span export (OTLP/HTTP) on");
    Ok(())
}

/// The SDK's resource (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`), named `service`
/// unless `OTEL_SERVICE_NAME` names it.
fn resource(service: &str) -> Resource {
    let builder = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder.build()
    } else {
        builder.with_service_name(service.to_owned()).build()
    }
}

/// Sends the spans still batched; called once at shutdown.
pub fn shutdown() {
    if let Some(otlp) = OTLP.get()
        && let Err(e) = otlp.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT)
    {
        tracing::warn!(error = %e, "OTLP spans not all sent at shutdown");
    }
}

/// The caller's context from a `traceparent` header (none, or an invalid one: a new trace).
fn parent(traceparent: Option<&str>) -> Context {
    let Some(value) = traceparent else { return Context::new() };
    let Some((trace, flags)) = crate::proxy::parse_traceparent(value) else { return Context::new() };
    // parse_traceparent checked the layout: the parent id is the third field.
    let parent = value.trim().split('-').nth(2).unwrap_or_default();
    let (Ok(trace), Ok(span), Ok(flags)) =
        (TraceId::from_hex(trace), SpanId::from_hex(parent), u8::from_str_radix(flags, 16))
    else {
        return Context::new();
    };
    let remote = SpanContext::new(trace, span, TraceFlags::new(flags), true, TraceState::default());
    Context::new().with_remote_span_context(remote)
}

/// A span being recorded (ended when dropped if [`ApiSpan::end`] was not called).
pub struct ApiSpan(opentelemetry_sdk::trace::Span);

/// Starts the server span of an API call when API spans are exported.
pub fn api_span(method: &'static str, traceparent: Option<&str>) -> Option<ApiSpan> {
    let otlp = OTLP.get().filter(|o| o.api)?;
    let span = otlp
        .tracer
        .span_builder(format!("api {method}"))
        .with_kind(SpanKind::Server)
        .with_attributes([KeyValue::new("herald.api.method", method)])
        .start_with_context(&otlp.tracer, &parent(traceparent));
    Some(ApiSpan(span))
}

impl ApiSpan {
    /// Ends the span with the call's HTTP status and, for an error answer, its protocol code.
    pub fn end(mut self, status: u16, code: Option<u32>) {
        self.0.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if let Some(code) = code {
            self.0.set_attribute(KeyValue::new("herald.error_code", i64::from(code)));
            self.0.set_status(Status::error(format!("error {code}")));
        } else if status >= 400 {
            self.0.set_status(Status::error(format!("HTTP {status}")));
        }
        self.0.end();
    }
}

/// The client span of a proxy call when proxy spans are exported, and the `traceparent` the
/// backend gets: this span as its parent, so the backend's spans join the trace under it.
pub fn proxy_span(kind: &'static str, proxy: &str, traceparent: Option<&str>) -> Option<(ProxySpan, String)> {
    let otlp = OTLP.get().filter(|o| o.proxy)?;
    let span = otlp
        .tracer
        .span_builder(format!("proxy {kind}"))
        .with_kind(SpanKind::Client)
        .with_attributes([KeyValue::new("herald.proxy.kind", kind), KeyValue::new("herald.proxy", proxy.to_owned())])
        .start_with_context(&otlp.tracer, &parent(traceparent));
    let cx = span.span_context();
    let sent = format!("00-{}-{}-{:02x}", cx.trace_id(), cx.span_id(), cx.trace_flags().to_u8());
    Some((ProxySpan(Some(span)), sent))
}

/// A proxy call's span. A call cut by its timeout is dropped before it ends: the span then ends
/// with the outcome `timeout`.
pub struct ProxySpan(Option<opentelemetry_sdk::trace::Span>);

impl ProxySpan {
    /// Ends the span with the call's outcome (`ok`, `status`, `unavailable`, ...).
    pub fn end(mut self, outcome: &'static str) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: &'static str) {
        let Some(mut span) = self.0.take() else { return };
        span.set_attribute(KeyValue::new("herald.proxy.outcome", outcome));
        if outcome != "ok" {
            span.set_status(Status::error(outcome));
        }
        span.end();
    }
}

impl Drop for ProxySpan {
    fn drop(&mut self) {
        self.finish("timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_becomes_the_remote_parent() {
        let cx = parent(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_remote());
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
    }

    #[test]
    fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
        for value in [None, Some("garbage"), Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")] {
            assert!(!parent(value).has_active_span(), "{value:?}");
        }
    }
}
