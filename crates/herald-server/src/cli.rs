//! The `herald` command line.
//!
//! - `herald [serve] [-c FILE] [--port N] [--address A] [--log-level L] [--api-key K]
//!   [--strict-config]`: run the server (the config file may also be named by `HERALD_CONFIG`);
//! - `herald genconfig [--output FILE] [--force]`: write a commented starter config with fresh
//!   secrets;
//! - `herald gentoken` / `herald gensubtoken`: sign connection / subscription tokens with the
//!   configured HMAC secret;
//! - `herald checkconfig [--strict] FILE`: load and validate a config without starting;
//! - `herald defaultconfig`: print every option with its default value (JSON);
//! - `herald reload [-c FILE] [--url URL] [--api-key KEY]`: make a running node load its
//!   configuration again (its server API method `reload`) and print the outcome;
//! - `herald version`.
//!
//! Errors are printed as `error: ...` on stderr and exit with code 1; warnings as
//! `warning: ...` on stderr.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use herald_auth::TokenConfig;
use rand::Rng;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::config_error::ConfigError;
use crate::loader::{self, CONFIG_ENV, Loaded, Overrides};
use crate::server::StartupError;
use crate::telemetry;

const VERSION: &str = env!("CARGO_PKG_VERSION");

const TOML_TEMPLATE: &str = include_str!("genconfig_template.toml");
const YAML_TEMPLATE: &str = include_str!("genconfig_template.yaml");

#[derive(Debug, Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: realtime push gateway, compatible with Centrifugo clients and server API",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command, `herald` runs the server with these options.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Write a commented starter configuration with freshly generated secrets.
    Genconfig(GenconfigArgs),
    /// Print a connection token (JWT) signed with client.token.hmac_secret_key.
    Gentoken(GentokenArgs),
    /// Print a subscription token (JWT) for one channel.
    Gensubtoken(GensubtokenArgs),
    /// Load and validate a configuration without starting the server.
    Checkconfig(CheckconfigArgs),
    /// Print the full default configuration as JSON.
    Defaultconfig,
    /// Make a running node load its configuration again (server API method `reload`).
    Reload(ReloadArgs),
    /// Print the version.
    Version,
}

#[derive(Debug, Default, Args)]
struct ServeArgs {
    /// Configuration file (.json, .yaml, .yml or .toml). Default: $HERALD_CONFIG, if set.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Port to listen on (http_server.port).
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Interface to bind (http_server.address).
    #[arg(long, value_name = "ADDRESS")]
    address: Option<String>,
    /// Log level: trace, debug, info, warn, error or none (log.level).
    #[arg(long = "log-level", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Server API key (http_api.key).
    #[arg(long = "api-key", value_name = "KEY")]
    api_key: Option<String>,
    /// Refuse to start when a setting would be ignored (unknown keys or HERALD_* variables,
    /// Centrifugo options Herald does not implement yet).
    #[arg(long = "strict-config")]
    strict_config: bool,
}

#[derive(Debug, Args)]
struct GenconfigArgs {
    /// File to write; its extension picks the format (.toml, .yaml, .yml or .json).
    #[arg(short = 'o', long, value_name = "FILE", default_value = "config.toml")]
    output: PathBuf,
    /// Overwrite the file if it exists.
    #[arg(short = 'f', long)]
    force: bool,
}

#[derive(Debug, Args)]
struct GentokenArgs {
    /// Configuration file holding the secret. Default: $HERALD_CONFIG, if set.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// User id (the `sub` claim); empty for an anonymous user.
    #[arg(short = 'u', long, value_name = "USER", default_value = "")]
    user: String,
    /// Lifetime in seconds (the `exp` claim); 0 for a token that never expires.
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 3600)]
    ttl: u64,
    /// Connection info, as JSON (the `info` claim).
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Channel to subscribe the connection to on the server side (repeatable; the `channels` claim).
    #[arg(long = "channel", value_name = "CHANNEL")]
    channels: Vec<String>,
    /// Signing algorithm: HS256, HS384 or HS512.
    #[arg(long, value_name = "ALG", default_value = "HS256")]
    alg: String,
}

#[derive(Debug, Args)]
struct GensubtokenArgs {
    /// Configuration file holding the secret. Default: $HERALD_CONFIG, if set.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// User id (the `sub` claim); must match the connection's user.
    #[arg(short = 'u', long, value_name = "USER", default_value = "")]
    user: String,
    /// The channel the token grants (the `channel` claim).
    #[arg(long, value_name = "CHANNEL")]
    channel: String,
    /// Lifetime in seconds (the `exp` claim); 0 for a token that never expires.
    #[arg(short = 't', long, value_name = "SECONDS", default_value_t = 3600)]
    ttl: u64,
    /// Channel info, as JSON (the `info` claim).
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Signing algorithm: HS256, HS384 or HS512.
    #[arg(long, value_name = "ALG", default_value = "HS256")]
    alg: String,
}

