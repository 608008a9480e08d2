//! The flags of the commands that watch and keep streams: `stat` (health
//! checks), `janitor` (trimming) and `serve` (the dashboard).

use std::time::Duration;

use clap::Args;
use streamkeeper::janitor::Archive;
use streamkeeper::{GroupName, StreamKey};

use super::values::{
    parse_archive, parse_duration, parse_group, parse_listen, parse_positive_duration,
    parse_stream_key,
};

/// `stat` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Without streams, inspects every stream in the database (SCAN TYPE stream). \
With --max-lag or --max-time-lag, exits 1 when any group exceeds them: usable as a health check."
)]
pub struct StatArgs {
    /// Streams to inspect (default: all).
    #[arg(value_parser = parse_stream_key)]
    pub streams: Vec<StreamKey>,
    /// Print again every INTERVAL, with the trend of each group.
    #[arg(long, value_parser = parse_positive_duration, value_name = "INTERVAL")]
    pub watch: Option<Duration>,
    /// Only this group (repeatable): a service's health check is not failed
    /// by another service's lag, and a stream without the group fails it.
    #[arg(long = "group", short = 'g', value_name = "GROUP", value_parser = parse_group)]
    pub groups: Vec<GroupName>,
    /// Exit 1 when a group has more outstanding entries than this.
    #[arg(long, value_name = "N")]
    pub max_lag: Option<u64>,
    /// Exit 1 when a group's oldest outstanding entry is older than this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time_lag: Option<Duration>,
    /// Exact memory (walks the whole stream) instead of a sample.
    #[arg(long)]
    pub exact_memory: bool,
    /// Flag consumers idle longer than this (holding entries) as dead.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub dead_after: Duration,
    /// For sharded streams: a row per shard after the sum.
    #[arg(long)]
    pub shards: bool,
}

/// `janitor` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "The trim point is the oldest entry some group still needs (pending, or not yet \
delivered); it is computed and applied in one script. Caps remove entries whatever the groups \
say, so they need --archive: unacknowledged entries are archived before they are dropped. \
One janitor works per stream (lease {S}:janitor); others stand by."
)]
pub struct JanitorArgs {
    /// Serve this process's own Prometheus metrics (`GET /metrics`:
    /// entries handled, handler seconds, in flight, reclaimed, ticks,
    /// trims) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Streams to clean.
    #[arg(required_unless_present = "all", value_parser = parse_stream_key)]
    pub streams: Vec<StreamKey>,
    /// Every stream of the database that has a consumer group, listed
    /// again every run (new streams are picked up). Not with caps: name
    /// the streams to cap.
    #[arg(long, conflicts_with_all = ["streams", "max_len", "max_age"])]
    pub all: bool,
    /// One run, then exit.
    #[arg(long)]
    pub once: bool,
    /// Report what would be trimmed, trim nothing, and exit (one run, as
    /// with --once).
    #[arg(long)]
    pub dry_run: bool,
    /// Time between runs.
    #[arg(long, value_parser = parse_positive_duration, default_value = "10s", value_name = "DURATION")]
    pub interval: Duration,
    /// Keep at most N entries (archive unacked ones first).
    #[arg(long, value_name = "N")]
    pub max_len: Option<u64>,
    /// Keep no entry older than this (archive unacked ones first).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_age: Option<Duration>,
    /// Where capped unacked entries go: a JSON-lines file or stream:KEY.
    #[arg(long, value_name = "FILE|stream:KEY", value_parser = parse_archive)]
    pub archive: Option<Archive>,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve this process's own metrics (the library's counters and
    /// histograms) on a separate address as Prometheus `GET /metrics`,
    /// e.g. 127.0.0.1:9464; the dashboard's `/metrics` (stream state read
    /// from Redis) stays where it is.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Address to listen on: IP:PORT or localhost:PORT (loopback unless
    /// told otherwise).
    #[arg(long, default_value = "127.0.0.1:9187", value_parser = parse_listen)]
    pub listen: std::net::SocketAddr,
    /// Streams to show (default: all).
    #[arg(long, num_args = 1.., value_parser = parse_stream_key)]
    pub streams: Vec<StreamKey>,
    /// Allow actions (DLQ replay/purge, janitor, pause/resume, group reset,
    /// consumer removal); read-only without it.
    #[arg(long)]
    pub allow_actions: bool,
    /// Every request must carry this token (required beyond loopback, then
    /// at least 16 characters).
    #[arg(long, env = "STREAMKEEPER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Show a group red when it has more outstanding entries than this.
    #[arg(long, value_name = "N")]
    pub max_lag: Option<u64>,
    /// Show a group red when its oldest outstanding entry is older than this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time_lag: Option<Duration>,
    /// How often a history sample (every stream's length and lag, for the
    /// charts) is written to `{N}:history`.
    #[arg(long, default_value = "10s", value_parser = parse_history_every, value_name = "DURATION")]
    pub history_every: Duration,
    /// Most bytes `{N}:history` may take in Redis, however many streams
    /// there are (older samples are trimmed): e.g. 64MB, 500KB.
    #[arg(long, default_value = "64MB", value_parser = parse_history_max, value_name = "BYTES")]
    pub history_max: u64,
}

fn parse_history_every(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!(
            "{s:?} is under 1s: sample at most once a second (e.g. 10s, 1m)"
        ));
    }
    Ok(d)
}

fn parse_history_max(s: &str) -> Result<u64, String> {
    let b = super::values::parse_bytes(s)?;
    if b < 64 << 10 {
        return Err(format!(
            "{s:?} is under 64KB: keep room for at least a few samples (e.g. 64MB)"
        ));
    }
    Ok(b)
}
