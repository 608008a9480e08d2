//! The command-line grammar (clap derive) and the values shared by every
//! command: where Redis is, and whether stdout is JSON.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use streamkeeper::{Connector, GroupName, StartFrom, StreamKey};

/// The address used when neither --redis nor STREAMKEEPER_REDIS is set.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// Reliable event streaming and scheduling on Redis Streams.
///
/// Exit codes: 0 ok, 1 a check failed, 2 error, 130 interrupted.
#[derive(Debug, Parser)]
#[command(
    name = "streamkeeper",
    version,
    about = "Reliable event streaming and scheduling on Redis Streams",
    long_about = None,
    after_help = "Exit codes: 0 ok, 1 a check failed, 2 error, 130 interrupted."
)]
pub struct Cli {
    /// Redis URL: redis://[user:pass@]host:port[/db], rediss://…,
    /// redis+unix:///path.sock, redis+sentinel://h1:p1,h2:p2/<master>
    /// (default redis://127.0.0.1:6379).
    #[arg(long, global = true, env = "STREAMKEEPER_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// Print JSON lines on stdout (one object per line, stable names).
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr; `produce` prints no IDs.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Append entries (from --field, or JSON lines on stdin).
    Produce(ProduceArgs),
    /// Print entries of a stream (XREAD), optionally following new ones.
    Tail(TailArgs),
    /// Read as a consumer group member; print entries or run a command per entry.
    Consume(ConsumeArgs),
    /// Create, destroy, list and reset consumer groups; list and remove consumers.
    Group(GroupArgs),
    /// Lag and health per stream and group (a health check with thresholds).
    Stat(StatArgs),
    /// Trim entries every group has acknowledged (never unacked ones).
    Janitor(JanitorArgs),
    /// Write a stream as JSON lines (lossless).
    Dump(DumpArgs),
    /// Append JSON lines (a dump) to a stream; checks the whole file first.
    Restore(RestoreArgs),
    /// Check the server's settings and say what matters for streams.
    Doctor,
    /// Web dashboard, Prometheus metrics and a JSON API.
    Serve(ServeArgs),
    /// Dead-letter queue: list, replay, purge.
    Dlq(DlqArgs),
    /// Sharded logical streams: create one, list its shards.
    Shard(ShardArgs),
    /// Periodic ticks into streams: add, ls, rm, pause, resume, run.
    Schedule(ScheduleArgs),
    /// Measure throughput against a plain redis-rs baseline.
    Bench(BenchArgs),
    /// Run the end-to-end demo (starts a private redis-server if no --redis).
    Demo(DemoArgs),
}

/// Options every command sees.
#[derive(Debug, Clone)]
pub struct Global {
    /// The URL given, if any.
    pub redis: Option<String>,
    /// JSON output.
    pub json: bool,
    /// Quiet: no logs but errors, no per-entry output where that is optional.
    pub quiet: bool,
}

impl Cli {
    /// The global options.
    pub fn global(&self) -> Global {
        Global {
            redis: self.redis.clone(),
            json: self.json,
            quiet: self.quiet,
        }
    }
}

impl Global {
    /// The URL to use.
    pub fn url(&self) -> &str {
        self.redis.as_deref().unwrap_or(DEFAULT_URL)
    }

    /// Connects, with an error that names the URL and the fix.
    pub async fn connect(&self) -> anyhow::Result<Connector> {
        Ok(Connector::connect(self.url()).await?)
    }

    /// Connects with explicit options.
    pub async fn connect_with(
        &self,
        options: streamkeeper::ConnectorOptions,
    ) -> anyhow::Result<Connector> {
        Ok(Connector::connect_with(self.url(), options).await?)
    }
}

/// Parses a stream key argument.
pub fn stream_key(s: &str) -> anyhow::Result<StreamKey> {
    StreamKey::new(s).context("invalid stream key")
}

