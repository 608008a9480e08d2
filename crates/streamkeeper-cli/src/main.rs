//! `streamkeeper`: the command-line tool (contract: docs/cli.md).
//!
//! Exit codes: 0 ok, 1 a check failed, 2 error (one line on stderr),
//! 130 interrupted. `--json` makes stdout JSON lines; logs go to stderr.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `cli` | the clap grammar, one file per command family, typed values |
//! | `produce`, `append`, `tail`, `dump` | writing and reading entries (`tail` and `dump` of a sharded stream: the library's `shard::MergedReader`) |
//! | `consume`, `pipe`, `reaper` | a group member: print, `--exec` per entry, `--pipe` worker; no descendant outlives it |
//! | `group`, `shard`, `dlq`, `retry`, `stat`, `doctor` | admin and health |
//! | `janitor`, `schedule`, `schedule_io` | ack-aware trimming; the scheduler and its import/export |
//! | `serve` | the dashboard of `streamkeeper-web` |
//! | `metrics` | `--metrics ADDR`: the process's own Prometheus `/metrics` (consume, schedule run, janitor, serve, bench) |
//! | `otel` | `--otlp-endpoint`: span export (feature `otel`) |
//! | `logs` | `--log-format json`: announcements and handlers' stderr as JSON events |
//! | `bench`, `bench_kit`, `bench_e2e`, `bench_shards`, `demo` | measuring against plain redis-rs; the end-to-end demo |
//! | `output`, `signal`, `manual` | printing, SIGINT/SIGTERM, completions and man page |

mod append;
mod bench;
mod bench_e2e;
mod bench_kit;
mod bench_shards;
mod cli;
mod consume;
mod demo;
mod dlq;
mod doctor;
mod dump;
mod group;
mod janitor;
mod logs;
mod manual;
mod metrics;
mod otel;
mod output;
mod pipe;
mod produce;
mod reaper;
mod retry;
mod schedule;
mod schedule_io;
mod serve;
mod shard;
mod signal;
mod stat;
mod tail;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, LogFormat};

/// What a command ended with, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything fine.
    Ok,
    /// A check failed (exit 1).
    CheckFailed,
    /// Stopped by SIGINT/SIGTERM (exit 130).
    Interrupted,
}

fn main() -> ExitCode {
    // `streamkeeper __reap CMD`: the anchor of a worker (reaper.rs), before
    // anything else (it must not get this process's signal handlers).
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() == Some(std::ffi::OsStr::new(reaper::ARG)) {
        return match args.next() {
            Some(cmd) => ExitCode::from(reaper::run(&cmd)),
            None => ExitCode::from(2),
        };
    }
    if let Err(e) = signal::install_early() {
        eprintln!("streamkeeper: error: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    output::exit_quietly_on_closed_stdout();
    // The runtime and the signal handlers come first, so a SIGTERM in the
    // first milliseconds still ends with exit 130, not death by signal.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamkeeper: error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = runtime.block_on(async { signal::install() }) {
        eprintln!("streamkeeper: error: cannot install signal handlers: {e}");
        return ExitCode::from(2);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let log_format = cli.log_format;
    init_logging(cli.verbose, cli.quiet, log_format);
    // Spans are flushed when this guard drops, after the command.
    // Outside the runtime: the exporter's blocking HTTP client runs its own.
    let otel = match otel::install(cli.otlp_endpoint.as_deref()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("streamkeeper: error: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            _ = signal::unhandled() => Ok(Exit::Interrupted),
        }
    });
    drop(otel);
    // Nothing may wait on a blocking read of stdin after the end.
    runtime.shutdown_background();
    if signal::arrived() {
        return ExitCode::from(130);
    }
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::CheckFailed) => ExitCode::from(1),
        Ok(Exit::Interrupted) => ExitCode::from(130),
        // A closed stdout (`| head -1`) is a clean end, as in ripgrep.
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let line = one_line(&e);
            match log_format {
                LogFormat::Text => eprintln!("streamkeeper: error: {line}"),
                LogFormat::Json => eprintln!("{}", json_error(&line)),
            }
            ExitCode::from(2)
        }
    }
}

/// The final error as a log line of `--log-format json`, so a collector
/// reading stderr gets JSON to the end (shown whatever the log filter).
fn json_error(line: &str) -> String {
    serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": "ERROR",
        "fields": { "message": format!("streamkeeper: error: {line}") },
    })
    .to_string()
}

/// Help and version print as clap prints them; a usage error becomes one
/// line on stderr with exit 2, like every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let text = e.render().to_string();
    let body = text
        .split("\n\nUsage:")
        .next()
        .unwrap_or(&text)
        .split("\n\nFor more information")
        .next()
        .unwrap_or(&text);
    let line = body.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = line.strip_prefix("error: ").unwrap_or(&line);
    eprintln!("streamkeeper: error: {line} (see --help)");
    ExitCode::from(2)
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already includes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<redis::RedisError>() {
            Some(r) => streamkeeper::error::redis_text(r),
            None => cause.to_string(),
        };
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        // The library's errors already say what failed and why; their
        // sources would repeat raw redis-rs text.
        if cause.is::<streamkeeper::Error>() {
            break;
        }
    }
    line.replace('\n', " ")
}

fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,streamkeeper=info,streamkeeper_cli=info",
        (false, 1) => "info,streamkeeper=debug,streamkeeper_cli=debug",
        _ => "debug,streamkeeper=trace,streamkeeper_cli=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    logs::set_json(matches!(format, LogFormat::Json));
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line: timestamp, level, fields (with the message)
        // and the spans it happened in.
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let global = cli.global();
    // Before the command starts, so its series register with the recorder.
    let _metrics = metrics::start(&cli.command).await?;
    match cli.command {
        Command::Produce(args) => {
            let stream = args.stream.to_string();
            otel::around_produce(&stream, produce::run(&global, args)).await
        }
        Command::Tail(args) => tail::run(&global, args).await,
        Command::Consume(args) => consume::run(&global, args).await,
        Command::Group(args) => group::run(&global, args).await,
        Command::Dlq(args) => dlq::run(&global, args).await,
        Command::Retry(args) => retry::run(&global, args).await,
        Command::Shard(args) => shard::run(&global, args).await,
        Command::Stat(args) => stat::run(&global, args).await,
        Command::Janitor(args) => janitor::run(&global, args).await,
        Command::Dump(args) => dump::dump(&global, args).await,
        Command::Restore(args) => dump::restore(&global, args).await,
        Command::Doctor => doctor::run(&global).await,
        Command::Serve(args) => serve::run(&global, args).await,
        Command::Schedule(args) => schedule::run(&global, args).await,
        Command::Bench(args) => bench::run(&global, args).await,
        Command::Demo(args) => demo::run(&global, args).await,
        Command::Completions(args) => manual::completions(&args),
        Command::Man => manual::man(),
    }
}
