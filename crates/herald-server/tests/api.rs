//! End-to-end tests of the server HTTP API, `/health` and `/metrics` against a real `herald`
//! process, including the API's effects on live WebSocket clients.

mod support;

use herald_client::ClientError;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_and_accepted_in_three_forms() {
    let herald = Herald::start(&[]);
    let body = br#"{"channel":"news","data":{"x":1}}"#;

    let resp = herald.http("POST", "/api/publish", &[], body).await;
    assert_eq!(resp.status, 401, "{resp:?}");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert!(resp.json()["error"].as_str().is_some_and(|e| e.contains("unauthorized")), "{}", resp.text());

    for headers in [
        &[("X-API-Key", "wrong")][..],
        &[("Authorization", "apikey wrong")],
        &[("Authorization", &format!("bearer {API_KEY}"))],
    ] {
        let resp = herald.http("POST", "/api/publish", headers, body).await;
        assert_eq!(resp.status, 401, "{headers:?}: {resp:?}");
        assert!(resp.json()["error"].is_string());
    }
    let resp = herald.http("POST", "/api/publish?api_key=wrong", &[], body).await;
    assert_eq!(resp.status, 401, "{resp:?}");

    let authorization = format!("apikey {API_KEY}");
    let authorization_upper = format!("ApiKey {API_KEY}");
    for (path, headers) in [
        ("/api/publish", vec![("X-API-Key", API_KEY)]),
        ("/api/publish", vec![("Authorization", authorization.as_str())]),
        ("/api/publish", vec![("Authorization", authorization_upper.as_str())]),
        (&*format!("/api/publish?api_key={API_KEY}"), vec![]),
    ] {
        let resp = herald.http("POST", path, &headers, body).await;
        assert_eq!(resp.status, 200, "{path} {headers:?}: {resp:?}");
        assert_eq!(resp.json(), json!({"result": {}}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_level_errors() {
    let herald = Herald::start(&[("HERALD_HTTP_API_MAX_BODY_SIZE", "1024")]);
    let key = [("X-API-Key", API_KEY)];

    // Malformed JSON and JSON of the wrong shape: 400 with a JSON error body saying what is wrong.
    for (body, error) in [
        (&br#"{"channel":"#[..], "invalid JSON: EOF while parsing a value at line 1 column 11"),
        (b"[1,2", "invalid JSON: EOF while parsing a list at line 1 column 4"),
        (b"[1,2]", "invalid request: the body must be a JSON object"),
        (
            br#"{"channel":5,"data":{}}"#,
            "invalid request: field `channel`: invalid type: integer `5`, expected a string at line 1 column 12",
        ),
    ] {
        let resp = herald.http("POST", "/api/publish", &key, body).await;
        assert_eq!(resp.status, 400, "{}: {resp:?}", String::from_utf8_lossy(body));
        assert_eq!(resp.header("Content-Type"), Some("application/json"));
        assert_eq!(resp.json(), json!({ "error": error }), "{}", String::from_utf8_lossy(body));
    }

    let resp = herald.http("POST", "/api/no_such_method", &key, b"{}").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(resp.json(), json!({"error": "unknown API method `no_such_method`"}));
    let resp = herald.http("POST", "/api/", &key, b"{}").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert_eq!(resp.json(), json!({"error": "no API method in the path: use POST /api/<method>"}));

    let resp = herald.http("GET", "/api/publish", &key, b"").await;
    assert_eq!(resp.status, 405, "{resp:?}");
    assert_eq!(resp.header("Allow"), Some("POST"), "a 405 must name the allowed method: {resp:?}");
    assert!(resp.json()["error"].is_string());

    let big = json!({"channel": "news", "data": "x".repeat(2000)}).to_string();
    let resp = herald.http("POST", "/api/publish", &key, big.as_bytes()).await;
    assert_eq!(resp.status, 413, "{resp:?}");
    assert_eq!(resp.json(), json!({"error": "request body too large"}));
    // Just under the limit is fine.
    let small = json!({"channel": "news", "data": "x".repeat(900)}).to_string();
    assert_eq!(herald.http("POST", "/api/publish", &key, small.as_bytes()).await.status, 200);

    let resp = herald.http("GET", "/nowhere", &[], b"").await;
    assert_eq!(resp.status, 404, "{resp:?}");
    assert!(resp.json()["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_results_and_errors() {
    let herald = Herald::start(&[]);

    // Without history: an empty result.
    assert_eq!(herald.api("publish", json!({"channel": "news", "data": {"a": 1}})).await, (200, json!({"result": {}})));
    // With history: the stream position.
    let first = herald.publish("hist:p", json!({"a": 1})).await;
    assert_eq!(first["offset"], 1, "{first}");
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    assert!(!epoch.is_empty());
    assert_eq!(herald.publish("hist:p", json!({"a": 2})).await, json!({"offset": 2, "epoch": epoch}));
    // skip_history: delivered but not stored, so no position.
    let (status, skipped) =
        herald.api("publish", json!({"channel": "hist:p", "data": {"a": 3}, "skip_history": true})).await;
    assert_eq!((status, skipped), (200, json!({"result": {}})));
    // b64data is accepted.
    let (status, body) = herald.api("publish", json!({"channel": "news", "b64data": "aGVsbG8="})).await;
    assert_eq!((status, body), (200, json!({"result": {}})));

    let bad_request = |detail: &str| json!({"error": {"code": 107, "message": format!("bad request: {detail}")}});
    let unknown_channel =
        json!({"error": {"code": 102, "message": "unknown channel: channel namespace is not configured"}});
    for (body, expected) in [
        (json!({"channel": "", "data": {"a": 1}}), bad_request("missing field `channel`")),
        (json!({"data": {"a": 1}}), bad_request("missing field `channel`")),
        (json!({"channel": "news"}), bad_request("missing field `data` (or `b64data`)")),
        (
            json!({"channel": "news", "b64data": "not base64!"}),
            bad_request("`b64data` is not valid base64: Invalid symbol 32, offset 3."),
        ),
        (
            json!({"channel": "news", "data": {}, "exclude_client": "not-a-uuid"}),
            bad_request("`exclude_client` is not a client ID (a UUID)"),
        ),
        (json!({"channel": "nope:x", "data": {"a": 1}}), unknown_channel),
    ] {
        let (status, reply) = herald.api("publish", body.clone()).await;
        assert_eq!((status, &reply), (200, &expected), "{body}");
    }

    // Transport error mode: HTTP status from the code, bare error object.
    let key = ("X-API-Key", API_KEY);
    for mode_header in ["X-Herald-Error-Mode", "X-Centrifugo-Error-Mode"] {
        let headers = [key, (mode_header, "transport")];
        let resp = herald.http("POST", "/api/publish", &headers, br#"{"channel":"nope:x","data":{}}"#).await;
        assert_eq!(resp.status, 404, "{resp:?}");
        assert_eq!(
            resp.json(),
            json!({"code": 102, "message": "unknown channel: channel namespace is not configured"})
        );
        let resp = herald.http("POST", "/api/publish", &headers, br#"{"channel":"news"}"#).await;
        assert_eq!(resp.status, 400, "{resp:?}");
        assert_eq!(resp.json(), json!({"code": 107, "message": "bad request: missing field `data` (or `b64data`)"}));
        let resp = herald.http("POST", "/api/publish", &headers, br#"{"channel":"news","data":1}"#).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.json(), json!({"result": {}}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_answers_per_channel() {
    let herald = Herald::start(&[]);
    let (mut client, _) = herald.subscriber("1", "news").await;
    let (status, body) =
        herald.api("broadcast", json!({"channels": ["hist:b", "news", "nope:x", ""], "data": {"b": 1}})).await;
    assert_eq!(status, 200, "{body}");
    let responses = body["result"]["responses"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(responses.len(), 4, "{body}");
    assert_eq!(responses[0]["result"]["offset"], 1, "{body}");
    assert!(responses[0]["result"]["epoch"].is_string(), "{body}");
    assert_eq!(responses[1], json!({"result": {}}));
    assert_eq!(
        responses[2],
        json!({"error": {"code": 102, "message": "unknown channel: channel namespace is not configured"}})
    );
    assert_eq!(responses[3], json!({"error": {"code": 107, "message": "bad request: empty channel name"}}));
    assert_eq!(next_publication(&mut client, "news").await.0, json!({"b": 1}));

    for (body, message) in [
        (json!({"channels": [], "data": {"b": 1}}), "bad request: missing field `channels`"),
        (json!({"channels": ["news"]}), "bad request: missing field `data` (or `b64data`)"),
    ] {
        assert_eq!(
            herald.api("broadcast", body.clone()).await,
            (200, json!({"error": {"code": 107, "message": message}})),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_history_channels_and_info_shapes() {
    let herald = Herald::start(&[("HERALD_NODE_NAME", "node-under-test")]);
    let (_client, connected) = herald.subscriber("42", "hist:room").await;
    let id = connected.client.clone();

    assert_eq!(
        herald.api_ok("presence", json!({"channel": "hist:room"})).await,
        json!({"presence": {id.clone(): {"user": "42", "client": id}}})
    );
    assert_eq!(
        herald.api_ok("presence_stats", json!({"channel": "hist:room"})).await,
        json!({"num_clients": 1, "num_users": 1})
    );
    let not_available = (200, json!({"error": {"code": 108, "message": "not available"}}));
    assert_eq!(herald.api("presence", json!({"channel": "news"})).await, not_available);
    assert_eq!(herald.api("presence_stats", json!({"channel": "news"})).await, not_available);
    assert_eq!(herald.api("history", json!({"channel": "news"})).await, not_available);
    assert_eq!(
        herald.api("presence", json!({"channel": "nope:x"})).await,
        (200, json!({"error": {"code": 102, "message": "unknown channel: channel namespace is not configured"}}))
    );

    // History: empty stream, then two publications.
    let empty = herald.api_ok("history", json!({"channel": "hist:room", "limit": 10})).await;
    assert_eq!(empty["publications"], json!([]), "{empty}");
    assert_eq!(empty["offset"], 0, "{empty}");
    let p1 = herald.publish("hist:room", json!({"n": 1})).await;
    let epoch = p1["epoch"].clone();
    herald.api_ok("publish", json!({"channel": "hist:room", "data": {"n": 2}, "tags": {"k": "v"}})).await;
    assert_eq!(
        herald.api_ok("history", json!({"channel": "hist:room", "limit": 10})).await,
        json!({
            "publications": [{"data": {"n": 1}, "offset": 1}, {"data": {"n": 2}, "offset": 2, "tags": {"k": "v"}}],
            "offset": 2,
            "epoch": epoch,
        })
    );
    // limit 0: the position only; reverse; since.
    assert_eq!(
        herald.api_ok("history", json!({"channel": "hist:room"})).await,
        json!({"publications": [], "offset": 2, "epoch": epoch})
    );
    let reversed = herald.api_ok("history", json!({"channel": "hist:room", "limit": 1, "reverse": true})).await;
    assert_eq!(reversed["publications"], json!([{"data": {"n": 2}, "offset": 2, "tags": {"k": "v"}}]));
    let since = herald
        .api_ok("history", json!({"channel": "hist:room", "limit": 10, "since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(since["publications"], json!([{"data": {"n": 2}, "offset": 2, "tags": {"k": "v"}}]));
    assert_eq!(
        herald.api("history", json!({"channel": "hist:room", "since": {"offset": 1, "epoch": "wrong"}})).await,
        (200, json!({"error": {"code": 112, "message": "unrecoverable position"}}))
    );

    // history_remove keeps the position.
    assert_eq!(herald.api_ok("history_remove", json!({"channel": "hist:room"})).await, json!({}));
    assert_eq!(
        herald.api_ok("history", json!({"channel": "hist:room", "limit": 10})).await,
        json!({"publications": [], "offset": 2, "epoch": epoch})
    );

    // channels, with and without a pattern.
    let (_other, _) = herald.subscriber("43", "news").await;
    assert_eq!(
        herald.api_ok("channels", json!({})).await,
        json!({"channels": {"hist:room": {"num_clients": 1}, "news": {"num_clients": 1}}})
    );
    assert_eq!(
        herald.api_ok("channels", json!({"pattern": "hist:*"})).await,
        json!({"channels": {"hist:room": {"num_clients": 1}}})
    );

    let info = herald.api_ok("info", json!({})).await;
    let nodes = info["nodes"].as_array().unwrap_or_else(|| panic!("{info}"));
    assert_eq!(nodes.len(), 1, "{info}");
    let node = &nodes[0];
    assert!(node["uid"].as_str().is_some_and(|u| !u.is_empty()), "{info}");
    assert_eq!(node["name"], "node-under-test", "{info}");
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "{info}");
    for (key, value) in [("num_clients", 2), ("num_users", 2), ("num_channels", 2), ("num_subs", 2)] {
        assert_eq!(node[key], value, "{key}: {info}");
    }
    // An empty body counts as `{}`.
    let resp = herald.http("POST", "/api/info", &[("X-API-Key", API_KEY)], b"").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.json()["result"]["nodes"][0]["num_clients"], 2);
}

/// `parallel: true` runs the commands concurrently; every reply still lands in its command's
/// slot, errors included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_answers_every_command_in_order() {
    let herald = Herald::start(&[]);
    let mut commands = vec![];
    for n in 0..40 {
        commands.push(match n % 5 {
            0 | 1 => json!({"publish": {"channel": format!("hist:par{n}"), "data": {"n": n}}}),
            2 => json!({"publish": {"channel": "nope:x", "data": {"n": n}}}),
            3 => json!({"bogus": {"n": n}}),
            _ => json!({"publish": {"channel": n}}),
        });
    }
    let body = herald.api_ok("batch", json!({"commands": commands, "parallel": true})).await;
    let replies = body["replies"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(replies.len(), 40, "{body}");
    for (n, reply) in replies.iter().enumerate() {
        match n % 5 {
            0 | 1 => assert_eq!(reply["publish"]["offset"], 1, "{n}: {reply}"),
            2 => assert_eq!(reply["error"]["code"], 102, "{n}: {reply}"),
            3 => assert_eq!(reply["error"]["code"], 104, "{n}: {reply}"),
            _ => assert_eq!(
                reply["error"]["message"],
                format!(
                    "bad request: field `channel`: invalid type: integer `{n}`, expected a string at line 1 column {}",
                    11 + n.to_string().len()
                ),
                "{n}: {reply}"
            ),
        }
    }
    // Each publication is in its own channel's history.
    for n in (0..40).filter(|n| n % 5 < 2) {
        let history = herald.api_ok("history", json!({"channel": format!("hist:par{n}"), "limit": -1})).await;
        assert_eq!(history["publications"], json!([{"data": {"n": n}, "offset": 1}]), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_answers_every_command_in_order() {
    let herald = Herald::start(&[]);
    let body = herald
        .api_ok(
            "batch",
            json!({"commands": [
                {"publish": {"channel": "hist:batch", "data": {"n": 1}}},
                {"publish": {"channel": "nope:x", "data": {"n": 1}}},
                {"history": {"channel": "hist:batch", "limit": 10}},
                {"bogus": {}},
                {"publish": {"channel": 5}},
                {"info": {}},
            ]}),
        )
        .await;
    let replies = body["replies"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(body.as_object().unwrap().len(), 1, "only `replies`: {body}");
    assert_eq!(replies.len(), 6, "{body}");
    let epoch = replies[0]["publish"]["epoch"].clone();
    assert_eq!(replies[0], json!({"publish": {"offset": 1, "epoch": epoch}}));
    assert_eq!(
        replies[1],
        json!({"error": {"code": 102, "message": "unknown channel: channel namespace is not configured"}})
    );
    assert_eq!(
        replies[2],
        json!({"history": {"publications": [{"data": {"n": 1}, "offset": 1}], "offset": 1, "epoch": epoch}})
    );
    assert_eq!(replies[3], json!({"error": {"code": 104, "message": "not found: unknown API method `bogus`"}}));
    assert_eq!(
        replies[4],
        json!({"error": {"code": 107, "message": "bad request: field `channel`: invalid type: integer `5`, expected a string at line 1 column 12"}})
    );
    assert_eq!(replies[5]["info"]["nodes"][0]["num_clients"], 0, "{body}");
    assert_eq!(herald.api_ok("batch", json!({"commands": []})).await, json!({"replies": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_client_skips_that_connection() {
    let herald = Herald::start(&[]);
    let (mut a, a_info) = herald.subscriber("a", "news").await;
    let (mut b, _) = herald.subscriber("b", "news").await;
    herald.api_ok("publish", json!({"channel": "news", "data": {"n": 1}, "exclude_client": a_info.client})).await;
    herald.publish("news", json!({"n": 2})).await;
    assert_eq!(next_publication(&mut a, "news").await.0, json!({"n": 2}), "the excluded client got the publication");
    assert_eq!(next_publication(&mut b, "news").await.0, json!({"n": 1}));
    assert_eq!(next_publication(&mut b, "news").await.0, json!({"n": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_deduplicates() {
    let herald = Herald::start(&[]);
    let (mut client, _) = herald.subscriber("1", "hist:idem").await;
    let publish = |n: u64, key: &str| json!({"channel": "hist:idem", "data": {"n": n}, "idempotency_key": key});
    let first = herald.api_ok("publish", publish(1, "key-1")).await;
    assert_eq!(first["offset"], 1, "{first}");
    let again = herald.api_ok("publish", publish(99, "key-1")).await;
    assert_eq!(again, first, "a repeated key must return the first publish's position");
    let other = herald.api_ok("publish", publish(2, "key-2")).await;
    assert_eq!(other["offset"], 2, "{other}");

    assert_eq!(next_publication(&mut client, "hist:idem").await, (json!({"n": 1}), 1));
    assert_eq!(next_publication(&mut client, "hist:idem").await, (json!({"n": 2}), 2), "delivered twice");
    let history = herald.api_ok("history", json!({"channel": "hist:idem", "limit": -1})).await;
    assert_eq!(history["publications"].as_array().map(Vec::len), Some(2), "{history}");

    // Without history the key still deduplicates.
    let (mut plain, _) = herald.subscriber("2", "news").await;
    let publish = |n: u64| json!({"channel": "news", "data": {"n": n}, "idempotency_key": "k"});
    assert_eq!(herald.api_ok("publish", publish(1)).await, json!({}));
    assert_eq!(herald.api_ok("publish", publish(2)).await, json!({}));
    herald.publish("news", json!({"n": 3})).await;
    assert_eq!(next_publication(&mut plain, "news").await.0, json!({"n": 1}));
    assert_eq!(next_publication(&mut plain, "news").await.0, json!({"n": 3}), "delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_subscribe_and_unsubscribe_reach_live_clients() {
    let herald = Herald::start(&[]);
    let (mut client, _) = herald.client("7").await;

    assert_eq!(
        herald.api_ok("subscribe", json!({"user": "7", "channel": "news", "data": {"hello": 1}})).await,
        json!({})
    );
    let push = next_push(&mut client).await;
    assert_eq!(push.channel, "news", "{push:?}");
    let subscribe = push.subscribe.unwrap_or_else(|| panic!("expected a subscribe push"));
    assert_eq!(&subscribe.data[..], br#"{"hello":1}"#);
    herald.publish("news", json!({"n": 1})).await;
    assert_eq!(next_publication(&mut client, "news").await.0, json!({"n": 1}));
    assert_eq!(herald.api_ok("channels", json!({})).await, json!({"channels": {"news": {"num_clients": 1}}}));

    assert_eq!(herald.api_ok("unsubscribe", json!({"user": "7", "channel": "news"})).await, json!({}));
    let push = next_push(&mut client).await;
    assert_eq!(push.channel, "news", "{push:?}");
    let unsubscribe = push.unsubscribe.unwrap_or_else(|| panic!("expected an unsubscribe push"));
    assert_eq!((unsubscribe.code, unsubscribe.reason.as_str()), (2000, "server unsubscribe"));
    assert_eq!(herald.api_ok("channels", json!({})).await, json!({"channels": {}}));
    // Nothing more arrives from `news`: the next push is the subscribe to `other`.
    herald.publish("news", json!({"n": 2})).await;
    herald.api_ok("subscribe", json!({"user": "7", "channel": "hist:other"})).await;
    let push = next_push(&mut client).await;
    assert_eq!(push.channel, "hist:other", "{push:?}");
    let subscribe = push.subscribe.unwrap_or_else(|| panic!("expected a subscribe push"));
    assert!(!subscribe.recoverable);

    // Other users are not affected; unknown namespaces are rejected.
    assert_eq!(herald.api_ok("subscribe", json!({"user": "nobody", "channel": "news"})).await, json!({}));
    assert_eq!(
        herald.api("subscribe", json!({"user": "7", "channel": "nope:x"})).await,
        (200, json!({"error": {"code": 102, "message": "unknown channel: channel namespace is not configured"}}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_closes_the_targeted_connections() {
    let herald = Herald::start(&[]);
    let (mut a, a_info) = herald.client("8").await;
    let (mut b, _) = herald.client("8").await;
    let (mut c, c_info) = herald.subscriber("8", "news").await;
    let (mut other, _) = herald.client("9").await;

    // One connection, custom code and reason.
    let body = json!({"user": "8", "client": a_info.client, "disconnect": {"code": 4000, "reason": "bye"}});
    assert_eq!(herald.api_ok("disconnect", body).await, json!({}));
    assert_eq!(next_push_error(&mut a).await, ClientError::Closed { code: Some(4000), reason: "bye".into() });

    // Every connection of the user except the whitelisted one, default code.
    assert_eq!(herald.api_ok("disconnect", json!({"user": "8", "whitelist": [c_info.client]})).await, json!({}));
    assert_eq!(
        next_push_error(&mut b).await,
        ClientError::Closed { code: Some(3503), reason: "force disconnect".into() }
    );
    wait_for("two connections left", WAIT, || async { herald.num_clients().await == 2 }).await;
    herald.publish("news", json!({"still": "here"})).await;
    assert_eq!(next_publication(&mut c, "news").await.0, json!({"still": "here"}));
    // The other user is untouched.
    subscribe(&mut other, "hist:alive").await;

    // Codes outside 3001..=4999 are rejected.
    for code in [1000, 3000, 5000] {
        let body = json!({"user": "8", "disconnect": {"code": code, "reason": "x"}});
        assert_eq!(
            herald.api("disconnect", body).await,
            (
                200,
                json!({"error": {"code": 107, "message": format!("bad request: `disconnect.code` {code} is not between 3001 and 4999")}})
            ),
            "code {code}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_with_expired_closes_the_connection() {
    let herald = Herald::start(&[]);
    let (mut client, _) = herald.client("10").await;
    let (mut other, _) = herald.client("11").await;
    assert_eq!(herald.api_ok("refresh", json!({"user": "10", "expired": true})).await, json!({}));
    assert_eq!(
        next_push_error(&mut client).await,
        ClientError::Closed { code: Some(3005), reason: "connection expired".into() }
    );
    // A refresh that extends the connection keeps it open.
    let later = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    assert_eq!(herald.api_ok("refresh", json!({"user": "11", "expire_at": later})).await, json!({}));
    subscribe(&mut other, "hist:alive").await;
}

/// Waits for the connection to end; returns the error the client saw.
async fn next_push_error(client: &mut herald_client::Client) -> ClientError {
    match tokio::time::timeout(WAIT, client.next_push()).await {
        Ok(Err(e)) => e,
        Ok(Ok(push)) => panic!("expected the connection to close, got {push:?}"),
        Err(_) => panic!("connection not closed within {WAIT:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let herald = Herald::start(&[]);
    let resp = herald.http("GET", "/health", &[], b"").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
    assert_eq!(resp.json(), json!({}));

    // Some traffic: a client with a subscription, API calls (one unauthorized), publications.
    let (mut client, _) = herald.subscriber("1", "news").await;
    herald.publish("news", json!({"n": 1})).await;
    next_publication(&mut client, "news").await;
    assert_eq!(herald.http("POST", "/api/publish", &[], b"{}").await.status, 401);

    let resp = herald.http("GET", "/metrics", &[], b"").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.header("Content-Type").is_some_and(|t| t.starts_with("text/plain")), "{resp:?}");
    let text = resp.text();
    let value = |prefix: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no metric line starting with {prefix:?} in:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    assert_eq!(value("herald_connections "), 1.0);
    assert!(value("herald_client_commands_total{") >= 1.0);
    assert!(value("herald_messages_published_total ") >= 1.0);
    assert!(value("herald_messages_delivered_total ") >= 1.0);
    assert!(value("herald_transport_bytes_in_total ") > 0.0);
    assert!(value("herald_transport_bytes_out_total ") > 0.0);
    let has = |name: &str, labels: &[&str]| {
        text.lines().any(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label)))
    };
    assert!(has("herald_client_commands_total", &["method=\"connect\"", "result=\"ok\""]), "{text}");
    assert!(has("herald_client_commands_total", &["method=\"subscribe\"", "result=\"ok\""]), "{text}");
    assert!(has("herald_api_requests_total", &["method=\"publish\"", "status=\"200\"", "result=\"ok\""]), "{text}");
    assert!(has("herald_api_requests_total", &["method=\"publish\"", "status=\"401\""]), "{text}");
    for name in ["herald_connections", "herald_api_requests_total", "herald_messages_published_total"] {
        assert!(text.contains(&format!("# TYPE {name} ")), "no TYPE line for {name}:\n{text}");
    }

    // The gauge follows disconnects.
    client.close().await;
    wait_for("herald_connections 0", WAIT, || async {
        herald.metrics().await.lines().any(|l| l == "herald_connections 0")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keep_alive_connection_serves_several_requests() {
    let herald = Herald::start(&[]);
    // Two requests on one connection (the second closes it).
    let body = br#"{"channel":"news","data":1}"#;
    let one = |close: bool| {
        let mut req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nX-API-Key: {API_KEY}\r\nContent-Length: {}\r\n{}\r\n",
            herald.addr,
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    let mut both = one(false);
    both.extend(one(true));
    let mut stream = tokio::net::TcpStream::connect(herald.addr).await.unwrap();
    stream.write_all(&both).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("server closes").unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");
    assert_eq!(raw.matches(r#"{"result":{}}"#).count(), 2, "{raw}");
}