/// Parses `k=v`.
pub fn parse_field(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Parses a humantime duration (`500ms`, `1s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 1s, 2m)"))
}

/// Parses a duration that must be longer than zero (intervals, timeouts):
/// `0s` would busy-loop.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero: give a duration above 0 (e.g. 500ms, 1s)"
        ));
    }
    Ok(d)
}

/// Parses `--claim-after`: at least [`streamkeeper::consumer::MIN_CLAIM_AFTER`].
pub fn parse_claim_after(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let min = streamkeeper::consumer::MIN_CLAIM_AFTER;
    if d < min {
        return Err(format!(
            "{s:?} is below {}: --claim-after is the time to detect a crashed consumer, and live consumers refresh their entries every third of it",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Parses `consume --lease`: at least 500 ms (heartbeats every fifth of
/// it must get through scheduling delays).
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(500) {
        return Err(format!(
            "{s:?} is below 500ms: members heartbeat every fifth of the lease, and a missed heartbeat moves shards"
        ));
    }
    Ok(d)
}

/// Parses a count that must be at least 1.
pub fn parse_positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number ≥ 1, got {s:?}")),
    }
}

/// [`parse_positive`] for sizes.
pub fn parse_positive_usize(s: &str) -> Result<usize, String> {
    parse_positive(s).and_then(|n| usize::try_from(n).map_err(|_| format!("{s} is too large")))
}

/// Parses a rate: `100`, `100/s`, `6000/m`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = match s.split_once('/') {
        Some((n, unit)) => {
            let per = match unit {
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                _ => return Err(format!("unknown rate unit {unit:?}: use /s, /m or /h")),
            };
            (n, per)
        }
        None => (s, 1.0),
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("expected a rate like 100/s, got {s:?}"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("rate must be positive, got {s:?}"));
    }
    Ok(n / per)
}

/// `produce` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --field, reads JSON lines from stdin: either entry objects \
{\"fields\":{\"k\":\"v\"}} or plain objects {\"k\":\"v\"}. All of stdin is checked before \
anything is written: a bad line writes nothing and exits 2.\n\
In --field values, {i} is replaced by the entry's index (0, 1, …); write {{i}} for a literal {i}.\n\
Field names starting with sk- are reserved and refused."
)]
pub struct ProduceArgs {
    /// The stream.
    pub stream: StreamKey,
    /// A field of every entry (repeatable).
    #[arg(long = "field", short = 'f', value_name = "K=V", value_parser = parse_field)]
    pub fields: Vec<(String, String)>,
    /// How many entries to append with --field (default 1).
    #[arg(long, short = 'n', value_parser = parse_positive)]
    pub count: Option<u64>,
    /// Rate limit, e.g. 100/s.
    #[arg(long, value_parser = parse_rate, value_name = "R/s")]
    pub rate: Option<f64>,
    /// Cap the stream at about N entries (XADD MAXLEN ~ N). Deletes old
    /// entries whether processed or not.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub maxlen: Option<u64>,
    /// Report an entry only once N replicas confirmed it (WAIT N after
    /// each batch). Unconfirmed batches are sent again, to the new master
    /// after a failover: with --wait 1 no reported entry is lost to a
    /// failover or a killed master (duplicates are possible).
    #[arg(long, value_name = "N")]
    pub wait: Option<u32>,
    /// How long one WAIT may take before the batch is sent again.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION", requires = "wait")]
    pub wait_timeout: Duration,
    /// After a Sentinel failover, hold writes until the new master has a
    /// replica in sync (at most 30 s), so a second failover soon after
    /// cannot erase them. Off by default: writes resume within about 2 s
    /// of the switch (availability first); with one replica the hold
    /// lasts ~15 s.
    #[arg(long)]
    pub hold_writes: bool,
    /// Partition key of a sharded stream (`shard create`): entries with
    /// the same key go to the same shard, in order. `{i}` is the entry
    /// index. Without --key or --key-field, a sharded stream's entries go
    /// round-robin.
    #[arg(long, value_name = "VALUE", conflicts_with = "key_field")]
    pub key: Option<String>,
    /// Route each entry of a sharded stream by the value of its field NAME.
    #[arg(long, value_name = "NAME")]
    pub key_field: Option<String>,
}

/// `tail` arguments.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The stream.
    pub stream: StreamKey,
    /// Start at an ID (inclusive), `-` (the beginning), `$` (only new
    /// entries), an RFC 3339 time or a relative time (`10m ago`).
    /// Without it: the last --count entries (default 10).
    #[arg(long, value_name = "ID|$|-|TIME")]
    pub from: Option<StartFrom>,
    /// How many entries to print (with --follow: before following).
    #[arg(long, short = 'n')]
    pub count: Option<usize>,
    /// Keep printing new entries as they arrive (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// Ack modes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckArg {
    /// Ack after the entry is printed or --exec exits 0.
    Auto,
    /// Read with NOACK (at-most-once).
    None,
    /// Never ack (entries stay pending; ack them yourself with XACK).
    Manual,
}

/// `consume` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "With --exec, CMD runs via `sh -c` once per entry with the entry's JSON \
line on stdin and SK_STREAM, SK_ID, SK_GROUP, SK_ATTEMPT (1 for the first run) in its \
environment. Exit 0 acks the entry; exit 75 asks for a retry later; any other exit is a \
failed attempt. Either way the entry is acked and stored in {S}:retry, then re-appended \
for this group after --retry-backoff (doubling per attempt); when the failed attempt was \
the --max-deliveries-th it is moved to the dead-letter stream {S}:dlq instead (see \
`streamkeeper dlq`). Attempts are handler runs that failed or were cut off by a crash: \
entries read ahead and never run do not count, and a graceful stop never moves an entry \
towards the dead-letter queue. The commands, and everything they start (even in a \
session of their own), are killed when this consumer ends, however it ends.\n\
--claim-after is the crash-detection time: a live consumer keeps every entry it holds \
fresh, however long its handler runs, so only the entries of a crashed (or frozen) \
consumer are reclaimed.\n\
Reconnects through failovers and restarts forever (each reconnect is logged).\n\
With --pipe, CMD runs once and gets one entry JSON line per entry on stdin; it answers one \
line per entry on stdout: `ack ID`, `retry ID [DURATION]`, `fail ID [REASON]` (a failed \
attempt; REASON is kept with a dead letter) or `dead ID REASON` (dead-letter now). A \
malformed answer counts as a failed attempt of its entry. A worker that exits 0 (recycling \
after N jobs) is restarted at once and the entries it did not answer go to the next one, \
uncharged. A worker that crashes, hangs (--timeout) or sends a line naming no entry it was \
given is restarted with backoff; if it had several entries unanswered, none is charged: \
they run one at a time and only the one whose lone run fails again is charged. A command \
that cannot start (exit 126/127, or 5 workers in a row ending before any answer) stops the \
consumer with exit 2 and nothing dead-lettered. The worker, and everything it starts, is \
killed when the consumer exits or dies.\n\
SIGINT/SIGTERM stop reading, let running commands finish, flush acks and exit 130."
)]
pub struct ConsumeArgs {
    /// The stream.
    pub stream: StreamKey,
    /// The consumer group.
    #[arg(long, short = 'g')]
    pub group: GroupName,
    /// This consumer's name (default: <hostname>-<pid>-<random>). Reuse a
    /// name to re-read its pending entries after a crash.
    #[arg(long, short = 'c')]
    pub consumer: Option<String>,
    /// Create the group (and the stream) if missing.
    #[arg(long)]
    pub create: bool,
    /// With --create: where the new group starts (ID, `$`, `-` or a time).
    #[arg(
        long,
        default_value = "$",
        requires = "create",
        value_name = "ID|$|TIME"
    )]
    pub from: StartFrom,
    /// End after N entries.
    #[arg(long, short = 'n', value_parser = parse_positive)]
    pub count: Option<u64>,
    /// When entries are acknowledged.
    #[arg(long, value_enum, default_value_t = AckArg::Auto)]
    pub ack: AckArg,
    /// Run CMD per entry (see below).
    #[arg(long, value_name = "CMD", conflicts_with = "pipe")]
    pub exec: Option<String>,
    /// Start CMD once and feed it entries as JSON lines; it answers
    /// `ack ID`, `retry ID [DURATION]`, `fail ID [REASON]` or `dead ID REASON`.
    #[arg(long, value_name = "CMD")]
    pub pipe: Option<String>,
    /// Entries handled at once with --exec (default 1), or left unanswered
    /// at most with --pipe (default 64).
    #[arg(long, value_parser = parse_positive_usize)]
    pub concurrency: Option<usize>,
    /// On a sharded stream: one owner per shard in the group at a time
    /// (leases with fencing, rebalanced as consumers come and go); entries
    /// of one key are handled one after the other, in order, and a failing
    /// entry is retried in place (its shard waits) up to --max-deliveries
    /// (default 5) runs, then dead-lettered.
    #[arg(long)]
    pub ordered: bool,
    /// With --ordered: the owner lease of a shard. A crashed or frozen
    /// owner's shards move after this long; members heartbeat every fifth
    /// of it. At least 500ms.
    #[arg(long, value_parser = parse_lease, default_value = "5s", value_name = "DURATION", requires = "ordered")]
    pub lease: Duration,
    /// With --pipe: after SIGINT/SIGTERM, how long to wait for the answers
    /// of entries already sent; unanswered ones stay pending.
    #[arg(long, value_parser = parse_positive_duration, default_value = "10s", value_name = "DURATION")]
    pub stop_timeout: Duration,
    /// With --exec or --pipe: a run with no answer after DURATION is a
    /// failed attempt ("timed out after DURATION"); --exec kills the
    /// command and everything it started, --pipe restarts a worker that
    /// answered nothing for DURATION. With --pipe the clock of an entry
    /// starts when it is the oldest unanswered one.
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Dead-letter an entry when this many attempts (handler runs) failed.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub max_deliveries: Option<u64>,
    /// Reclaim the entries of a consumer that stopped for this long
    /// (crash-detection time; live consumers keep theirs fresh). At least
    /// 250ms: below that, ordinary scheduling delays look like a crash.
    #[arg(long, value_parser = parse_claim_after, default_value = "60s", value_name = "DURATION")]
    pub claim_after: Duration,
    /// First retry delay after a failed --exec or --pipe attempt; it
    /// doubles with every attempt, up to 5 minutes.
    #[arg(long, value_parser = parse_duration, default_value = "1s", value_name = "DURATION")]
    pub retry_backoff: Duration,
    /// Dead-letter entries older than this (by the time in their ID).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_age: Option<Duration>,
    /// End when no entry arrived for this long.
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub idle_exit: Option<Duration>,
    /// Entries per read (XREADGROUP COUNT).
    #[arg(long, default_value_t = 100, value_parser = parse_positive_usize)]
    pub batch: usize,
}

/// `shard` arguments.
#[derive(Debug, Args)]
pub struct ShardArgs {
    #[command(subcommand)]
    pub action: ShardAction,
}

/// `shard` sub-commands.
#[derive(Debug, Subcommand)]
pub enum ShardAction {
    /// Make S a sharded stream of N shards: keys {S:0}…{S:N-1}, each in a
    /// hash slot of its own (on a cluster, spread over the primaries);
    /// layout in {S}:shards. Refuses if S exists as a plain stream.
    Create {
        /// The logical stream.
        stream: StreamKey,
        /// How many shards (1 to 1024).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
    },
    /// Per shard: key, hash slot, node, length; per group: pending and lag.
    Ls {
        /// The logical stream.
        stream: StreamKey,
    },
}

/// `group` arguments.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    pub action: GroupAction,
}

/// `group` sub-commands.
#[derive(Debug, Subcommand)]
pub enum GroupAction {
    /// Create a group (and the stream if missing).
    Create {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
        /// Where the group starts: `$` (new entries only), `-` (all), an ID or a time.
        #[arg(long, default_value = "$", value_name = "ID|$|TIME")]
        from: StartFrom,
    },
    /// Destroy a group (its pending list is dropped; the stream stays).
    Destroy {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
    },
    /// List the groups of a stream.
    Ls {
        /// The stream.
        stream: StreamKey,
    },
    /// Move the group's last-delivered ID (re-deliver or skip entries).
    Reset {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
        /// The new last-delivered ID or a time (entries after it are delivered next).
        #[arg(long, value_name = "ID|TIME")]
        to: StartFrom,
        /// Only show how many entries would be re-delivered or skipped.
        #[arg(long)]
        dry_run: bool,
    },
    /// List consumers; optionally remove idle ones (their pending entries
    /// go to the most recently active consumer first, never dropped).
    Consumers {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
        /// Remove consumers idle longer than this.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        remove_idle: Option<Duration>,
    },
}

/// `stat` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Without streams, inspects every stream in the database (SCAN TYPE stream). \
With --max-lag or --max-time-lag, exits 1 when any group exceeds them: usable as a health check."
)]
pub struct StatArgs {
    /// Streams to inspect (default: all).
    pub streams: Vec<String>,
    /// Print again every INTERVAL, with the trend of each group.
    #[arg(long, value_parser = parse_positive_duration, value_name = "INTERVAL")]
    pub watch: Option<Duration>,
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
    /// Streams to clean.
    #[arg(required = true)]
    pub streams: Vec<StreamKey>,
    /// One run, then exit.
    #[arg(long)]
    pub once: bool,
    /// Report what would be trimmed; trim nothing.
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
    #[arg(long, value_name = "FILE|stream:KEY")]
    pub archive: Option<String>,
}

/// `dump` arguments.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The stream.
    pub stream: StreamKey,
    /// First ID (inclusive) or time.
    #[arg(long, value_name = "ID|TIME")]
    pub from: Option<String>,
    /// Last ID (inclusive) or time.
    #[arg(long, value_name = "ID|TIME")]
    pub to: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// `restore` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "The whole input is checked before the first write: a bad line writes nothing \
and names its line number (or is skipped with --skip-bad). With --keep-ids the stream must be \
empty or end before the first ID of the dump."
)]
pub struct RestoreArgs {
    /// The stream.
    pub stream: StreamKey,
    /// Read FILE instead of stdin.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub input: Option<std::path::PathBuf>,
    /// Keep the IDs of the dump (byte-for-byte copy).
    #[arg(long)]
    pub keep_ids: bool,
    /// Skip bad lines (reported with their numbers) instead of failing.
    #[arg(long)]
    pub skip_bad: bool,
}

/// `serve` arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1:9187")]
    pub listen: std::net::SocketAddr,
    /// Streams to show (default: all).
    #[arg(long, num_args = 1..)]
    pub streams: Vec<String>,
    /// Allow actions (DLQ replay/purge, janitor, pause/resume, group reset,
    /// consumer removal); read-only without it.
    #[arg(long)]
    pub allow_actions: bool,
    /// Every request must carry this token (required beyond loopback).
    #[arg(long, env = "STREAMKEEPER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Show a group red when it has more outstanding entries than this.
    #[arg(long, value_name = "N")]
    pub max_lag: Option<u64>,
    /// Show a group red when its oldest outstanding entry is older than this.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub max_time_lag: Option<Duration>,
}

/// What `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchMode {
    /// Pipelined XADD.
    Produce,
    /// Group consume + ack.
    Consume,
    /// XREAD paging.
    Read,
    /// All of the above.
    All,
    /// XADD → handler latency at a fixed --rate (p50/p99/max µs).
    E2e,
    /// The built-in `--pipe` worker of `bench consume|e2e --pipe`: answers
    /// `ack ID` to every line on stdin.
    #[value(hide = true)]
    AckWorker,
    /// The scheduler: N schedules, several instances, lateness and duplicates.
    Scheduler,
    /// Janitor cost on a stream of --messages entries with 3 groups.
    Janitor,
    /// `stat` over 100 streams with 2 groups each.
    Stat,
}

/// `bench` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Without --redis, starts a private redis-server. Use a release build \
(cargo build --release) for meaningful figures."
)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    pub mode: BenchMode,
    /// Messages per run.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Also run the plain redis-rs loop for the same work and print the ratio.
    #[arg(long)]
    pub baseline: bool,
    /// `bench scheduler`: number of schedules.
    #[arg(long, default_value_t = 10_000)]
    pub schedules: usize,
    /// `bench scheduler`: interval of every schedule.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub every: Duration,
    /// `bench scheduler`: instances running at once.
    #[arg(long, default_value_t = 3)]
    pub instances: usize,
    /// `bench e2e`: XADDs per second (default 10000/s).
    #[arg(long, value_parser = parse_rate, value_name = "R/s")]
    pub rate: Option<f64>,
    /// `bench consume|e2e`: also measure the `consume --pipe` path with
    /// this worker (default: a built-in one that acks every line).
    #[arg(long, value_name = "CMD", num_args = 0..=1,
          default_missing_value = crate::bench_e2e::BUILTIN_WORKER)]
    pub pipe: Option<String>,
    /// `bench scheduler`: how long to measure.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// `bench produce|consume|all`: a sharded stream of N shards (each in
    /// its own slot); on a cluster URL the baseline is a plain redis-rs
    /// cluster loop over the same shard keys. Prints each primary's share.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: Option<u32>,
}

