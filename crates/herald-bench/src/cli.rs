//! Command line: one subcommand per scenario, plus the hidden `worker`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::job::{Enc, Target};
use crate::util::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "herald-bench",
    about = "Load generator for Herald (and Nchan, for comparison): connections, fan-out latency, \
             throughput, server memory and CPU per connection",
    after_help = "The last line of stdout is one JSON object with every number; the human summary goes to stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Scenario,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N subscribed connections, then idle: server RSS and slab per connection, CPU of pings.
    Idle(IdleArgs),
    /// N subscribers of one channel; publish at --rate: latency, deliveries/s, loss, CPU/delivery.
    Fanout(FanoutArgs),
    /// N subscribers, each on its own channel; one message per user per round at --rate total.
    Personal(PersonalArgs),
    /// N connections, X% reconnecting every second, plus a low-rate fan-out; or --handshake-rate.
    Churn(ChurnArgs),
    /// Reconnect storm: N subscribed connections; --restart-cmd stops and restarts the server;
    /// time until every client is connected and subscribed again, failures, server CPU.
    Storm(StormArgs),
    /// Server API publishes/s: keep-alive connections publishing to a channel without subscribers.
    Api(ApiArgs),
    /// Kernel cost floor of one small loopback TCP write per delivery, without any server:
    /// plain TCP writer threads here, epoll readers in the worker processes.
    Floor(FloorArgs),
    /// Raw NATS publish ceiling, no Herald: tasks on one client publishing one payload to one
    /// subject as fast as they can (the baseline of Herald's publish through NATS).
    NatsPub(NatsPubArgs),
    /// RPC round trips/s through Herald (a JWT client per connection, one call outstanding
    /// each), or straight to a backend with --direct (the floor): latency, CPU per call.
    Rpc(RpcArgs),
    /// Internal: a load process started by the coordinator (job on stdin).
    #[command(hide = true)]
    Worker,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChannelMode {
    /// All connections on one channel.
    Shared,
    /// One channel per connection.
    Own,
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Server under test.
    #[arg(long, value_enum, default_value = "herald")]
    pub target: Target,
    /// Server base URL (default http://127.0.0.1:8000 for herald, http://127.0.0.1:8081 for
    /// nchan). Several (repeat or comma-separate): connections are spread over them and every
    /// fan-out publication is sent to each (fanout --cluster: to the first only).
    #[arg(long, value_delimiter = ',')]
    pub url: Vec<String>,
    /// WebSocket path (default /connection/websocket for herald, /sub/{channel} for nchan).
    #[arg(long)]
    pub ws_path: Option<String>,
    /// Herald client protocol encoding.
    #[arg(long, value_enum, default_value = "json")]
    pub encoding: Enc,
    /// Herald client transport: websocket, or uni_sse / uni_long_poll (JSON; the channel comes
    /// from the token's `channels` claim, so the server must have the transport enabled).
    #[arg(long, value_enum, default_value = "websocket")]
    pub transport: crate::job::ClientTransport,
    /// Client connections (api: HTTP keep-alive connections, default 50).
    #[arg(long, short = 'n')]
    pub connections: Option<u64>,
    /// Worker processes (default ceil(N/15000); each holds at most 19,000 connections).
    #[arg(long)]
    pub procs: Option<usize>,
    /// Local addresses for client sockets, e.g. 127.0.0.2-127.0.0.9 (spreads ephemeral ports).
    /// Default: 127.0.0.2-127.0.0.9 for a loopback server with more than 5,000 connections per
    /// server, else none; `none` turns it off.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Connections opened per second in total (0: as fast as --max-inflight allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Handshakes in flight at once, per worker (keep the total under the server's listen backlog).
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// Time allowed for one connection to become ready (TCP + upgrade + connect + subscribe).
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub connect_timeout: Duration,
    /// Herald: sign HS256 connection tokens with this secret (user id = connection index).
    #[arg(long, env = "HERALD_BENCH_HMAC_SECRET")]
    pub hmac_secret: Option<String>,
    /// Herald server API key (X-API-Key).
    #[arg(long, env = "HERALD_BENCH_API_KEY")]
    pub api_key: Option<String>,
    /// Server process to measure (RSS, CPU); repeat for several processes (e.g. nginx workers).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Publications per second (fanout, churn) or messages per second in total (personal).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Length of the measured phase.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Stop after this many publications (fanout, churn) or rounds (personal).
    #[arg(long)]
    pub count: Option<u64>,
    /// Publication payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Longest wait for outstanding deliveries after the last publication.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub drain: Duration,
    /// Pause after all connections are ready before memory is sampled.
    #[arg(long, value_parser = duration, default_value = "3s")]
    pub settle: Duration,
    /// Channel name (default depends on the scenario; personal and own channels add the index).
    #[arg(long)]
    pub channel: Option<String>,
    #[command(flatten)]
    pub output: Output,
}

