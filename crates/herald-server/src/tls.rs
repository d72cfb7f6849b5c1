//! TLS on the listening port (`http_server.tls`): the rustls server configuration and the
//! certificate resolver that reads the PEM files again when they change on disk. What happens
//! to a connection after its handshake is [`crate::tls_entry`]'s.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::config_error::ConfigError;

/// How often, at most, a handshake checks whether the certificate files changed.
const RECHECK: Duration = Duration::from_secs(1);

/// The TLS side of the listener: what accepts handshakes.
pub struct Tls {
    acceptor: TlsAcceptor,
    certs: Arc<Certificates>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Builds the server configuration from `http_server.tls`; `None` when TLS is off. Errors
    /// name the key whose value is wrong.
    pub fn from_config(config: &TlsConfig) -> Result<Option<Tls>, ConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        let cert = PemSource::parse("http_server.tls.cert_pem", &config.cert_pem)?;
        let key = PemSource::parse("http_server.tls.key_pem", &config.key_pem)?;
        let certs = Arc::new(Certificates::load(cert, key)?);
        let server = crate::tls_options::server_config(config, certs.clone())?;
        Ok(Some(Tls { acceptor: TlsAcceptor::from(Arc::new(server)), certs }))
    }

    /// The certificate served now (tests, `info`).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.certs.current()
    }

    /// Reads the certificate files now if they changed; true when a new pair is served from now
    /// on (configuration reload).
    pub fn reread(&self) -> bool {
        self.certs.refresh(true)
    }

    /// What runs the handshakes (`crate::tls_entry`).
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// The bytes of a non-empty PEM value (PEM text, base64 or file path), read once: used for the
/// TLS options of outgoing connections (`engine.redis.tls`). Errors name `key`.
pub(crate) fn read_pem(key: &'static str, value: &str) -> Result<Vec<u8>, ConfigError> {
    PemSource::parse(key, value)?.read()
}

/// Where a PEM value comes from: Centrifugo accepts the PEM text, its base64 encoding, or the
/// path of a file.
#[derive(Debug, Clone, PartialEq)]
enum PemSource {
    Inline { key: &'static str, pem: Vec<u8> },
    File { key: &'static str, path: PathBuf },
}

impl PemSource {
    fn parse(key: &'static str, value: &str) -> Result<PemSource, ConfigError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(ConfigError::invalid(key, "required when http_server.tls.enabled is true"));
        }
        if value.contains("-----BEGIN") {
            return Ok(PemSource::Inline { key, pem: value.as_bytes().to_vec() });
        }
        let path = PathBuf::from(value);
        if path.is_file() {
            return Ok(PemSource::File { key, path });
        }
        match base64::engine::general_purpose::STANDARD.decode(value) {
            Ok(pem) if pem.windows(10).any(|w| w == b"-----BEGIN") => Ok(PemSource::Inline { key, pem }),
            _ => Err(ConfigError::invalid(
                key,
                format!("{value:?} is neither a PEM text, its base64 encoding, nor the path of a readable file"),
            )),
        }
    }

    fn key(&self) -> &'static str {
        match self {
            PemSource::Inline { key, .. } | PemSource::File { key, .. } => key,
        }
    }

