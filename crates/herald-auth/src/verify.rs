//! Signature checks and Centrifugo claim rules.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde::de::DeserializeSeed;
use serde_json::value::RawValue;

use crate::claims::{ConnectClaims, SubOptions, SubscribeClaims};
use crate::config::TokenConfig;
use crate::error::TokenError;
use crate::parse::{ClaimsSeed, Header, Kind, RawClaims, RawSubOptions};

/// Verifies connection and subscription JWTs against one [`TokenConfig`].
///
/// Keys are parsed once, in [`TokenVerifier::new`]; verification only reads `self`, so one
/// verifier can be shared between threads.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
    audience: String,
    issuer: String,
    user_claim: String,
}

impl TokenVerifier {
    /// Builds a verifier from `cfg`, parsing its PEM keys.
    ///
    /// `key_prefix` is the config path of `cfg` (e.g. `client.token`), used to name the bad key
    /// in errors, e.g. `client.token.rsa_public_key: invalid PEM RSA public key: ...`.
    ///
    /// A config without keys is accepted; such a verifier rejects every token as invalid
    /// (see [`TokenVerifier::has_keys`]).
    pub fn new(cfg: &TokenConfig, key_prefix: &str) -> Result<Self, String> {
        let name = |key: &str| {
            if key_prefix.is_empty() { key.to_owned() } else { format!("{key_prefix}.{key}") }
        };

        let hmac = (!cfg.hmac_secret_key.is_empty()).then(|| DecodingKey::from_secret(cfg.hmac_secret_key.as_bytes()));

        let rsa = if cfg.rsa_public_key.is_empty() {
            None
        } else {
            let pem = cfg.rsa_public_key.as_bytes();
            reject_private_pem(&cfg.rsa_public_key)
                .and_then(|()| DecodingKey::from_rsa_pem(pem).map_err(|e| e.to_string()))
                .map(Some)
                .map_err(|e| format!("{}: invalid PEM RSA public key: {e}", name("rsa_public_key")))?
        };

        let ecdsa = if cfg.ecdsa_public_key.is_empty() {
            None
        } else {
            let pem = cfg.ecdsa_public_key.as_bytes();
            reject_private_pem(&cfg.ecdsa_public_key)
                .and_then(|()| DecodingKey::from_ec_pem(pem).map_err(|e| e.to_string()))
                .and_then(|key| {
                    // The PEM parser does not check the point itself; building a verifier does
                    // (a verifier accepts the key if it is on P-256 or P-384).
                    let usable = [Algorithm::ES256, Algorithm::ES384]
                        .into_iter()
                        .any(|alg| jsonwebtoken::crypto::verify("", b"", &key, alg).is_ok());
                    if usable { Ok(key) } else { Err("not a P-256 or P-384 public key".to_owned()) }
                })
                .map(Some)
                .map_err(|e| format!("{}: invalid PEM ECDSA public key: {e}", name("ecdsa_public_key")))?
        };

        let user_claim = if cfg.user_id_claim.is_empty() { "sub" } else { &cfg.user_id_claim };

        Ok(TokenVerifier {
            hmac,
            rsa,
            ecdsa,
            audience: cfg.audience.clone(),
            issuer: cfg.issuer.clone(),
            user_claim: user_claim.to_owned(),
        })
    }

