//! Loading the configuration: file, then `HERALD_*` environment variables, then command-line
//! flags (each layer overrides the one before), then the typed [`Config`].
//!
//! The layers are merged as a `serde_json::Value` tree and only then deserialized, so every
//! error names the full dotted key path (`client.ping_interval`, `channel.namespaces[0].name`).
//!
//! The set of known keys comes from serializing `Config::default()` (every field serializes);
//! elements of `channel.namespaces` are checked against a serialized `Namespace::default()`.
//! Unknown keys and unknown `HERALD_*` variables produce warnings that suggest the nearest known
//! key (same section first); Centrifugo options Herald does not implement yet are named as such
//! (`config_keys`), and the few that are unsafe to ignore stop loading when turned on. In strict
//! mode ([`Overrides::strict`]) every setting that would be ignored is an error.
//!
//! Environment variables: `HERALD_` + the key path upper-cased with `.` replaced by `_`
//! (`HERALD_HTTP_API_KEY` → `http_api.key`). Since option names contain `_` themselves, names are
//! looked up in a table built from the known paths rather than split. Values are converted by the
//! type of the default value:
//!
//! - booleans: `true`/`false`, `1`/`0`, `yes`/`no`, `t`/`f`, `on`/`off` (any case);
//! - integers: decimal;
//! - strings (durations included) as given;
//! - lists of strings: a JSON array when the value starts with `[`, otherwise space-separated;
//! - lists of objects (`HERALD_CHANNEL_NAMESPACES`) and whole sections (`HERALD_CLIENT_TOKEN`):
//!   JSON. A section given as a JSON object is merged into the file's section, and more specific
//!   variables (`HERALD_CLIENT_TOKEN_HMAC_SECRET_KEY`) are applied after it.
//!
//! Empty variables count as unset. `HERALD_CONFIG` (the config file path, read by the CLI) is not
//! an option and is never reported as unknown. `null` values (e.g. a YAML key without a value)
//! count as unset too.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use herald_hub::config::{ChannelOptions, NamedProxy, Namespace, RpcNamespace};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::config::Config;
use crate::config_error::{ConfigError, FileFormat, FileProblem, Source};
use crate::config_keys::{self, Refusal};

/// Prefix of the environment variables read by [`load`].
pub const ENV_PREFIX: &str = "HERALD_";

/// Environment variable naming the config file (read by the CLI, ignored by [`load`]).
pub const CONFIG_ENV: &str = "HERALD_CONFIG";

/// Path of the only list whose elements are objects with a known shape.
const NAMESPACES_PATH: &str = "channel.namespaces";

/// Values from command-line flags; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--port` → `http_server.port`.
    pub port: Option<u16>,
    /// `--address` → `http_server.address`.
    pub address: Option<String>,
    /// `--log-level` → `log.level`.
    pub log_level: Option<String>,
    /// `--api-key` → `http_api.key`.
    pub api_key: Option<String>,
    /// `serve --strict-config`, `checkconfig --strict`: settings that would be ignored (unknown
    /// keys and variables, Centrifugo options Herald does not implement) are an error.
    pub strict: bool,
}

/// A loaded configuration and the warnings produced while loading it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Unknown keys and unknown `HERALD_*` variables, ready to print.
    pub warnings: Vec<String>,
}

/// Loads the configuration: `file` (JSON, YAML or TOML by extension; `None` = defaults only),
/// then `env` (only `HERALD_*` names are looked at), then `overrides`.
///
/// Errors name the file, the environment variable or the dotted key at fault.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let tree = match file {
        Some(path) => read_file(path)?,
        None => Value::Object(Map::new()),
    };
    load_tree(tree, env, overrides)
}

/// [`load`] with the file's text already in hand (`path` only names it in errors): nothing is
/// read from the filesystem or the process environment. Used by the `config` fuzz target.
pub fn load_text(
    path: &Path,
    format: FileFormat,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    load_tree(parse_file(path, format, text)?, env, overrides)
}

