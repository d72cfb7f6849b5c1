//! `/emulation` across nodes, over a real `redis-server` (started by the harness on its own
//! port): an SSE session opened on node A gets its commands through node B, which forwards them
//! to A through Redis; an unknown node answers 404, and a POST while Redis is down 503.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::redis::{RedisServer, engine_env};
use support::*;

fn node(redis: &RedisServer, prefix: &str, name: &str) -> Herald {
    let mut env = engine_env(&[redis.url()], prefix);
    env.push(("HERALD_NODE_NAME", name.into()));
    env.push(("HERALD_SSE_ENABLED", "true".into()));
    env.push(("HERALD_HTTP_STREAM_ENABLED", "true".into()));
    env.push(("HERALD_CHANNEL_WITHOUT_NAMESPACE_ALLOW_PUBLISH_FOR_CLIENT", "true".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Herald::start(&env)
}

/// Opens an SSE emulation session for `user` on `addr`: the stream, its session and its node.
async fn sse_session(addr: SocketAddr, user: &str) -> (StreamReader, String, String) {
    let connect = json!({ "connect": { "token": token(user) }, "id": 1 }).to_string();
    let q: String = connect.bytes().map(|b| format!("%{b:02X}")).collect();
    let request = format!("GET /connection/sse?cf_connect={q} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut lines = StreamReader::open(addr, request, true).await;
    assert_eq!(lines.status, 200, "{}", lines.headers);
    let reply = lines.next().await.unwrap().json;
    let session = reply["connect"]["session"].as_str().expect("session").to_owned();
    let node = reply["connect"]["node"].as_str().expect("node").to_owned();
    (lines, session, node)
}

async fn emulate(h: &Herald, session: &str, node: &str, data: &str) -> HttpResponse {
    let body = json!({ "session": session, "node": node, "data": data }).to_string();
    h.http("POST", "/emulation", &[], body.as_bytes()).await
}

fn counter(metrics: &str, name: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0.0)
}

async fn node_count(h: &Herald) -> usize {
    h.api_ok("info", json!({})).await["nodes"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulation_posted_to_another_node_reaches_the_session() {
    let mut redis = RedisServer::start();
    let prefix = format!("t{}emul", std::process::id());
    let a = node(&redis, &prefix, "a");
    let b = node(&redis, &prefix, "b");
    wait_for("b sees a", Duration::from_secs(10), || async { node_count(&b).await == 2 }).await;

    let (mut lines, session, on) = sse_session(a.addr, "walker").await;
    let data = "{\"subscribe\":{\"channel\":\"news\"},\"id\":2}\n{\"subscribe\":{\"channel\":\"other\"},\"id\":3}";
    let resp = emulate(&b, &session, &on, data).await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let reply = lines.next().await.unwrap().json;
    assert_eq!(reply["id"], 2, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");
    let reply = lines.next().await.unwrap().json;
    assert_eq!(reply["id"], 3, "{reply}");
    assert!(reply.get("error").is_none(), "{reply}");

    // Publications from either node arrive on the stream held by A, in order.
    for (i, via) in [&a, &b, &a].into_iter().enumerate() {
        via.publish("news", json!({ "n": i })).await;
        let push = lines.next().await.unwrap().json;
        assert_eq!(push["push"]["pub"]["data"], json!({ "n": i }), "{push}");
    }
    // A client publish forwarded the same way is answered on the stream.
    let resp = emulate(&b, &session, &on, "{\"publish\":{\"channel\":\"news\",\"data\":{\"own\":1}},\"id\":4}").await;
    assert_eq!(resp.status, 204);
    let mut got = vec![lines.next().await.unwrap().json, lines.next().await.unwrap().json];
    got.sort_by_key(|v| v.get("id").is_none());
    assert_eq!(got[0]["id"], 4, "{got:?}");
    assert_eq!(got[1]["push"]["pub"]["data"], json!({ "own": 1 }), "{got:?}");

    // A node that is not in the cluster: 404, as before.
    let resp = emulate(&b, &session, "no-such-node", "{}").await;
    assert_eq!((resp.status, resp.json()["error"].as_str()), (404, Some("unknown node")));

    let on_b = b.metrics().await;
    assert_eq!(counter(&on_b, "herald_emulation_requests_total{result=\"forwarded\"}"), 2.0, "{on_b}");
    let on_a = a.metrics().await;
    assert_eq!(counter(&on_a, "herald_emulation_forwarded_total{result=\"ok\"}"), 2.0, "{on_a}");

    // A session A no longer has: B still answers 204 (A drops the commands), like a local post.
    let resp = emulate(&b, "gone", &on, "{}").await;
    assert_eq!(resp.status, 204);
    wait_for("a counts the unknown session", Duration::from_secs(5), || async {
        counter(&a.metrics().await, "herald_emulation_forwarded_total{result=\"unknown_session\"}") == 1.0
    })
    .await;

    // Redis down: the commands cannot travel, and the client is told so.
    redis.kill();
    let resp = emulate(&b, &session, &on, "{}").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    let error: Value = resp.json();
    assert!(error["error"].as_str().unwrap().starts_with("cannot reach the session's node"), "{error}");
}
