//! [`ConfigError`], why a configuration could not be loaded or is invalid: which source (file,
//! environment variable, flag) and which dotted key, and what is wrong.
//!
//! The `Display` texts are what `herald` prints after `error: `; scripts and tests match them,
//! so they must not change.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A configuration that could not be loaded ([`crate::loader::load`]) or that breaks a rule
/// ([`crate::loader::validate`], or the hub's own checks).
#[derive(Debug)]
pub enum ConfigError {
    /// The config file could not be used at all.
    File { path: PathBuf, problem: FileProblem },
    /// A `HERALD_*` variable's text does not fit the type of the key it sets.
    Env {
        variable: String,
        /// Dotted key the variable sets.
        key: String,
        /// What the key's type accepts, e.g. "an integer".
        expected: &'static str,
        got: String,
        /// The JSON parser's message, for values that must be JSON.
        parse_error: Option<String>,
    },
    /// The merged layers do not deserialize into the typed configuration.
    Deserialize {
        /// Dotted key of the bad value; empty when the deserializer could not name it.
        key: String,
        message: String,
        /// The layer that set the key, when it was not the file.
        set_by: Option<Source>,
    },
    /// A Centrifugo option Herald does not implement yet is turned on, and ignoring it would
    /// weaken security or lose messages.
    Unsupported {
        /// Dotted key that turns it on.
        key: String,
        /// What the option is.
        what: &'static str,
        /// What ignoring it would do, and what to do instead.
        why: &'static str,
        /// The layer that set the key, when it was not the file.
        set_by: Option<Source>,
    },
    /// Strict mode (`checkconfig --strict`, `serve --strict-config`): settings would be ignored.
    Ignored {
        /// The warnings that name them (unknown keys and variables, unimplemented options).
        warnings: Vec<String>,
    },
    /// A value that deserializes but breaks a rule.
    Invalid {
        /// Dotted key at fault; empty when the check could not name one.
        key: String,
        problem: String,
    },
}

/// What is wrong with the config file itself.
#[derive(Debug)]
pub enum FileProblem {
    /// The extension names no supported format.
    UnknownFormat,
    NotFound,
    Unreadable(io::Error),
    Unparsable {
        format: FileFormat,
        message: String,
    },
    /// The document is a list or a scalar instead of a map of sections.
    NotAMap,
}

/// Formats a config file can be in, chosen by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Yaml,
    Toml,
}

/// A layer above the file that set a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The name of the `HERALD_*` variable.
    Env(String),
    /// The flag's long name without the dashes (`port` for `--port`).
    Flag(&'static str),
}

impl ConfigError {
    /// A value that breaks a rule.
    pub fn invalid(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid { key: key.into(), problem: problem.into() }
    }

    /// The dotted key at fault, when the error names one (file errors do not).
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::File { .. } | ConfigError::Ignored { .. } => None,
            ConfigError::Env { key, .. }
            | ConfigError::Deserialize { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::Unsupported { key, .. } => (!key.is_empty()).then_some(key.as_str()),
        }
    }
}

impl From<herald_hub::ConfigError> for ConfigError {
    fn from(e: herald_hub::ConfigError) -> Self {
        ConfigError::Invalid { key: e.key, problem: e.problem }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, problem } => {
                let shown = path.display();
                match problem {
                    FileProblem::UnknownFormat => write!(
                        f,
                        "config file \"{shown}\": unknown format (the name must end in .json, .yaml, .yml or .toml)"
                    ),
                    FileProblem::NotFound => write!(f, "config file \"{shown}\" not found"),
                    FileProblem::Unreadable(e) => write!(f, "cannot read config file \"{shown}\": {e}"),
                    FileProblem::Unparsable { format, message } => {
                        write!(f, "cannot parse config file \"{shown}\" as {format}: {message}")
                    }
                    FileProblem::NotAMap => {
                        write!(f, "config file \"{shown}\": the top level must be a map of sections")
                    }
                }
            }
            ConfigError::Env { variable, key, expected, got, parse_error } => {
                write!(
                    f,
                    "invalid value for environment variable {variable} ({key}): expected {expected}, got {got:?}"
                )?;
                match parse_error {
                    Some(e) => write!(f, ": {e}"),
                    None => Ok(()),
                }
            }
            ConfigError::Deserialize { key, message, set_by } => {
                if key.is_empty() {
                    write!(f, "invalid configuration: {message}")?;
                } else {
                    write!(f, "invalid value for {key}: {message}")?;
                }
                match set_by {
                    Some(source) => write!(f, " (set by {source})"),
                    None => Ok(()),
                }
            }
            ConfigError::Unsupported { key, what, why, set_by } => {
                write!(f, "{key}: Herald does not support this Centrifugo option yet ({what}); {why}")?;
                match set_by {
                    Some(source) => write!(f, " (set by {source})"),
                    None => Ok(()),
                }
            }
            ConfigError::Ignored { warnings } => {
                write!(f, "strict mode: {} setting(s) would be ignored: {}", warnings.len(), warnings.join("; "))
            }
            // Same form as the hub's errors, which become this variant.
            ConfigError::Invalid { key, problem } if key.is_empty() => f.write_str(problem),
            ConfigError::Invalid { key, problem } => write!(f, "{key}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::File { problem: FileProblem::Unreadable(e), .. } => Some(e),
            _ => None,
        }
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Json => "JSON",
            FileFormat::Yaml => "YAML",
            FileFormat::Toml => "TOML",
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(flag) => write!(f, "--{flag}"),
        }
    }
}
