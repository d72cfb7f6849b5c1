//! The server API load of a worker: `conns` keep-alive HTTP connections, each publishing one
//! request at a time (one publication, or a `/api/batch` of `batch`) until the deadline, timed
//! and counted in the shared `Ctx`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{Ctx, emit, publish_ok, result, wait_start, wait_stop};
use crate::http::HttpConn;
use crate::job::{ApiJob, Cmd, Msg, Ready};
use crate::payload;
use crate::stats;
use crate::util::now_ns;
use crate::wsclient::WsError;

/// Server API load: `conns` keep-alive connections, each sending one request at a time.
pub(super) async fn run_api(ctx: Rc<Ctx>, api: ApiJob, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut conns = Vec::with_capacity(api.conns);
    for i in 0..api.conns {
        let job = &ctx.job;
        let source = (!job.source_ips.is_empty()).then(|| job.source_ips[i % job.source_ips.len()]);
        let (addr, host) = &job.servers[(i + job.worker * api.conns) % job.servers.len()];
        let mut c = HttpConn::new(*addr, host, source);
        match c.connect().await {
            Ok(()) => {
                conns.push(c);
                ctx.open.set(ctx.open.get() + 1);
            }
            Err(e) => ctx.fail(&WsError::io("api_connect", &e)),
        }
    }
    let (errors, error_kinds) = {
        let st = ctx.stats.borrow();
        (st.errors, st.error_kinds.clone())
    };
    emit(&Msg::Ready(Ready { stage: 0, open: ctx.open.get(), errors, elapsed_ms: 0, error_kinds, stalled: 0 }));
    if !wait_start(&mut rx).await {
        emit(&Msg::Result(Box::new(result(&ctx, Duration::ZERO, Duration::ZERO))));
        return;
    }
    ctx.measuring.set(true);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(api.duration_ms);
    let seq = Rc::new(Cell::new(0u64));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let ctx = ctx.clone();
        let api = api.clone();
        let seq = seq.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let mut body = Vec::with_capacity((api.payload + 128) * api.batch.max(1));
            while tokio::time::Instant::now() < deadline {
                body.clear();
                let sent = Instant::now();
                request_body(&mut body, &api, &seq);
                let r = tokio::time::timeout_at(
                    deadline + Duration::from_secs(5),
                    conn.post(&api.path, &api.headers, &body),
                )
                .await;
                let ok = match &r {
                    Ok(Ok(resp)) if api.any_2xx => (200..300).contains(&resp.status),
                    Ok(Ok(resp)) => publish_ok(api.herald_channel.is_some(), resp.status, &resp.body),
                    _ => false,
                };
                let mut st = ctx.stats.borrow_mut();
                st.api_requests += 1;
                if ok {
                    stats::record(&mut ctx.api_hist.borrow_mut(), sent.elapsed().as_micros() as u64);
                } else {
                    st.api_errors += 1;
                    let timed_out = r.is_err();
                    if st.api_errors <= 3 {
                        match r {
                            Ok(Ok(resp)) => eprintln!(
                                "worker {}: API answered {}: {}",
                                ctx.job.worker,
                                resp.status,
                                String::from_utf8_lossy(&resp.body)
                            ),
                            Ok(Err(e)) => eprintln!("worker {}: API request failed: {e}", ctx.job.worker),
                            Err(_) => eprintln!("worker {}: API request timed out", ctx.job.worker),
                        }
                    }
                    drop(st);
                    if timed_out {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = t0.elapsed();
    emit(&Msg::Result(Box::new(result(&ctx, elapsed, elapsed))));
    wait_stop(&mut rx).await;
}

/// The next sequence number of this worker's payloads (every publication has its own).
fn next_seq(seq: &Cell<u64>) -> u64 {
    seq.set(seq.get() + 1);
    seq.get()
}

/// One request's body: the payload (Nchan, `--path`), a publish's params, or a `/api/batch`
/// of `api.batch` publishes, each with its own sequence number.
fn request_body(body: &mut Vec<u8>, api: &ApiJob, seq: &Cell<u64>) {
    match &api.herald_channel {
        Some(ch) if api.batch > 0 => {
            body.extend_from_slice(b"{\"commands\":[");
            for i in 0..api.batch {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(b"{\"publish\":");
                publish_params(body, ch, next_seq(seq), api.payload);
                body.push(b'}');
            }
            body.extend_from_slice(if api.parallel { b"],\"parallel\":true}" } else { b"]}" });
        }
        Some(ch) => publish_params(body, ch, next_seq(seq), api.payload),
        None => payload::write(body, next_seq(seq), now_ns(), api.payload),
    }
}

/// `{"channel":…,"data":<payload>}`: the params of one publish.
fn publish_params(body: &mut Vec<u8>, channel: &str, seq: u64, size: usize) {
    body.extend_from_slice(b"{\"channel\":\"");
    body.extend_from_slice(channel.as_bytes());
    body.extend_from_slice(b"\",\"data\":");
    payload::write(body, seq, now_ns(), size);
    body.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(batch: usize, parallel: bool) -> ApiJob {
        ApiJob {
            conns: 1,
            path: "/api/batch".into(),
            headers: String::new(),
            herald_channel: Some("ch".into()),
            payload: 60,
            duration_ms: 1,
            any_2xx: false,
            batch,
            parallel,
        }
    }

    #[test]
    fn bodies_are_json_with_a_payload_per_publication() {
        let seq = Cell::new(0);
        let mut body = Vec::new();
        request_body(&mut body, &job(0, false), &seq);
        let one: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((&one["channel"], &one["data"]["s"]), (&"ch".into(), &1.into()));
        assert_eq!(serde_json::to_vec(&one["data"]).unwrap().len(), 60);

        for parallel in [false, true] {
            body.clear();
            request_body(&mut body, &job(3, parallel), &seq);
            let batch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let seqs: Vec<_> =
                batch["commands"].as_array().unwrap().iter().map(|c| c["publish"]["data"]["s"].clone()).collect();
            assert_eq!(seqs.len(), 3, "{batch}");
            assert!(seqs.windows(2).all(|w| w[0] != w[1]), "distinct payloads: {batch}");
            assert_eq!(batch["commands"][0]["publish"]["channel"], "ch");
            assert_eq!(batch.get("parallel").is_some(), parallel, "{batch}");
        }
    }
}
