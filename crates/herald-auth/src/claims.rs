//! Verified claims of connection and subscription tokens.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::parse::MapOnly;

/// Per-subscription overrides of channel options (the `override` object of a token or a `subs`
/// entry). `None` keeps the namespace setting.
///
/// JSON form: `{"presence":{"value":true},"join_leave":{"value":false},...}`. As in Centrifugo,
/// an entry without a usable `value` (`{}` or `{"value":null}`) means `false`, and unknown keys
/// are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "MapOnly<OverrideWire>", into = "OverrideWire")]
pub struct Override {
    /// Overrides the namespace `presence` option.
    pub presence: Option<bool>,
    /// Overrides the namespace `join_leave` option.
    pub join_leave: Option<bool>,
    /// Overrides the namespace `force_push_join_leave` option.
    pub force_push_join_leave: Option<bool>,
    /// Overrides the namespace `force_recovery` option.
    pub force_recovery: Option<bool>,
    /// Overrides the namespace `force_positioning` option.
    pub force_positioning: Option<bool>,
}

impl Override {
    /// True when no option is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Override::default()
    }
}

/// `{"value": bool}` as written in tokens and proxy replies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct BoolValue {
    #[serde(default)]
    value: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct OverrideWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence: Option<MapOnly<BoolValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    join_leave: Option<MapOnly<BoolValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    force_push_join_leave: Option<MapOnly<BoolValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    force_recovery: Option<MapOnly<BoolValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    force_positioning: Option<MapOnly<BoolValue>>,
}

impl From<MapOnly<OverrideWire>> for Override {
    fn from(MapOnly(w): MapOnly<OverrideWire>) -> Self {
        let get = |v: Option<MapOnly<BoolValue>>| v.map(|b| b.0.value.unwrap_or(false));
        Override {
            presence: get(w.presence),
            join_leave: get(w.join_leave),
            force_push_join_leave: get(w.force_push_join_leave),
            force_recovery: get(w.force_recovery),
            force_positioning: get(w.force_positioning),
        }
    }
}

impl From<Override> for OverrideWire {
    fn from(o: Override) -> Self {
        let put = |v: Option<bool>| v.map(|b| MapOnly(BoolValue { value: Some(b) }));
        OverrideWire {
            presence: put(o.presence),
            join_leave: put(o.join_leave),
            force_push_join_leave: put(o.force_push_join_leave),
            force_recovery: put(o.force_recovery),
            force_positioning: put(o.force_positioning),
        }
    }
}

/// Options of one server-side subscription from a connection token's `subs` claim
/// (`{"info":…, "b64info":…, "data":…, "b64data":…, "override":…}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubOptions {
    /// Channel info (`ClientInfo.chan_info`): the raw JSON of `info` with `\n` bytes removed, or
    /// the decoded `b64info` when `info` is absent. Empty when neither is set.
    pub info: Bytes,
    /// Subscribe data: the raw JSON of `data` with `\n` bytes removed, or the decoded `b64data`
    /// when `data` is absent. Empty when neither is set.
    pub data: Bytes,
    /// Channel option overrides.
    pub override_: Override,
}

/// Claims of a verified connection token.
#[derive(Debug, Clone, Default)]
pub struct ConnectClaims {
    /// User id (from `sub`, or the configured `user_id_claim`). `""` is an anonymous user.
    pub user: String,
    /// The `exp` claim (Unix seconds), if present.
    pub exp: Option<i64>,
    /// The `expire_at` claim (Unix seconds), if present. `Some(0)` means the connection never
    /// expires. See [`ConnectClaims::connection_expires_at`].
    pub expire_at: Option<i64>,
    /// Connection info (`ClientInfo.conn_info`): the raw JSON of `info` with `\n` bytes removed,
    /// or the decoded `b64info` when `info` is absent. Empty when neither is set.
    pub info: Bytes,
    /// The `channels` claim: server-side subscriptions to create on connect.
    pub channels: Vec<String>,
    /// The `subs` claim: server-side subscriptions with per-channel options.
    pub subs: BTreeMap<String, SubOptions>,
    /// The `meta` claim, kept as raw JSON. Never sent to clients.
    pub meta: Option<Box<RawValue>>,
}

impl ConnectClaims {
    /// Unix seconds when the connection expires, `None` = never.
    ///
    /// `expire_at` wins when present (`0` or negative → never); otherwise `exp` (a token without
    /// `exp` never expires).
    pub fn connection_expires_at(&self) -> Option<i64> {
        expires_at(self.exp, self.expire_at)
    }
}

/// Claims of a verified subscription token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeClaims {
    /// User id (from `sub`, or the configured `user_id_claim`). Must equal the connection's user.
    pub user: String,
    /// The channel the token grants. Never empty.
    pub channel: String,
    /// The `client` claim; when non-empty it must equal the connection's client id.
    pub client: String,
    /// The `exp` claim (Unix seconds), if present.
    pub exp: Option<i64>,
    /// The `expire_at` claim (Unix seconds), if present. `Some(0)` means the subscription never
    /// expires. See [`SubscribeClaims::subscription_expires_at`].
    pub expire_at: Option<i64>,
    /// Channel info (`ClientInfo.chan_info`): the raw JSON of `info` with `\n` bytes removed, or
    /// the decoded `b64info` when `info` is absent. Empty when neither is set.
    pub info: Bytes,
    /// `SubscribeResult.data`: the raw JSON of `data` with `\n` bytes removed, or the decoded
    /// `b64data` when `data` is absent. Empty when neither is set.
    pub data: Bytes,
    /// Channel option overrides.
    pub override_: Override,
}

impl SubscribeClaims {
    /// Unix seconds when the subscription expires, `None` = never.
    ///
    /// `expire_at` wins when present (`0` or negative → never); otherwise `exp` (a token without
    /// `exp` never expires).
    pub fn subscription_expires_at(&self) -> Option<i64> {
        expires_at(self.exp, self.expire_at)
    }
}

fn expires_at(exp: Option<i64>, expire_at: Option<i64>) -> Option<i64> {
    match expire_at {
        Some(at) => (at > 0).then_some(at),
        None => exp.filter(|&e| e > 0),
    }
}