#[derive(Debug, Args)]
struct CheckconfigArgs {
    /// The file to check. Default: --config, then $HERALD_CONFIG; without any, the defaults plus
    /// the environment are checked.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    #[arg(short = 'c', long = "config", value_name = "FILE", conflicts_with = "file")]
    config: Option<PathBuf>,
    /// Fail when a setting would be ignored (unknown keys or HERALD_* variables, Centrifugo
    /// options Herald does not implement yet), as `serve --strict-config` does.
    #[arg(long)]
    strict: bool,
}

#[derive(Debug, Args)]
struct ReloadArgs {
    /// The node's configuration file, for its address and API key. Default: $HERALD_CONFIG.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's reload endpoint. Default: from the configuration (its internal port when
    /// set), e.g. http://127.0.0.1:8000/api/reload.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Server API key. Default: http_api.key of the configuration.
    #[arg(long = "api-key", value_name = "KEY")]
    api_key: Option<String>,
}

/// Entry point of the `herald` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        // The start-up error's message is what is printed.
        None => serve(cli.serve).map_err(|e| e.to_string()),
        Some(Command::Serve(args)) => serve(args).map_err(|e| e.to_string()),
        Some(Command::Genconfig(args)) => genconfig(args),
        Some(Command::Gentoken(args)) => gentoken(args),
        Some(Command::Gensubtoken(args)) => gensubtoken(args),
        Some(Command::Checkconfig(args)) => checkconfig(args).map_err(|e| e.to_string()),
        Some(Command::Defaultconfig) => defaultconfig(),
        Some(Command::Reload(args)) => reload(args),
        Some(Command::Version) => {
            println!("herald {VERSION} ({}-{})", std::env::consts::ARCH, std::env::consts::OS);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The process environment, skipping variables that are not valid UTF-8.
fn process_env() -> Vec<(String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
}

/// The config file: the flag, else `HERALD_CONFIG` when set and not empty.
fn config_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
}

