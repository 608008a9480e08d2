//! `streamkeeper`: the command-line tool (contract: docs/cli.md).
//!
//! Exit codes: 0 ok, 1 a check failed, 2 error (one line on stderr),
//! 130 interrupted. `--json` makes stdout JSON lines; logs go to stderr.

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

use cli::{Cli, Command};

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
    init_logging(cli.verbose, cli.quiet);
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            _ = signal::unhandled() => Ok(Exit::Interrupted),
        }
    });
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
            eprintln!("streamkeeper: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
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

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,streamkeeper=info,streamkeeper_cli=info",
        (false, 1) => "info,streamkeeper=debug,streamkeeper_cli=debug",
        _ => "debug,streamkeeper=trace,streamkeeper_cli=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STREAMKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let global = cli.global();
    match cli.command {
        Command::Produce(args) => produce::run(&global, args).await,
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
    }
}
