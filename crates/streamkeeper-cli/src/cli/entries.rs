//! The flags of the commands that write and read entries: `produce`,
//! `tail`, `dump` and `restore`.

use std::time::Duration;

use clap::Args;
use streamkeeper::{StartFrom, StreamId, StreamKey};

use super::values::{
    parse_bound, parse_duration, parse_field, parse_positive, parse_rate, parse_start,
    parse_stream_key,
};

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
    #[arg(value_parser = parse_stream_key)]
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
    /// The stream. A sharded stream's shards are merged in ID order, each
    /// line naming its shard.
    #[arg(value_parser = parse_stream_key)]
    pub stream: StreamKey,
    /// Start at an ID (inclusive), `-` (the beginning), `$` (only new
    /// entries), an RFC 3339 time or a relative time (`10m ago`).
    /// Without it: the last --count entries (default 10).
    #[arg(long, value_name = "ID|$|-|TIME", value_parser = parse_start, allow_hyphen_values = true)]
    pub from: Option<StartFrom>,
    /// How many entries to print (with --follow: before following).
    #[arg(long, short = 'n')]
    pub count: Option<usize>,
    /// Keep printing new entries as they arrive (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `dump` arguments.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The stream.
    #[arg(value_parser = parse_stream_key)]
    pub stream: StreamKey,
    /// First ID (inclusive) or time (default: the first entry).
    #[arg(long, value_name = "ID|TIME", value_parser = parse_bound)]
    pub from: Option<StreamId>,
    /// Last ID (inclusive) or time (default: the last entry).
    #[arg(long, value_name = "ID|TIME", value_parser = parse_bound)]
    pub to: Option<StreamId>,
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
    #[arg(value_parser = parse_stream_key)]
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
