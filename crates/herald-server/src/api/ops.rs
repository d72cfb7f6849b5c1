//! Operator methods of the server API (Herald's own, in the one table [`super::methods::METHODS`]):
//! `trace_user` and `trace_stop` (per-user tracing, on every node) and `connections` (a
//! user's connections on every node, for the admin console's user lookup) and `reload` (the
//! configuration loaded again and applied, `crate::reload`).

use serde::{Deserialize, Serialize};

use super::methods::{ApiContext, ApiError, Empty, bad_request, missing};

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TraceUserRequest {
    user: String,
    /// Seconds; at most `admin.trace_max_duration`.
    duration: u64,
}

#[derive(Serialize)]
pub struct TraceUserResult {
    /// How many connections of the user this node traces now (others are traced on their
    /// nodes, and later connections from their connect).
    connections: usize,
    /// When the trace ends, Unix ms.
    until: i64,
}

pub(super) async fn trace_user(ctx: &ApiContext<'_>, b: TraceUserRequest) -> Result<TraceUserResult, ApiError> {
    if b.user.is_empty() {
        return Err(missing("user"));
    }
    let max = ctx.state.config.admin.trace_max_duration.as_secs();
    if b.duration == 0 || b.duration > max {
        return Err(bad_request(format_args!(
            "`duration` must be between 1 and {max} seconds (admin.trace_max_duration), got {}",
            b.duration
        )));
    }
    let (until, connections) = ctx.state.node.api_trace_user(&b.user, (b.duration * 1000) as i64).await?;
    tracing::info!(user = %b.user, duration = b.duration, peer = %ctx.peer, "user trace started");
    Ok(TraceUserResult { connections, until })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TraceStopRequest {
    user: String,
}

pub(super) async fn trace_stop(ctx: &ApiContext<'_>, b: TraceStopRequest) -> Result<Empty, ApiError> {
    if b.user.is_empty() {
        return Err(missing("user"));
    }
    ctx.state.node.api_trace_stop(&b.user).await?;
    Ok(Empty {})
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ConnectionsRequest {
    user: String,
}

#[derive(Serialize)]
pub struct ConnectionsResult {
    connections: Vec<Connection>,
    /// The node answering.
    node: String,
    /// Live nodes that did not answer within `node.survey_timeout`: their connections are not
    /// listed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_nodes: Vec<String>,
    /// More than [`MAX_LISTED`] connections: the rest are not listed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Serialize)]
struct Connection {
    channels: Vec<String>,
    client: String,
    /// The node the connection is on.
    node: String,
    traced: bool,
}

/// The most connections listed for one user (over all nodes).
const MAX_LISTED: usize = 100;

/// The user's connections on every node of the cluster (a survey, `herald_hub::survey`).
pub(super) async fn connections(ctx: &ApiContext<'_>, b: ConnectionsRequest) -> Result<ConnectionsResult, ApiError> {
    if b.user.is_empty() {
        return Err(missing("user"));
    }
    let timeout = ctx.state.config.node.survey_timeout;
    let merged = ctx.state.node.survey_connections(&b.user, MAX_LISTED, tokio::time::sleep(timeout)).await;
    let connections = merged
        .connections
        .into_iter()
        .map(|(node, c)| Connection { channels: c.channels, client: c.client, node, traced: c.traced })
        .collect();
    Ok(ConnectionsResult {
        connections,
        node: ctx.state.node.identity().name.clone(),
        missing_nodes: merged.missing,
        truncated: merged.truncated,
    })
}

/// `reload` takes no parameters (any object is accepted).
#[derive(Deserialize, Default)]
pub struct ReloadRequest {}

#[derive(Serialize, Default)]
pub struct ReloadResult {
    /// Keys applied at once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    applied: Vec<String>,
    /// Why the configuration was refused (nothing changed).
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
    /// The key the refusal is about, when it is about one.
    #[serde(skip_serializing_if = "String::is_empty")]
    key: String,
    /// `applied`, `restart_needed`, `unchanged` or `refused`.
    outcome: &'static str,
    /// Keys that changed but take effect at the next restart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    restart: Vec<String>,
    /// The configuration version in force after the call.
    version: u64,
}

/// Loads the configuration again, as SIGHUP does, and answers what happened. Runs on the
/// caller's task: a reload reads one file and is rare.
pub(super) async fn reload(ctx: &ApiContext<'_>, _: ReloadRequest) -> Result<ReloadResult, ApiError> {
    let Some(reloader) = &ctx.state.reloader else {
        return Err(ApiError {
            code: herald_proto::codes::ERROR_NOT_AVAILABLE.code,
            message: "not available: this server was not started from a configuration it can load again".into(),
        });
    };
    tracing::info!(peer = %ctx.peer, "configuration reload requested through the server API");
    let outcome = reloader.reload(ctx.state);
    let mut r = ReloadResult { outcome: outcome.label(), ..Default::default() };
    match outcome {
        crate::reload::Outcome::Refused { key, error } => {
            r.key = key.unwrap_or_default();
            r.error = error;
        }
        crate::reload::Outcome::Unchanged => {}
        crate::reload::Outcome::Changed { applied, restart } => {
            r.applied = applied;
            r.restart = restart;
        }
    }
    r.version = reloader.version();
    Ok(r)
}
