//! `streamkeeper consume`: a consumer group member on the command line.
//!
//! Prints entries as JSON lines, or runs `--exec CMD` per entry with the
//! exit-code protocol of CLI.md: 0 ack, 75 retry later, other = failed
//! delivery (dead-lettered after `--max-deliveries`).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use streamkeeper::{
    wire, AckMode, ConsumerName, ConsumerOptions, Delivery, GroupConsumer, Outcome,
};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cli::{AckArg, ConsumeArgs, Global};
use crate::signal;
use crate::Exit;

/// The exit code a `--exec` command uses to ask for a retry (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;

pub async fn run(global: &Global, args: ConsumeArgs) -> anyhow::Result<Exit> {
    let stream = args.stream.clone();
    let group = args.group.clone();
    let consumer = match &args.consumer {
        Some(c) => ConsumerName::new(c.clone()).context("invalid --consumer")?,
        None => ConsumerName::unique(),
    };
    let create = if args.create { Some(args.from) } else { None };
    // A consumer on the command line never gives up reconnecting.
    let redis = global
        .connect_with(streamkeeper::ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        })
        .await?;
    let options = ConsumerOptions {
        batch: args.batch.max(1),
        ack_mode: match args.ack {
            AckArg::Auto => AckMode::Auto,
            AckArg::None => AckMode::None,
            AckArg::Manual => AckMode::Manual,
        },
        claim_after: Some(args.claim_after),
        create,
        limit: args.count,
        max_deliveries: args.max_deliveries,
        max_age: args.max_age,
        retry_backoff: args.retry_backoff,
        ..ConsumerOptions::default()
    };
    let stop = CancellationToken::new();
    let interrupted = signal::cancel_on_signal(stop.clone());
    let started = Instant::now();
    let last_activity = Arc::new(AtomicU64::new(0));
    if let Some(idle) = args.idle_exit {
        tokio::spawn(idle_watchdog(
            idle,
            started,
            last_activity.clone(),
            stop.clone(),
        ));
    }
    tracing::debug!(%consumer, "consuming");
    let exec = args.exec.map(Arc::new);
    let (retry_backoff, retry_backoff_max) = (options.retry_backoff, options.retry_backoff_max);
    let group_name = group.to_string();
    let stdout_closed = stop.clone();
    let handler = move |d: Delivery| {
        let exec = exec.clone();
        let stdout_closed = stdout_closed.clone();
        let last_activity = last_activity.clone();
        let group_name = group_name.clone();
        async move {
            last_activity.store(elapsed_ms(started), Ordering::Relaxed);
            let line = wire::entry_to_line(d.stream().as_str(), d.entry());
            let outcome = match exec {
                None => match crate::output::json_line_str(&line) {
                    Ok(()) => Ok(Outcome::Ack),
                    // stdout closed (`| head -1`): stop cleanly (exit 0);
                    // the entry counts as a failed delivery, so it is
                    // handed out again later, never lost.
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            stdout_closed.cancel();
                        }
                        Err(format!("cannot print the entry: {e}"))
                    }
                },
                Some(cmd) => {
                    let backoff = streamkeeper::retry::backoff(
                        d.delivery_count(),
                        retry_backoff,
                        retry_backoff_max,
                    );
                    run_exec(&cmd, &d, &group_name, &line, backoff).await
                }
            };
            last_activity.store(elapsed_ms(started), Ordering::Relaxed);
            outcome
        }
    };
    let stats = GroupConsumer::new(&redis, stream, group)
        .consumer_name(consumer)
        .options(options)
        .run(handler, args.concurrency.max(1), stop)
        .await?;
    tracing::debug!(
        delivered = stats.delivered,
        acked = stats.acked,
        retried = stats.retried,
        dead_lettered = stats.dead_lettered,
        "consumer stopped"
    );
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn idle_watchdog(
    idle: Duration,
    started: Instant,
    last: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let tick = (idle / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if elapsed_ms(started).saturating_sub(last.load(Ordering::Relaxed)) >= idle_ms {
            tracing::info!(?idle, "no entry arrived for the idle time; exiting");
            stop.cancel();
            return;
        }
    }
}

/// Runs the command for one entry and maps its exit code to an outcome.
async fn run_exec(
    cmd: &str,
    d: &Delivery,
    group: &str,
    line: &str,
    backoff: Duration,
) -> Result<Outcome, String> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("SK_STREAM", d.stream().as_str())
        .env("SK_ID", d.id().to_string())
        .env("SK_GROUP", group)
        .env("SK_DELIVERIES", d.delivery_count().to_string())
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run --exec command: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe early;
        // that is not an error of the entry.
        let _ = stdin.write_all(line.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("--exec command failed: {e}"))?;
    match status.code() {
        Some(0) => Ok(Outcome::Ack),
        Some(EXIT_RETRY) => Ok(Outcome::Retry { after: backoff }),
        Some(code) => Err(format!("--exec command exited with {code}")),
        None => Err("--exec command was killed by a signal".into()),
    }
}
