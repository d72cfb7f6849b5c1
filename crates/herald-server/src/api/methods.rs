//! The server API methods: typed request and answer types, one handler per method, and
//! [`METHODS`], the one table of method names that the HTTP API, `batch` and the admin console
//! dispatch through (Herald's operator methods are in `ops`; `batch` and its runner in `batch`).
//!
//! Answers are typed structs serialized once. Their fields are declared in alphabetical order:
//! the answers used to be built as `serde_json::Value` objects, whose keys serialize sorted,
//! and the bytes on the wire stay the same.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Display};
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
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::ops::*;
use crate::state::AppState;
pub use batch::parse_batch_commands;
use batch::*;
use params::*;

/// What a method handler may know about the request besides its body.
pub struct ApiContext<'a> {
    pub state: &'a AppState,
    /// The address the request came from (for edge policies).
    pub peer: SocketAddr,
}

/// The body is not valid JSON for the method (HTTP 400); the message says what is wrong.
pub struct BadJson(pub String);

/// A handler's answer, serialized, or the API error; `Err(BadJson)` when the params did not
/// parse.
pub type Outcome = Result<Result<Box<RawValue>, ApiError>, BadJson>;

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
    /// Only the first step of `call`: parses the params into the request type (for
    /// [`parse_request`] and the fuzz targets).
    pub parse: fn(&[u8]) -> Result<(), BadJson>,
}

/// A table entry: parses the params into the handler's request type `$req` and serializes its
/// answer. `call` and `parse` share the one parse step, so checking `parse` checks `call`'s.
macro_rules! method {
    ($name:literal, $handler:ident, $req:ty) => {
        method!($name, $handler, $req, true)
    };
    ($name:literal, $handler:ident, $req:ty, $wrap:expr) => {
        ApiMethod {
            name: $name,
            wrap_result: $wrap,
            parse: |params| parse::<$req>(params).map(drop),
            call: |ctx, params| {
                Box::pin(async move {
                    let request = parse::<$req>(params)?;
                    let known = fields_of_value(&request);
                    let mut answer = answer($handler(ctx, request).await);
                    if let Err(e) = &mut answer {
                        explain_unknown_fields(e, params, known());
                    }
                    Ok(answer)
                })
            },
        }
    };
}

/// Every API method.
pub static METHODS: [ApiMethod; 17] = [
    method!("publish", publish, PublishRequest),
    method!("broadcast", broadcast, BroadcastRequest),
    method!("subscribe", subscribe, SubscribeRequest),
    method!("unsubscribe", unsubscribe, UnsubscribeRequest),
    method!("disconnect", disconnect, DisconnectRequest),
    method!("refresh", refresh, RefreshRequest),
    method!("presence", presence, ChannelRequest),
    method!("presence_stats", presence_stats, ChannelRequest),
    method!("history", history, HistoryRequest),
    method!("history_remove", history_remove, ChannelRequest),
    method!("channels", channels, ChannelsRequest),
    method!("info", info, InfoRequest),
    method!("trace_user", trace_user, TraceUserRequest),
    method!("trace_stop", trace_stop, TraceStopRequest),
    method!("connections", connections, ConnectionsRequest),
    method!("reload", reload, ReloadRequest),
    method!("batch", batch, BatchRequest<'_>, false),
];

/// The method named `name`.
pub fn find(name: &str) -> Option<&'static ApiMethod> {
    METHODS.iter().find(|m| m.name == name)
}

/// Parses `body` as the params of `method` exactly as a request to `/api/<method>` would,
/// without running it: the message of a 400 (or of a 404 for an unknown method) on failure.
/// For `batch` only the command list; [`parse_batch_commands`] goes into the commands.
pub fn parse_request(method: &str, body: &[u8]) -> Result<(), String> {
    let method = find(method).ok_or_else(|| format!("unknown API method `{}`", Short(method)))?;
    (method.parse)(body).map_err(|BadJson(message)| message)
}

/// A name from a request, cut to a length an error message can carry.
pub(crate) struct Short<'a>(pub(crate) &'a str);

impl Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 64;
        match self.0.char_indices().nth(MAX) {
            Some((end, _)) => write!(f, "{}…", &self.0[..end]),
            None => f.write_str(self.0),
        }
    }
}

/// An API error as answers carry it: `{"code", "message"}`. The message starts with the code's
/// own text, as Centrifugo's does, and may say after a colon what was wrong
/// ("bad request: missing field `channel`").
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u32,
    pub message: Cow<'static, str>,
}

impl From<ErrorCode> for ApiError {
    fn from(e: ErrorCode) -> Self {
        ApiError { code: e.code, message: Cow::Borrowed(super::api_message(e)) }
    }
}

impl ApiError {
    /// `e` with `detail` after its message.
    fn with(e: ErrorCode, detail: impl Display) -> Self {
        ApiError { code: e.code, message: Cow::Owned(format!("{}: {detail}", super::api_message(e))) }
    }
}

/// A 107 "bad request" that says what is wrong.
pub(super) fn bad_request(detail: impl Display) -> ApiError {
    ApiError::with(ERROR_BAD_REQUEST, detail)
}