fn load_tree(
    mut tree: Value,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &Overrides,
) -> Result<Loaded, ConfigError> {
    let schema = Schema::new();
    let mut sources = Vec::new();
    let mut env_warnings = Vec::new();
    let mut refusals = Vec::new();
    apply_env(&mut tree, env, &schema, &mut sources, &mut env_warnings, &mut refusals)?;
    apply_overrides(&mut tree, overrides, &mut sources);

    let mut warnings = Vec::new();
    let mut file_refusals = Vec::new();
    unknown_keys(&tree, &schema.defaults, "", &schema, &mut warnings, &mut file_refusals);
    warnings.extend(env_warnings);
    // Keys in the tree were set by the file unless a layer above says otherwise.
    let file_refusals = file_refusals.into_iter().map(|r| {
        let set_by = source_of(&sources, &r.key).cloned();
        (r, set_by)
    });
    if let Some((Refusal { key, what, why }, set_by)) = file_refusals.chain(refusals).next() {
        return Err(ConfigError::Unsupported { key, what, why, set_by });
    }
    if overrides.strict && !warnings.is_empty() {
        return Err(ConfigError::Ignored { warnings });
    }

    strip_nulls(&mut tree);
    let config = to_config(&tree).map_err(|(key, message)| {
        let set_by = source_of(&sources, &key).cloned();
        ConfigError::Deserialize { key, message, set_by }
    })?;
    Ok(Loaded { config, warnings })
}

/// Environment variable names and the key paths they set, sorted by name (for documentation).
pub fn env_var_names() -> Vec<(String, String)> {
    Schema::new().env_table().into_iter().map(|(name, target)| (name, target.path.join("."))).collect()
}

// ---------------------------------------------------------------------------------------------
// Files

fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let fail = |problem| ConfigError::File { path: path.to_owned(), problem };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let format = match ext.as_deref() {
        Some("json") => FileFormat::Json,
        Some("yaml" | "yml") => FileFormat::Yaml,
        Some("toml") => FileFormat::Toml,
        _ => return Err(fail(FileProblem::UnknownFormat)),
    };
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => fail(FileProblem::NotFound),
        _ => fail(FileProblem::Unreadable(e)),
    })?;
    parse_file(path, format, &text)
}

/// A config file's text as a tree of sections.
fn parse_file(path: &Path, format: FileFormat, text: &str) -> Result<Value, ConfigError> {
    let fail = |problem| ConfigError::File { path: path.to_owned(), problem };
    let parsed: Result<Value, String> = match format {
        FileFormat::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
        FileFormat::Yaml => serde_yaml_ng::from_str(text).map_err(|e| e.to_string()),
        FileFormat::Toml => toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned()),
    };
    match parsed.map_err(|message| fail(FileProblem::Unparsable { format, message }))? {
        // An empty YAML document.
        Value::Null => Ok(Value::Object(Map::new())),
        v @ Value::Object(_) => Ok(v),
        _ => Err(fail(FileProblem::NotAMap)),
    }
}

// ---------------------------------------------------------------------------------------------
// Known keys

/// The shape of the configuration, from the serialized defaults.
struct Schema {
    defaults: Value,
    namespace: Value,
    named_proxy: Value,
    rpc_namespace: Value,
    gateway_route: Value,
}

/// Map-typed options whose keys are the user's own (header names), never unknown keys.
fn is_free_map(path: &str) -> bool {
    path.ends_with(".static_headers") || path.ends_with(".static_http_headers")
}

/// How an environment variable's text becomes a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    StrList,
    ObjList,
    Section,
    Json,
}

#[derive(Debug, Clone)]
struct EnvTarget {
    path: Vec<String>,
    kind: Kind,
}

impl Schema {
    fn new() -> Self {
        let defaults = serde_json::to_value(Config::default()).expect("the default config serializes");
        let namespace = serde_json::to_value(Namespace::default()).expect("the default namespace serializes");
        let named_proxy = serde_json::to_value(NamedProxy::default()).expect("the default proxy serializes");
        let rpc_namespace =
            serde_json::to_value(RpcNamespace::default()).expect("the default RPC namespace serializes");
        let gateway_route = serde_json::to_value(crate::edge::gateway::RouteConfig::default()).expect("serializes");
        Schema { defaults, namespace, named_proxy, rpc_namespace, gateway_route }
    }

    /// The template of a list's elements, for lists of objects.
    fn element_template(&self, path: &str) -> Option<&Value> {
        match path {
            NAMESPACES_PATH => Some(&self.namespace),
            "proxies" => Some(&self.named_proxy),
            "rpc.namespaces" => Some(&self.rpc_namespace),
            "gateway.routes" => Some(&self.gateway_route),
            _ => None,
        }
    }

