//! Fuzz harness for JWT verification in `herald-auth`: the first thing a connecting client's
//! bytes reach after the frame and command decoders. Shared by the cargo-fuzz target
//! `fuzz_targets/jwt.rs` and the stable smoke test `crates/herald-auth/tests/fuzz_smoke.rs`
//! (which includes this file with `#[path]`).
//!
//! Random bytes as a token only exercise the header and signature checks, so the input is also
//! used as the claims payload of a token signed with the test secret: that reaches the claims
//! parser with arbitrary JSON.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_auth::{ConnectClaims, SubscribeClaims, TokenConfig, TokenError, TokenVerifier};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::de::IgnoredAny;

/// HMAC secret of the verifiers (and of the seeds in the smoke test).
pub const SECRET: &str = "fuzz-secret";
/// "Now" for expiry checks.
pub const NOW: i64 = 1_800_000_000;

/// One verifier without claim checks, one that also requires `aud` and `iss`.
pub struct Verifiers {
    plain: TokenVerifier,
    strict: TokenVerifier,
}

impl Verifiers {
    pub fn new() -> Self {
        let plain = TokenConfig { hmac_secret_key: SECRET.into(), ..Default::default() };
        let strict = TokenConfig { audience: "fuzz-aud".into(), issuer: "fuzz-iss".into(), ..plain.clone() };
        Verifiers {
            plain: TokenVerifier::new(&plain, "client.token").expect("plain verifier"),
            strict: TokenVerifier::new(&strict, "client.token").expect("strict verifier"),
        }
    }
}

impl Default for Verifiers {
    fn default() -> Self {
        Self::new()
    }
}

/// A token with header `{"alg":"HS256","typ":"JWT"}` and `payload` as its claims, signed with
/// [`SECRET`].
pub fn signed(payload: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signing");
    format!("{message}.{signature}")
}

/// Feeds `data` as a raw token and as the claims of a signed token.
pub fn jwt(v: &Verifiers, data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    check(v, &raw, None);
    check(v, &signed(data), Some(data));
}

/// `payload`: the claims, when the token is known to be signed correctly.
fn check(v: &Verifiers, token: &str, payload: Option<&[u8]>) {
    let connect = v.plain.verify_connect(token, NOW);
    let subscribe = v.plain.verify_subscribe(token, NOW);
    // Deterministic: the same token gets the same answer.
    assert_eq!(format!("{connect:?}"), format!("{:?}", v.plain.verify_connect(token, NOW)));
    assert_eq!(format!("{subscribe:?}"), format!("{:?}", v.plain.verify_subscribe(token, NOW)));
    for err in [connect.as_ref().err(), subscribe.as_ref().err()].into_iter().flatten() {
        if let TokenError::Invalid(why) = err {
            assert!(!why.is_empty(), "an invalid token says why");
        }
        assert!(!err.to_string().is_empty());
    }
    if let Ok(c) = &connect {
        accepted_payload(token, payload);
        check_connect(c);
        // A connection token never names a channel; a subscription token must.
        assert!(subscribe.is_err(), "one token accepted as both kinds: {token:?}");
    }
    if let Ok(s) = &subscribe {
        accepted_payload(token, payload);
        check_subscribe(s);
    }

    // Audience and issuer checks can only take tokens away, never add or change one.
    if let Ok(strict) = v.strict.verify_connect(token, NOW) {
        let plain = connect.as_ref().expect("accepted with aud/iss checks, rejected without");
        assert_eq!(format!("{strict:?}"), format!("{plain:?}"));
    }
    if let Ok(strict) = v.strict.verify_subscribe(token, NOW) {
        let plain = subscribe.as_ref().expect("accepted with aud/iss checks, rejected without");
        assert_eq!(format!("{strict:?}"), format!("{plain:?}"));
    }
}

/// An accepted token's claims are a JSON object. Only structurally: strings inside claims the
/// verifier skips are not decoded, so invalid UTF-8 there passes (Go's `encoding/json` does not
/// fail on it either).
fn accepted_payload(token: &str, payload: Option<&[u8]>) {
    let decoded;
    let payload = match payload {
        Some(p) => p,
        None => {
            let part = token.split('.').nth(1).expect("an accepted token has a payload part");
            decoded = URL_SAFE_NO_PAD.decode(part).expect("an accepted payload is base64url");
            &decoded
        }
    };
    let object: Result<HashMap<String, IgnoredAny>, _> = serde_json::from_slice(payload);
    assert!(object.is_ok(), "accepted claims are not a JSON object: {:?}", String::from_utf8_lossy(payload));
}

fn check_connect(c: &ConnectClaims) {
    assert!(c.exp.is_none_or(|exp| exp > NOW), "an expired token was accepted: exp {:?}", c.exp);
    if let Some(expires) = c.connection_expires_at() {
        assert!(expires > 0, "a connection cannot expire at or before the epoch: {expires}");
    }
}

fn check_subscribe(s: &SubscribeClaims) {
    assert!(!s.channel.is_empty(), "a subscription token without a channel was accepted");
    assert!(s.exp.is_none_or(|exp| exp > NOW), "an expired token was accepted: exp {:?}", s.exp);
}
