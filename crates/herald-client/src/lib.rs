//! A small async client for Herald (Centrifugo client protocol v2 over WebSocket, JSON or
//! Protobuf), for integration tests and the benchmark tool.
//!
//! One [`Client`] is one WebSocket connection. Calls are sequential (`&mut self`): each command
//! gets the next id (starting at 1), and the client reads until the matching reply arrives.
//! Pushes read meanwhile are queued for [`Client::next_push`]; server pings (empty replies) are
//! answered with pongs when [`ClientOptions::auto_pong`] is set. A close frame from the server
//! surfaces as [`ClientError::Closed`] with its code and reason.
//!
//! The socket is configured for many cheap connections: a 4 KiB read buffer and no write
//! buffering (`write_buffer_size` 0), `TCP_NODELAY` on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::{Client, ClientOptions};
//! use herald_proto::SubscribeRequest;
//!
//! let opts = ClientOptions { token: "jwt".into(), ..ClientOptions::default() };
//! let (mut client, connected) = Client::connect(&opts).await?;
//! println!("client id {}", connected.client);
//! client.subscribe(SubscribeRequest { channel: "news".into(), ..Default::default() }).await?;
//! let push = client.next_push().await?;
//! println!("{push:?}");
//! client.close().await;
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use herald_proto::{
    Command, ConnectRequest, ConnectResult, Encoding, HistoryRequest, HistoryResult, PresenceRequest, PresenceResult,
    PresenceStatsRequest, PresenceStatsResult, PublishRequest, Push, RefreshRequest, RefreshResult, Reply, RpcRequest,
    RpcResult, SendRequest, SubRefreshRequest, SubRefreshResult, SubscribeRequest, SubscribeResult, UnsubscribeRequest,
    decode_replies, try_encode_command,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Utf8Bytes};

pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Subprotocol that selects the Protobuf encoding.
pub const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";

/// Default endpoint of a local Herald.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8000/connection/websocket";

/// How long [`Client::call`] waits for a reply unless changed with [`Client::set_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// WebSocket URL (`ws://` only), e.g. `ws://127.0.0.1:8000/connection/websocket`.
    pub url: String,
    /// JSON (no subprotocol, text frames) or Protobuf (`centrifuge-protobuf`, binary frames).
    pub encoding: Encoding,
    /// Connection token sent in the connect command (empty: none).
    pub token: String,
    /// Client name sent in the connect command.
    pub name: String,
    /// Custom connect data; must be valid JSON with the JSON encoding.
    pub data: Option<Bytes>,
    /// Server-side subscriptions to recover, sent as `connect.subs`.
    pub subs: BTreeMap<String, SubscribeRequest>,
    /// Answer server pings with pongs automatically (default `true`).
    pub auto_pong: bool,
    /// Source address to bind before connecting (benchmarks spread clients over 127.0.0.0/8 to
    /// get past the ephemeral port limit). `None`: chosen by the OS.
    pub local_addr: Option<IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            url: DEFAULT_URL.to_owned(),
            encoding: Encoding::Json,
            token: String::new(),
            name: "herald-client".to_owned(),
            data: None,
            subs: BTreeMap::new(),
            auto_pong: true,
            local_addr: None,
        }
    }
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// Connecting, resolving, or a socket error.
    Io(String),
    /// The server closed the connection: the close frame's code and reason, or `None` and an
    /// empty or descriptive reason when the socket ended without a close frame.
    Closed { code: Option<u16>, reason: String },
    /// The server (or the caller) broke the protocol: undecodable frame, wrong frame type,
    /// reply without its result, invalid URL or payload.
    Protocol(String),
    /// The server answered the command with an error.
    Reply(herald_proto::Error),
    /// No reply within the timeout.
    Timeout,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Closed { code: Some(code), reason } => write!(f, "closed by server: {code} {reason}"),
            ClientError::Closed { code: None, reason } if reason.is_empty() => f.write_str("connection closed"),
            ClientError::Closed { code: None, reason } => write!(f, "connection closed: {reason}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Reply(e) => write!(f, "error reply {}: {}", e.code, e.message),
            ClientError::Timeout => f.write_str("timed out"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e.to_string())
    }
}

