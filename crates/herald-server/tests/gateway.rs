//! Gateway routes over real sockets: a real `herald` forwarding to test upstreams (hyper
//! servers in this process, `support::upstream`): auth, rates at the boundary, parameter
//! rules, the deadline and the upstream's view of its cancellation, balancing, health checks,
//! identity headers, streaming, the deny list, metrics and start-up refusals.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::upstream::Upstream;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn routes(routes: Value) -> String {
    routes.to_string()
}

fn start(routes: &str, extra: &[(&str, &str)]) -> Herald {
    let mut env = vec![("HERALD_GATEWAY_ROUTES", routes)];
    env.extend_from_slice(extra);
    Herald::start(&env)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token_with_info(user: &str, info: Value) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    herald_auth::sign_hmac(&json!({ "sub": user, "exp": exp, "info": info }), SECRET, "HS256").unwrap()
}

#[tokio::test]
async fn jwt_and_api_key_auth_and_the_identity_passed_upstream() {
    let up = Upstream::start("a").await;
    let h = start(
        &routes(json!([
            {"prefix": "/jwt", "upstreams": [up.url()], "auth": "jwt", "token_cookie": "tok",
             "token_query": "token", "forward_info": true},
            {"prefix": "/key", "upstreams": [up.url()], "auth": "api_key"},
            {"prefix": "/open", "upstreams": [format!("{}/base", up.url())], "auth": "none", "strip_prefix": true},
        ])),
        &[("HERALD_CLIENT_DISALLOW_ANONYMOUS_CONNECTION_TOKENS", "true")],
    );
    let r = h.http("GET", "/jwt/orders", &[], b"").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(
        r.json()["error"],
        "unauthorized: no token (send it in Authorization: Bearer <token> or the tok cookie or ?token=)"
    );
    let r = h.http("GET", "/jwt/orders", &[("Authorization", "Bearer not.a.token")], b"").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().starts_with("unauthorized: invalid token"), "{}", r.text());
    let forged = herald_auth::sign_hmac(&json!({"sub": "eve"}), "another-secret", "HS256").unwrap();
    assert_eq!(h.http("GET", "/jwt/x", &[("Authorization", &bearer(&forged))], b"").await.status, 401);
    let expired = herald_auth::sign_hmac(&json!({"sub": "eve", "exp": 1000}), SECRET, "HS256").unwrap();
    let r = h.http("GET", "/jwt/x", &[("Authorization", &bearer(&expired))], b"").await;
    assert_eq!((r.status, r.json()["error"].clone()), (401, json!("unauthorized: token expired")));
    let anonymous = herald_auth::sign_hmac(&json!({"sub": ""}), SECRET, "HS256").unwrap();
    let r = h.http("GET", "/jwt/x", &[("Authorization", &bearer(&anonymous))], b"").await;
    assert_eq!(r.status, 401, "client.disallow_anonymous_connection_tokens applies: {}", r.text());
    assert_eq!(up.served(), 0, "nothing refused reached the upstream");

    // A valid token; spoofed identity headers are replaced, never passed on.
    let alice = token_with_info("alice", json!({"role": "buyer"}));
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = h
        .http(
            "POST",
            "/jwt/orders?id=7",
            &[
                ("Authorization", &bearer(&alice)),
                ("X-Herald-User", "admin"),
                ("X-Herald-Client-Address", "10.9.9.9"),
                ("X-Forwarded-For", "6.6.6.6"),
                ("traceparent", parent),
                ("Connection", "close, x-secret-hop"),
                ("X-Secret-Hop", "1"),
            ],
            b"{\"n\":1}",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/jwt/orders?id=7", "the prefix is kept by default");
    assert_eq!(r.json()["body"], "{\"n\":1}");
    let rec = up.records().pop().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.header("x-herald-user"), Some("alice"));
    assert_eq!(rec.header("x-herald-client-address"), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(rec.header("x-forwarded-proto"), Some("http"));
    assert_eq!(rec.header("x-herald-info"), Some("eyJyb2xlIjoiYnV5ZXIifQ=="), "base64 of {{\"role\":\"buyer\"}}");
    let trace = rec.header("traceparent").unwrap();
    assert!(trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && trace != parent, "{trace}");
    assert_eq!(rec.header("x-secret-hop"), None, "a field named in Connection is hop-by-hop");
    assert_eq!(rec.headers.iter().filter(|(n, _)| n == "x-herald-user").count(), 1);

    // The cookie and the query parameter carry the token too.
    let cookie = format!("a=b; tok={}", token_with_info("bob", json!(null)));
    assert_eq!(h.http("GET", "/jwt/c", &[("Cookie", &cookie)], b"").await.status, 200);
    assert_eq!(up.records().pop().unwrap().header("x-herald-user"), Some("bob"));
    let q = format!("/jwt/q?token={}", token("carol"));
    assert_eq!(h.http("GET", &q, &[], b"").await.status, 200);
    assert_eq!(up.records().pop().unwrap().header("x-herald-user"), Some("carol"));

    // The server API key; it is not passed upstream.
    let r = h.http("GET", "/key/x", &[], b"").await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("no API key"), "{}", r.text());
    assert_eq!(
        h.http("GET", "/key/x", &[("X-API-Key", "wrong")], b"").await.json()["error"],
        "unauthorized: invalid API key"
    );
    assert_eq!(h.http("GET", "/key/x", &[("X-API-Key", API_KEY)], b"").await.status, 200);
    let rec = up.records().pop().unwrap();
    assert_eq!((rec.header("x-api-key"), rec.header("x-herald-user")), (None, None));

    // No auth: spoofed identity stripped; strip_prefix and the upstream's base path.
    let r = h.http("GET", "/open/items?x=1", &[("X-Herald-User", "admin")], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/base/items?x=1");
    let rec = up.records().pop().unwrap();
    assert_eq!(rec.header("x-herald-user"), None);
    assert_eq!(rec.header("x-herald-client-address"), Some("127.0.0.1"));
    assert_eq!(h.http("GET", "/open", &[], b"").await.json()["path"], "/base");
    assert_eq!(h.http("GET", "/openx", &[], b"").await.status, 404, "not under the prefix");
}

