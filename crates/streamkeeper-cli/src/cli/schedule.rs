//! The flags of `schedule` and its sub-commands.

use std::time::Duration;

use clap::{Args, Subcommand};
use streamkeeper::scheduler::Missed;
use streamkeeper::StreamKey;

use super::values::{parse_duration, parse_field, parse_listen, parse_missed, parse_stream_key};

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
        #[arg(long, value_name = "S", value_parser = parse_stream_key)]
        to: StreamKey,
        /// A field of every tick (repeatable).
        #[arg(long = "field", short = 'f', value_name = "K=V", value_parser = parse_field)]
        fields: Vec<(String, String)>,
        /// Ticks missed while no instance ran: skip, once or catch-up:N.
        #[arg(long, default_value = "skip", value_name = "skip|once|catch-up:N", value_parser = parse_missed)]
        missed: Missed,
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
        /// Serve this process's own Prometheus metrics (`GET /metrics`:
        /// ticks emitted and their lateness per schedule) on this
        /// address, e.g. 127.0.0.1:9464.
        #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
        metrics: Option<std::net::SocketAddr>,
    },
}
