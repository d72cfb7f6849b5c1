//! Publish ceiling of the NATS engine against the raw NATS client on the same server, as
//! messages delivered per second to one subscribing node:
//!
//! - plain: `NatsBroker::publish` without history vs raw core `publish` (same payload, one
//!   publishing task, fire and forget);
//! - history: `NatsBroker::publish` with history vs raw JetStream publish + ack (same payload,
//!   `CONC` concurrent publishers, each on its own channel / subject).
//!
//! `cargo run --release -p herald-nats --example publish_ceiling -- nats://127.0.0.1:PORT [N] [CONC] [BYTES]`
//! Env: `PER_SUBJECT` (history kept per channel, default 100), `NOSUB` (appends only).
//! Point it at a `nats-server -js` of your own (never a shared one): it creates a stream and
//! buckets under the prefix `bench`. Every loop is bounded by N messages and 60 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use herald_hub::SystemClock;
use herald_hub::broker::{Broker, BrokerHandler, PublishOptions};
use herald_nats::{NatsBroker, NatsConfig};
use herald_proto::{ClientInfo, Publication};

const LIMIT: Duration = Duration::from_secs(60);

/// History kept per channel / subject (env `PER_SUBJECT`, default 100): JetStream's cost of
/// `Nats-Expected-Last-Subject-Sequence` grows with it.
fn per_subject() -> i64 {
    std::env::var("PER_SUBJECT").ok().and_then(|v| v.parse().ok()).unwrap_or(100)
}

#[derive(Default)]
struct Count(AtomicUsize);

impl BrokerHandler for Count {
    fn handle_publication(&self, _: &str, _: &Publication, _: Option<uuid::Uuid>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn handle_join(&self, _: &str, _: &ClientInfo) {}
    fn handle_leave(&self, _: &str, _: &ClientInfo) {}
}

async fn wait_count(count: &AtomicUsize, n: usize, start: Instant) -> f64 {
    while count.load(Ordering::Relaxed) < n && start.elapsed() < LIMIT {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn node(url: &str) -> (NatsBroker, Arc<Count>) {
    let cfg = NatsConfig {
        url: url.into(),
        prefix: "bench".into(),
        node_uid: uuid::Uuid::new_v4().to_string(),
        history_in_memory: true,
        history_max_per_channel: per_subject(),
        write_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let conn = herald_nats::connect(&cfg).await.expect("connect");
    let broker = NatsBroker::open(&conn, &cfg, Arc::new(SystemClock)).await.expect("open");
    let count = Arc::new(Count::default());
    broker.set_handler(count.clone()).unwrap();
    (broker, count)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| panic!("usage: publish_ceiling nats://127.0.0.1:PORT [N] [CONC] [BYTES]"));
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let conc: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let bytes: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(128);
    let payload = Bytes::from(vec![b'x'; bytes]);

    // Raw core NATS.
    let raw_pub = async_nats::connect(&url).await.unwrap();
    let raw_sub = async_nats::connect(&url).await.unwrap();
    let mut sub = raw_sub.subscribe("rawbench.core").await.unwrap();
    raw_sub.flush().await.unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    let g = got.clone();
    tokio::spawn(async move {
        while sub.next().await.is_some() {
            g.fetch_add(1, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    for _ in 0..n {
        raw_pub.publish("rawbench.core", payload.clone()).await.unwrap();
    }
    raw_pub.flush().await.unwrap();
    let raw_core = wait_count(&got, n, start).await;

    // Herald plain.
    let (a, _) = node(&url).await;
    let (b, count) = node(&url).await;
    b.subscribe("plain").await.unwrap();
    let p = Publication { data: payload.clone(), ..Default::default() };
    let start = Instant::now();
    for _ in 0..n {
        a.publish("plain", p.clone(), &PublishOptions::default()).await.unwrap();
    }
    let herald_plain = wait_count(&count.0, n, start).await;

    // Raw JetStream publish + ack, CONC publishers.
    let js = async_nats::jetstream::new(raw_pub.clone());
    js.create_or_update_stream(async_nats::jetstream::stream::Config {
        name: "rawbench".into(),
        subjects: vec!["rawbench.js.>".into(), "rawbench.jx.>".into()],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        max_messages_per_subject: per_subject(),
        ..Default::default()
    })
    .await
    .unwrap();
    let per = n / conc / 4;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (js, payload) = (js.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                js.publish(format!("rawbench.js.{t}"), payload.clone()).await.unwrap().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw_js = (per * conc) as f64 / start.elapsed().as_secs_f64();

    // Raw JetStream with the optimistic-concurrency header Herald uses.
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (js, payload) = (js.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = 0u64;
            for _ in 0..per {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Expected-Last-Subject-Sequence", last.to_string().as_str());
                let ack = js.publish_with_headers(format!("rawbench.jx.{t}"), h, payload.clone()).await.unwrap();
                last = ack.await.unwrap().sequence;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let raw_js_expected = (per * conc) as f64 / start.elapsed().as_secs_f64();
    println!("raw JetStream with Nats-Expected-Last-Subject-Sequence: {raw_js_expected:.0}/s");

    // Herald with history, CONC publishers on their own channels, delivered to node b.
    let a = Arc::new(a);
    let nosub = std::env::var("NOSUB").is_ok();
    for t in 0..conc {
        if !nosub {
            b.subscribe(&format!("h{t}")).await.unwrap();
        }
    }
    count.0.store(0, Ordering::Relaxed);
    let opts = PublishOptions {
        history_size: per_subject() as usize,
        history_ttl: Duration::from_secs(300),
        history_meta_ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..conc {
        let (a, p, opts) = (a.clone(), p.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                a.publish(&format!("h{t}"), p.clone(), &opts).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let published = (per * conc) as f64 / start.elapsed().as_secs_f64();
    if nosub {
        println!("history: herald appends {published:.0}/s without subscribers");
        return;
    }
    let herald_history = wait_count(&count.0, per * conc, start).await;
    println!("history: herald appends {published:.0}/s (before delivery finished)");

    println!("payload {bytes} B, {n} plain messages, {} history messages over {conc} publishers", per * conc);
    println!("plain:   raw core {raw_core:.0}/s, herald {herald_plain:.0}/s, ratio {:.2}", herald_plain / raw_core);
    println!(
        "history: raw JetStream {raw_js:.0}/s, herald {herald_history:.0}/s, ratio {:.2}",
        herald_history / raw_js
    );
}
