//! The `batch` method: its request and answer, and the runner that executes its commands one
//! after another or (`"parallel": true`) concurrently with the replies kept in command order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use herald_proto::codes::ERROR_METHOD_NOT_FOUND;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiContext, ApiError, ApiMethod, BadJson, Short, YIELD_EVERY, bad_request, find, parse};

/// Commands, each an object naming one method: `{"publish": {...}}`. Commands stay borrowed
/// raw JSON until they run, so an over-long batch is refused before anything is built for it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct BatchRequest<'a> {
    #[serde(borrow)]
    commands: Vec<&'a RawValue>,
    /// Run the commands concurrently (at most [`PARALLEL_BOUND`] at once); replies stay in
    /// command order, their effects have no order. False: one after another, in order.
    parallel: bool,
}

/// Parses a `batch` body and each of its commands as `batch` would before running them: per
/// command, the method it names or the message of its error reply. `Err`: the body's 400.
pub fn parse_batch_commands(body: &[u8]) -> Result<Vec<Result<&'static str, String>>, String> {
    let request = parse::<BatchRequest<'_>>(body).map_err(|BadJson(message)| message)?;
    let parsed = request.commands.iter().map(|command| {
        let (method, params) = batch_method(command).map_err(|e| e.message.into_owned())?;
        (method.parse)(params.get().as_bytes()).map_err(|bad| batch_bad_json(bad).message.into_owned())?;
        Ok(method.name)
    });
    Ok(parsed.collect())
}

#[derive(Serialize)]
pub(super) struct BatchResult {
    pub(super) replies: Vec<BatchReply>,
}

/// `{"<method>": answer}` or `{"error": ...}`.
#[derive(Serialize)]
#[serde(untagged)]
pub(super) enum BatchReply {
    Answer(BTreeMap<&'static str, Box<RawValue>>),
    Error { error: ApiError },
}

/// Commands of one `parallel` batch in flight at once. Over a network engine they are
/// pipelined on its one connection: past a few dozen in flight a broker round trip is already
/// filled, and the bound keeps a batch at the 1000-command limit from queueing all of it ahead
/// of every other caller of that connection (and its pending replies in memory).
pub(super) const PARALLEL_BOUND: usize = 64;

pub(super) async fn batch(ctx: &ApiContext<'_>, b: BatchRequest<'_>) -> Result<BatchResult, ApiError> {
    let limit = ctx.state.config.http_api.max_batch_commands;
    if b.commands.len() > limit {
        metrics::counter!("herald_api_batches_over_limit_total").increment(1);
        return Err(bad_request(format_args!(
            "too many commands in batch: {}, the limit is {limit} (http_api.max_batch_commands)",
            b.commands.len()
        )));
    }
    // Sequential is the same run with one command in flight: each starts after the previous
    // one's answer, so publishes to one channel keep their order.
    let bound = if b.parallel { PARALLEL_BOUND } else { 1 };
    let replies = run_in_order(b.commands.iter(), bound, |command| async move {
        match batch_command(ctx, command).await {
            Ok((name, answer)) => BatchReply::Answer(BTreeMap::from([(name, answer)])),
            Err(error) => BatchReply::Error { error },
        }
    })
    .await;
    Ok(BatchResult { replies })
}

/// Runs `run` on every item with at most `bound` of the futures in flight, and answers their
/// outputs in item order. A future's first poll does its synchronous work (parsing, encoding
/// the engine command) on this worker thread, so at most [`YIELD_EVERY`] are started between
/// two yields to the worker's runtime, however many are in flight.
pub(super) async fn run_in_order<I, F, Fut>(mut items: I, bound: usize, mut run: F) -> Vec<Fut::Output>
where
    I: ExactSizeIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: Future,
{
    // A pushed future starts at its first poll, which `FuturesOrdered` may put off while it
    // holds finished outputs: the futures count their own starts. Pushed since the last yield
    // (started or not) never exceeds YIELD_EVERY, so neither do the starts between two yields.
    let started = AtomicUsize::new(0);
    let mut outputs = Vec::with_capacity(items.len());
    let mut running = FuturesOrdered::new();
    let (mut pushed, mut at_yield) = (0, 0);
    loop {
        let room = bound.max(1).saturating_sub(running.len()).min(YIELD_EVERY - (pushed - at_yield));
        let before = pushed;
        for item in items.by_ref().take(room) {
            let (started, command) = (&started, run(item));
            running.push_back(async move {
                started.fetch_add(1, Ordering::Relaxed);
                command.await
            });
            pushed += 1;
        }
        let next = if pushed > before {
            // Start the new ones now and come back for more room even if the first reply is
            // not in yet.
            std::future::poll_fn(|cx| Poll::Ready(running.poll_next_unpin(cx))).await
        } else {
            Poll::Ready(running.next().await)
        };
        match next {
            Poll::Ready(Some(output)) => outputs.push(output),
            Poll::Ready(None) => break,
            Poll::Pending => {}
        }
        if started.load(Ordering::Relaxed) - at_yield == YIELD_EVERY {
            tokio::task::yield_now().await;
            at_yield += YIELD_EVERY;
        }
    }
    outputs
}

/// Runs one batch command: the first key, in key order, that names a method other than batch
/// itself.
async fn batch_command(ctx: &ApiContext<'_>, command: &RawValue) -> Result<(&'static str, Box<RawValue>), ApiError> {
    let (method, params) = batch_method(command)?;
    match (method.call)(ctx, params.get().as_bytes()).await {
        Ok(answer) => answer.map(|a| (method.name, a)),
        Err(bad) => Err(batch_bad_json(bad)),
    }
}

/// The method a batch command names, and its params.
pub(super) fn batch_method(command: &RawValue) -> Result<(&'static ApiMethod, &RawValue), ApiError> {
    let command: BTreeMap<String, &RawValue> = serde_json::from_str(command.get())
        .map_err(|_| bad_request(r#"a batch command must be an object naming one method, e.g. {"publish": {...}}"#))?;
    let found = command.iter().find_map(|(k, params)| Some((find(k).filter(|m| m.wrap_result)?, *params)));
    let Some((method, params)) = found else {
        return Err(match command.keys().next() {
            Some(name) if name == "batch" => ApiError::with(ERROR_METHOD_NOT_FOUND, "a batch cannot contain `batch`"),
            Some(name) => ApiError::with(ERROR_METHOD_NOT_FOUND, format_args!("unknown API method `{}`", Short(name))),
            None => ApiError::with(ERROR_METHOD_NOT_FOUND, "the command names no method"),
        });
    };
    Ok((method, params))
}

/// Params of a batch command that do not parse: its 107 reply.
pub(super) fn batch_bad_json(BadJson(msg): BadJson) -> ApiError {
    bad_request(msg.strip_prefix("invalid request: ").unwrap_or(&msg))
}
