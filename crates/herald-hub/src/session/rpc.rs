//! Client `rpc` and `send`: messages for an application backend. An RPC method goes to the
//! proxy of its namespace (`rpc.namespaces[]`, or `rpc.without_namespace` for a method without
//! the `:` boundary); a method no backend serves is error 104 (method not found). `send` has no
//! backend and disconnects with 3508 (not available).

use herald_proto::codes::*;
use herald_proto::{Reply, RpcRequest, RpcResult, SendRequest};

use super::{CmdResult, Session};
use crate::ports::Ports;
use crate::proxy::{ProxyKind, wire};

impl Session {
    /// An RPC call, answered by the backend of its namespace.
    pub(super) async fn rpc(&self, p: &Ports<'_>, id: u32, req: &RpcRequest) -> CmdResult {
        let Some(proxy) = p.backend().table().rpc_route_for(&req.method) else {
            return Err(ERROR_METHOD_NOT_FOUND.into());
        };
        let body = {
            let (common, binary) = self.proxy_common(proxy);
            let body = wire::RpcRequest { common, method: &req.method, payload: wire::payload(&req.data, binary) };
            serde_json::to_vec(&body).expect("serializable")
        };
        let r: wire::RpcResult = self.ask(p, proxy, ProxyKind::Rpc, body).await?;
        let Ok(data) = wire::bytes_of(r.data.as_deref(), r.b64data.as_deref()) else {
            tracing::warn!(client = %self.link.id(), user = %self.user, trace_id = self.trace_id(), method = %req.method, "rpc proxy answered invalid base64");
            return Err(ERROR_INTERNAL.into());
        };
        self.send(&Reply { id, rpc: Some(RpcResult { data }), ..Default::default() });
        Ok(())
    }

    /// An asynchronous message to the backend: without one the client is told it is not
    /// available, by disconnect (a `send` has no reply to carry an error).
    pub(super) fn send_message(&self, _req: &SendRequest) -> CmdResult {
        Err(DISCONNECT_NOT_AVAILABLE.into())
    }
}
