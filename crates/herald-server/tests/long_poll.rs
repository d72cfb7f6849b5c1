//! HTTP long-polling (`uni_long_poll`) against a real `herald` over plain HTTP requests: the
//! connect answer, held polls answered by a publication or by the timeout, resume without loss
//! or duplicates across polls while publishing continuously (answers dropped on the way
//! included), session expiry, the overflow signal, and the refusals.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const PATH: &str = "/connection/uni_long_poll";
/// `buf`: no history (the session's buffer carries everything); `rec`: history and recovery.
const NAMESPACES: &str = r#"[{"name":"buf","allow_subscribe_for_client":true,"presence":true},{"name":"rec","history_size":2000,"history_ttl":"5m","force_recovery":true,"allow_subscribe_for_client":true}]"#;

fn start(extra: &[(&str, &str)]) -> Herald {
    let mut env = vec![
        ("HERALD_UNI_LONG_POLL_ENABLED", "true"),
        ("HERALD_UNI_LONG_POLL_POLL_TIMEOUT", "1s"),
        ("HERALD_UNI_LONG_POLL_SESSION_TTL", "2s"),
        ("HERALD_CHANNEL_NAMESPACES", NAMESPACES),
        ("HERALD_CLIENT_ALLOWED_ORIGINS", r#"["https://good.example"]"#),
    ];
    env.extend_from_slice(extra);
    Herald::start(&env)
}

/// A session as the client sees it.
struct Poller {
    addr: SocketAddr,
    session: String,
    seq: u64,
}

fn lines(resp: &HttpResponse) -> Vec<Value> {
    resp.text()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn next_seq(resp: &HttpResponse) -> u64 {
    resp.header("Herald-Seq").expect("Herald-Seq").parse().expect("Herald-Seq is a number")
}

async fn connect(addr: SocketAddr, user: &str, subs: Value) -> (Poller, Vec<Value>) {
    let body = json!({ "token": token(user), "subs": subs }).to_string();
    let resp = http_at(addr, "POST", PATH, &[], body.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let items = lines(&resp);
    let connect = &items[0]["connect"];
    let session = connect["session"].as_str().expect("the connect push names the session").to_owned();
    assert_eq!(resp.header("Herald-Session"), Some(session.as_str()));
    assert_eq!(next_seq(&resp), items.len() as u64);
    (Poller { addr, session, seq: items.len() as u64 }, items)
}

impl Poller {
    async fn request(&self, seq: u64) -> HttpResponse {
        let path = format!("{PATH}?session={}&seq={seq}", self.session);
        http_at(self.addr, "GET", &path, &[], b"").await
    }

    /// One poll; its items are taken (the next poll acknowledges them). Also returns how many
    /// items were dropped before them (only after an overflow).
    async fn poll_gap(&mut self) -> (Vec<Value>, u64) {
        let resp = self.request(self.seq).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let items = lines(&resp);
        let next = next_seq(&resp);
        let from = next - items.len() as u64;
        assert!(from >= self.seq, "an answer starts at the seq asked for, or after a gap");
        let gap = from - self.seq;
        self.seq = next;
        (items, gap)
    }

    async fn poll(&mut self) -> Vec<Value> {
        let (items, gap) = self.poll_gap().await;
        assert_eq!(gap, 0, "no item dropped");
        items
    }
}

fn publications(items: &[Value], channel: &str, seen: &mut Vec<u64>) {
    for item in items {
        if let Some(p) = item.get("pub") {
            assert_eq!(item["channel"], channel, "{item}");
            seen.push(p["data"]["n"].as_u64().unwrap());
        }
    }
}

#[tokio::test]
async fn a_held_poll_answers_a_publication_or_times_out_empty() {
    let herald = start(&[]);
    let (mut poller, items) = connect(herald.addr, "u1", json!({ "buf:a": {} })).await;
    assert!(items[0]["connect"]["subs"]["buf:a"].is_object(), "{}", items[0]);
    assert!(items[0]["connect"]["node"].is_string());

    // Nothing waiting: held for the poll timeout (1 s), then an empty batch.
    let started = Instant::now();
    assert!(poller.poll().await.is_empty());
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(900) && held < Duration::from_secs(5), "held {held:?}");

    // A publication during a held poll answers it at once.
    let addr = herald.addr;
    let publish = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api_at(addr, "publish", json!({ "channel": "buf:a", "data": { "n": 1 } })).await
    });
    let started = Instant::now();
    let items = poller.poll().await;
    assert!(started.elapsed() < Duration::from_millis(900), "answered by the publication");
    assert_eq!(items, vec![json!({ "channel": "buf:a", "pub": { "data": { "n": 1 } } })]);
    assert_eq!(publish.await.unwrap().0, 200);
    assert!(herald.metrics().await.contains("herald_long_poll_requests_total{result=\"empty\"}"));
}

