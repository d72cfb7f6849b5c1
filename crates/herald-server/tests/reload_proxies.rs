//! Reload of the logic-layer proxies and lifecycle webhooks against a real `herald` and real
//! test backends (`support/backend.rs`): a changed endpoint takes the next call of a client
//! connected before the reload, a call in flight finishes on the old backend, an invalid proxy
//! set is refused with its key named while the one in force keeps working, and webhooks follow
//! a new endpoint or are switched on and off. Also `client.allowed_origins`, which the
//! transports read from the node at every handshake.

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::backend::Backend;
use support::{Herald, RawWs, WAIT, WS_PATH, upgrade_request};

/// `proxies[0]` named `api` at `endpoint`, RPC calls without a namespace sent to it; `extra`
/// is appended (TOML).
fn write_config(path: &Path, endpoint: &str, extra: &str) {
    let text = format!(
        "[[proxies]]\nname = \"api\"\nendpoint = \"{endpoint}\"\ntimeout = \"5s\"\n\n\
         [rpc.without_namespace]\nproxy_enabled = true\nproxy_name = \"api\"\n{extra}"
    );
    std::fs::write(path, text).unwrap();
}

fn start(file: &Path) -> Herald {
    Herald::start_with_args(&[("HERALD_CHANNEL_NAMESPACES", "")], &["--config", file.to_str().unwrap()])
}

/// Sends an RPC call with `id` without waiting for its reply.
async fn send_rpc(ws: &mut RawWs, id: u64, method: &str) {
    ws.send_json(&json!({"id": id, "rpc": {"method": method, "data": {"n": id}}})).await;
}

/// Reads until the reply with `id` comes.
async fn reply(ws: &mut RawWs, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no reply {id} within {WAIT:?}");
        for r in ws.recv_json().await {
            if r["id"] == id {
                return r;
            }
        }
    }
}

async fn rpc(ws: &mut RawWs, id: u64, method: &str) -> Value {
    send_rpc(ws, id, method).await;
    reply(ws, id).await
}

