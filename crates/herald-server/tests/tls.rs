//! `http_server.tls`: the WebSocket transport and the server API over TLS against a real
//! `herald`, with certificates made by the test (a CA and a leaf for `localhost`), and a
//! certificate replaced on disk while a client stays connected.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use support::{API_KEY, Herald, WAIT, token, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A test CA that signs leaf certificates for `localhost` and 127.0.0.1.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Herald test CA");
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf certificate named `name` (its common name) and its key, as PEM.
    fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn connector(&self) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        #[allow(deprecated)] // the ring provider, as in the server
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// Writes the PEM pair to `dir` (replacing the files by rename, as a certificate manager does)
/// and returns their paths.
fn install(dir: &Path, (cert, key): &(String, String)) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    for (path, text) in [(&k, key), (&c, cert)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }
    (c, k)
}

fn start_tls(cert: &Path, key: &Path) -> Herald {
    Herald::start(&[
        ("HERALD_HTTP_SERVER_TLS_ENABLED", "true"),
        ("HERALD_HTTP_SERVER_TLS_CERT_PEM", cert.to_str().unwrap()),
        ("HERALD_HTTP_SERVER_TLS_KEY_PEM", key.to_str().unwrap()),
    ])
}

async fn tls_connect(addr: SocketAddr, connector: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.expect("handshake in time").expect("handshake")
}

/// The common name of the certificate the server presents now.
async fn served_name(addr: SocketAddr, connector: &TlsConnector) -> String {
    let tls = tls_connect(addr, connector).await;
    let der: CertificateDer<'static> = tls.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    // The common name is the last printable run in the subject; enough to tell two leaves apart.
    let text = String::from_utf8_lossy(der.as_ref()).into_owned();
    ["first", "second"].iter().find(|n| text.contains(*n)).map(|n| n.to_string()).unwrap_or_default()
}

/// One HTTP/1.1 request over TLS (`Connection: close`): the status and the body as JSON.
async fn https(addr: SocketAddr, connector: &TlsConnector, path: &str, body: &Value) -> (u16, Value) {
    let mut tls = tls_connect(addr, connector).await;
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await.expect("response in time");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    let json = text.split("\r\n\r\n").nth(1).and_then(|b| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    (status, json)
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A JSON-protocol client over `wss://`, connected as `user` and subscribed to `channel`.
async fn wss_subscriber(addr: SocketAddr, connector: &TlsConnector, user: &str, channel: &str) -> Wss {
    let tls = tls_connect(addr, connector).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]), "HTTP/1.1 chosen for a WebSocket");
    let url = format!("wss://localhost:{}/connection/websocket", addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("WebSocket upgrade over TLS");
    ws.send(Message::text(json!({"id": 1, "connect": {"token": token(user)}}).to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 1, "{reply}");
    assert!(reply["connect"]["client"].is_string(), "{reply}");
    ws.send(Message::text(json!({"id": 2, "subscribe": {"channel": channel}}).to_string())).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    ws
}

/// The next JSON message, skipping pings (`{}`).
async fn next_json(ws: &mut Wss) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time").expect("open").unwrap();
        if let Message::Text(text) = msg {
            for line in text.lines() {
                let value: Value = serde_json::from_str(line).unwrap();
                if value != json!({}) {
                    return value;
                }
            }
        }
    }
}

async fn expect_publication(ws: &mut Wss, channel: &str, data: &Value) {
    let push = next_json(ws).await;
    assert_eq!(push["push"]["channel"], channel, "{push}");
    assert_eq!(&push["push"]["pub"]["data"], data, "{push}");
}

