//! `http_server.tls.client_ca_pem` against a real `herald`: TLS clients are asked for a
//! certificate; the server API answers only a connection that presented one signed by the
//! CA (403 with a JSON error otherwise), client endpoints and `/health` stay open without one,
//! and a certificate from another CA fails the handshake.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use support::tls_backend::{TestCa, start_tls_herald};
use support::{API_KEY, WAIT, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A TLS client trusting `server_ca`, presenting `identity` (certificate and key PEM) if given.
fn connector(server_ca: &TestCa, identity: Option<&(String, String)>) -> TlsConnector {
    TlsConnector::from(Arc::new(server_ca.client_config(identity)))
}

/// One HTTP/1.1 request over TLS: `Some((status, JSON body))`, or `None` when the connection
/// failed (a refused handshake surfaces on the first read in TLS 1.3).
async fn https(addr: SocketAddr, tls: &TlsConnector, method: &str, path: &str, body: &Value) -> Option<(u16, Value)> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut stream = tokio::time::timeout(WAIT, tls.connect(name, tcp)).await.expect("handshake in time").ok()?;
    let body = body.to_string();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.expect("an answer in time").ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let json = text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    Some((status, json))
}

#[tokio::test]
async fn the_api_needs_a_client_certificate_from_the_ca_and_client_endpoints_stay_open() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let herald = start_tls_herald(&server_ca, &[("HERALD_HTTP_SERVER_TLS_CLIENT_CA_PEM", &client_ca.pem())]);
    let publish = json!({"channel": "news", "data": {"n": 1}});

    let certified = connector(&server_ca, Some(&client_ca.leaf(&["api-client"])));
    let (status, body) = https(herald.addr, &certified, "POST", "/api/publish", &publish).await.expect("answered");
    assert_eq!((status, &body["result"]), (200, &json!({})), "{body}");

    let anonymous = connector(&server_ca, None);
    let (status, body) = https(herald.addr, &anonymous, "POST", "/api/publish", &publish).await.expect("answered");
    assert_eq!(status, 403);
    assert_eq!(body["error"], "the server API needs a client certificate signed by http_server.tls.client_ca_pem");
    let (status, _) = https(herald.addr, &anonymous, "GET", "/health", &json!({})).await.expect("answered");
    assert_eq!(status, 200, "not the server API: open");

    // A client endpoint without a certificate: a WebSocket connects as before.
    let tcp = TcpStream::connect(herald.addr).await.unwrap();
    let stream = anonymous.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let url = format!("wss://localhost:{}/connection/websocket", herald.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.expect("WebSocket over TLS");
    ws.send(Message::text(json!({"id": 1, "connect": {"token": token("u1")}}).to_string())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.expect("a reply").unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap().lines().next().unwrap()).unwrap();
    assert!(reply["connect"]["client"].is_string(), "{reply}");

    // A certificate from another CA: the handshake is refused, nothing is answered.
    let stranger = connector(&server_ca, Some(&TestCa::new("another CA").leaf(&["intruder"])));
    assert_eq!(https(herald.addr, &stranger, "POST", "/api/publish", &publish).await, None);

    let metrics = metrics_over(herald.addr, &certified).await;
    assert!(metrics.contains("herald_api_client_certificate_refusals_total 1"), "{metrics}");
    assert!(metrics.contains(r#"herald_tls_handshakes_total{outcome="error"} 1"#), "{metrics}");
}

/// `/metrics` over TLS (the harness's own helper speaks plain HTTP).
async fn metrics_over(addr: SocketAddr, tls: &TlsConnector) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response)).await.unwrap().unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn on_the_internal_port_the_api_needs_the_certificate_too() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let herald = start_tls_herald(
        &server_ca,
        &[("HERALD_HTTP_SERVER_TLS_CLIENT_CA_PEM", &client_ca.pem()), ("HERALD_HTTP_SERVER_INTERNAL_PORT", "0")],
    );
    let logs = herald.logs();
    let line = logs.split("internal endpoints (API, metrics, health) on ").nth(1).expect("internal port line");
    let internal: SocketAddr = line.split_whitespace().next().unwrap().parse().unwrap();
    let info = json!({});
    let certified = connector(&server_ca, Some(&client_ca.leaf(&["api-client"])));
    let (status, body) = https(internal, &certified, "POST", "/api/info", &info).await.expect("answered");
    assert_eq!(status, 200, "{body}");
    let (status, _) = https(internal, &connector(&server_ca, None), "POST", "/api/info", &info).await.unwrap();
    assert_eq!(status, 403);
}