/// Where the result goes and how long a run may take, for every scenario.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// Append the JSON result line to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Free text stored with the result.
    #[arg(long)]
    pub label: Option<String>,
    /// Hard limit on the whole run; workers are killed past it.
    #[arg(long, value_parser = duration, default_value = "15m")]
    pub max_time: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long to stay idle while measuring server CPU (pings).
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub window: Duration,
    /// Sample memory at these connection counts too, e.g. 10000,19000 (the last is N).
    #[arg(long, value_delimiter = ',')]
    pub checkpoints: Vec<u64>,
    /// One shared channel or one channel per connection.
    #[arg(long, value_enum, default_value = "shared")]
    pub channels: ChannelMode,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Stop publishing when p99 publish→last exceeds this (e.g. 200ms) for --max-backlog-secs.
    #[arg(long, value_parser = duration)]
    pub max_backlog: Option<Duration>,
    /// Consecutive seconds over --max-backlog before stopping.
    #[arg(long, default_value_t = 3)]
    pub max_backlog_secs: u32,
    /// Share of the subscribers (0 to <1, e.g. 0.01) that stop reading once subscribed and keep
    /// their socket open: slow consumers. Latency and loss are the readers'; the server's
    /// disconnects by code (from its /metrics) show what became of the stalled ones.
    #[arg(long, default_value_t = 0.0)]
    pub stalled_share: f64,
    /// The --url servers are one cluster (a Redis or NATS engine): each publication is sent
    /// once, through the first server, and every connection on every server must receive it.
    /// Without it the servers are independent and each gets every publication.
    #[arg(long)]
    pub cluster: bool,
}