fn ws_error(e: tungstenite::Error) -> ClientError {
    use tungstenite::Error as E;
    use tungstenite::error::ProtocolError as P;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => ClientError::Closed { code: None, reason: String::new() },
        E::Protocol(P::ResetWithoutClosingHandshake) => {
            ClientError::Closed { code: None, reason: "reset without closing handshake".to_owned() }
        }
        E::Io(e) => ClientError::Io(e.to_string()),
        e => ClientError::Protocol(e.to_string()),
    }
}

/// One connection to Herald.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    encoding: Encoding,
    auto_pong: bool,
    next_id: u32,
    timeout: Duration,
    pushes: VecDeque<Push>,
    /// Pongs owed to the server (pings seen but not yet answered).
    pongs_due: u32,
    pings: u64,
    closed: Option<ClientError>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("encoding", &self.encoding)
            .field("next_id", &self.next_id)
            .field("queued_pushes", &self.pushes.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Takes the result a successful reply must carry (reference §9.2: always present, even empty).
fn result<T>(reply: Reply, name: &str, pick: impl FnOnce(Reply) -> Option<T>) -> Result<T, ClientError> {
    pick(reply).ok_or_else(|| ClientError::Protocol(format!("reply without `{name}` result")))
}

impl Client {
    /// Opens the WebSocket (subprotocol `centrifuge-protobuf` for Protobuf, none for JSON)
    /// without sending anything.
    pub async fn open(opts: &ClientOptions) -> Result<Client, ClientError> {
        let mut request =
            opts.url.as_str().into_client_request().map_err(|e| ClientError::Protocol(format!("bad url: {e}")))?;
        if request.uri().scheme_str() != Some("ws") {
            return Err(ClientError::Protocol(format!("only ws:// URLs are supported: {}", opts.url)));
        }
        if opts.encoding == Encoding::Protobuf {
            request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(PROTOBUF_SUBPROTOCOL));
        }
        let host = request.uri().host().ok_or_else(|| ClientError::Protocol("url has no host".into()))?;
        let port = request.uri().port_u16().unwrap_or(80);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let candidates: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        let remote = candidates
            .iter()
            .copied()
            .find(|a| opts.local_addr.is_none_or(|l| l.is_ipv4() == a.is_ipv4()))
            .ok_or_else(|| ClientError::Io(format!("cannot resolve {host}:{port}")))?;

        let socket = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(local) = opts.local_addr {
            socket.bind(SocketAddr::new(local, 0))?;
        }
        let stream = socket.connect(remote).await?;
        stream.set_nodelay(true)?;

        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(ws_error)?;
        Ok(Client {
            ws,
            encoding: opts.encoding,
            auto_pong: opts.auto_pong,
            next_id: 1,
            timeout: DEFAULT_TIMEOUT,
            pushes: VecDeque::new(),
            pongs_due: 0,
            pings: 0,
            closed: None,
        })
    }

    /// [`open`](Self::open) + the connect command built from `opts`; returns the
    /// `ConnectResult`.
    pub async fn connect(opts: &ClientOptions) -> Result<(Client, ConnectResult), ClientError> {
        let mut client = Client::open(opts).await?;
        let result = client
            .send_connect(ConnectRequest {
                token: opts.token.clone(),
                data: opts.data.clone().unwrap_or_default(),
                subs: opts.subs.clone(),
                name: opts.name.clone(),
                ..Default::default()
            })
            .await?;
        Ok((client, result))
    }

    /// The connection's encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// How long [`call`](Self::call) waits for a reply (default [`DEFAULT_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Server pings (empty replies) received so far.
    pub fn pings_received(&self) -> u64 {
        self.pings
    }

    /// The id the next command will get.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Sends a connect command.
    pub async fn send_connect(&mut self, req: ConnectRequest) -> Result<ConnectResult, ClientError> {
        let reply = self.call(Command { connect: Some(req), ..Default::default() }).await?;
        result(reply, "connect", |r| r.connect)
    }

    pub async fn subscribe(&mut self, req: SubscribeRequest) -> Result<SubscribeResult, ClientError> {
        let reply = self.call(Command { subscribe: Some(req), ..Default::default() }).await?;
        result(reply, "subscribe", |r| r.subscribe)
    }

    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), ClientError> {
        let req = UnsubscribeRequest { channel: channel.to_owned() };
        let reply = self.call(Command { unsubscribe: Some(req), ..Default::default() }).await?;
        result(reply, "unsubscribe", |r| r.unsubscribe).map(drop)
    }

    pub async fn publish(&mut self, channel: &str, data: Bytes) -> Result<(), ClientError> {
        let req = PublishRequest { channel: channel.to_owned(), data };
        let reply = self.call(Command { publish: Some(req), ..Default::default() }).await?;
        result(reply, "publish", |r| r.publish).map(drop)
    }

    pub async fn presence(&mut self, channel: &str) -> Result<PresenceResult, ClientError> {
        let req = PresenceRequest { channel: channel.to_owned() };
        let reply = self.call(Command { presence: Some(req), ..Default::default() }).await?;
        result(reply, "presence", |r| r.presence)
    }

    pub async fn presence_stats(&mut self, channel: &str) -> Result<PresenceStatsResult, ClientError> {
        let req = PresenceStatsRequest { channel: channel.to_owned() };
        let reply = self.call(Command { presence_stats: Some(req), ..Default::default() }).await?;
        result(reply, "presence_stats", |r| r.presence_stats)
    }

    pub async fn history(&mut self, req: HistoryRequest) -> Result<HistoryResult, ClientError> {
        let reply = self.call(Command { history: Some(req), ..Default::default() }).await?;
        result(reply, "history", |r| r.history)
    }

    pub async fn rpc(&mut self, method: &str, data: Bytes) -> Result<RpcResult, ClientError> {
        let req = RpcRequest { data, method: method.to_owned() };
        let reply = self.call(Command { rpc: Some(req), ..Default::default() }).await?;
        result(reply, "rpc", |r| r.rpc)
    }

    pub async fn refresh(&mut self, token: &str) -> Result<RefreshResult, ClientError> {
        let req = RefreshRequest { token: token.to_owned() };
        let reply = self.call(Command { refresh: Some(req), ..Default::default() }).await?;
        result(reply, "refresh", |r| r.refresh)
    }

    pub async fn sub_refresh(&mut self, channel: &str, token: &str) -> Result<SubRefreshResult, ClientError> {
        let req = SubRefreshRequest { channel: channel.to_owned(), token: token.to_owned() };
        let reply = self.call(Command { sub_refresh: Some(req), ..Default::default() }).await?;
        result(reply, "sub_refresh", |r| r.sub_refresh)
    }

    /// Sends a fire-and-forget `send` command (no id, no reply).
    pub async fn send(&mut self, data: Bytes) -> Result<(), ClientError> {
        self.send_command(&Command { send: Some(SendRequest { data }), ..Default::default() }).await
    }

    /// Sends a pong (an empty command), e.g. when `auto_pong` is off.
    pub async fn pong(&mut self) -> Result<(), ClientError> {
        self.send_command(&Command::default()).await
    }

    /// Sends a command with the next id and waits for its reply (pushes that arrive meanwhile
    /// are queued). An error reply becomes [`ClientError::Reply`]; no reply within the timeout
    /// becomes [`ClientError::Timeout`].
    pub async fn call(&mut self, mut cmd: Command) -> Result<Reply, ClientError> {
        let id = self.next_id;
        cmd.id = id;
        let bytes = self.encode(&cmd)?;
        // An id is used up only by a command that was actually sent.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.send_raw(bytes).await?;
        let timeout = self.timeout;
        let reply = tokio::time::timeout(timeout, self.wait_reply(id)).await.map_err(|_| ClientError::Timeout)??;
        match reply.error {
            Some(error) => Err(ClientError::Reply(error)),
            None => Ok(reply),
        }
    }

    /// Next push (queued or from the socket); answers pings with pongs when `auto_pong`.
    /// Replies to commands that are no longer awaited (after a timeout) are dropped.
    pub async fn next_push(&mut self) -> Result<Push, ClientError> {
        loop {
            if let Some(push) = self.pushes.pop_front() {
                return Ok(push);
            }
            self.read_replies(None).await?;
        }
    }

    /// [`next_push`](Self::next_push) with a deadline: `Ok(None)` when nothing came within `d`.
    pub async fn next_push_timeout(&mut self, d: Duration) -> Result<Option<Push>, ClientError> {
        match tokio::time::timeout(d, self.next_push()).await {
            Ok(push) => push.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Pushes read so far and not yet taken.
    pub fn queued_pushes(&self) -> usize {
        self.pushes.len()
    }

    /// Raw access for protocol tests: sends one WebSocket message, text for JSON (the bytes
    /// must then be UTF-8) and binary for Protobuf.
    pub async fn send_raw(&mut self, data: Vec<u8>) -> Result<(), ClientError> {
        let msg = match self.encoding {
            Encoding::Json => Message::Text(
                Utf8Bytes::try_from(data).map_err(|_| ClientError::Protocol("text message is not UTF-8".into()))?,
            ),
            Encoding::Protobuf => Message::Binary(Bytes::from(data)),
        };
        self.send_message(msg).await
    }

    /// Raw access for protocol tests: the next WebSocket message, including a close frame
    /// (returned as `Message::Close`). Queued pushes are not touched.
    pub async fn recv_message(&mut self) -> Result<Message, ClientError> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        match self.ws.next().await {
            Some(Ok(Message::Close(frame))) => {
                self.closed = Some(closed_error(frame.as_ref()));
                // Best effort: let tungstenite send the close reply it queued.
                let _ = self.ws.flush().await;
                Ok(Message::Close(frame))
            }
            Some(Ok(msg)) => Ok(msg),
            Some(Err(e)) => Err(self.fail(ws_error(e))),
            None => Err(self.fail(ClientError::Closed { code: None, reason: String::new() })),
        }
    }

    /// Sends a normal close frame and waits briefly for the server's answer.
    pub async fn close(mut self) {
        if self.closed.is_some() {
            return;
        }
        let _ = self.ws.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), async { while let Some(Ok(_)) = self.ws.next().await {} })
            .await;
    }

    fn fail(&mut self, e: ClientError) -> ClientError {
        self.closed = Some(e.clone());
        e
    }

    fn encode(&self, cmd: &Command) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        try_encode_command(self.encoding, cmd, &mut out)
            .map_err(|_| ClientError::Protocol("payload is not valid JSON".into()))?;
        Ok(out)
    }

    async fn send_command(&mut self, cmd: &Command) -> Result<(), ClientError> {
        let bytes = self.encode(cmd)?;
        self.send_raw(bytes).await
    }

    async fn send_message(&mut self, msg: Message) -> Result<(), ClientError> {
        if let Some(e) = &self.closed {
            return Err(e.clone());
        }
        match self.ws.send(msg).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.fail(ws_error(e))),
        }
    }

    async fn wait_reply(&mut self, id: u32) -> Result<Reply, ClientError> {
        loop {
            if let Some(reply) = self.read_replies(Some(id)).await? {
                return Ok(reply);
            }
        }
    }

    /// Reads one message, queues its pushes, answers its pings, and returns the reply with id
    /// `want` if the message held it. Replies with other ids are dropped.
    async fn read_replies(&mut self, want: Option<u32>) -> Result<Option<Reply>, ClientError> {
        let replies = self.read_batch().await?;
        let mut found = None;
        for reply in replies {
            if reply.id > 0 {
                if Some(reply.id) == want {
                    found = Some(reply);
                }
            } else if let Some(push) = reply.push {
                self.pushes.push_back(push);
            } else {
                self.pings += 1;
                if self.auto_pong {
                    self.pongs_due += 1;
                }
            }
        }
        while self.pongs_due > 0 {
            self.pong().await?;
            self.pongs_due -= 1;
        }
        Ok(found)
    }

    /// The replies of the next data message. Control frames are skipped (tungstenite answers
    /// WebSocket pings itself); a close frame ends the connection.
    async fn read_batch(&mut self) -> Result<Vec<Reply>, ClientError> {
        loop {
            let data = match self.recv_message().await? {
                Message::Text(text) if self.encoding == Encoding::Json => Bytes::from(text),
                Message::Binary(data) if self.encoding == Encoding::Protobuf => data,
                Message::Text(_) => {
                    return Err(self.fail(ClientError::Protocol("text frame on a Protobuf connection".into())));
                }
                Message::Binary(_) => {
                    return Err(self.fail(ClientError::Protocol("binary frame on a JSON connection".into())));
                }
                Message::Close(frame) => return Err(closed_error(frame.as_ref())),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            if data.is_empty() {
                return Err(self.fail(ClientError::Protocol("empty data frame".into())));
            }
            return decode_replies(self.encoding, data).map_err(|e| self.fail(ClientError::Protocol(e.to_string())));
        }
    }
}

fn closed_error(frame: Option<&CloseFrame>) -> ClientError {
    match frame {
        Some(f) => ClientError::Closed { code: Some(u16::from(f.code)), reason: f.reason.as_str().to_owned() },
        None => ClientError::Closed { code: None, reason: String::new() },
    }
}

#[cfg(test)]
mod tests;
