//! Token verification errors.

use std::fmt;

/// Why a token was rejected.
///
/// The transports map these to Centrifugo's outcomes: for a connection token `Invalid` is
/// disconnect 3500 and `Expired` is error 109; for a subscription token `Invalid` is error 103
/// and `Expired` is error 109. `NotYetValid` gets the same code as `Expired` (Centrifugo answers
/// a future `nbf` with 109, and SDKs fetch a new token on it), with its own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The token cannot be accepted: malformed, bad signature, algorithm not allowed by the
    /// configured keys (including `none`), `aud`/`iss` mismatch, a claim of the wrong type, bad
    /// base64 in `b64info`/`b64data`, a connection token carrying a `channel` claim, or a
    /// subscription token without one. The text says which, for logs.
    Invalid(String),
    /// `exp` is not after now.
    Expired,
    /// `nbf` is after now (and `exp`, if any, is not past).
    NotYetValid,
}

impl TokenError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        TokenError::Invalid(msg.into())
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Invalid(msg) => write!(f, "invalid token: {msg}"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::NotYetValid => f.write_str("token not yet valid (`nbf` is in the future)"),
        }
    }
}

impl std::error::Error for TokenError {}