#[derive(Debug, Clone, Args)]
pub struct PersonalArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publishing connections (each a keep-alive HTTP connection).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    #[arg(long, value_parser = duration)]
    pub max_backlog: Option<Duration>,
    #[arg(long, default_value_t = 3)]
    pub max_backlog_secs: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,
    /// Percent of the connections closed and reopened every second.
    #[arg(long, default_value_t = 10.0)]
    pub churn_percent: f64,
    /// Instead: one process opens connections (handshake, close) as fast as it can.
    #[arg(long)]
    pub handshake_rate: bool,
    /// Sample the server's RSS at this interval during the run (a soak), e.g. 30s; the result
    /// gets the series, first/min/max/last and a linear fit slope in KiB/min.
    #[arg(long, value_parser = duration)]
    pub rss_every: Option<Duration>,
    /// The RSS slope is fitted over this last part of the run (warm-up excluded).
    #[arg(long, value_parser = duration, default_value = "20m")]
    pub rss_fit: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Shell command that stops the server and starts it again on the same address, e.g.
    /// `bench/herald.sh stop && bench/herald.sh start`; a `pid <PID>` line in its output names the
    /// new server process (for its CPU time).
    #[arg(long)]
    pub restart_cmd: String,
    /// Reconnect backoff like the SDKs': min + random(0, min(max, min·2^attempt)), capped at max.
    /// 0 (default): reconnect at once, failed attempts retried every 100 ms. A client gives up
    /// after 200 failed attempts in a row.
    #[arg(long, value_parser = duration, default_value = "0s")]
    pub backoff_min: Duration,
    /// Longest reconnect delay (with --backoff-min above 0).
    #[arg(long, value_parser = duration, default_value = "20s")]
    pub backoff_max: Duration,
    /// Longest wait for the restart command.
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub restart_timeout: Duration,
    /// Longest wait, after the restart, for every client to be back.
    #[arg(long, value_parser = duration, default_value = "120s")]
    pub storm_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub common: Common,
    /// POST the payload to this path instead of publishing (e.g. a gateway route, or its
    /// upstream directly for the baseline); any 2xx answer counts as a success.
    #[arg(long)]
    pub path: Option<String>,
    /// Extra request header (`Name: value`) with --path; repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Herald: each request is a `/api/batch` of this many publish commands to the channel
    /// (distinct payloads) instead of one `/api/publish`; also reports publications/s.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "path")]
    pub batch: Option<u64>,
    /// With --batch: `"parallel": true` (the server runs the commands concurrently).
    #[arg(long, requires = "batch")]
    pub parallel: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Client sockets; every round writes one message to each.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub connections: u64,
    /// Writer threads on the sending side (the sockets are dealt round-robin between them).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Rounds: one blocking write of one message to every socket, then a pause.
    #[arg(long, default_value_t = 20)]
    pub rounds: u64,
    /// Bytes per write (the round's sequence number and start time, padded, newline-terminated;
    /// about the size of a WebSocket frame carrying a 100-byte publication).
    #[arg(long, default_value_t = 130)]
    pub payload: usize,
    /// From the start of one round to the start of the next.
    #[arg(long, value_parser = duration, default_value = "1s")]
    pub interval: Duration,
    /// Reader processes (2, as in the fan-out runs on this machine).
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Local addresses for the reader sockets (default 127.0.0.2-127.0.0.9 above 5,000
    /// connections; `none` turns it off).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Connects in flight at once, per reader process.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    #[arg(long, value_parser = duration, default_value = "15s")]
    pub connect_timeout: Duration,
    /// Pause after all sockets are connected before the first round.
    #[arg(long, value_parser = duration, default_value = "2s")]
    pub settle: Duration,
    /// Longest wait for outstanding deliveries after the last round.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub drain: Duration,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Clone, Args)]
pub struct NatsPubArgs {
    /// NATS server URL, e.g. nats://127.0.0.1:PORT (required: no default server is assumed).
    #[arg(long)]
    pub url: String,
    /// Subject published to (no subscriber needed).
    #[arg(long, default_value = "herald.client.bench_api")]
    pub subject: String,
    /// Tasks publishing at once on the one client (as many as the API connections of the
    /// Herald run it is compared with).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub concurrency: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    #[arg(long, value_parser = duration, default_value = "8s")]
    pub duration: Duration,
    /// The nats-server process, for its CPU per publish.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    #[command(flatten)]
    pub output: Output,
}

#[derive(Debug, Clone, Args)]
pub struct RpcArgs {
    /// Herald's address (WebSocket at /connection/websocket).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub addr: std::net::SocketAddr,
    /// HMAC secret of the connection tokens.
    #[arg(long, default_value = "")]
    pub hmac_secret: String,
    /// Clients, each with one call outstanding.
    #[arg(long = "connections", short = 'n', default_value_t = 16)]
    pub conns: usize,
    #[arg(long, value_parser = duration, default_value = "5s")]
    pub duration: Duration,
    /// RPC method called.
    #[arg(long, default_value = "echo")]
    pub method: String,
    /// Post the RPC proxy request body straight to this backend (`HOST:PORT/path`) instead.
    #[arg(long)]
    pub direct: Option<String>,
    /// Server processes whose CPU is charged per call.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Backend processes whose CPU is reported per call.
    #[arg(long = "backend-pid")]
    pub backend_pids: Vec<u32>,
    /// Append the JSON result line to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}
