//! What a transport knows about a connection when it hands it to a session: the client's
//! address and the transport's name. Edge policies, the logic-layer proxy and logs read it.
//!
//! Kept compact (an `IpAddr` and a port rather than a `SocketAddr`, the transport as one byte):
//! it lives in every session.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The transports a session can run over, named as the proxy protocol spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Transport {
    WebSocket,
    /// Bidirectional emulation over Server-Sent Events (commands through `/emulation`).
    Sse,
    /// Bidirectional emulation over a streamed HTTP response (commands through `/emulation`).
    HttpStream,
    UniWebSocket,
    UniSse,
    UniHttpStream,
    /// HTTP long-polling: one logical session across the polls of a client.
    UniLongPoll,
}

impl Transport {
    /// The name sent to backends (`transport` in proxy requests).
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::Sse => "sse",
            Transport::HttpStream => "http_stream",
            Transport::UniWebSocket => "uni_websocket",
            Transport::UniSse => "uni_sse",
            Transport::UniHttpStream => "uni_http_stream",
            Transport::UniLongPoll => "uni_long_poll",
        }
    }
}

/// A connection as its transport accepted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    ip: IpAddr,
    port: u16,
    transport: Transport,
}

impl ConnectionInfo {
    pub fn new(peer: SocketAddr, transport: Transport) -> Self {
        ConnectionInfo { ip: peer.ip(), port: peer.port(), transport }
    }

    /// The client's address as the socket saw it.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }
}

impl Default for ConnectionInfo {
    /// An unknown peer (tests, in-process clients).
    fn default() -> Self {
        ConnectionInfo { ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: 0, transport: Transport::WebSocket }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_peer_and_stays_small() {
        let peer: SocketAddr = "[::1]:4242".parse().unwrap();
        let c = ConnectionInfo::new(peer, Transport::WebSocket);
        assert_eq!(c.peer(), peer);
        assert_eq!(c.transport().name(), "websocket");
        assert!(std::mem::size_of::<ConnectionInfo>() <= 20);
    }
}
