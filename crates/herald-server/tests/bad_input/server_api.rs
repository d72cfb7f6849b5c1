//! Server API cases: keys, methods, bodies, fields, channel rules (the answers clients get, see
//! [`crate::protocol`]) and batch limits.

use serde_json::{Value, json};

use crate::support::*;
use crate::{Answer, Case, http, http_with, raw, raw_with, refused, run_group};

const MAX_BODY: usize = 2 * 1024 * 1024;
const MAX_BATCH: usize = 10;

fn post(method: &str, key: Option<&str>, body: &[u8]) -> Vec<u8> {
    let key = key.map(|k| format!("X-API-Key: {k}\r\n")).unwrap_or_default();
    let mut req = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: herald\r\nConnection: close\r\n{key}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn api(method: &str, body: &Value) -> Vec<u8> {
    post(method, Some(API_KEY), body.to_string().as_bytes())
}

/// A method error: 200 and `{"error": {"code", "message"}}`.
fn method_error(code: u32, message: &str) -> Answer {
    http(200, json!({"error": {"code": code, "message": message}}))
}

const TOO_LONG: &str = "bad request: channel is longer than channel.max_length";
const NUL: &str = "bad request: channel contains a NUL byte";
const UNKNOWN: &str = "unknown channel: channel namespace is not configured";

fn cases() -> Vec<Case> {
    let publish = |channel: &str| api("publish", &json!({"channel": channel, "data": {"x": 1}}));
    let fields =
        "expected one of `channel`, `data`, `b64data`, `skip_history`, `tags`, `idempotency_key`, `exclude_client`";
    let batch = |n: usize| {
        api("batch", &json!({"commands": vec![json!({"publish": {"channel": "news", "data": {"x": 1}}}); n]}))
    };
    vec![
        Case::new(
            "no API key",
            raw(post("publish", None, b"{}")),
            http(
                401,
                refused("unauthorized: no API key (send it in X-API-Key, Authorization: apikey <key> or ?api_key=)"),
            ),
        ),
        Case::new(
            "a wrong API key",
            raw(post("publish", Some("wrong"), b"{}")),
            http(401, refused("unauthorized: invalid API key")),
        ),
        Case::new(
            "GET instead of POST",
            raw_with(
                format!("GET /api/info HTTP/1.1\r\nHost: herald\r\nConnection: close\r\nX-API-Key: {API_KEY}\r\n\r\n"),
                Some("Allow"),
            ),
            http_with(405, refused("method not allowed: use POST"), "Allow", "POST"),
        ),
        Case::new(
            "an unknown API method",
            raw(post("publsh", Some(API_KEY), b"{}")),
            http(404, refused("unknown API method `publsh`")),
        ),
        Case::new(
            "invalid JSON",
            raw(post("publish", Some(API_KEY), br#"{"channel" "x"}"#)),
            http(400, refused("invalid JSON: expected `:` at line 1 column 12")),
        ),
        Case::new(
            "a field of the wrong type",
            raw(post("publish", Some(API_KEY), br#"{"channel":5,"data":{}}"#)),
            http(
                400,
                refused(
                    "invalid request: field `channel`: invalid type: integer `5`, expected a string at line 1 column 12",
                ),
            ),
        ),
        Case::new(
            "a wrong API key in Authorization: apikey",
            raw("POST /api/info HTTP/1.1\r\nHost: herald\r\nConnection: close\r\nAuthorization: apikey nope\r\n\
                 Content-Length: 2\r\n\r\n{}"),
            http(401, refused("unauthorized: invalid API key")),
        ),
        Case::new(
            "a body over http_api.max_body_size",
            raw(post("publish", Some(API_KEY), &vec![b' '; MAX_BODY + 1])),
            http(413, refused("request body too large")),
        ),
        Case::new(
            "a missing field",
            raw(api("publish", &json!({"data": 1}))),
            method_error(107, "bad request: missing field `channel`"),
        ),
        Case::new(
            "a misspelt field",
            raw(api("publish", &json!({"chanel": "news", "data": 1}))),
            method_error(107, &format!("bad request: missing field `channel`; unknown field `chanel`, {fields}")),
        ),
        Case::new(
            "publish without data",
            raw(api("publish", &json!({"channel": "news"}))),
            method_error(107, "bad request: missing field `data` (or `b64data`)"),
        ),
        Case::new(
            "an empty body",
            raw(post("publish", Some(API_KEY), b"")),
            method_error(107, "bad request: missing field `channel` (the request body is empty)"),
        ),
        Case::new("a channel of 256 bytes", raw(publish(&"x".repeat(256))), method_error(107, TOO_LONG)),
        Case::new(
            "a channel of 1 MB",
            raw(publish(&format!("hist:{}", "x".repeat(1 << 20)))),
            method_error(107, TOO_LONG),
        ),
        Case::new("a channel with a NUL byte", raw(publish("hist:a\u{0}b")), method_error(107, NUL)),
        Case::new("an unknown namespace", raw(publish("nope:x")), method_error(102, UNKNOWN)),
        Case::new(
            "subscribe to a channel with a NUL byte",
            raw(api("subscribe", &json!({"user": "1", "channel": "a\u{0}"}))),
            method_error(107, NUL),
        ),
        Case::new(
            "a batch over http_api.max_batch_commands",
            raw(batch(MAX_BATCH + 1)),
            method_error(
                107,
                &format!(
                    "bad request: too many commands in batch: {}, the limit is {MAX_BATCH} (http_api.max_batch_commands)",
                    MAX_BATCH + 1
                ),
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_api() {
    let body = MAX_BODY.to_string();
    let batch = MAX_BATCH.to_string();
    let env =
        [("HERALD_HTTP_API_MAX_BODY_SIZE", body.as_str()), ("HERALD_HTTP_API_MAX_BATCH_COMMANDS", batch.as_str())];
    let metrics = [
        (r#"herald_channel_refused_total{source="api",reason="too_long"}"#, 2),
        (r#"herald_channel_refused_total{source="api",reason="nul"}"#, 2),
        (r#"herald_channel_refused_total{source="api",reason="unknown_namespace"}"#, 1),
        ("herald_api_batches_over_limit_total", 1),
        (r#"herald_api_requests_total{method="publish",status="401",result="rejected",code=""}"#, 2),
        (r#"herald_api_requests_total{method="info",status="401",result="rejected",code=""}"#, 1),
        (r#"herald_api_requests_total{method="publish",status="413",result="rejected",code=""}"#, 1),
        (r#"herald_api_requests_total{method="unknown",status="404",result="rejected",code=""}"#, 1),
        (r#"herald_api_requests_total{method="info",status="405",result="rejected",code=""}"#, 1),
    ];
    run_group("server_api", &env, cases(), &metrics).await;
}
