//! The server API methods: typed request and answer types, one handler per method, and
//! [`METHODS`], the one table of method names that the HTTP API, `batch` (and later the admin
//! UI) dispatch through.
//!
//! Answers are typed structs serialized once. Their fields are declared in alphabetical order:
//! the answers used to be built as `serde_json::Value` objects, whose keys serialize sorted,
//! and the bytes on the wire stay the same.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use base64::Engine as _;
use bytes::Bytes;
use herald_auth::Override;
use herald_hub::ServerSubscribe;
use herald_hub::node::{ApiPublish, Target};
use herald_proto::codes::*;
use herald_proto::{ClientInfo, DisconnectReason, ErrorCode, Publication, StreamPosition, raw};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::state::AppState;

/// What a method handler may know about the request besides its body.
pub struct ApiContext<'a> {
    pub state: &'a AppState,
    /// The address the request came from (for edge policies).
    pub peer: SocketAddr,
}

/// The body is not valid JSON for the method (HTTP 400).
pub struct BadJson(pub String);

/// A handler's answer, serialized, or the API error; `Err(BadJson)` when the params did not
/// parse.
pub type Outcome = Result<Result<Box<RawValue>, ErrorCode>, BadJson>;

/// Parses the params (a method's JSON body) and runs the method. Boxed: the table holds plain
/// function pointers, and `batch` calls back into it.
pub type Handler = for<'a> fn(&'a ApiContext<'a>, &'a [u8]) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// One API method.
pub struct ApiMethod {
    pub name: &'static str,
    /// The answer goes inside `{"result": ...}`; false only for `batch`, which answers
    /// `{"replies": [...]}` bare, as Centrifugo does, and cannot be nested in a batch.
    pub wrap_result: bool,
    pub call: Handler,
}

/// A table entry: parses the params into the handler's request type and serializes its answer.
macro_rules! method {
    ($name:literal, $handler:ident) => {
        method!($name, $handler, true)
    };
    ($name:literal, $handler:ident, $wrap:expr) => {
        ApiMethod {
            name: $name,
            wrap_result: $wrap,
            call: |ctx, params| Box::pin(async move { Ok(answer($handler(ctx, parse(params)?).await)) }),
        }
    };
}

/// Every API method.
pub static METHODS: [ApiMethod; 13] = [
    method!("publish", publish),
    method!("broadcast", broadcast),
    method!("subscribe", subscribe),
    method!("unsubscribe", unsubscribe),
    method!("disconnect", disconnect),
    method!("refresh", refresh),
    method!("presence", presence),
    method!("presence_stats", presence_stats),
    method!("history", history),
    method!("history_remove", history_remove),
    method!("channels", channels),
    method!("info", info),
    method!("batch", batch, false),
];

/// The method named `name`.
pub fn find(name: &str) -> Option<&'static ApiMethod> {
    METHODS.iter().find(|m| m.name == name)
}

fn answer<T: Serialize>(result: Result<T, ErrorCode>) -> Result<Box<RawValue>, ErrorCode> {
    result.map(|value| serde_json::value::to_raw_value(&value).expect("API answers serialize"))
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadJson> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}" as &[u8] } else { body };
    // Fast path without path tracking; on failure parse again to name the bad field.
    serde_json::from_slice(body).map_err(|_| {
        let de = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Err(e) if e.path().to_string() != "." => BadJson(format!("{}: {}", e.path(), e.inner())),
            Err(e) => BadJson(e.inner().to_string()),
            Ok(_) => BadJson("invalid JSON".into()),
        }
    })
}

/// An API error as answers carry it: `{"code", "message"}`.
#[derive(Serialize)]
pub struct ApiError {
    code: u32,
    message: &'static str,
}

impl From<ErrorCode> for ApiError {
    fn from(e: ErrorCode) -> Self {
        ApiError { code: e.code, message: super::api_message(e) }
    }
}

/// The answer of methods that answer nothing: `{}`.
#[derive(Serialize)]
pub struct Empty {}

/// Payload from `data` (raw JSON) or `b64data` (base64 bytes).
fn payload(data: &Option<Box<RawValue>>, b64data: &str) -> Result<Bytes, ErrorCode> {
    if let Some(raw) = data {
        return Ok(raw::json_payload(raw));
    }
    if !b64data.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64data)
            .map(Bytes::from)
            .map_err(|_| ERROR_BAD_REQUEST);
    }
    Ok(Bytes::new())
}