/// `demo` arguments.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Entries the producer writes.
    #[arg(long, default_value_t = 5_000)]
    pub messages: u64,
}

/// `dlq` arguments.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

/// `dlq` sub-commands.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters of S (stored in {S}:dlq), oldest first.
    Ls {
        /// The stream.
        stream: StreamKey,
        /// At most this many.
        #[arg(long, short = 'n', default_value_t = 100)]
        count: usize,
    },
    /// Move dead letters back to S (each atomically); only the group that
    /// gave up on an entry processes it again.
    Replay {
        /// The stream.
        stream: StreamKey,
        /// The dead letter's ID in {S}:dlq (repeatable).
        #[arg(long = "id", value_name = "ID", required_unless_present = "all")]
        ids: Vec<String>,
        /// Replay all dead letters.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters (all, or those before an ID or time).
    Purge {
        /// The stream.
        stream: StreamKey,
        /// Only dead letters older than this ID or time.
        #[arg(long, value_name = "ID|TIME")]
        before: Option<StartFrom>,
    },
}

/// `schedule` arguments.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Key namespace of the schedules ({N}:schedules, {N}:due).
    #[arg(long, global = true, default_value = "streamkeeper")]
    pub namespace: String,
    #[command(subcommand)]
    pub action: ScheduleAction,
}

