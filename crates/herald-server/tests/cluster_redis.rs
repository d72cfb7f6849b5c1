//! Several `herald` nodes over a real `redis-server` (started on its own port by the harness):
//! delivery across nodes in order, history and presence seen from any node, cluster commands,
//! the node registry in `info`, `/health` while Redis is down, and recovery of every
//! publication after Redis restarts.

mod support;

use std::time::{Duration, Instant};

use herald_client::Client;
use herald_proto::SubscribeRequest;
use serde_json::{Value, json};
use support::redis::{RedisServer, Sentinel, cli, engine_env};
use support::*;

fn node(addresses: &[String], prefix: &str, name: &str) -> Herald {
    node_with(addresses, prefix, name, &[])
}

fn node_with(addresses: &[String], prefix: &str, name: &str, extra: &[(&'static str, &str)]) -> Herald {
    let mut env = engine_env(addresses, prefix);
    env.push(("HERALD_NODE_NAME", name.into()));
    env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Herald::start(&env)
}

fn prefix(test: &str) -> String {
    format!("t{}{test}", std::process::id())
}

async fn node_names(h: &Herald) -> Vec<String> {
    let info = h.api_ok("info", json!({})).await;
    let mut names: Vec<String> =
        info["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

async fn subscribe_at(h: &Herald, user: &str, channel: &str) -> Client {
    let (mut c, _) = h.client(user).await;
    let r = c
        .subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("subscribe {channel}: {e}"));
    assert!(r.recoverable || !channel.starts_with("hist:"), "{r:?}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_in_order_share_history_presence_and_list_each_other() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    let p = prefix("deliver");
    let a = node(&addrs, &p, "a");
    let b = node(&addrs, &p, "b");
    let mut c = Some(node(&addrs, &p, "c"));
    let mut on_b = subscribe_at(&b, "bob", "hist:room").await;
    let mut on_c = subscribe_at(c.as_ref().unwrap(), "carol", "hist:room").await;

    for i in 0..50 {
        let r = a.publish("hist:room", json!({ "n": i })).await;
        assert_eq!(r["offset"], i + 1, "{r}");
    }
    for sub in [&mut on_b, &mut on_c] {
        for i in 0..50u64 {
            let (data, offset) = next_publication(sub, "hist:room").await;
            assert_eq!((data["n"].as_u64(), offset), (Some(i), i + 1));
        }
    }

    // History and presence are the cluster's, whichever node answers.
    let history = c.as_ref().unwrap().api_ok("history", json!({"channel": "hist:room", "limit": -1})).await;
    let pubs = history["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 50);
    assert_eq!(pubs[49]["offset"], 50);
    assert_eq!(history["offset"], 50);
    let presence = a.api_ok("presence", json!({"channel": "hist:room"})).await;
    let users: Vec<&str> =
        presence["presence"].as_object().unwrap().values().map(|i| i["user"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 2, "{presence}");
    assert!(users.contains(&"bob") && users.contains(&"carol"), "{presence}");
    let stats = b.api_ok("presence_stats", json!({"channel": "hist:room"})).await;
    assert_eq!((stats["num_clients"].as_u64(), stats["num_users"].as_u64()), (Some(2), Some(2)));

    // A channel without history is delivered too, with no position.
    let mut live = subscribe_at(&b, "bob", "live:x").await;
    a.publish("live:x", json!({"hello": 1})).await;
    let (data, offset) = next_publication(&mut live, "live:x").await;
    assert_eq!((data, offset), (json!({"hello": 1}), 0));

    // Every node lists the three, then the two that are left once one dies.
    wait_for("three nodes in info", Duration::from_secs(10), || async { node_names(&a).await == ["a", "b", "c"] })
        .await;
    c.take();
    wait_for("two nodes in info", Duration::from_secs(15), || async { node_names(&a).await == ["a", "b"] }).await;
    for h in [&a, &b] {
        let resp = h.http("GET", "/health", &[], b"").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_reach_users_on_other_nodes() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    let p = prefix("commands");
    let a = node(&addrs, &p, "a");
    let c = node(&addrs, &p, "c");

    // Unsubscribe through A of a subscription held on C.
    let mut dave = subscribe_at(&c, "dave", "live:news").await;
    a.api_ok("unsubscribe", json!({"user": "dave", "channel": "live:news"})).await;
    let push = next_push(&mut dave).await;
    assert_eq!(push.channel, "live:news");
    assert_eq!(push.unsubscribe.map(|u| u.code), Some(2000));

    // Subscribe through A: the connection on C gets the server-side subscription.
    a.api_ok("subscribe", json!({"user": "dave", "channel": "live:server"})).await;
    let push = next_push(&mut dave).await;
    assert_eq!(push.channel, "live:server");
    assert!(push.subscribe.is_some(), "{push:?}");
    a.publish("live:server", json!({"via": "server-side"})).await;
    let (data, _) = next_publication(&mut dave, "live:server").await;
    assert_eq!(data, json!({"via": "server-side"}));

    // Disconnect through A closes the user's connection on C with the code asked for.
    a.api_ok("disconnect", json!({"user": "dave", "disconnect": {"code": 4100, "reason": "bye"}})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout(WAIT, dave.next_push()).await {
            Ok(Ok(_)) => assert!(Instant::now() < deadline, "still open"),
            Ok(Err(e)) => {
                assert!(e.to_string().contains("4100"), "{e}");
                break;
            }
            Err(_) => panic!("not closed within {WAIT:?}"),
        }
    }
    wait_for("dave gone from C", WAIT, || async { c.num_clients().await == 0 }).await;
}

/// Reads pushes of `channel` into `seen` (offsets), resubscribing with recovery when the node
/// says the stream may have a gap (2500) or the connection must be reopened.
async fn drain(
    client: &mut Client,
    channel: &str,
    seen: &mut Vec<u64>,
    epoch: &mut String,
    quiet: Duration,
    strict: bool,
) {
    while let Ok(Some(push)) = client.next_push_timeout(quiet).await {
        if push.channel != channel {
            continue;
        }
        if let Some(p) = push.publication {
            seen.push(p.offset);
        } else if let Some(u) = push.unsubscribe {
            assert_eq!(u.code, 2500, "unexpected unsubscribe {u:?}");
            resubscribe(client, channel, seen, epoch, strict).await;
        }
    }
}

async fn resubscribe(client: &mut Client, channel: &str, seen: &mut Vec<u64>, epoch: &mut String, strict: bool) {
    let offset = seen.last().copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = SubscribeRequest {
            channel: channel.into(),
            recover: true,
            offset,
            epoch: epoch.clone(),
            ..Default::default()
        };
        match client.subscribe(req).await {
            Ok(r) => {
                if strict {
                    assert!(r.recovered, "not recovered from {offset}: {r:?}");
                    assert_eq!(&r.epoch, epoch);
                }
                seen.extend(r.publications.iter().map(|p| p.offset));
                return;
            }
            // Redis may still be coming back: the subscribe is refused with error 100.
            Err(e) => {
                assert!(Instant::now() < deadline, "resubscribe kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_while_publishing_loses_nothing_and_health_follows() {
    let mut redis = RedisServer::start_persistent();
    let addrs = [redis.url()];
    let p = prefix("restart");
    let a = node(&addrs, &p, "a");
    let b = node(&addrs, &p, "b");
    let channel = "hist:feed";
    let mut subs = Vec::new();
    for (h, user) in [(&a, "ann"), (&b, "ben")] {
        let mut c = subscribe_at(h, user, channel).await;
        let r = c.history(herald_proto::HistoryRequest { channel: channel.into(), ..Default::default() }).await;
        let epoch = r.map(|h| h.epoch).unwrap_or_default();
        subs.push((c, Vec::<u64>::new(), epoch));
    }

    // Publish through A, one at a time, counting the accepted ones; Redis dies in the middle.
    let mut accepted = 0u64;
    let mut refused = 0u64;
    let mut saw_503 = false;
    let started = Instant::now();
    let mut killed = false;
    let mut restarted = false;
    while accepted < 120 && started.elapsed() < Duration::from_secs(60) {
        let (status, body) = a.api("publish", json!({"channel": channel, "data": {"n": accepted}})).await;
        if status == 200 && body.get("error").is_none() {
            accepted += 1;
            assert_eq!(body["result"]["offset"], accepted, "{body}");
        } else {
            refused += 1;
        }
        if accepted == 40 && !killed {
            redis.kill();
            killed = true;
            // Health turns 503 with the reason on every node while Redis is down.
            wait_for("503 while redis is down", Duration::from_secs(15), || async {
                let r = b.http("GET", "/health", &[], b"").await;
                r.status == 503 && r.text().contains("broker")
            })
            .await;
            saw_503 = true;
        }
        if killed && !restarted && refused >= 5 {
            redis.restart();
            restarted = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_503 && restarted && accepted == 120, "accepted {accepted}, refused {refused}");
    wait_for("200 after redis is back", Duration::from_secs(20), || async {
        a.http("GET", "/health", &[], b"").await.status == 200 && b.http("GET", "/health", &[], b"").await.status == 200
    })
    .await;

    for (client, seen, epoch) in subs.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < accepted as usize && Instant::now() < deadline {
            drain(client, channel, seen, epoch, Duration::from_millis(500), true).await;
        }
        let want: Vec<u64> = (1..=accepted).collect();
        assert_eq!(*seen, want, "every accepted publication exactly once, in order");
    }
    let metrics = b.metrics().await;
    assert!(metrics.contains("herald_broker_reconnects_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_sharded_over_two_independent_redis_instances() {
    let r1 = RedisServer::start();
    let r2 = RedisServer::start();
    let addrs = [r1.url(), r2.url()];
    let p = prefix("sharded");
    let a = node(&addrs, &p, "a");
    let b = node(&addrs, &p, "b");
    let channels: Vec<String> = (0..8).map(|i| format!("hist:s{i}")).collect();
    let mut subs = Vec::new();
    for ch in &channels {
        subs.push(subscribe_at(&b, "sam", ch).await);
    }
    for round in 0..5 {
        for ch in &channels {
            let r = a.publish(ch, json!({"round": round})).await;
            assert_eq!(r["offset"], round + 1);
        }
    }
    for (sub, ch) in subs.iter_mut().zip(&channels) {
        for round in 0..5u64 {
            let (data, offset) = next_publication(sub, ch).await;
            assert_eq!((data["round"].as_u64(), offset), (Some(round), round + 1));
        }
    }
    // Both instances hold some of the streams.
    for r in [&r1, &r2] {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &r.port.to_string(), "--scan", "--pattern", &format!("{p}.stream.*")])
            .output()
            .unwrap();
        let keys = String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.contains(".meta.")).count();
        assert!(keys > 0 && keys < channels.len(), "{} has {keys} streams", r.port);
    }
    let _: Value = a.api_ok("info", json!({})).await;
}

/// A `parallel` batch over Redis: its publishes run concurrently (pipelined on the engine's
/// connection), each lands in its own channel's history, and the limit still holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_publishes_every_command_through_redis() {
    const N: usize = 100;
    let redis = RedisServer::start();
    let a = node_with(&[redis.url()], &prefix("parbatch"), "a", &[("HERALD_HTTP_API_MAX_BATCH_COMMANDS", "100")]);
    let commands: Vec<Value> =
        (0..N).map(|n| json!({"publish": {"channel": format!("hist:pb{n}"), "data": {"n": n}}})).collect();
    let body = a.api_ok("batch", json!({"commands": commands, "parallel": true})).await;
    let replies = body["replies"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(replies.len(), N, "{body}");
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply["publish"]["offset"], 1, "{n}: {reply}");
    }
    for n in 0..N {
        let history = a.api_ok("history", json!({"channel": format!("hist:pb{n}"), "limit": -1})).await;
        assert_eq!(history["publications"], json!([{"data": {"n": n}, "offset": 1}]), "{n}");
    }

    let over: Vec<Value> = (0..=N).map(|n| json!({"publish": {"channel": "hist:over", "data": {"n": n}}})).collect();
    let (status, refused) = a.api("batch", json!({"commands": over, "parallel": true})).await;
    assert_eq!((status, &refused["error"]["code"]), (200, &json!(107)), "{refused}");
    let history = a.api_ok("history", json!({"channel": "hist:over", "limit": -1})).await;
    assert_eq!(history["publications"], json!([]), "the refused batch published: {history}");
}

/// Waits for the client's connection to end and returns the error that ended it.
async fn closed(client: &mut Client) -> String {
    loop {
        match tokio::time::timeout(WAIT, client.next_push()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return e.to_string(),
            Err(_) => panic!("not closed within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_connection_limit_holds_across_nodes() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    // Refuse the newer connection.
    let p = prefix("limit");
    let limit = [("HERALD_CLIENT_USER_CONNECTION_LIMIT", "2")];
    let a = node_with(&addrs, &p, "a", &limit);
    let b = node_with(&addrs, &p, "b", &limit);
    let (_first, _) = a.client("erin").await;
    let (second, _) = b.client("erin").await;
    for h in [&a, &b] {
        let Err(err) = herald_client::Client::connect(&h.client_options("erin")).await else {
            panic!("a third connection of erin was admitted")
        };
        assert!(err.to_string().contains("3504"), "{err}");
    }
    // Another user is not affected; once one of erin's connections is gone, she may connect.
    let _other = b.client("frank").await;
    second.close().await;
    wait_for("erin's slot freed", WAIT, || async {
        herald_client::Client::connect(&a.client_options("erin")).await.is_ok()
    })
    .await;

    // One connection per user, evicting the older one wherever it is.
    let p = prefix("single");
    let single =
        [("HERALD_CLIENT_USER_CONNECTION_LIMIT", "1"), ("HERALD_CLIENT_USER_CONNECTION_LIMIT_MODE", "evict_oldest")];
    let a = node_with(&addrs, &p, "a", &single);
    let b = node_with(&addrs, &p, "b", &single);
    let (mut old, _) = a.client("gina").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut new, _) = b.client("gina").await;
    let err = closed(&mut old).await;
    assert!(err.contains("3504"), "{err}");
    assert!(new.next_push_timeout(Duration::from_millis(300)).await.is_ok(), "the newer connection stays");
    wait_for("the evicted one gone from A", WAIT, || async { a.num_clients().await == 0 }).await;
    assert_eq!(b.num_clients().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_while_publishing_resumes_delivery_by_itself() {
    let master = RedisServer::start();
    let replica = RedisServer::start_replica_of(&master);
    let sentinel = Sentinel::start(&master);
    let addrs = [sentinel.url()];
    let p = prefix("sentinel");
    let a = node(&addrs, &p, "a");
    let b = node(&addrs, &p, "b");
    let channel = "hist:fo";
    let mut sub = subscribe_at(&b, "sue", channel).await;
    for i in 1..=5u64 {
        a.publish(channel, json!({"n": i})).await;
        assert_eq!(next_publication(&mut sub, channel).await.1, i);
    }

    // The sentinel learns about the replica from the master's INFO, then fails over to it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cli(sentinel.port, &["SENTINEL", "FAILOVER", "mymaster"]).starts_with("OK") {
        assert!(Instant::now() < deadline, "sentinel never accepted the failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut epoch = sub
        .history(herald_proto::HistoryRequest { channel: channel.into(), ..Default::default() })
        .await
        .map(|h| h.epoch)
        .unwrap_or_default();
    let mut seen: Vec<u64> = (1..=5).collect();
    let mut last_accepted = 5;
    let deadline = Instant::now() + Duration::from_secs(40);
    // Keep publishing through A until the sentinel names the replica and publications made
    // after that reach the subscriber on B.
    loop {
        assert!(Instant::now() < deadline, "delivery did not resume; seen {seen:?}");
        let (status, body) = a.api("publish", json!({"channel": channel, "data": {"n": 0}})).await;
        if status == 200 && body.get("error").is_none() {
            last_accepted = body["result"]["offset"].as_u64().unwrap();
        }
        drain(&mut sub, channel, &mut seen, &mut epoch, Duration::from_millis(100), false).await;
        let demoted = cli(master.port, &["ROLE"]).starts_with("slave");
        if demoted
            && sentinel.master_port() == Some(replica.port)
            && seen.last() == Some(&last_accepted)
            && last_accepted > 10
        {
            break;
        }
    }
    // Node B writes through its own command connection too, which must have followed the
    // master (the old one, now a replica, refuses writes).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = b.api("publish", json!({"channel": channel, "data": {"via": "b"}})).await;
        if status == 200 && body.get("error").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "publishing through B never worked again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // In order, none twice (publications acknowledged by the old master in the instant before
    // it stepped down may be lost: Redis replication is asynchronous).
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    wait_for("200 after the failover", Duration::from_secs(20), || async {
        a.http("GET", "/health", &[], b"").await.status == 200 && b.http("GET", "/health", &[], b"").await.status == 200
    })
    .await;
    assert!(b.metrics().await.contains("herald_broker_reconnects_total"), "B moved to the new master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_killed_node_reconnect_elsewhere_and_recover() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    let p = prefix("nodekill");
    let a = node(&addrs, &p, "a");
    let mut b = Some(node(&addrs, &p, "b"));
    let c = node(&addrs, &p, "c");
    let channel = "hist:k";
    let mut sub = subscribe_at(b.as_ref().unwrap(), "kim", channel).await;
    let first = a.publish(channel, json!({"n": 1})).await;
    assert_eq!(next_publication(&mut sub, channel).await.1, 1);
    let epoch = first["epoch"].as_str().unwrap().to_owned();

    // B dies (SIGKILL); its client's connection ends.
    b.take();
    assert!(!closed(&mut sub).await.is_empty());
    for n in 2..=4 {
        a.publish(channel, json!({"n": n})).await;
    }
    // The client reconnects to C and recovers what it missed from the cluster's history.
    let (mut again, _) = c.client("kim").await;
    let r = again
        .subscribe(SubscribeRequest {
            channel: channel.into(),
            recover: true,
            offset: 1,
            epoch: epoch.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.recovered, "{r:?}");
    assert_eq!(r.epoch, epoch);
    assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), [2, 3, 4]);
    a.publish(channel, json!({"n": 5})).await;
    assert_eq!(next_publication(&mut again, channel).await.1, 5);
}

/// A user trace started on one node traces the user's connection on another, and that node's
/// lines reach the first node's console stream over the control channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_trace_reaches_every_node_and_lines_come_back() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    let p = prefix("trace");
    let console = [("HERALD_ADMIN_ENABLED", "true"), ("HERALD_ADMIN_INSECURE", "true")];
    let a = node_with(&addrs, &p, "a", &console);
    let b = node(&addrs, &p, "b");
    wait_for("both nodes registered", Duration::from_secs(10), || async { node_names(&a).await.len() == 2 }).await;
    let mut on_b = subscribe_at(&b, "42", "room").await;

    let started = a.api_ok("trace_user", json!({"user": "42", "duration": 30})).await;
    assert_eq!(started["connections"], 0, "not on this node");
    // The start reaches b over the control channel: then b's commands for 42 are traced.
    wait_for("b traces 42", Duration::from_secs(5), || async {
        let found = b.api_ok("connections", json!({"user": "42"})).await;
        found["connections"][0]["traced"] == true
    })
    .await;
    let _ = on_b.presence_stats("room").await;
    wait_for("b's line in a's stream", Duration::from_secs(10), || async {
        let text = a.http("GET", "/admin/trace", &[], b"").await.text();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .any(|l| l["node"] == "b" && l["kind"] == "command" && l["method"] == "presence_stats" && l["user"] == "42")
    })
    .await;
    assert!(b.logs().contains("herald::trace"), "{}", b.logs());
    a.api_ok("trace_stop", json!({"user": "42"})).await;
    wait_for("b stops tracing", Duration::from_secs(5), || async {
        b.api_ok("connections", json!({"user": "42"})).await["connections"][0]["traced"] == false
    })
    .await;
}

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task list");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The engine's connections run on a thread of their own by default (`runtime.broker_thread`),
/// and with the option off on the workers; nodes of either kind deliver to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_thread_is_there_by_default_and_gone_when_turned_off() {
    let redis = RedisServer::start();
    let addrs = [redis.url()];
    let p = prefix("brokerthread");
    let with = node(&addrs, &p, "with");
    let without = node_with(&addrs, &p, "without", &[("HERALD_RUNTIME_BROKER_THREAD", "false")]);
    let memory = Herald::start(&[]);
    let named = |h: &Herald| thread_names(h.pid()).iter().filter(|n| *n == "herald-broker").count();
    assert_eq!(named(&with), 1, "{:?}", thread_names(with.pid()));
    assert_eq!(named(&without), 0, "{:?}", thread_names(without.pid()));
    assert_eq!(named(&memory), 0, "the memory engine has no connections: {:?}", thread_names(memory.pid()));

    let mut on_with = subscribe_at(&with, "w", "hist:bt").await;
    let mut on_without = subscribe_at(&without, "o", "hist:bt").await;
    for (i, publisher) in [&with, &without, &with, &without].into_iter().enumerate() {
        let r = publisher.publish("hist:bt", json!({ "n": i })).await;
        assert_eq!(r["offset"], i + 1, "{r}");
    }
    for sub in [&mut on_with, &mut on_without] {
        for i in 0..4u64 {
            assert_eq!(next_publication(sub, "hist:bt").await, (json!({ "n": i }), i + 1));
        }
    }
}
