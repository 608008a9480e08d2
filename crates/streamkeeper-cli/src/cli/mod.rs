//! The command-line grammar (clap derive) and the values shared by every
//! command: where Redis is, and whether stdout is JSON.
//!
//! The flags of each command family live in a file of their own; their
//! values are parsed by clap through `values.rs`, so commands get typed
//! values (`StreamKey`, `StreamId`, `StartFrom`, `Duration`…) and a bad one
//! is a usage error before anything connects. This module imports no
//! command: commands import it.

mod bench;
mod consume;
mod entries;
mod groups;
mod ops;
mod schedule;
#[cfg(test)]
mod tests;
mod values;

use clap::{Parser, Subcommand};
use streamkeeper::Connector;

pub use bench::{BenchArgs, BenchMode, DemoArgs, BUILTIN_WORKER};
pub use consume::{AckArg, ConsumeArgs};
pub use entries::{DumpArgs, ProduceArgs, RestoreArgs, TailArgs};
pub use groups::{
    DlqAction, DlqArgs, GroupAction, GroupArgs, RetryAction, RetryArgs, ShardAction, ShardArgs,
};
pub use ops::{JanitorArgs, ServeArgs, StatArgs};
pub use schedule::{ScheduleAction, ScheduleArgs};

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
    after_help = "Redis URLs (--redis or STREAMKEEPER_REDIS): redis://[user:pass@]host:port[/db], \
rediss://… (TLS), unix:///path.sock, redis+sentinel://h1:p1,h2:p2/MASTER, \
redis+cluster://h1:p1,h2:p2 (rediss+cluster:// with TLS).\n\
Exit codes: 0 ok, 1 a check failed, 2 error, 130 interrupted."
)]
pub struct Cli {
    /// Redis URL: redis://[user:pass@]host:port[/db], rediss://… (TLS),
    /// unix:///path.sock (or redis+unix://), redis+sentinel://h1:p1,h2:p2/<master>,
    /// redis+cluster://h1:p1,h2:p2 (rediss+cluster:// with TLS)
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
    /// Export spans over OTLP/HTTP protobuf to this collector (its base
    /// URL, e.g. http://127.0.0.1:4318; spans go to URL/v1/traces):
    /// `produce` a send span, `consume` a process span per handler run
    /// continuing the entry's `traceparent`. Needs a build with the `otel`
    /// feature (release builds).
    #[arg(
        long,
        global = true,
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,
    /// Log lines on stderr as text, or as one JSON object per line.
    #[arg(
        long,
        global = true,
        env = "STREAMKEEPER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
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
    /// Entries waiting for a delayed retry: list them.
    Retry(RetryArgs),
    /// Sharded logical streams: create one, list its shards.
    Shard(ShardArgs),
    /// Periodic ticks into streams: add, ls, rm, pause, resume, run.
    Schedule(ScheduleArgs),
    /// Measure throughput against a plain redis-rs baseline.
    Bench(BenchArgs),
    /// Run the end-to-end demo (starts a private redis-server if no --redis).
    Demo(DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(CompletionsArgs),
    /// Print the man page (roff), every command included.
    Man,
}

/// How log lines on stderr look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: time, level, message and fields on one line.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON formatter).
    Json,
}

/// `completions` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = "Install, for example: streamkeeper completions bash > \
~/.local/share/bash-completion/completions/streamkeeper")]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
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
