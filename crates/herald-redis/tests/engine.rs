//! The Redis engine against a real `redis-server` started on a free loopback port: history
//! with offsets, epochs, size and reverse reads like the memory engine's; idempotency across
//! engines (nodes); presence seen by every node and expiring when its node stops refreshing;
//! batched subscriptions; control messages between engines.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use herald_hub::broker::{Broker, BrokerHandler, HistoryQuery, PresenceManager, PublishOptions};
use herald_proto::{ClientInfo, Publication, StreamPosition};
use herald_redis::{RedisEngine, RedisOptions};

struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = loop {
            let p = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if p != 6379 && p != 4222 {
                break p;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { port, child, _dir: dir }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Recorder {
    publications: Mutex<Vec<(String, Publication)>>,
    joins: Mutex<Vec<(String, String)>>,
    control: Mutex<Vec<Bytes>>,
}

impl BrokerHandler for Recorder {
    fn handle_publication(&self, channel: &str, p: &Publication, _: Option<uuid::Uuid>) {
        self.publications.lock().unwrap().push((channel.to_owned(), p.clone()));
    }
    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        self.joins.lock().unwrap().push((channel.to_owned(), info.client.clone()));
    }
    fn handle_leave(&self, _: &str, _: &ClientInfo) {}
    fn handle_control(&self, payload: Bytes) {
        self.control.lock().unwrap().push(payload);
    }
}

async fn engine(redis: &Redis, prefix: &str, uid: &str, presence_ttl: Duration) -> (RedisEngine, Arc<Recorder>) {
    let opts = RedisOptions {
        addresses: vec![format!("redis://127.0.0.1:{}", redis.port)],
        prefix: prefix.into(),
        presence_ttl,
        node_uid: uid.into(),
        ..Default::default()
    };
    let e = RedisEngine::connect(opts).await.expect("connect");
    let rec = Arc::new(Recorder::default());
    e.set_handler(rec.clone()).unwrap();
    assert!(e.set_handler(rec.clone()).is_err(), "one node per engine");
    (e, rec)
}

fn history(size: usize) -> PublishOptions {
    PublishOptions {
        history_size: size,
        history_ttl: Duration::from_secs(60),
        history_meta_ttl: Duration::from_secs(600),
        ..Default::default()
    }
}

fn publication(n: u32) -> Publication {
    Publication { data: Bytes::from(format!("{{\"n\":{n}}}")), ..Default::default() }
}

fn offsets(ps: &[Publication]) -> Vec<u64> {
    ps.iter().map(|p| p.offset).collect()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn history_keeps_offsets_epoch_size_and_reads_both_ways() {
    let redis = Redis::start();
    let (e, rec) = engine(&redis, "h", "n1", Duration::from_secs(60)).await;
    e.subscribe("ch").await.unwrap();
    let mut epoch = String::new();
    for n in 1..=10 {
        let out = e.publish("ch", publication(n), &history(5)).await.unwrap();
        let pos = out.position.unwrap();
        assert_eq!(pos.offset, u64::from(n));
        if n == 1 {
            epoch = pos.epoch.clone();
            assert_eq!(epoch.len(), 4);
        }
        assert_eq!(pos.epoch, epoch);
    }
    eventually("10 deliveries", || rec.publications.lock().unwrap().len() == 10).await;
    let delivered: Vec<u64> = rec.publications.lock().unwrap().iter().map(|(_, p)| p.offset).collect();
    assert_eq!(delivered, (1..=10).collect::<Vec<_>>());
    let q = |since: Option<u64>, limit: i64, reverse: bool| HistoryQuery {
        since: since.map(|offset| StreamPosition { offset, epoch: epoch.clone() }),
        limit,
        reverse,
        meta_ttl: Duration::from_secs(600),
    };
    // Only the last 5 are kept; the top is 10.
    let all = e.history("ch", q(None, -1, false)).await.unwrap();
    assert_eq!(offsets(&all.publications), [6, 7, 8, 9, 10]);
    assert_eq!(all.top, StreamPosition { offset: 10, epoch: epoch.clone() });
    assert_eq!(all.publications[0].data, publication(6).data);
    assert_eq!(offsets(&e.history("ch", q(None, 2, true)).await.unwrap().publications), [10, 9]);
    assert_eq!(offsets(&e.history("ch", q(Some(7), -1, false)).await.unwrap().publications), [8, 9, 10]);
    assert_eq!(offsets(&e.history("ch", q(Some(7), 1, false)).await.unwrap().publications), [8]);
    assert_eq!(offsets(&e.history("ch", q(Some(9), -1, true)).await.unwrap().publications), [8, 7, 6]);
    assert!(e.history("ch", q(Some(10), -1, false)).await.unwrap().publications.is_empty());
    let pos_only = e.history("ch", q(None, 0, false)).await.unwrap();
    assert!(pos_only.publications.is_empty());
    assert_eq!(pos_only.top.offset, 10);

    // A stream never published to still has an epoch, stable across reads.
    let empty = e.history("other", q(None, -1, false)).await.unwrap();
    assert_eq!(empty.top.offset, 0);
    assert_eq!(e.history("other", q(None, -1, false)).await.unwrap().top.epoch, empty.top.epoch);

    // remove_history drops the publications, keeps the position.
    e.remove_history("ch").await.unwrap();
    let after = e.history("ch", q(None, -1, false)).await.unwrap();
    assert!(after.publications.is_empty());
    assert_eq!(after.top, StreamPosition { offset: 10, epoch: epoch.clone() });
    let next = e.publish("ch", publication(11), &history(5)).await.unwrap().position.unwrap();
    assert_eq!(next.offset, 11);
}

#[tokio::test]
async fn idempotency_keys_hold_across_nodes() {
    let redis = Redis::start();
    let (a, _) = engine(&redis, "i", "a", Duration::from_secs(60)).await;
    let (b, rec_b) = engine(&redis, "i", "b", Duration::from_secs(60)).await;
    b.subscribe("ch").await.unwrap();
    let mut opts = history(10);
    opts.idempotency_key = Some("k1".into());
    let first = a.publish("ch", publication(1), &opts).await.unwrap();
    assert!(!first.suppressed);
    let again = b.publish("ch", publication(1), &opts).await.unwrap();
    assert!(again.suppressed);
    assert_eq!(again.position, first.position);
    let top = a.history("ch", HistoryQuery { limit: -1, ..Default::default() }).await.unwrap();
    assert_eq!(top.publications.len(), 1);
    eventually("one delivery", || rec_b.publications.lock().unwrap().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rec_b.publications.lock().unwrap().len(), 1, "the repeat was not delivered");
}

#[tokio::test]
async fn subscriptions_are_batched_and_counted() {
    let redis = Redis::start();
    let (a, _) = engine(&redis, "s", "a", Duration::from_secs(60)).await;
    let (b, rec) = engine(&redis, "s", "b", Duration::from_secs(60)).await;
    let b = Arc::new(b);
    // 600 concurrent first subscribers: more than one SUBSCRIBE batch.
    let names: Vec<String> = (0..600).map(|i| format!("c{i}")).collect();
    let subs = names.iter().map(|n| b.subscribe(n));
    for r in futures_util::future::join_all(subs).await {
        r.unwrap();
    }
    for n in &names {
        a.publish(n, publication(1), &PublishOptions::default()).await.unwrap();
    }
    eventually("600 deliveries", || rec.publications.lock().unwrap().len() == 600).await;
    // Two holders of one channel: it stays subscribed until both left.
    b.subscribe("c0").await.unwrap();
    b.unsubscribe("c0").await.unwrap();
    a.publish("c0", publication(2), &PublishOptions::default()).await.unwrap();
    eventually("still subscribed", || rec.publications.lock().unwrap().len() == 601).await;
    b.unsubscribe("c0").await.unwrap();
    a.publish("c0", publication(3), &PublishOptions::default()).await.unwrap();
    a.publish("c1", publication(3), &PublishOptions::default()).await.unwrap();
    eventually("c1 delivered", || rec.publications.lock().unwrap().len() == 602).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last: Vec<String> = rec.publications.lock().unwrap().iter().skip(601).map(|(c, _)| c.clone()).collect();
    assert_eq!(last, ["c1"], "c0 no longer delivered");
}

#[tokio::test]
async fn presence_is_shared_and_expires_when_its_node_stops() {
    let redis = Redis::start();
    let (a, _) = engine(&redis, "p", "a", Duration::from_secs(2)).await;
    let (b, _) = engine(&redis, "p", "b", Duration::from_secs(2)).await;
    let info = |user: &str, client: &str| ClientInfo { user: user.into(), client: client.into(), ..Default::default() };
    a.add_presence("room", info("u1", "c1")).await.unwrap();
    a.add_presence("room", info("u1", "c2")).await.unwrap();
    b.add_presence("room", info("u2", "c3")).await.unwrap();
    let seen: HashMap<String, ClientInfo> = b.presence("room").await.unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen["c3"].user, "u2");
    assert_eq!(a.presence_stats("room").await.unwrap(), (3, 2));
    a.remove_presence("room", "c2").await.unwrap();
    assert_eq!(b.presence_stats("room").await.unwrap(), (2, 2));
    // B keeps refreshing its entry; A stops (its node died): A's entry expires, B's stays.
    drop(a);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let left = b.presence("room").await.unwrap();
    assert_eq!(left.keys().collect::<Vec<_>>(), ["c3"]);
}

#[tokio::test]
async fn control_messages_reach_all_nodes_or_one() {
    let redis = Redis::start();
    let (a, rec_a) = engine(&redis, "k", "a", Duration::from_secs(60)).await;
    let (b, rec_b) = engine(&redis, "k", "b", Duration::from_secs(60)).await;
    assert!(a.delivers_control());
    a.publish_control(None, Bytes::from_static(b"to-all")).await.unwrap();
    b.publish_control(Some("a"), Bytes::from_static(b"to-a")).await.unwrap();
    eventually("a got both", || rec_a.control.lock().unwrap().len() == 2).await;
    eventually("b got the broadcast", || rec_b.control.lock().unwrap().len() == 1).await;
    assert_eq!(rec_b.control.lock().unwrap()[0], Bytes::from_static(b"to-all"));
    // Joins travel too.
    b.subscribe("room").await.unwrap();
    a.publish_join("room", ClientInfo { client: "x".into(), ..Default::default() }).await.unwrap();
    eventually("join", || rec_b.joins.lock().unwrap().len() == 1).await;
    assert!(Broker::healthy(&a) && PresenceManager::healthy(&b));
}

#[tokio::test]
async fn an_unreachable_redis_is_a_clear_start_up_error() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let opts = RedisOptions {
        addresses: vec![format!("redis://:secret@127.0.0.1:{port}")],
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let err = RedisEngine::connect(opts).await.err().expect("no redis there");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")) && !text.contains("secret"), "{text}");
}
