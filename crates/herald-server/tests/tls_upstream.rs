//! `https://` towards the logic layer against a real `herald`: the connect proxy and a gateway
//! route calling an HTTPS test backend (`support::tls_backend`) whose certificate a test CA
//! signed. HTTP/2 is used when the backend offers it and HTTP/1.1 when it does not; a client
//! certificate is presented when configured; a backend signed by another CA is refused with a
//! clear proxy error (`unavailable` outcome, the reason in the log) or a 502; lifecycle webhooks
//! reach an https:// named proxy.

mod support;

use serde_json::{Value, json};
use support::tls_backend::{Setup, TestCa, TlsBackend};
use support::*;

/// Connects a raw WebSocket with no token (so the connect proxy decides); returns the reply.
async fn proxy_connect(herald: &Herald) -> Value {
    let mut ws = RawWs::open(herald.addr, WS_PATH, &[]).await;
    ws.send_json(&json!({"id": 1, "connect": {}})).await;
    let frame = ws.read_frame_within(WAIT).await.expect("a reply");
    serde_json::from_str(frame.text().trim()).expect("JSON reply")
}

fn connect_proxy_env(url: &str, tls: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("HERALD_CLIENT_PROXY_CONNECT_ENABLED".to_owned(), "true".to_owned()),
        ("HERALD_CLIENT_PROXY_CONNECT_ENDPOINT".to_owned(), url.to_owned()),
        ("HERALD_CLIENT_PROXY_CONNECT_TIMEOUT".to_owned(), "3s".to_owned()),
    ];
    for (field, value) in tls {
        env.push((format!("HERALD_CLIENT_PROXY_CONNECT_HTTP_TLS_{field}"), value.clone()));
    }
    env
}

fn start(env: &[(String, String)]) -> Herald {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Herald::start(&env)
}

#[tokio::test]
async fn connect_proxy_over_https_uses_http2_when_offered_and_presents_the_client_certificate() {
    let ca = TestCa::new("backend CA");
    let clients = TestCa::new("client CA");
    let backend = TlsBackend::start(Setup { ca: &ca, h2: true, client_ca: Some(clients.pem()) }).await;
    let (cert, key) = clients.leaf(&["herald.test"]);
    let herald = start(&connect_proxy_env(
        &backend.url("/connect"),
        &[("ENABLED", "true".into()), ("SERVER_CA_PEM", ca.pem()), ("CERT_PEM", cert), ("KEY_PEM", key)],
    ));
    for _ in 0..2 {
        let reply = proxy_connect(&herald).await;
        assert_eq!(reply["connect"]["client"].as_str().map(|c| !c.is_empty()), Some(true), "{reply}");
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|s| s.path == "/connect" && s.version == "HTTP/2.0" && s.client_cert), "{seen:?}");
    let metrics = herald.metrics().await;
    let ok = r#"herald_proxy_requests_total{proxy="connect",kind="connect",outcome="ok"} 2"#;
    assert!(metrics.contains(ok), "{metrics}");
}

#[tokio::test]
async fn a_backend_without_h2_gets_http1_and_a_wrong_ca_or_a_missing_client_certificate_is_refused() {
    let ca = TestCa::new("backend CA");
    let backend = TlsBackend::start(Setup { ca: &ca, h2: false, client_ca: None }).await;
    let herald =
        start(&connect_proxy_env(&backend.url("/connect"), &[("ENABLED", "true".into()), ("SERVER_CA_PEM", ca.pem())]));
    let reply = proxy_connect(&herald).await;
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    assert_eq!(backend.seen()[0].version, "HTTP/1.1");

    // The backend's certificate is not signed by the configured CA.
    let other = TestCa::new("another CA");
    let wrong = start(&connect_proxy_env(
        &backend.url("/connect"),
        &[("ENABLED", "true".into()), ("SERVER_CA_PEM", other.pem())],
    ));
    let reply = proxy_connect(&wrong).await;
    assert_eq!(reply["error"]["code"], 100, "a temporary error: {reply}");
    assert_eq!(backend.seen().len(), 1, "no request reached the backend");
    let metrics = wrong.metrics().await;
    let failed = r#"herald_proxy_requests_total{proxy="connect",kind="connect",outcome="unavailable"} 1"#;
    assert!(metrics.contains(failed), "{metrics}");
    wait_for("the reason in the log", WAIT, || async { wrong.logs().contains("UnknownIssuer") }).await;

    // No TLS options: the platform's roots, which do not hold the test CA.
    let platform = start(&connect_proxy_env(&backend.url("/connect"), &[]));
    assert_eq!(proxy_connect(&platform).await["error"]["code"], 100);

    // A backend that requires a client certificate, and Herald has none to show.
    let clients = TestCa::new("client CA");
    let strict = TlsBackend::start(Setup { ca: &ca, h2: true, client_ca: Some(clients.pem()) }).await;
    let herald =
        start(&connect_proxy_env(&strict.url("/connect"), &[("ENABLED", "true".into()), ("SERVER_CA_PEM", ca.pem())]));
    assert_eq!(proxy_connect(&herald).await["error"]["code"], 100);
    assert!(strict.seen().is_empty());
}

