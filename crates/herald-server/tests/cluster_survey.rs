//! Cluster-wide `channels` and `connections` (surveys over the engine's control channel) with
//! three `herald` processes over a real `redis-server`, and over a real `nats-server`, both
//! started by the harness on their own ports: a node lists the channels and connections held
//! on the others, counts summed; a node that does not answer (stopped with SIGSTOP) is named
//! after `node.survey_timeout` instead of hanging the call.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::nats::NatsServer;
use support::redis::{RedisServer, engine_env};
use support::*;

fn start(mut env: Vec<(&'static str, String)>, name: &str) -> Herald {
    env.push(("HERALD_NODE_NAME", name.into()));
    env.push(("HERALD_NODE_SURVEY_TIMEOUT", "1s".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Herald::start(&env)
}

fn nats_env(nats: &NatsServer, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_BROKER_ENABLED", "true".into()),
        ("HERALD_BROKER_TYPE", "nats".into()),
        ("HERALD_BROKER_NATS_URL", nats.url()),
        ("HERALD_BROKER_NATS_PREFIX", prefix.into()),
    ]
}

async fn wait_for_nodes(h: &Herald, n: usize) {
    wait_for("every node in info", Duration::from_secs(15), || async {
        h.api_ok("info", json!({})).await["nodes"].as_array().map(Vec::len) == Some(n)
    })
    .await;
}

fn counts(channels: &Value) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = channels["channels"]
        .as_object()
        .unwrap_or_else(|| panic!("{channels}"))
        .iter()
        .map(|(name, info)| (name.clone(), info["num_clients"].as_u64().unwrap()))
        .collect();
    list.sort();
    list
}

/// The checks shared by both engines, on nodes `a`, `b`, `c` that see each other.
async fn channels_and_connections_span_the_cluster(a: &Herald, b: &Herald, c: &Herald) {
    // Subscribers of `onlyb` live on B only; `both` has one on B and two on C.
    let (_b1, _) = b.subscriber("u1", "onlyb").await;
    let (_b2, _) = b.subscriber("u2", "onlyb").await;
    let (_b3, _) = b.subscriber("u3", "both").await;
    let (_c1, _) = c.subscriber("u4", "both").await;
    let (_c2, _) = c.subscriber("u5", "both").await;
    // The user looked up has one connection on C and none on A.
    let (_carol, carol) = c.subscriber("carol", "room").await;

    let all = a.api_ok("channels", json!({})).await;
    assert_eq!(
        counts(&all),
        [("both".into(), 3), ("onlyb".into(), 2), ("room".into(), 1)],
        "asked on A, which has no subscriber: {all}"
    );
    assert!(all.get("missing_nodes").is_none(), "{all}");
    let only = a.api_ok("channels", json!({"pattern": "only*"})).await;
    assert_eq!(counts(&only), [("onlyb".into(), 2)], "{only}");

    let conns = a.api_ok("connections", json!({"user": "carol"})).await;
    let list = conns["connections"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{conns}");
    assert_eq!(list[0]["client"], carol.client, "{conns}");
    assert_eq!(list[0]["node"], "c", "{conns}");
    assert_eq!(list[0]["channels"], json!(["room"]), "{conns}");
    assert_eq!(conns["node"], "a");

    // A node that stops answering is named once the deadline passes; the call returns.
    c.signal(libc::SIGSTOP);
    let started = Instant::now();
    let partial = a.api_ok("channels", json!({})).await;
    let took = started.elapsed();
    c.signal(libc::SIGCONT);
    assert_eq!(partial["missing_nodes"], json!(["c"]), "{partial}");
    assert_eq!(counts(&partial), [("both".into(), 1), ("onlyb".into(), 2)], "B's subscribers only: {partial}");
    assert!(took < Duration::from_secs(10), "the survey waited {took:?}");

    let metrics = a.metrics().await;
    for name in ["herald_surveys_total", "herald_survey_answers_total", "herald_survey_timeouts_total"] {
        assert!(metrics.lines().any(|l| l.starts_with(name)), "{name} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_answers_channels_and_connections_of_every_node() {
    let redis = RedisServer::start();
    let env = engine_env(&[redis.url()], &format!("t{}survey", std::process::id()));
    let (a, b, c) = (start(env.clone(), "a"), start(env.clone(), "b"), start(env, "c"));
    wait_for_nodes(&a, 3).await;
    channels_and_connections_span_the_cluster(&a, &b, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_cluster_answers_channels_and_connections_of_every_node() {
    let nats = NatsServer::start();
    let env = nats_env(&nats, "survey");
    let (a, b, c) = (start(env.clone(), "a"), start(env.clone(), "b"), start(env, "c"));
    wait_for_nodes(&a, 3).await;
    channels_and_connections_span_the_cluster(&a, &b, &c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_answers_alone_and_refuses_a_bad_pattern() {
    let h = Herald::start(&[]);
    let (_s, _) = h.subscriber("u", "alone").await;
    let all = h.api_ok("channels", json!({})).await;
    assert_eq!(counts(&all), [("alone".into(), 1)], "{all}");
    assert!(all.get("missing_nodes").is_none(), "{all}");
    let (_, body) = h.api("channels", json!({"pattern": "[unclosed"})).await;
    assert_eq!(body["error"]["code"], 107, "{body}");
    let metrics = h.metrics().await;
    assert!(!metrics.contains("herald_surveys_total{"), "no survey is sent outside a cluster:\n{metrics}");
}
