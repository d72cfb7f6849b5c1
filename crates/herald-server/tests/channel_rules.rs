//! Channel rules against a real `herald` process: every server API method that takes a channel
//! answers a bad name with the code a client command gets (107 bad request, 102 unknown channel)
//! and a message that says what is wrong, and nothing is published or subscribed meanwhile.

mod support;

use serde_json::{Value, json};
use support::*;

/// `hist` (history, presence) and `strict` (a channel regex) namespaces.
const NAMESPACES_WITH_REGEX: &str = r#"[{"name":"hist","history_size":100,"history_ttl":"5m","presence":true,"allow_subscribe_for_client":true,"allow_publish_for_client":true,"allow_history_for_client":true,"allow_presence_for_client":true},{"name":"strict","channel_regex":"^[a-z]+$","allow_subscribe_for_client":true}]"#;

const TOO_LONG: &str = "bad request: channel is longer than channel.max_length";
const NUL: &str = "bad request: channel contains a NUL byte";
const UNKNOWN: &str = "unknown channel: channel namespace is not configured";
const INVALID: &str = "bad request: channel does not match the namespace's channel_regex (or is not ASCII)";

/// (channel, code, the API's message, what the case is).
fn bad_channels() -> Vec<(String, u32, &'static str, &'static str)> {
    vec![
        ("x".repeat(256), 107, TOO_LONG, "one byte over channel.max_length (255)"),
        (format!("hist:{}", "x".repeat(1 << 20)), 107, TOO_LONG, "a 1 MB name"),
        ("hist:a\u{0}b".into(), 107, NUL, "a NUL byte"),
        ("nope:x".into(), 102, UNKNOWN, "an unknown namespace"),
        (format!("nope:{}", "x".repeat(300)), 107, TOO_LONG, "too long is decided before the namespace"),
        ("strict:UPPER".into(), 107, INVALID, "fails the namespace's channel_regex"),
        ("strict:a\u{0}".into(), 107, NUL, "a NUL byte in a regex namespace"),
        ("café".into(), 107, INVALID, "not ASCII without a regex"),
    ]
}

/// The API's error object: the code and, after the code's text, what is wrong with the name.
fn error(code: u32, message: &str) -> Value {
    json!({"code": code, "message": message})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_method_applies_the_channel_rules_clients_get() {
    let herald = Herald::start(&[("HERALD_CHANNEL_NAMESPACES", NAMESPACES_WITH_REGEX)]);
    let (mut watcher, _) = herald.subscriber("42", "hist:ok").await;
    for (channel, code, message, what) in bad_channels() {
        let expected = (200, json!({"error": error(code, message)}));
        for (method, body) in [
            ("publish", json!({"channel": channel, "data": {"n": 1}})),
            ("subscribe", json!({"user": "42", "channel": channel})),
            ("unsubscribe", json!({"user": "42", "channel": channel})),
            ("presence", json!({"channel": channel})),
            ("presence_stats", json!({"channel": channel})),
            ("history", json!({"channel": channel, "limit": 10})),
            ("history_remove", json!({"channel": channel})),
        ] {
            assert_eq!(herald.api(method, body).await, expected, "{method}: {what}");
        }
        // broadcast answers per channel: the good one is published, the bad one refused.
        let (status, body) =
            herald.api("broadcast", json!({"channels": ["hist:ok", channel], "data": {"what": what}})).await;
        assert_eq!(status, 200, "broadcast: {what}");
        let responses = body["result"]["responses"].as_array().unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(responses[0]["result"]["offset"].is_u64(), "broadcast: {what}: {body}");
        assert_eq!(responses[1], json!({"error": error(code, message)}), "broadcast: {what}");
        assert_eq!(next_publication(&mut watcher, "hist:ok").await.0, json!({"what": what}));

        // The same name from a client gets the same code, and the connection stays usable
        // (a 1 MB name does not fit in a client message: websocket.message_size_limit).
        if channel.len() > 60_000 {
            continue;
        }
        let mut ws = RawWs::connected(&herald, "7").await;
        for (id, cmd) in [
            (2, json!({"subscribe": {"channel": channel}})),
            (3, json!({"publish": {"channel": channel, "data": {"n": 1}}})),
            (4, json!({"history": {"channel": channel, "limit": 10}})),
            (5, json!({"presence": {"channel": channel}})),
        ] {
            let mut cmd = cmd;
            cmd["id"] = json!(id);
            ws.send_json(&cmd).await;
            let replies = ws.recv_json().await;
            assert_eq!(replies[0]["id"], id, "client {cmd}: {what}");
            assert_eq!(replies[0]["error"]["code"], code, "client command {id}: {what}: {replies:?}");
        }
    }

    // Transport error mode keeps the HTTP status of the code.
    let headers = [("X-API-Key", API_KEY), ("X-Herald-Error-Mode", "transport")];
    let body = json!({"channel": "x".repeat(256), "data": {}}).to_string();
    let resp = herald.http("POST", "/api/publish", &headers, body.as_bytes()).await;
    assert_eq!((resp.status, resp.json()), (400, error(107, TOO_LONG)));

    // Nothing reached a bad channel, and the refusals are counted.
    assert_eq!(herald.api_ok("channels", json!({})).await, json!({"channels": {"hist:ok": {"num_clients": 1}}}));
    let metrics = herald.metrics().await;
    for line in [
        r#"herald_channel_refused_total{source="api",reason="too_long"}"#,
        r#"herald_channel_refused_total{source="api",reason="nul"}"#,
        r#"herald_channel_refused_total{source="client",reason="unknown_namespace"}"#,
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(line)), "no {line} in:\n{metrics}");
    }
}
