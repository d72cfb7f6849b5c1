//! `Node::reconfigure` (configuration reload): new token keys, channel options and limits apply
//! to the commands that follow, sessions already established stay as they are, and a
//! configuration that does not check is refused whole.

mod support;

use herald_hub::config::ChannelOptions;
use herald_proto::codes::*;
use support::*;

#[test]
fn new_rules_apply_to_the_next_commands_and_sessions_stay() {
    let env = Env::base();
    let node = &env.node;
    let mut alice = env.connected("alice");
    alice.subscribe_ok(node, "plain:a");
    assert_eq!(alice.error(node, subscribe_cmd("closed:a")), ERROR_PERMISSION_DENIED.code);

    let mut cfg = base_config();
    let opened = ChannelOptions { allow_subscribe_for_client: true, ..Default::default() };
    cfg.channel.namespaces.iter_mut().find(|n| n.name == "closed").unwrap().options = opened;
    cfg.client.channel_limit = 2;
    cfg.client.token.hmac_secret_key = "rotated".into();
    node.reconfigure(cfg).expect("a valid configuration");

    // The established session: still connected and subscribed, with the new rules.
    env.publish("plain:a", r#"{"n":1}"#);
    assert_eq!(pubs(&alice.take(), "plain:a").len(), 1, "still receiving");
    alice.subscribe_ok(node, "closed:a");
    assert_eq!(alice.error(node, subscribe_cmd("plain:b")), ERROR_LIMIT_EXCEEDED.code);

    // New connections verify tokens with the new key only.
    let mut bob = env.client();
    assert_eq!(bob.disconnect(node, connect_cmd(&user_token("bob"))), DISCONNECT_INVALID_TOKEN.code);
    let signed = herald_auth::sign_hmac(&serde_json::json!({"sub": "bob"}), "rotated", "HS256").unwrap();
    env.client().connect_ok(node, &signed);
}

#[test]
fn a_configuration_that_does_not_check_changes_nothing() {
    let env = Env::base();
    let node = &env.node;
    let mut cfg = base_config();
    cfg.channel.namespaces.retain(|n| n.name != "closed");
    cfg.client.user_connection_limit_mode = "sometimes".into();
    let e = node.reconfigure(cfg).unwrap_err();
    assert_eq!(e.key, "client.user_connection_limit_mode");

    let mut cfg = base_config();
    cfg.client.subscribe_to_user_personal_channel.enabled = true;
    cfg.client.subscribe_to_user_personal_channel.personal_channel_namespace = "nowhere".into();
    let e = node.reconfigure(cfg).unwrap_err();
    assert_eq!(e.key, "client.subscribe_to_user_personal_channel.personal_channel_namespace");

    assert!(node.channels().namespace("closed").is_some(), "the namespaces in force stay");
    assert_eq!(node.config().client.user_connection_limit_mode, base_config().client.user_connection_limit_mode);
    let mut alice = env.connected("alice");
    assert_eq!(alice.error(node, subscribe_cmd("closed:a")), ERROR_PERMISSION_DENIED.code);
}
