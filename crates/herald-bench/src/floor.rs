//! `floor`: what one small loopback TCP write per delivery costs on this machine, with no
//! server in the way.
//!
//! The sending side lives in this process: a listener on 127.0.0.1, and `--writers` plain
//! threads that each own a share of the accepted sockets and, once per round, write one message
//! to every one of them with a blocking `writev` (what a server that does one write per delivery
//! does at best). Each writer reads its own CPU time from `/proc/thread-self/stat` and
//! `/proc/thread-self/schedstat`; the process's from `/proc/self/stat`. The receiving side is
//! the usual worker processes (tokio on epoll, one task per socket, one shared read buffer), so
//! wake-ups and reads look exactly like the fan-out clients'. Every message carries the round's
//! sequence number and start time, so the workers report publish→first/last per round and
//! count lost and duplicated messages as in `fanout`.
//!
//! On loopback the receiving socket's TCP work and the reader's wake-up run inside the sender's
//! `write` (softirq in the sending context), so CPU per write here is the kernel's price of one
//! delivery over one socket: a server that writes once per delivery cannot go below it, only
//! one that puts several deliveries into one write.

use std::io::{IoSlice, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::cli::FloorArgs;
use crate::coord::{AUTO_SOURCE_IPS, AUTO_SOURCE_IPS_ABOVE, MAX_PER_WORKER, client_fields, merge};
use crate::fleet::Fleet;
use crate::job::{Channels, Enc, Job, Target};
use crate::procfs::{self, CpuTimes};
use crate::report::{self, round};
use crate::stats;
use crate::util::{now_ns, parse_ip_list};
use crate::worker::MAX_SEQ;

/// Most sockets the sending side holds (this process is capped at 20,000 open files).
const MAX_SOCKETS: u64 = 19_000;
/// Longest a blocking write may wait for room in a socket buffer before the socket is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

enum FromWriter {
    /// One round written: how long the writes took, and how many failed.
    Round { seq: u64, write_ns: u64, errors: u64 },
    /// The writer stopped: its CPU time over its whole life, and the writes that succeeded.
    End { cpu: Option<CpuTimes>, writes: u64 },
}

/// One writer thread: for every message received, one blocking write to each socket it owns.
fn writer(
    mut socks: Vec<TcpStream>,
    rounds: std_mpsc::Receiver<(u64, Arc<Vec<u8>>)>,
    out: mpsc::UnboundedSender<FromWriter>,
) {
    let cpu0 = CpuTimes::read("thread-self");
    let mut writes = 0u64;
    let mut dead = vec![false; socks.len()];
    // Ends when the coordinator drops the sender.
    while let Ok((seq, msg)) = rounds.recv() {
        let t = std::time::Instant::now();
        let mut errs = 0;
        for (s, d) in socks.iter_mut().zip(dead.iter_mut()) {
            if *d {
                errs += 1;
                continue;
            }
            match write_all(s, &msg) {
                Ok(()) => writes += 1,
                Err(_) => {
                    *d = true;
                    errs += 1;
                }
            }
        }
        let write_ns = t.elapsed().as_nanos() as u64;
        if out.send(FromWriter::Round { seq, write_ns, errors: errs }).is_err() {
            break;
        }
    }
    let cpu = cpu0.zip(CpuTimes::read("thread-self")).map(|(a, b)| b.since(&a));
    let _ = out.send(FromWriter::End { cpu, writes });
}

/// Writes all of `buf` with `writev(2)`, as Herald's transport does (one slice here); bounded by
/// the socket's write timeout.
fn write_all(s: &mut TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        match s.write_vectored(&[IoSlice::new(buf)]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The message of round `seq` started at `t_ns`: the bench payload padded to `size - 1` bytes
/// and a newline.
fn message(seq: u64, t_ns: u64, size: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(size.max(64));
    crate::payload::write(&mut m, seq, t_ns, size.saturating_sub(1));
    m.push(b'\n');
    m
}

fn check(a: &FloorArgs) -> Result<(), String> {
    if a.connections == 0 || a.connections > MAX_SOCKETS {
        return Err(format!("-n must be 1..={MAX_SOCKETS} (the sending side holds every socket)"));
    }
    if a.writers == 0 || a.writers > 64 {
        return Err("--writers must be 1..=64".into());
    }
    if a.rounds == 0 || a.rounds > MAX_SEQ {
        return Err(format!("--rounds must be 1..={MAX_SEQ}"));
    }
    if a.procs == 0 || a.connections.div_ceil(a.procs as u64) > MAX_PER_WORKER {
        return Err(format!("at most {MAX_PER_WORKER} sockets per reader process; raise --procs"));
    }
    if a.interval.is_zero() {
        return Err("--interval must be positive".into());
    }
    Ok(())
}

pub async fn run(a: FloorArgs) -> Result<(), String> {
    check(&a)?;
    let deadline = Instant::now() + a.output.max_time;
    let n = a.connections;
    let source_ips = match a.source_ips.as_deref() {
        Some("none") => Vec::new(),
        Some(s) => parse_ip_list(s)?,
        None if n > AUTO_SOURCE_IPS_ABOVE => parse_ip_list(AUTO_SOURCE_IPS)?,
        None => Vec::new(),
    };
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|e| format!("bind: {e}"))?;
    let listener = socket.listen(4096).map_err(|e| format!("listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("local address: {e}"))?;
    eprintln!(
        "floor: {n} plain TCP sockets on {addr}, {} writer thread(s), {} round(s) of {} B every {:.2} s, {} reader process(es)",
        a.writers,
        a.rounds,
        a.payload,
        a.interval.as_secs_f64(),
        a.procs
    );

    // Accept in the background while the workers connect.
    let accepted = std::rc::Rc::new(std::cell::RefCell::new(Vec::with_capacity(n as usize)));
    let accept_errors = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let acceptor = {
        let (accepted, accept_errors) = (accepted.clone(), accept_errors.clone());
        tokio::task::spawn_local(async move {
            while (accepted.borrow().len() as u64) < n && accept_errors.get() < 1000 {
                let r = listener.accept().await.and_then(|(s, _)| {
                    let s = s.into_std()?;
                    s.set_nonblocking(false)?;
                    s.set_nodelay(true)?;
                    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    Ok(s)
                });
                match r {
                    Ok(s) => accepted.borrow_mut().push(s),
                    Err(e) => {
                        accept_errors.set(accept_errors.get() + 1);
                        if accept_errors.get() <= 3 {
                            eprintln!("  accept: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
    };

    let p = a.procs as u64;
    let jobs: Vec<Job> = (0..a.procs)
        .map(|w| {
            let w64 = w as u64;
            Job {
                worker: w,
                target: Target::Herald,
                encoding: Enc::Json,
                transport: Default::default(),
                servers: vec![(addr, addr.to_string())],
                ws_path: String::new(),
                source_ips: source_ips.clone(),
                stages: vec![(n * w64 / p, n * (w64 + 1) / p)],
                channels: Channels::Shared("floor".into()),
                hmac_secret: None,
                ramp: 0.0,
                max_inflight: a.max_inflight,
                connect_timeout_ms: a.connect_timeout.as_millis() as u64,
                strict_order: true,
                max_seq: a.rounds,
                churn_percent: None,
                handshake: None,
                api: None,
                raw: true,
                stalled_share: 0.0,
                reconnect: None,
                max_time_ms: (a.output.max_time + Duration::from_secs(60)).as_millis() as u64,
            }
        })
        .collect();

    let mut m = report::header("floor", "tcp", a.output.label.as_deref());
    m.insert("connections_requested".into(), json!(n));
    m.insert("procs".into(), json!(a.procs));
    m.insert("source_ips".into(), json!(source_ips.len()));
    m.insert("writers".into(), json!(a.writers));
    m.insert("rounds_requested".into(), json!(a.rounds));
    m.insert("interval_s".into(), json!(a.interval.as_secs_f64()));

    let t_connect = Instant::now();
    let mut fleet = Fleet::spawn(jobs).await?;
    eprintln!("  {} reader process(es): {:?}", fleet.workers(), fleet.pids());
    let ready_by = (Instant::now() + a.connect_timeout * 2 + Duration::from_secs(60)).min(deadline);
    if let Err(e) = fleet.wait_ready(0, ready_by).await.and_then(|_| fleet.require_open()) {
        acceptor.abort();
        fleet.shutdown().await;
        return Err(e);
    }
    let open = fleet.ready_open();
    // Every connected socket is in the accept queue; wait (bounded) until all are accepted.
    let accept_by = Instant::now() + Duration::from_secs(10);
    while (accepted.borrow().len() as u64) < open && Instant::now() < accept_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acceptor.abort();
    let socks = std::mem::take(&mut *accepted.borrow_mut());
    m.insert("connections".into(), json!(open));
    m.insert("connect_errors".into(), json!(fleet.ready_errors()));
    m.insert("accepted".into(), json!(socks.len()));
    m.insert("ready_s".into(), json!(round(t_connect.elapsed().as_secs_f64(), 3)));
    eprintln!(
        "  {open} connected ({} errors), {} accepted, in {:.2} s",
        fleet.ready_errors(),
        socks.len(),
        t_connect.elapsed().as_secs_f64()
    );
    if (socks.len() as u64) < open {
        fleet.shutdown().await;
        return Err(format!("only {} of {open} connections accepted", socks.len()));
    }
    let sockets = socks.len() as u64;

    // Deal the sockets round-robin to the writers and start them.
    let mut shares: Vec<Vec<TcpStream>> = (0..a.writers).map(|_| Vec::new()).collect();
    for (i, s) in socks.into_iter().enumerate() {
        shares[i % a.writers].push(s);
    }
    let (from_tx, mut from_rx) = mpsc::unbounded_channel();
    let mut to_writers = Vec::with_capacity(a.writers);
    let mut threads = Vec::with_capacity(a.writers);
    for (w, share) in shares.into_iter().enumerate() {
        let (tx, rx) = std_mpsc::channel();
        let out = from_tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("floor-writer-{w}"))
            .spawn(move || writer(share, rx, out))
            .map_err(|e| format!("cannot start writer thread: {e}"))?;
        to_writers.push(tx);
        threads.push(h);
    }
    drop(from_tx);

    fleet.pump_until((Instant::now() + a.settle).min(deadline), |_| false).await;
    fleet.send_all(crate::job::Cmd::Start).await;

    let proc0 = CpuTimes::read("self");
    let syscw0 = procfs::write_syscalls("self");
    let mach0 = procfs::sample(&[]);
    let t0 = Instant::now();
    let mut span_hist = stats::new_hist();
    let mut write_errors = 0u64;
    let mut rounds_sent = 0u64;
    let mut failure = None;
    let mut msg_len = 0usize;
    'rounds: for r in 1..=a.rounds {
        let at = t0 + a.interval * (r - 1) as u32;
        if at >= deadline {
            break;
        }
        fleet.pump_until(at, |_| false).await;
        let t = now_ns();
        let msg = Arc::new(message(r, t, a.payload));
        msg_len = msg.len();
        for tx in &to_writers {
            let _ = tx.send((r, msg.clone()));
        }
        rounds_sent = r;
        let mut pending = a.writers;
        let mut span_ns = 0;
        while pending > 0 {
            match tokio::time::timeout(Duration::from_secs(60), from_rx.recv()).await {
                Ok(Some(FromWriter::Round { seq, write_ns, errors })) if seq == r => {
                    write_errors += errors;
                    span_ns = span_ns.max(write_ns);
                    pending -= 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    failure = Some(format!("writers did not finish round {r}"));
                    break 'rounds;
                }
            }
        }
        stats::record(&mut span_hist, span_ns / 1000);
    }
    let proc1 = CpuTimes::read("self");
    let syscw1 = procfs::write_syscalls("self");
    let mach1 = procfs::sample(&[]);
    let writing_s = t0.elapsed().as_secs_f64();

    // Stop the writers and collect their CPU.
    drop(to_writers);
    let mut writer_cpu = CpuTimes { run_ns: Some(0), ..Default::default() };
    let mut cpu_known = true;
    let mut writes = 0u64;
    let mut ended = 0;
    while ended < a.writers {
        match tokio::time::timeout(Duration::from_secs(30), from_rx.recv()).await {
            Ok(Some(FromWriter::End { cpu, writes: w })) => {
                ended += 1;
                writes += w;
                match cpu {
                    Some(c) => writer_cpu.add(&c),
                    None => cpu_known = false,
                }
            }
            Ok(Some(FromWriter::Round { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    if ended == a.writers {
        for h in threads {
            let _ = h.join();
        }
    } else {
        failure.get_or_insert_with(|| "a writer thread did not report".into());
    }

    // Wait for the readers to see everything, then collect their results.
    let expected = rounds_sent * sockets - write_errors;
    let drained = fleet.pump_until((Instant::now() + a.drain).min(deadline), |f| f.deliveries() >= expected).await;
    fleet.stop(Instant::now() + Duration::from_secs(20)).await;
    let merged = merge(&fleet.results)?;
    fleet.shutdown().await;
    if let Some(f) = failure {
        return Err(f);
    }

    let mut first = stats::new_hist();
    let mut last = stats::new_hist();
    let mut incomplete = 0u64;
    for r in 1..=rounds_sent {
        let agg = merged.pubs.get(&r).copied().unwrap_or_default();
        if agg.count == 0 {
            incomplete += 1;
            continue;
        }
        stats::record(&mut first, agg.min_us);
        if agg.count >= sockets {
            stats::record(&mut last, agg.max_us);
        } else {
            incomplete += 1;
        }
    }
    let per_write = |s: f64| (writes > 0).then(|| round(s * 1e6 / writes as f64, 3));
    let proc_cpu = proc0.zip(proc1).map(|(a, b)| b.since(&a));
    m.insert("write_call".into(), json!("writev"));
    m.insert("rounds".into(), json!(rounds_sent));
    m.insert("payload".into(), json!(msg_len));
    m.insert("writes".into(), json!(writes));
    m.insert("write_errors".into(), json!(write_errors));
    // Every write is one writev(2): a check that nothing else wrote (stdout lines excepted).
    m.insert("process_write_syscalls".into(), json!(syscw0.zip(syscw1).map(|(a, b)| b.saturating_sub(a))));
    m.insert("writing_s".into(), json!(round(writing_s, 3)));
    // Rounds never overlap: when writing one takes longer than --interval the next starts late.
    m.insert("rounds_per_s".into(), json!(round(rounds_sent as f64 / writing_s.max(1e-9), 2)));
    m.insert("round_write_span".into(), stats::summary(&span_hist));
    m.insert(
        "writer_cpu".into(),
        json!({
            "user_s": round(writer_cpu.user_s(), 3),
            "sys_s": round(writer_cpu.sys_s(), 3),
            "run_s": writer_cpu.run_ns.filter(|_| cpu_known).map(|ns| round(ns as f64 / 1e9, 4)),
        }),
    );
    m.insert("writer_cpu_us_per_write".into(), json!(per_write(writer_cpu.user_s() + writer_cpu.sys_s())));
    m.insert("writer_sys_us_per_write".into(), json!(per_write(writer_cpu.sys_s())));
    m.insert(
        "writer_run_us_per_write".into(),
        json!(writer_cpu.run_ns.filter(|_| cpu_known).and_then(|ns| per_write(ns as f64 / 1e9))),
    );
    m.insert("process_cpu_us_per_write".into(), json!(proc_cpu.and_then(|c| per_write(c.user_s() + c.sys_s()))));
    m.insert("machine_cpu".into(), procfs::machine_cpu_delta(&mach0, &mach1));
    m.insert("drained".into(), json!(drained));
    m.insert("expected_deliveries".into(), json!(expected));
    m.insert("deliveries".into(), json!(merged.deliveries));
    m.insert("unique_deliveries".into(), json!(merged.unique));
    m.insert("lost".into(), json!(expected.saturating_sub(merged.unique)));
    m.insert("gaps".into(), json!(merged.gaps));
    m.insert("dups".into(), json!(merged.dups));
    m.insert("out_of_order".into(), json!(merged.out_of_order));
    m.insert("other_messages".into(), json!(merged.other_messages));
    m.insert("incomplete_rounds".into(), json!(incomplete));
    m.insert("latency_first".into(), stats::summary(&first));
    m.insert("latency_last".into(), stats::summary(&last));
    m.insert("latency_delivery".into(), stats::summary(merged.delivery.as_ref().expect("merged histogram")));
    client_fields(&mut m, &merged);

    let g = |k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    eprintln!(
        "  {} writes of {} B in {} rounds ({} errors); deliveries {} of {}, lost {}, dups {}",
        writes,
        msg_len,
        rounds_sent,
        write_errors,
        merged.deliveries,
        expected,
        g("lost"),
        merged.dups
    );
    eprintln!(
        "  writer CPU: user {:.2} s, sys {:.2} s, on-CPU {} s: {} µs per write (sys {} µs; schedstat {} µs); process {} µs",
        writer_cpu.user_s(),
        writer_cpu.sys_s(),
        m["writer_cpu"]["run_s"],
        g("writer_cpu_us_per_write"),
        g("writer_sys_us_per_write"),
        g("writer_run_us_per_write"),
        g("process_cpu_us_per_write")
    );
    eprintln!("  writes per round {}", stats::human(&g("round_write_span")));
    eprintln!("  publish→first    {}", stats::human(&g("latency_first")));
    eprintln!("  publish→last     {}", stats::human(&g("latency_last")));
    eprintln!("  per delivery     {}", stats::human(&g("latency_delivery")));
    eprintln!("  machine CPU      {}; readers {} s", g("machine_cpu"), g("client_cpu_s"));
    report::emit(&m, a.output.json_out.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_newline_terminated_payloads_of_the_asked_size() {
        let m = message(7, 1_795_245_000_000_000_000, 130);
        assert_eq!(m.len(), 130);
        assert_eq!(m.last(), Some(&b'\n'));
        let mut got = Vec::new();
        crate::payload::scan(&m, |s, t| got.push((s, t)));
        assert_eq!(got, vec![(7, 1_795_245_000_000_000_000)]);
    }
}
