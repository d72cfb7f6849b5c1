//! Three `herald` processes over one `nats-server -js` (history in JetStream, presence in its
//! key-value bucket): publications through node A reach subscribers on B and C in order,
//! presence and history answer the same on every node, a NATS restart while publishing
//! loses and repeats nothing, and many callers publishing with history to one channel through
//! two nodes at once all succeed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use herald_proto::SubscribeRequest;
use serde_json::json;
use support::nats::NatsServer;
use support::*;

/// The harness namespace `hist` plus `rec`, where clients may recover.
const NAMESPACES: &str = r#"[{"name":"hist","history_size":100,"history_ttl":"5m","presence":true,"allow_subscribe_for_client":true},
{"name":"rec","history_size":100,"history_ttl":"5m","allow_recovery":true,"allow_subscribe_for_client":true}]"#;

fn cluster_env(nats: &NatsServer, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HERALD_CHANNEL_NAMESPACES", NAMESPACES.into()),
        ("HERALD_BROKER_ENABLED", "true".into()),
        ("HERALD_BROKER_TYPE", "nats".into()),
        ("HERALD_BROKER_NATS_URL", nats.url()),
        ("HERALD_BROKER_NATS_PREFIX", prefix.into()),
    ]
}

fn start(env: &[(&'static str, String)]) -> Herald {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Herald::start(&env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_publications_presence_and_history() {
    let nats = NatsServer::start();
    let env = cluster_env(&nats, "three");
    let (a, b, c) = (start(&env), start(&env), start(&env));
    let channel = "hist:news";
    let (mut on_b, _) = b.subscriber("ub", channel).await;
    let (mut on_c, _) = c.subscriber("uc", channel).await;

    for n in 1..=50u64 {
        let r = a.api_ok("publish", json!({"channel": channel, "data": {"n": n}})).await;
        assert_eq!(r["offset"], n, "{r}");
    }
    let expected: Vec<(u64, u64)> = (1..=50).map(|n| (n, n)).collect();
    assert_eq!(collect_numbered(&mut on_b, channel, 50, WAIT).await, expected);
    assert_eq!(collect_numbered(&mut on_c, channel, 50, WAIT).await, expected);

    // Presence and history read the shared stores from any node, including one without
    // subscribers.
    for node in [&a, &b, &c] {
        let presence = node.api_ok("presence", json!({"channel": channel})).await;
        let mut users: Vec<&str> =
            presence["presence"].as_object().unwrap().values().map(|i| i["user"].as_str().unwrap()).collect();
        users.sort();
        assert_eq!(users, ["ub", "uc"], "{presence}");
        let stats = node.api_ok("presence_stats", json!({"channel": channel})).await;
        assert_eq!((stats["num_clients"].as_u64(), stats["num_users"].as_u64()), (Some(2), Some(2)));
        let history = node.api_ok("history", json!({"channel": channel, "limit": -1})).await;
        let pubs = history["publications"].as_array().unwrap();
        assert_eq!(pubs.len(), 50);
        assert_eq!(pubs[49]["data"], json!({"n": 50}));
        assert_eq!(history["offset"], 50);
    }
    // A publication on a channel without history reaches the other node too.
    let (mut plain, _) = c.subscriber("p", "plain").await;
    a.publish("plain", json!({"n": 1})).await;
    assert_eq!(collect_numbered(&mut plain, "plain", 1, WAIT).await, vec![(1, 0)]);

    // Leaving removes the client from presence on every node.
    drop(on_b);
    wait_for("ub leaves presence", WAIT, || async {
        a.api_ok("presence_stats", json!({"channel": channel})).await["num_clients"] == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_while_publishing_loses_and_repeats_nothing() {
    let mut nats = NatsServer::start();
    let env = cluster_env(&nats, "restart");
    let (a, b, c) = (start(&env), start(&env), start(&env));
    let channel = "hist:live";
    let (mut on_b, _) = b.subscriber("ub", channel).await;
    let (mut on_c, _) = c.subscriber("uc", channel).await;
    let (mut plain, _) = c.subscriber("p", "plain").await;
    let total = 200u64;
    let publisher = tokio::spawn(async move {
        let mut n = 1;
        let mut failures = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while n <= total {
            assert!(tokio::time::Instant::now() < deadline, "publishing did not resume");
            // An error leaves the outcome unknown (the append may land when NATS is back): the
            // idempotency key makes the retry safe.
            let body = json!({"channel": channel, "data": {"n": n}, "idempotency_key": format!("k{n}")});
            let (status, body) = a.api("publish", body).await;
            if status == 200 && body.get("error").is_none() {
                assert_eq!(body["result"]["offset"], n, "{body}");
                n += 1;
            } else {
                // The engine is unavailable: the publisher retries the same publication.
                failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (a, failures)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    nats.stop();
    // Longer than broker.nats.write_timeout (1 s): publishes fail while NATS is away.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    nats.restart();
    let (a, failures) = publisher.await.unwrap();
    // Every node saw NATS go and come back (the publisher's retries depend on timing).
    for node in [&a, &b, &c] {
        let metrics = node.metrics().await;
        for name in ["herald_nats_disconnects_total", "herald_nats_reconnects_total"] {
            let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name}"));
            assert!(line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 1.0, "{line}");
        }
    }
    eprintln!("publishes refused during the outage and retried: {failures}");
    let expected: Vec<(u64, u64)> = (1..=total).map(|n| (n, n)).collect();
    assert_eq!(collect_numbered(&mut on_b, channel, total as usize, Duration::from_secs(30)).await, expected);
    assert_eq!(collect_numbered(&mut on_c, channel, total as usize, Duration::from_secs(30)).await, expected);
    // Nothing more arrives (no duplicates after the last one).
    assert!(tokio::time::timeout(Duration::from_millis(300), on_b.next_push()).await.is_err());
    // A channel without history cannot be repaired: its subscriber is told to resubscribe.
    let push = next_push(&mut plain).await;
    assert_eq!((push.channel.as_str(), push.unsubscribe.map(|u| u.code)), ("plain", Some(2500)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_recovers_on_another_node() {
    let nats = NatsServer::start();
    let env = cluster_env(&nats, "kill");
    let (a, b, c) = (start(&env), start(&env), start(&env));
    let channel = "rec:room";
    let (mut client, _) = c.client("u").await;
    let sub = SubscribeRequest { channel: channel.into(), recoverable: true, ..Default::default() };
    let first = client.subscribe(sub).await.unwrap();
    assert!(first.recoverable, "{first:?}");
    for n in 1..=3u64 {
        a.api_ok("publish", json!({"channel": channel, "data": {"n": n}})).await;
    }
    assert_eq!(collect_numbered(&mut client, channel, 3, WAIT).await, vec![(1, 1), (2, 2), (3, 3)]);

    drop(c); // SIGKILL: the client loses its node
    for n in 4..=6u64 {
        a.api_ok("publish", json!({"channel": channel, "data": {"n": n}})).await;
    }
    let (mut client, _) = b.client("u").await;
    let sub = SubscribeRequest {
        channel: channel.into(),
        recoverable: true,
        recover: true,
        offset: 3,
        epoch: first.epoch.clone(),
        ..Default::default()
    };
    let resumed = client.subscribe(sub).await.unwrap();
    assert!(resumed.recovered, "{resumed:?}");
    let missed: Vec<u64> = resumed.publications.iter().map(|p| p.offset).collect();
    assert_eq!(missed, vec![4, 5, 6]);
    a.api_ok("publish", json!({"channel": channel, "data": {"n": 7}})).await;
    assert_eq!(collect_numbered(&mut client, channel, 1, WAIT).await, vec![(7, 7)]);
}

/// Sums a counter's series (all label sets) in a Prometheus text page.
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_on_two_nodes_to_one_history_channel_all_succeed_in_order() {
    let nats = NatsServer::start();
    let env = cluster_env(&nats, "contend");
    let (a, b) = (Arc::new(start(&env)), Arc::new(start(&env)));
    let channel = "hist:hot";
    let (mut on_a, _) = a.subscriber("ua", channel).await;
    let (mut on_b, _) = b.subscriber("ub", channel).await;
    // 2 nodes × 16 callers × 12 publications, all at once: the same node's callers take turns
    // on the channel, the two nodes race each other for its offsets.
    let (callers, each) = (16u64, 12u64);
    let mut tasks = Vec::new();
    for (i, node) in [a.clone(), b.clone()].into_iter().enumerate() {
        for c in 0..callers {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                let mut offsets = Vec::new();
                for k in 0..each {
                    let n = (i as u64 * callers + c) * each + k;
                    let (status, body) = node.api("publish", json!({"channel": channel, "data": {"n": n}})).await;
                    assert!(status == 200 && body.get("error").is_none(), "publish {n} failed: {status} {body}");
                    offsets.push(body["result"]["offset"].as_u64().unwrap());
                }
                offsets
            }));
        }
    }
    let mut offsets = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // One caller's publications got increasing offsets (it waited for each answer).
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
        offsets.extend(mine);
    }
    let total = (2 * callers * each) as usize;
    offsets.sort_unstable();
    assert_eq!(offsets, (1..=total as u64).collect::<Vec<_>>(), "offsets are 1..={total}, each once");

    // Every subscriber sees every publication once, in offset order.
    for (name, sub) in [("a", &mut on_a), ("b", &mut on_b)] {
        let got = collect_numbered(sub, channel, total, Duration::from_secs(30)).await;
        let seen: Vec<u64> = got.iter().map(|&(_, offset)| offset).collect();
        assert_eq!(seen, (1..=total as u64).collect::<Vec<_>>(), "subscriber on {name}");
        let mut data: Vec<u64> = got.iter().map(|&(n, _)| n).collect();
        data.sort_unstable();
        assert_eq!(data, (0..total as u64).collect::<Vec<_>>(), "subscriber on {name}");
        assert!(tokio::time::timeout(Duration::from_millis(300), sub.next_push()).await.is_err(), "a duplicate");
    }
    let history = a.api_ok("history", json!({"channel": channel, "limit": -1})).await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 100, "the namespace keeps 100");
    assert_eq!(history["offset"], total as u64);
    // Nothing gave up; the races between the nodes were retried (how many depends on timing).
    let mut retries = 0.0;
    for node in [&a, &b] {
        let m = node.metrics().await;
        assert_eq!(counter(&m, "herald_nats_append_gave_up_total"), 0.0);
        retries += counter(&m, "herald_nats_append_retries_total");
    }
    eprintln!("appends retried after losing to the other node: {retries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_past_the_append_queue_limit_are_refused_with_the_reason() {
    let nats = NatsServer::start();
    let mut env = cluster_env(&nats, "full");
    env.push(("HERALD_BROKER_NATS_APPEND_QUEUE_PER_CHANNEL", "1".into()));
    let a = Arc::new(start(&env));
    let channel = "hist:full";
    // With one place in the queue, a burst of simultaneous publishes overflows it; bounded
    // rounds because how many overlap depends on scheduling.
    let mut refused = 0;
    let mut offsets = Vec::new();
    for _round in 0..20 {
        let tasks: Vec<_> = (0..24)
            .map(|n| {
                let a = a.clone();
                tokio::spawn(async move { a.api("publish", json!({"channel": channel, "data": {"n": n}})).await })
            })
            .collect();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "{body}");
            match body.get("error") {
                Some(e) => {
                    assert_eq!(e["code"], 100, "{body}");
                    refused += 1;
                }
                None => offsets.push(body["result"]["offset"].as_u64().unwrap()),
            }
        }
        if refused > 0 {
            break;
        }
    }
    assert!(refused > 0, "no publish overflowed a queue of 1");
    // The accepted ones still got distinct offsets.
    let n = offsets.len();
    offsets.sort_unstable();
    offsets.dedup();
    assert_eq!(offsets.len(), n);
    let m = a.metrics().await;
    assert!(counter(&m, "herald_nats_append_queue_full_total") >= refused as f64, "{refused}");
    wait_for("the log names the limit", WAIT, || async { a.logs().contains("broker.nats.append_queue_per_channel") })
        .await;
}
