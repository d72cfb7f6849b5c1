//! Reload of gateway routes against a real `herald` and real test upstreams
//! (`support/upstream.rs`): a route added, moved to another upstream and removed applies to the
//! next request; the old routes' health checks stop; an invalid route is refused with its key
//! and the routes in force stay.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::upstream::Upstream;
use support::{Herald, WAIT, wait_for};

/// TOML for `routes`: (prefix, upstream URL, health-check path or "").
fn write_routes(path: &Path, routes: &[(&str, &str, &str)]) {
    let mut text = String::new();
    for (prefix, upstream, health) in routes {
        text.push_str(&format!(
            "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstreams = [\"{upstream}\"]\nauth = \"none\"\n"
        ));
        if !health.is_empty() {
            text.push_str(&format!(
                "[gateway.routes.health_check]\npath = \"{health}\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\n"
            ));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn start(file: &Path) -> Herald {
    Herald::start_with_args(&[], &["--config", file.to_str().unwrap()])
}

#[tokio::test]
async fn routes_added_moved_and_removed_apply_to_the_next_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_routes(&file, &[("/app", &a.url(), "/health")]);
    let herald = start(&file);
    let r = herald.http("GET", "/app/orders", &[], b"").await;
    assert_eq!((r.status, r.json()["upstream"].clone()), (200, json!("a")), "{}", r.text());
    assert_eq!(herald.http("GET", "/shop/x", &[], b"").await.status, 404);
    wait_for("a's health checks", WAIT, || async { a.health_checks() >= 2 }).await;

    // /app moves to b (without health checks), /shop is added.
    write_routes(&file, &[("/app", &b.url(), ""), ("/shop", &b.url(), "")]);
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(r["applied"], json!(["gateway.routes"]), "{r}");
    let r = herald.http("GET", "/app/orders", &[], b"").await;
    assert_eq!((r.status, r.json()["upstream"].clone()), (200, json!("b")), "{}", r.text());
    let r = herald.http("GET", "/shop/x", &[], b"").await;
    assert_eq!((r.status, r.json()["upstream"].clone()), (200, json!("b")), "{}", r.text());
    // The old route's health checks stopped.
    let checks = a.health_checks();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(a.health_checks() <= checks + 1, "a is no longer checked: {checks} then {}", a.health_checks());

    // An invalid route: refused with its key, the routes in force stay.
    write_routes(&file, &[("/app", "ftp://nowhere", "")]);
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert!(r["key"].as_str().unwrap().starts_with("gateway.routes[0]"), "{r}");
    assert_eq!(herald.http("GET", "/shop/y", &[], b"").await.status, 200);

    // Removed: 404.
    write_routes(&file, &[("/app", &b.url(), "")]);
    let r = herald.api_ok("reload", json!({})).await;
    assert_eq!(r["outcome"], "applied", "{r}");
    assert_eq!(herald.http("GET", "/shop/y", &[], b"").await.status, 404);
    assert_eq!(herald.http("GET", "/app/z", &[], b"").await.status, 200);
    assert_eq!(a.served(), 1, "only the request before the move reached a");
}