    /// True when at least one verification key is configured.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ecdsa.is_some()
    }

    /// Verifies a connection token at `now_unix` (Unix seconds).
    ///
    /// Besides the common checks, a non-empty `channel` claim makes the token invalid, and the
    /// `channels`, `subs` and `meta` claims are read.
    pub fn verify_connect(&self, token: &str, now_unix: i64) -> Result<ConnectClaims, TokenError> {
        let payload = self.verified_payload(token)?;
        let raw = self.claims(&payload, Kind::Connect)?;
        if raw.channel.as_deref().is_some_and(|c| !c.is_empty()) {
            return Err(TokenError::invalid("connection token must not have a `channel` claim"));
        }
        self.check_common(&raw, now_unix)?;

        let info = info_bytes(raw.info, raw.b64info.as_deref(), "b64info").map_err(TokenError::Invalid)?;
        let mut subs = BTreeMap::new();
        for (channel, opts) in raw.subs {
            let opts = sub_options(opts.map(|o| o.0).unwrap_or_default())
                .map_err(|e| TokenError::Invalid(format!("subs[{channel:?}]: {e}")))?;
            subs.insert(channel, opts);
        }
        Ok(ConnectClaims {
            user: raw.user.unwrap_or_default(),
            exp: raw.exp,
            expire_at: raw.expire_at,
            info,
            channels: raw.channels,
            subs,
            meta: raw.meta,
        })
    }

    /// Verifies a subscription token at `now_unix` (Unix seconds).
    ///
    /// Besides the common checks, the `channel` claim is required (non-empty), and the `client`,
    /// `data`/`b64data` and `override` claims are read. Matching `channel`, `sub` and `client`
    /// against the request is up to the caller.
    pub fn verify_subscribe(&self, token: &str, now_unix: i64) -> Result<SubscribeClaims, TokenError> {
        let payload = self.verified_payload(token)?;
        let raw = self.claims(&payload, Kind::Subscribe)?;
        let channel = match raw.channel {
            Some(ref c) if !c.is_empty() => c.clone(),
            _ => {
                return Err(TokenError::invalid("subscription token must have a `channel` claim"));
            }
        };
        self.check_common(&raw, now_unix)?;

        let info = info_bytes(raw.info, raw.b64info.as_deref(), "b64info").map_err(TokenError::Invalid)?;
        let data = info_bytes(raw.data, raw.b64data.as_deref(), "b64data").map_err(TokenError::Invalid)?;
        Ok(SubscribeClaims {
            user: raw.user.unwrap_or_default(),
            channel,
            client: raw.client.unwrap_or_default(),
            exp: raw.exp,
            expire_at: raw.expire_at,
            info,
            data,
            override_: raw.override_.unwrap_or_default(),
        })
    }

    /// Checks the token's structure, algorithm and signature; returns the decoded claims JSON.
    fn verified_payload(&self, token: &str) -> Result<Vec<u8>, TokenError> {
        if !self.has_keys() {
            return Err(TokenError::invalid("no token verification keys configured"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::invalid("malformed token: expected three dot-separated parts"));
        };

        // The signed message is the token up to the last '.'.
        let message = &token[..header.len() + 1 + payload.len()];

        let header_json =
            URL_SAFE_NO_PAD.decode(header).map_err(|e| TokenError::Invalid(format!("malformed header: {e}")))?;
        let hdr: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|e| TokenError::Invalid(format!("malformed header: {e}")))?;

        let (alg, key) = match &*hdr.alg {
            "HS256" => (Algorithm::HS256, &self.hmac),
            "HS384" => (Algorithm::HS384, &self.hmac),
            "HS512" => (Algorithm::HS512, &self.hmac),
            "RS256" => (Algorithm::RS256, &self.rsa),
            "RS384" => (Algorithm::RS384, &self.rsa),
            "RS512" => (Algorithm::RS512, &self.rsa),
            "ES256" => (Algorithm::ES256, &self.ecdsa),
            "ES384" => (Algorithm::ES384, &self.ecdsa),
            other => {
                return Err(TokenError::Invalid(format!("unsupported algorithm {other:?}")));
            }
        };
        let Some(key) = key else {
            return Err(TokenError::Invalid(format!("algorithm {:?} not allowed: no key configured for it", hdr.alg)));
        };

        match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
            Ok(true) => {}
            Ok(false) => return Err(TokenError::invalid("bad signature")),
            Err(e) => return Err(TokenError::Invalid(format!("bad signature: {e}"))),
        }

        URL_SAFE_NO_PAD.decode(payload).map_err(|e| TokenError::Invalid(format!("malformed payload: {e}")))
    }

    fn claims<'p>(&self, payload: &'p [u8], kind: Kind) -> Result<RawClaims<'p>, TokenError> {
        let seed = ClaimsSeed { kind, user_claim: &self.user_claim, audience: &self.audience };
        let mut de = serde_json::Deserializer::from_slice(payload);
        let claims = seed
            .deserialize(&mut de)
            .and_then(|c| de.end().map(|()| c))
            .map_err(|e| TokenError::Invalid(format!("bad claims: {e}")))?;
        Ok(claims)
    }

    /// `aud`/`iss` (invalid), then `exp` (expired), then `nbf` (not yet valid), without leeway.
    fn check_common(&self, raw: &RawClaims<'_>, now: i64) -> Result<(), TokenError> {
        if !self.audience.is_empty() && !raw.aud_match {
            return Err(TokenError::invalid("`aud` does not contain the configured audience"));
        }
        if !self.issuer.is_empty() && raw.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(TokenError::invalid("`iss` does not match the configured issuer"));
        }
        if raw.exp.is_some_and(|exp| exp <= now) {
            return Err(TokenError::Expired);
        }
        if raw.nbf.is_some_and(|nbf| nbf > now) {
            return Err(TokenError::NotYetValid);
        }
        Ok(())
    }
}

