//! Client `rpc` and `send`: messages for an application backend. No backend is configured for
//! them yet, so `rpc` answers error 104 (method not found) and `send` disconnects with 3508
//! (not available). A logic-layer proxy plugs in here.

use herald_proto::codes::*;
use herald_proto::{RpcRequest, SendRequest};

use super::{CmdResult, Session};

impl Session {
    /// An RPC call: without a backend no method exists.
    pub(super) fn rpc(&self, _req: &RpcRequest) -> CmdResult {
        Err(ERROR_METHOD_NOT_FOUND.into())
    }

    /// An asynchronous message to the backend: without one the client is told it is not
    /// available, by disconnect (a `send` has no reply to carry an error).
    pub(super) fn send_message(&self, _req: &SendRequest) -> CmdResult {
        Err(DISCONNECT_NOT_AVAILABLE.into())
    }
}