fn print_warnings(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn load_and_warn(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let Loaded { config, warnings } = loader::load(file, process_env(), overrides)?;
    print_warnings(&warnings);
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), StartupError> {
    let overrides = Overrides {
        port: args.port,
        address: args.address,
        log_level: args.log_level,
        api_key: args.api_key,
        strict: args.strict_config,
    };
    let file = config_file(args.config);
    let config = load_and_warn(file.as_deref(), &overrides)?;
    // Before anything creates metric handles (validation builds a hub): handles created
    // without a recorder stay no-ops. The server asks for the same handle again.
    telemetry::install_metrics().map_err(StartupError::Metrics)?;
    loader::validate(&config)?;
    print_warnings(&loader::warnings(&config));
    telemetry::init_logging(&config.log)?;
    crate::server::serve_reloadable(config, Some(crate::reload::Source { file, overrides }))
}

fn checkconfig(args: CheckconfigArgs) -> Result<(), ConfigError> {
    let file = config_file(args.file.or(args.config));
    let overrides = Overrides { strict: args.strict, ..Overrides::default() };
    let config = load_and_warn(file.as_deref(), &overrides)?;
    loader::validate(&config)?;
    print_warnings(&loader::warnings(&config));
    println!("config is valid");
    Ok(())
}

/// Prints the node's answer; fails when the node refused the configuration or did not answer.
fn reload(args: ReloadArgs) -> Result<(), String> {
    let config =
        load_and_warn(config_file(args.config).as_deref(), &Overrides::default()).map_err(|e| e.to_string())?;
    let url = match args.url {
        Some(url) => url,
        None => crate::reload_client::url_of(&config)?,
    };
    let key = args.api_key.unwrap_or_else(|| config.http_api.key.clone());
    let answer = crate::reload_client::request(&url, &key)?;
    println!("{answer}");
    if answer["outcome"] == "refused" {
        return Err(format!("the node refused the configuration: {}", answer["error"].as_str().unwrap_or("")));
    }
    Ok(())
}

fn defaultconfig() -> Result<(), String> {
    let text = serde_json::to_string_pretty(&Config::default()).map_err(|e| e.to_string())?;
    println!("{text}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// genconfig

/// A random URL-safe alphanumeric secret.
fn random_secret() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(48).map(char::from).collect()
}

/// The starter configuration in the format named by `extension` (`toml`, `yaml`, `yml` or
/// `json`), with the given secrets filled in. TOML and YAML are commented; JSON has the same
/// settings without comments.
pub fn starter_config(extension: &str, hmac_secret: &str, api_key: &str) -> Result<String, String> {
    let fill = |template: &str| template.replace("@HMAC_SECRET@", hmac_secret).replace("@API_KEY@", api_key);
    match extension.to_ascii_lowercase().as_str() {
        "toml" => Ok(fill(TOML_TEMPLATE)),
        "yaml" | "yml" => Ok(fill(YAML_TEMPLATE)),
        "json" => {
            let value: Value = toml::from_str(&fill(TOML_TEMPLATE)).map_err(|e| e.to_string())?;
            let mut text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            text.push('\n');
            Ok(text)
        }
        other => Err(format!("cannot write a {other:?} config: use a .toml, .yaml, .yml or .json file name")),
    }
}

fn genconfig(args: GenconfigArgs) -> Result<(), String> {
    let path = &args.output;
    let shown = path.display();
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let text = starter_config(extension, &random_secret(), &random_secret()).map_err(|e| format!("{shown}: {e}"))?;

    let mut options = OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The file holds secrets.
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => format!("{shown} already exists (use --force to overwrite it)"),
        _ => format!("cannot create {shown}: {e}"),
    })?;
    file.write_all(text.as_bytes()).map_err(|e| format!("cannot write {shown}: {e}"))?;
    eprintln!("wrote {shown} with a new HMAC secret and API key; start with: herald --config {shown}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// gentoken, gensubtoken

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}

/// Claims common to both token kinds: user, expiry, info, and the audience and issuer the
/// verifier requires.
fn base_claims(tc: &TokenConfig, user: &str, ttl: u64, info: Option<&str>) -> Result<Map<String, Value>, String> {
    let mut claims = Map::new();
    let user_claim = if tc.user_id_claim.is_empty() { "sub" } else { tc.user_id_claim.as_str() };
    claims.insert(user_claim.to_owned(), Value::from(user));
    if ttl > 0 {
        claims.insert("exp".into(), Value::from(now_unix() + ttl));
    }
    if let Some(info) = info {
        let info: Value = serde_json::from_str(info).map_err(|e| format!("--info is not valid JSON: {e}"))?;
        claims.insert("info".into(), info);
    }
    if !tc.audience.is_empty() {
        claims.insert("aud".into(), Value::from(tc.audience.clone()));
    }
    if !tc.issuer.is_empty() {
        claims.insert("iss".into(), Value::from(tc.issuer.clone()));
    }
    Ok(claims)
}

fn sign(claims: Map<String, Value>, tc: &TokenConfig, key: &str, alg: &str) -> Result<String, String> {
    if tc.hmac_secret_key.is_empty() {
        let env = format!("HERALD_{}_HMAC_SECRET_KEY", key.replace('.', "_").to_ascii_uppercase());
        return Err(format!(
            "no HMAC secret to sign with: set {key}.hmac_secret_key in the config file (--config) \
             or the {env} environment variable"
        ));
    }
    herald_auth::sign_hmac(&Value::Object(claims), &tc.hmac_secret_key, &alg.to_ascii_uppercase())
}

fn describe(alg: &str, kind: &str, user: &str, ttl: u64) -> String {
    let who = if user.is_empty() { "an anonymous user".to_owned() } else { format!("user {user}") };
    let expiry = if ttl == 0 { "never expires".to_owned() } else { format!("expires in {ttl}s") };
    format!("{} {kind} for {who}, {expiry}", alg.to_ascii_uppercase())
}

fn gentoken(args: GentokenArgs) -> Result<(), String> {
    let file = config_file(args.config);
    let config = load_and_warn(file.as_deref(), &Overrides::default()).map_err(|e| e.to_string())?;
    let tc = &config.client.token;
    let mut claims = base_claims(tc, &args.user, args.ttl, args.info.as_deref())?;
    if !args.channels.is_empty() {
        claims.insert("channels".into(), Value::from(args.channels.clone()));
    }
    let token = sign(claims, tc, "client.token", &args.alg)?;
    println!("{token}");
    eprintln!("{}", describe(&args.alg, "token", &args.user, args.ttl));
    Ok(())
}

fn gensubtoken(args: GensubtokenArgs) -> Result<(), String> {
    if args.channel.is_empty() {
        return Err("--channel must not be empty".into());
    }
    let file = config_file(args.config);
    let config = load_and_warn(file.as_deref(), &Overrides::default()).map_err(|e| e.to_string())?;
    let (tc, key) = if config.client.subscription_token.enabled {
        (&config.client.subscription_token, "client.subscription_token")
    } else {
        (&config.client.token, "client.token")
    };
    let mut claims = base_claims(tc, &args.user, args.ttl, args.info.as_deref())?;
    claims.insert("channel".into(), Value::from(args.channel.clone()));
    let token = sign(claims, tc, key, &args.alg)?;
    println!("{token}");
    eprintln!("{} (channel {})", describe(&args.alg, "subscription token", &args.user, args.ttl), args.channel);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn starter_configs_agree() {
        let toml_text = starter_config("toml", "s3cret", "k3y").unwrap();
        let yaml_text = starter_config("yaml", "s3cret", "k3y").unwrap();
        let json_text = starter_config("json", "s3cret", "k3y").unwrap();
        let from_toml: Value = toml::from_str(&toml_text).unwrap();
        let from_yaml: Value = serde_yaml_ng::from_str(&yaml_text).unwrap();
        let from_json: Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(from_toml, from_yaml);
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml["client"]["token"]["hmac_secret_key"], "s3cret");
        assert_eq!(from_toml["http_api"]["key"], "k3y");
        assert!(starter_config("ini", "a", "b").is_err());
    }

    #[test]
    fn secrets_are_random_and_url_safe() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert!(a.len() >= 32 && a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
