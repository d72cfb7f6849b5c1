//! The server API's answers to bad requests, over a real `herald`: each says what is wrong
//! (exact bodies), a `batch` is limited by `http_api.max_batch_commands`, a large batch does
//! not stall other requests on the same worker, and `herald_api_requests_total` tells method
//! errors from successes.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

fn bad_request(detail: &str) -> Value {
    json!({"error": {"code": 107, "message": format!("bad request: {detail}")}})
}

const PUBLISH_FIELDS: &str =
    "expected one of `channel`, `data`, `b64data`, `skip_history`, `tags`, `idempotency_key`, `exclude_client`";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_errors_name_the_missing_or_wrong_field() {
    let herald = Herald::start(&[]);
    let misspelt = format!("missing field `channel`; unknown field `chanel`, {PUBLISH_FIELDS}");
    let several = format!("missing field `channel`; unknown fields `a`, `b`, `c` and 1 more, {PUBLISH_FIELDS}");
    let long_name = "x".repeat(100);
    let long = format!("missing field `channel`; unknown field `{}…`, {PUBLISH_FIELDS}", "x".repeat(64));
    for (method, body, expected) in [
        ("publish", json!({"chanel": "news", "data": {}}), bad_request(&misspelt)),
        ("publish", json!({"a": 1, "b": 1, "c": 1, "d": 1, "data": 1}), bad_request(&several)),
        ("publish", json!({ long_name: 1, "data": 1 }), bad_request(&long)),
        (
            "publish",
            json!({"channel": "news", "dta": {}}),
            bad_request(&format!("missing field `data` (or `b64data`); unknown field `dta`, {PUBLISH_FIELDS}")),
        ),
        // Unknown fields alone are ignored, as Centrifugo does: SDKs send fields Herald lacks.
        ("publish", json!({"channel": "news", "data": {}, "delta": true}), json!({"result": {}})),
        ("history", json!({"channel": ""}), bad_request("missing field `channel`")),
        ("presence", json!({}), bad_request("missing field `channel`")),
        ("presence_stats", json!({}), bad_request("missing field `channel`")),
        ("history_remove", json!({}), bad_request("missing field `channel`")),
        ("subscribe", json!({"user": "1"}), bad_request("missing field `channel`")),
        (
            "history",
            json!({"channel": "hist:x", "reverse": true, "since": {"offset": 0, "epoch": "e"}}),
            bad_request("`since.offset` must be above 0 with `reverse`"),
        ),
        (
            "disconnect",
            json!({"user": "1", "disconnect": {"code": 1000, "reason": "x"}}),
            bad_request("`disconnect.code` 1000 is not between 3001 and 4999"),
        ),
        (
            "refresh",
            json!({"user": "1", "b64info": "%%"}),
            bad_request("`b64info` is not valid base64: Invalid symbol 37, offset 0."),
        ),
        ("channels", json!({"pattern": "[a"}), bad_request("`pattern` `[a` is not a valid pattern")),
    ] {
        let (status, reply) = herald.api(method, body.clone()).await;
        assert_eq!((status, &reply), (200, &expected), "{method} {body}");
    }

    // An empty body is `{}`, and the answer says the body was empty.
    let key = [("X-API-Key", API_KEY)];
    let resp = herald.http("POST", "/api/publish", &key, b"").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json(), bad_request("missing field `channel` (the request body is empty)"));
    // Whitespace only counts as empty too.
    let resp = herald.http("POST", "/api/publish", &key, b"\n").await;
    assert_eq!(resp.json(), bad_request("missing field `channel` (the request body is empty)"));
    // Transport error mode carries the same message.
    let resp = herald
        .http(
            "POST",
            "/api/publish",
            &[key[0], ("X-Centrifugo-Error-Mode", "transport")],
            br#"{"chanel":"n","data":1}"#,
        )
        .await;
    assert_eq!(resp.status, 400, "{resp:?}");
    assert_eq!(resp.json(), json!({"code": 107, "message": format!("bad request: {misspelt}")}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_and_unknown_methods_say_what_is_wrong() {
    let herald = Herald::start(&[]);
    let key = [("X-API-Key", API_KEY)];
    for (path, body, status, error) in [
        ("/api/publish", &b"{"[..], 400, "invalid JSON: EOF while parsing an object at line 1 column 1"),
        ("/api/publish", b"{\"channel\" \"x\"}", 400, "invalid JSON: expected `:` at line 1 column 12"),
        ("/api/publish", b"nope", 400, "invalid JSON: expected ident at line 1 column 2"),
        ("/api/publish", b"\"text\"", 400, "invalid request: the body must be a JSON object"),
        (
            "/api/publish",
            br#"{"channel":"n","tags":{"k":1}}"#,
            400,
            "invalid request: field `tags.k`: invalid type: integer `1`, expected a string at line 1 column 28",
        ),
        ("/api/publsh", b"{}", 404, "unknown API method `publsh`"),
    ] {
        let resp = herald.http("POST", path, &key, body).await;
        assert_eq!(resp.status, status, "{path} {}: {resp:?}", String::from_utf8_lossy(body));
        assert_eq!(resp.json(), json!({ "error": error }), "{path} {}", String::from_utf8_lossy(body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_commands_say_what_is_wrong_and_the_count_is_limited() {
    let herald = Herald::start(&[("HERALD_HTTP_API_MAX_BATCH_COMMANDS", "3")]);
    let replies = herald
        .api_ok(
            "batch",
            json!({"commands": [
                {"publish": {"chanel": "news", "data": 1}},
                {"batch": {"commands": []}},
                [1],
            ]}),
        )
        .await;
    assert_eq!(
        replies,
        json!({"replies": [
            bad_request(&format!("missing field `channel`; unknown field `chanel`, {PUBLISH_FIELDS}")),
            {"error": {"code": 104, "message": "not found: a batch cannot contain `batch`"}},
            bad_request(r#"a batch command must be an object naming one method, e.g. {"publish": {...}}"#),
        ]})
    );
    assert_eq!(
        herald.api_ok("batch", json!({"commands": [{}]})).await,
        json!({"replies": [{"error": {"code": 104, "message": "not found: the command names no method"}}]})
    );

    // One over the limit: refused as a whole, nothing runs.
    let (mut client, _) = herald.subscriber("1", "news").await;
    let four = json!({"commands": vec![json!({"publish": {"channel": "news", "data": {"n": 0}}}); 4]});
    assert_eq!(
        herald.api("batch", four).await,
        (200, bad_request("too many commands in batch: 4, the limit is 3 (http_api.max_batch_commands)"))
    );
    let four =
        json!({"commands": vec![json!({"publish": {"channel": "news", "data": {"n": 0}}}); 4], "parallel": true});
    assert_eq!(
        herald.api("batch", four).await,
        (200, bad_request("too many commands in batch: 4, the limit is 3 (http_api.max_batch_commands)")),
        "parallel"
    );
    let three = json!({"commands": vec![json!({"publish": {"channel": "news", "data": {"n": 1}}}); 3]});
    assert_eq!(herald.api_ok("batch", three).await["replies"].as_array().map(Vec::len), Some(3));
    assert_eq!(next_publication(&mut client, "news").await.0, json!({"n": 1}), "a refused batch published");
    let metrics = herald.metrics().await;
    assert!(metrics.lines().any(|l| l == "herald_api_batches_over_limit_total 2"), "{metrics}");
}

/// A batch at a generous limit runs while `/api/info` keeps answering quickly on the same
/// (single) worker thread: the batch yields between commands, sequential or parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_does_not_stall_other_requests() {
    large_batch_beside_probes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_parallel_batch_does_not_stall_other_requests() {
    large_batch_beside_probes(true).await;
}

async fn large_batch_beside_probes(parallel: bool) {
    const COMMANDS: usize = 30_000;
    let herald =
        Herald::start(&[("HERALD_RUNTIME_WORKER_THREADS", "1"), ("HERALD_HTTP_API_MAX_BATCH_COMMANDS", "30000")]);
    let body = json!({"commands": vec![json!({"info": {}}); COMMANDS], "parallel": parallel}).to_string();
    let addr = herald.addr;
    let batch = tokio::spawn(async move {
        let started = Instant::now();
        let resp = http_at(addr, "POST", "/api/batch", &[("X-API-Key", API_KEY)], body.as_bytes()).await;
        (resp, started.elapsed())
    });

    // Probe /api/info while the batch runs (bounded: at most 200 probes).
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while !batch.is_finished() && probes < 200 {
        let started = Instant::now();
        let (status, reply) = herald.api("info", json!({})).await;
        assert_eq!(status, 200, "{reply}");
        worst = worst.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (resp, took) = tokio::time::timeout(Duration::from_secs(60), batch).await.expect("batch finishes").unwrap();
    assert_eq!(resp.status, 200);
    let replies = resp.json()["replies"].as_array().map(Vec::len);
    assert_eq!(replies, Some(COMMANDS));
    println!(
        "batch of {COMMANDS} info commands (parallel: {parallel}) took {took:?}; {probes} concurrent /api/info, slowest {worst:?}"
    );
    assert!(probes > 0, "the batch ended before any probe ran ({took:?}): make it larger");
    assert!(worst < Duration::from_secs(1), "a concurrent /api/info waited {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_result_and_code() {
    let herald = Herald::start(&[]);
    herald.publish("news", json!(1)).await;
    herald.api("publish", json!({"data": 1})).await;
    herald.api("publish", json!({"channel": "nope:x", "data": 1})).await;
    herald.http("POST", "/api/publish", &[("X-API-Key", API_KEY)], b"{").await;
    let text = herald.metrics().await;
    let count = |labels: &str| -> f64 {
        let prefix = format!("herald_api_requests_total{{{labels}}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
        line[prefix.len()..].parse().unwrap()
    };
    // Labels render in the order they were given.
    assert_eq!(count(r#"method="publish",status="200",result="ok",code="""#), 1.0);
    assert_eq!(count(r#"method="publish",status="200",result="error",code="107""#), 1.0);
    assert_eq!(count(r#"method="publish",status="200",result="error",code="102""#), 1.0);
    assert_eq!(count(r#"method="publish",status="400",result="rejected",code="""#), 1.0);
}
