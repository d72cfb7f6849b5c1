//! Unit tests of `methods`.

use super::*;

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}

/// Answers keep the bytes of the `serde_json::Value` objects they replaced: sorted keys,
/// payloads re-serialized compactly, empty parts left out.
#[test]
fn answers_serialize_with_sorted_keys() {
    assert_eq!(json(&PublishResult::from(None)), "{}");
    let position = StreamPosition { offset: 3, epoch: "e".into() };
    assert_eq!(json(&PublishResult::from(Some(position))), r#"{"epoch":"e","offset":3}"#);
    let info = ClientInfo {
        user: "u".into(),
        client: "c".into(),
        conn_info: Bytes::from_static(br#"{"b": 1, "a": 2}"#),
        chan_info: Bytes::from_static(b"\xff"),
    };
    let publication = Publication {
        data: Bytes::from_static(b"[1, 2]"),
        info: Some(info.clone()),
        offset: 7,
        tags: BTreeMap::from([("t".into(), "v".into())]),
        ..Default::default()
    };
    let history =
        HistoryResult { epoch: "e".into(), offset: 7, publications: vec![publication, Publication::default()] };
    assert_eq!(
        json(&history),
        r#"{"epoch":"e","offset":7,"publications":[{"data":[1,2],"info":{"b64chan_info":"/w==","client":"c","conn_info":{"a":2,"b":1},"user":"u"},"offset":7,"tags":{"t":"v"}},{}]}"#
    );
    let presence = PresenceResult { presence: BTreeMap::from([("c".into(), info)]) };
    assert!(json(&presence).starts_with(r#"{"presence":{"c":{"b64chan_info":"/w==","client":"c","#));
    let replies = BatchResult {
        replies: vec![
            BatchReply::Answer(BTreeMap::from([("publish", serde_json::value::to_raw_value(&Empty {}).unwrap())])),
            BatchReply::Error { error: ERROR_METHOD_NOT_FOUND.into() },
            BatchReply::Error { error: missing("channel") },
        ],
    };
    assert_eq!(
        json(&replies),
        r#"{"replies":[{"publish":{}},{"error":{"code":104,"message":"not found"}},{"error":{"code":107,"message":"bad request: missing field `channel`"}}]}"#
    );
}

#[test]
fn request_fields_are_read_from_the_derived_deserialize() {
    assert_eq!(fields_of::<ChannelRequest>(), ["channel"]);
    assert_eq!(fields_of::<SubscribeRequest>().last(), Some(&"override"));
    assert_eq!(fields_of::<InfoRequest>(), [] as [&str; 0]);
}

#[test]
fn a_bad_request_names_the_unknown_fields_and_only_a_bad_request() {
    let known = fields_of::<ChannelRequest>();
    let explained = |e: ErrorCode, params: &[u8]| {
        let mut e = ApiError::from(e);
        explain_unknown_fields(&mut e, params, known);
        e.message.into_owned()
    };
    let many = br#"{"e": 1, "d": 1, "c": 1, "b": 1, "a": 1, "channel": ""}"#;
    assert_eq!(
        explained(ERROR_BAD_REQUEST, many),
        "bad request; unknown fields `a`, `b`, `c` and 2 more, expected one of `channel`"
    );
    assert_eq!(explained(ERROR_BAD_REQUEST, b" "), "bad request (the request body is empty)");
    assert_eq!(explained(ERROR_BAD_REQUEST, br#"{"channel": "x"}"#), "bad request");
    assert_eq!(explained(ERROR_UNKNOWN_CHANNEL, br#"{"chanel": "x"}"#), "unknown channel");
    assert_eq!(Short(&"é".repeat(70)).to_string(), format!("{}…", "é".repeat(64)));
}

#[test]
fn requests_parse_as_the_api_parses_them() {
    for method in &METHODS {
        assert_eq!(parse_request(method.name, b" "), Ok(()), "{}", method.name);
    }
    let wrong = parse_request("publish", br#"{"channel": 1}"#).unwrap_err();
    assert!(wrong.starts_with("invalid request: field `channel`: invalid type: integer `1`"), "{wrong}");
    assert!(parse_request("publish", b"{").unwrap_err().starts_with("invalid JSON: "));
    assert_eq!(parse_request("publsh", b"{}").unwrap_err(), "unknown API method `publsh`");
    let batch = br#"{"commands": [{"info": {}}, {"publish": {"channel": []}}, {"batch": {}}, 1]}"#;
    let commands = parse_batch_commands(batch).unwrap();
    assert_eq!(commands[0], Ok("info"));
    assert!(commands[1].as_ref().unwrap_err().starts_with("bad request: field `channel`: invalid type: sequence"));
    assert_eq!(commands[2], Err("not found: a batch cannot contain `batch`".to_owned()));
    assert!(commands[3].as_ref().unwrap_err().starts_with("bad request: a batch command must be an object"));
    assert!(parse_batch_commands(br#"{"commands": {}}"#).unwrap_err().contains("`commands`"));
}

#[test]
fn every_method_is_found_by_its_name_once() {
    for method in &METHODS {
        assert!(std::ptr::eq(find(method.name).unwrap(), method), "{}", method.name);
    }
    assert!(find("nope").is_none());
    assert_eq!(METHODS.iter().filter(|m| !m.wrap_result).count(), 1, "only batch answers bare");
}

/// Yields to the runtime `n` times: a future that finishes after `n` rounds of other work.
async fn after_rounds(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn run_in_order_answers_in_item_order_with_at_most_bound_in_flight() {
    use std::cell::Cell;
    for (bound, items, expect_max) in [(1, 20, 1), (4, 20, 4), (64, 20, 20), (PARALLEL_BOUND, 200, PARALLEL_BOUND)] {
        let (in_flight, max) = (Cell::new(0usize), Cell::new(0usize));
        let outputs = run_in_order(0..items, bound, |i| {
            let (in_flight, max) = (&in_flight, &max);
            async move {
                in_flight.set(in_flight.get() + 1);
                max.set(max.get().max(in_flight.get()));
                // Later items finish sooner: completion order is not item order.
                after_rounds(items - i).await;
                in_flight.set(in_flight.get() - 1);
                i * 10
            }
        })
        .await;
        assert_eq!(outputs, (0..items).map(|i| i * 10).collect::<Vec<_>>(), "bound {bound}");
        assert_eq!(max.get(), expect_max, "bound {bound}, {items} items");
    }
    assert!(run_in_order(std::iter::empty::<()>(), 64, |_| async {}).await.is_empty());
}

/// However many futures are ready at once, the runner gives the thread back to the other
/// tasks after every YIELD_EVERY starts (a worker runtime is single-threaded).
#[tokio::test(flavor = "current_thread")]
async fn run_in_order_yields_between_starts() {
    use std::cell::Cell;
    use std::rc::Rc;
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let rounds = Rc::new(Cell::new(0usize));
            let other = tokio::task::spawn_local({
                let rounds = rounds.clone();
                async move {
                    // Bounded: the runner below needs far fewer rounds than this.
                    for _ in 0..100_000 {
                        rounds.set(rounds.get() + 1);
                        tokio::task::yield_now().await;
                    }
                }
            });
            for bound in [1, PARALLEL_BOUND] {
                let seen = run_in_order(0..500, bound, |_| {
                    let rounds = rounds.clone();
                    async move { rounds.get() }
                })
                .await;
                let mut longest = 1;
                let mut run = 1;
                for w in seen.windows(2) {
                    run = if w[0] == w[1] { run + 1 } else { 1 };
                    longest = longest.max(run);
                }
                assert!(longest <= YIELD_EVERY, "bound {bound}: {longest} starts without a yield");
            }
            other.abort();
        })
        .await;
}
