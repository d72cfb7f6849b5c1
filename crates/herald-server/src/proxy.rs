//! The HTTP client of the logic-layer proxies: implements `herald_hub::proxy::ProxyPort` with
//! hyper's pooled keep-alive client (`http://`, or `https://` with HTTP/2 when the backend
//! offers it: [`crate::outbound`]). Every call is a `POST` of JSON with the proxy's static
//! headers, the forwarded client headers, `X-Forwarded-For` and a W3C `traceparent` (continued
//! from the client's when it sent one, else new), bounded by the proxy's `timeout` as a whole
//! (connect, request and answer) and by its `max_response_size`.
//!
//! Metrics, per proxy (`proxy`: the event for the default proxies, the name for `proxies[]`)
//! and event (`kind`): `herald_proxy_requests_total{outcome}` (`ok`, `timeout`, `unavailable`,
//! `status`, `too_large`) and the `herald_proxy_duration_seconds` histogram.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_hub::broker::BoxFuture;
use herald_hub::proxy::{ProxyFailure, ProxyKind, ProxyPort, ProxyRequest, ProxySpec};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics::{Counter, Histogram};
use rand::Rng;

use crate::config_error::ConfigError;
use crate::state::LogThrottle;

/// The latency histogram's name and buckets (seconds): backends answer in milliseconds, the
/// default timeout is one second.
pub const DURATION_METRIC: &str = "herald_proxy_duration_seconds";
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Idle keep-alive connections kept per backend host (Centrifugo keeps 255).
const MAX_IDLE_PER_HOST: usize = 255;
/// At most one line per proxy this often about failed calls.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);
/// An idle pooled connection is closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type HttpClient = Client<crate::outbound::Connector, Full<Bytes>>;

/// Metric handles by (proxy id, event, outcome), made once.
type Handles = Mutex<HashMap<(usize, &'static str, &'static str), (Counter, Histogram)>>;

/// The proxies' HTTP client.
///
/// One pool for every worker thread. A pooled connection is driven by a task on the worker
/// that opened it, so a call from another worker crosses threads; a pool per worker was tried
/// and made no measurable difference (docs/benchmarks.md, "Connect proxy").
pub struct HttpProxy {
    /// One client per distinct `http.tls` object (most configs: one); each pools its own
    /// connections.
    clients: Vec<HttpClient>,
    /// Parsed endpoints, and the index of their client, by `ProxySpec::id`.
    uris: Vec<(Uri, usize)>,
    /// Failed calls are logged at most every few seconds per proxy: a backend outage under
    /// load would otherwise write a line per client command.
    failures: Vec<LogThrottle>,
    metrics: Handles,
}

impl HttpProxy {
    /// Parses every endpoint; an unusable one is a configuration error naming its key.
    pub fn new(specs: &[ProxySpec]) -> Result<HttpProxy, ConfigError> {
        let mut uris = Vec::with_capacity(specs.len());
        let mut clients: Vec<HttpClient> = Vec::new();
        let mut client_tls: Vec<&herald_hub::proxy::config::ClientTlsOptions> = Vec::new();
        for spec in specs {
            let uri: Uri = spec
                .endpoint
                .parse()
                .map_err(|e| ConfigError::invalid(spec.key.clone(), format!("invalid URL {:?}: {e}", spec.endpoint)))?;
            if uri.host().is_none() {
                return Err(ConfigError::invalid(spec.key.clone(), format!("{:?} names no host", spec.endpoint)));
            }
            let client = match client_tls.iter().position(|tls| **tls == spec.tls) {
                Some(i) => i,
                None => {
                    let tls_key = format!("{}.http.tls", spec.key.strip_suffix(".endpoint").unwrap_or(&spec.key));
                    let connector = crate::outbound::connector(&spec.tls, &tls_key, None)?;
                    clients.push(
                        Client::builder(TokioExecutor::new())
                            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                            .build(connector),
                    );
                    client_tls.push(&spec.tls);
                    clients.len() - 1
                }
            };
            uris.push((uri, client));
        }
        let failures = specs.iter().map(|_| LogThrottle::new(FAILURE_LOG_EVERY)).collect();
        Ok(HttpProxy { clients, uris, failures, metrics: Mutex::default() })
    }

