//! Size and ordering tests of the connection task and link: what every idle connection pays.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_hub::{ClientLink, ConnectionInfo, HubConfig, Node, NodeIdentity, Session, SystemClock};
use herald_proto::Encoding;
use tokio::net::TcpStream;

use super::conn::{Closing, goodbye, handle_commands, run};
use super::{SocketLink, WsSettings};
use crate::config::Config;
use crate::state::AppState;
use crate::transport::link::{LinkOptions, new_link};

/// A link over a loopback connection, with the client's end of it.
async fn loopback_link() -> (Arc<SocketLink>, TcpStream, Arc<AppState>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let identity = NodeIdentity { uid: "u".into(), name: "n".into(), version: "v".into() };
    let node = Node::new(HubConfig::default(), identity, Arc::new(SystemClock)).unwrap();
    let mut state = AppState::new(Config::default(), node, crate::telemetry::install_metrics().unwrap(), 0);
    state.ws = WsSettings { max_message: 65536, queue_max: 1 << 20, max_commands: 100, stale_after: 10 };
    let options = LinkOptions {
        envelope: herald_proto::Envelope::websocket(Encoding::Json),
        native_ping: false,
        pong_expected: true,
        emulation: false,
        queue_max: state.ws.queue_max,
    };
    let link = new_link(stream, None, options, &state.node, state.ws.stale_after);
    (link, client, Arc::new(state))
}

/// The connection future is allocated for every connection; keep it small (an idle connection
/// should cost next to nothing). Command handling is boxed, so it does not count here.
#[tokio::test]
async fn connection_state_is_small() {
    let (link, _client, state) = loopback_link().await;
    let session = Box::new(Session::new(link.clone(), ConnectionInfo::default()));
    let fut = run(link, state, Vec::new(), Vec::new(), session);
    let future_size = std::mem::size_of_val(&fut);
    let link_size = std::mem::size_of::<SocketLink>();
    let session_size = std::mem::size_of::<Session>();
    eprintln!("connection future {future_size} B, link {link_size} B, session {session_size} B");
    assert!(future_size <= 320, "connection future grew to {future_size} bytes");
    assert!(link_size <= 320, "link grew to {link_size} bytes");
}

/// A command batch is boxed per message (3,952 bytes before connect and subscribe boxed
/// their own state and commands were passed by reference); small boxes stay in the
/// allocator's fast size classes.
#[tokio::test]
async fn command_batch_future_is_small() {
    let (link, _client, state) = loopback_link().await;
    let mut session = Session::new(link, ConnectionInfo::default());
    let batch = handle_commands(&mut session, &state.node, Vec::new());
    let size = std::mem::size_of_val(&batch);
    assert!(size <= 768, "command batch future grew to {size} bytes");
}

/// `send_now` writes from the calling thread: the frame arrives although no task runs the
/// connection. Behind a queued frame it queues instead, keeping the order.
#[tokio::test]
async fn send_now_writes_without_the_task_and_keeps_order() {
    use tokio::io::AsyncReadExt;
    let (link, mut client, _state) = loopback_link().await;
    link.send_now(Bytes::from_static(b"ping-1"));
    let mut got = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"ping-1");
    link.send(Bytes::from_static(b"queued"));
    link.send_now(Bytes::from_static(b"ping-2"));
    assert_eq!(link.out.lock().unwrap().queue.pending(), 12, "queued behind the first frame");
    link.flush().unwrap();
    let mut got = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"queuedping-2");
}

/// RFC 6455 §5.5.1: every close frame is answered with one. A close frame without a code used
/// to end the connection silently, like a peer that hung up (Autobahn case 7.3.1).
#[tokio::test]
async fn close_frame_without_code_is_answered() {
    use tokio::io::AsyncReadExt;
    let (link, mut client, _state) = loopback_link().await;
    link.send(Bytes::from_static(b"queued"));
    goodbye(&link, Closing::Peer(None)).await;
    let mut got = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"queued\x88\x00", "queued frames, then an empty close frame");
}
