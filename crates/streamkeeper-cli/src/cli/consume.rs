//! The flags of `consume`: the largest command, with its `--exec` and
//! `--pipe` contract in the long help.

use std::time::Duration;

use clap::{Args, ValueEnum};
use streamkeeper::{ConsumerName, GroupName, StartFrom, StreamKey};

pub use super::values::MaxDeliveries;
use super::values::{
    parse_claim_after, parse_consumer, parse_duration, parse_group, parse_lease, parse_listen,
    parse_max_deliveries, parse_positive, parse_positive_duration, parse_positive_usize,
    parse_start, parse_stream_key,
};

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
failed attempt (a failing command's last stderr lines end up in a dead letter's reason). \
Either way the entry stays pending in this group, parked (held by the consumer sk-retry, \
listed by `streamkeeper retry ls`), and runs again under the same ID after \
--retry-backoff (doubling per attempt); other groups never see it again. When the failed attempt was \
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
    /// Serve this process's own Prometheus metrics (`GET /metrics`:
    /// entries handled, handler seconds, in flight, reclaimed, ticks,
    /// trims) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<std::net::SocketAddr>,
    /// The stream.
    #[arg(value_parser = parse_stream_key)]
    pub stream: StreamKey,
    /// The consumer group.
    #[arg(long, short = 'g', value_parser = parse_group)]
    pub group: GroupName,
    /// This consumer's name (default: <hostname>-<pid>-<random>). Reuse a
    /// name to re-read its pending entries after a crash.
    #[arg(long, short = 'c', value_parser = parse_consumer)]
    pub consumer: Option<ConsumerName>,
    /// Create the group (and the stream) if missing.
    #[arg(long)]
    pub create: bool,
    /// With --create: where the new group starts (ID, `$`, `-` or a time).
    #[arg(
        long,
        default_value = "$",
        value_parser = parse_start,
        requires = "create",
        value_name = "ID|$|TIME",
        allow_hyphen_values = true
    )]
    pub from: StartFrom,
    /// End after N entries.
    #[arg(long, short = 'n', value_parser = parse_positive)]
    pub count: Option<u64>,
    /// Look, do not take: print the next entries the group would get
    /// (retries that fell due first; at most --count, default 10) and exit. Nothing is read as the group,
    /// acked or left pending, and no consumer is created.
    #[arg(long, conflicts_with_all = ["exec", "pipe", "ordered", "create"])]
    pub peek: bool,
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
    /// Dead-letter an entry when this many attempts (handler runs that
    /// failed or were cut off by a crash) are used up; `unlimited` retries
    /// for ever (not with --ordered: a shard would wait behind one entry).
    #[arg(long, value_name = "N|unlimited", default_value = "5", value_parser = parse_max_deliveries)]
    pub max_deliveries: MaxDeliveries,
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
