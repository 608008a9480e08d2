//! The flags of the commands that shape what sits around a stream: its
//! consumer groups (`group`), its dead letters (`dlq`) and its shards
//! (`shard`).

use std::time::Duration;

use clap::{Args, Subcommand};
use streamkeeper::{GroupName, StartFrom, StreamId, StreamKey};

use super::values::{
    parse_bound, parse_duration, parse_group, parse_positive_usize, parse_start, parse_stream_id,
    parse_stream_key,
};

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
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// How many shards (1 to 1024).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
    },
    /// Change the shard count online, up or down, while producers and
    /// consumers run: a new layout generation of N shards takes the
    /// appends; the shards of the older ones are sealed at a cut (an
    /// append routed by the old layout is refused, and the producer
    /// re-routes) and drain. In ordered mode the new shards are handed out
    /// once a group handled everything up to the cuts, so each key's
    /// order holds. Progress on stderr; running it again completes an
    /// interrupted resize.
    Resize {
        /// The logical stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The new shard count (1 to 1024).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        shards: u32,
    },
    /// Per shard of every live generation: key, generation, state (live,
    /// sealed and draining, drained), hash slot, node, length; per group:
    /// owner, pending and outstanding.
    Ls {
        /// The logical stream.
        #[arg(value_parser = parse_stream_key)]
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
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
        /// Where the group starts: `$` (new entries only), `-` (all), an ID or a time.
        #[arg(long, default_value = "$", value_name = "ID|$|TIME", value_parser = parse_start, allow_hyphen_values = true)]
        from: StartFrom,
    },
    /// Destroy a group (its pending list is dropped; the stream stays).
    Destroy {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
    },
    /// List the groups of a stream.
    Ls {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
    },
    /// Move the group's last-delivered ID (re-deliver or skip entries).
    Reset {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
        /// The new last-delivered ID or a time (entries after it are
        /// delivered next): an ID, `-` (the start), an RFC 3339 time,
        /// `10m ago`, `-10m` or `now-10m`.
        #[arg(long, value_name = "ID|TIME", value_parser = parse_start, allow_hyphen_values = true)]
        to: StartFrom,
        /// Only show how many entries would be re-delivered or skipped.
        #[arg(long)]
        dry_run: bool,
    },
    /// List consumers; optionally remove idle ones (their pending entries
    /// go to the most recently active consumer first, never dropped).
    Consumers {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The group.
        #[arg(value_parser = parse_group)]
        group: GroupName,
        /// Remove consumers idle longer than this.
        #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
        remove_idle: Option<Duration>,
    },
}

/// `dlq` arguments.
#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

/// `retry`: entries waiting for a delayed retry.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(subcommand)]
    pub action: RetryAction,
}

/// `retry` sub-commands.
#[derive(Debug, Subcommand)]
pub enum RetryAction {
    /// List the entries of S waiting for a delayed retry (they stay
    /// pending in their group, held by the consumer `sk-retry`), soonest
    /// due first: group, ID, when due, attempts so far. Takes nothing.
    Ls {
        /// The stream (a sharded stream: every shard).
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// Only this group's.
        #[arg(long, short = 'g', value_parser = parse_group)]
        group: Option<GroupName>,
        /// At most this many per group.
        #[arg(long, short = 'n', default_value = "100", value_parser = parse_positive_usize)]
        count: usize,
    },
}

/// `dlq` sub-commands.
#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters of S (stored in {S}:dlq), oldest first.
    Ls {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// At most this many.
        #[arg(long, short = 'n', default_value_t = 100)]
        count: usize,
    },
    /// Move dead letters back to S (each atomically); only the group that
    /// gave up on an entry processes it again.
    Replay {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// The dead letter's ID in {S}:dlq (repeatable).
        #[arg(long = "id", value_name = "ID", required_unless_present = "all", value_parser = parse_stream_id)]
        ids: Vec<StreamId>,
        /// Replay all dead letters.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters (all, or those before an ID or time).
    Purge {
        /// The stream.
        #[arg(value_parser = parse_stream_key)]
        stream: StreamKey,
        /// Only dead letters older than this ID or time.
        #[arg(long, value_name = "ID|TIME", value_parser = parse_bound)]
        before: Option<StreamId>,
    },
}