/// A payload in an answer: as JSON when it is JSON, otherwise base64 (under a `b64` name).
fn payload_out(data: &Bytes) -> (Option<Value>, Option<String>) {
    if data.is_empty() {
        return (None, None);
    }
    match std::str::from_utf8(data).ok().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
        Some(parsed) => (Some(parsed), None),
        None => (None, Some(base64::engine::general_purpose::STANDARD.encode(data))),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PublishRequest {
    channel: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
}

/// The publish answer: the stream position with history on, else `{}`.
#[derive(Serialize)]
pub struct PublishResult {
    #[serde(flatten)]
    position: Option<Position>,
}

#[derive(Serialize)]
struct Position {
    epoch: String,
    offset: u64,
}

impl From<Option<StreamPosition>> for PublishResult {
    fn from(p: Option<StreamPosition>) -> Self {
        PublishResult { position: p.map(|p| Position { epoch: p.epoch, offset: p.offset }) }
    }
}

/// The publish options shared by `publish` and `broadcast` bodies.
fn publish_request(
    data: &Option<Box<RawValue>>,
    b64data: &str,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
) -> Result<ApiPublish, ErrorCode> {
    Ok(ApiPublish { data: payload(data, b64data)?, skip_history, tags, idempotency_key, exclude_client })
}

async fn publish(ctx: &ApiContext<'_>, b: PublishRequest) -> Result<PublishResult, ErrorCode> {
    let req = publish_request(&b.data, &b.b64data, b.skip_history, b.tags, b.idempotency_key, b.exclude_client)?;
    let outcome = ctx.state.node.api_publish(&b.channel, &req).await?;
    Ok(outcome.position.into())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BroadcastRequest {
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
    b64data: String,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
}

#[derive(Serialize)]
pub struct BroadcastResult {
    responses: Vec<BroadcastReply>,
}

/// One channel's outcome: `{"result": ...}` or `{"error": ...}`.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum BroadcastReply {
    Result(PublishResult),
    Error(ApiError),
}

async fn broadcast(ctx: &ApiContext<'_>, b: BroadcastRequest) -> Result<BroadcastResult, ErrorCode> {
    if b.channels.is_empty() {
        return Err(ERROR_BAD_REQUEST);
    }
    let req = publish_request(&b.data, &b.b64data, b.skip_history, b.tags, b.idempotency_key, b.exclude_client)?;
    if req.data.is_empty() {
        return Err(ERROR_BAD_REQUEST);
    }
    let mut responses = Vec::with_capacity(b.channels.len());
    for channel in &b.channels {
        responses.push(match ctx.state.node.api_publish(channel, &req).await {
            Ok(o) => BroadcastReply::Result(o.position.into()),
            Err(e) => BroadcastReply::Error(e.into()),
        });
    }
    Ok(BroadcastResult { responses })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SubscribeRequest {
    user: String,
    channel: String,
    client: String,
    info: Option<Box<RawValue>>,
    b64info: String,
    data: Option<Box<RawValue>>,
    b64data: String,
    recover_since: Option<StreamPosition>,
    expire_at: i64,
    #[serde(rename = "override")]
    override_: Override,
}

async fn subscribe(ctx: &ApiContext<'_>, b: SubscribeRequest) -> Result<Empty, ErrorCode> {
    let sub = ServerSubscribe {
        channel: b.channel,
        info: payload(&b.info, &b.b64info)?,
        data: payload(&b.data, &b.b64data)?,
        recover_since: b.recover_since,
        expire_at: (b.expire_at > 0).then_some(b.expire_at),
        override_: b.override_,
    };
    ctx.state.node.api_subscribe(&Target { user: b.user, client: b.client }, sub)?;
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UnsubscribeRequest {
    user: String,
    channel: String,
    client: String,
}

async fn unsubscribe(ctx: &ApiContext<'_>, b: UnsubscribeRequest) -> Result<Empty, ErrorCode> {
    ctx.state.node.api_unsubscribe(&Target { user: b.user, client: b.client }, &b.channel)?;
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DisconnectRequest {
    user: String,
    client: String,
    whitelist: Vec<String>,
    disconnect: Option<DisconnectSpec>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DisconnectSpec {
    code: u32,
    reason: String,
}

async fn disconnect(ctx: &ApiContext<'_>, b: DisconnectRequest) -> Result<Empty, ErrorCode> {
    let reason = match b.disconnect {
        None => DISCONNECT_FORCE_NO_RECONNECT,
        Some(d) => {
            // Must be a code a WebSocket close frame can carry, outside the reserved 3000.
            if !(3001..=4999).contains(&d.code) {
                return Err(ERROR_BAD_REQUEST);
            }
            DisconnectReason { code: d.code, reason: d.reason.into() }
        }
    };
    ctx.state.node.api_disconnect(&Target { user: b.user, client: b.client }, &b.whitelist, reason);
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RefreshRequest {
    user: String,
    client: String,
    expired: bool,
    expire_at: Option<i64>,
    info: Option<Box<RawValue>>,
    b64info: String,
}

async fn refresh(ctx: &ApiContext<'_>, b: RefreshRequest) -> Result<Empty, ErrorCode> {
    let info = payload(&b.info, &b.b64info)?;
    let info = (!info.is_empty()).then_some(info);
    ctx.state.node.api_refresh(&Target { user: b.user, client: b.client }, b.expired, b.expire_at, info);
    Ok(Empty {})
}

/// The request of methods that take only a channel.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChannelRequest {
    channel: String,
}

/// A ClientInfo in answers: `conn_info`/`chan_info` as JSON when they are JSON, otherwise
/// base64 in `b64conn_info`/`b64chan_info`.
#[derive(Serialize)]
struct ClientInfoOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    b64chan_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64conn_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chan_info: Option<Value>,
    client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    conn_info: Option<Value>,
    user: &'a str,
}

impl<'a> From<&'a ClientInfo> for ClientInfoOut<'a> {
    fn from(info: &'a ClientInfo) -> Self {
        let (conn_info, b64conn_info) = payload_out(&info.conn_info);
        let (chan_info, b64chan_info) = payload_out(&info.chan_info);
        ClientInfoOut { b64chan_info, b64conn_info, chan_info, client: &info.client, conn_info, user: &info.user }
    }
}

#[derive(Serialize)]
pub struct PresenceResult {
    #[serde(serialize_with = "client_infos")]
    presence: BTreeMap<String, ClientInfo>,
}

fn client_infos<S: Serializer>(map: &BTreeMap<String, ClientInfo>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().map(|(client, info)| (client, ClientInfoOut::from(info))))
}

async fn presence(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<PresenceResult, ErrorCode> {
    Ok(PresenceResult { presence: ctx.state.node.api_presence(&b.channel).await? })
}

#[derive(Serialize)]
pub struct PresenceStatsResult {
    num_clients: u32,
    num_users: u32,
}

async fn presence_stats(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<PresenceStatsResult, ErrorCode> {
    let (num_clients, num_users) = ctx.state.node.api_presence_stats(&b.channel).await?;
    Ok(PresenceStatsResult { num_clients, num_users })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct HistoryRequest {
    channel: String,
    limit: i64,
    since: Option<StreamPosition>,
    reverse: bool,
}

#[derive(Serialize)]
struct PublicationOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<ClientInfoOut<'a>>,
    #[serde(skip_serializing_if = "is_zero")]
    offset: u64,
    #[serde(skip_serializing_if = "no_tags")]
    tags: &'a BTreeMap<String, String>,
}

impl<'a> From<&'a Publication> for PublicationOut<'a> {
    fn from(p: &'a Publication) -> Self {
        let (data, b64data) = payload_out(&p.data);
        PublicationOut {
            b64data,
            data,
            info: p.info.as_ref().map(ClientInfoOut::from),
            offset: p.offset,
            tags: &p.tags,
        }
    }
}

fn no_tags(tags: &&BTreeMap<String, String>) -> bool {
    tags.is_empty()
}

#[derive(Serialize)]
pub struct HistoryResult {
    epoch: String,
    offset: u64,
    #[serde(serialize_with = "publications")]
    publications: Vec<Publication>,
}

fn publications<S: Serializer>(list: &[Publication], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(PublicationOut::from))
}

async fn history(ctx: &ApiContext<'_>, b: HistoryRequest) -> Result<HistoryResult, ErrorCode> {
    let slice = ctx.state.node.api_history(&b.channel, b.limit, b.since, b.reverse).await?;
    Ok(HistoryResult { epoch: slice.top.epoch, offset: slice.top.offset, publications: slice.publications })
}

async fn history_remove(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<Empty, ErrorCode> {
    ctx.state.node.api_history_remove(&b.channel).await?;
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ChannelsRequest {
    pattern: String,
}

#[derive(Serialize)]
pub struct ChannelsResult {
    channels: BTreeMap<String, ChannelInfo>,
}

#[derive(Serialize)]
struct ChannelInfo {
    num_clients: usize,
}

async fn channels(ctx: &ApiContext<'_>, b: ChannelsRequest) -> Result<ChannelsResult, ErrorCode> {
    let channels = ctx.state.node.api_channels(&b.pattern)?;
    Ok(ChannelsResult {
        channels: channels.into_iter().map(|(name, num_clients)| (name, ChannelInfo { num_clients })).collect(),
    })
}

/// `info` takes no parameters (any object is accepted).
#[derive(Deserialize, Default)]
pub struct InfoRequest {}

#[derive(Serialize)]
pub struct InfoResult {
    nodes: [NodeInfo; 1],
}

#[derive(Serialize)]
struct NodeInfo {
    name: String,
    num_channels: usize,
    num_clients: usize,
    num_subs: usize,
    num_users: usize,
    uid: String,
    #[serde(skip_serializing_if = "is_zero")]
    uptime: u64,
    version: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

async fn info(ctx: &ApiContext<'_>, _: InfoRequest) -> Result<InfoResult, ErrorCode> {
    let id = ctx.state.node.identity();
    let stats = ctx.state.node.stats();
    let node = NodeInfo {
        name: id.name.clone(),
        num_channels: stats.num_channels,
        num_clients: stats.num_clients,
        num_subs: stats.num_subs,
        num_users: stats.num_users,
        uid: id.uid.clone(),
        uptime: stats.uptime_secs,
        version: id.version.clone(),
    };
    Ok(InfoResult { nodes: [node] })
}

/// Commands, each an object naming one method: `{"publish": {...}}`. Params stay borrowed raw
/// JSON until their method parses them.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BatchRequest<'a> {
    #[serde(borrow)]
    commands: Vec<BTreeMap<String, &'a RawValue>>,
    /// Accepted for compatibility; commands run in order either way.
    #[allow(dead_code)]
    parallel: bool,
}

#[derive(Serialize)]
pub struct BatchResult {
    replies: Vec<BatchReply>,
}

/// `{"<method>": answer}` or `{"error": ...}`.
#[derive(Serialize)]
#[serde(untagged)]
enum BatchReply {
    Answer(BTreeMap<&'static str, Box<RawValue>>),
    Error { error: ApiError },
}

async fn batch(ctx: &ApiContext<'_>, b: BatchRequest<'_>) -> Result<BatchResult, ErrorCode> {
    let mut replies = Vec::with_capacity(b.commands.len());
    for command in &b.commands {
        // The first key, in key order, that names a method other than batch itself.
        let found = command.iter().find_map(|(k, params)| Some((find(k).filter(|m| m.wrap_result)?, params)));
        let Some((method, params)) = found else {
            replies.push(BatchReply::Error { error: ERROR_METHOD_NOT_FOUND.into() });
            continue;
        };
        replies.push(match (method.call)(ctx, params.get().as_bytes()).await {
            Ok(Ok(answer)) => BatchReply::Answer(BTreeMap::from([(method.name, answer)])),
            Ok(Err(e)) => BatchReply::Error { error: e.into() },
            Err(BadJson(_)) => BatchReply::Error { error: ERROR_BAD_REQUEST.into() },
        });
    }
    Ok(BatchResult { replies })
}

#[cfg(test)]
mod tests {
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
            ],
        };
        assert_eq!(json(&replies), r#"{"replies":[{"publish":{}},{"error":{"code":104,"message":"not found"}}]}"#);
    }

    #[test]
    fn every_method_is_found_by_its_name_once() {
        for method in &METHODS {
            assert!(std::ptr::eq(find(method.name).unwrap(), method), "{}", method.name);
        }
        assert!(find("nope").is_none());
        assert_eq!(METHODS.iter().filter(|m| !m.wrap_result).count(), 1, "only batch answers bare");
    }
}
