//! Serde helpers for `bytes` payload fields, which the JSON encoding carries as raw JSON values.
//!
//! Decoding keeps the exact text of the value. Encoding validates that the bytes are one JSON
//! value (a JSON client cannot receive anything else) and drops raw `\n` bytes, which can only be
//! whitespace between tokens in valid JSON but would split a newline-delimited batch.

use std::borrow::Cow;

use bytes::Bytes;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Error text used when a payload is not valid JSON; the transport maps it to 3506.
pub const NOT_JSON: &str = "payload is not valid JSON";

pub(crate) fn serialize<S: Serializer>(data: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    let text = std::str::from_utf8(data).map_err(|_| S::Error::custom(NOT_JSON))?;
    let text = strip_newlines(text);
    let raw: &RawValue = serde_json::from_str(&text).map_err(|_| S::Error::custom(NOT_JSON))?;
    raw.serialize(s)
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    let raw = Box::<RawValue>::deserialize(d).map_err(D::Error::custom)?;
    Ok(Bytes::copy_from_slice(raw.get().as_bytes()))
}

/// Removes `\n` bytes (only ever whitespace in valid JSON).
pub fn strip_newlines(text: &str) -> Cow<'_, str> {
    if text.as_bytes().contains(&b'\n') { Cow::Owned(text.replace('\n', "")) } else { Cow::Borrowed(text) }
}

/// True when `data` is exactly one valid JSON value, so it can be sent to JSON clients.
pub fn is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).is_ok()
}

/// Turns raw JSON text into payload bytes as stored by Herald: newlines removed.
pub fn json_payload(raw: &RawValue) -> Bytes {
    match strip_newlines(raw.get()) {
        Cow::Borrowed(s) => Bytes::copy_from_slice(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s),
    }
}
