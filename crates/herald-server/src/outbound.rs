//! The connector of Herald's HTTP calls to the logic layer (proxies, webhooks, gateway routes):
//! `http://` as plain TCP, `https://` through rustls with ALPN offering `h2` then `http/1.1`, so
//! a backend that speaks HTTP/2 gets one multiplexed connection and the others keep HTTP/1.1
//! keep-alive (hyper's client picks the version the handshake settled on).
//!
//! Which certificates are trusted comes from the unified TLS object of the call site
//! ([`ClientTlsOptions`]): off, the platform's roots (read once per process) and the URL's
//! host name; on, its CA, client certificate, server name or `insecure_skip_verify`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use herald_hub::proxy::config::ClientTlsOptions;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config_error::ConfigError;

/// The connector every logic-layer client is built on.
pub type Connector = HttpsConnector<HttpConnector>;

/// A connector for calls made with `tls` (the object at config key `key`, for messages).
/// `connect_timeout` bounds the TCP connect alone (the callers bound the whole call).
pub fn connector(
    tls: &ClientTlsOptions,
    key: &str,
    connect_timeout: Option<Duration>,
) -> Result<Connector, ConfigError> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(connect_timeout);
    // The TLS layer takes `https://`; without this the TCP layer would refuse it.
    http.enforce_http(false);
    let config = client_config(tls, key)?;
    let builder = HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let builder = if tls.enabled && !tls.server_name.is_empty() {
        let name = ServerName::try_from(tls.server_name.clone())
            .map_err(|e| ConfigError::invalid(format!("{key}.server_name"), format!("{:?}: {e}", tls.server_name)))?;
        builder.with_server_name_resolver(FixedServerNameResolver::new(name))
    } else {
        builder
    };
    Ok(builder.enable_all_versions().wrap_connector(http))
}

/// An error of an outbound call and its causes on one line: hyper's own text ("client error
/// (Connect)") hides what failed, such as a certificate the backend's CA did not sign.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The rustls client configuration of `tls` (ALPN is set by the connector builder).
fn client_config(tls: &ClientTlsOptions, key: &str) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(key, e.to_string()))?;
    if !tls.enabled {
        return Ok(builder.with_root_certificates(platform_roots()).with_no_client_auth());
    }
    if !tls.client_ca_pem.trim().is_empty() {
        return Err(ConfigError::invalid(
            format!("{key}.client_ca_pem"),
            "verifies the certificates of clients connecting to a server; an outgoing connection has none to \
             verify (use server_ca_pem for the backend's CA)",
        ));
    }
    let builder = if tls.insecure_skip_verify {
        if !tls.server_ca_pem.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.insecure_skip_verify"),
                "true turns off the verification server_ca_pem asks for; set one of them",
            ));
        }
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else if tls.server_ca_pem.trim().is_empty() {
        builder.with_root_certificates(platform_roots())
    } else {
        let ca_key = format!("{key}.server_ca_pem");
        let mut roots = RootCertStore::empty();
        for cert in certificates(&tls.server_ca_pem, &ca_key)? {
            roots
                .add(cert)
                .map_err(|e| ConfigError::invalid(ca_key.as_str(), format!("unusable CA certificate: {e}")))?;
        }
        builder.with_root_certificates(roots)
    };
    match (tls.cert_pem.trim().is_empty(), tls.key_pem.trim().is_empty()) {
        (true, true) => Ok(builder.with_no_client_auth()),
        (false, false) => {
            let chain = certificates(&tls.cert_pem, &format!("{key}.cert_pem"))?;
            let key_key = format!("{key}.key_pem");
            let pem = read(&tls.key_pem, &key_key)?;
            let private = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| ConfigError::invalid(key_key.as_str(), format!("not a PEM private key: {e}")))?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| ConfigError::invalid(key_key.as_str(), format!("unusable with cert_pem: {e}")))
        }
        (true, false) => Err(ConfigError::invalid(format!("{key}.cert_pem"), "needed with key_pem")),
        (false, true) => Err(ConfigError::invalid(format!("{key}.key_pem"), "needed with cert_pem")),
    }
}

/// The bytes of a PEM value (text, base64 or path), with errors naming `key`.
fn read(value: &str, key: &str) -> Result<Vec<u8>, ConfigError> {
    crate::tls::read_pem("pem", value).map_err(|e| match e {
        ConfigError::Invalid { problem, .. } => ConfigError::invalid(key, problem),
        other => other,
    })
}

fn certificates(value: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(value, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::invalid(key, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(key, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// The platform's trusted roots (`SSL_CERT_FILE` / `SSL_CERT_DIR` or the system store), read
/// once: a node with many proxies or routes must not parse the system bundle for each.
fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "a platform root certificate could not be read");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "no platform root certificates found: an https:// backend can be reached only with its CA in \
                     its tls object's server_ca_pem"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// The crypto provider of outgoing TLS and of the listening side's configuration
/// (`crate::tls_options`): *ring*, as in `crate::tls`.
#[allow(deprecated)]
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// `insecure_skip_verify`: any certificate and name are accepted; the handshake signatures are
/// still checked, so the session is at least with the holder of the certificate shown.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tls::test_pair as pair;

    fn on() -> ClientTlsOptions {
        ClientTlsOptions { enabled: true, ..Default::default() }
    }

    #[test]
    fn options_are_checked_and_errors_name_their_key() {
        let key = "proxies[0].http.tls";
        let (cert, private) = pair("backend.test");
        assert!(connector(&ClientTlsOptions::default(), key, None).is_ok(), "off: the platform's roots");
        assert!(connector(&ClientTlsOptions { server_ca_pem: cert.clone(), ..on() }, key, None).is_ok());
        let client_auth = ClientTlsOptions { cert_pem: cert.clone(), key_pem: private.clone(), ..on() };
        assert!(connector(&client_auth, key, None).is_ok());
        let err = |tls: ClientTlsOptions| connector(&tls, key, None).expect_err("refused");
        assert_eq!(err(ClientTlsOptions { cert_pem: cert.clone(), ..on() }).key(), Some("proxies[0].http.tls.key_pem"));
        assert_eq!(
            err(ClientTlsOptions { key_pem: private.clone(), ..on() }).key(),
            Some("proxies[0].http.tls.cert_pem")
        );
        assert_eq!(
            err(ClientTlsOptions { server_ca_pem: private, ..on() }).key(),
            Some("proxies[0].http.tls.server_ca_pem"),
            "a key is no CA certificate"
        );
        let missing = err(ClientTlsOptions { server_ca_pem: "/no/such/ca.pem".into(), ..on() });
        assert_eq!(missing.key(), Some("proxies[0].http.tls.server_ca_pem"));
        assert!(missing.to_string().contains("neither a PEM text"), "{missing}");
        assert_eq!(
            err(ClientTlsOptions { client_ca_pem: cert.clone(), ..on() }).key(),
            Some("proxies[0].http.tls.client_ca_pem")
        );
        assert_eq!(
            err(ClientTlsOptions { insecure_skip_verify: true, server_ca_pem: cert, ..on() }).key(),
            Some("proxies[0].http.tls.insecure_skip_verify")
        );
        assert_eq!(
            err(ClientTlsOptions { server_name: "not a name!".into(), ..on() }).key(),
            Some("proxies[0].http.tls.server_name")
        );
        // Off, the other options are not used (Centrifugo's behaviour), so not checked either.
        assert!(
            connector(&ClientTlsOptions { server_ca_pem: "/no/such".into(), ..Default::default() }, key, None).is_ok()
        );
    }
}
