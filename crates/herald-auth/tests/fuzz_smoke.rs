//! Stable-toolchain smoke run of the `jwt` fuzz target in `/fuzz` (cargo-fuzz needs nightly).
//!
//! Feeds the shared harness (included with `#[path]`) valid claims and tokens, mutations of
//! them and random bytes (`fuzz/src/smoke.rs`), from a fixed seed so failures reproduce. A
//! panic fails the test; the failing input is printed first.

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/jwt.rs"]
mod harness;

#[allow(unreachable_pub, dead_code)]
#[path = "../../../fuzz/src/smoke.rs"]
mod smoke;

use harness::{NOW, Verifiers, jwt, signed};

/// Claims that verify, as connection tokens and as subscription tokens.
const CONNECT: &[&str] = &[
    r#"{"sub":"42"}"#,
    r#"{"sub":"","exp":1900000000,"info":{"name":"A\n B"},"meta":{"k":[1,2,{"x":null}]}}"#,
    r#"{"sub":"u","expire_at":0,"b64info":"aGVsbG8=","channels":["a","b:c"]}"#,
    r#"{"sub":"u","subs":{"news":{"info":[1],"b64data":"AAEC","override":{"presence":{"value":true}}}}}"#,
    r#"{"sub":"u","aud":["x","fuzz-aud"],"iss":"fuzz-iss","nbf":1700000000,"iat":1700000000,"jti":"j"}"#,
    r#"{"sub":"u","aud":"fuzz-aud","iss":"fuzz-iss","channel":"","unknown":{"deep":[[[[]]]]}}"#,
];
const SUBSCRIBE: &[&str] = &[
    r#"{"sub":"42","channel":"news"}"#,
    r#"{"sub":"u","channel":"$private","client":"c1","data":{"a":"b"},"b64info":"eA==","exp":1900000000}"#,
    r#"{"sub":"u","channel":"x","aud":"fuzz-aud","iss":"fuzz-iss","override":{"join_leave":{"value":false}}}"#,
];
/// Claims that must be rejected.
const REJECTED: &[&str] = &[
    r#"{"sub":42}"#,
    r#"{"sub":"u","exp":1}"#,
    r#"{"sub":"u","nbf":1900000000}"#,
    r#"{"sub":"u","b64info":"not base64!"}"#,
    r#"["sub","u"]"#,
    r#"{"sub":"u"} trailing"#,
    r#"{"sub":"u","channels":"a"}"#,
];

#[test]
fn seeds_reach_the_claims_parser() {
    let v = harness::Verifiers::new();
    let plain = herald_auth::TokenVerifier::new(
        &herald_auth::TokenConfig { hmac_secret_key: harness::SECRET.into(), ..Default::default() },
        "client.token",
    )
    .unwrap();
    for claims in CONNECT {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_connect(&token, NOW).is_ok(), "connect seed rejected: {claims}");
        jwt(&v, claims.as_bytes());
    }
    for claims in SUBSCRIBE {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_subscribe(&token, NOW).is_ok(), "subscribe seed rejected: {claims}");
        jwt(&v, claims.as_bytes());
    }
    for claims in REJECTED {
        let token = signed(claims.as_bytes());
        assert!(plain.verify_connect(&token, NOW).is_err(), "accepted: {claims}");
        assert!(plain.verify_subscribe(&token, NOW).is_err(), "accepted: {claims}");
    }
}

#[test]
fn jwt_smoke() {
    let v = Verifiers::new();
    let claims: Vec<Vec<u8>> = CONNECT.iter().chain(SUBSCRIBE).chain(REJECTED).map(|c| c.as_bytes().to_vec()).collect();
    // Whole signed tokens too, so that mutations hit the header, the dots and the signature.
    let mut seeds: Vec<Vec<u8>> = claims.iter().map(|c| signed(c).into_bytes()).collect();
    seeds.extend(claims);
    // The committed corpus seeds are claim sets too.
    seeds.extend(smoke::committed_seeds(env!("CARGO_MANIFEST_DIR"), "jwt"));
    smoke::smoke("jwt", 0x5EED_0005, &seeds, 3000, 500, &|input: &[u8]| jwt(&v, input));
}
