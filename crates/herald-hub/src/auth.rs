//! The JWT [`Authenticator`]: connection and subscription tokens checked with herald-auth's
//! [`TokenVerifier`], plus the anonymous-connection policy of the `client` config section.

use std::future::ready;

use herald_auth::{ConnectClaims, SubscribeClaims, TokenError, TokenVerifier};
use herald_proto::codes::*;
use herald_proto::{DisconnectReason, ErrorCode};

use crate::broker::BoxFuture;
use crate::config::{ClientConfig, ConfigError};
use crate::ports::{Authenticator, ConnectAttempt, Identity, Refusal};

/// Error 109 for a connection or subscription token whose `nbf` is still ahead: the code
/// Centrifugo answers and SDKs act on (fetch a new token, retry with backoff), with a message
/// that says what is wrong.
pub const ERROR_TOKEN_NOT_YET_VALID: ErrorCode =
    ErrorCode { code: ERROR_TOKEN_EXPIRED.code, message: "token not yet valid", temporary: false };

/// Disconnect 3005 (`DISCONNECT_EXPIRED`, as for an expired one) for a `refresh` token whose `nbf` is still ahead.
pub const DISCONNECT_TOKEN_NOT_YET_VALID: DisconnectReason =
    DisconnectReason::new(3005, "connection token not yet valid");

/// Authenticates clients by the tokens they present.
pub struct JwtAuthenticator {
    tokens: TokenVerifier,
    /// Verifier of subscription tokens when they have their own keys.
    sub_tokens: Option<TokenVerifier>,
    anonymous_without_token: bool,
    reject_anonymous_tokens: bool,
}

impl JwtAuthenticator {
    /// Builds the verifiers from `client.token` and `client.subscription_token`.
    pub fn new(cfg: &ClientConfig) -> Result<Self, ConfigError> {
        let tokens = TokenVerifier::new(&cfg.token, "client.token").map_err(ConfigError::from_message)?;
        let sub_tokens = if cfg.subscription_token.enabled {
            Some(
                TokenVerifier::new(&cfg.subscription_token, "client.subscription_token")
                    .map_err(ConfigError::from_message)?,
            )
        } else {
            None
        };
        Ok(JwtAuthenticator {
            tokens,
            sub_tokens,
            anonymous_without_token: cfg.allow_anonymous_connect_without_token,
            reject_anonymous_tokens: cfg.disallow_anonymous_connection_tokens,
        })
    }

    fn identify(&self, token: &str, now: i64) -> Result<Identity, Refusal> {
        if token.is_empty() {
            return if self.anonymous_without_token {
                Ok(Identity::default())
            } else {
                Err(DISCONNECT_BAD_REQUEST.into())
            };
        }
        let claims = match self.tokens.verify_connect(token, now) {
            Ok(c) => c,
            Err(TokenError::Expired) => return Err(ERROR_TOKEN_EXPIRED.into()),
            Err(TokenError::NotYetValid) => {
                tracing::debug!("connection token not yet valid (`nbf` is in the future)");
                return Err(ERROR_TOKEN_NOT_YET_VALID.into());
            }
            Err(TokenError::Invalid(e)) => {
                tracing::debug!(error = %e, "invalid connection token");
                return Err(DISCONNECT_INVALID_TOKEN.into());
            }
        };
        if claims.user.is_empty() && self.reject_anonymous_tokens {
            return Err(DISCONNECT_PERMISSION_DENIED.into());
        }
        Ok(identity(claims))
    }
}

/// A token's claims as an identity (tokens carry no connect data).
fn identity(claims: ConnectClaims) -> Identity {
    let expire_at = claims.connection_expires_at();
    Identity {
        user: claims.user,
        expire_at,
        info: claims.info,
        data: Default::default(),
        channels: claims.channels,
        subs: claims.subs,
        meta: claims.meta.map(|m| bytes::Bytes::from(m.get().to_owned())).unwrap_or_default(),
        server_refresh: false,
    }
}

impl Authenticator for JwtAuthenticator {
    fn connect<'a>(&'a self, attempt: ConnectAttempt<'a>) -> BoxFuture<'a, Result<Identity, Refusal>> {
        Box::pin(ready(self.identify(&attempt.request.token, attempt.now)))
    }

    fn refresh_token(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        self.tokens.verify_connect(token, now).map(identity)
    }

    fn subscription_token(&self, token: &str, now: i64) -> Result<SubscribeClaims, TokenError> {
        self.sub_tokens.as_ref().unwrap_or(&self.tokens).verify_subscribe(token, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_key_is_named_by_its_config_key() {
        let mut cfg = ClientConfig::default();
        cfg.subscription_token.enabled = true;
        cfg.subscription_token.rsa_public_key = "not a pem".into();
        let err = JwtAuthenticator::new(&cfg).err().expect("rejected");
        assert_eq!(err.key, "client.subscription_token.rsa_public_key");
        assert!(err.problem.starts_with("invalid PEM RSA public key"), "{err}");
        assert!(err.to_string().starts_with("client.subscription_token.rsa_public_key: invalid PEM"), "{err}");
    }
}
