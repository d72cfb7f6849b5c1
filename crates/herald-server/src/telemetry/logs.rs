//! Logging: the tracing subscriber, its outputs (stderr or `log.file`, `log.error_file`,
//! `log.access_file`), the runtime level change and the reopening of log files on SIGHUP.
//!
//! Access lines are events of target [`ACCESS`]: they go to `log.access_file` when set, else to
//! the main log when `log.access` is on, else nowhere. Error lines (warn and error) go to the
//! main log as usual and, when `log.error_file` is set, to that file too, whatever `log.level`.
//! Field names are stable and documented in docs/logging.md.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogConfig;
use crate::config_error::ConfigError;

/// The target of access lines (one per API request and per client connection closed).
pub const ACCESS: &str = "herald::access";

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global tracing subscriber. Does nothing if a subscriber is already installed
/// (tests, repeated calls). Fails, naming the key, when a log file cannot be opened.
///
/// `RUST_LOG`, when set and not empty, replaces `log.level` with a full filter (e.g.
/// `RUST_LOG=herald_hub=debug,info`).
pub fn init_logging(cfg: &LogConfig) -> Result<(), ConfigError> {
    let json = cfg.format == "json";
    let access_in_main = cfg.access && cfg.access_file.is_empty();
    let _ = ACCESS_IN_MAIN.set(access_in_main);
    let from_env = std::env::var("RUST_LOG").ok().filter(|d| !d.trim().is_empty());
    let filter = match &from_env {
        Some(directives) => match EnvFilter::try_new(directives) {
            Ok(filter) => Some(filter),
            Err(e) => {
                eprintln!("warning: ignoring RUST_LOG={directives:?}: {e}");
                level_filter(&cfg.level)
            }
        },
        None => level_filter(&cfg.level),
    };
    let mut layers: Vec<Boxed> = Vec::new();
    let mut handle = None;
    if let Some(filter) = filter {
        let (filter, h) = reload::Layer::new(filter);
        handle = Some(h);
        let layer = if cfg.file.is_empty() {
            let ansi = !json && std::io::stderr().is_terminal();
            format(std::io::stderr, json, ansi)
        } else {
            format(LogFile::open("log.file", &cfg.file)?, json, false)
        };
        layers.push(layer.with_filter(filter).boxed());
    }
    if !cfg.error_file.is_empty() {
        let file = LogFile::open("log.error_file", &cfg.error_file)?;
        // Access lines are info: never errors, whatever their target.
        layers.push(format(file, json, false).with_filter(LevelFilter::WARN).boxed());
    }
    if !cfg.access_file.is_empty() {
        let file = LogFile::open("log.access_file", &cfg.access_file)?;
        let only_access = Targets::new().with_target(ACCESS, LevelFilter::INFO);
        layers.push(format(file, json, false).with_filter(only_access).boxed());
    }
    if layers.is_empty() {
        return Ok(());
    }
    if tracing_subscriber::registry().with(layers).try_init().is_ok()
        && from_env.is_none()
        && let Some(handle) = handle
    {
        let _ = LEVEL.set(handle);
    }
    Ok(())
}

/// A formatting layer writing to `writer`, as text or JSON lines.
fn format<W>(writer: W, json: bool, ansi: bool) -> Boxed
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    // Event fields at the top level of a JSON line, next to `timestamp`, `level`, `target`.
    if json { fmt.json().flatten_event(true).boxed() } else { fmt.boxed() }
}

/// The main layer's filter, when `log.level` chose it (not `RUST_LOG`).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Whether access lines belong in the main log (`log.access` without `log.access_file`).
static ACCESS_IN_MAIN: OnceLock<bool> = OnceLock::new();

/// Why a new `log.level` could not be applied while running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` decides the filter.
    SetByEnv,
    /// Logging was off (`none`) at start, or no subscriber of Herald's is installed: a restart
    /// is needed.
    NeedsRestart,
}

/// Applies a new `log.level` to the running subscriber (`herald` reload).
pub fn set_level(level: &str) -> LevelChange {
    if std::env::var("RUST_LOG").is_ok_and(|d| !d.trim().is_empty()) {
        return LevelChange::SetByEnv;
    }
    let (Some(handle), Some(filter)) = (LEVEL.get(), level_filter(level)) else { return LevelChange::NeedsRestart };
    match handle.reload(filter) {
        Ok(()) => LevelChange::Applied,
        Err(_) => LevelChange::NeedsRestart,
    }
}

/// The main log's filter for a `log.level` value; `None` for `none`. Unknown levels fall back to
/// `info` (the loader's validation rejects them earlier). Access lines are left out unless
/// they belong in the main log.
fn level_filter(level: &str) -> Option<EnvFilter> {
    let level = match level {
        "none" => return None,
        "trace" | "debug" | "info" | "warn" | "error" => level,
        _ => "info",
    };
    let access = if ACCESS_IN_MAIN.get().copied().unwrap_or(false) { "info" } else { "off" };
    Some(EnvFilter::new(format!("{level},{ACCESS}={access}")))
}

/// Log files open for appending, reopened by [`reopen_log_files`].
static FILES: Mutex<Vec<Arc<LogFile>>> = Mutex::new(Vec::new());

/// A log file shared by the writers of one layer. Each line is written under the lock in one
/// call, so lines from different threads never interleave.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(key: &str, path: &str) -> Result<Writer, ConfigError> {
        let file = append(path.as_ref())
            .map_err(|e| ConfigError::invalid(key, format!("cannot open {path:?} for appending: {e}")))?;
        let shared = Arc::new(LogFile { path: path.into(), file: Mutex::new(file) });
        FILES.lock().unwrap_or_else(|p| p.into_inner()).push(shared.clone());
        Ok(Writer(shared))
    }
}

fn append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Opens every log file again by its path (after logrotate moved it away): lines written from
/// now on go to the new file. Returns the files that could not be reopened, which keep writing
/// to the old one.
pub fn reopen_log_files() -> Vec<(PathBuf, io::Error)> {
    let files = FILES.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut failed = Vec::new();
    for log in files {
        match append(&log.path) {
            Ok(file) => *log.file.lock().unwrap_or_else(|p| p.into_inner()) = file,
            Err(e) => failed.push((log.path.clone(), e)),
        }
    }
    failed
}

/// The `MakeWriter` of a [`LogFile`].
#[derive(Clone)]
struct Writer(Arc<LogFile>);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.file.lock().unwrap_or_else(|p| p.into_inner()).write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'w> MakeWriter<'w> for Writer {
    type Writer = Writer;

    fn make_writer(&'w self) -> Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert!(level_filter("none").is_none());
        assert!(level_filter("debug").is_some());
        init_logging(&LogConfig::default()).unwrap();
        init_logging(&LogConfig { level: "debug".into(), format: "json".into(), ..LogConfig::default() }).unwrap();
    }

    #[test]
    fn a_log_file_is_reopened_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("herald.log");
        let mut writer = LogFile::open("log.file", path.to_str().unwrap()).unwrap();
        writer.write_all(b"one\n").unwrap();
        std::fs::rename(&path, dir.path().join("herald.log.1")).unwrap();
        writer.write_all(b"two\n").unwrap();
        assert!(reopen_log_files().is_empty());
        writer.write_all(b"three\n").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("herald.log.1")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let err = LogFile::open("log.error_file", "/nonexistent/dir/x.log").err().unwrap().to_string();
        assert!(err.contains("log.error_file") && err.contains("cannot open"), "{err}");
    }
}