#[tokio::test]
async fn a_gateway_route_forwards_over_https_with_http2_and_a_wrong_ca_gets_502() {
    let ca = TestCa::new("backend CA");
    let h2 = TlsBackend::start(Setup { ca: &ca, h2: true, client_ca: None }).await;
    let h1 = TlsBackend::start(Setup { ca: &ca, h2: false, client_ca: None }).await;
    let other = TestCa::new("another CA");
    let tls = json!({"enabled": true, "server_ca_pem": ca.pem()});
    let routes = json!([
        {"prefix": "/h2", "upstreams": [h2.url("")], "auth": "none", "tls": tls,
         "health_check": {"path": "/health", "interval": "100ms"}},
        {"prefix": "/h1", "upstreams": [h1.url("/base")], "auth": "none", "tls": tls},
        {"prefix": "/wrong", "upstreams": [h2.url("")], "auth": "none",
         "tls": {"enabled": true, "server_ca_pem": other.pem()}},
        {"prefix": "/skip", "upstreams": [h1.url("")], "auth": "none",
         "tls": {"enabled": true, "insecure_skip_verify": true}},
    ])
    .to_string();
    let herald = Herald::start(&[("HERALD_GATEWAY_ROUTES", routes.as_str())]);

    let r = herald.http("GET", "/h2/items?x=1", &[], b"").await;
    assert_eq!((r.status, r.json()), (200, json!({"path": "/h2/items", "version": "HTTP/2.0"})));
    let r = herald.http("POST", "/h1/items", &[("content-type", "application/json")], b"{}").await;
    assert_eq!((r.status, r.json()), (200, json!({"path": "/base/h1/items", "version": "HTTP/1.1"})));
    // The active health check reaches the upstream over HTTPS too.
    wait_for("an HTTPS health check", WAIT, || async { h2.seen().iter().any(|s| s.path == "/health") }).await;

    let r = herald.http("GET", "/wrong/items", &[], b"").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(!h2.seen().iter().any(|s| s.path == "/wrong/items"));
    wait_for("the reason in the log", WAIT, || async { herald.logs().contains("UnknownIssuer") }).await;

    let r = herald.http("GET", "/skip/x", &[], b"").await;
    assert_eq!((r.status, r.json()["version"].clone()), (200, json!("HTTP/1.1")), "insecure_skip_verify");
}

#[tokio::test]
async fn webhooks_post_over_https_through_their_named_proxy() {
    let ca = TestCa::new("backend CA");
    let backend = TlsBackend::start(Setup { ca: &ca, h2: true, client_ca: None }).await;
    let proxies = json!([{"name": "hooks", "endpoint": backend.url("/webhook"), "timeout": "2s",
        "http": {"tls": {"enabled": true, "server_ca_pem": ca.pem()}}}])
    .to_string();
    let herald = Herald::start(&[
        ("HERALD_PROXIES", proxies.as_str()),
        ("HERALD_WEBHOOKS_ENABLED", "true"),
        ("HERALD_WEBHOOKS_PROXY_NAME", "hooks"),
        ("HERALD_WEBHOOKS_FLUSH_INTERVAL", "50ms"),
    ]);
    let (_client, _) = herald.client("hook-user").await;
    wait_for("a webhook batch over HTTPS", WAIT, || async { backend.seen().iter().any(|s| s.path == "/webhook") })
        .await;
    assert!(backend.seen().iter().all(|s| s.version == "HTTP/2.0"), "{:?}", backend.seen());
}
