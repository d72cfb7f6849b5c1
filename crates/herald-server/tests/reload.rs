//! Configuration reload on SIGHUP against a real `herald` started with a config file: what can
//! change while running is applied without dropping clients, the rest is named as needing a
//! restart, and an invalid file is refused with the key named while the old configuration stays.

mod support;

use serde_json::json;
use support::{Herald, WAIT, next_publication, wait_for};

fn write_config(path: &std::path::Path, level: &str, history_size: u32) {
    let text = format!(
        "[log]\nlevel = \"{level}\"\n\n[[channel.namespaces]]\nname = \"hist\"\nhistory_size = {history_size}\n\
         history_ttl = \"5m\"\nallow_subscribe_for_client = true\n"
    );
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn sighup_applies_the_log_level_names_the_rest_and_refuses_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herald.toml");
    write_config(&file, "info", 10);
    let herald = Herald::start_with_args(
        &[("HERALD_LOG_LEVEL", ""), ("HERALD_CHANNEL_NAMESPACES", "")],
        &["--config", file.to_str().unwrap()],
    );
    let (mut client, _) = herald.subscriber("carol", "hist:room").await;
    assert!(herald.metrics().await.contains("herald_config_version 1"));

    // At info, a refused API channel is not logged.
    let (status, _) = herald.api("publish", json!({"channel": "nope:x", "data": {}})).await;
    assert_eq!(status, 200);
    assert!(!herald.logs().contains("server API channel refused"));

    write_config(&file, "debug", 20);
    herald.signal(libc::SIGHUP);
    wait_for("the reload", WAIT, || async { herald.logs().contains("configuration reloaded (version 2)") }).await;
    let logs = herald.logs();
    assert!(
        logs.contains("take effect only after a restart: channel.namespaces"),
        "the channel option change is named: {logs}"
    );
    herald.api("publish", json!({"channel": "nope:x", "data": {}})).await;
    wait_for("a debug line", WAIT, || async { herald.logs().contains("server API channel refused") }).await;
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_config_version 2"), "{metrics}");
    assert!(metrics.contains(r#"herald_config_reloads_total{outcome="applied"} 1"#), "{metrics}");
    let info = herald.api_ok("info", json!({})).await;
    assert_eq!(info["nodes"][0]["config_version"], 2, "{info}");

    // An invalid file: refused, the key named, version unchanged.
    std::fs::write(&file, "[client]\nping_interval = \"soon\"\n").unwrap();
    herald.signal(libc::SIGHUP);
    wait_for("the refusal", WAIT, || async { herald.logs().contains("configuration reload refused") }).await;
    let logs = herald.logs();
    let line = logs.lines().find(|l| l.contains("configuration reload refused")).unwrap();
    assert!(line.contains("client.ping_interval"), "{line}");
    let metrics = herald.metrics().await;
    assert!(metrics.contains("herald_config_version 2"), "{metrics}");
    assert!(metrics.contains(r#"herald_config_reloads_total{outcome="refused"} 1"#), "{metrics}");

    // The client connected before both reloads still receives publications.
    herald.publish("hist:room", json!({"still": "here"})).await;
    let (data, _) = next_publication(&mut client, "hist:room").await;
    assert_eq!(data, json!({"still": "here"}));
}
