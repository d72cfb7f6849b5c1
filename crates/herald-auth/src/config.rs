//! Token settings (`client.token`, `client.subscription_token`), Centrifugo v6 option names.

use serde::{Deserialize, Serialize};

/// Keys and claim checks for verifying JWTs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Only for `client.subscription_token`: use these settings for subscription tokens instead
    /// of `client.token`.
    pub enabled: bool,
    /// Secret for HS256/384/512.
    pub hmac_secret_key: String,
    /// PEM-encoded RSA public key (RS256/384/512).
    pub rsa_public_key: String,
    /// PEM-encoded ECDSA public key (ES256/384).
    pub ecdsa_public_key: String,
    /// Required `aud` claim, when set.
    pub audience: String,
    /// Required `iss` claim, when set.
    pub issuer: String,
    /// Claim holding the user id (default `sub`).
    pub user_id_claim: String,
}

impl TokenConfig {
    /// True when at least one verification key is configured.
    pub fn has_keys(&self) -> bool {
        !self.hmac_secret_key.is_empty() || !self.rsa_public_key.is_empty() || !self.ecdsa_public_key.is_empty()
    }
}
