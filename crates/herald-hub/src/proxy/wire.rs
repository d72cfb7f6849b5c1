//! The JSON shapes of proxy requests and answers (Centrifugo's HTTP proxy protocol, so backends
//! written for it work unchanged), and the mapping of an answer's `error` / `disconnect` to
//! what the client is told.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use herald_auth::{Override, SubOptions};
use herald_proto::DisconnectReason;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ports::{BackendError, Refusal};

/// Fields every request carries.
#[derive(Debug, Serialize)]
pub(crate) struct Common<'a> {
    pub(crate) client: String,
    pub(crate) transport: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) encoding: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) meta: Option<&'a RawValue>,
}

/// A payload as `data` (raw JSON) or `b64data`.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Payload<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b64data: Option<String>,
}

/// `data` when the bytes are JSON and the encoding is `json`, else `b64data`.
pub(crate) fn payload(bytes: &[u8], binary: bool) -> Payload<'_> {
    if bytes.is_empty() {
        return Payload::default();
    }
    if !binary && let Ok(raw) = serde_json::from_slice::<&RawValue>(bytes) {
        return Payload { data: Some(raw), b64data: None };
    }
    Payload { data: None, b64data: Some(B64.encode(bytes)) }
}

/// Raw JSON (meta) kept as bytes, as a `RawValue` again; `None` when empty or not JSON.
pub(crate) fn raw(bytes: &[u8]) -> Option<&RawValue> {
    if bytes.is_empty() { None } else { serde_json::from_slice(bytes).ok() }
}

#[derive(Debug, Serialize)]
pub(crate) struct ConnectRequest<'a> {
    #[serde(flatten)]
    pub(crate) common: Common<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) version: &'a str,
    #[serde(flatten)]
    pub(crate) payload: Payload<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) channels: Vec<&'a str>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChannelRequest<'a> {
    #[serde(flatten)]
    pub(crate) common: Common<'a>,
    pub(crate) channel: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) token: &'a str,
    #[serde(flatten)]
    pub(crate) payload: Payload<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RpcRequest<'a> {
    #[serde(flatten)]
    pub(crate) common: Common<'a>,
    pub(crate) method: &'a str,
    #[serde(flatten)]
    pub(crate) payload: Payload<'a>,
}

