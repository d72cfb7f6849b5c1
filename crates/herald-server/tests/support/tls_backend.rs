//! An HTTPS test backend for the logic-layer client's TLS: a test CA ([`TestCa`], rcgen) and a
//! hyper server on its own loopback port, in the test's runtime, that serves HTTP/2 when the
//! TLS client offers `h2` and the backend is told to ([`TlsBackend::start`]), HTTP/1.1
//! otherwise, and can require a client certificate signed by a given CA.
//!
//! It records every request (path, the HTTP version it arrived in, the client certificate's
//! presence) and answers `/connect` as a connect proxy (`{"result": {"user": "tls-user"}}`)
//! and any other path with `{"path": ..., "version": ...}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A test CA that signs leaf certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) and its key, PEM.
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS client configuration trusting this CA only, presenting `identity` (certificate
    /// and key PEM) when given; no ALPN.
    pub fn client_config(&self, identity: Option<&(String, String)>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        #[allow(deprecated)] // the ring provider, as in the server
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }
}

/// A `herald` serving TLS with a certificate for localhost signed by `ca`, with `extra`
/// variables besides.
pub fn start_tls_herald(ca: &TestCa, extra: &[(&str, &str)]) -> super::Herald {
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
    let mut env = vec![
        ("HERALD_HTTP_SERVER_TLS_ENABLED", "true"),
        ("HERALD_HTTP_SERVER_TLS_CERT_PEM", cert.as_str()),
        ("HERALD_HTTP_SERVER_TLS_KEY_PEM", key.as_str()),
    ];
    env.extend_from_slice(extra);
    super::Herald::start(&env)
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Whether the TLS client presented a (verified) certificate.
    pub client_cert: bool,
}

pub struct TlsBackend {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How the backend's TLS is set up.
pub struct Setup<'a> {
    /// Signs the backend's certificate (for `localhost` and 127.0.0.1).
    pub ca: &'a TestCa,
    /// Offer `h2` in ALPN (else only `http/1.1`).
    pub h2: bool,
    /// Require a client certificate signed by this CA (PEM).
    pub client_ca: Option<String>,
}

impl TlsBackend {
    pub async fn start(setup: Setup<'_>) -> TlsBackend {
        let (cert, key) = setup.ca.leaf(&["localhost", "127.0.0.1"]);
        let chain = CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let provider = Arc::new(provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &setup.client_ca {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols =
            if setup.h2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the TLS test backend");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let records = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let (acceptor, records) = (acceptor.clone(), records.clone());
                tokio::spawn(async move {
                    // A handshake refused by either side ends here.
                    let Ok(tls) = acceptor.accept(socket).await else { return };
                    let (_, session) = tls.get_ref();
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let client_cert = session.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = service_fn(move |req| answer(records.clone(), client_cert, req));
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    }
                });
            }
        });
        TlsBackend { addr, seen, task }
    }

    /// `https://localhost:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    records: Arc<Mutex<Vec<Seen>>>,
    client_cert: bool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let version = format!("{:?}", req.version());
    let _ = req.into_body().collect().await;
    records.lock().unwrap().push(Seen { path: path.clone(), version: version.clone(), client_cert });
    let body = if path == "/connect" {
        json!({"result": {"user": "tls-user", "info": {"version": version}}})
    } else {
        json!({"path": path, "version": version})
    };
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    Ok(response)
}

#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
