//! What every idle stream connection pays: the connection task's future and the link.

use std::sync::Arc;

use herald_hub::{ClientLink, ConnectionInfo, HubConfig, Node, NodeIdentity, Session, SystemClock};
use tokio::net::TcpStream;

use super::StreamKind;
use super::conn::run;
use crate::config::Config;
use crate::state::AppState;
use crate::transport::link::{LinkOptions, SocketLink, build_link_with};

async fn loopback_link(kind: StreamKind) -> (Arc<SocketLink>, TcpStream, Arc<AppState>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let node = Node::new(HubConfig::default(), identity, Arc::new(SystemClock)).unwrap();
    let state = AppState::new(Config::default(), node, crate::telemetry::install_metrics().unwrap(), 0);
    let options = LinkOptions {
        envelope: kind.envelope(false),
        native_ping: false,
        pong_expected: !kind.is_unidirectional(),
        emulation: !kind.is_unidirectional(),
        queue_max: 1 << 20,
    };
    (build_link_with(stream, None, options), client, Arc::new(state))
}

/// The stream's task future is allocated for every connection, like the WebSocket one.
#[tokio::test]
async fn stream_connection_state_is_small() {
    for kind in StreamKind::ALL {
        let (link, _client, state) = loopback_link(kind).await;
        let dyn_link: Arc<dyn ClientLink> = link.clone();
        let session = Box::new(Session::new(dyn_link, ConnectionInfo::default()));
        let fut = run(link, state, session, kind);
        let size = std::mem::size_of_val(&fut);
        eprintln!("{kind:?}: connection future {size} B");
        assert!(size <= 320, "{kind:?} connection future grew to {size} bytes");
    }
}