    async fn exchange(&self, req: &ProxyRequest<'_>, body: Vec<u8>) -> Result<Bytes, ProxyFailure> {
        let (uri, client) =
            self.uris.get(req.spec.id).cloned().ok_or(ProxyFailure::Unavailable("unknown proxy".into()))?;
        let mut request = Request::post(uri).body(Full::new(Bytes::from(body))).expect("valid request");
        let headers = request.headers_mut();
        // Lowest priority first: static headers, then the client's.
        for (name, value) in &req.spec.static_headers {
            insert(headers, name, value);
        }
        let mut parent = None;
        let mut forwarded_for = None;
        for (name, value) in req.headers {
            match name.as_str() {
                "traceparent" => parent = Some(value.as_str()),
                "x-forwarded-for" => forwarded_for = Some(value.as_str()),
                _ => insert(headers, name, value),
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if req.kind != ProxyKind::Webhook {
            // A webhook batch is the node's own request, not a client's.
            insert(headers, "x-forwarded-for", &forwarded(forwarded_for, req.peer));
        }
        #[cfg(feature = "otlp")]
        let (span, sent) = match crate::telemetry::otlp::proxy_span(req.kind.name(), &req.spec.label, parent) {
            Some((span, sent)) => (Some(span), sent),
            None => (None, traceparent(parent, &mut rand::rng())),
        };
        #[cfg(not(feature = "otlp"))]
        let sent = traceparent(parent, &mut rand::rng());
        insert(headers, "traceparent", &sent);
        let outcome = self.send(client, request, req.spec.max_response_size).await;
        #[cfg(feature = "otlp")]
        if let Some(span) = span {
            span.end(outcome_label(&outcome));
        }
        outcome
    }

    async fn send(
        &self,
        client: usize,
        request: Request<Full<Bytes>>,
        max_response_size: usize,
    ) -> Result<Bytes, ProxyFailure> {
        let response = self.clients[client]
            .request(request)
            .await
            .map_err(|e| ProxyFailure::Unavailable(crate::outbound::error_chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(ProxyFailure::Status(response.status().as_u16()));
        }
        let body = Limited::new(response.into_body(), max_response_size).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ProxyFailure::TooLarge
            } else {
                ProxyFailure::Unavailable(e.to_string())
            }
        })?;
        Ok(body.to_bytes())
    }
}

/// The metric label of a call's outcome.
fn outcome_label(outcome: &Result<Bytes, ProxyFailure>) -> &'static str {
    match outcome {
        Ok(_) => "ok",
        Err(ProxyFailure::Timeout) => "timeout",
        Err(ProxyFailure::Status(_)) => "status",
        Err(ProxyFailure::TooLarge) => "too_large",
        Err(_) => "unavailable",
    }
}

fn insert(headers: &mut http::HeaderMap, name: &str, value: &str) {
    match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
        (Ok(name), Ok(value)) => {
            headers.insert(name, value);
        }
        _ => tracing::debug!(header = name, "header not forwarded: invalid name or value"),
    }
}

/// The client's address appended to a forwarded chain, as proxies do.
fn forwarded(chain: Option<&str>, peer: IpAddr) -> String {
    match chain {
        Some(chain) if !chain.trim().is_empty() => format!("{}, {peer}", chain.trim()),
        _ => peer.to_string(),
    }
}

/// A W3C `traceparent` for one call: the client's trace continued (same trace id and flags, a
/// new parent id) when it sent a valid one, else a new trace.
pub fn traceparent(parent: Option<&str>, rng: &mut impl Rng) -> String {
    let span: u64 = rng.random::<u64>().max(1);
    if let Some((trace, flags)) = parent.and_then(parse_traceparent) {
        return format!("00-{trace}-{span:016x}-{flags}");
    }
    let trace: u128 = rng.random::<u128>().max(1);
    format!("00-{trace:032x}-{span:016x}-01")
}

/// `version-trace-parent-flags` with a known version, non-zero ids, lower-case hex: the trace
/// id and the flags.
pub fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && hex(trace, 32)
        && nonzero(trace)
        && hex(parent, 16)
        && nonzero(parent)
        && hex(flags, 2);
    ok.then_some((trace, flags))
}

