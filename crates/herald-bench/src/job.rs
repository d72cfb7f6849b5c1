//! What the coordinator and its worker processes say to each other: one JSON job on the worker's
//! stdin, then JSON lines both ways (commands in, progress/ready/result out).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Herald,
    Nchan,
}

/// How a Herald client connects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ClientTransport {
    /// Bidirectional WebSocket (connect and subscribe commands).
    #[default]
    Websocket,
    /// Unidirectional SSE (`GET /connection/uni_sse?cf_connect=`; the channel from the token).
    UniSse,
    /// HTTP long-polling (`/connection/uni_long_poll`; polls on one keep-alive connection).
    UniLongPoll,
}

impl ClientTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientTransport::Websocket => "websocket",
            ClientTransport::UniSse => "uni_sse",
            ClientTransport::UniLongPoll => "uni_long_poll",
        }
    }
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Herald => "herald",
            Target::Nchan => "nchan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Enc {
    Json,
    Protobuf,
}

impl Enc {
    pub fn as_str(self) -> &'static str {
        match self {
            Enc::Json => "json",
            Enc::Protobuf => "protobuf",
        }
    }
}

/// Which channel connection `i` subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channels {
    /// Every connection on this one channel.
    Shared(String),
    /// Connection `i` on `<prefix><i>`.
    PerConn(String),
}

impl Channels {
    pub fn name(&self, i: u64) -> String {
        match self {
            Channels::Shared(c) => c.clone(),
            Channels::PerConn(p) => format!("{p}{i}"),
        }
    }
}

/// Server API load run by a worker (`api` scenario).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiJob {
    /// Keep-alive connections of this worker.
    pub conns: usize,
    pub path: String,
    /// Extra header lines (each ending in CRLF), e.g. the API key.
    pub headers: String,
    /// Herald: wrap the payload as `{"channel":…,"data":…}`; Nchan: the payload is the body.
    pub herald_channel: Option<String>,
    pub payload: usize,
    pub duration_ms: u64,
    /// `api --path`: any 2xx answer is a success (a gateway route or its upstream).
    #[serde(default)]
    pub any_2xx: bool,
    /// `api --batch`: publish commands per `/api/batch` request (0: one `/api/publish`).
    #[serde(default)]
    pub batch: usize,
    /// `api --parallel`: the batch asks for `"parallel": true`.
    #[serde(default)]
    pub parallel: bool,
}

/// Handshake-rate load (churn `--handshake-rate`): open, handshake, close, repeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandshakeJob {
    /// Upper bound on handshakes attempted.
    pub total: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub worker: usize,
    pub target: Target,
    pub encoding: Enc,
    #[serde(default)]
    pub transport: ClientTransport,
    /// Servers `(address, Host header)`; connection `i` goes to `servers[i % len]`.
    pub servers: Vec<(SocketAddr, String)>,
    /// WebSocket path; `{channel}` is replaced by the connection's channel (Nchan).
    pub ws_path: String,
    pub source_ips: Vec<IpAddr>,
    /// Global connection index ranges `[start, end)` to open, one per stage.
    pub stages: Vec<(u64, u64)>,
    pub channels: Channels,
    pub hmac_secret: Option<String>,
    /// Connections per second for this worker (0: as fast as `max_inflight` allows).
    pub ramp: f64,
    pub max_inflight: usize,
    pub connect_timeout_ms: u64,
    /// Every connection must see sequence numbers from 1 (fan-out after all are ready); off
    /// for churn, where a reconnected client starts mid-stream.
    pub strict_order: bool,
    /// Highest publication sequence number expected (sizes the per-publication table).
    pub max_seq: u64,
    /// Percent of this worker's connections to close and reopen every second after `start`.
    pub churn_percent: Option<f64>,
    pub handshake: Option<HandshakeJob>,
    pub api: Option<ApiJob>,
    /// Plain TCP instead of WebSocket: connect, then read newline-terminated payloads (the
    /// `floor` measurement; no handshake, no pings).
    #[serde(default)]
    pub raw: bool,
    /// Share of the connections (0–1) that stop reading once subscribed and keep their socket
    /// open (`fanout --stalled-share`): slow consumers. Which ones: [`is_stalled`].
    #[serde(default)]
    pub stalled_share: f64,
    /// Reconnect after the server drops a ready connection (`storm`); `None`: stay closed.
    #[serde(default)]
    pub reconnect: Option<Backoff>,
    /// Hard limit on the worker's life.
    pub max_time_ms: u64,
}

/// Whether connection `idx` is one of the stalled ones: `share` of the indexes, spread evenly
/// (index i stalls when floor((i+1)·share) passes an integer), so any worker's range holds its
/// share and N·share are stalled in all.
pub fn is_stalled(idx: u64, share: f64) -> bool {
    share > 0.0 && ((idx + 1) as f64 * share).floor() > (idx as f64 * share).floor()
}