    /// Every dotted path of the configuration, sections included (list elements excluded).
    fn paths(&self) -> Vec<String> {
        self.env_table().into_values().map(|t| t.path.join(".")).collect()
    }

    fn env_table(&self) -> BTreeMap<String, EnvTarget> {
        let mut table = BTreeMap::new();
        self.collect_env(&self.defaults, &mut Vec::new(), &mut table);
        table
    }

    fn collect_env(&self, node: &Value, path: &mut Vec<String>, table: &mut BTreeMap<String, EnvTarget>) {
        let Value::Object(map) = node else { return };
        for (key, value) in map {
            path.push(key.clone());
            let dotted = path.join(".");
            let kind = match value {
                Value::Bool(_) => Kind::Bool,
                Value::Number(n) if n.is_f64() => Kind::Float,
                Value::Number(_) => Kind::Int,
                Value::String(_) => Kind::Str,
                Value::Array(_) if self.element_template(&dotted).is_some() => Kind::ObjList,
                Value::Array(_) => Kind::StrList,
                Value::Object(_) => Kind::Section,
                Value::Null => Kind::Json,
            };
            let name = format!("{ENV_PREFIX}{}", dotted.replace('.', "_").to_ascii_uppercase());
            table.insert(name, EnvTarget { path: path.clone(), kind });
            if kind == Kind::Section {
                self.collect_env(value, path, table);
            }
            path.pop();
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn unknown_keys(
    user: &Value,
    known: &Value,
    path: &str,
    schema: &Schema,
    out: &mut Vec<String>,
    refusals: &mut Vec<Refusal>,
) {
    let (Value::Object(user), Value::Object(known)) = (user, known) else { return };
    for (key, value) in user {
        let here = join(path, key);
        if is_free_map(&here) {
            continue;
        }
        let Some(known_value) = known.get(key) else {
            match config_keys::file_key(&here, value) {
                Some(Ok(warning)) => out.push(warning),
                Some(Err(refusal)) => refusals.push(refusal),
                None => out.push(match suggest_key(key, path, known, schema) {
                    Some(meant) => format!("unknown configuration key {here:?} (ignored; did you mean {meant}?)"),
                    None => format!("unknown configuration key {here:?} (ignored)"),
                }),
            }
            continue;
        };
        match (value, schema.element_template(&here)) {
            (Value::Array(items), Some(template)) => {
                for (i, item) in items.iter().enumerate() {
                    unknown_keys(item, template, &format!("{here}[{i}]"), schema, out, refusals);
                }
            }
            _ => unknown_keys(value, known_value, &here, schema, out, refusals),
        }
    }
}

/// The known key most likely meant by `key`, unknown in section `path`: the nearest key of the
/// same section, else a key of that name (or nearly) in another section (`client.hmac_secret_key`
/// → `client.token.hmac_secret_key`), the shortest path first.
fn suggest_key(key: &str, path: &str, known: &Map<String, Value>, schema: &Schema) -> Option<String> {
    if let Some(sibling) = config_keys::nearest(key, known.keys().map(String::as_str)) {
        return Some(join(path, sibling));
    }
    if path.contains('[') {
        return None;
    }
    schema
        .paths()
        .into_iter()
        .filter_map(|p| {
            let leaf = p.rsplit('.').next().unwrap_or(&p);
            config_keys::closeness(key, leaf).map(|d| (d, p.len(), p.clone()))
        })
        .min()
        .map(|(_, _, p)| p)
}

fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Environment and flags

fn apply_env(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
    schema: &Schema,
    sources: &mut Vec<(String, Source)>,
    warnings: &mut Vec<String>,
    refusals: &mut Vec<(Refusal, Option<Source>)>,
) -> Result<(), ConfigError> {
    let table = schema.env_table();
    let mut matched = Vec::new();
    let mut unknown = Vec::new();
    for (name, value) in env {
        if !name.starts_with(ENV_PREFIX) || name == CONFIG_ENV || value.trim().is_empty() {
            continue;
        }
        match table.get(&name) {
            Some(target) => matched.push((target, name, value)),
            None => unknown.push((name, value)),
        }
    }
    unknown.sort();
    unknown.dedup_by(|a, b| a.0 == b.0);
    for (name, value) in unknown {
        match config_keys::env_var(&name, &value) {
            Some(Ok(warning)) => warnings.push(warning),
            Some(Err(refusal)) => refusals.push((refusal, Some(Source::Env(name)))),
            None => warnings.push(match suggest_env(&name, &table) {
                Some(meant) => format!("unknown environment variable {name:?} (ignored; did you mean {meant}?)"),
                None => format!("unknown environment variable {name:?} (ignored)"),
            }),
        }
    }

    // Whole sections first, so that more specific variables win over them.
    matched.sort_by(|a, b| (a.0.path.len(), &a.1).cmp(&(b.0.path.len(), &b.1)));
    for (target, name, text) in matched {
        let value = env_value(target, &name, &text)?;
        set_path(tree, &target.path, value, target.kind == Kind::Section);
        sources.push((target.path.join("."), Source::Env(name)));
    }
    Ok(())
}

/// The known variable nearest to `name`; among equally near ones, the one sharing the longest
/// start with it (the same section).
fn suggest_env<'a>(name: &str, table: &'a BTreeMap<String, EnvTarget>) -> Option<&'a str> {
    let word = name.strip_prefix(ENV_PREFIX)?;
    let shared = |other: &str| name.bytes().zip(other.bytes()).take_while(|(a, b)| a == b).count();
    table
        .keys()
        .filter_map(|known| {
            let d = config_keys::closeness(word, known.strip_prefix(ENV_PREFIX)?)?;
            Some((d, std::cmp::Reverse(shared(known)), known.as_str()))
        })
        .min()
        .map(|(_, _, known)| known)
}

fn env_value(target: &EnvTarget, name: &str, text: &str) -> Result<Value, ConfigError> {
    let error = |expected: &'static str, parse_error: Option<String>| ConfigError::Env {
        variable: name.to_owned(),
        key: target.path.join("."),
        expected,
        got: text.to_owned(),
        parse_error,
    };
    let bad = |expected: &'static str| error(expected, None);
    let trimmed = text.trim();
    let json = |expected: &'static str| {
        serde_json::from_str::<Value>(trimmed).map_err(|e| error(expected, Some(e.to_string())))
    };
    Ok(match target.kind {
        Kind::Bool => Value::Bool(parse_bool(trimmed).ok_or_else(|| bad("a boolean (true/false, 1/0, yes/no)"))?),
        Kind::Int => {
            if let Ok(n) = trimmed.parse::<u64>() {
                Value::from(n)
            } else {
                Value::from(trimmed.parse::<i64>().map_err(|_| bad("an integer"))?)
            }
        }
        Kind::Float => Value::from(trimmed.parse::<f64>().map_err(|_| bad("a number"))?),
        Kind::Str => Value::String(text.to_owned()),
        Kind::StrList if trimmed.starts_with('[') => {
            let v = json("a JSON array or space-separated values")?;
            if !v.is_array() {
                return Err(bad("a JSON array or space-separated values"));
            }
            v
        }
        Kind::StrList => Value::Array(trimmed.split_whitespace().map(|s| Value::String(s.to_owned())).collect()),
        Kind::ObjList => {
            let v = json("a JSON array of objects")?;
            if !v.is_array() {
                return Err(bad("a JSON array of objects"));
            }
            v
        }
        Kind::Section => {
            let v = json("a JSON object")?;
            if !v.is_object() {
                return Err(bad("a JSON object"));
            }
            v
        }
        Kind::Json => serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(text.to_owned())),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "t" | "on" => Some(true),
        "false" | "0" | "no" | "f" | "off" => Some(false),
        _ => None,
    }
}

