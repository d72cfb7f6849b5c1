//! Single-pass decoding of JWT claims into borrowed, type-checked parts.
//!
//! The claims object is read once; strings and raw JSON values borrow from the decoded payload
//! where possible. Claims that the token kind does not use are skipped without a type check, as
//! Centrifugo's claim structs do; `null` counts as an absent claim.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::claims::Override;

/// Which token is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Connect,
    Subscribe,
}

/// The JWT header fields we need.
#[derive(Deserialize)]
pub(crate) struct Header<'a> {
    #[serde(borrow)]
    pub(crate) alg: Cow<'a, str>,
}

/// A string that borrows from the input unless it contains escapes.
pub(crate) struct Str<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserializes `T` only from a JSON object. Derived struct impls also accept arrays (fields in
/// order), which Centrifugo's Go structs reject. Serializes as `T`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MapOnly<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(PhantomData)).map(MapOnly)
    }
}

impl<T: Serialize> Serialize for MapOnly<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A JWT NumericDate (`exp`, `nbf`, `iat`): any JSON number, truncated to whole seconds.
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(NumericDate(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(NumericDate(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                // `as` saturates; JSON has no NaN or infinities.
                Ok(NumericDate(v.trunc() as i64))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads `aud` (a string or an array of strings) and reports whether it contains the wanted
/// audience.
struct AudSeed<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for AudSeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AudSeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(s) = seq.next_element::<Str<'de>>()? {
            found |= s.0 == self.0;
        }
        Ok(found)
    }
}

/// One entry of a connection token's `subs` claim, before base64 decoding.
#[derive(Default, Deserialize)]
pub(crate) struct RawSubOptions<'a> {
    #[serde(borrow, default)]
    pub(crate) info: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) b64info: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub(crate) b64data: Option<Cow<'a, str>>,
    #[serde(default, rename = "override")]
    pub(crate) override_: Option<Override>,
}

/// Type-checked claims, borrowing from the decoded payload.
#[derive(Default)]
pub(crate) struct RawClaims<'de> {
    pub(crate) user: Option<String>,
    pub(crate) exp: Option<i64>,
    pub(crate) nbf: Option<i64>,
    /// Whether `aud` contains the configured audience (false when `aud` is absent).
    pub(crate) aud_match: bool,
    pub(crate) iss: Option<Cow<'de, str>>,
    pub(crate) info: Option<&'de RawValue>,
    pub(crate) b64info: Option<Cow<'de, str>>,
    pub(crate) channel: Option<String>,
    pub(crate) expire_at: Option<i64>,
    // Connection tokens only.
    pub(crate) channels: Vec<String>,
    pub(crate) subs: BTreeMap<String, Option<MapOnly<RawSubOptions<'de>>>>,
    pub(crate) meta: Option<Box<RawValue>>,
    // Subscription tokens only.
    pub(crate) client: Option<String>,
    pub(crate) data: Option<&'de RawValue>,
    pub(crate) b64data: Option<Cow<'de, str>>,
    pub(crate) override_: Option<Override>,
}

/// Reads a claims object for one token kind.
pub(crate) struct ClaimsSeed<'c> {
    pub(crate) kind: Kind,
    /// Name of the claim holding the user id.
    pub(crate) user_claim: &'c str,
    /// The configured audience (may be empty; `aud` is type-checked either way).
    pub(crate) audience: &'c str,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = RawClaims<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = RawClaims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object of claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut c = RawClaims::default();
        while let Some(Str(key)) = map.next_key::<Str<'de>>()? {
            if key == self.user_claim {
                c.user = map.next_value::<Option<String>>().map_err(|e| ctx(&key, e))?;
                continue;
            }
            let r: Result<(), A::Error> = (|| {
                match (&*key, self.kind) {
                    ("sub" | "jti", _) => {
                        map.next_value::<Option<Str<'de>>>()?;
                    }
                    ("iat", _) => {
                        map.next_value::<Option<NumericDate>>()?;
                    }
                    ("exp", _) => c.exp = map.next_value::<Option<NumericDate>>()?.map(|d| d.0),
                    ("nbf", _) => c.nbf = map.next_value::<Option<NumericDate>>()?.map(|d| d.0),
                    ("aud", _) => c.aud_match = map.next_value_seed(AudSeed(self.audience))?,
                    ("iss", _) => c.iss = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    ("info", _) => c.info = map.next_value()?,
                    ("b64info", _) => c.b64info = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    ("channel", _) => c.channel = map.next_value()?,
                    ("expire_at", _) => c.expire_at = map.next_value()?,
                    ("channels", Kind::Connect) => {
                        c.channels = map.next_value::<Option<Vec<String>>>()?.unwrap_or_default();
                    }
                    ("subs", Kind::Connect) => c.subs = map.next_value::<Option<_>>()?.unwrap_or_default(),
                    ("meta", Kind::Connect) => c.meta = map.next_value()?,
                    ("client", Kind::Subscribe) => c.client = map.next_value()?,
                    ("data", Kind::Subscribe) => c.data = map.next_value()?,
                    ("b64data", Kind::Subscribe) => c.b64data = map.next_value::<Option<Str<'de>>>()?.map(|s| s.0),
                    ("override", Kind::Subscribe) => c.override_ = map.next_value()?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(())
            })();
            r.map_err(|e| ctx(&key, e))?;
        }
        Ok(c)
    }
}

/// Prefixes a claim decoding error with the claim's name.
fn ctx<E: de::Error>(key: &str, e: E) -> E {
    E::custom(format_args!("claim `{key}`: {e}"))
}
