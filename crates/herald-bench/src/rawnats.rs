//! The `nats-pub` scenario: the raw NATS publish ceiling, the baseline Herald's publish through
//! the NATS broker is compared with. Tasks on one client (Herald shares one client too) publish
//! one payload to one subject as fast as the client takes it, for a fixed time, then flush.
//! Herald's publish without history is the same fire-and-forget `publish` (no reply awaited).

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use serde_json::json;
use tokio::time::Instant;

use crate::cli::NatsPubArgs;
use crate::procfs;
use crate::report::{self, round};

pub async fn run(a: NatsPubArgs) -> Result<(), String> {
    if a.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let client = async_nats::connect(&a.url).await.map_err(|e| format!("cannot connect to {}: {e}", a.url))?;
    let payload = Bytes::from(vec![b'x'; a.payload]);
    eprintln!(
        "nats-pub: {} task(s) publishing {} bytes to {} on {} for {:.0} s",
        a.concurrency,
        a.payload,
        a.subject,
        a.url,
        a.duration.as_secs_f64()
    );
    let sent = Rc::new(Cell::new(0u64));
    let failed = Rc::new(Cell::new(0u64));
    let before = procfs::sample(&a.server_pids);
    let client_cpu_before = procfs::self_cpu_seconds();
    let t0 = Instant::now();
    let deadline = t0 + a.duration;
    let mut tasks = Vec::with_capacity(a.concurrency);
    for _ in 0..a.concurrency {
        let (client, payload, subject) = (client.clone(), payload.clone(), a.subject.clone());
        let (sent, failed) = (sent.clone(), failed.clone());
        tasks.push(tokio::task::spawn_local(async move {
            // Checking the clock every 64 publishes keeps it off the measured path.
            'run: loop {
                for _ in 0..64 {
                    match client.publish(subject.clone(), payload.clone()).await {
                        Ok(()) => sent.set(sent.get() + 1),
                        Err(_) => failed.set(failed.get() + 1),
                    }
                }
                if Instant::now() >= deadline {
                    break 'run;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| format!("publisher task: {e}"))?;
    }
    // Counted once the server has everything: the client buffers what it was given.
    tokio::time::timeout(a.duration.max(std::time::Duration::from_secs(5)), client.flush())
        .await
        .map_err(|_| "flush timed out".to_owned())?
        .map_err(|e| format!("flush: {e}"))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let after = procfs::sample(&a.server_pids);
    let client_cpu = procfs::self_cpu_seconds() - client_cpu_before;
    let (sent, failed) = (sent.get(), failed.get());
    let rate = sent as f64 / elapsed;
    let server_cpu = after.cpu_s.zip(before.cpu_s).map(|(b, a)| b - a);
    eprintln!(
        "  {sent} published ({failed} failed) in {elapsed:.2} s: {rate:.0}/s; server CPU {} s; client CPU {client_cpu:.2} s",
        server_cpu.map(|c| format!("{c:.2}")).unwrap_or_else(|| "?".into())
    );
    let mut m = report::header("nats-pub", "nats", a.output.label.as_deref());
    m.insert("url".into(), json!(a.url));
    m.insert("subject".into(), json!(a.subject));
    m.insert("payload".into(), json!(a.payload));
    m.insert("concurrency".into(), json!(a.concurrency));
    m.insert("published".into(), json!(sent));
    m.insert("publish_errors".into(), json!(failed));
    m.insert("seconds".into(), json!(round(elapsed, 3)));
    m.insert("publishes_per_s".into(), json!(round(rate, 1)));
    m.insert("server_cpu_s".into(), json!(server_cpu.map(|c| round(c, 3))));
    m.insert(
        "server_cpu_us_per_publish".into(),
        json!(server_cpu.filter(|_| sent > 0).map(|c| round(c * 1e6 / sent as f64, 3))),
    );
    m.insert("client_cpu_s".into(), json!(round(client_cpu, 3)));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&before, &after));
    report::emit(&m, a.output.json_out.as_deref())
}
