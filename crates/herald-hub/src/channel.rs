//! Channel name anatomy: namespaces, the private prefix, user-limited channels, validation.
//!
//! `chat:room` belongs to namespace `chat` (text before the first boundary, after stripping the
//! private prefix `$`); a name without a boundary uses `channel.without_namespace`.
//! `news#42,43` is user-limited when the namespace allows it: only users 42 and 43 (the list
//! after the last `#`) may subscribe.

use std::collections::HashMap;
use std::sync::Arc;

use herald_proto::ErrorCode;
use herald_proto::codes::{ERROR_BAD_REQUEST, ERROR_UNKNOWN_CHANNEL};
use regex::Regex;

use crate::config::{ChannelConfig, ChannelOptions, ConfigError, Namespace};

/// A namespace with its compiled channel regex.
#[derive(Debug)]
pub struct NamespaceInfo {
    pub name: String,
    pub options: ChannelOptions,
    regex: Option<Regex>,
    /// `publication_rate_limit`'s bucket (one per namespace and node).
    publications: std::sync::Mutex<crate::limits::TokenBucket>,
}

impl NamespaceInfo {
    /// Takes a publication token at `now_ms`: `false` when the namespace is over its
    /// `publication_rate_limit` (counted in `herald_limit_refusals_total`).
    pub fn admit_publication(&self, now_ms: i64) -> bool {
        let rate = crate::limits::Rate { rate: self.options.publication_rate_limit, burst: 0 };
        if !rate.enabled() {
            return true;
        }
        let ok = self.publications.lock().expect("publication bucket").take(&rate, now_ms);
        if !ok {
            crate::metrics::limit_refused("namespace_publication_rate", "111");
        }
        ok
    }
}

/// Compiled channel configuration.
#[derive(Debug)]
pub struct Channels {
    cfg: ChannelConfig,
    without: Arc<NamespaceInfo>,
    namespaces: HashMap<String, Arc<NamespaceInfo>>,
}

/// A channel resolved to its namespace.
#[derive(Debug, Clone)]
pub struct Resolved<'a> {
    pub ns: &'a Arc<NamespaceInfo>,
    /// The part of the name after the namespace (the whole name without a namespace).
    pub rest: &'a str,
}

impl Resolved<'_> {
    pub fn options(&self) -> &ChannelOptions {
        &self.ns.options
    }
}

/// Why [`Channels::check`] refuses a channel name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelError {
    Empty,
    /// Longer than `channel.max_length` bytes.
    TooLong,
    /// Contains a NUL byte.
    Nul,
    /// The namespace before the boundary is not configured.
    UnknownNamespace,
    /// Fails the namespace's `channel_regex` (without one: not ASCII).
    Invalid,
}

impl ChannelError {
    /// The error a client command or an API method answers with. An empty channel is 107 here;
    /// client commands disconnect with 3501 for it instead, as Centrifugo does.
    pub fn code(self) -> ErrorCode {
        match self {
            ChannelError::UnknownNamespace => ERROR_UNKNOWN_CHANNEL,
            ChannelError::Empty | ChannelError::TooLong | ChannelError::Nul | ChannelError::Invalid => {
                ERROR_BAD_REQUEST
            }
        }
    }
}

impl ChannelError {
    /// A metric label.
    pub fn label(self) -> &'static str {
        match self {
            ChannelError::Empty => "empty",
            ChannelError::TooLong => "too_long",
            ChannelError::Nul => "nul",
            ChannelError::UnknownNamespace => "unknown_namespace",
            ChannelError::Invalid => "invalid",
        }
    }
}

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChannelError::Empty => "channel is empty",
            ChannelError::TooLong => "channel is longer than channel.max_length",
            ChannelError::Nul => "channel contains a NUL byte",
            ChannelError::UnknownNamespace => "channel namespace is not configured",
            ChannelError::Invalid => "channel does not match the namespace's channel_regex (or is not ASCII)",
        })
    }
}

