//! JWT verification for connection and subscription tokens (Centrifugo claim semantics).
//!
//! [`TokenVerifier`] checks a token's signature with the keys of a [`TokenConfig`]
//! (HS256/384/512 with `hmac_secret_key`, RS256/384/512 with `rsa_public_key`, ES256/384 with
//! `ecdsa_public_key`), then applies Centrifugo's claim rules itself: `exp`/`nbf` without leeway,
//! optional `aud`/`iss` checks, the configurable user id claim, raw JSON `info`/`data` with their
//! base64 variants, `channels`/`subs`/`meta` for connection tokens and `channel`/`client`/`override`
//! for subscription tokens.
//!
//! [`sign_hmac`] produces HMAC-signed tokens (for `herald gentoken` and tests).

mod claims;
mod config;
mod error;
mod parse;
mod verify;

pub use claims::{ConnectClaims, Override, SubOptions, SubscribeClaims};
pub use config::TokenConfig;
pub use error::TokenError;
pub use verify::{TokenVerifier, sign_hmac};

#[cfg(test)]
mod tests;
