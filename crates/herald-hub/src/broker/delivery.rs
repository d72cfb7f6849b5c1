//! The node's delivery sink: hands what an engine delivers to the local subscribers in the hub
//! and counts the pushes. It holds only the hub, so an engine may call it from any task and
//! under its own locks (lock order: engine channel → hub, whose shard and channel locks are
//! taken one after the other) without reaching the node.

use std::sync::Arc;

use bytes::Bytes;
use herald_proto::{ClientInfo, Publication};
use uuid::Uuid;

use super::BrokerHandler;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::hub::Hub;
use crate::metrics;

/// The [`BrokerHandler`] a node registers with its engine.
pub(crate) struct Delivery {
    hub: Arc<Hub>,
    cluster: Arc<Cluster>,
    clock: Arc<dyn Clock>,
}

impl Delivery {
    pub(crate) fn new(hub: Arc<Hub>, cluster: Arc<Cluster>, clock: Arc<dyn Clock>) -> Self {
        Delivery { hub, cluster, clock }
    }
}

impl BrokerHandler for Delivery {
    fn handle_publication(&self, channel: &str, publication: &Publication, exclude_client: Option<Uuid>) {
        metrics::delivered(self.hub.broadcast_publication(channel, publication, exclude_client));
    }

    fn handle_join(&self, channel: &str, info: &ClientInfo) {
        metrics::delivered(self.hub.broadcast_join(channel, info));
    }

    fn handle_leave(&self, channel: &str, info: &ClientInfo) {
        metrics::delivered(self.hub.broadcast_leave(channel, info));
    }

    fn handle_control(&self, payload: Bytes) {
        self.cluster.handle(&self.hub, &payload, self.clock.now_ms());
    }

    fn handle_reconnect(&self, affected: &dyn Fn(&str) -> bool) {
        let n = self.hub.resync(affected);
        metrics::resync(n);
        tracing::info!(subscriptions = n, "engine reconnected: local subscriptions told to recover");
    }
}
