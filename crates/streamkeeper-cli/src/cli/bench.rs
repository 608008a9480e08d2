//! The flags of `bench` (what to measure, how much) and `demo`.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::values::{parse_duration, parse_listen, parse_rate};

/// `bench --pipe` without a command: the built-in worker (`bench
/// ack-worker`). Here, not in the bench code, so the grammar imports no
/// command.
pub const BUILTIN_WORKER: &str = "builtin";

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
    /// Install the Prometheus recorder for the run and serve it on this
    /// address (`GET /metrics`), to measure what recording costs.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    pub metrics: Option<std::net::SocketAddr>,
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
          default_missing_value = BUILTIN_WORKER)]
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