    fn read(&self) -> Result<Vec<u8>, ConfigError> {
        match self {
            PemSource::Inline { pem, .. } => Ok(pem.clone()),
            PemSource::File { key, path } => std::fs::read(path)
                .map_err(|e| ConfigError::invalid(*key, format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// What changes when the file is replaced or rewritten; `None` for inline PEM.
    fn stamp(&self) -> Option<(SystemTime, u64)> {
        match self {
            PemSource::Inline { .. } => None,
            PemSource::File { path, .. } => {
                std::fs::metadata(path).ok().and_then(|m| Some((m.modified().ok()?, m.len())))
            }
        }
    }
}

/// The certificate and key in use, and where to read them again.
struct Certificates {
    cert: PemSource,
    key: PemSource,
    current: RwLock<Arc<CertifiedKey>>,
    /// When the files were last looked at, and what they looked like when last read.
    checked: Mutex<(Instant, Stamps)>,
}

type Stamps = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates").field("cert", &self.cert.key()).finish_non_exhaustive()
    }
}

impl Certificates {
    fn load(cert: PemSource, key: PemSource) -> Result<Certificates, ConfigError> {
        let stamps = (cert.stamp(), key.stamp());
        let current = certified_key(&cert, &key)?;
        Ok(Certificates { cert, key, current: RwLock::new(current), checked: Mutex::new((Instant::now(), stamps)) })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the files again if they changed since they were last read (looked at no more than
    /// once per [`RECHECK`]). A pair that does not load (a half-written file, a key that does
    /// not match) is logged and the old one stays in use; it is tried again when a file changes.
    /// `force`: look now, however recently the files were looked at. True when a new pair was
    /// loaded.
    fn refresh(&self, force: bool) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if !force && checked.0.elapsed() < RECHECK {
            return false;
        }
        checked.0 = Instant::now();
        let stamps = (self.cert.stamp(), self.key.stamp());
        if stamps == checked.1 {
            return false;
        }
        checked.1 = stamps;
        match certified_key(&self.cert, &self.key) {
            Ok(new) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = new;
                metrics::counter!("herald_tls_certificate_reloads_total", "outcome" => "ok").increment(1);
                tracing::info!("TLS certificate files changed: the new certificate is served from now on");
                true
            }
            Err(e) => {
                metrics::counter!("herald_tls_certificate_reloads_total", "outcome" => "error").increment(1);
                tracing::warn!(error = %e, "TLS certificate files changed but do not load; still serving the previous certificate");
                false
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.refresh(false);
        Some(self.current())
    }
}

/// The crypto provider: *ring*, which builds without a C toolchain step (aws-lc-rs needs cmake
/// and adds about 2 MB to the binary). rustls deprecates it for lacking post-quantum key
/// exchange (X25519MLKEM768); switching is the `aws-lc-rs` feature and this function.
#[allow(deprecated)]
fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Parses and checks a certificate chain and its private key.
fn certified_key(cert: &PemSource, key: &PemSource) -> Result<Arc<CertifiedKey>, ConfigError> {
    let cert_pem = cert.read()?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::invalid(cert.key(), format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(ConfigError::invalid(cert.key(), "no CERTIFICATE block found"));
    }
    let key_pem = key.read()?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ConfigError::invalid(key.key(), format!("not a PEM private key: {e}")))?;
    let provider = provider();
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| ConfigError::invalid(key.key(), format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| ConfigError::invalid(key.key(), format!("does not match the certificate in cert_pem: {e}")))?;
    Ok(Arc::new(certified))
}

/// A self-signed certificate for `name` and its key, in PEM, for the TLS unit tests here and in
/// `crate::outbound`.
#[cfg(test)]
pub(crate) fn test_pair(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_pair as pair;

    fn enabled(cert: &str, key: &str) -> TlsConfig {
        TlsConfig { enabled: true, cert_pem: cert.into(), key_pem: key.into(), ..Default::default() }
    }

    #[test]
    fn pem_text_base64_or_file() {
        let (cert, key) = pair("localhost");
        assert!(Tls::from_config(&enabled(&cert, &key)).unwrap().is_some());
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(Tls::from_config(&enabled(&b64(&cert), &b64(&key))).unwrap().is_some());
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &cert).unwrap();
        std::fs::write(&k, &key).unwrap();
        let tls = Tls::from_config(&enabled(c.to_str().unwrap(), k.to_str().unwrap())).unwrap().unwrap();
        assert_eq!(tls.current().cert[0].as_ref(), CertificateDer::from_pem_slice(cert.as_bytes()).unwrap().as_ref());
        assert!(Tls::from_config(&TlsConfig::default()).unwrap().is_none(), "off by default");
    }

    #[test]
    fn bad_values_name_their_key() {
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("localhost");
        let err = |c: &str, k: &str| Tls::from_config(&enabled(c, k)).unwrap_err();
        assert_eq!(err("", &key).key(), Some("http_server.tls.cert_pem"));
        assert_eq!(err(&cert, "/no/such/file").key(), Some("http_server.tls.key_pem"));
        assert!(err(&cert, "/no/such/file").to_string().contains("neither a PEM text"));
        assert_eq!(err(&key, &key).key(), Some("http_server.tls.cert_pem"), "a key is no certificate");
        let mismatch = err(&cert, &other_key);
        assert_eq!(mismatch.key(), Some("http_server.tls.key_pem"));
        assert!(mismatch.to_string().contains("does not match"), "{mismatch}");
    }

    #[test]
    fn changed_files_are_read_again_and_a_bad_change_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (cert1, key1) = pair("one.test");
        std::fs::write(&c, &cert1).unwrap();
        std::fs::write(&k, &key1).unwrap();
        let certs = Certificates::load(
            PemSource::parse("http_server.tls.cert_pem", c.to_str().unwrap()).unwrap(),
            PemSource::parse("http_server.tls.key_pem", k.to_str().unwrap()).unwrap(),
        )
        .unwrap();
        let first = certs.current();
        let force = || certs.checked.lock().unwrap().0 -= RECHECK;
        // A certificate without its new key: refused, the old pair stays.
        let (cert2, key2) = pair("two.test");
        std::fs::write(&c, &cert2).unwrap();
        force();
        certs.refresh(false);
        assert!(Arc::ptr_eq(&certs.current(), &first));
        // Then the key: the new pair is used.
        std::fs::write(&k, &key2).unwrap();
        force();
        certs.refresh(false);
        let second = certs.current();
        assert_eq!(second.cert[0].as_ref(), CertificateDer::from_pem_slice(cert2.as_bytes()).unwrap().as_ref());
        // Unchanged files are not read again.
        force();
        certs.refresh(false);
        assert!(Arc::ptr_eq(&certs.current(), &second));
    }
}
