//! Names on the NATS server: subjects, stream and bucket names, and the escaping that turns any
//! Herald channel into one subject token or key-value key segment.
//!
//! A channel may hold `.`, `*`, `>`, spaces or any Unicode, which mean something (or are
//! refused) in a NATS subject. Each is written as `%XX` (subjects) or `=XX` (key-value keys,
//! whose alphabet is smaller), so the mapping is injective and readable for plain names.

use std::fmt::Write;

/// Subjects and names derived from `broker.nats.prefix`.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
    /// The prefix reduced to what stream and bucket names allow.
    name_prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        let name_prefix =
            prefix.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        Names { prefix: prefix.to_owned(), name_prefix }
    }

    /// Core pub/sub of one channel's publications, joins and leaves.
    pub(crate) fn client(&self, channel: &str) -> String {
        format!("{}.client.{}", self.prefix, subject_token(channel))
    }

    /// The JetStream subject holding one channel's stream.
    pub(crate) fn history(&self, channel: &str) -> String {
        format!("{}.history.{}", self.prefix, subject_token(channel))
    }

    pub(crate) fn history_wildcard(&self) -> String {
        format!("{}.history.>", self.prefix)
    }

    /// Control messages for every node.
    pub(crate) fn control(&self) -> String {
        format!("{}.control", self.prefix)
    }

    /// Control messages for one node.
    pub(crate) fn node(&self, uid: &str) -> String {
        format!("{}.node.{}", self.prefix, subject_token(uid))
    }

    pub(crate) fn history_stream(&self) -> String {
        format!("{}_history", self.name_prefix)
    }

    pub(crate) fn presence_bucket(&self) -> String {
        format!("{}_presence", self.name_prefix)
    }

    pub(crate) fn idempotency_bucket(&self) -> String {
        format!("{}_idempotency", self.name_prefix)
    }
}

/// One subject token for `s`: `%XX` for every byte outside a conservative safe set.
pub(crate) fn subject_token(s: &str) -> String {
    escape(s, '%', |b| b.is_ascii_alphanumeric() || b"-_:#@=,~+!".contains(&b))
}

/// One key-value key segment (no `.`) for `s`: `=XX` for every byte outside `[A-Za-z0-9_-]`.
pub(crate) fn kv_segment(s: &str) -> String {
    escape(s, '=', |b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn escape(s: &str, mark: char, keep: impl Fn(u8) -> bool) -> String {
    if s.is_empty() {
        // An empty token is invalid in a subject; the lone mark cannot come from a non-empty name.
        return mark.to_string();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "{mark}{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_channels_stay_readable() {
        let n = Names::new("herald");
        assert_eq!(n.client("news:sport"), "herald.client.news:sport");
        assert_eq!(n.history("$user#42"), "herald.history.%24user#42");
        assert_eq!(n.history_stream(), "herald_history");
        assert_eq!(Names::new("my.app").presence_bucket(), "my_app_presence");
    }

    #[test]
    fn wildcards_separators_and_unicode_are_escaped_injectively() {
        assert_eq!(subject_token("a.b"), "a%2Eb");
        assert_eq!(subject_token("*"), "%2A");
        assert_eq!(subject_token(">"), "%3E");
        assert_eq!(subject_token("a b"), "a%20b");
        assert_eq!(subject_token("%2E"), "%252E");
        assert_eq!(subject_token("é"), "%C3%A9");
        assert_eq!(subject_token(""), "%");
        assert_ne!(subject_token("a.b"), subject_token("a%2Eb"));
        assert_eq!(kv_segment("news:sport.x"), "news=3Asport=2Ex");
        assert_eq!(kv_segment("="), "=3D");
        for token in [subject_token("x y.z*>\t"), kv_segment("x y.z*>\t")] {
            assert!(!token.contains(['.', '*', '>', ' ', '\t']), "{token}");
        }
    }
}