/// Sets `path` in `tree`, creating sections as needed. With `merge`, objects are merged key by
/// key into what is already there instead of replacing it.
fn set_path(tree: &mut Value, path: &[String], value: Value, merge: bool) {
    let mut node = tree;
    for key in path {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { unreachable!() };
        node = map.entry(key.clone()).or_insert(Value::Null);
    }
    if merge { merge_into(node, value) } else { *node = value }
}

fn merge_into(target: &mut Value, value: Value) {
    match (target, value) {
        (Value::Object(target), Value::Object(value)) => {
            for (key, v) in value {
                merge_into(target.entry(key).or_insert(Value::Null), v);
            }
        }
        (target, value) => *target = value,
    }
}

fn apply_overrides(tree: &mut Value, o: &Overrides, sources: &mut Vec<(String, Source)>) {
    let path = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
    let mut set = |key: &str, flag: &'static str, value: Value| {
        set_path(tree, &path(key), value, false);
        sources.push((key.to_owned(), Source::Flag(flag)));
    };
    if let Some(port) = o.port {
        set("http_server.port", "port", Value::from(port));
    }
    if let Some(address) = &o.address {
        set("http_server.address", "address", Value::from(address.clone()));
    }
    if let Some(level) = &o.log_level {
        set("log.level", "log-level", Value::from(level.clone()));
    }
    if let Some(key) = &o.api_key {
        set("http_api.key", "api-key", Value::from(key.clone()));
    }
}

