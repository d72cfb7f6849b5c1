//! The NATS engine against a real `nats-server -js` started on its own loopback port in a
//! temp dir (never the machine's 4222): delivery between brokers standing for nodes, history
//! in JetStream, presence in the key-value bucket, and a NATS restart while publishing.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_hub::broker::{Broker, BrokerHandler, HistoryQuery, PresenceManager, PublishOptions};
use herald_hub::{Clock, ManualClock, SystemClock};
use herald_nats::{NatsBroker, NatsConfig, NatsPresence};
use herald_proto::{ClientInfo, Publication, StreamPosition};

/// A `nats-server -js` child, killed by PID on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl NatsServer {
    fn start() -> NatsServer {
        let dir = std::env::temp_dir().join(format!("herald-nats-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = NatsServer { child: None, port: free_port(), dir };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        assert_ne!(self.port, 4222);
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a node's hub would receive.
#[derive(Default)]
struct Recorder {
    pubs: Mutex<Vec<(String, u64, Bytes)>>,
    joins: Mutex<Vec<(String, String)>>,
    leaves: Mutex<Vec<(String, String)>>,
    control: Mutex<Vec<Bytes>>,
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &str, p: &Publication, _exclude: Option<uuid::Uuid>) {
        self.pubs.lock().unwrap().push((channel.into(), p.offset, p.data.clone()));
    }
    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        self.joins.lock().unwrap().push((channel.into(), info.client.clone()));
    }
    fn handle_leave(&self, channel: &str, info: &ClientInfo) {
        self.leaves.lock().unwrap().push((channel.into(), info.client.clone()));
    }
    fn handle_control(&self, payload: Bytes) {
        self.control.lock().unwrap().push(payload);
    }
}

struct Node {
    uid: String,
    broker: NatsBroker,
    presence: NatsPresence,
    seen: Arc<Recorder>,
}

fn config(url: &str, uid: &str) -> NatsConfig {
    NatsConfig {
        url: url.into(),
        prefix: "t".into(),
        node_uid: uid.into(),
        presence_ttl: Duration::from_secs(3),
        ..Default::default()
    }
}

async fn node(url: &str) -> Node {
    node_with_clock(url, Arc::new(SystemClock)).await
}

async fn node_with_clock(url: &str, clock: Arc<dyn Clock>) -> Node {
    let uid = uuid::Uuid::new_v4().to_string();
    let cfg = config(url, &uid);
    let conn = herald_nats::connect(&cfg).await.unwrap();
    let broker = NatsBroker::open(&conn, &cfg, clock).await.unwrap();
    let presence = NatsPresence::open(conn.client().clone(), &cfg).await.unwrap();
    let seen = Arc::new(Recorder::default());
    broker.set_handler(seen.clone()).unwrap();
    Node { uid, broker, presence, seen }
}

fn history_opts(size: usize) -> PublishOptions {
    PublishOptions {
        history_size: size,
        history_ttl: Duration::from_secs(300),
        history_meta_ttl: Duration::from_secs(3600),
        ..Default::default()
    }
}

fn publication(data: &str) -> Publication {
    Publication { data: Bytes::from(data.to_owned()), ..Default::default() }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn offsets(seen: &Recorder, channel: &str) -> Vec<u64> {
    seen.pubs.lock().unwrap().iter().filter(|(c, _, _)| c == channel).map(|(_, o, _)| *o).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_joins_leaves_and_control_reach_the_other_nodes() {
    let nats = NatsServer::start();
    let (a, b, c) = (node(&nats.url()).await, node(&nats.url()).await, node(&nats.url()).await);
    // Channel names NATS would read as separators or wildcards still get their own subject.
    for ch in ["news", "a.b", "a.*", "a.>", "sp ace"] {
        b.broker.subscribe(ch).await.unwrap();
    }
    for ch in ["news", "a.b", "a.*", "a.>", "sp ace"] {
        a.broker.publish(ch, publication(ch), &PublishOptions::default()).await.unwrap();
    }
    wait_for("5 publications on b", || b.seen.pubs.lock().unwrap().len() == 5).await;
    let got: Vec<(String, Bytes)> =
        b.seen.pubs.lock().unwrap().iter().map(|(c, _, d)| (c.clone(), d.clone())).collect();
    for (ch, data) in got {
        assert_eq!(data, Bytes::from(ch), "each channel gets only its own publication");
    }
    assert!(c.seen.pubs.lock().unwrap().is_empty(), "c has no subscriber");

    let info = ClientInfo { client: "c1".into(), user: "u1".into(), ..Default::default() };
    a.broker.publish_join("news", info.clone()).await.unwrap();
    a.broker.publish_leave("news", info).await.unwrap();
    wait_for("join and leave", || !b.seen.leaves.lock().unwrap().is_empty()).await;
    assert_eq!(b.seen.joins.lock().unwrap()[0], ("news".into(), "c1".into()));

    b.broker.unsubscribe("news").await.unwrap();
    assert_eq!(b.broker.num_channels(), 4, "an unsubscribed channel is forgotten");
    // Subscribes and unsubscribes of many channels at once (and of one channel twice) settle.
    let names: Vec<String> = (0..20).map(|i| format!("churn{}", i % 10)).collect();
    futures_util::future::join_all(names.iter().map(|ch| b.broker.subscribe(ch)))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!(b.broker.num_channels(), 14);
    futures_util::future::join_all(names.iter().map(|ch| b.broker.unsubscribe(ch)))
        .await
        .into_iter()
        .for_each(|r| r.unwrap());
    assert_eq!(b.broker.num_channels(), 4);
    a.broker.publish("news", publication("after"), &PublishOptions::default()).await.unwrap();

    a.broker.publish_control(None, Bytes::from_static(b"all")).await.unwrap();
    a.broker.publish_control(Some(&c.uid), Bytes::from_static(b"to-c")).await.unwrap();
    wait_for("control on c", || c.seen.control.lock().unwrap().len() == 2).await;
    wait_for("control on b", || !b.seen.control.lock().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(*b.seen.control.lock().unwrap(), vec![Bytes::from_static(b"all")], "b gets only the broadcast");
    assert_eq!(b.seen.pubs.lock().unwrap().len(), 5, "nothing after unsubscribe");
    assert!(a.broker.healthy() && a.presence.healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_keeps_offsets_epoch_size_and_idempotency() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    // A read of an empty stream fixes the epoch that the first publish then keeps.
    let empty = b.broker.history("h", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert_eq!(empty.top.offset, 0);
    assert_eq!(empty.top.epoch.len(), 4);
    for i in 1..=5 {
        let out = a.broker.publish("h", publication(&format!("m{i}")), &history_opts(3)).await.unwrap();
        assert_eq!(out.position, Some(StreamPosition { offset: i, epoch: empty.top.epoch.clone() }));
    }
    let all = b.broker.history("h", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert_eq!(all.top, StreamPosition { offset: 5, epoch: empty.top.epoch.clone() });
    let got: Vec<u64> = all.publications.iter().map(|p| p.offset).collect();
    assert_eq!(got, vec![3, 4, 5], "history_size 3 keeps the last three");
    let since = StreamPosition { offset: 3, epoch: all.top.epoch.clone() };
    let after = b.broker.history("h", HistoryQuery { since: Some(since.clone()), limit: 1, ..Default::default() });
    assert_eq!(after.await.unwrap().publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![4]);
    let back = b.broker.history("h", HistoryQuery { limit: 2, reverse: true, ..Default::default() }).await.unwrap();
    assert_eq!(back.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![5, 4]);
    let top_only = b.broker.history("h", HistoryQuery { limit: 0, ..Default::default() }).await.unwrap();
    assert!(top_only.publications.is_empty());
    assert_eq!(top_only.top.offset, 5);

    // Idempotency: the second publish with a key is suppressed on any node and answers the
    // first one's position.
    let mut opts = history_opts(3);
    opts.idempotency_key = Some("k1".into());
    let first = a.broker.publish("h", publication("once"), &opts).await.unwrap();
    let second = b.broker.publish("h", publication("once"), &opts).await.unwrap();
    assert!(!first.suppressed && second.suppressed);
    assert_eq!(first.position, second.position);
    assert_eq!(first.position.as_ref().unwrap().offset, 6);
    let plain = PublishOptions { idempotency_key: Some("k2".into()), ..Default::default() };
    assert!(!a.broker.publish("p", publication("x"), &plain).await.unwrap().suppressed);
    assert!(b.broker.publish("p", publication("x"), &plain).await.unwrap().suppressed);

    // Removing history keeps the position; the next publish continues it.
    a.broker.remove_history("h").await.unwrap();
    let removed = b.broker.history("h", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert!(removed.publications.is_empty());
    assert_eq!(removed.top.offset, 6);
    let next = a.broker.publish("h", publication("m7"), &history_opts(3)).await.unwrap();
    assert_eq!(next.position.unwrap().offset, 7);
    let after_removal = b.broker.history("h", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert_eq!(after_removal.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_ttl_clears_publications_and_meta_ttl_starts_a_new_epoch() {
    let nats = NatsServer::start();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let a = node_with_clock(&nats.url(), clock.clone()).await;
    let opts = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(10),
        history_meta_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let all = HistoryQuery { limit: -1, ..Default::default() };
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = a.broker.publish("t", publication("x"), &opts).await.unwrap().position.unwrap().epoch;
        assert_eq!(a.broker.history("t", all.clone()).await.unwrap().top.offset, i);
    }
    clock.advance(11_000);
    let expired = a.broker.history("t", all.clone()).await.unwrap();
    assert!(expired.publications.is_empty(), "history TTL passed");
    assert_eq!(expired.top, StreamPosition { offset: 3, epoch: epoch.clone() }, "the position stays");
    a.broker.publish("t", publication("y"), &opts).await.unwrap();
    let after = a.broker.history("t", all.clone()).await.unwrap();
    assert_eq!(after.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![4], "only what came after");
    clock.advance(61_000);
    let fresh = a.broker.publish("t", publication("z"), &opts).await.unwrap().position.unwrap();
    assert_eq!(fresh.offset, 1, "meta TTL passed: a new stream");
    assert_ne!(fresh.epoch, epoch);
    clock.advance(61_000);
    let read = a.broker.history("t", all).await.unwrap();
    assert_eq!(read.top.offset, 0, "a read after the meta TTL sees a new, empty stream");
    assert_ne!(read.top.epoch, fresh.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_give_every_subscriber_node_one_ordered_stream() {
    let nats = NatsServer::start();
    let (a, b, c) = (Arc::new(node(&nats.url()).await), Arc::new(node(&nats.url()).await), node(&nats.url()).await);
    c.broker.subscribe("race").await.unwrap();
    let per_node = 100;
    let mut tasks = Vec::new();
    for n in [a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            for i in 0..per_node {
                n.broker.publish("race", publication(&format!("{}-{i}", n.uid)), &history_opts(1000)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_for("200 publications on c", || offsets(&c.seen, "race").len() >= 2 * per_node).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = offsets(&c.seen, "race");
    assert_eq!(got, (1..=2 * per_node as u64).collect::<Vec<_>>(), "contiguous, in order, once");
    let history = c.broker.history("race", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert_eq!(history.publications.len(), 2 * per_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_and_expires_with_its_node() {
    let nats = NatsServer::start();
    let (a, b) = (node(&nats.url()).await, node(&nats.url()).await);
    for (client, user) in [("c1", "u1"), ("c2", "u1"), ("c3", "u2")] {
        let info = ClientInfo { client: client.into(), user: user.into(), ..Default::default() };
        a.presence.add_presence("room.1", info).await.unwrap();
    }
    let info = ClientInfo { client: "c4".into(), user: "u3".into(), ..Default::default() };
    b.presence.add_presence("room.1", info).await.unwrap();
    b.presence.add_presence("other", ClientInfo { client: "x".into(), ..Default::default() }).await.unwrap();
    let all = b.presence.presence("room.1").await.unwrap();
    let mut clients: Vec<&str> = all.keys().map(|k| k.as_str()).collect();
    clients.sort();
    assert_eq!(clients, ["c1", "c2", "c3", "c4"]);
    assert_eq!(a.presence.presence_stats("room.1").await.unwrap(), (4, 3));
    a.presence.remove_presence("room.1", "c2").await.unwrap();
    assert_eq!(b.presence.presence_stats("room.1").await.unwrap(), (3, 3));
    assert!(b.presence.presence("empty").await.unwrap().is_empty());

    // Entries outlive the TTL (3 s) while their node refreshes them, and go with the node.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(b.presence.presence_stats("room.1").await.unwrap(), (3, 3));
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: HashMap<_, _> = b.presence.presence("room.1").await.unwrap();
        if now.len() == 1 {
            assert!(now.contains_key("c4"));
            break;
        }
        assert!(Instant::now() < deadline, "a's entries did not expire: {now:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_while_publishing_loses_and_repeats_nothing() {
    let mut nats = NatsServer::start();
    let url = nats.url();
    let (a, b) = (Arc::new(node(&url).await), node(&url).await);
    b.broker.subscribe("live").await.unwrap();
    let total = 300u64;
    let publisher = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut published = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while published < total {
                assert!(Instant::now() < deadline, "publishing did not resume after the restart");
                match a.broker.publish("live", publication(&format!("m{}", published + 1)), &history_opts(1000)).await {
                    Ok(out) => {
                        published += 1;
                        assert_eq!(out.position.unwrap().offset, published);
                    }
                    // Unavailable while NATS is down: the caller retries the same publication.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    wait_for("first publications", || offsets(&b.seen, "live").len() >= 50).await;
    nats.kill();
    wait_for("a notices the outage", || !a.broker.healthy()).await;
    // Each node's client sees the closed socket on its own schedule.
    wait_for("b notices the outage", || !b.broker.healthy() && !b.presence.healthy()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.spawn();
    publisher.await.unwrap();
    wait_for("all publications on b", || offsets(&b.seen, "live").len() as u64 >= total).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.broker.healthy() && b.broker.healthy());
    let got = offsets(&b.seen, "live");
    assert_eq!(got, (1..=total).collect::<Vec<_>>(), "every publication once, in order");
    let data: Vec<Bytes> = b.seen.pubs.lock().unwrap().iter().map(|(_, _, d)| d.clone()).collect();
    assert_eq!(data[total as usize - 1], Bytes::from(format!("m{total}")));
}