#[tokio::test]
async fn parameter_rules_answer_what_is_wrong() {
    let up = Upstream::start("a").await;
    let h = start(
        &routes(json!([
            {"prefix": "/json", "upstreams": [up.url()], "auth": "none", "methods": ["get", "POST"],
             "max_body": 64, "required_query": ["id"], "required_json": ["name", "qty"]},
            {"prefix": "/raw", "upstreams": [up.url()], "auth": "none", "max_body": 64},
        ])),
        &[],
    );
    let r = h.http("PUT", "/json?id=1", &[], b"{}").await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    assert_eq!(r.json()["error"], "method PUT not allowed here: use GET, POST");
    let r = h.http("POST", "/json?ids=1", &[], b"{}").await;
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("missing query parameter \"id\"")));
    let r = h.http("POST", "/json?id=1", &[], &[b'x'; 65]).await;
    assert_eq!((r.status, r.json()["error"].clone()), (413, json!("request body too large (the limit is 64 bytes)")));
    let r = h.http("POST", "/json?id=1", &[], b"[1]").await;
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("the body must be a JSON object")));
    let r = h.http("POST", "/json?id=1", &[], b"{\"name\":").await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().starts_with("the body must be a JSON object: "), "{}", r.text());
    let r = h.http("POST", "/json?id=1", &[], b"{\"name\":\"x\"}").await;
    assert_eq!((r.status, r.json()["error"].clone()), (400, json!("missing JSON field \"qty\"")));
    assert_eq!(up.served(), 0, "nothing refused reached the upstream");
    let body = br#"{"name":"x","qty":2}"#;
    let r = h.http("POST", "/json?id=1", &[], body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.records().pop().unwrap().body, body);
    // A 64-byte body is at the limit; a chunked body over it is cut on its way and gets 413.
    assert_eq!(h.http("POST", "/raw", &[], &[b'y'; 64]).await.status, 200);
    let chunk = "x".repeat(40);
    let request = format!(
        "POST /raw HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         28\r\n{chunk}\r\n28\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = raw_http(h.addr, request.as_bytes()).await;
    assert_eq!((r.status, r.json()["error"].clone()), (413, json!("request body too large (the limit is 64 bytes)")));
    let r = h.http("GET", "/raw", &[("Upgrade", "websocket"), ("Connection", "Upgrade")], b"").await;
    assert_eq!(r.status, 501, "{}", r.text());
}

