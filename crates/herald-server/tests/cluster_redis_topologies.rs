//! `herald` nodes over the Redis topologies beyond one plain instance, each started by the test
//! on its own ports: a Redis Cluster of three masters (detected, sharded PUB/SUB; or given as
//! seeds in `cluster_address`), TLS to Redis with a CA and a client certificate made by the
//! test, a Sentinel that requires a password in front of a master that requires another, and a
//! Sentinel reached over TLS (`sentinel_tls`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herald_client::Client;
use herald_proto::SubscribeRequest;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;
use support::redis::{RedisCluster, RedisServer, cli, engine_env, free_port};
use support::*;

fn node(addresses: &[String], prefix: &str, name: &str, extra: &[(&'static str, String)]) -> Herald {
    let mut env = engine_env(addresses, prefix);
    env.push(("HERALD_NODE_NAME", name.into()));
    env.extend(extra.iter().cloned());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Herald::start(&env)
}

/// Runs `herald` expecting it to refuse to start: its exit code and standard error.
fn refused(addresses: &[String], extra: &[(&'static str, String)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["--port", "0", "--address", "127.0.0.1"]);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("HERALD_")) {
            cmd.env_remove(&name);
        }
    }
    cmd.env("HERALD_HTTP_API_KEY", "k").env("NO_COLOR", "1");
    for (k, v) in engine_env(addresses, "refused").into_iter().chain(extra.iter().cloned()) {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("herald kept running although it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn prefix(test: &str) -> String {
    format!("t{}{test}", std::process::id())
}

async fn subscribe_at(h: &Herald, user: &str, channel: &str) -> Client {
    let (mut c, _) = h.client(user).await;
    c.subscribe(SubscribeRequest { channel: channel.into(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("subscribe {channel}: {e}"));
    c
}

async fn node_names(h: &Herald) -> Vec<String> {
    let info = h.api_ok("info", json!({})).await;
    let mut names: Vec<String> =
        info["nodes"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

/// Publishes `count` messages on `channel` through `from` and checks that every subscriber
/// gets them all, in order, with offsets following `first_offset`.
async fn deliver(from: &Herald, subs: &mut [&mut Client], channel: &str, count: u64, first_offset: u64) {
    for i in 0..count {
        let r = from.publish(channel, json!({ "n": i })).await;
        assert_eq!(r["offset"], first_offset + i, "{r}");
    }
    for sub in subs.iter_mut() {
        for i in 0..count {
            let (data, offset) = next_publication(sub, channel).await;
            assert_eq!((data["n"].as_u64(), offset), (Some(i), first_offset + i), "{channel}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_is_detected_and_three_nodes_deliver_share_history_presence_and_commands() {
    let cluster = RedisCluster::start(3);
    // One node's address is enough: the others are discovered.
    let addrs = [cluster.nodes[1].url()];
    let p = prefix("cluster");
    let a = node(&addrs, &p, "a", &[]);
    let b = node(&addrs, &p, "b", &[]);
    let c = node(&addrs, &p, "c", &[]);
    assert!(a.logs().contains("Redis engine connected") && a.logs().contains("cluster"), "{}", a.logs());

    // Channels whose slots are spread over the three masters.
    let channels: Vec<String> = (0..12).map(|i| format!("hist:room{i}")).collect();
    let mut on_b = Vec::new();
    let mut on_c = Vec::new();
    for ch in &channels {
        on_b.push(subscribe_at(&b, "bob", ch).await);
        on_c.push(subscribe_at(&c, "carol", ch).await);
    }
    for (i, ch) in channels.iter().enumerate() {
        deliver(&a, &mut [&mut on_b[i], &mut on_c[i]], ch, 20, 1).await;
    }
    // Every master holds some of the channels' keys and served sharded PUB/SUB.
    for n in &cluster.nodes {
        let keys: u64 = cli(n.port, &["DBSIZE"]).trim().parse().unwrap();
        assert!(keys > 0, "master {} holds no key", n.port);
        let subs = cli(n.port, &["PUBSUB", "SHARDCHANNELS", &format!("{p}.client.*")]);
        assert!(!subs.trim().is_empty(), "master {} has no sharded subscription", n.port);
    }

    // History and presence from any node.
    let history = c.api_ok("history", json!({"channel": "hist:room3", "limit": -1})).await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 20, "{history}");
    assert_eq!(history["offset"], 20);
    let presence = a.api_ok("presence", json!({"channel": "hist:room3"})).await;
    let mut users: Vec<&str> =
        presence["presence"].as_object().unwrap().values().map(|i| i["user"].as_str().unwrap()).collect();
    users.sort();
    assert_eq!(users, ["bob", "carol"], "{presence}");

    // A channel without history, and the control channel: unsubscribe through A on C.
    let mut live = subscribe_at(&c, "dave", "live:x").await;
    a.publish("live:x", json!({"hello": 1})).await;
    assert_eq!(next_publication(&mut live, "live:x").await, (json!({"hello": 1}), 0));
    a.api_ok("unsubscribe", json!({"user": "dave", "channel": "live:x"})).await;
    let push = next_push(&mut live).await;
    assert_eq!((push.channel.as_str(), push.unsubscribe.map(|u| u.code)), ("live:x", Some(2000)));
    wait_for("three nodes in info", Duration::from_secs(10), || async { node_names(&b).await == ["a", "b", "c"] })
        .await;

    // A master restarts (its slots come back empty of subscriptions): nodes resubscribe by
    // themselves and clients recover what was published meanwhile.
    let mut restarted = cluster;
    let victim = restarted.nodes.iter().position(|n| n.port != restarted.nodes[1].port).unwrap();
    restarted.nodes[victim].kill();
    wait_for("a reports the outage", Duration::from_secs(15), || async {
        a.http("GET", "/health", &[], b"").await.status == 503 || b.http("GET", "/health", &[], b"").await.status == 503
    })
    .await;
    restarted.nodes[victim].restart();
    restarted.wait_ok();
    for h in [&a, &b, &c] {
        wait_for("healthy again", Duration::from_secs(30), || async {
            h.http("GET", "/health", &[], b"").await.status == 200
        })
        .await;
    }
    // Which slots lived on the master that dropped is the cluster client's knowledge, so every
    // subscription on a node that lost a connection is told to resubscribe and recover (2500).
    // Channels of the restarted master lost their history (no persistence); the others kept it.
    let mut lost = 0;
    for (i, ch) in channels.iter().enumerate() {
        for (sub, h, user) in [(&mut on_b[i], &b, "bob"), (&mut on_c[i], &c, "carol")] {
            let push = next_push(sub).await;
            assert_eq!(push.unsubscribe.as_ref().map(|u| u.code), Some(2500), "{ch}: {push:?}");
            *sub = subscribe_at(h, user, ch).await;
        }
        let history = a.api_ok("history", json!({"channel": ch, "limit": 0})).await;
        match history["offset"].as_u64() {
            Some(20) => {}
            None | Some(0) => lost += 1,
            other => panic!("{ch}: offset {other:?}"),
        }
    }
    assert!(lost > 0 && lost < channels.len(), "{lost} of {} channels lost their history", channels.len());
    // Everyone is subscribed again: every publication reaches every subscriber, in order.
    for (i, ch) in channels.iter().enumerate() {
        for n in 0..3 {
            let deadline = Instant::now() + WAIT;
            // The first command to the restarted master may still fail while the cluster client
            // repairs its connection: the API says so, and a retry goes through.
            let offset = loop {
                let (status, r) = a.api("publish", json!({"channel": ch, "data": {"again": n}})).await;
                if status == 200 && r.get("error").is_none() {
                    break r["result"]["offset"].as_u64().unwrap();
                }
                assert!(Instant::now() < deadline, "{ch}: publish keeps failing: {r}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            for sub in [&mut on_b[i], &mut on_c[i]] {
                assert_eq!(next_publication(sub, ch).await, (json!({"again": n}), offset), "{ch}");
            }
        }
    }
    drop(restarted);
}

/// A test CA that signs the Redis server's certificate and the node's client certificate.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Herald Redis test CA");
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn leaf(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A CA, a server and a client certificate with their keys, written as PEM files: their paths.
struct TlsFiles {
    ca_file: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

impl TlsFiles {
    /// Files in `dir`: the server's certificate (for `server`) and key under `server_files`.
    fn write(dir: &std::path::Path, server: &str, server_files: (&str, &str)) -> TlsFiles {
        let ca = TestCa::new();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path.to_string_lossy().into_owned()
        };
        let (cert, key) = ca.leaf(server);
        let (server_cert, server_key) = (write(server_files.0, &cert), write(server_files.1, &key));
        let (cert, key) = ca.leaf("herald");
        TlsFiles {
            ca_file: write("ca.pem", &ca.issuer.pem()),
            server_cert,
            server_key,
            client_cert: write("client.pem", &cert),
            client_key: write("client.key", &key),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_redis_with_a_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let TlsFiles { ca_file, server_cert, server_key, client_cert, client_key } =
        TlsFiles::write(dir.path(), "redis", ("server.pem", "server.key"));
    let tls_port = free_port();
    // The plain port only tells the harness the server is up; the nodes use the TLS port.
    let _redis = RedisServer::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        server_cert,
        "--tls-key-file".into(),
        server_key,
        "--tls-ca-cert-file".into(),
        ca_file.clone(),
        "--tls-auth-clients".into(),
        "yes".into(),
    ]);
    let addrs = [format!("rediss://127.0.0.1:{tls_port}")];
    let tls = vec![
        ("HERALD_ENGINE_REDIS_TLS_SERVER_CA_PEM", ca_file.clone()),
        ("HERALD_ENGINE_REDIS_TLS_CERT_PEM", client_cert.clone()),
        ("HERALD_ENGINE_REDIS_TLS_KEY_PEM", client_key.clone()),
    ];
    let p = prefix("tls");
    let a = node(&addrs, &p, "a", &tls);
    let b = node(&addrs, &p, "b", &tls);
    let mut sub = subscribe_at(&b, "bob", "hist:secure").await;
    deliver(&a, &mut [&mut sub], "hist:secure", 10, 1).await;
    let history = a.api_ok("history", json!({"channel": "hist:secure", "limit": -1})).await;
    assert_eq!(history["publications"].as_array().unwrap().len(), 10);

    // `tls.enabled` turns a redis:// address into a TLS one.
    let plain_form = [format!("redis://127.0.0.1:{tls_port}")];
    let mut enabled = tls.clone();
    enabled.push(("HERALD_ENGINE_REDIS_TLS_ENABLED", "true".into()));
    let c = node(&plain_form, &p, "c", &enabled);
    let mut on_c = subscribe_at(&c, "carol", "hist:secure").await;
    a.publish("hist:secure", json!({"n": 10})).await;
    assert_eq!(next_publication(&mut on_c, "hist:secure").await, (json!({"n": 10}), 11));

    // Without the CA the server's certificate is not trusted; without the client certificate
    // the server refuses the node: both say so and exit 1.
    let (code, err) = refused(&addrs, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.address") && err.contains("rediss://127.0.0.1"), "{err}");
    let (code, err) = refused(&addrs, &[("HERALD_ENGINE_REDIS_TLS_SERVER_CA_PEM", ca_file)]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.address"), "{err}");
    // A PEM option that is neither PEM, base64 nor a file is named.
    let (code, err) = refused(&addrs, &[("HERALD_ENGINE_REDIS_TLS_SERVER_CA_PEM", "/nonexistent/ca.pem".into())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.tls.server_ca_pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_verification_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf("redis");
    let cert_file = dir.path().join("server.pem");
    let key_file = dir.path().join("server.key");
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let tls_port = free_port();
    let _redis = RedisServer::start_with(vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        cert_file.to_string_lossy().into_owned(),
        "--tls-key-file".into(),
        key_file.to_string_lossy().into_owned(),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);
    let addrs = [format!("rediss://127.0.0.1:{tls_port}")];
    let insecure = [("HERALD_ENGINE_REDIS_TLS_INSECURE_SKIP_VERIFY", "true".to_owned())];
    let p = prefix("insecure");
    let a = node(&addrs, &p, "a", &insecure);
    let mut sub = subscribe_at(&a, "bob", "hist:x").await;
    deliver(&a, &mut [&mut sub], "hist:x", 3, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_and_master_passwords() {
    let master = RedisServer::start_with(["--requirepass", "master-pw"].map(String::from).to_vec());
    let sentinel = support::redis::Sentinel::start_with_auth(&master, "master-pw", "sentinel-pw");
    let addr = format!("redis+sentinel://:master-pw@127.0.0.1:{}?sentinel_master_name=mymaster", sentinel.port);
    let addrs = [addr.clone()];
    let creds = [("HERALD_ENGINE_REDIS_SENTINEL_PASSWORD", "sentinel-pw".to_owned())];
    let p = prefix("sentauth");
    let a = node(&addrs, &p, "a", &creds);
    // The sentinel's password may also be given in the address.
    let in_address = [format!("{addr}&sentinel_password=sentinel-pw")];
    let b = node(&in_address, &p, "b", &[]);
    let mut sub = subscribe_at(&b, "bob", "hist:s").await;
    deliver(&a, &mut [&mut sub], "hist:s", 5, 1).await;
    assert!(!a.logs().contains("master-pw") && !a.logs().contains("sentinel-pw"), "a password was logged");

    // A wrong sentinel password, or none for the master: refused at start, naming the address
    // without its password.
    let (code, err) = refused(&addrs, &[("HERALD_ENGINE_REDIS_SENTINEL_PASSWORD", "wrong".into())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.address") && !err.contains("master-pw"), "{err}");
    let no_master_pw = [format!("redis+sentinel://127.0.0.1:{}?sentinel_master_name=mymaster", sentinel.port)];
    let (code, err) = refused(&no_master_pw, &creds);
    assert_eq!(code, Some(1), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_address_lists_seeds_and_one_live_seed_is_enough() {
    let cluster = RedisCluster::start(3);
    // Nothing listens on the first seed: the node starts from the second one.
    let dead = free_port();
    let seeds = format!("127.0.0.1:{dead} 127.0.0.1:{}", cluster.nodes[0].port);
    let p = prefix("seeds");
    let a = node(&[], &p, "a", &[("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", seeds.clone())]);
    // A seed may be a redis:// URL too.
    let b = node(&[], &p, "b", &[("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", cluster.nodes[2].url())]);
    assert!(a.logs().contains("Redis engine connected") && a.logs().contains("cluster"), "{}", a.logs());
    let channels: Vec<String> = (0..6).map(|i| format!("hist:seed{i}")).collect();
    for ch in &channels {
        let mut sub = subscribe_at(&b, "bob", ch).await;
        deliver(&a, &mut [&mut sub], ch, 5, 1).await;
    }
    // Sharded PUB/SUB, as with a detected cluster.
    let subscribed: usize = cluster
        .nodes
        .iter()
        .map(|n| cli(n.port, &["PUBSUB", "SHARDCHANNELS", &format!("{p}.client.*")]).lines().count())
        .sum();
    assert!(subscribed > 0, "no sharded subscription on any master");

    // Refused at start: both address and cluster_address; a seed without a port; seeds that
    // are not a cluster; no seed answering.
    let seed = [("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", seeds.clone())];
    let (code, err) = refused(&[cluster.nodes[1].url()], &seed);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.cluster_address") && err.contains("not both"), "{err}");
    let (code, err) = refused(&[], &[("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", "127.0.0.1".into())]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.cluster_address") && err.contains("host:port"), "{err}");
    let standalone = RedisServer::start();
    let (code, err) =
        refused(&[], &[("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", format!("127.0.0.1:{}", standalone.port))]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.cluster_address"), "{err}");
    let (code, err) = refused(&[], &[("HERALD_ENGINE_REDIS_CLUSTER_ADDRESS", format!("127.0.0.1:{dead}"))]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.cluster_address"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_tls_reaches_a_sentinel_that_only_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let TlsFiles { ca_file, server_cert, server_key, client_cert, client_key } =
        TlsFiles::write(dir.path(), "sentinel", ("sentinel.pem", "sentinel.key"));
    let master = RedisServer::start();
    let tls_port = free_port();
    // The plain port only tells the harness the sentinel is up; the nodes use the TLS port,
    // which wants a client certificate.
    let sentinel = support::redis::Sentinel::start_with_config(
        &master,
        &format!(
            "tls-port {tls_port}\ntls-cert-file {server_cert}\ntls-key-file {server_key}\n\
             tls-ca-cert-file {ca_file}\ntls-auth-clients yes\n"
        ),
    );
    assert_eq!(sentinel.master_port(), Some(master.port));
    let addrs = [format!("redis+sentinel://127.0.0.1:{tls_port}?sentinel_master_name=mymaster")];
    let tls = vec![
        ("HERALD_ENGINE_REDIS_SENTINEL_TLS_ENABLED", "true".to_owned()),
        ("HERALD_ENGINE_REDIS_SENTINEL_TLS_SERVER_CA_PEM", ca_file.clone()),
        ("HERALD_ENGINE_REDIS_SENTINEL_TLS_CERT_PEM", client_cert.clone()),
        ("HERALD_ENGINE_REDIS_SENTINEL_TLS_KEY_PEM", client_key.clone()),
    ];
    let p = prefix("senttls");
    let a = node(&addrs, &p, "a", &tls);
    let b = node(&addrs, &p, "b", &tls);
    let mut sub = subscribe_at(&b, "bob", "hist:st").await;
    deliver(&a, &mut [&mut sub], "hist:st", 5, 1).await;
    // The master (plain) got the data: the sentinel named it over TLS.
    assert!(cli(master.port, &["DBSIZE"]).trim().parse::<u64>().unwrap() > 0);

    // Without sentinel_tls the TLS-only port does not answer plain Redis; without the client
    // certificate the sentinel refuses the node: both stop start-up naming the address.
    let (code, err) = refused(&addrs, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.address"), "{err}");
    let (code, err) = refused(&addrs, &tls[..2]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.address"), "{err}");
    // sentinel_tls without a Sentinel address, or its options while it is off: refused by name.
    let (code, err) = refused(&[master.url()], &tls);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.sentinel_tls.enabled"), "{err}");
    let (code, err) = refused(&addrs, &tls[1..2]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("engine.redis.sentinel_tls.enabled") && err.contains("off"), "{err}");
}