/// Reconnect delays like the Centrifuge SDKs': `min + random(0, min(max, min·2^attempt))`,
/// capped at `max` (full jitter). `min_ms == 0`: reconnect at once, failed attempts retried
/// after [`RETRY_AT_ONCE_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
}

/// Pause between failed attempts without backoff (a refused connect returns at once; without a
/// pause every client would spin while the server is down).
pub const RETRY_AT_ONCE_MS: u64 = 100;

impl Backoff {
    /// Delay before attempt `attempt` (0: the first after the drop); `unit` is uniform in [0, 1).
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        if self.min_ms == 0 {
            return if attempt == 0 { 0 } else { RETRY_AT_ONCE_MS };
        }
        let span = self.max_ms.min(self.min_ms.saturating_mul(1u64 << attempt.min(31)));
        (self.min_ms + (span as f64 * unit.clamp(0.0, 1.0)) as u64).min(self.max_ms)
    }
}

/// Coordinator → worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cmd {
    /// Open the next stage's connections.
    Next,
    /// Start the measured phase (churn, API load, handshake load).
    Start,
    /// Report results and exit.
    Stop,
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Msg {
    Progress(Progress),
    Ready(Ready),
    Result(Box<WorkerResult>),
    Fatal { error: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub open: u64,
    /// Connection attempts whose handshake has not finished.
    #[serde(default)]
    pub pending: u64,
    /// Handshakes completed after `start`.
    #[serde(default)]
    pub handshakes_measured: u64,
    /// Wall time (ns since the epoch) of the latest completed handshake; 0: none yet.
    #[serde(default)]
    pub last_ready_ns: u64,
    /// Wall time of the first ready connection the server dropped after `start`; 0: none.
    #[serde(default)]
    pub first_drop_ns: u64,
    pub handshakes: u64,
    pub errors: u64,
    pub deliveries: u64,
    pub pings: u64,
    /// Publications touched since the last progress: `[seq, min_us, max_us, count]` (cumulative).
    pub pubs: Vec<[u64; 4]>,
    pub api_requests: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ready {
    pub stage: usize,
    pub open: u64,
    pub errors: u64,
    /// Time from the stage's first connection attempt to its last result.
    pub elapsed_ms: u64,
    /// Connection errors so far, by kind.
    #[serde(default)]
    pub error_kinds: BTreeMap<String, u64>,
    /// Of `open`, the stalled connections (they read nothing after subscribing).
    #[serde(default)]
    pub stalled: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    pub worker: usize,
    pub open: u64,
    pub handshakes: u64,
    /// Handshakes completed after `start` (churn and handshake load).
    pub handshakes_measured: u64,
    pub errors: u64,
    pub errors_measured: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Connections the server closed after they were ready, by close code (`eof` without one).
    pub server_closed: BTreeMap<String, u64>,
    pub deliveries: u64,
    pub unique: u64,
    pub gaps: u64,
    pub dups: u64,
    pub out_of_order: u64,
    /// Data messages without a payload the bench recognises.
    pub other_messages: u64,
    pub pings: u64,
    pub bytes_in: u64,
    pub first_recv_ns: u64,
    pub last_recv_ns: u64,
    /// Delivery latency (µs), HdrHistogram V2 base64.
    pub delivery_hist: String,
    /// Handshake latency (µs): TCP connect to ready.
    pub handshake_hist: String,
    pub pubs: Vec<[u64; 4]>,
    pub api_requests: u64,
    pub api_errors: u64,
    pub api_hist: String,
    pub api_elapsed_ms: u64,
    pub measured_ms: u64,
    pub cpu_s: f64,
    pub rss_kb: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalled_share_is_spread_evenly() {
        let n = 10_000u64;
        assert_eq!((0..n).filter(|&i| is_stalled(i, 0.01)).count(), 100);
        assert_eq!((0..n).filter(|&i| is_stalled(i, 0.0)).count(), 0);
        assert_eq!((0..n).filter(|&i| is_stalled(i, 1.0)).count(), n as usize);
        // Every half of the range (one per worker) holds half of them.
        assert_eq!((0..n / 2).filter(|&i| is_stalled(i, 0.01)).count(), 50);
        assert!(is_stalled(99, 0.01) && !is_stalled(0, 0.01) && !is_stalled(100, 0.01));
    }

    #[test]
    fn backoff_like_the_sdks() {
        let b = Backoff { min_ms: 500, max_ms: 20_000 };
        assert_eq!(b.delay_ms(0, 0.0), 500);
        assert_eq!(b.delay_ms(0, 0.999_999), 999);
        assert_eq!(b.delay_ms(3, 0.5), 500 + 2000);
        // The span stops growing at max, and the delay never passes it.
        assert_eq!(b.delay_ms(10, 0.0), 500);
        assert_eq!(b.delay_ms(40, 0.999_999), 20_000);
        let at_once = Backoff { min_ms: 0, max_ms: 0 };
        assert_eq!(at_once.delay_ms(0, 0.7), 0);
        assert_eq!(at_once.delay_ms(5, 0.7), RETRY_AT_ONCE_MS);
    }
}
