//! Error, unsubscribe and disconnect codes of the client protocol, with their standard texts.
//!
//! Error codes travel in `Reply.error`; unsubscribe codes in Unsubscribe pushes (< 2500: the
//! subscription ends; ≥ 2500: the client resubscribes); disconnect codes in WebSocket close
//! frames or Disconnect pushes (3000–3499 and 4000–4499: the client reconnects; 3500–3999 and
//! 4500–4999: it stays disconnected).

use std::borrow::Cow;

use crate::protocol::Error;

/// A protocol error code with its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: u32,
    pub message: &'static str,
    pub temporary: bool,
}

impl ErrorCode {
    const fn new(code: u32, message: &'static str, temporary: bool) -> Self {
        ErrorCode { code, message, temporary }
    }

    pub fn to_error(self) -> Error {
        Error { code: self.code, message: self.message.to_owned(), temporary: self.temporary }
    }
}

impl From<ErrorCode> for Error {
    fn from(e: ErrorCode) -> Error {
        e.to_error()
    }
}

pub const ERROR_INTERNAL: ErrorCode = ErrorCode::new(100, "internal server error", true);
pub const ERROR_UNAUTHORIZED: ErrorCode = ErrorCode::new(101, "unauthorized", false);
pub const ERROR_UNKNOWN_CHANNEL: ErrorCode = ErrorCode::new(102, "unknown channel", false);
pub const ERROR_PERMISSION_DENIED: ErrorCode = ErrorCode::new(103, "permission denied", false);
pub const ERROR_METHOD_NOT_FOUND: ErrorCode = ErrorCode::new(104, "method not found", false);
pub const ERROR_ALREADY_SUBSCRIBED: ErrorCode = ErrorCode::new(105, "already subscribed", false);
pub const ERROR_LIMIT_EXCEEDED: ErrorCode = ErrorCode::new(106, "limit exceeded", false);
pub const ERROR_BAD_REQUEST: ErrorCode = ErrorCode::new(107, "bad request", false);
pub const ERROR_NOT_AVAILABLE: ErrorCode = ErrorCode::new(108, "not available", false);
pub const ERROR_TOKEN_EXPIRED: ErrorCode = ErrorCode::new(109, "token expired", false);
pub const ERROR_EXPIRED: ErrorCode = ErrorCode::new(110, "expired", false);
pub const ERROR_TOO_MANY_REQUESTS: ErrorCode = ErrorCode::new(111, "too many requests", true);
pub const ERROR_UNRECOVERABLE_POSITION: ErrorCode = ErrorCode::new(112, "unrecoverable position", false);

/// An unsubscribe code with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsubscribeCode {
    pub code: u32,
    pub reason: &'static str,
}

pub const UNSUBSCRIBE_SERVER: UnsubscribeCode = UnsubscribeCode { code: 2000, reason: "server unsubscribe" };
pub const UNSUBSCRIBE_INSUFFICIENT: UnsubscribeCode = UnsubscribeCode { code: 2500, reason: "insufficient state" };
pub const UNSUBSCRIBE_EXPIRED: UnsubscribeCode = UnsubscribeCode { code: 2501, reason: "subscription expired" };

/// Why a connection is closed: a disconnect code and a plain-text reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectReason {
    pub code: u32,
    pub reason: Cow<'static, str>,
}

impl DisconnectReason {
    pub const fn new(code: u32, reason: &'static str) -> Self {
        DisconnectReason { code, reason: Cow::Borrowed(reason) }
    }

    /// Whether the client SDK reconnects after this code.
    pub fn reconnects(&self) -> bool {
        matches!(self.code, 3000..=3499 | 4000..=4499) || self.code >= 5000
    }
}

pub const DISCONNECT_CONNECTION_CLOSED: DisconnectReason = DisconnectReason::new(3000, "connection closed");
pub const DISCONNECT_SHUTDOWN: DisconnectReason = DisconnectReason::new(3001, "shutdown");
pub const DISCONNECT_SERVER_ERROR: DisconnectReason = DisconnectReason::new(3004, "internal server error");
pub const DISCONNECT_EXPIRED: DisconnectReason = DisconnectReason::new(3005, "connection expired");
pub const DISCONNECT_SUB_EXPIRED: DisconnectReason = DisconnectReason::new(3006, "subscription expired");
pub const DISCONNECT_SLOW: DisconnectReason = DisconnectReason::new(3008, "slow");
pub const DISCONNECT_WRITE_ERROR: DisconnectReason = DisconnectReason::new(3009, "write error");
pub const DISCONNECT_INSUFFICIENT_STATE: DisconnectReason = DisconnectReason::new(3010, "insufficient state");
pub const DISCONNECT_FORCE_RECONNECT: DisconnectReason = DisconnectReason::new(3011, "force reconnect");
pub const DISCONNECT_NO_PONG: DisconnectReason = DisconnectReason::new(3012, "no pong");
pub const DISCONNECT_TOO_MANY_REQUESTS: DisconnectReason = DisconnectReason::new(3013, "too many requests");
pub const DISCONNECT_INVALID_TOKEN: DisconnectReason = DisconnectReason::new(3500, "invalid token");
pub const DISCONNECT_BAD_REQUEST: DisconnectReason = DisconnectReason::new(3501, "bad request");
pub const DISCONNECT_STALE: DisconnectReason = DisconnectReason::new(3502, "stale");
pub const DISCONNECT_FORCE_NO_RECONNECT: DisconnectReason = DisconnectReason::new(3503, "force disconnect");
pub const DISCONNECT_CONNECTION_LIMIT: DisconnectReason = DisconnectReason::new(3504, "connection limit");
pub const DISCONNECT_CHANNEL_LIMIT: DisconnectReason = DisconnectReason::new(3505, "channel limit");
pub const DISCONNECT_INAPPROPRIATE_PROTOCOL: DisconnectReason = DisconnectReason::new(3506, "inappropriate protocol");
pub const DISCONNECT_PERMISSION_DENIED: DisconnectReason = DisconnectReason::new(3507, "permission denied");
pub const DISCONNECT_NOT_AVAILABLE: DisconnectReason = DisconnectReason::new(3508, "not available");
pub const DISCONNECT_TOO_MANY_ERRORS: DisconnectReason = DisconnectReason::new(3509, "too many errors");
