//! Unit tests with real tokens signed in the tests.

mod keys;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::{Override, TokenConfig, TokenError, TokenVerifier, sign_hmac};

const SECRET: &str = "test-secret";
const NOW: i64 = 1_700_000_000;

fn hmac_cfg() -> TokenConfig {
    TokenConfig { hmac_secret_key: SECRET.into(), ..TokenConfig::default() }
}

fn verifier(cfg: &TokenConfig) -> TokenVerifier {
    TokenVerifier::new(cfg, "client.token").expect("valid config")
}

fn hmac_verifier() -> TokenVerifier {
    verifier(&hmac_cfg())
}

fn hs256(claims: Value) -> String {
    sign_hmac(&claims, SECRET, "HS256").expect("sign")
}

/// Signs arbitrary header and payload text (for exact-bytes and malformed-claims cases).
fn sign_raw(header: &str, payload: &str, key: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign");
    format!("{msg}.{sig}")
}

fn hs256_raw(payload: &str) -> String {
    sign_raw(r#"{"alg":"HS256","typ":"JWT"}"#, payload, &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256)
}

/// An unsigned token with the given header and payload and a dummy signature.
fn unsigned(header: &str, payload: &str, sig: &str) -> String {
    format!("{}.{}.{sig}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload))
}

fn sign_with(claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).expect("sign")
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(keys::RSA_PRIVATE.as_bytes()).expect("rsa private key")
}

fn ec256_key() -> EncodingKey {
    EncodingKey::from_ec_pem(keys::EC256_PRIVATE.as_bytes()).expect("ec private key")
}

fn ec384_key() -> EncodingKey {
    EncodingKey::from_ec_pem(keys::EC384_PRIVATE.as_bytes()).expect("ec private key")
}

fn rsa_cfg(public: &str) -> TokenConfig {
    TokenConfig { rsa_public_key: public.into(), ..TokenConfig::default() }
}

fn ec_cfg(public: &str) -> TokenConfig {
    TokenConfig { ecdsa_public_key: public.into(), ..TokenConfig::default() }
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: Result<T, TokenError>) -> String {
    match r {
        Err(TokenError::Invalid(msg)) => msg,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[track_caller]
fn assert_expired<T: std::fmt::Debug>(r: Result<T, TokenError>) {
    match r {
        Err(TokenError::Expired) => {}
        other => panic!("expected Expired, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Algorithms and signatures

#[test]
fn hmac_round_trip_all_algorithms() {
    let v = hmac_verifier();
    for alg in ["HS256", "HS384", "HS512"] {
        let token = sign_hmac(&json!({"sub": "42", "exp": NOW + 60}), SECRET, alg).unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap();
        assert_eq!(header["alg"], alg);
        let c = v.verify_connect(&token, NOW).unwrap();
        assert_eq!(c.user, "42");
        assert_eq!(c.exp, Some(NOW + 60));
        assert_eq!(c.connection_expires_at(), Some(NOW + 60));
    }
}

#[test]
fn rsa_round_trip_all_algorithms_and_key_formats() {
    for public in [keys::RSA_PUBLIC, keys::RSA_PUBLIC_PKCS1] {
        let v = verifier(&rsa_cfg(public));
        assert!(v.has_keys());
        for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
            let token = sign_with(&json!({"sub": "rsa-user"}), &rsa_key(), alg);
            let c = v.verify_connect(&token, NOW).unwrap();
            assert_eq!(c.user, "rsa-user");
            assert_eq!(c.exp, None);
            assert_eq!(c.connection_expires_at(), None);
        }
    }
}

#[test]
fn ecdsa_round_trip() {
    let v = verifier(&ec_cfg(keys::EC256_PUBLIC));
    let token = sign_with(&json!({"sub": "ec-user", "exp": NOW + 1}), &ec256_key(), Algorithm::ES256);
    assert_eq!(v.verify_connect(&token, NOW).unwrap().user, "ec-user");

    let v = verifier(&ec_cfg(keys::EC384_PUBLIC));
    let token = sign_with(&json!({"sub": "ec384"}), &ec384_key(), Algorithm::ES384);
    assert_eq!(v.verify_connect(&token, NOW).unwrap().user, "ec384");
}

#[test]
fn all_keys_configured_accepts_each_family() {
    let cfg = TokenConfig {
        hmac_secret_key: SECRET.into(),
        rsa_public_key: keys::RSA_PUBLIC.into(),
        ecdsa_public_key: keys::EC256_PUBLIC.into(),
        ..TokenConfig::default()
    };
    let v = verifier(&cfg);
    let claims = json!({"sub": "u"});
    for token in [
        hs256(claims.clone()),
        sign_with(&claims, &rsa_key(), Algorithm::RS256),
        sign_with(&claims, &ec256_key(), Algorithm::ES256),
    ] {
        assert_eq!(v.verify_connect(&token, NOW).unwrap().user, "u");
    }
}

#[test]
fn bad_signature_is_invalid() {
    let v = hmac_verifier();
    let other = sign_hmac(&json!({"sub": "42"}), "other-secret", "HS256").unwrap();
    assert_invalid(v.verify_connect(&other, NOW));

    // Payload swapped under a valid signature.
    let good = hs256(json!({"sub": "42"}));
    let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_invalid(v.verify_connect(&forged, NOW));

    // Signature not base64url, or empty.
    assert_invalid(v.verify_connect(&format!("{}.{}.***", parts[0], parts[1]), NOW));
    assert_invalid(v.verify_connect(&format!("{}.{}.", parts[0], parts[1]), NOW));

    // RSA token checked against an unrelated RSA key.
    let v = verifier(&rsa_cfg(keys::RSA_OTHER_PUBLIC));
    let token = sign_with(&json!({"sub": "42"}), &rsa_key(), Algorithm::RS256);
    assert_invalid(v.verify_connect(&token, NOW));

    // ES384 token against a P-256 key.
    let v = verifier(&ec_cfg(keys::EC256_PUBLIC));
    let token = sign_with(&json!({"sub": "42"}), &ec384_key(), Algorithm::ES384);
    assert_invalid(v.verify_connect(&token, NOW));
}

#[test]
fn algorithm_not_allowed_for_configured_keys() {
    let claims = json!({"sub": "42"});
    // RSA/ECDSA tokens with only an HMAC secret.
    let v = hmac_verifier();
    let msg = assert_invalid(v.verify_connect(&sign_with(&claims, &rsa_key(), Algorithm::RS256), NOW));
    assert!(msg.contains("not allowed"), "{msg}");
    assert_invalid(v.verify_connect(&sign_with(&claims, &ec256_key(), Algorithm::ES256), NOW));

    // Algorithm confusion: HS256 signed with the RSA public key text as the secret.
    let v = verifier(&rsa_cfg(keys::RSA_PUBLIC));
    let confused = sign_hmac(&claims, keys::RSA_PUBLIC, "HS256").unwrap();
    assert_invalid(v.verify_connect(&confused, NOW));
    assert_invalid(v.verify_connect(&sign_with(&claims, &ec256_key(), Algorithm::ES256), NOW));

    // ECDSA only: RSA rejected.
    let v = verifier(&ec_cfg(keys::EC256_PUBLIC));
    assert_invalid(v.verify_connect(&sign_with(&claims, &rsa_key(), Algorithm::RS256), NOW));
    assert_invalid(v.verify_connect(&hs256(claims.clone()), NOW));

    // PS256 is a valid RSA JWT algorithm but not one Centrifugo accepts.
    let v = verifier(&rsa_cfg(keys::RSA_PUBLIC));
    let msg = assert_invalid(v.verify_connect(&sign_with(&claims, &rsa_key(), Algorithm::PS256), NOW));
    assert!(msg.contains("unsupported algorithm"), "{msg}");
}

#[test]
fn alg_none_and_unknown_algorithms_are_invalid() {
    let v = hmac_verifier();
    let payload = r#"{"sub":"42"}"#;
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":"none","typ":"JWT"}"#, payload, ""), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":"none"}"#, payload, "c2ln"), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":"None"}"#, payload, ""), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":"ES512"}"#, payload, "c2ln"), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":"EdDSA"}"#, payload, "c2ln"), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"typ":"JWT"}"#, payload, "c2ln"), NOW));
    assert_invalid(v.verify_connect(&unsigned(r#"{"alg":256}"#, payload, "c2ln"), NOW));
}

#[test]
fn no_keys_rejects_everything() {
    let v = verifier(&TokenConfig::default());
    assert!(!v.has_keys());
    let msg = assert_invalid(v.verify_connect(&hs256(json!({"sub": "42"})), NOW));
    assert!(msg.contains("no token verification keys"), "{msg}");
    assert_invalid(v.verify_subscribe(&hs256(json!({"sub": "42", "channel": "$a"})), NOW));
}

#[test]
fn malformed_token_strings() {
    let v = hmac_verifier();
    let good = hs256(json!({"sub": "42"}));
    let parts: Vec<&str> = good.split('.').collect();
    for token in [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c".into(),
        "...".into(),
        format!("{good}.extra"),
        format!("{}.{}", parts[0], parts[1]),
        format!(" {good}"),
        good.replacen('.', "..", 1),
    ] {
        assert_invalid(v.verify_connect(&token, NOW));
        assert_invalid(v.verify_subscribe(&token, NOW));
    }
}

#[test]
fn malformed_payload_is_invalid() {
    let v = hmac_verifier();
    for payload in ["", "not json", "[1,2]", "\"sub\"", "null", r#"{"sub":"42"} trailing"#, r#"{"sub":"42""#] {
        assert_invalid(v.verify_connect(&hs256_raw(payload), NOW));
    }
    // A validly signed payload part that is not base64url.
    let token = sign_raw(r#"{"alg":"HS256"}"#, "x", &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256);
    let parts: Vec<&str> = token.split('.').collect();
    let msg = format!("{}.{}", parts[0], "e30=");
    let sig =
        jsonwebtoken::crypto::sign(msg.as_bytes(), &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256)
            .unwrap();
    assert_invalid(v.verify_connect(&format!("{msg}.{sig}"), NOW));
}

// ---------------------------------------------------------------------------------------------
// Time claims

#[test]
fn exp_is_checked_without_leeway() {
    let v = hmac_verifier();
    assert_expired(v.verify_connect(&hs256(json!({"exp": NOW})), NOW));
    assert_expired(v.verify_connect(&hs256(json!({"exp": NOW - 1})), NOW));
    assert_expired(v.verify_connect(&hs256(json!({"exp": 0})), NOW));
    assert!(v.verify_connect(&hs256(json!({"exp": NOW + 1})), NOW).is_ok());
    // No exp at all is fine.
    assert!(v.verify_connect(&hs256(json!({"sub": "42"})), NOW).is_ok());
    // NumericDate may be fractional.
    let c = v.verify_connect(&hs256(json!({"exp": (NOW + 10) as f64 + 0.5})), NOW).unwrap();
    assert_eq!(c.exp, Some(NOW + 10));
    assert_expired(v.verify_connect(&hs256(json!({"exp": NOW as f64 + 0.5})), NOW));
    // Subscription tokens too.
    assert_expired(v.verify_subscribe(&hs256(json!({"channel": "$a", "exp": NOW})), NOW));
}

#[test]
fn nbf_in_the_future_is_not_yet_valid() {
    let v = hmac_verifier();
    let not_yet = Err(TokenError::NotYetValid);
    assert_eq!(v.verify_connect(&hs256(json!({"nbf": NOW + 1})), NOW).map(|_| ()), not_yet);
    assert!(v.verify_connect(&hs256(json!({"nbf": NOW})), NOW).is_ok());
    assert!(v.verify_connect(&hs256(json!({"nbf": NOW - 100, "exp": NOW + 100})), NOW).is_ok());
    assert_eq!(v.verify_subscribe(&hs256(json!({"channel": "$a", "nbf": NOW + 5})), NOW).map(|_| ()), not_yet);
    // A token both past its `exp` and before its `nbf` is expired: it will never be valid.
    assert_expired(v.verify_connect(&hs256(json!({"nbf": NOW + 5, "exp": NOW - 5})), NOW));
}

#[test]
fn invalid_wins_over_expired() {
    let v = hmac_verifier();
    let bad_sig = sign_hmac(&json!({"exp": NOW - 10}), "other", "HS256").unwrap();
    assert_invalid(v.verify_connect(&bad_sig, NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"exp": NOW - 10, "channel": "x"})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"exp": NOW - 10})), NOW));
    let cfg = TokenConfig { issuer: "herald".into(), ..hmac_cfg() };
    assert_invalid(verifier(&cfg).verify_connect(&hs256(json!({"exp": NOW - 10, "iss": "x"})), NOW));
}

#[test]
fn expire_at_semantics() {
    let v = hmac_verifier();
    // Absent → exp.
    let c = v.verify_connect(&hs256(json!({"exp": NOW + 60})), NOW).unwrap();
    assert_eq!((c.expire_at, c.connection_expires_at()), (None, Some(NOW + 60)));
    // 0 → never, even with exp.
    let c = v.verify_connect(&hs256(json!({"exp": NOW + 60, "expire_at": 0})), NOW).unwrap();
    assert_eq!((c.expire_at, c.connection_expires_at()), (Some(0), None));
    // Negative → never.
    let c = v.verify_connect(&hs256(json!({"expire_at": -5})), NOW).unwrap();
    assert_eq!(c.connection_expires_at(), None);
    // Positive → that value, whatever exp says.
    let c = v.verify_connect(&hs256(json!({"exp": NOW + 60, "expire_at": NOW + 3600})), NOW).unwrap();
    assert_eq!((c.exp, c.connection_expires_at()), (Some(NOW + 60), Some(NOW + 3600)));
    // expire_at in the past is not a verification error (the caller answers 110).
    let c = v.verify_connect(&hs256(json!({"expire_at": NOW - 1})), NOW).unwrap();
    assert_eq!(c.connection_expires_at(), Some(NOW - 1));
    // exp is still verified when expire_at is set.
    assert_expired(v.verify_connect(&hs256(json!({"exp": NOW, "expire_at": 0})), NOW));
    // Neither → never.
    let c = v.verify_connect(&hs256(json!({})), NOW).unwrap();
    assert_eq!(c.connection_expires_at(), None);

    // Same rule for subscriptions.
    let sub = |extra: Value| {
        let mut claims = json!({"channel": "$a"});
        claims.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        v.verify_subscribe(&hs256(claims), NOW).unwrap()
    };
    assert_eq!(sub(json!({"exp": NOW + 5})).subscription_expires_at(), Some(NOW + 5));
    assert_eq!(sub(json!({"exp": NOW + 5, "expire_at": 0})).subscription_expires_at(), None);
    assert_eq!(sub(json!({"exp": NOW + 5, "expire_at": NOW + 50})).subscription_expires_at(), Some(NOW + 50));
    assert_eq!(sub(json!({})).subscription_expires_at(), None);
}

// ---------------------------------------------------------------------------------------------
// aud / iss

#[test]
fn audience_string_and_array() {
    let v = verifier(&TokenConfig { audience: "herald".into(), ..hmac_cfg() });
    assert!(v.verify_connect(&hs256(json!({"aud": "herald"})), NOW).is_ok());
    assert!(v.verify_connect(&hs256(json!({"aud": ["other", "herald"]})), NOW).is_ok());
    assert_invalid(v.verify_connect(&hs256(json!({"aud": "other"})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": ["other", "x"]})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": []})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": "Herald"})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"sub": "42"})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": null})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": 5})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"aud": ["herald", 5]})), NOW));
    // Subscription tokens share the check.
    assert!(v.verify_subscribe(&hs256(json!({"channel": "$a", "aud": "herald"})), NOW).is_ok());
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "aud": "x"})), NOW));

    // No audience configured: any well-typed aud is accepted, a badly typed one is not.
    let v = hmac_verifier();
    assert!(v.verify_connect(&hs256(json!({"aud": "anything"})), NOW).is_ok());
    assert!(v.verify_connect(&hs256(json!({"aud": ["a", "b"]})), NOW).is_ok());
    assert_invalid(v.verify_connect(&hs256(json!({"aud": {"a": 1}})), NOW));
}

