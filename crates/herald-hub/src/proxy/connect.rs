//! The connect proxy as an [`Authenticator`]: a client that connects without a token is let in
//! (or not) by the backend; a client with a token is checked by the JWT authenticator, as in
//! Centrifugo (the connect proxy is asked only when no token is given).

use std::sync::Arc;

use bytes::Bytes;
use herald_auth::{SubscribeClaims, TokenError};
use herald_proto::Encoding;
use herald_proto::codes::ERROR_INTERNAL;

use super::wire::{self, Common, ConnectResult};
use super::{Backend, Decision, ProxyKind};
use crate::auth::JwtAuthenticator;
use crate::broker::BoxFuture;
use crate::ports::{Authenticator, ConnectAttempt, Identity, Refusal};

/// Tokens first; without one, the backend.
pub struct ProxyAuthenticator {
    jwt: JwtAuthenticator,
    backend: Arc<Backend>,
}

impl ProxyAuthenticator {
    pub fn new(jwt: JwtAuthenticator, backend: Arc<Backend>) -> Self {
        ProxyAuthenticator { jwt, backend }
    }

    async fn ask(&self, attempt: ConnectAttempt<'_>) -> Result<Identity, Refusal> {
        let spec = self.backend.table().connect().expect("checked by the caller");
        let req = attempt.request;
        let (protocol, binary) = protocol_of(attempt.encoding, spec.binary);
        // Real headers first; emulated ones (set by the SDK, untrusted) only where no real
        // header of that name came.
        let mut headers: Vec<(String, String)> = attempt.headers.to_vec();
        for (name, value) in &req.headers {
            let name = name.to_ascii_lowercase();
            if spec.emulated_headers.contains(&name) && !headers.iter().any(|(n, _)| *n == name) {
                headers.push((name, value.clone()));
            }
        }
        let body = wire::ConnectRequest {
            common: Common {
                client: attempt.client.to_string(),
                transport: attempt.conn.transport().name(),
                protocol,
                encoding: if binary { "binary" } else { "json" },
                user: "",
                meta: None,
            },
            name: &req.name,
            version: &req.version,
            payload: wire::payload(&req.data, binary),
            channels: req.subs.keys().map(String::as_str).collect(),
        };
        let body = serde_json::to_vec(&body).expect("serializable");
        let decision = self
            .backend
            .call::<ConnectResult>(spec, ProxyKind::Connect, body, &headers, attempt.conn.peer().ip())
            .await
            .map_err(|_| Refusal::Error(ERROR_INTERNAL))?;
        let result = match decision {
            Decision::Allow(r) => r,
            Decision::Refuse(r) => return Err(r),
        };
        identity(result, self.backend.table().refresh().is_some()).map_err(|e| {
            tracing::warn!(error = %e, "connect proxy answer refused");
            Refusal::Error(ERROR_INTERNAL)
        })
    }
}

/// `protocol` as sent to backends, and whether payloads go as base64.
pub(crate) fn protocol_of(encoding: Encoding, binary_encoding: bool) -> (&'static str, bool) {
    match encoding {
        Encoding::Json => ("json", binary_encoding),
        Encoding::Protobuf => ("protobuf", true),
    }
}

fn identity(r: ConnectResult, refresh_proxy: bool) -> Result<Identity, String> {
    let mut subs = std::collections::BTreeMap::new();
    for (channel, options) in &r.subs {
        subs.insert(channel.clone(), options.options()?);
    }
    let expire_at = (r.expire_at > 0).then_some(r.expire_at);
    Ok(Identity {
        user: r.user,
        expire_at,
        info: wire::bytes_of(r.info.as_deref(), r.b64info.as_deref())?,
        data: wire::bytes_of(r.data.as_deref(), r.b64data.as_deref())?,
        channels: r.channels,
        subs,
        meta: r.meta.map(|m| Bytes::from(m.get().to_owned())).unwrap_or_default(),
        // The refresh proxy extends connections the connect proxy let in; the client is not
        // told to refresh by itself (it has no token to refresh with).
        server_refresh: refresh_proxy && expire_at.is_some(),
    })
}

impl Authenticator for ProxyAuthenticator {
    fn connect<'a>(&'a self, attempt: ConnectAttempt<'a>) -> BoxFuture<'a, Result<Identity, Refusal>> {
        if !attempt.request.token.is_empty() || self.backend.table().connect().is_none() {
            return self.jwt.connect(attempt);
        }
        Box::pin(self.ask(attempt))
    }

    fn refresh_token(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        self.jwt.refresh_token(token, now)
    }

    fn subscription_token(&self, token: &str, now: i64) -> Result<SubscribeClaims, TokenError> {
        self.jwt.subscription_token(token, now)
    }
}
