//! Client protocol v2 message types (Centrifugo-compatible).
//!
//! Each type is both a prost message (field numbers from the protocol reference) and a serde type
//! for the JSON encoding. The JSON encoding is *not* the canonical proto3 mapping: keys are the
//! snake_case proto names, 64-bit integers are numbers, zero values are omitted (except the few
//! fields the reference lists as always present) and `bytes` payload fields carry raw JSON.
//!
//! Written from the field table in `shared/reference/client-protocol.md`; fields of the
//! experimental 2026 extensions (map subscriptions, shared poll, dictionaries) are left out, and
//! prost skips them when a client sends them.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::raw;

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A client → server message.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Command {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    #[prost(message, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectRequest>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeRequest>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeRequest>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishRequest>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceRequest>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsRequest>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRequest>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingRequest>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<SendRequest>,
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcRequest>,
    #[prost(message, optional, tag = "14")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshRequest>,
    #[prost(message, optional, tag = "15")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshRequest>,
}

/// The request a [`Command`] carries, by reference. The server takes the first present field in
/// field-number order, as the Go server does (the schema uses no `oneof`).
#[derive(Debug, Clone, Copy)]
pub enum Method<'a> {
    Connect(&'a ConnectRequest),
    Subscribe(&'a SubscribeRequest),
    Unsubscribe(&'a UnsubscribeRequest),
    Publish(&'a PublishRequest),
    Presence(&'a PresenceRequest),
    PresenceStats(&'a PresenceStatsRequest),
    History(&'a HistoryRequest),
    Ping(&'a PingRequest),
    Send(&'a SendRequest),
    Rpc(&'a RpcRequest),
    Refresh(&'a RefreshRequest),
    SubRefresh(&'a SubRefreshRequest),
}

impl Method<'_> {
    /// Name used in metrics labels and logs (matches the JSON key).
    pub fn name(&self) -> &'static str {
        match self {
            Method::Connect(_) => "connect",
            Method::Subscribe(_) => "subscribe",
            Method::Unsubscribe(_) => "unsubscribe",
            Method::Publish(_) => "publish",
            Method::Presence(_) => "presence",
            Method::PresenceStats(_) => "presence_stats",
            Method::History(_) => "history",
            Method::Ping(_) => "ping",
            Method::Send(_) => "send",
            Method::Rpc(_) => "rpc",
            Method::Refresh(_) => "refresh",
            Method::SubRefresh(_) => "sub_refresh",
        }
    }
}

impl Command {
    /// The request carried by this command, if any.
    pub fn method(&self) -> Option<Method<'_>> {
        if let Some(r) = &self.connect {
            return Some(Method::Connect(r));
        }
        if let Some(r) = &self.subscribe {
            return Some(Method::Subscribe(r));
        }
        if let Some(r) = &self.unsubscribe {
            return Some(Method::Unsubscribe(r));
        }
        if let Some(r) = &self.publish {
            return Some(Method::Publish(r));
        }
        if let Some(r) = &self.presence {
            return Some(Method::Presence(r));
        }
        if let Some(r) = &self.presence_stats {
            return Some(Method::PresenceStats(r));
        }
        if let Some(r) = &self.history {
            return Some(Method::History(r));
        }
        if let Some(r) = &self.ping {
            return Some(Method::Ping(r));
        }
        if let Some(r) = &self.send {
            return Some(Method::Send(r));
        }
        if let Some(r) = &self.rpc {
            return Some(Method::Rpc(r));
        }
        if let Some(r) = &self.refresh {
            return Some(Method::Refresh(r));
        }
        if let Some(r) = &self.sub_refresh {
            return Some(Method::SubRefresh(r));
        }
        None
    }

    /// A command with id 0 and no `send` is a pong (`{}` in JSON, `0x00` in Protobuf).
    pub fn is_pong(&self) -> bool {
        self.id == 0 && self.send.is_none()
    }
}

/// A server → client message: a reply to a command (id > 0), a push (id 0, `push` set) or a
/// ping (empty).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Reply {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
    #[prost(message, optional, tag = "2")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Error>,
    #[prost(message, optional, tag = "4")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<Push>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectResult>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<SubscribeResult>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<UnsubscribeResult>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishResult>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceResult>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_stats: Option<PresenceStatsResult>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryResult>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping: Option<PingResult>,
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc: Option<RpcResult>,
    #[prost(message, optional, tag = "14")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<RefreshResult>,
    #[prost(message, optional, tag = "15")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_refresh: Option<SubRefreshResult>,
}

impl Reply {
    /// An error reply to command `id`.
    pub fn error(id: u32, error: Error) -> Reply {
        Reply { id, error: Some(error), ..Default::default() }
    }

    /// A push (id 0).
    pub fn push(push: Push) -> Reply {
        Reply { push: Some(push), ..Default::default() }
    }
}

/// An error in a reply.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Error {
    #[prost(uint32, tag = "1")]
    #[serde(default)]
    pub code: u32,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub message: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub temporary: bool,
}

/// An asynchronous message.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Push {
    #[prost(int64, tag = "1")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub id: i64,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(message, optional, tag = "4")]
    #[serde(default, rename = "pub", skip_serializing_if = "Option::is_none")]
    pub publication: Option<Publication>,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
    #[prost(message, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave: Option<Leave>,
    #[prost(message, optional, tag = "7")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<Unsubscribe>,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[prost(message, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<Connect>,
    #[prost(message, optional, tag = "11")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect: Option<Disconnect>,
    #[prost(message, optional, tag = "12")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

/// Who published or joined: the connection's user and client id plus optional info.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ClientInfo {
    #[prost(string, tag = "1")]
    #[serde(default)]
    pub user: String,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub client: String,
    #[prost(bytes = "bytes", tag = "3")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub conn_info: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub chan_info: Bytes,
}

/// A message in a channel stream.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Publication {
    #[prost(bytes = "bytes", tag = "4")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(message, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
    #[prost(uint64, tag = "6")]
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[prost(btree_map = "string, string", tag = "7")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub delta: bool,
    #[prost(int64, tag = "9")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub time: i64,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(string, tag = "14")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Join {
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Leave {
    #[prost(message, optional, tag = "1")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

/// Unsubscribe push. Code < 2500: unsubscribed for good; ≥ 2500: the client resubscribes.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Unsubscribe {
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Server-side subscription push.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Subscribe {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[prost(uint64, tag = "5")]
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[prost(bool, tag = "6")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[prost(bytes = "bytes", tag = "7")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}

/// Message push (server-to-client `send`).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Message {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}

/// Connect push for unidirectional transports. Its field numbers differ from [`ConnectResult`].
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct Connect {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[prost(bytes = "bytes", tag = "3")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(btree_map = "string, message", tag = "4")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    #[prost(bool, tag = "5")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "6")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[prost(uint32, tag = "7")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub pong: bool,
    #[prost(string, tag = "9")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[prost(int64, tag = "11")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub time: i64,
}

/// Disconnect push (used by non-WebSocket transports; WebSocket uses a close frame).
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Disconnect {
    #[prost(uint32, tag = "1")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub reconnect: bool,
}

/// The body of a Protobuf `POST /emulation` request: commands for the SSE or HTTP-streaming
/// session `session` held by node `node`. (The JSON body has the same names, with `data` as a
/// string holding the JSON command lines.)
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EmulationRequest {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(string, tag = "2")]
    pub session: String,
    /// Varint-delimited commands.
    #[prost(bytes = "bytes", tag = "3")]
    pub data: Bytes,
}

/// Refresh push for unidirectional transports.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Refresh {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ConnectRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[prost(bytes = "bytes", tag = "2")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(btree_map = "string, message", tag = "3")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeRequest>,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[prost(btree_map = "string, string", tag = "6")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[prost(int64, tag = "7")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub flag: i64,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct ConnectResult {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[prost(bytes = "bytes", tag = "5")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(btree_map = "string, message", tag = "6")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subs: BTreeMap<String, SubscribeResult>,
    #[prost(uint32, tag = "7")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ping: u32,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub pong: bool,
    #[prost(string, tag = "9")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    #[prost(string, tag = "10")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[prost(int64, tag = "11")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub time: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct RefreshRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct RefreshResult {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "4")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

/// Server-side tags filter (2025-10). Herald parses it only to refuse it with 107.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct FilterNode {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub op: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    #[prost(string, tag = "3")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cmp: String,
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub val: String,
    #[prost(string, repeated, tag = "5")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vals: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<FilterNode>,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SubscribeRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub recover: bool,
    #[prost(string, tag = "6")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[prost(uint64, tag = "7")]
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[prost(bytes = "bytes", tag = "8")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(bool, tag = "9")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[prost(bool, tag = "10")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[prost(bool, tag = "11")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub join_leave: bool,
    #[prost(string, tag = "12")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub delta: String,
    #[prost(message, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tf: Option<FilterNode>,
    #[prost(int64, tag = "14")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub flag: i64,
    #[prost(int32, tag = "15")]
    #[serde(default, rename = "type", skip_serializing_if = "is_zero_i32")]
    pub sub_type: i32,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SubscribeResult {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
    #[prost(bool, tag = "3")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub recoverable: bool,
    #[prost(string, tag = "6")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub epoch: String,
    #[prost(message, repeated, tag = "7")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publications: Vec<Publication>,
    #[prost(bool, tag = "8")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub recovered: bool,
    #[prost(uint64, tag = "9")]
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub offset: u64,
    #[prost(bool, tag = "10")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub positioned: bool,
    #[prost(bytes = "bytes", tag = "11")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(bool, tag = "12")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub was_recovering: bool,
    #[prost(bool, tag = "13")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub delta: bool,
    #[prost(int64, tag = "14")]
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub id: i64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct SubRefreshRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct SubRefreshResult {
    #[prost(bool, tag = "1")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub expires: bool,
    #[prost(uint32, tag = "2")]
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub ttl: u32,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct UnsubscribeRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct UnsubscribeResult {}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct PublishRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(bytes = "bytes", tag = "2")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PublishResult {}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PresenceRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct PresenceResult {
    #[prost(btree_map = "string, message", tag = "1")]
    #[serde(default)]
    pub presence: BTreeMap<String, ClientInfo>,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PresenceStatsRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PresenceStatsResult {
    #[prost(uint32, tag = "1")]
    #[serde(default)]
    pub num_clients: u32,
    #[prost(uint32, tag = "2")]
    #[serde(default)]
    pub num_users: u32,
}

/// A position in a channel stream.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    #[serde(default)]
    pub offset: u64,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub epoch: String,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct HistoryRequest {
    #[prost(string, tag = "1")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub channel: String,
    #[prost(int32, tag = "7")]
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub limit: i32,
    #[prost(message, optional, tag = "8")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
    #[prost(bool, tag = "9")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub reverse: bool,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct HistoryResult {
    #[prost(message, repeated, tag = "1")]
    #[serde(default)]
    pub publications: Vec<Publication>,
    #[prost(string, tag = "2")]
    #[serde(default)]
    pub epoch: String,
    #[prost(uint64, tag = "3")]
    #[serde(default)]
    pub offset: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PingRequest {}

#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct PingResult {}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct RpcRequest {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    #[prost(string, tag = "2")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct RpcResult {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}

#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
pub struct SendRequest {
    #[prost(bytes = "bytes", tag = "1")]
    #[serde(default, with = "raw", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
}
