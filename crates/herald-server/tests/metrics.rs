//! `/metrics` after a scripted session: every counter the session should move moved by exactly
//! the expected amount, read from the exposition with a Prometheus text-format parser.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use prometheus_parse::{Scrape, Value};
use serde_json::json;
use support::*;

/// Label pairs a sample must have.
type Labels<'a> = &'a [(&'a str, &'a str)];

/// The exposition parsed; panics when a line does not parse.
fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a valid Prometheus exposition")
}

/// The sum of the samples of `name` whose labels include `labels`: a counter's or a gauge's
/// value, a histogram's count (its `+Inf` bucket). 0 when there is none.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("{name} is a summary: histograms should have buckets"),
        })
        .sum()
}

/// The type every sample of `name` has.
fn kind(scrape: &Scrape, name: &str) -> &'static str {
    let kinds: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(_) => "histogram",
            Value::Summary(_) => "summary",
            Value::Untyped(_) => "untyped",
        })
        .collect();
    assert!(!kinds.is_empty(), "no sample of {name}");
    assert!(kinds.windows(2).all(|w| w[0] == w[1]), "{name}: {kinds:?}");
    kinds[0]
}

#[tokio::test]
async fn a_scripted_session_moves_the_counters_by_the_expected_amounts() {
    let herald = Herald::start(&[]);
    // Something of every family exists before the session, so "before" is a real reading.
    let (warm, _) = herald.subscriber("warm", "warmup").await;
    herald.publish("warmup", json!({})).await;
    warm.close().await;
    wait_for("the warm-up client to leave", WAIT, || async { herald.num_clients().await == 0 }).await;
    let before = scrape(&herald.metrics().await);

    // Connect and subscribe; a publication through the API reaches the subscriber.
    let (mut alice, _) = herald.subscriber("alice", "news").await;
    herald.publish("news", json!({"n": 1})).await;
    let (data, _) = next_publication(&mut alice, "news").await;
    assert_eq!(data, json!({"n": 1}));
    // A client publication is refused (publishing is not open to clients): error 103.
    let refused = alice.publish("news", Bytes::from_static(b"{}")).await.unwrap_err().to_string();
    assert!(refused.contains("103"), "{refused}");
    // RPC without a proxy: error 104 (method not found).
    let rpc = alice.rpc("echo", Bytes::from_static(b"{}")).await.unwrap_err().to_string();
    assert!(rpc.contains("104"), "{rpc}");
    let during = scrape(&herald.metrics().await);
    assert_eq!(value(&during, "herald_connections", &[]), 1.0);
    assert_eq!(value(&during, "herald_subscriptions", &[]), 1.0);
    assert_eq!(value(&during, "herald_transport_connections", &[("transport", "websocket")]), 1.0);
    assert_eq!(value(&during, "herald_queued_bytes", &[]), 0.0, "every reply was written");
    assert_eq!(value(&during, "herald_connections_by_encoding", &[("encoding", "json")]), 1.0);
    assert_eq!(value(&during, "herald_connections_by_encoding", &[("encoding", "protobuf")]), 0.0);
    assert!(value(&during, "herald_process_bytes_per_connection", &[]) >= 0.0);
    alice.close().await;

    // A command without a method closes the connection with 3501.
    let mut bob = RawWs::connected(&herald, "bob").await;
    bob.send_json(&json!({"id": 2})).await;
    bob.assert_closed_with(3501, "a command without a method").await;
    // Refused handshakes: a foreign Origin (403), a bad token (3500).
    let foreign = upgrade_request(herald.addr, WS_PATH, &[("Origin", "https://elsewhere.example")]);
    assert_eq!(raw_http(herald.addr, &foreign).await.status, 403);
    let mut forged = RawWs::open(herald.addr, WS_PATH, &[]).await;
    forged.send_json(&json!({"id": 1, "connect": {"token": "not-a-token"}})).await;
    forged.assert_closed_with(3500, "a connect with a bad token").await;
    wait_for("every client to leave", WAIT, || async { herald.num_clients().await == 0 }).await;

    let after = scrape(&herald.metrics().await);
    let moved = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels) - value(&before, name, labels);
    let expected: &[(&str, Labels<'_>, f64)] = &[
        ("herald_client_commands_total", &[("method", "connect"), ("result", "ok")], 2.0),
        ("herald_client_commands_total", &[("method", "connect"), ("result", "disconnect")], 1.0),
        ("herald_client_commands_total", &[("method", "subscribe"), ("result", "ok")], 1.0),
        ("herald_client_commands_total", &[("method", "publish"), ("result", "error")], 1.0),
        ("herald_client_commands_total", &[("method", "rpc"), ("result", "error")], 1.0),
        ("herald_client_commands_total", &[("method", "unknown"), ("result", "disconnect")], 1.0),
        ("herald_client_errors_total", &[("code", "103")], 1.0),
        ("herald_client_errors_total", &[("code", "104")], 1.0),
        ("herald_client_command_duration_seconds", &[("method", "connect")], 3.0),
        ("herald_client_command_duration_seconds", &[("method", "publish")], 1.0),
        ("herald_client_disconnects_total", &[("code", "3501")], 1.0),
        ("herald_client_disconnects_total", &[("code", "3500")], 1.0),
        ("herald_transport_rejected_total", &[("status", "403")], 1.0),
        ("herald_messages_published_total", &[], 1.0),
        ("herald_messages_delivered_total", &[], 1.0),
        // One publish by the test, and the info calls of the waits above.
        ("herald_api_requests_total", &[("method", "publish"), ("status", "200"), ("result", "ok")], 1.0),
        ("herald_api_request_duration_seconds", &[("method", "publish")], 1.0),
    ];
    let mut wrong = BTreeMap::new();
    for (name, labels, want) in expected {
        let got = moved(name, labels);
        if got != *want {
            wrong.insert(format!("{name}{labels:?}"), (got, *want));
        }
    }
    assert!(wrong.is_empty(), "moved by (got, expected): {wrong:#?}");
    assert_eq!(value(&after, "herald_connections", &[]), 0.0);
    assert_eq!(value(&after, "herald_subscriptions", &[]), 0.0);

    for (name, want) in [
        ("herald_client_commands_total", "counter"),
        ("herald_api_request_duration_seconds", "histogram"),
        ("herald_client_command_duration_seconds", "histogram"),
        ("herald_connections", "gauge"),
        ("herald_process_resident_memory_bytes", "gauge"),
        ("herald_process_open_fds", "gauge"),
        ("herald_process_bytes_per_connection", "gauge"),
        ("herald_queued_bytes", "gauge"),
    ] {
        assert_eq!(kind(&after, name), want, "{name}");
    }
    assert!(value(&after, "herald_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&after, "herald_process_open_fds", &[]) >= 3.0);
    // Labels stay bounded: no user or channel name appears in any label.
    for sample in &after.samples {
        for v in sample.labels.values() {
            assert!(!["alice", "bob", "news", "warm", "warmup"].contains(&v.as_str()), "{}: {v}", sample.metric);
        }
    }
}
