//! TLS to Redis (`rediss://`): the CA that signs the servers' certificates, a client
//! certificate for mutual TLS, or no verification at all, applied the same way to standalone
//! instances, Sentinel masters and Redis Cluster nodes. Without a CA the system's roots are
//! used.

/// TLS material in PEM form (already read from files by the caller).
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA bundle the server certificates must chain to, instead of the system roots.
    pub root_ca: Option<Vec<u8>>,
    /// Client certificate and key, for servers that require them (`tls-auth-clients yes`).
    pub client_cert: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

impl TlsOptions {
    /// The certificates the redis crate takes, when any are set.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        if self.root_ca.is_none() && self.client_cert.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: self
                .client_cert
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() }),
            root_cert: self.root_ca.clone(),
        })
    }

    /// The address as the redis crate reads it: `#insecure` marks a `rediss://` address whose
    /// certificate is not verified.
    pub(crate) fn address(&self, address: &str) -> String {
        if self.insecure_skip_verify && address.starts_with("rediss://") && !address.contains('#') {
            format!("{address}#insecure")
        } else {
            address.to_owned()
        }
    }

    /// A client for one instance.
    pub(crate) fn client(&self, address: &str) -> redis::RedisResult<redis::Client> {
        let address = self.address(address);
        match self.certificates() {
            Some(certs) if address.starts_with("rediss://") => redis::Client::build_with_tls(address.as_str(), certs),
            _ => redis::Client::open(address.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TlsOptions;

    #[test]
    fn insecure_marks_only_tls_addresses() {
        let t = TlsOptions { insecure_skip_verify: true, ..Default::default() };
        assert_eq!(t.address("rediss://127.0.0.1:7000"), "rediss://127.0.0.1:7000#insecure");
        assert_eq!(t.address("redis://127.0.0.1:7000"), "redis://127.0.0.1:7000");
        assert!(TlsOptions::default().certificates().is_none());
        let t = TlsOptions { root_ca: Some(b"pem".to_vec()), ..Default::default() };
        assert!(t.certificates().is_some_and(|c| c.client_tls.is_none()));
    }
}
