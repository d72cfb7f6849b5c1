//! The admin console's HTTP surface against a real `herald`: login refused and accepted, the
//! cookie and CSRF token required, same-origin actions, session expiry, the failed-login
//! limit, start-up refusals; and per-user tracing: JSON log lines and the console's trace
//! stream for user 42, ending by itself.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const PASSWORD: &str = "console-pass";

fn console(extra: &[(&'static str, &'static str)]) -> Herald {
    let mut env = vec![
        ("HERALD_ADMIN_ENABLED", "true"),
        ("HERALD_ADMIN_PASSWORD", PASSWORD),
        ("HERALD_ADMIN_SECRET", "console-secret"),
        ("HERALD_LOG_FORMAT", "json"),
        ("HERALD_LOG_LEVEL", "info"),
    ];
    env.extend_from_slice(extra);
    Herald::start(&env)
}

fn origin(h: &Herald) -> String {
    format!("http://{}", h.addr)
}

/// Logs in; returns the cookie pair (`name=value`) and the CSRF token.
async fn login(h: &Herald) -> (String, String) {
    let o = origin(h);
    let body = json!({ "password": PASSWORD }).to_string();
    let resp = h.http("POST", "/admin/login", &[("Origin", &o)], body.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let set = resp.header("set-cookie").expect("a session cookie").to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
        assert!(set.contains(attribute), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_owned();
    (cookie, resp.json()["csrf"].as_str().unwrap().to_owned())
}

async fn action(h: &Herald, method: &str, cookie: &str, csrf: &str, body: Value) -> HttpResponse {
    let o = origin(h);
    let headers = [("Origin", o.as_str()), ("Cookie", cookie), ("X-Herald-CSRF", csrf)];
    h.http("POST", &format!("/admin/api/{method}"), &headers, body.to_string().as_bytes()).await
}

#[tokio::test]
async fn console_page_is_embedded_and_login_is_required() {
    let h = console(&[]);
    let page = h.http("GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Herald console"));
    assert!(page.header("content-security-policy").unwrap().contains("script-src 'self'"));
    for asset in ["/app.js", "/app.css"] {
        assert_eq!(h.http("GET", asset, &[], b"").await.status, 200, "{asset}");
    }
    // No session: the console's endpoints refuse.
    let resp = h.http("GET", "/admin/session", &[], b"").await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (401, "unauthorized: log in first"));
    let o = origin(&h);
    let resp = h.http("POST", "/admin/api/info", &[("Origin", &o)], b"{}").await;
    assert_eq!(resp.status, 401);

    // A wrong password is refused after a delay.
    let started = std::time::Instant::now();
    let wrong = h.http("POST", "/admin/login", &[("Origin", &o)], br#"{"password":"nope"}"#).await;
    assert_eq!((wrong.status, wrong.json()["error"].as_str().unwrap()), (401, "unauthorized: wrong password"));
    assert!(wrong.header("set-cookie").is_none());
    assert!(started.elapsed() >= Duration::from_millis(350), "a failure waits");
    let malformed = h.http("POST", "/admin/login", &[("Origin", &o)], b"{}").await;
    assert_eq!(malformed.status, 400);

    let (cookie, csrf) = login(&h).await;
    let info = action(&h, "info", &cookie, &csrf, json!({})).await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["result"]["nodes"][0]["num_clients"], 0);
    let session = h.http("GET", "/admin/session", &[("Cookie", &cookie)], b"").await;
    assert_eq!(session.json()["csrf"], csrf.as_str());

    // CSRF: no token, a wrong one, and a cross-origin request are refused.
    let no_token = h.http("POST", "/admin/api/info", &[("Origin", &o), ("Cookie", &cookie)], b"{}").await;
    assert_eq!(no_token.status, 403);
    assert!(no_token.text().contains("X-Herald-CSRF"));
    assert_eq!(action(&h, "info", &cookie, "forged", json!({})).await.status, 403);
    let cross = [("Origin", "http://evil.example"), ("Cookie", cookie.as_str()), ("X-Herald-CSRF", csrf.as_str())];
    let resp = h.http("POST", "/admin/api/info", &cross, b"{}").await;
    assert_eq!((resp.status, resp.json()["error"].as_str().unwrap()), (403, "forbidden: cross-origin request"));
    // A tampered cookie is not a session.
    let tampered = cookie.replacen('.', ".x", 1);
    assert_eq!(action(&h, "info", &tampered, &csrf, json!({})).await.status, 401);
    // Unknown methods and method errors answer as the API does.
    assert_eq!(action(&h, "nope", &cookie, &csrf, json!({})).await.status, 404);
    let bad = action(&h, "publish", &cookie, &csrf, json!({})).await.json();
    assert_eq!(bad["error"]["code"], 107);

    // Publishing from the console reaches a client.
    let (mut client, _) = h.subscriber("7", "news").await;
    let resp = action(&h, "publish", &cookie, &csrf, json!({"channel": "news", "data": {"n": 1}})).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(next_publication(&mut client, "news").await.0, json!({"n": 1}));
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"herald_admin_logins_total{result="wrong_password"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"herald_admin_logins_total{result="ok"} 1"#));
}

