//! `http_server.tls.http2` against a real `herald`: a TLS client offering `h2` gets HTTP/2
//! (hyper's HTTP/2 client) and calls the server API over it, several requests on one
//! connection, the client certificate of `client_ca_pem` honoured on every stream; the
//! socket-taking transports answer 505 over HTTP/2; without the option `h2` is not chosen.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use support::tls_backend::{TestCa, start_tls_herald as start};
use support::{API_KEY, Herald, WAIT};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A TLS client offering `h2` then `http/1.1`, trusting `server_ca`, presenting `identity`.
fn connector(server_ca: &TestCa, identity: Option<&(String, String)>) -> TlsConnector {
    let mut config = server_ca.client_config(identity);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection to `herald` (the handshake must choose `h2`).
async fn h2_connection(herald: &Herald, tls: &TlsConnector) -> Sender {
    let tcp = TcpStream::connect(herald.addr).await.unwrap();
    let stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "h2 chosen");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.expect("h2 handshake");
    tokio::spawn(connection);
    sender
}

async fn call(sender: &mut Sender, method: &str, path: &str, body: &Value) -> (StatusCode, Version, Value) {
    let request = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("x-api-key", API_KEY)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request)).await.expect("in time").expect("answered");
    let (status, version) = (response.status(), response.version());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, version, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_server_api_over_http2_with_client_certificates_and_505_for_socket_transports() {
    let ca = TestCa::new("server CA");
    let clients = TestCa::new("client CA");
    let herald = start(
        &ca,
        &[
            ("HERALD_HTTP_SERVER_TLS_HTTP2", "true"),
            ("HERALD_HTTP_SERVER_TLS_CLIENT_CA_PEM", &clients.pem()),
            ("HERALD_SSE_ENABLED", "true"),
        ],
    );
    let mut certified = h2_connection(&herald, &connector(&ca, Some(&clients.leaf(&["api"])))).await;
    for n in 0..3 {
        let (status, version, body) =
            call(&mut certified, "POST", "/api/publish", &json!({"channel": "news", "data": {"n": n}})).await;
        assert_eq!((status, version, &body["result"]), (StatusCode::OK, Version::HTTP_2, &json!({})), "{body}");
    }
    let (status, _, body) = call(&mut certified, "POST", "/api/info", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["result"]["nodes"].is_array(), "{body}");

    let mut anonymous = h2_connection(&herald, &connector(&ca, None)).await;
    let (status, version, body) =
        call(&mut anonymous, "POST", "/api/publish", &json!({"channel": "x", "data": 1})).await;
    assert_eq!((status, version), (StatusCode::FORBIDDEN, Version::HTTP_2), "{body}");
    let (status, _, _) = call(&mut anonymous, "GET", "/health", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = call(&mut anonymous, "GET", "/connection/sse", &json!({})).await;
    assert_eq!(status, StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    assert!(body["error"].as_str().unwrap().contains("needs HTTP/1.1"), "{body}");
}

#[tokio::test]
async fn without_the_option_h2_is_not_chosen() {
    let ca = TestCa::new("server CA");
    let herald = start(&ca, &[]);
    let tcp = TcpStream::connect(herald.addr).await.unwrap();
    let stream = connector(&ca, None).connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}