/// A required field that is absent or empty.
pub(super) fn missing(field: &str) -> ApiError {
    bad_request(format_args!("missing field `{field}`"))
}

/// Requires a non-empty `channel`-like field.
fn require(value: &str, field: &str) -> Result<(), ApiError> {
    if value.is_empty() { Err(missing(field)) } else { Ok(()) }
}

/// Requires `channel` (named `field` in the request) and applies the channel rules clients get,
/// answering what is wrong: e.g. 107 "bad request: channel contains a NUL byte" or 102 "unknown
/// channel: channel namespace is not configured".
fn check_channel(ctx: &ApiContext<'_>, channel: &str, field: &str) -> Result<(), ApiError> {
    require(channel, field)?;
    ctx.state.node.api_check(channel).map(|_| ()).map_err(|e| ApiError::with(e.code(), e))
}

/// The answer of methods that answer nothing: `{}`.
#[derive(Serialize)]
pub struct Empty {}

/// Payload from `data` (raw JSON) or its base64 form (`b64_field`, named in the error).
fn payload(data: &Option<Box<RawValue>>, b64data: &str, b64_field: &str) -> Result<Bytes, ApiError> {
    if let Some(raw) = data {
        return Ok(raw::json_payload(raw));
    }
    if !b64data.is_empty() {
        return base64::engine::general_purpose::STANDARD
            .decode(b64data)
            .map(Bytes::from)
            .map_err(|e| bad_request(format_args!("`{b64_field}` is not valid base64: {e}")));
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

/// The publish options shared by `publish` and `broadcast` bodies; `data` (or `b64data`) is
/// required.
fn publish_request(
    data: &Option<Box<RawValue>>,
    b64data: &str,
    skip_history: bool,
    tags: BTreeMap<String, String>,
    idempotency_key: String,
    exclude_client: String,
) -> Result<ApiPublish, ApiError> {
    let data = payload(data, b64data, "b64data")?;
    if data.is_empty() {
        return Err(bad_request("missing field `data` (or `b64data`)"));
    }
    if !exclude_client.is_empty() && uuid::Uuid::parse_str(&exclude_client).is_err() {
        return Err(bad_request("`exclude_client` is not a client ID (a UUID)"));
    }
    Ok(ApiPublish { data, skip_history, tags, idempotency_key, exclude_client })
}

async fn publish(ctx: &ApiContext<'_>, b: PublishRequest) -> Result<PublishResult, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
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

async fn broadcast(ctx: &ApiContext<'_>, b: BroadcastRequest) -> Result<BroadcastResult, ApiError> {
    if b.channels.is_empty() {
        return Err(missing("channels"));
    }
    let req = publish_request(&b.data, &b.b64data, b.skip_history, b.tags, b.idempotency_key, b.exclude_client)?;
    let mut responses = Vec::with_capacity(b.channels.len());
    for (i, channel) in b.channels.iter().enumerate() {
        if i % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
        let checked = match ctx.state.node.api_check(channel) {
            _ if channel.is_empty() => Err(bad_request("empty channel name")),
            Err(e) => Err(ApiError::with(e.code(), e)),
            Ok(_) => Ok(()),
        };
        if let Err(e) = checked {
            responses.push(BroadcastReply::Error(e));
            continue;
        }
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

async fn subscribe(ctx: &ApiContext<'_>, b: SubscribeRequest) -> Result<Empty, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
    let sub = ServerSubscribe {
        channel: b.channel,
        info: payload(&b.info, &b.b64info, "b64info")?,
        data: payload(&b.data, &b.b64data, "b64data")?,
        recover_since: b.recover_since,
        expire_at: (b.expire_at > 0).then_some(b.expire_at),
        override_: b.override_,
    };
    ctx.state.node.api_subscribe(&Target { user: b.user, client: b.client }, sub).await?;
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct UnsubscribeRequest {
    user: String,
    channel: String,
    client: String,
}

async fn unsubscribe(ctx: &ApiContext<'_>, b: UnsubscribeRequest) -> Result<Empty, ApiError> {
    // An empty channel means every channel of the user.
    if !b.channel.is_empty() {
        check_channel(ctx, &b.channel, "channel")?;
    }
    ctx.state.node.api_unsubscribe(&Target { user: b.user, client: b.client }, &b.channel).await?;
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

async fn disconnect(ctx: &ApiContext<'_>, b: DisconnectRequest) -> Result<Empty, ApiError> {
    let reason = match b.disconnect {
        None => DISCONNECT_FORCE_NO_RECONNECT,
        Some(d) => {
            // Must be a code a WebSocket close frame can carry, outside the reserved 3000.
            if !(3001..=4999).contains(&d.code) {
                return Err(bad_request(format_args!("`disconnect.code` {} is not between 3001 and 4999", d.code)));
            }
            DisconnectReason { code: d.code, reason: d.reason.into() }
        }
    };
    ctx.state.node.api_disconnect(&Target { user: b.user, client: b.client }, &b.whitelist, reason).await?;
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

async fn refresh(ctx: &ApiContext<'_>, b: RefreshRequest) -> Result<Empty, ApiError> {
    let info = payload(&b.info, &b.b64info, "b64info")?;
    let info = (!info.is_empty()).then_some(info);
    ctx.state.node.api_refresh(&Target { user: b.user, client: b.client }, b.expired, b.expire_at, info).await?;
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

async fn presence(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<PresenceResult, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
    Ok(PresenceResult { presence: ctx.state.node.api_presence(&b.channel).await? })
}

#[derive(Serialize)]
pub struct PresenceStatsResult {
    num_clients: u32,
    num_users: u32,
}

async fn presence_stats(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<PresenceStatsResult, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
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

async fn history(ctx: &ApiContext<'_>, b: HistoryRequest) -> Result<HistoryResult, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
    if b.reverse && b.since.as_ref().is_some_and(|s| s.offset == 0) {
        return Err(bad_request("`since.offset` must be above 0 with `reverse`"));
    }
    let slice = ctx.state.node.api_history(&b.channel, b.limit, b.since, b.reverse).await?;
    Ok(HistoryResult { epoch: slice.top.epoch, offset: slice.top.offset, publications: slice.publications })
}

async fn history_remove(ctx: &ApiContext<'_>, b: ChannelRequest) -> Result<Empty, ApiError> {
    check_channel(ctx, &b.channel, "channel")?;
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
    /// Herald's own: more channels matched than `node.survey_max_channels` (the first by name
    /// are listed).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    /// Herald's own: live nodes that did not answer within `node.survey_timeout` (their
    /// subscribers are not counted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_nodes: Vec<String>,
}

#[derive(Serialize)]
struct ChannelInfo {
    num_clients: usize,
}

/// Channels with subscribers on every node of the cluster, counts summed (a survey,
/// `herald_hub::survey`).
async fn channels(ctx: &ApiContext<'_>, b: ChannelsRequest) -> Result<ChannelsResult, ApiError> {
    let node = &ctx.state.config.node;
    // The pattern is the only thing that can be wrong here.
    let merged = ctx
        .state
        .node
        .survey_channels(&b.pattern, node.survey_max_channels, tokio::time::sleep(node.survey_timeout))
        .await
        .map_err(|e| ApiError::with(e, format_args!("`pattern` `{}` is not a valid pattern", Short(&b.pattern))))?;
    Ok(ChannelsResult {
        channels: merged.channels.into_iter().map(|(name, num_clients)| (name, ChannelInfo { num_clients })).collect(),
        truncated: merged.truncated,
        missing_nodes: merged.missing,
    })
}

/// `info` takes no parameters (any object is accepted).
#[derive(Deserialize, Default)]
pub struct InfoRequest {}

#[derive(Serialize)]
pub struct InfoResult {
    nodes: Vec<NodeInfo>,
}

#[derive(Serialize)]
struct NodeInfo {
    name: String,
    num_channels: usize,
    num_clients: usize,
    /// Herald's own fields: publications fanned out here and pushes queued since start, and
    /// resident memory in bytes (absent when unknown).
    num_msgs_in: u64,
    num_msgs_out: u64,
    num_subs: usize,
    num_users: usize,
    #[serde(skip_serializing_if = "is_zero")]
    rss: u64,
    uid: String,
    #[serde(skip_serializing_if = "is_zero")]
    uptime: u64,
    version: String,
    /// Herald's own field: the active configuration's version (1 at start, +1 per applied
    /// reload); absent when the server cannot reload.
    #[serde(skip_serializing_if = "is_zero")]
    config_version: u64,
    /// Herald's own field: publications handed to the node's subscribers per second.
    publications_per_second: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

async fn info(ctx: &ApiContext<'_>, _: InfoRequest) -> Result<InfoResult, ApiError> {
    // Every live node of the cluster (only this one outside a cluster). The configuration
    // version is known for this node only.
    let own = ctx.state.node.identity().uid.clone();
    let config_version = ctx.state.reloader.as_ref().map_or(0, |r| r.version());
    let nodes = ctx
        .state
        .node
        .nodes()
        .into_iter()
        .map(|n| NodeInfo {
            name: n.name,
            num_channels: n.num_channels,
            num_clients: n.num_clients,
            num_subs: n.num_subs,
            num_users: n.num_users,
            config_version: if n.uid == own { config_version } else { 0 },
            uid: n.uid,
            uptime: n.uptime,
            version: n.version,
            publications_per_second: n.publications_per_second,
            num_msgs_in: n.num_msgs_in,
            num_msgs_out: n.num_msgs_out,
            rss: n.rss,
        })
        .collect();
    Ok(InfoResult { nodes })
}

/// Long API work (`batch`, `broadcast`) gives the worker thread back to its other tasks after
/// this many items: a worker's runtime is single-threaded, so a long loop without an await
/// point would stall every WebSocket client and request on that worker until it ends.
const YIELD_EVERY: usize = 16;

mod batch;
mod params;
#[cfg(test)]
mod tests;