#[tokio::test]
async fn rates_per_address_and_per_user_at_the_boundary() {
    let up = Upstream::start("a").await;
    let h = start(
        &routes(json!([
            {"prefix": "/addr", "upstreams": [up.url()], "auth": "none",
             "rate_limit": {"address_rate": 1, "address_burst": 3}},
            {"prefix": "/user", "upstreams": [up.url()], "auth": "jwt",
             "rate_limit": {"user_rate": 1, "user_burst": 2}},
        ])),
        &[],
    );
    for i in 0..3 {
        assert_eq!(h.http("GET", "/addr", &[], b"").await.status, 200, "request {i} is within the burst");
    }
    let r = h.http("GET", "/addr", &[], b"").await;
    assert_eq!((r.status, r.header("retry-after")), (429, Some("1")));
    assert_eq!(r.json()["error"], "too many requests from your address on this route");
    let (alice, bob) = (bearer(&token("alice")), bearer(&token("bob")));
    for _ in 0..2 {
        assert_eq!(h.http("GET", "/user", &[("Authorization", &alice)], b"").await.status, 200);
    }
    let r = h.http("GET", "/user", &[("Authorization", &alice)], b"").await;
    assert_eq!((r.status, r.json()["error"].clone()), (429, json!("too many requests for your user on this route")));
    assert_eq!(h.http("GET", "/user", &[("Authorization", &bob)], b"").await.status, 200, "another user has their own");
    assert_eq!(up.served(), 6);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"herald_gateway_requests_total{route="/addr",outcome="rate_limited",status="4xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"herald_limit_refusals_total{limit="gateway_user_rate",outcome="429"} 1"#));
}

#[tokio::test]
async fn a_missed_deadline_gets_504_and_the_upstream_sees_the_cancellation() {
    let up = Upstream::start("a").await;
    let h = start(&routes(json!([{"prefix": "/t", "upstreams": [up.url()], "auth": "none", "timeout": "300ms"}])), &[]);
    assert_eq!(h.http("GET", "/t/slow?ms=10", &[], b"").await.status, 200, "in time");
    let start = Instant::now();
    let r = h.http("GET", "/t/slow?ms=5000", &[], b"").await;
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"], "the upstream did not answer within the route's timeout (300ms)");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "{took:?}");
    wait_for("the upstream to see its connection closed", WAIT, || async { up.cancelled() == 1 }).await;
    assert_eq!(up.served(), 2);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"herald_gateway_requests_total{route="/t",outcome="timeout",status="5xx"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"herald_gateway_request_duration_seconds_count{route="/t"} 2"#), "{metrics}");
}

#[tokio::test]
async fn round_robin_and_user_hash_balancing() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let h = start(
        &routes(json!([
            {"prefix": "/rr", "upstreams": [a.url(), b.url()], "auth": "none"},
            {"prefix": "/sticky", "name": "sticky", "upstreams": [a.url(), b.url()], "auth": "jwt", "balance": "user_hash"},
        ])),
        &[],
    );
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(h.http("GET", "/rr", &[], b"").await.json()["upstream"].as_str().unwrap().to_owned());
    }
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "alternates: {seen:?}");
    assert_eq!((a.served(), b.served()), (5, 5));
    let mut used = std::collections::HashSet::new();
    for u in 0..12 {
        let auth = bearer(&token(&format!("user-{u}")));
        let first = h.http("GET", "/sticky", &[("Authorization", &auth)], b"").await.json()["upstream"].clone();
        for _ in 0..3 {
            assert_eq!(h.http("GET", "/sticky", &[("Authorization", &auth)], b"").await.json()["upstream"], first);
        }
        used.insert(first.as_str().unwrap().to_owned());
    }
    assert_eq!(used.len(), 2, "12 users spread over both upstreams");
}

