//! `http_server.internal_port`: the server API, `/metrics` and `/health` move to the internal
//! port (404 on the public one), client endpoints stay on the public port (404 on the internal).

mod support;

use std::net::SocketAddr;

use herald_client::Client;
use serde_json::json;
use support::*;

/// The internal address from the start-up line that names it.
fn internal_addr(herald: &Herald) -> SocketAddr {
    let logs = herald.logs();
    let rest = logs.split("internal endpoints (API, metrics, health) on ").nth(1).expect("internal port line");
    rest.split_whitespace().next().unwrap().parse().expect("internal address")
}

#[tokio::test]
async fn api_metrics_and_health_move_to_the_internal_port() {
    let herald = Herald::start(&[("HERALD_HTTP_SERVER_INTERNAL_PORT", "0")]);
    let internal = internal_addr(&herald);
    assert_ne!(internal.port(), herald.addr.port());

    // Public port: client endpoints only.
    let (status, body) = api_at(herald.addr, "info", json!({})).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not found")), "{body}");
    assert_eq!(herald.http("GET", "/metrics", &[], b"").await.status, 404);
    assert_eq!(herald.http("GET", "/health", &[], b"").await.status, 404);
    let (mut client, _) = Client::connect(&herald.client_options("alice")).await.expect("client on the public port");

    // Internal port: the API, metrics and health, and no client endpoint.
    let (status, body) = api_at(internal, "info", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["nodes"][0]["num_clients"], 1);
    let metrics = http_at(internal, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("herald_connections 1"), "{}", metrics.text());
    assert_eq!(http_at(internal, "GET", "/health", &[], b"").await.status, 200);
    let upgrade = raw_http(internal, &upgrade_request(internal, WS_PATH, &[])).await;
    assert_eq!(upgrade.status, 404, "no WebSocket on the internal port: {}", upgrade.text());
    let options =
        herald_client::ClientOptions { url: format!("ws://{internal}{WS_PATH}"), ..herald.client_options("bob") };
    assert!(Client::connect(&options).await.is_err(), "a client cannot connect on the internal port");

    // A publication through the internal API reaches the public client.
    subscribe(&mut client, "news").await;
    let (status, body) = api_at(internal, "publish", json!({"channel": "news", "data": {"n": 1}})).await;
    assert_eq!(status, 200, "{body}");
    let (data, _) = next_publication(&mut client, "news").await;
    assert_eq!(data, json!({"n": 1}));
}

#[tokio::test]
async fn centrifugo_string_port_is_accepted_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"http_server": {"internal_port": "0", "internal_address": "127.0.0.1"}}"#).unwrap();
    let herald = Herald::start_with_args(&[], &["--config", path.to_str().unwrap()]);
    let internal = internal_addr(&herald);
    assert_eq!(internal.ip().to_string(), "127.0.0.1");
    assert_eq!(http_at(internal, "GET", "/health", &[], b"").await.status, 200);

    std::fs::write(&path, r#"{"http_server": {"internal_port": "nine"}}"#).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["checkconfig", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("http_server.internal_port") && stderr.contains("expected a port number"), "{stderr}");
}
