//! Forwarding `/emulation` requests to the node that holds the session: the commands a client
//! posts to any node reach its SSE or HTTP-streaming session through the engine's control
//! channel ([`Command::Emulation`]), addressed to that node alone.

use super::*;
use crate::cluster::EmulationSink;

/// What became of commands forwarded to another node's emulation session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmulationForward {
    /// Handed to the engine for that node (the node runs them when they arrive; like a local
    /// post, an unknown session there drops them).
    Sent,
    /// Not a live node of this cluster (or no cluster at all): the session is gone with it.
    UnknownNode,
    /// The engine did not take the message; the reason, for the client's error.
    BrokerDown(String),
}

impl Node {
    /// Registers where commands forwarded to this node's emulation sessions go (the server's
    /// session registry).
    pub fn set_emulation_sink(&self, sink: Arc<dyn EmulationSink>) {
        self.cluster.set_emulation_sink(sink);
    }

    /// Sends `data` (the encoded commands of an `/emulation` request) to emulation session
    /// `session` of node `node`. The caller bounds `data` (`emulation.max_request_body_size`).
    pub async fn forward_emulation(&self, node: &str, session: &str, data: &[u8]) -> EmulationForward {
        if !self.clustered() || node == self.identity.uid || !self.cluster.knows(node, self.time.now_ms()) {
            return EmulationForward::UnknownNode;
        }
        let command = Command::Emulation { node: node.to_owned(), session: session.to_owned(), data: data.to_vec() };
        let payload = cluster::encode(&self.identity.uid, &command);
        match self.broker.publish_control(Some(node), payload).await {
            Ok(()) => EmulationForward::Sent,
            Err(e) => {
                metrics::control_send_failed();
                tracing::warn!(error = %e, node, "emulation commands not forwarded");
                EmulationForward::BrokerDown(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;
    use crate::clock::ManualClock;

    /// Outside a cluster (the memory engine carries no control messages) no node but this one
    /// exists, so nothing is sent and the client gets 404 (the SDK reconnects).
    #[test]
    fn a_node_outside_a_cluster_knows_no_other_node() {
        let identity = NodeIdentity { uid: "a".into(), name: "a".into(), version: "v".into() };
        let node = Node::new(HubConfig::default(), identity, Arc::new(ManualClock::new(0))).unwrap();
        let forwarded = node.forward_emulation("b", "s", b"{}").now_or_never().expect("no wait without a cluster");
        assert_eq!(forwarded, EmulationForward::UnknownNode);
    }
}