#[tokio::test]
async fn a_failed_upstream_is_taken_out_by_the_health_check_and_put_back() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let h = start(
        &routes(json!([{"prefix": "/hc", "name": "hc", "upstreams": [a.url(), b.url()], "auth": "none",
            "health_check": {"path": "/health", "interval": "100ms", "timeout": "500ms",
                             "unhealthy_threshold": 2, "healthy_threshold": 2}}])),
        &[],
    );
    let gauge =
        |up: &Upstream, v: u8| format!("herald_gateway_upstream_healthy{{route=\"hc\",upstream=\"{}\"}} {v}", up.url());
    a.set_healthy(false);
    wait_for("a taken out", WAIT, || async { h.metrics().await.contains(&gauge(&a, 0)) }).await;
    let before = a.served();
    for _ in 0..6 {
        assert_eq!(h.http("GET", "/hc", &[], b"").await.json()["upstream"], "b");
    }
    assert_eq!(a.served(), before, "nothing goes to an upstream that is out");
    b.set_healthy(false);
    wait_for("b taken out", WAIT, || async { h.metrics().await.contains(&gauge(&b, 0)) }).await;
    let r = h.http("GET", "/hc", &[], b"").await;
    assert_eq!((r.status, r.json()["error"].clone()), (503, json!("no healthy upstream for this route")));
    assert_eq!(r.header("retry-after"), Some("1"));
    a.set_healthy(true);
    wait_for("a back", WAIT, || async { h.metrics().await.contains(&gauge(&a, 1)) }).await;
    assert_eq!(h.http("GET", "/hc", &[], b"").await.json()["upstream"], "a");
    assert!(h.logs().contains("gateway upstream taken out"), "logged");
    assert!(a.health_checks() >= 4);
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_and_failures_pass_through() {
    let up = Upstream::start("a").await;
    // A port nobody listens on: bound, then closed.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let h = start(
        &routes(json!([
            {"prefix": "/dead", "upstreams": [format!("http://{dead}")], "auth": "none"},
            {"prefix": "/up", "upstreams": [up.url()], "auth": "none"},
        ])),
        &[],
    );
    let r = h.http("GET", "/dead/x", &[], b"").await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (502, json!("the upstream could not be reached or failed to answer"))
    );
    let r = h.http("GET", "/up/fail", &[], b"").await;
    assert_eq!((r.status, r.json()["error"].clone()), (500, json!("failing on purpose")), "the upstream's own answer");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"herald_gateway_requests_total{route="/dead",outcome="upstream_error",status="5xx"} 1"#)
    );
    assert!(metrics.contains(r#"herald_gateway_requests_total{route="/up",outcome="ok",status="5xx"} 1"#));
}

#[tokio::test]
async fn answers_stream_without_waiting_for_their_end() {
    let up = Upstream::start("a").await;
    let h = start(&routes(json!([{"prefix": "/s", "upstreams": [up.url()], "auth": "none"}])), &[]);
    let mut stream = TcpStream::connect(h.addr).await.unwrap();
    stream.write_all(b"GET /s/stream HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let start = Instant::now();
    while !String::from_utf8_lossy(&buf).contains("first") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    let first_at = start.elapsed();
    assert!(!String::from_utf8_lossy(&buf).contains("last"));
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("last"), "{text}");
    assert!(text.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{text}");
    assert!(first_at < Duration::from_millis(350), "the first chunk came after {first_at:?}");
}

#[tokio::test]
async fn the_gateway_deny_list_applies_to_routes_only() {
    let up = Upstream::start("a").await;
    let h = start(
        &routes(json!([{"prefix": "/g", "upstreams": [up.url()], "auth": "none"}])),
        &[("HERALD_ACCESS_GATEWAY_DENY", "127.0.0.0/8")],
    );
    let r = h.http("GET", "/g", &[], b"").await;
    assert_eq!((r.status, r.json()["error"].clone()), (403, json!("your address is not allowed here")));
    assert_eq!(h.http("GET", "/health", &[], b"").await.status, 200);
    assert_eq!(up.served(), 0);
    assert!(h.metrics().await.contains(r#"herald_access_denied_total{endpoint="gateway"} 1"#));
}

#[test]
fn routes_that_shadow_herald_endpoints_stop_start_up() {
    for (prefix, says) in [("/api", "collides with the server API"), ("/connection", "collides with Herald's endpoint")]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["--port", "0", "--address", "127.0.0.1"])
            .env(
                "HERALD_GATEWAY_ROUTES",
                json!([{"prefix": prefix, "upstreams": ["http://127.0.0.1:1"], "auth": "none"}]).to_string(),
            )
            .env("HERALD_HTTP_API_KEY", API_KEY)
            .output()
            .expect("run herald");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("gateway.routes[0].prefix") && stderr.contains(says), "{stderr}");
    }
}