#[tokio::test]
async fn sessions_expire_and_failed_logins_are_limited() {
    let h = console(&[("HERALD_ADMIN_SESSION_TTL", "1s"), ("HERALD_ADMIN_LOGIN_FAILURES_PER_MINUTE", "2")]);
    let (cookie, csrf) = login(&h).await;
    assert_eq!(action(&h, "info", &cookie, &csrf, json!({})).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = action(&h, "info", &cookie, &csrf, json!({})).await;
    assert_eq!((expired.status, expired.json()["error"].as_str().unwrap()), (401, "session expired: log in again"));

    let o = origin(&h);
    for _ in 0..2 {
        assert_eq!(h.http("POST", "/admin/login", &[("Origin", &o)], br#"{"password":"x"}"#).await.status, 401);
    }
    let limited =
        h.http("POST", "/admin/login", &[("Origin", &o)], format!(r#"{{"password":"{PASSWORD}"}}"#).as_bytes()).await;
    assert_eq!(limited.status, 429, "even the right password waits out the minute");
    assert_eq!(limited.header("retry-after"), Some("60"));
}

#[tokio::test]
async fn start_up_refuses_a_console_without_password_or_secret() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["checkconfig"])
        .env("HERALD_ADMIN_ENABLED", "true")
        .env("HERALD_ADMIN_SECRET", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.password"), "{stderr}");
    // admin.insecure: no login, and a loud warning.
    let h = Herald::start(&[("HERALD_ADMIN_ENABLED", "true"), ("HERALD_ADMIN_INSECURE", "true")]);
    assert!(h.logs().contains("admin.insecure is on"), "{}", h.logs());
    let session = h.http("GET", "/admin/session", &[], b"").await;
    assert_eq!(session.status, 200);
    let csrf = session.json()["csrf"].as_str().unwrap().to_owned();
    let o = origin(&h);
    let info = h.http("POST", "/admin/api/info", &[("Origin", &o), ("X-Herald-CSRF", &csrf)], b"{}").await;
    assert_eq!(info.status, 200, "CSRF still applies: {}", info.text());
}

/// The events of an SSE body: (event, id, data as JSON).
fn sse(text: &str) -> Vec<(String, Option<u64>, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name));
            let data = field("data: ")?;
            let event = field("event: ").unwrap_or("message").to_owned();
            Some((event, field("id: ").and_then(|id| id.parse().ok()), serde_json::from_str(data).expect("JSON data")))
        })
        .collect()
}

#[tokio::test]
async fn trace_of_user_42_logs_json_lines_streams_them_and_ends_by_itself() {
    let h = console(&[("HERALD_ADMIN_TRACE_MAX_DURATION", "2s")]);
    let (mut traced, _) = h.subscriber("42", "news").await;
    let (mut other, _) = h.subscriber("7", "news").await;

    let too_long = h.api("trace_user", json!({"user": "42", "duration": 3})).await.1;
    assert_eq!(too_long["error"]["code"], 107);
    assert!(too_long["error"]["message"].as_str().unwrap().contains("admin.trace_max_duration"), "{too_long}");
    let started = h.api_ok("trace_user", json!({"user": "42", "duration": 2})).await;
    assert_eq!(started["connections"], 1);

    let _ = traced.presence_stats("news").await; // an error reply (no presence here) is traced too
    let _ = other.presence_stats("news").await;
    h.publish("news", json!({"hello": "traced"})).await;
    next_publication(&mut traced, "news").await;
    next_publication(&mut other, "news").await;

    // The console's stream has the lines of user 42 only.
    let (cookie, _) = login(&h).await;
    let stream = h.http("GET", "/admin/trace", &[("Cookie", &cookie)], b"").await;
    assert_eq!(stream.status, 200, "{}", stream.text());
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    let events = sse(&stream.text());
    let lines: Vec<&Value> = events.iter().filter(|(e, _, _)| e == "line").map(|(_, _, d)| d).collect();
    let ids: Vec<u64> = events.iter().filter(|(e, _, _)| e == "line").map(|(_, id, _)| id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "event ids are the line sequence: {ids:?}");
    let traces = &events.iter().find(|(e, _, _)| e == "traces").expect("a traces event").2;
    let kinds: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["kind"].as_str().unwrap(), l["method"].as_str().unwrap())).collect();
    for expected in [("trace", "start"), ("command", "presence_stats"), ("reply", ""), ("push", "news")] {
        assert!(kinds.contains(&expected), "{expected:?} missing from {kinds:?}");
    }
    assert!(lines.iter().all(|l| l["user"] == "42"), "{lines:?}");
    assert_eq!(traces[0]["user"], "42");
    let push = lines.iter().find(|l| l["kind"] == "push").unwrap();
    assert!(push["payload"].as_str().unwrap().contains("traced"), "{push}");

    // The JSON log has the same lines with their fields.
    let logs = h.logs();
    let json_lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "herald::trace")
        .collect();
    let command = json_lines
        .iter()
        .find(|v| v["trace_kind"] == "command")
        .unwrap_or_else(|| panic!("no traced command in the log:\n{logs}"));
    assert_eq!(command["level"], "INFO");
    assert_eq!(command["user"], "42");
    assert_eq!(command["method"], "presence_stats");
    assert!(!command["client"].as_str().unwrap().is_empty());
    assert!(command["payload"].as_str().unwrap().contains("news"));

    // The trace ends by itself: an end line, and later commands are not traced.
    // The browser's reconnection: Last-Event-ID resumes after the last line seen.
    let last = ids.last().unwrap().to_string();
    wait_for("the trace to end", Duration::from_secs(5), || async {
        let resp = h.http("GET", "/admin/trace", &[("Cookie", &cookie), ("Last-Event-ID", &last)], b"").await;
        let events = sse(&resp.text());
        assert!(events.iter().filter_map(|(_, id, _)| *id).all(|id| id > ids[ids.len() - 1]), "nothing twice");
        events.iter().any(|(e, _, l)| e == "line" && l["kind"] == "trace" && l["method"] == "end")
    })
    .await;
    let before = h.logs().matches("\"herald::trace\"").count();
    let _ = traced.presence_stats("news").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.logs().matches("\"herald::trace\"").count(), before, "no line after the end");
    let metrics = h.metrics().await;
    assert!(metrics.contains(r#"herald_trace_lines_total{kind="command"}"#), "{metrics}");
}
