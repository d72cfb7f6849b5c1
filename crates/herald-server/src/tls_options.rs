//! What the listening port's TLS offers and asks for, apart from the handshake machinery of
//! [`crate::tls`]: the rustls server configuration (ALPN, the client certificate verifier of
//! `http_server.tls.client_ca_pem`, `h2` with `http_server.tls.http2`) and how the entry learns
//! what the handshake settled for the connection it serves ([`Peer`]: a verified client
//! certificate, HTTP/2).
//!
//! That is set once per connection as a task-local around the entry's future ([`with_peer`])
//! and read where a request is answered ([`peer_now`]): the entry runs each HTTP/1.1
//! connection in its own task, so nothing has to be threaded through the transports, and a
//! request answered anywhere else reads "no certificate", so the check fails closed. The
//! HTTP/2 server spawns a task per stream, so `crate::h2` carries the value into each.

use std::sync::Arc;

use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::TlsConfig;
use crate::config_error::ConfigError;

const CLIENT_CA_KEY: &str = "http_server.tls.client_ca_pem";

/// What the TLS handshake of a connection settled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client presented a certificate that verified.
    pub certified: bool,
    /// ALPN chose `h2`.
    pub h2: bool,
}

tokio::task_local! {
    /// The [`Peer`] of the connection being served.
    static PEER: Peer;
}

/// The server configuration of `http_server.tls`, serving the certificates of `certs`.
///
/// With `client_ca_pem`, clients are asked for a certificate but may go without one (browsers
/// and SDKs on the client endpoints have none); one that is presented must chain to that CA,
/// else the handshake fails with a TLS alert.
pub fn server_config(config: &TlsConfig, certs: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, ConfigError> {
    let provider = Arc::new(crate::outbound::provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("http_server.tls", e.to_string()))?;
    let builder = if config.client_ca_pem.trim().is_empty() {
        builder.with_no_client_auth()
    } else {
        let pem = crate::tls::read_pem(CLIENT_CA_KEY, &config.client_ca_pem)?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ConfigError::invalid(CLIENT_CA_KEY, format!("not PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ConfigError::invalid(CLIENT_CA_KEY, format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ConfigError::invalid(CLIENT_CA_KEY, "no CERTIFICATE block found"));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| ConfigError::invalid(CLIENT_CA_KEY, e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder.with_cert_resolver(certs);
    // HTTP/1.1 unless asked: the WebSocket upgrade and the streaming transports need it, and a
    // browser that got `h2` would send its SSE and HTTP-streaming requests over HTTP/2 too.
    server.alpn_protocols =
        if config.http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    // Bound what a slow reader can make the server buffer in TLS records.
    server.send_tls13_tickets = 2;
    // A WebSocket's or stream's link seals and opens its records itself after the handshake
    // (`transport::records`, `tls_entry`): the traffic keys must be extractable.
    server.enable_secret_extraction = true;
    Ok(server)
}

/// What the finished handshake `conn` settled. The verifier has checked any client
/// certificate that got this far, so presence is verification.
pub fn peer(conn: &ServerConnection) -> Peer {
    Peer {
        certified: conn.peer_certificates().is_some_and(|chain| !chain.is_empty()),
        h2: conn.alpn_protocol() == Some(b"h2"),
    }
}

/// Runs `serve` (the entry of one connection, or one HTTP/2 stream) with its [`Peer`].
pub async fn with_peer<F: Future>(peer: Peer, serve: F) -> F::Output {
    PEER.scope(peer, serve).await
}

/// The [`Peer`] of the connection of the request being answered; the default (no certificate,
/// HTTP/1.1) outside a TLS connection.
pub fn peer_now() -> Peer {
    PEER.try_with(|peer| *peer).unwrap_or_default()
}

/// The refusal of a server API request without a verified client certificate, when
/// `client_ca_pem` asks for one: `None` when the request may go on.
pub fn api_refusal(config: &TlsConfig) -> Option<&'static str> {
    let required = config.enabled && !config.client_ca_pem.trim().is_empty();
    (required && !peer_now().certified)
        .then_some("the server API needs a client certificate signed by http_server.tls.client_ca_pem")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_api_needs_a_certified_peer_only_with_a_client_ca() {
        let with_ca = TlsConfig { enabled: true, client_ca_pem: "ca.pem".into(), ..Default::default() };
        assert!(api_refusal(&with_ca).is_some(), "no TLS connection: refused");
        let peer = |certified| Peer { certified, h2: false };
        assert!(with_peer(peer(false), async { api_refusal(&with_ca) }).await.is_some());
        assert_eq!(with_peer(peer(true), async { api_refusal(&with_ca) }).await, None);
        let without = TlsConfig { enabled: true, ..Default::default() };
        assert_eq!(api_refusal(&without), None);
        assert_eq!(api_refusal(&TlsConfig { enabled: false, ..with_ca }), None, "TLS off");
    }
}