#[tokio::test]
async fn websocket_and_server_api_over_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let herald = start_tls(&cert, &key);
    let connector = ca.connector();
    // The log is read by another thread: wait for the line rather than race it.
    wait_for("the listening line to say TLS is on", WAIT, || async { herald.logs().contains("(https)") }).await;

    let mut ws = wss_subscriber(herald.addr, &connector, "alice", "news").await;
    let data = json!({"text": "over TLS"});
    let (status, body) =
        https(herald.addr, &connector, "/api/publish", &json!({"channel": "news", "data": data})).await;
    assert_eq!((status, body.get("error")), (200, None), "{body}");
    expect_publication(&mut ws, "news", &data).await;

    let (status, info) = https(herald.addr, &connector, "/api/info", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(info["result"]["nodes"][0]["num_clients"], 1, "{info}");

    // Plain HTTP on the TLS port gets no HTTP answer: the handshake fails and is counted.
    let mut plain = TcpStream::connect(herald.addr).await.unwrap();
    plain.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf)).await.expect("closed in time");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"), "no plaintext answer");
    let (status, _) = https(herald.addr, &connector, "/metrics", &json!({})).await;
    assert_eq!(status, 200);
    let mut tls = tls_connect(herald.addr, &connector).await;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut metrics = String::new();
    let _ = tls.read_to_string(&mut metrics).await;
    assert!(metrics.contains(r#"herald_tls_handshakes_total{outcome="ok"}"#), "{metrics}");
    assert!(metrics.contains(r#"herald_tls_handshakes_total{outcome="error"} 1"#), "{metrics}");

    // The WebSocket client still works after all that.
    let data = json!({"n": 2});
    https(herald.addr, &connector, "/api/publish", &json!({"channel": "news", "data": data})).await;
    expect_publication(&mut ws, "news", &data).await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_dropping_clients() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let herald = start_tls(&cert, &key);
    let connector = ca.connector();
    assert_eq!(served_name(herald.addr, &connector).await, "first");
    let mut ws = wss_subscriber(herald.addr, &connector, "bob", "swap").await;

    install(dir.path(), &ca.leaf("second"));
    wait_for("the new certificate", WAIT, || async { served_name(herald.addr, &connector).await == "second" }).await;
    wait_for("the swap logged", WAIT, || async { herald.logs().contains("the new certificate is served from now on") })
        .await;

    // A broken key file is refused; the second certificate stays in use.
    std::fs::write(&key, "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(served_name(herald.addr, &connector).await, "second");
    wait_for("the refusal logged", WAIT, || async { herald.logs().contains("do not load") }).await;

    // The client connected before the swap still receives publications.
    let data = json!({"after": "swap"});
    let (status, _) = https(herald.addr, &connector, "/api/publish", &json!({"channel": "swap", "data": data})).await;
    assert_eq!(status, 200);
    expect_publication(&mut ws, "swap", &data).await;
}

#[test]
fn a_bad_certificate_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "garbage").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["--port", "0", "--address", "127.0.0.1"])
        .env("HERALD_HTTP_SERVER_TLS_ENABLED", "true")
        .env("HERALD_HTTP_SERVER_TLS_CERT_PEM", &cert)
        .env("HERALD_HTTP_SERVER_TLS_KEY_PEM", &cert)
        .env("HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY", "x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http_server.tls.cert_pem"), "{stderr}");
}