/// `info`/`b64info` or `data`/`b64data` of an answer as bytes: raw JSON without `\n` bytes (the
/// JSON protocol separates replies by newlines), or the decoded base64.
pub(crate) fn bytes_of(json: Option<&RawValue>, b64: Option<&str>) -> Result<Bytes, String> {
    if let Some(raw) = json {
        let text = raw.get();
        if text == "null" {
            return Ok(Bytes::new());
        }
        return Ok(Bytes::from(text.bytes().filter(|b| *b != b'\n').collect::<Vec<u8>>()));
    }
    match b64 {
        Some(s) if !s.is_empty() => B64.decode(s).map(Bytes::from).map_err(|e| format!("invalid base64: {e}")),
        _ => Ok(Bytes::new()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubWire {
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: Option<String>,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: Option<String>,
    #[serde(rename = "override")]
    pub(crate) override_: Option<Override>,
}

impl SubWire {
    pub(crate) fn options(&self) -> Result<SubOptions, String> {
        Ok(SubOptions {
            info: bytes_of(self.info.as_deref(), self.b64info.as_deref())?,
            data: bytes_of(self.data.as_deref(), self.b64data.as_deref())?,
            override_: self.override_.unwrap_or_default(),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConnectResult {
    pub(crate) user: String,
    pub(crate) expire_at: i64,
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: Option<String>,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: Option<String>,
    pub(crate) channels: Vec<String>,
    pub(crate) subs: BTreeMap<String, SubWire>,
    pub(crate) meta: Option<Box<RawValue>>,
}

/// The answer of the refresh and sub_refresh proxies.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RefreshResult {
    pub(crate) expired: bool,
    pub(crate) expire_at: i64,
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: Option<String>,
    pub(crate) meta: Option<Box<RawValue>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SubscribeResult {
    pub(crate) info: Option<Box<RawValue>>,
    pub(crate) b64info: Option<String>,
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: Option<String>,
    #[serde(rename = "override")]
    pub(crate) override_: Option<Override>,
    pub(crate) expire_at: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PublishResult {
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: Option<String>,
    pub(crate) skip_history: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct RpcResult {
    pub(crate) data: Option<Box<RawValue>>,
    pub(crate) b64data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorWire {
    code: u32,
    #[serde(default)]
    message: String,
    #[serde(default)]
    temporary: bool,
}

#[derive(Debug, Deserialize)]
struct DisconnectWire {
    code: u32,
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(bound = "R: Deserialize<'de> + Default")]
struct Answer<R> {
    #[serde(default)]
    result: Option<R>,
    #[serde(default)]
    error: Option<ErrorWire>,
    #[serde(default)]
    disconnect: Option<DisconnectWire>,
}

/// Application error codes a backend may answer with.
pub const APP_ERROR_CODES: std::ops::RangeInclusive<u32> = 400..=1999;
/// Disconnect codes a backend may answer with (4000–4499 reconnect, 4500–4999 do not).
pub const APP_DISCONNECT_CODES: std::ops::RangeInclusive<u32> = 4000..=4999;
/// A disconnect reason must fit a WebSocket close frame.
pub const MAX_REASON_BYTES: usize = 32;

/// What a backend decided.
#[derive(Debug)]
pub(crate) enum Decision<R> {
    Allow(R),
    Refuse(Refusal),
}

/// Parses an answer body. `Err` names what is wrong with it (not JSON, a code out of range).
pub(crate) fn decide<R: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<Decision<R>, String> {
    let answer: Answer<R> = serde_json::from_slice(body).map_err(|e| format!("invalid answer: {e}"))?;
    if let Some(d) = answer.disconnect {
        if !APP_DISCONNECT_CODES.contains(&d.code) {
            return Err(format!("disconnect code {} is outside 4000-4999", d.code));
        }
        let mut reason = d.reason;
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        return Ok(Decision::Refuse(Refusal::Disconnect(DisconnectReason { code: d.code, reason: reason.into() })));
    }
    if let Some(e) = answer.error {
        if !APP_ERROR_CODES.contains(&e.code) {
            return Err(format!("error code {} is outside 400-1999", e.code));
        }
        let error = BackendError { code: e.code, message: e.message, temporary: e.temporary };
        return Ok(Decision::Refuse(Refusal::Backend(error)));
    }
    Ok(Decision::Allow(answer.result.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_decisions() {
        let allow = decide::<RpcResult>(br#"{"result":{"data":{"a":1}}}"#).unwrap();
        let Decision::Allow(r) = allow else { panic!("allowed") };
        assert_eq!(bytes_of(r.data.as_deref(), None).unwrap().as_ref(), br#"{"a":1}"#);
        let Decision::Refuse(Refusal::Backend(e)) =
            decide::<RpcResult>(br#"{"error":{"code":1001,"message":"nope","temporary":true}}"#).unwrap()
        else {
            panic!("an application error")
        };
        assert_eq!((e.code, e.message.as_str(), e.temporary), (1001, "nope", true));
        let long = format!(r#"{{"disconnect":{{"code":4501,"reason":"{}"}}}}"#, "é".repeat(40));
        let Decision::Refuse(Refusal::Disconnect(d)) = decide::<RpcResult>(long.as_bytes()).unwrap() else {
            panic!("a disconnect")
        };
        assert_eq!(d.code, 4501);
        assert_eq!(d.reason.len(), 32, "cut at a character boundary within 32 bytes");
        assert!(decide::<RpcResult>(br#"{"error":{"code":100}}"#).unwrap_err().contains("400-1999"));
        assert!(decide::<RpcResult>(br#"{"disconnect":{"code":3000}}"#).unwrap_err().contains("4000-4999"));
        assert!(decide::<RpcResult>(b"not json").is_err());
        assert!(matches!(decide::<RpcResult>(b"{}").unwrap(), Decision::Allow(_)), "no result: allowed, empty");
    }

    #[test]
    fn payloads_are_json_or_base64() {
        let json = serde_json::to_string(&payload(br#"{"x":1}"#, false)).unwrap();
        assert_eq!(json, r#"{"data":{"x":1}}"#);
        let bin = serde_json::to_string(&payload(b"\x00\x01", false)).unwrap();
        assert_eq!(bin, r#"{"b64data":"AAE="}"#);
        let forced = serde_json::to_string(&payload(b"{}", true)).unwrap();
        assert_eq!(forced, r#"{"b64data":"e30="}"#);
        assert_eq!(bytes_of(None, Some("AAE=")).unwrap().as_ref(), b"\x00\x01");
        assert!(bytes_of(None, Some("!!")).is_err());
        let raw: Box<RawValue> = serde_json::from_str("{\"a\":\n1}").unwrap();
        assert_eq!(bytes_of(Some(&raw), None).unwrap().as_ref(), b"{\"a\":1}");
    }
}