fn valid_namespace_name(name: &str) -> bool {
    name.len() >= 2 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn compile(ns: &Namespace, key: &str) -> Result<Arc<NamespaceInfo>, ConfigError> {
    let regex = if ns.options.channel_regex.is_empty() {
        None
    } else {
        Some(Regex::new(&ns.options.channel_regex).map_err(|e| {
            ConfigError::new(format!("{key}.channel_regex"), format!("invalid regular expression: {e}"))
        })?)
    };
    if ns.options.history_size > 0 && ns.options.history_ttl.is_zero() {
        return Err(ConfigError::new(format!("{key}.history_ttl"), "must be set when history_size is set"));
    }
    if ns.options.history_size == 0 && !ns.options.history_ttl.is_zero() {
        return Err(ConfigError::new(format!("{key}.history_size"), "must be set when history_ttl is set"));
    }
    if ns.options.force_recovery && !ns.options.history_enabled() {
        return Err(ConfigError::new(format!("{key}.force_recovery"), "needs history_size and history_ttl"));
    }
    let rate = crate::limits::Rate { rate: ns.options.publication_rate_limit, burst: 0 };
    let publications = std::sync::Mutex::new(crate::limits::TokenBucket::full(&rate, 0));
    Ok(Arc::new(NamespaceInfo { name: ns.name.clone(), options: ns.options.clone(), regex, publications }))
}

impl Channels {
    /// Validates and compiles the channel section. Errors name the offending key.
    pub fn new(cfg: ChannelConfig) -> Result<Self, ConfigError> {
        for (key, v) in [
            ("channel.namespace_boundary", &cfg.namespace_boundary),
            ("channel.user_boundary", &cfg.user_boundary),
            ("channel.user_separator", &cfg.user_separator),
        ] {
            if v.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        if cfg.max_length == 0 {
            return Err(ConfigError::new("channel.max_length", "must be positive"));
        }
        let without = compile(
            &Namespace { name: String::new(), options: cfg.without_namespace.clone() },
            "channel.without_namespace",
        )?;
        let mut namespaces = HashMap::new();
        for (i, ns) in cfg.namespaces.iter().enumerate() {
            let key = format!("channel.namespaces[{i}]");
            if !valid_namespace_name(&ns.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("{:?} is not a valid namespace name (2+ characters of letters, digits, '-', '_')", ns.name),
                ));
            }
            if namespaces.insert(ns.name.clone(), compile(ns, &key)?).is_some() {
                return Err(ConfigError::new(format!("{key}.name"), format!("duplicate namespace {:?}", ns.name)));
            }
        }
        Ok(Channels { cfg, without, namespaces })
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.cfg
    }

    /// Finds the namespace of `channel`; `None` when the namespace is not configured (102).
    pub fn resolve<'a>(&'a self, channel: &'a str) -> Option<Resolved<'a>> {
        let name = channel.strip_prefix(self.cfg.private_prefix.as_str()).unwrap_or(channel);
        match name.split_once(self.cfg.namespace_boundary.as_str()) {
            Some((ns, rest)) => self.namespaces.get(ns).map(|ns| Resolved { ns, rest }),
            None => Some(Resolved { ns: &self.without, rest: channel }),
        }
    }

    /// Options of a namespace by name ("" for channels without a namespace).
    pub fn namespace(&self, name: &str) -> Option<&Arc<NamespaceInfo>> {
        if name.is_empty() { Some(&self.without) } else { self.namespaces.get(name) }
    }

    /// Every rule a channel name named by a client command or a server API method must pass,
    /// in the order answers are decided: not empty, at most `channel.max_length` bytes, no NUL
    /// byte, a configured namespace, then the namespace's name rules. The one place these are
    /// decided, so clients and the API cannot drift apart.
    pub fn check<'a>(&'a self, channel: &'a str) -> Result<Resolved<'a>, ChannelError> {
        if channel.is_empty() {
            return Err(ChannelError::Empty);
        }
        if self.too_long(channel) {
            return Err(ChannelError::TooLong);
        }
        // NUL is ASCII, so the default rule alone would let it through; a regex such as `.*`
        // would too. Names with NUL break C clients, logs and engines that use C strings.
        if channel.contains('\0') {
            return Err(ChannelError::Nul);
        }
        let resolved = self.resolve(channel).ok_or(ChannelError::UnknownNamespace)?;
        if !self.valid_name(channel, &resolved) {
            return Err(ChannelError::Invalid);
        }
        Ok(resolved)
    }

    /// Name rules: the namespace's `channel_regex` must match the rest of the name; without a
    /// regex the whole name must be ASCII.
    fn valid_name(&self, channel: &str, resolved: &Resolved<'_>) -> bool {
        match &resolved.ns.regex {
            Some(re) => re.is_match(resolved.rest),
            None => channel.is_ascii(),
        }
    }

    pub fn too_long(&self, channel: &str) -> bool {
        channel.len() > self.cfg.max_length
    }

    pub fn is_private(&self, channel: &str) -> bool {
        !self.cfg.private_prefix.is_empty() && channel.starts_with(self.cfg.private_prefix.as_str())
    }

    /// For a user-limited channel (namespace allows them and the name has the user boundary):
    /// whether `user` is listed. `None` when the channel is not user-limited.
    pub fn user_limited(&self, channel: &str, options: &ChannelOptions, user: &str) -> Option<bool> {
        if !options.allow_user_limited_channels {
            return None;
        }
        let (_, users) = channel.rsplit_once(self.cfg.user_boundary.as_str())?;
        Some(users.split(self.cfg.user_separator.as_str()).any(|u| u == user))
    }

    /// The personal channel of `user` (`#42` or `ns:#42`).
    pub fn personal_channel(&self, namespace: &str, user: &str) -> String {
        if namespace.is_empty() {
            format!("{}{}", self.cfg.user_boundary, user)
        } else {
            format!("{namespace}{}{}{user}", self.cfg.namespace_boundary, self.cfg.user_boundary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels() -> Channels {
        let mut cfg = ChannelConfig::default();
        cfg.namespaces.push(Namespace {
            name: "chat".into(),
            options: ChannelOptions { channel_regex: "^[a-z0-9]+$".into(), ..Default::default() },
        });
        cfg.namespaces.push(Namespace {
            name: "news".into(),
            options: ChannelOptions { allow_user_limited_channels: true, ..Default::default() },
        });
        cfg.without_namespace.allow_user_limited_channels = true;
        Channels::new(cfg).unwrap()
    }

    #[test]
    fn resolves_namespaces_and_private_prefix() {
        let c = channels();
        assert_eq!(c.resolve("chat:room1").unwrap().ns.name, "chat");
        assert_eq!(c.resolve("chat:room1").unwrap().rest, "room1");
        assert_eq!(c.resolve("$chat:secret").unwrap().ns.name, "chat");
        assert_eq!(c.resolve("plain").unwrap().ns.name, "");
        assert_eq!(c.resolve("$plain").unwrap().rest, "$plain");
        assert!(c.resolve("nope:x").is_none());
        // Only the first boundary splits.
        assert_eq!(c.resolve("chat:a:b").unwrap().rest, "a:b");
        assert!(c.is_private("$chat:secret"));
        assert!(!c.is_private("chat:secret"));
    }

    #[test]
    fn validates_names() {
        let c = channels();
        let check = |name: &str| c.check(name).map(|r| r.ns.name.clone());
        assert_eq!(check("chat:Room"), Err(ChannelError::Invalid));
        assert_eq!(check("chat:room"), Ok("chat".into()));
        assert_eq!(check("café"), Err(ChannelError::Invalid));
        assert_eq!(check(""), Err(ChannelError::Empty));
        assert_eq!(check(&"x".repeat(255)), Ok("".into()));
        assert_eq!(check(&"x".repeat(256)), Err(ChannelError::TooLong));
        // Length is decided before the namespace: a too long name in an unknown namespace is 107.
        assert_eq!(check(&format!("nope:{}", "x".repeat(300))), Err(ChannelError::TooLong));
        assert_eq!(check("nope:x"), Err(ChannelError::UnknownNamespace));
        // NUL is refused with and without a regex (`news` has none, `chat` one that would
        // not match anyway).
        assert_eq!(check("a\0b"), Err(ChannelError::Nul));
        assert_eq!(check("news:a\0"), Err(ChannelError::Nul));
        let mut cfg = ChannelConfig::default();
        cfg.without_namespace.channel_regex = ".*".into();
        cfg.max_length = 8;
        let open = Channels::new(cfg).unwrap();
        assert_eq!(open.check("any\0").map(|_| ()), Err(ChannelError::Nul));
        assert_eq!(open.check("café").map(|_| ()), Ok(()));
        assert_eq!(open.check("123456789").map(|_| ()), Err(ChannelError::TooLong));
        assert_eq!(ChannelError::TooLong.code().code, 107);
        assert_eq!(ChannelError::Nul.code().code, 107);
        assert_eq!(ChannelError::UnknownNamespace.code().code, 102);
    }

    #[test]
    fn user_limited_channels() {
        let c = channels();
        let opts = &c.resolve("news:a#42,43").unwrap().ns.options.clone();
        assert_eq!(c.user_limited("news:a#42,43", opts, "43"), Some(true));
        assert_eq!(c.user_limited("news:a#42,43", opts, "4"), Some(false));
        assert_eq!(c.user_limited("news:plain", opts, "4"), None);
        let chat = &c.resolve("chat:x").unwrap().ns.options.clone();
        assert_eq!(c.user_limited("chat:x#1", chat, "1"), None);
        assert_eq!(c.personal_channel("", "42"), "#42");
        assert_eq!(c.personal_channel("news", "42"), "news:#42");
    }

    #[test]
    fn rejects_bad_config_with_key_names() {
        let mut cfg = ChannelConfig::default();
        cfg.namespaces.push(Namespace { name: "x".into(), ..Default::default() });
        assert!(Channels::new(cfg).unwrap_err().to_string().contains("channel.namespaces[0].name"));
        let mut cfg = ChannelConfig::default();
        cfg.without_namespace.history_size = 10;
        assert!(Channels::new(cfg).unwrap_err().to_string().contains("channel.without_namespace.history_ttl"));
        let mut cfg = ChannelConfig::default();
        cfg.namespaces.push(Namespace {
            name: "ok".into(),
            options: ChannelOptions { channel_regex: "(".into(), ..Default::default() },
        });
        assert!(Channels::new(cfg).unwrap_err().to_string().contains("channel.namespaces[0].channel_regex"));
    }
}