/// The layer that last set `path` (or a section containing it), if not the file.
fn source_of<'a>(sources: &'a [(String, Source)], path: &str) -> Option<&'a Source> {
    let within = |p: &str| path == p || path.starts_with(&format!("{p}.")) || path.starts_with(&format!("{p}["));
    sources.iter().rev().find(|(p, _)| !path.is_empty() && within(p)).map(|(_, s)| s)
}

// ---------------------------------------------------------------------------------------------
// Typed config

/// Deserializes the merged tree. The error carries the dotted path of the bad value (empty when
/// it cannot be named) and the deserializer's message.
fn to_config(tree: &Value) -> Result<Config, (String, String)> {
    let err = match serde_path_to_error::deserialize::<_, Config>(tree) {
        Ok(config) => return Ok(config),
        Err(err) => err,
    };
    let mut path = dotted(err.path());
    let mut inner = err.into_inner().to_string();
    // Namespace options are flattened into the namespace, which hides their keys from the path
    // tracker: look at each namespace on its own to find the key.
    if path.starts_with(NAMESPACES_PATH)
        && let Some((p, msg)) = namespace_error(tree)
    {
        path = p;
        inner = msg;
    }
    let inner = explain(&path, inner, tree);
    Err((path, inner))
}

/// serde's messages name Rust types ("invalid value: integer `80000`, expected u16"); say what
/// may be written instead, and what was.
fn explain(key: &str, message: String, tree: &Value) -> String {
    let Some(got) = value_at(tree, key) else { return message };
    let expected = if message == "negative duration" {
        "a duration such as \"25s\" or \"1m30s\" (a number alone is seconds)"
    } else {
        match message.rsplit_once(", expected ").map(|(_, ty)| ty) {
            Some("u16") if key == "http_server.port" => "a port between 1 and 65535 (0 picks a free port)",
            Some("u8") => "a whole number from 0 to 255",
            Some("u16") => "a whole number from 0 to 65535",
            Some("u32") => "a whole number from 0 to 4294967295",
            Some("u64" | "usize") => "a whole number, 0 or more",
            Some("i32" | "i64" | "isize") => "a whole number",
            Some("a boolean") => "true or false",
            _ => return message,
        }
    };
    format!("expected {expected}, got {got}")
}

/// The value at a dotted path such as `channel.namespaces[1].history_size`.
fn value_at<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    if key.is_empty() {
        return None;
    }
    let mut node = tree;
    for part in key.split('.') {
        let (name, indices) = part.split_once('[').map_or((part, ""), |(n, rest)| (n, rest));
        node = node.get(name)?;
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            node = node.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

fn namespace_error(tree: &Value) -> Option<(String, String)> {
    let items = tree.get("channel")?.get("namespaces")?.as_array()?;
    for (i, item) in items.iter().enumerate() {
        let Value::Object(map) = item else { continue };
        let key = format!("{NAMESPACES_PATH}[{i}]");
        if let Some(name) = map.get("name")
            && let Err(e) = serde_json::from_value::<String>(name.clone())
        {
            return Some((format!("{key}.name"), e.to_string()));
        }
        let mut options = map.clone();
        options.remove("name");
        let options = Value::Object(options);
        if let Err(e) = serde_path_to_error::deserialize::<_, ChannelOptions>(&options) {
            let inner = dotted(e.path());
            let path = if inner.is_empty() { key } else { format!("{key}.{inner}") };
            return Some((path, e.into_inner().to_string()));
        }
    }
    None
}

/// `a.b[0].c`; stops at segments the tracker could not name.
fn dotted(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => break,
        }
    }
    out
}

mod engines;
#[cfg(test)]
mod tests;
mod validate;

pub use validate::{validate, warnings};