impl ProxyPort for HttpProxy {
    fn call<'a>(&'a self, mut request: ProxyRequest<'a>) -> BoxFuture<'a, Result<Bytes, ProxyFailure>> {
        Box::pin(async move {
            let start = Instant::now();
            let body = std::mem::take(&mut request.body);
            let outcome = match tokio::time::timeout(request.spec.timeout, self.exchange(&request, body)).await {
                Ok(r) => r,
                Err(_) => Err(ProxyFailure::Timeout),
            };
            let label = outcome_label(&outcome);
            if let Err(e) = &outcome
                && let Some((n, _)) = self.failures.get(request.spec.id).and_then(|t| t.note(Instant::now()))
            {
                tracing::warn!(proxy = %request.spec.label, kind = request.kind.name(), failed = n, "proxy call failed: {e}");
            }
            let kind = request.kind.name();
            let (count, latency) = {
                let mut handles = self.metrics.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let make = || {
                    let proxy = request.spec.label.clone();
                    let count = metrics::counter!("herald_proxy_requests_total",
                        "proxy" => proxy.clone(), "kind" => kind, "outcome" => label);
                    (count, metrics::histogram!(DURATION_METRIC, "proxy" => proxy, "kind" => kind))
                };
                handles.entry((request.spec.id, kind, label)).or_insert_with(make).clone()
            };
            count.increment(1);
            latency.record(start.elapsed().as_secs_f64());
            outcome
        })
    }
}

/// Builds the node with the given engines and, when proxies are configured, their HTTP client.
pub fn build_node(
    cfg: herald_hub::HubConfig,
    identity: herald_hub::NodeIdentity,
    clock: std::sync::Arc<dyn herald_hub::Clock>,
    broker: std::sync::Arc<dyn herald_hub::broker::Broker>,
    presence: std::sync::Arc<dyn herald_hub::broker::PresenceManager>,
) -> Result<std::sync::Arc<herald_hub::Node>, ConfigError> {
    let port = port_for(&cfg)?;
    Ok(herald_hub::Node::with_parts(cfg, identity, clock, broker, presence, port)?)
}

/// The HTTP client for the proxies of `cfg` (`None` without proxies); errors name the key.
pub fn port_for(cfg: &herald_hub::HubConfig) -> Result<Option<std::sync::Arc<dyn ProxyPort>>, ConfigError> {
    let table = herald_hub::proxy::Proxies::compile(cfg)?;
    if table.specs().is_empty() {
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(HttpProxy::new(table.specs())?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_continued_or_created() {
        let mut rng = rand::rng();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = traceparent(Some(parent), &mut rng);
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{next}");
        assert!(next.ends_with("-01"));
        assert_ne!(next, parent, "a new parent id");
        for bad in [
            "",
            "00-0000-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            let fresh = traceparent(Some(bad), &mut rng);
            assert!(parse_traceparent(&fresh).is_some(), "{fresh}");
            assert!(!fresh.contains("4bf92f35") && !fresh.contains("4BF92F35"), "{bad:?} is not continued: {fresh}");
        }
    }

    #[test]
    fn forwarded_chains() {
        let peer: IpAddr = "127.0.0.9".parse().unwrap();
        assert_eq!(forwarded(None, peer), "127.0.0.9");
        assert_eq!(forwarded(Some("10.0.0.1"), peer), "10.0.0.1, 127.0.0.9");
    }

    #[test]
    fn endpoints_are_parsed_at_start() {
        let spec = |endpoint: &str| ProxySpec {
            id: 0,
            label: "connect".into(),
            key: "client.proxy.connect.endpoint".into(),
            endpoint: endpoint.into(),
            timeout: Duration::from_secs(1),
            http_headers: vec![],
            emulated_headers: vec![],
            static_headers: vec![],
            include_meta: false,
            binary: false,
            max_response_size: 1024,
            tls: Default::default(),
        };
        assert!(HttpProxy::new(&[spec("http://127.0.0.1:1/connect")]).is_ok());
        let err = HttpProxy::new(&[spec("http://exa mple/")]).err().expect("refused");
        assert_eq!(err.key(), Some("client.proxy.connect.endpoint"));
    }
}