/// `schedule` sub-commands.
#[derive(Debug, Subcommand)]
pub enum ScheduleAction {
    /// Add or replace a schedule (takes effect at the next poll of running instances).
    #[command(group(clap::ArgGroup::new("when").required(true).args(["every", "cron"])))]
    Add {
        /// The schedule's name.
        name: String,
        /// Fire every DURATION (e.g. 30s, 22h; at least 100ms).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        every: Option<Duration>,
        /// Fire on a cron expression (5 fields, or 6 with seconds first).
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// Time zone of --cron (IANA name; default UTC).
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// The stream ticks go to.
        #[arg(long, value_name = "S")]
        to: String,
        /// A field of every tick (repeatable).
        #[arg(long = "field", short = 'f', value_name = "K=V", value_parser = parse_field)]
        fields: Vec<(String, String)>,
        /// Ticks missed while no instance ran: skip, once or catch-up:N.
        #[arg(long, default_value = "skip")]
        missed: String,
        /// Emit each tick up to this much after its due time (spreads load).
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        jitter: Option<Duration>,
    },
    /// List schedules with next due time, last tick and its lateness.
    Ls,
    /// Remove a schedule.
    Rm {
        /// The schedule's name.
        name: String,
    },
    /// Pause a schedule (it keeps its definition).
    Pause {
        /// The schedule's name.
        name: String,
    },
    /// Resume a paused schedule (next tick computed from now).
    Resume {
        /// The schedule's name.
        name: String,
    },
    /// Add or replace many schedules from JSON lines named like the flags
    /// of `add` ({"name","every"|"cron","tz","to","fields","missed",
    /// "jitter","paused"}); every line is validated before any is written.
    ///
    /// Lines over 1 MiB and names over 1024 bytes are refused by line
    /// number (exit 2, nothing written). Of a name given on several lines,
    /// the last line is stored; `imported N` counts schedules stored.
    /// Interval schedules' first due times are spread over one interval,
    /// at a place fixed by the name (importing again keeps it), so they do
    /// not all fall due at once; cron schedules keep their cron times.
    Import {
        /// Read this file instead of stdin.
        #[arg(long, short = 'i', value_name = "FILE")]
        input: Option<std::path::PathBuf>,
    },
    /// Print every schedule as a JSON line in the form `import` reads.
    Export,
    /// Run a scheduler instance until interrupted (any number may run).
    Run {
        /// A name for this instance in logs.
        #[arg(long)]
        instance: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::{Cli, Command, GroupAction, ScheduleAction};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("streamkeeper").chain(args.iter().copied()))
    }

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn produce_holds_writes_after_a_failover_only_when_asked() {
        for (args, hold) in [
            (&["produce", "s", "-f", "k=v"][..], false),
            (&["produce", "s", "-f", "k=v", "--hold-writes"], true),
        ] {
            let Command::Produce(p) = parse(args).expect("ok").command else {
                panic!("produce")
            };
            assert_eq!(p.hold_writes, hold, "{args:?}");
        }
    }

    #[test]
    fn typed_values_are_parsed_once_by_clap() {
        let cli = parse(&["consume", "orders", "-g", "billing", "--batch", "5"]).expect("ok");
        let Command::Consume(c) = cli.command else {
            panic!("consume")
        };
        assert_eq!(c.stream.as_str(), "orders");
        assert_eq!(c.group.as_str(), "billing");
        assert_eq!(c.batch, 5);
        let cli = parse(&["group", "reset", "s", "g", "--to", "0-0"]).expect("ok");
        assert!(matches!(
            cli.command,
            Command::Group(super::GroupArgs {
                action: GroupAction::Reset { .. }
            })
        ));
        let cli = parse(&["janitor", "a", "b", "--interval", "2s"]).expect("ok");
        let Command::Janitor(j) = cli.command else {
            panic!("janitor")
        };
        assert_eq!(j.streams.len(), 2);
        assert_eq!(j.interval, Duration::from_secs(2));
    }

    #[test]
    fn lease_needs_ordered_and_half_a_second() {
        let ok = parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "2s"]).expect("ok");
        let Command::Consume(c) = ok.command else {
            panic!("consume")
        };
        assert_eq!(c.lease, Duration::from_secs(2));
        assert!(parse(&["consume", "s", "-g", "g", "--lease", "2s"]).is_err());
        assert!(parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "100ms"]).is_err());
        assert!(parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "0s"]).is_err());
    }

    #[test]
    fn zero_empty_and_negative_values_are_refused() {
        for args in [
            &["stat", "--watch", "0s"][..],
            &["janitor", "s", "--interval", "0ms"],
            &["consume", "s", "-g", "g", "--batch", "0"],
            &["consume", "s", "-g", "g", "--concurrency", "0"],
            &["consume", "s", "-g", "g", "--idle-exit", "0s"],
            &["consume", "s", "-g", ""],
            &["produce", "", "--field", "a=1"],
            &["produce", "s", "--field", "a=1", "--maxlen", "0"],
            &["produce", "s", "--field", "a=1", "--count", "-1"],
            &["produce", "s", "--field", "=1"],
            &["tail", "s", "--count", "-5"],
            &["tail", "s", "--from", "yesterday"],
            &["group", "reset", "s", "g", "--to", "soon"],
            &["dlq", "purge", "s", "--before", "x-y"],
        ] {
            assert!(parse(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn tz_is_optional_and_only_parsed_as_given() {
        let cli = parse(&["schedule", "add", "n", "--every", "1s", "--to", "t"]).expect("ok");
        let Command::Schedule(s) = cli.command else {
            panic!("schedule")
        };
        let ScheduleAction::Add { tz, .. } = s.action else {
            panic!("add")
        };
        assert_eq!(tz, None);
    }
}