/// Fails for PEM blocks holding a private key (the verifier wants the public half).
fn reject_private_pem(pem: &str) -> Result<(), String> {
    if pem.contains("PRIVATE KEY-----") { Err("expected a public key, got a private key".to_owned()) } else { Ok(()) }
}

/// The bytes of an `info`/`data` claim: its raw JSON without `\n` bytes when present, else the
/// decoded base64 variant. A non-empty base64 variant is validated even when unused.
fn info_bytes(json: Option<&RawValue>, b64: Option<&str>, b64_name: &str) -> Result<Bytes, String> {
    let decoded = match b64 {
        Some(s) if !s.is_empty() => Some(STANDARD.decode(s).map_err(|e| format!("bad base64 in `{b64_name}`: {e}"))?),
        _ => None,
    };
    Ok(match (json, decoded) {
        (Some(raw), _) => raw_json_bytes(raw),
        (None, Some(bin)) => Bytes::from(bin),
        (None, None) => Bytes::new(),
    })
}

/// Raw JSON text with `\n` bytes removed. JSON strings cannot hold a raw newline, so this only
/// drops insignificant whitespace and keeps the value equivalent.
fn raw_json_bytes(raw: &RawValue) -> Bytes {
    let text = raw.get().as_bytes();
    if text.contains(&b'\n') {
        Bytes::from(text.iter().copied().filter(|&b| b != b'\n').collect::<Vec<u8>>())
    } else {
        Bytes::copy_from_slice(text)
    }
}

fn sub_options(raw: RawSubOptions<'_>) -> Result<SubOptions, String> {
    Ok(SubOptions {
        info: info_bytes(raw.info, raw.b64info.as_deref(), "b64info")?,
        data: info_bytes(raw.data, raw.b64data.as_deref(), "b64data")?,
        override_: raw.override_.unwrap_or_default(),
    })
}

/// Signs `claims` with an HMAC secret, for `herald gentoken` and tests.
///
/// `alg` is one of `HS256`, `HS384`, `HS512`. The header is `{"typ":"JWT","alg":…}`.
pub fn sign_hmac(claims: &serde_json::Value, secret: &str, alg: &str) -> Result<String, String> {
    let alg = match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        other => {
            return Err(format!("unsupported HMAC algorithm {other:?} (use HS256, HS384 or HS512)"));
        }
    };
    if secret.is_empty() {
        return Err("empty HMAC secret".to_owned());
    }
    if !claims.is_object() {
        return Err("claims must be a JSON object".to_owned());
    }
    let header = jsonwebtoken::Header::new(alg);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| format!("signing failed: {e}"))
}