#[test]
fn issuer_must_match_when_configured() {
    let v = verifier(&TokenConfig { issuer: "https://auth.example".into(), ..hmac_cfg() });
    assert!(v.verify_connect(&hs256(json!({"iss": "https://auth.example"})), NOW).is_ok());
    assert_invalid(v.verify_connect(&hs256(json!({"iss": "https://evil.example"})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"sub": "42"})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "iss": "x"})), NOW));
    // Escaped forms compare by value.
    assert!(v.verify_connect(&hs256_raw(r#"{"iss":"https:\/\/auth.example"}"#), NOW).is_ok());

    let v = hmac_verifier();
    assert!(v.verify_connect(&hs256(json!({"iss": "whatever"})), NOW).is_ok());
    assert_invalid(v.verify_connect(&hs256(json!({"iss": 1})), NOW));
}

// ---------------------------------------------------------------------------------------------
// User id

#[test]
fn user_id_claim() {
    let v = hmac_verifier();
    assert_eq!(v.verify_connect(&hs256(json!({})), NOW).unwrap().user, "");
    assert_eq!(v.verify_connect(&hs256(json!({"sub": ""})), NOW).unwrap().user, "");
    assert_eq!(v.verify_connect(&hs256(json!({"sub": null})), NOW).unwrap().user, "");
    assert_eq!(v.verify_connect(&hs256_raw(r#"{"sub":"\u00e9t\u00e9"}"#), NOW).unwrap().user, "été");
    assert_invalid(v.verify_connect(&hs256(json!({"sub": 42})), NOW));

    let v = verifier(&TokenConfig { user_id_claim: "user_id".into(), ..hmac_cfg() });
    let c = v.verify_connect(&hs256(json!({"sub": "ignored", "user_id": "custom"})), NOW).unwrap();
    assert_eq!(c.user, "custom");
    assert_eq!(v.verify_connect(&hs256(json!({"sub": "ignored"})), NOW).unwrap().user, "");
    assert_invalid(v.verify_connect(&hs256(json!({"user_id": 7})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"user_id": ["a"]})), NOW));
    // `sub` keeps its type even when it is not the user id claim.
    assert_invalid(v.verify_connect(&hs256(json!({"sub": 1, "user_id": "u"})), NOW));
    let s = v.verify_subscribe(&hs256(json!({"channel": "$a", "user_id": "custom"})), NOW).unwrap();
    assert_eq!(s.user, "custom");
}

// ---------------------------------------------------------------------------------------------
// info / b64info

#[test]
fn info_raw_json_preserved_and_newlines_stripped() {
    let v = hmac_verifier();
    let c = v.verify_connect(&hs256_raw(r#"{"info": {"b": [1, 2.50], "a" : "x\ny"}}"#), NOW).unwrap();
    // Raw text, not re-serialized: key order, spacing and number format kept; the escaped `\n`
    // inside the string is two bytes and stays.
    assert_eq!(&c.info[..], br#"{"b": [1, 2.50], "a" : "x\ny"}"#);

    let c = v.verify_connect(&hs256_raw("{\"info\": {\n  \"name\": \"a\",\r\n  \"n\": 1\n}\n}"), NOW).unwrap();
    assert_eq!(&c.info[..], b"{  \"name\": \"a\",\r  \"n\": 1}");
    assert!(!c.info.contains(&b'\n'));

    // Any JSON value.
    for (info, raw) in
        [(json!("str"), "\"str\""), (json!(12), "12"), (json!([true]), "[true]"), (json!(false), "false")]
    {
        let c = v.verify_connect(&hs256(json!({"info": info})), NOW).unwrap();
        assert_eq!(&c.info[..], raw.as_bytes());
    }
    // null or absent → empty.
    assert!(v.verify_connect(&hs256(json!({"info": null})), NOW).unwrap().info.is_empty());
    assert!(v.verify_connect(&hs256(json!({})), NOW).unwrap().info.is_empty());
}

#[test]
fn b64info() {
    let v = hmac_verifier();
    let bin = [0u8, 1, 2, 0xff, b'\n'];
    let c = v.verify_connect(&hs256(json!({"b64info": STANDARD.encode(bin)})), NOW).unwrap();
    // Binary info is kept as is, newline included.
    assert_eq!(&c.info[..], &bin[..]);

    let msg = assert_invalid(v.verify_connect(&hs256(json!({"b64info": "not base64!"})), NOW));
    assert!(msg.contains("b64info"), "{msg}");
    assert_invalid(v.verify_connect(&hs256(json!({"b64info": 12})), NOW));
    // URL-safe alphabet is not standard base64.
    assert_invalid(v.verify_connect(&hs256(json!({"b64info": "-_-_"})), NOW));

    // info wins when both are set; the base64 variant must still be valid.
    let c = v.verify_connect(&hs256(json!({"info": {"a": 1}, "b64info": STANDARD.encode("bin")})), NOW).unwrap();
    assert_eq!(&c.info[..], br#"{"a":1}"#);
    assert_invalid(v.verify_connect(&hs256(json!({"info": {"a": 1}, "b64info": "%%%"})), NOW));
    // Empty b64info is ignored.
    assert!(v.verify_connect(&hs256(json!({"b64info": ""})), NOW).unwrap().info.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Connection token claims

#[test]
fn channels_subs_override_and_meta() {
    let v = hmac_verifier();
    let token = hs256_raw(
        r#"{
            "sub": "42",
            "channels": ["news", "chat:index"],
            "subs": {
                "personal:42": {
                    "info": {"role": "owner"},
                    "data": {"welcome":
                        true},
                    "override": {
                        "presence": {"value": true},
                        "join_leave": {"value": false},
                        "force_recovery": {},
                        "force_positioning": {"value": null},
                        "unknown_option": {"value": true}
                    }
                },
                "bin": {"b64info": "AAE=", "b64data": "/w=="},
                "plain": {},
                "nulled": null
            },
            "meta": {"plan": "pro", "limits": [1, 2]}
        }"#,
    );
    let c = v.verify_connect(&token, NOW).unwrap();
    assert_eq!(c.user, "42");
    assert_eq!(c.channels, ["news", "chat:index"]);
    assert_eq!(c.subs.keys().collect::<Vec<_>>(), ["bin", "nulled", "personal:42", "plain"]);

    let p = &c.subs["personal:42"];
    assert_eq!(&p.info[..], br#"{"role": "owner"}"#);
    assert!(!p.data.contains(&b'\n'));
    let data: Value = serde_json::from_slice(&p.data).unwrap();
    assert_eq!(data, json!({"welcome": true}));
    assert_eq!(
        p.override_,
        Override {
            presence: Some(true),
            join_leave: Some(false),
            force_push_join_leave: None,
            force_recovery: Some(false),
            force_positioning: Some(false),
        }
    );

    let b = &c.subs["bin"];
    assert_eq!((&b.info[..], &b.data[..]), (&[0u8, 1][..], &[0xffu8][..]));
    assert!(b.override_.is_empty());
    assert_eq!(c.subs["plain"], crate::SubOptions::default());
    assert_eq!(c.subs["nulled"], crate::SubOptions::default());

    let meta: Value = serde_json::from_str(c.meta.as_ref().unwrap().get()).unwrap();
    assert_eq!(meta, json!({"plan": "pro", "limits": [1, 2]}));

    // Absent claims.
    let c = v.verify_connect(&hs256(json!({"sub": "42"})), NOW).unwrap();
    assert!(c.channels.is_empty() && c.subs.is_empty() && c.meta.is_none());
    // meta may be any JSON value.
    let c = v.verify_connect(&hs256(json!({"meta": "text"})), NOW).unwrap();
    assert_eq!(c.meta.unwrap().get(), "\"text\"");
}

#[test]
fn subs_errors_are_invalid() {
    let v = hmac_verifier();
    let msg = assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": {"b64info": "@@"}}})), NOW));
    assert!(msg.contains("subs[\"ch\"]") && msg.contains("b64info"), "{msg}");
    assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": {"b64data": "@@"}}})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"subs": ["ch"]})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": true}})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": [{"a": 1}]}})), NOW));
    assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": {"override": {"presence": true}}}})), NOW));
    assert_invalid(
        v.verify_connect(&hs256(json!({"subs": {"ch": {"override": {"presence": {"value": "yes"}}}}})), NOW),
    );
    assert_invalid(v.verify_connect(&hs256(json!({"subs": {"ch": {"b64info": 1}}})), NOW));
}

#[test]
fn connection_token_with_channel_is_invalid() {
    let v = hmac_verifier();
    let msg = assert_invalid(v.verify_connect(&hs256(json!({"sub": "42", "channel": "news"})), NOW));
    assert!(msg.contains("channel"), "{msg}");
    // Centrifugo only rejects a non-empty channel.
    assert!(v.verify_connect(&hs256(json!({"sub": "42", "channel": ""})), NOW).is_ok());
    assert!(v.verify_connect(&hs256(json!({"sub": "42", "channel": null})), NOW).is_ok());
    assert_invalid(v.verify_connect(&hs256(json!({"sub": "42", "channel": 1})), NOW));
}

#[test]
fn wrong_claim_types_are_invalid() {
    let v = hmac_verifier();
    for claims in [
        json!({"exp": "1700000100"}),
        json!({"exp": true}),
        json!({"nbf": "0"}),
        json!({"iat": "yesterday"}),
        json!({"jti": 5}),
        json!({"expire_at": "0"}),
        json!({"expire_at": 1.5}),
        json!({"channels": "news"}),
        json!({"channels": ["news", 1]}),
        json!({"subs": "news"}),
        json!({"info": {"a": 1}, "b64info": false}),
    ] {
        let msg = assert_invalid(v.verify_connect(&hs256(claims.clone()), NOW));
        assert!(msg.starts_with("bad claims"), "{claims}: {msg}");
    }
    // Subscription-only claims are not read from connection tokens (and vice versa).
    assert!(v.verify_connect(&hs256(json!({"client": 5, "override": 1, "data": 1, "b64data": 1})), NOW).is_ok());
    assert!(v.verify_subscribe(&hs256(json!({"channel": "$a", "channels": 5, "subs": 1, "meta": 1})), NOW).is_ok());
    // Unknown claims are ignored.
    assert!(v.verify_connect(&hs256(json!({"custom": {"x": [1]}, "iat": NOW, "jti": "id"})), NOW).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Subscription tokens

#[test]
fn subscription_token_claims() {
    let v = hmac_verifier();
    let token = hs256_raw(
        r#"{
            "sub": "42",
            "channel": "$private:42",
            "client": "2a7e4a4e-0c0c-4d7c-9a38-8d6fb7a1c2f4",
            "exp": 1700000600,
            "info": {"tier":
                "gold"},
            "data": {"welcome": "hi"},
            "override": {"presence": {"value": false}, "force_push_join_leave": {"value": true}}
        }"#,
    );
    let s = v.verify_subscribe(&token, NOW).unwrap();
    assert_eq!(s.user, "42");
    assert_eq!(s.channel, "$private:42");
    assert_eq!(s.client, "2a7e4a4e-0c0c-4d7c-9a38-8d6fb7a1c2f4");
    assert_eq!(s.exp, Some(NOW + 600));
    assert_eq!(s.expire_at, None);
    assert_eq!(&s.info[..], br#"{"tier":                "gold"}"#);
    assert_eq!(&s.data[..], br#"{"welcome": "hi"}"#);
    assert_eq!(
        s.override_,
        Override { presence: Some(false), force_push_join_leave: Some(true), ..Override::default() }
    );

    // Minimal token.
    let s = v.verify_subscribe(&hs256(json!({"channel": "$a"})), NOW).unwrap();
    assert_eq!((s.user.as_str(), s.client.as_str()), ("", ""));
    assert!(s.info.is_empty() && s.data.is_empty() && s.override_.is_empty());

    // Binary variants.
    let s = v.verify_subscribe(&hs256(json!({"channel": "$a", "b64info": "AQI=", "b64data": "AwQ="})), NOW).unwrap();
    assert_eq!((&s.info[..], &s.data[..]), (&[1u8, 2][..], &[3u8, 4][..]));
    let s = v.verify_subscribe(&hs256(json!({"channel": "$a", "data": [1], "b64data": "AwQ="})), NOW).unwrap();
    assert_eq!(&s.data[..], b"[1]");
}

#[test]
fn subscription_token_errors() {
    let v = hmac_verifier();
    let msg = assert_invalid(v.verify_subscribe(&hs256(json!({"sub": "42"})), NOW));
    assert!(msg.contains("channel"), "{msg}");
    assert_invalid(v.verify_subscribe(&hs256(json!({"sub": "42", "channel": ""})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"sub": "42", "channel": null})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": ["$a"]})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "client": 1})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "b64data": "!!"})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "b64info": "!!"})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "override": []})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "override": {"presence": [true]}})), NOW));
    assert_invalid(v.verify_subscribe(&hs256(json!({"channel": "$a", "exp": "soon"})), NOW));

    // RSA-signed subscription tokens work the same.
    let v = verifier(&rsa_cfg(keys::RSA_PUBLIC));
    let token = sign_with(&json!({"channel": "$a", "sub": "u"}), &rsa_key(), Algorithm::RS256);
    assert_eq!(v.verify_subscribe(&token, NOW).unwrap().channel, "$a");
}

// ---------------------------------------------------------------------------------------------
// Config and helpers

#[test]
fn new_rejects_bad_keys_naming_them() {
    let err = TokenVerifier::new(&rsa_cfg("not a pem"), "client.token").unwrap_err();
    assert!(err.starts_with("client.token.rsa_public_key: invalid PEM"), "{err}");

    let err = TokenVerifier::new(
        &ec_cfg("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        "client.subscription_token",
    )
    .unwrap_err();
    assert!(err.starts_with("client.subscription_token.ecdsa_public_key: invalid PEM"), "{err}");

    // Keys of the wrong family.
    let err = TokenVerifier::new(&rsa_cfg(keys::EC256_PUBLIC), "client.token").unwrap_err();
    assert!(err.starts_with("client.token.rsa_public_key:"), "{err}");
    let err = TokenVerifier::new(&ec_cfg(keys::RSA_PUBLIC), "client.token").unwrap_err();
    assert!(err.starts_with("client.token.ecdsa_public_key:"), "{err}");

    // Private keys where a public key belongs.
    let err = TokenVerifier::new(&rsa_cfg(keys::RSA_PRIVATE), "client.token").unwrap_err();
    assert!(err.contains("private key"), "{err}");
    let err = TokenVerifier::new(&ec_cfg(keys::EC256_PRIVATE), "client.token").unwrap_err();
    assert!(err.contains("private key"), "{err}");

    // Without a prefix the bare key name is used.
    let err = TokenVerifier::new(&rsa_cfg("junk"), "").unwrap_err();
    assert!(err.starts_with("rsa_public_key:"), "{err}");

    // A bad key is reported even when another key is fine.
    let cfg = TokenConfig { rsa_public_key: "junk".into(), ..hmac_cfg() };
    assert!(TokenVerifier::new(&cfg, "client.token").is_err());
}

#[test]
fn sign_hmac_rejects_bad_input() {
    assert!(sign_hmac(&json!({"sub": "1"}), SECRET, "RS256").is_err());
    assert!(sign_hmac(&json!({"sub": "1"}), SECRET, "none").is_err());
    assert!(sign_hmac(&json!({"sub": "1"}), "", "HS256").is_err());
    assert!(sign_hmac(&json!(["sub"]), SECRET, "HS256").is_err());
}

#[test]
fn override_serde_form() {
    let o: Override = serde_json::from_value(json!({
        "presence": {"value": true},
        "join_leave": {},
        "force_recovery": null,
    }))
    .unwrap();
    assert_eq!(o, Override { presence: Some(true), join_leave: Some(false), ..Override::default() });
    assert_eq!(serde_json::to_value(o).unwrap(), json!({"presence": {"value": true}, "join_leave": {"value": false}}));
    assert_eq!(serde_json::to_string(&Override::default()).unwrap(), "{}");
}

#[test]
fn token_error_display() {
    assert_eq!(TokenError::Expired.to_string(), "token expired");
    assert_eq!(TokenError::NotYetValid.to_string(), "token not yet valid (`nbf` is in the future)");
    assert_eq!(TokenError::Invalid("bad signature".into()).to_string(), "invalid token: bad signature");
}

#[test]
fn verifier_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<TokenVerifier>();
    // Debug output never shows key material.
    let dbg = format!("{:?}", hmac_verifier());
    assert!(!dbg.contains(SECRET), "{dbg}");
}
