//! The node's side of cluster surveys ([`crate::survey`]): asking every live node and waiting
//! for the answers until a deadline the caller supplies, and sending the replies this node owes.

use std::future::{Future, poll_fn};
use std::pin::pin;

use futures_util::future::{Either, select};

use super::*;
use crate::survey::{self, MergedChannels, MergedConnections, Outcome, Query, Waiting};

impl Node {
    /// Server API `channels` over the whole cluster: channels with subscribers on any node
    /// matching a glob (`*`, `?`, `[...]`; empty: all), counts summed over nodes, at most
    /// `limit`. `deadline` resolves when the caller stops waiting for other nodes.
    pub async fn survey_channels(
        &self,
        pattern: &str,
        limit: usize,
        deadline: impl Future<Output = ()>,
    ) -> Result<MergedChannels, ErrorCode> {
        if !pattern.is_empty() && glob(pattern).is_none() {
            return Err(ERROR_BAD_REQUEST);
        }
        let query = Query::Channels { pattern: pattern.to_owned(), limit };
        Ok(self.survey(query, deadline).await.channels(limit))
    }

    /// Server API `connections` over the whole cluster: the user's connections on every node,
    /// at most `limit`.
    pub async fn survey_connections(
        &self,
        user: &str,
        limit: usize,
        deadline: impl Future<Output = ()>,
    ) -> MergedConnections {
        let query = Query::Connections { user: user.to_owned(), limit };
        self.survey(query, deadline).await.connections(limit)
    }

    /// Asks every live node (this one answers locally, first) and gathers the answers that
    /// arrive before `deadline`. Outside a cluster, or alone in it, no message is sent.
    async fn survey(&self, query: Query, deadline: impl Future<Output = ()>) -> Outcome {
        let own = survey::NodeAnswer {
            uid: self.identity.uid.clone(),
            name: self.identity.name.clone(),
            answer: survey::answer(&self.hub, &query),
        };
        let others: Vec<(String, String)> = if self.clustered() {
            self.nodes().into_iter().filter(|n| n.uid != self.identity.uid).map(|n| (n.uid, n.name)).collect()
        } else {
            Vec::new()
        };
        if others.is_empty() {
            return Outcome { answers: vec![own], missing: Vec::new() };
        }
        let op = query.op();
        let surveys = self.cluster.surveys();
        let waiting = Waiting { surveys, id: surveys.start(op, others) };
        metrics::survey_sent(op);
        let payload = cluster::encode(&self.identity.uid, &Command::Survey { id: waiting.id, query });
        if let Err(e) = self.broker.publish_control(None, payload).await {
            // Every other node is then reported as not answering.
            metrics::control_send_failed();
            tracing::warn!(error = %e, op, "cluster survey not sent");
        } else {
            let complete = pin!(poll_fn(|cx| surveys.poll_complete(waiting.id, cx)));
            if let Either::Right(_) = select(complete, pin!(deadline)).await {
                tracing::debug!(op, "cluster survey deadline reached");
            }
        }
        let mut outcome = waiting.finish();
        outcome.answers.insert(0, own);
        if !outcome.missing.is_empty() {
            tracing::warn!(op, missing = ?outcome.missing, "nodes did not answer a cluster survey in time");
        }
        outcome
    }

    /// Sends the replies this node owes to other nodes' surveys, as they are queued; runs for
    /// the node's life (spawned by the server in a cluster). A failed send is counted and
    /// logged: the asker reports this node as not answering.
    pub async fn run_survey_replies(&self) {
        loop {
            let (to, payload) = self.cluster.surveys().next_reply().await;
            if let Err(e) = self.broker.publish_control(Some(&to), payload).await {
                metrics::control_send_failed();
                tracing::warn!(error = %e, to, "survey reply not sent");
            }
        }
    }
}
