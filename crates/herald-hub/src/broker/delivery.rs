//! The node's delivery sink: hands what an engine delivers to the local subscribers in the hub
//! and counts the pushes. It holds only the hub, so an engine may call it from any task and
//! under its own locks (lock order: engine channel → hub, whose shard and channel locks are
//! taken one after the other) without reaching the node.

use std::sync::Arc;

use herald_proto::{ClientInfo, Publication};
use uuid::Uuid;

use super::BrokerHandler;
use crate::hub::Hub;
use crate::metrics;

/// The [`BrokerHandler`] a node registers with its engine.
pub(crate) struct Delivery {
    hub: Arc<Hub>,
}

impl Delivery {
    pub(crate) fn new(hub: Arc<Hub>) -> Self {
        Delivery { hub }
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
}
