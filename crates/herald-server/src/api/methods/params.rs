//! Reading a method's params: JSON parsed into the handler's request type (a blank body is
//! `{}`), answers serialized once, and a "bad request" that names the fields the request type
//! ignored, since a misspelt field is the likely cause.

use super::*;

pub(super) fn answer<T: Serialize>(result: Result<T, ApiError>) -> Result<Box<RawValue>, ApiError> {
    result.map(|value| serde_json::value::to_raw_value(&value).expect("API answers serialize"))
}

pub(super) fn is_blank(body: &[u8]) -> bool {
    body.iter().all(u8::is_ascii_whitespace)
}

pub(super) fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BadJson> {
    let body = if is_blank(body) { b"{}" as &[u8] } else { body };
    // Fast path without path tracking; on failure parse again to name the bad field.
    serde_json::from_slice(body).map_err(|first| {
        // A type error can come before a syntax error further on (`[1,2`): the syntax first.
        if let Err(e) = serde_json::from_slice::<IgnoredAny>(body) {
            return BadJson(format!("invalid JSON: {e}"));
        }
        if body.trim_ascii_start().first() != Some(&b'{') {
            return BadJson("invalid request: the body must be a JSON object".into());
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Err(e) if e.path().to_string() != "." => {
                BadJson(format!("invalid request: field `{}`: {}", e.path(), e.inner()))
            }
            Err(e) => BadJson(format!("invalid request: {}", e.inner())),
            Ok(_) => BadJson(format!("invalid request: {first}")),
        }
    })
}

/// The field names a request type accepts, as its derived `Deserialize` hands them to
/// `deserialize_struct`: read by a deserializer that stops right there.
pub(super) fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Probe(&'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(serde::de::Error::custom("fields read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut probe = Probe(&[]);
    let _ = T::deserialize(&mut probe);
    probe.0
}

/// [`fields_of`] for the type of `request`, as a function so the list is only built when an
/// error needs it.
pub(super) fn fields_of_value<'de, T: Deserialize<'de>>(_: &T) -> fn() -> &'static [&'static str] {
    fields_of::<'de, T>
}

/// Unknown fields are ignored, as Centrifugo does (SDKs send fields Herald does not have yet);
/// when a request fails, though, a misspelt field is the likely cause, so a "bad request" names
/// the fields it ignored, and says so when the body was empty.
pub(super) fn explain_unknown_fields(e: &mut ApiError, params: &[u8], known: &[&str]) {
    if e.code != ERROR_BAD_REQUEST.code {
        return;
    }
    if is_blank(params) {
        e.message.to_mut().push_str(" (the request body is empty)");
        return;
    }
    let Ok(keys) = serde_json::from_slice::<BTreeMap<String, IgnoredAny>>(params) else { return };
    let unknown: Vec<&String> = keys.keys().filter(|k| !known.contains(&k.as_str())).collect();
    if unknown.is_empty() {
        return;
    }
    // Bounded: at most a few names, each cut short; the body could hold thousands.
    const SHOWN: usize = 3;
    let names: Vec<String> = unknown.iter().take(SHOWN).map(|k| format!("`{}`", Short(k))).collect();
    let message = e.message.to_mut();
    let noun = if unknown.len() == 1 { "field" } else { "fields" };
    message.push_str(&format!("; unknown {noun} {}", names.join(", ")));
    if unknown.len() > SHOWN {
        message.push_str(&format!(" and {} more", unknown.len() - SHOWN));
    }
    let expected: Vec<String> = known.iter().map(|f| format!("`{f}`")).collect();
    message.push_str(&format!(", expected one of {}", expected.join(", ")));
}