#[tokio::test]
async fn polls_resume_without_loss_while_publishing() {
    let herald = start(&[]);
    let addr = herald.addr;
    const COUNT: u64 = 300;
    let (mut poller, _) = connect(addr, "u2", json!({ "buf:stream": {} })).await;
    let publishing = tokio::spawn(async move {
        for n in 1..=COUNT {
            let (status, _) = api_at(addr, "publish", json!({ "channel": "buf:stream", "data": { "n": n } })).await;
            assert_eq!(status, 200);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut seen = Vec::new();
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (seen.len() as u64) < COUNT {
        assert!(Instant::now() < deadline, "got {} of {COUNT}", seen.len());
        polls += 1;
        if polls % 5 == 0 {
            // An answer lost on the way: the next poll with the same seq gets it again.
            let lost = poller.request(poller.seq).await;
            assert_eq!(lost.status, 200);
        }
        let items = poller.poll().await;
        publications(&items, "buf:stream", &mut seen);
        // Between polls the session keeps collecting.
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    publishing.await.unwrap();
    let expected: Vec<u64> = (1..=COUNT).collect();
    assert_eq!(seen, expected, "every publication once, in order");
    assert!(polls > 3, "the publications were spread over several polls ({polls})");
}

#[tokio::test]
async fn a_session_without_polls_expires() {
    let herald = start(&[]);
    let (poller, _) = connect(herald.addr, "u3", json!({ "buf:p": {} })).await;
    let presence = herald.api_ok("presence", json!({ "channel": "buf:p" })).await;
    assert_eq!(presence["presence"].as_object().map(|p| p.len()), Some(1), "between polls the client is present");
    assert_eq!(herald.num_clients().await, 1);
    // session_ttl is 2 s.
    wait_for("the session expires", Duration::from_secs(6), || async { herald.num_clients().await == 0 }).await;
    let presence = herald.api_ok("presence", json!({ "channel": "buf:p" })).await;
    assert_eq!(presence["presence"].as_object().map(|p| p.len()), Some(0));
    // Its last poll learns it ended (no disconnect push for an expiry: nobody was there).
    let resp = poller.request(poller.seq).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    assert!(resp.json()["error"].as_str().unwrap().contains("connect again"));
    assert!(herald.metrics().await.contains("herald_long_poll_sessions_expired_total 1"));
}

#[tokio::test]
async fn an_overflowing_buffer_ends_the_session_with_3008_and_history_recovers() {
    let herald = start(&[("HERALD_CLIENT_QUEUE_MAX_SIZE", "2048")]);
    let (mut poller, items) = connect(herald.addr, "u4", json!({ "rec:o": {} })).await;
    let epoch = items[0]["connect"]["subs"]["rec:o"]["epoch"].as_str().unwrap().to_owned();
    let big = "x".repeat(150);
    for n in 1..=20 {
        herald.publish("rec:o", json!({ "n": n, "pad": big })).await;
    }
    // The publications did not fit between polls: they are gone (a gap in the numbering) and
    // the disconnect push is all that is left.
    let (items, gap) = poller.poll_gap().await;
    assert!(gap > 0, "the dropped items show as a gap");
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["disconnect"]["code"], 3008, "{}", items[0]);
    let resp = poller.request(poller.seq).await;
    assert_eq!(resp.status, 404, "the session is over once the disconnect push is acknowledged");
    // Reconnecting with a position recovers from history (what is recovered must fit the
    // buffer too: the last six publications do).
    let subs = json!({ "rec:o": { "recover": true, "offset": 14, "epoch": epoch } });
    let (_, items) = connect(herald.addr, "u4", subs).await;
    let sub = &items[0]["connect"]["subs"]["rec:o"];
    assert_eq!(sub["recovered"], true, "{}", items[0]);
    let recovered: Vec<u64> =
        sub["publications"].as_array().unwrap().iter().map(|p| p["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(recovered, (15..=20).collect::<Vec<u64>>());
}

#[tokio::test]
async fn refusals_are_named() {
    let herald = start(&[("HERALD_UNI_LONG_POLL_MAX_REQUEST_BODY_SIZE", "1024")]);
    let addr = herald.addr;
    let error = |r: &HttpResponse| r.json()["error"].as_str().unwrap_or_default().to_owned();

    let r = http_at(addr, "GET", &format!("{PATH}?cf_connect=%7Bnot-json"), &[], b"").await;
    assert_eq!((r.status, error(&r).starts_with("malformed connect request")), (400, true), "{}", r.text());
    let r = http_at(addr, "POST", PATH, &[], &vec![b' '; 4096]).await;
    assert_eq!((r.status, error(&r)), (413, "request body too large".into()));
    let r = http_at(addr, "POST", PATH, &[("Origin", "https://evil.example")], b"{}").await;
    assert_eq!((r.status, error(&r)), (403, "origin not allowed".into()));
    let r = http_at(addr, "GET", &format!("{PATH}?session=nope&seq=0"), &[], b"").await;
    assert_eq!(r.status, 404);
    let r = http_at(addr, "PUT", PATH, &[], b"").await;
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, POST, OPTIONS")));
    let chunked =
        format!("POST {PATH} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n");
    let r = raw_http(addr, chunked.as_bytes()).await;
    assert_eq!((r.status, error(&r).starts_with("chunked request bodies are not accepted")), (411, true));
    let r = http_at(addr, "GET", &format!("{PATH}?session=x&seq=0"), &[], b"{}").await;
    assert_eq!((r.status, error(&r)), (400, "a GET request must not have a body".into()));
    let (poller, _) = connect(addr, "u5", json!({})).await;
    let r = poller.request(poller.seq + 5).await;
    assert_eq!(r.status, 400);
    assert!(error(&r).contains("beyond the items sent"), "{}", error(&r));
    let r = http_at(addr, "GET", &format!("{PATH}?session={}", poller.session), &[], b"").await;
    assert_eq!((r.status, error(&r).contains("missing seq")), (400, true));

    // A bad token is answered with the disconnect push and no session.
    let body = json!({ "token": "bad" }).to_string();
    let r = http_at(addr, "POST", PATH, &[], body.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("Herald-Session").is_none());
    assert_eq!(lines(&r)[0]["disconnect"]["code"], 3500, "{}", r.text());

    // Preflight and CORS for an allowed origin.
    let good = [("Origin", "https://good.example"), ("Access-Control-Request-Headers", "content-type")];
    let r = http_at(addr, "OPTIONS", PATH, &good, b"").await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("https://good.example"));
    assert_eq!(r.header("Access-Control-Allow-Methods"), Some("GET, POST, OPTIONS"));
    let body = json!({ "token": token("u5") }).to_string();
    let r = http_at(addr, "POST", PATH, &good[..1], body.as_bytes()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Access-Control-Expose-Headers"), Some("Herald-Session, Herald-Seq"));
}

#[tokio::test]
async fn off_by_default() {
    let herald = Herald::start(&[]);
    let r = herald.http("POST", PATH, &[], b"{}").await;
    assert_eq!(r.status, 404);
}

/// One keep-alive HTTP/1.1 connection, requests sent one after another.
struct KeepAlive {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn open(addr: SocketAddr) -> Self {
        KeepAlive { stream: tokio::net::TcpStream::connect(addr).await.expect("connect"), buf: Vec::new() }
    }

    async fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: herald\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.expect("write");
        let read = async {
            loop {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                let mut resp = httparse::Response::new(&mut fields);
                if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                    let headers: Vec<(String, String)> = resp
                        .headers
                        .iter()
                        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    let status = resp.code.expect("status");
                    let len: usize = headers
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.parse().expect("content-length"))
                        .expect("every answer has a Content-Length");
                    if self.buf.len() >= n + len {
                        let body = self.buf[n..n + len].to_vec();
                        self.buf.drain(..n + len);
                        return HttpResponse { status, headers, body };
                    }
                }
                let mut chunk = [0u8; 4096];
                let got = self.stream.read(&mut chunk).await.expect("read");
                assert!(got > 0, "the server closed the connection before answering");
                self.buf.extend_from_slice(&chunk[..got]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer within 10 s")
    }

    /// Whether the server closes the connection (within 2 s).
    async fn closed(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Polls on one keep-alive connection are served one after another on the raw socket; a
/// request for another endpoint in between is answered (by hyper), and a poll after it is
/// handed back to the raw socket; `Connection: close` ends the connection after its answer.
#[tokio::test]
async fn polls_on_one_keep_alive_connection() {
    let herald = start(&[]);
    let addr = herald.addr;
    let mut conn = KeepAlive::open(addr).await;
    let body = json!({ "token": token("ka"), "subs": { "buf:ka": {} } }).to_string();
    let resp = conn.send("POST", PATH, &[], body.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("Connection"), Some("keep-alive"));
    let session = lines(&resp)[0]["connect"]["session"].as_str().unwrap().to_owned();
    let mut seq = next_seq(&resp);
    let publish_soon = |n: u64| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            api_at(addr, "publish", json!({ "channel": "buf:ka", "data": { "n": n } })).await.0
        })
    };

    for n in 1..=3u64 {
        let publish = publish_soon(n);
        let resp = conn.send("GET", &format!("{PATH}?session={session}&seq={seq}"), &[], b"").await;
        assert_eq!(resp.status, 200);
        let mut seen = Vec::new();
        publications(&lines(&resp), "buf:ka", &mut seen);
        assert_eq!(seen, vec![n], "poll {n} on the same connection");
        seq = next_seq(&resp);
        assert_eq!(publish.await.unwrap(), 200);
    }

    // Another endpoint on the same connection, then a poll again: handed back to the raw socket.
    let health = conn.send("GET", "/health", &[], b"").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let publish = publish_soon(4);
    let resp = conn.send("GET", &format!("{PATH}?session={session}&seq={seq}"), &[], b"").await;
    let mut seen = Vec::new();
    publications(&lines(&resp), "buf:ka", &mut seen);
    assert_eq!((resp.status, seen), (200, vec![4]));
    assert_eq!(resp.header("Connection"), Some("keep-alive"));
    seq = next_seq(&resp);
    assert_eq!(publish.await.unwrap(), 200);

    // Held to the timeout on the same connection, then a last poll that asks to close.
    let started = Instant::now();
    let resp = conn.send("GET", &format!("{PATH}?session={session}&seq={seq}"), &[], b"").await;
    assert_eq!((resp.status, lines(&resp).len()), (200, 0));
    assert!(started.elapsed() >= Duration::from_millis(900), "held for the poll timeout");
    let resp = conn.send("GET", &format!("{PATH}?session={session}&seq={seq}"), &[("Connection", "close")], b"").await;
    assert_eq!((resp.status, resp.header("Connection")), (200, Some("close")));
    assert!(conn.closed().await, "the server closes after an answer to Connection: close");
}

/// Server-side subscribe and disconnect (controls) reach a session whether a poll is held or
/// not: the session has no task of its own between them, so each control wakes it.
#[tokio::test]
async fn controls_reach_a_parked_session_and_the_disconnect_is_last() {
    let herald = start(&[]);
    let (mut poller, _) = connect(herald.addr, "u6", json!({ "buf:c1": {} })).await;

    // Between polls: a server-side subscribe (the control runs after the API call returns: the
    // subscribe push says it did), then a publication on the new channel.
    herald.api_ok("subscribe", json!({ "user": "u6", "channel": "buf:c2" })).await;
    let mut items = Vec::new();
    for _ in 0..5 {
        items.extend(poller.poll().await);
        if items.iter().any(|i| i["channel"] == "buf:c2" && i.get("subscribe").is_some()) {
            break;
        }
    }
    assert!(items.iter().any(|i| i["channel"] == "buf:c2" && i.get("subscribe").is_some()), "{items:?}");
    herald.publish("buf:c2", json!({ "n": 1 })).await;
    let mut seen = Vec::new();
    publications(&poller.poll().await, "buf:c2", &mut seen);
    assert_eq!(seen, vec![1]);

    // While a poll is held: a disconnect answers it, its push the last item.
    let addr = herald.addr;
    let disconnect = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api_at(addr, "disconnect", json!({ "user": "u6", "disconnect": { "code": 4005, "reason": "bye" } })).await
    });
    let started = Instant::now();
    let mut items = poller.poll().await;
    if items.is_empty() {
        items = poller.poll().await;
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(disconnect.await.unwrap().0, 200);
    assert_eq!(items.last().unwrap()["disconnect"]["code"], 4005, "{items:?}");
    let resp = poller.request(poller.seq).await;
    assert_eq!(resp.status, 404, "{}", resp.text());
    wait_for("the session is gone", Duration::from_secs(3), || async { herald.num_clients().await == 0 }).await;
}