/// The RPC methods a backend was asked, in order.
async fn methods(backend: &Backend) -> Vec<String> {
    backend.requests_to("/rpc").await.iter().map(|r| r["body"]["method"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn a_new_endpoint_takes_the_next_call_and_a_call_in_flight_ends_on_the_old_one() {
    let (old, new) = (Backend::start(), Backend::start());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &old.url("/rpc"), "");
    let herald = start(&file);
    let mut ws = RawWs::connected(&herald, "alice").await;
    let mut other = RawWs::connected(&herald, "bob").await;
    let r = rpc(&mut ws, 2, "first").await;
    assert_eq!(r["rpc"]["data"]["method"], "first", "{r}");

    // A call the old backend answers after 3 s, in flight across the reload (a connection's
    // commands run one after the other, so the next call comes from the other connection).
    send_rpc(&mut ws, 3, "slow-call").await;
    let in_flight = || async { methods(&old).await.len() == 2 };
    support::wait_for("the slow call at the old backend", WAIT, in_flight).await;

    write_config(&file, &new.url("/rpc"), "");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["applied"], json!(["proxies"]), "{r}");

    let r = rpc(&mut other, 2, "second").await;
    assert_eq!(r["rpc"]["data"]["method"], "second", "{r}");
    assert_eq!(methods(&new).await, ["second"], "the next call goes to the new endpoint");
    let r = reply(&mut ws, 3).await;
    assert_eq!(r["rpc"]["data"]["method"], "slow-call", "the call in flight ends on the old backend: {r}");
    assert_eq!(methods(&old).await, ["first", "slow-call"]);
    rpc(&mut ws, 4, "third").await;
    assert_eq!(methods(&new).await, ["second", "third"]);
    assert_eq!(herald.num_clients().await, 2, "no connection dropped");
}

#[tokio::test]
async fn an_invalid_proxy_set_is_refused_with_its_key_and_the_old_one_keeps_working() {
    let backend = Backend::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, &backend.url("/rpc"), "");
    let herald = start(&file);
    let mut ws = RawWs::connected(&herald, "alice").await;
    rpc(&mut ws, 2, "before").await;

    // A route naming a proxy that is not there.
    let text = std::fs::read_to_string(&file).unwrap().replace("proxy_name = \"api\"", "proxy_name = \"gone\"");
    std::fs::write(&file, text).unwrap();
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["key"], "rpc.without_namespace.proxy_name", "{r}");
    assert_eq!(r["version"], 1, "{r}");

    // An endpoint that is not a URL.
    write_config(&file, "not a url", "");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert!(r["key"].as_str().unwrap().starts_with("proxies[0]"), "{r}");

    let r = rpc(&mut ws, 3, "after").await;
    assert_eq!(r["rpc"]["data"]["method"], "after", "{r}");
    assert_eq!(methods(&backend).await, ["before", "after"], "the proxies in force stay");
    let metrics = herald.metrics().await;
    assert!(metrics.contains(r#"herald_config_reloads_total{outcome="refused"} 2"#), "{metrics}");

    // Switching a proxy on by reload: a namespace's publications go to a new named proxy.
    let extra = "[[proxies]]\nname = \"pubs\"\nendpoint = \"ENDPOINT\"\n\n[[channel.namespaces]]\nname = \"px\"\n\
                 allow_subscribe_for_client = true\npublish_proxy_enabled = true\npublish_proxy_name = \"pubs\"\n";
    let text = format!(
        "[[proxies]]\nname = \"api\"\nendpoint = \"{}\"\n\n[rpc.without_namespace]\nproxy_enabled = true\n\
         proxy_name = \"api\"\n\n{}",
        backend.url("/rpc"),
        extra.replace("ENDPOINT", &backend.url("/publish"))
    );
    std::fs::write(&file, text).unwrap();
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    ws.send_json(&json!({"id": 4, "publish": {"channel": "px:room", "data": {"hello": 1}}})).await;
    let r = reply(&mut ws, 4).await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(backend.requests_to("/publish").await.len(), 1, "the publication was asked to the new proxy");
}

/// `proxies[0]` named `hooks` at `endpoint`; webhooks on when `on`, for `events`.
fn write_hooks(path: &Path, endpoint: &str, on: bool, events: &str) {
    let text = format!(
        "[[proxies]]\nname = \"hooks\"\nendpoint = \"{endpoint}\"\n\n[webhooks]\nenabled = {on}\n\
         proxy_name = \"hooks\"\nevents = [{events}]\nflush_interval = \"50ms\"\n"
    );
    std::fs::write(path, text).unwrap();
}

/// The users of the connect events a backend received.
fn connects(backend: &Backend) -> Vec<String> {
    let events = backend.webhook_events();
    events.iter().filter(|e| e["event"] == "connect").map(|e| e["user"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test]
async fn webhooks_follow_a_new_endpoint_and_are_switched_on_and_off() {
    let (old, new) = (Backend::start(), Backend::start());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    // Off at start: no sender yet.
    write_hooks(&file, &old.url("/webhook"), false, "\"connect\"");
    let herald = start(&file);
    let _a = RawWs::connected(&herald, "a").await;

    write_hooks(&file, &old.url("/webhook"), true, "\"connect\"");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["applied"], json!(["webhooks.enabled"]), "{r}");
    let _b = RawWs::connected(&herald, "b").await;
    support::wait_for("b's connect event", WAIT, || async { connects(&old) == ["b"] }).await;

    // A new endpoint: the next batches go there.
    write_hooks(&file, &new.url("/webhook"), true, "\"connect\"");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["applied"], json!(["proxies"]), "{r}");
    let _c = RawWs::connected(&herald, "c").await;
    support::wait_for("c's connect event", WAIT, || async { connects(&new) == ["c"] }).await;

    // An event that is not on the list is refused with its key; nothing changes.
    write_hooks(&file, &old.url("/webhook"), true, "\"connect\", \"publish\"");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["key"], "webhooks.events[1]", "{r}");
    let _d = RawWs::connected(&herald, "d").await;
    support::wait_for("d's connect event", WAIT, || async { connects(&new) == ["c", "d"] }).await;

    // Off: no more events.
    write_hooks(&file, &new.url("/webhook"), false, "\"connect\"");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["applied"], json!(["webhooks.enabled"]), "{r}");
    let _e = RawWs::connected(&herald, "e").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(connects(&new), ["c", "d"], "e connected with webhooks off");
    assert_eq!(connects(&old), ["b"]);
}

#[tokio::test]
async fn allowed_origins_apply_to_the_next_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    let write = |origin: &str| std::fs::write(&file, format!("[client]\nallowed_origins = [\"{origin}\"]\n")).unwrap();
    write("https://a.example");
    let herald = start(&file);
    let status = |origin: &'static str| {
        let addr = herald.addr;
        async move { RawWs::handshake(addr, &upgrade_request(addr, WS_PATH, &[("Origin", origin)])).await.status }
    };
    assert_eq!(status("https://a.example").await, 101);
    assert_eq!(status("https://b.example").await, 403);
    let mut before = RawWs::connected(&herald, "alice").await;

    write("https://b.example");
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["applied"], json!(["client.allowed_origins"]), "{r}");
    assert_eq!(status("https://b.example").await, 101);
    assert_eq!(status("https://a.example").await, 403);
    // A connection made before stays.
    let r = rpc(&mut before, 2, "still-here").await;
    assert!(r.get("error").is_some() || r.get("rpc").is_some(), "answered: {r}");
}
