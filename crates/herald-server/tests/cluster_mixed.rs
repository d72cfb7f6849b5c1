//! Mixed mode: three `herald` nodes with `broker.type = "nats"` next to `engine.type = "redis"`
//! (publications over NATS, history, idempotency keys and presence in Redis), each server
//! started by the test on its own ports: delivery in order even with two publishing nodes,
//! history and presence from any node, cluster commands, and a NATS restart while publishing
//! that loses and repeats nothing (the gap is filled from the Redis history).

mod support;

use std::time::Duration;

use serde_json::json;
use support::nats::NatsServer;
use support::redis::{RedisServer, cli, engine_env};
use support::*;

fn mixed_env(nats: &NatsServer, redis: &RedisServer, prefix: &str) -> Vec<(&'static str, String)> {
    let mut env = engine_env(&[redis.url()], prefix);
    env.extend([
        ("HERALD_BROKER_ENABLED", "true".into()),
        ("HERALD_BROKER_TYPE", "nats".into()),
        ("HERALD_BROKER_NATS_URL", nats.url()),
        ("HERALD_BROKER_NATS_PREFIX", prefix.into()),
    ]);
    env
}

fn start(env: &[(&'static str, String)], name: &str) -> Herald {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("HERALD_NODE_NAME", name));
    Herald::start(&env)
}

fn prefix(test: &str) -> String {
    format!("m{}{test}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_carries_redis_stores_and_three_nodes_agree() {
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let p = prefix("three");
    let env = mixed_env(&nats, &redis, &p);
    let (a, b, c) = (start(&env, "a"), start(&env, "b"), start(&env, "c"));
    assert!(a.logs().contains("history and idempotency keys in Redis"), "{}", a.logs());
    let channel = "hist:news";
    let (mut on_b, _) = b.subscriber("ub", channel).await;
    let (mut on_c, _) = c.subscriber("uc", channel).await;

    for n in 1..=30u64 {
        let r = a.api_ok("publish", json!({"channel": channel, "data": {"n": n}})).await;
        assert_eq!(r["offset"], n, "{r}");
    }
    let expected: Vec<(u64, u64)> = (1..=30).map(|n| (n, n)).collect();
    assert_eq!(collect_numbered(&mut on_b, channel, 30, WAIT).await, expected);
    assert_eq!(collect_numbered(&mut on_c, channel, 30, WAIT).await, expected);
    // The history is Redis's stream (not a JetStream one).
    assert_eq!(cli(redis.port, &["XLEN", &format!("{p}.stream.{{{channel}}}")]).trim(), "30");

    // Two nodes publishing at once: offsets come from Redis, publications may cross on NATS,
    // and every subscriber still gets each one once, in offset order.
    let (a2, b2) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let mut tasks = Vec::new();
    for (node, base) in [(a2.clone(), 1000u64), (b2.clone(), 2000)] {
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..25 {
                let r = node.api_ok("publish", json!({"channel": channel, "data": {"n": base + i}})).await;
                offsets.push((base + i, r["offset"].as_u64().unwrap()));
            }
            offsets
        }));
    }
    let mut sent: Vec<(u64, u64)> = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap());
    }
    sent.sort_by_key(|(_, offset)| *offset);
    assert_eq!(sent.iter().map(|s| s.1).collect::<Vec<_>>(), (31..=80).collect::<Vec<_>>());
    assert_eq!(collect_numbered(&mut on_c, channel, 50, WAIT).await, sent);
    assert_eq!(collect_numbered(&mut on_b, channel, 50, WAIT).await, sent);
    let (a, b) = (a2, b2);

    // History and presence from any node, including one without subscribers.
    for node in [&*a, &*b, &c] {
        let history = node.api_ok("history", json!({"channel": channel, "limit": -1})).await;
        assert_eq!(history["publications"].as_array().unwrap().len(), 80, "{history}");
        assert_eq!(history["offset"], 80);
        let presence = node.api_ok("presence", json!({"channel": channel})).await;
        let mut users: Vec<&str> =
            presence["presence"].as_object().unwrap().values().map(|i| i["user"].as_str().unwrap()).collect();
        users.sort();
        assert_eq!(users, ["ub", "uc"], "{presence}");
    }
    // Idempotency keys hold cluster-wide, with and without history.
    for ch in [channel, "plain"] {
        let first = a.api_ok("publish", json!({"channel": ch, "data": {"n": 1}, "idempotency_key": "once"})).await;
        let again = b.api_ok("publish", json!({"channel": ch, "data": {"n": 1}, "idempotency_key": "once"})).await;
        assert_eq!(first, again, "{ch}");
    }
    assert_eq!(collect_numbered(&mut on_c, channel, 1, WAIT).await, vec![(1, 81)]);
    assert!(tokio::time::timeout(Duration::from_millis(300), on_c.next_push()).await.is_err(), "a repeat arrived");

    // A channel without history, and a cluster command through A for a user on C.
    let (mut plain, _) = c.subscriber("p", "plain").await;
    a.publish("plain", json!({"n": 7})).await;
    assert_eq!(collect_numbered(&mut plain, "plain", 1, WAIT).await, vec![(7, 0)]);
    // Reading its position at subscribe left a meta key in Redis: it expires.
    let ttl: i64 = cli(redis.port, &["TTL", &format!("{p}.stream.meta.{{plain}}")]).trim().parse().unwrap();
    assert!(ttl > 0, "meta key of a channel without history: TTL {ttl}");
    a.api_ok("unsubscribe", json!({"user": "p", "channel": "plain"})).await;
    let push = next_push(&mut plain).await;
    assert_eq!((push.channel.as_str(), push.unsubscribe.map(|u| u.code)), ("plain", Some(2000)));
    wait_for("three nodes in info", WAIT, || async {
        let info = a.api_ok("info", json!({})).await;
        info["nodes"].as_array().unwrap().len() == 3
    })
    .await;

    // Node announcements carry the node's publications per second: C's rate shows on A while
    // A publishes to C's subscriber.
    let (_rate_sub, _) = c.subscriber("rate", "plain2").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut n = 0u64;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "C never announced a publication rate");
        for _ in 0..10 {
            n += 1;
            a.publish("plain2", json!({"n": n})).await;
        }
        let info = a.api_ok("info", json!({})).await;
        let rate = info["nodes"].as_array().unwrap().iter().find(|node| node["name"] == "c").unwrap()
            ["publications_per_second"]
            .as_u64()
            .unwrap();
        if rate > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_while_publishing_recovers_from_redis_history() {
    let mut nats = NatsServer::start();
    let redis = RedisServer::start();
    let env = mixed_env(&nats, &redis, &prefix("restart"));
    let (a, b, c) = (start(&env, "a"), start(&env, "b"), start(&env, "c"));
    let channel = "hist:live";
    let (mut on_b, _) = b.subscriber("ub", channel).await;
    let (mut on_c, _) = c.subscriber("uc", channel).await;
    let (mut plain, _) = c.subscriber("p", "plain").await;
    let total = 200u64;
    let publisher = tokio::spawn(async move {
        let (mut n, mut failures) = (1, 0);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while n <= total {
            assert!(tokio::time::Instant::now() < deadline, "publishing did not resume");
            // A failed publish may have reached Redis: the idempotency key makes the retry safe.
            let body = json!({"channel": channel, "data": {"n": n}, "idempotency_key": format!("k{n}")});
            let (status, body) = a.api("publish", body).await;
            if status == 200 && body.get("error").is_none() {
                assert_eq!(body["result"]["offset"], n, "{body}");
                n += 1;
            } else {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (a, failures)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for node in [&b, &c] {
        assert_eq!(node.http("GET", "/health", &[], b"").await.status, 503, "health while NATS is away");
    }
    nats.restart();
    let (a, failures) = publisher.await.unwrap();
    eprintln!("publishes refused during the outage and retried: {failures}");
    let expected: Vec<(u64, u64)> = (1..=total).map(|n| (n, n)).collect();
    assert_eq!(collect_numbered(&mut on_b, channel, total as usize, Duration::from_secs(30)).await, expected);
    assert_eq!(collect_numbered(&mut on_c, channel, total as usize, Duration::from_secs(30)).await, expected);
    assert!(tokio::time::timeout(Duration::from_millis(300), on_b.next_push()).await.is_err(), "a repeat arrived");
    // A channel without history cannot be repaired: its subscriber is told to resubscribe.
    let push = next_push(&mut plain).await;
    assert_eq!((push.channel.as_str(), push.unsubscribe.map(|u| u.code)), ("plain", Some(2500)));
    for node in [&a, &b, &c] {
        wait_for("healthy again", WAIT, || async { node.http("GET", "/health", &[], b"").await.status == 200 }).await;
    }
}