/// The HTTP streaming transports take the socket after the request: over TLS they get the
/// decrypted connection like the WebSocket transport.
#[tokio::test]
async fn uni_sse_over_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let herald = Herald::start(&[
        ("HERALD_HTTP_SERVER_TLS_ENABLED", "true"),
        ("HERALD_HTTP_SERVER_TLS_CERT_PEM", cert.to_str().unwrap()),
        ("HERALD_HTTP_SERVER_TLS_KEY_PEM", key.to_str().unwrap()),
        ("HERALD_UNI_SSE_ENABLED", "true"),
    ]);
    let connector = ca.connector();
    let connect = json!({"token": token("dave")}).to_string();
    let query: String = connect
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let mut tls = tls_connect(herald.addr, &connector).await;
    let request = format!("GET /connection/uni_sse?cf_connect={query} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let text = tokio::time::timeout(WAIT, async {
        loop {
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if text.contains("\"connect\"") {
                return text;
            }
        }
    })
    .await
    .expect("the connect event in time");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    assert!(text.contains("\"client\""), "{text}");

    // A GET stream over TLS 1.3 is served by its link's records, like a WebSocket.
    let mut metrics_conn = tls_connect(herald.addr, &connector).await;
    metrics_conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut metrics = String::new();
    let _ = metrics_conn.read_to_string(&mut metrics).await;
    assert!(metrics.contains(r#"herald_tls_connections_total{served_by="link"} 1"#), "{metrics}");

    // A disconnect from the server: the disconnect event, then a clean end (close_notify).
    let (status, _) = https(herald.addr, &connector, "/api/disconnect", &json!({"user": "dave"})).await;
    assert_eq!(status, 200);
    let rest = tokio::time::timeout(WAIT, async {
        let mut rest = Vec::new();
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) => return Ok(rest),
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .expect("ended in time")
    .expect("a clean end of the TLS stream");
    assert!(String::from_utf8_lossy(&rest).contains("\"disconnect\""), "{}", String::from_utf8_lossy(&rest));
}

/// A WebSocket over TLS 1.3 is served by its link's own record layer (no pump): messages
/// larger than a TLS record both ways, a client command split over records, and a server
/// disconnect that ends with a close frame and close_notify (the client's stream ends cleanly,
/// not with an unexpected EOF).
#[tokio::test]
async fn websocket_records_in_the_link() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let herald = start_tls(&cert, &key);
    let connector = ca.connector();
    let mut ws = wss_subscriber(herald.addr, &connector, "erin", "big").await;

    // Server to client: 50 KB of data is four records at least.
    let data = json!({"blob": "x".repeat(50_000)});
    let (status, body) = https(herald.addr, &connector, "/api/publish", &json!({"channel": "big", "data": data})).await;
    assert_eq!((status, body.get("error")), (200, None), "{body}");
    expect_publication(&mut ws, "big", &data).await;

    // Client to server: one 40 KB frame (JSON whitespace around a subscribe command).
    let padded = format!(r#"{{"id": 3, {} "subscribe": {{"channel": "other"}}}}"#, " ".repeat(40_000));
    ws.send(Message::text(padded)).await.unwrap();
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], 3, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");

    // Many small messages in a row, each its own record, all answered in order.
    for id in 10..60 {
        ws.send(Message::text(json!({"id": id, "subscribe": {"channel": format!("c{id}")}}).to_string()))
            .await
            .unwrap();
    }
    for id in 10..60 {
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["id"], id, "{reply}");
    }

    let mut tls = tls_connect(herald.addr, &connector).await;
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut metrics = String::new();
    let _ = tls.read_to_string(&mut metrics).await;
    assert!(metrics.contains(r#"herald_tls_connections_total{served_by="link"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"herald_tls_connections_total{served_by="pump"}"#), "{metrics}");

    // A disconnect from the server: the close frame, then the stream ends without an error.
    let (status, _) = https(herald.addr, &connector, "/api/disconnect", &json!({"user": "erin"})).await;
    assert_eq!(status, 200);
    let mut close = None;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => close = frame,
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    })
    .await
    .expect("closed in time");
    assert_eq!(ended, Ok(()), "a clean end of the TLS stream");
    let close = close.expect("a close frame");
    assert!(u16::from(close.code) >= 3000, "{close:?}");
}

/// A request head over the size limit, read through TLS before routing, still gets the
/// entry's 431 (the bytes read are handed on, not lost).
#[tokio::test]
async fn a_too_large_head_over_tls_gets_431() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = install(dir.path(), &ca.leaf("first"));
    let herald = start_tls(&cert, &key);
    let connector = ca.connector();
    let mut tls = tls_connect(herald.addr, &connector).await;
    let request =
        format!("GET /connection/websocket HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    // The server may answer and close before reading everything.
    let _ = tls.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut response)).await.expect("answered in time");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
}
