//! `streamkeeper consume`: a consumer group member on the command line.
//!
//! Prints entries as JSON lines, or runs `--exec CMD` per entry with the
//! exit-code protocol of CLI.md: 0 ack, 75 retry later, other = failed
//! attempt (dead-lettered after `--max-deliveries` attempts), or feeds one
//! long-lived `--pipe CMD` worker (see `pipe.rs`). The children live and
//! die with this process (`children.rs`, `pipe.rs`).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamkeeper::shard::ShardLayout;

use crate::children::ChildGroup;

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
    if args.pipe.is_some() && args.ack != AckArg::Auto {
        anyhow::bail!("--pipe acks by the worker's answers; drop --ack none|manual");
    }
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
            // The pipe handler acks on `ack` itself, so that an entry left
            // unanswered at a stop can stay pending (pipe::outcome).
            AckArg::Auto if args.pipe.is_some() => AckMode::Manual,
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
    crate::output::cancel_when_stdout_closes(stop.clone());
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
    let children = match &args.exec {
        Some(_) => Some(Arc::new(ChildGroup::start()?)),
        None => None,
    };
    let exec = args.exec.map(Arc::new);
    let concurrency = args
        .concurrency
        .unwrap_or(if args.pipe.is_some() { 64 } else { 1 });
    let (pipe, supervisor) = match args.pipe {
        Some(cmd) => {
            let spec = crate::pipe::WorkerSpec {
                cmd,
                env: vec![
                    ("SK_STREAM".into(), stream.as_str().to_string()),
                    ("SK_GROUP".into(), group.to_string()),
                    ("SK_CONSUMER".into(), consumer.to_string()),
                ],
                stop_timeout: args.stop_timeout,
            };
            let (pipe, task) = crate::pipe::Pipe::start(spec, stop.clone());
            (Some(pipe), Some(task))
        }
        None => (None, None),
    };
    let group_name = group.to_string();
    let stdout_closed = stop.clone();
    let handler_children = children.clone();
    let handler = move |d: Delivery| {
        let exec = exec.clone();
        let children = handler_children.clone();
        let pipe = pipe.clone();
        let stdout_closed = stdout_closed.clone();
        let last_activity = last_activity.clone();
        let group_name = group_name.clone();
        async move {
            last_activity.store(elapsed_ms(started), Ordering::Relaxed);
            if let Some(pipe) = pipe {
                let outcome = pipe.handle(&d).await;
                last_activity.store(elapsed_ms(started), Ordering::Relaxed);
                return outcome;
            }
            let line = wire::entry_to_line(d.stream().as_str(), d.entry());
            let outcome = match (exec, children) {
                (Some(cmd), Some(children)) => {
                    run_exec(&children, &cmd, &d, &group_name, &line).await
                }
                _ => match crate::output::json_line_str(&line) {
                    Ok(()) => Ok(Outcome::Ack),
                    // stdout closed (`| head -1`): stop cleanly (exit 0);
                    // the entry counts as a failed attempt, so it is
                    // handed out again later, never lost.
                    Err(e) => {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            stdout_closed.cancel();
                        }
                        Err(format!("cannot print the entry: {e}"))
                    }
                },
            };
            last_activity.store(elapsed_ms(started), Ordering::Relaxed);
            outcome
        }
    };
    // A sharded stream: one consumer per shard, all in this process and
    // under one name (shared mode: every member reads every shard).
    let layout = ShardLayout::open(&redis, &stream).await?;
    if let Some(l) = &layout {
        // Nothing created on some shards when another is of the wrong type.
        crate::append::check_all_streams(&redis, &l.shards()).await?;
    }
    let logical = layout.as_ref().map(|_| stream.clone());
    if args.ordered && layout.is_none() {
        anyhow::bail!(
            "--ordered needs a sharded stream ({stream} is not one: `streamkeeper shard create {stream} --shards N`); a plain stream is already in order with one consumer"
        );
    }
    let stats = match layout {
        Some(layout) if args.ordered => {
            if let Some(from) = create {
                for shard in layout.shards() {
                    streamkeeper::group::create_group(&redis, &shard, &group, from).await?;
                }
            }
            let ordered = streamkeeper::shard::OrderedOptions {
                max_attempts: Some(args.max_deliveries.unwrap_or(5)),
                backoff: args.retry_backoff,
                heartbeat: args.lease / 5,
                member_ttl: args.lease,
                lease_ttl: args.lease,
            };
            streamkeeper::shard::run_ordered(
                &redis, &layout, &group, &consumer, options, ordered, handler, stop,
            )
            .await
        }
        None => {
            GroupConsumer::new(&redis, stream, group)
                .consumer_name(consumer)
                .options(options)
                .run(handler, concurrency, stop)
                .await
        }
        Some(layout) => {
            streamkeeper::shard::run_shared(
                &redis,
                &layout,
                &group,
                &consumer,
                options,
                handler,
                concurrency,
                stop,
            )
            .await
        }
    };
    // The handler (and with it the last `Pipe`) is gone: the supervisor
    // ends the worker.
    if let Some(task) = supervisor {
        let _ = task.await;
    }
    let stats = match (stats, logical) {
        // The shard's own name would suggest the wrong fix.
        (
            Err(streamkeeper::Error::GroupMissing {
                stream: shard,
                group,
            }),
            Some(logical),
        ) => {
            anyhow::bail!(
                "consumer group {group} does not exist on shard {shard} of {logical}; create it on every shard with `streamkeeper group create {logical} {group}` (or pass --create)"
            );
        }
        (stats, _) => stats?,
    };
    drop(children);
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
    children: &ChildGroup,
    cmd: &str,
    d: &Delivery,
    group: &str,
    line: &str,
) -> Result<Outcome, String> {
    let attempt = d.attempt().to_string();
    let mut child = children
        .command(cmd)
        .env("SK_STREAM", d.stream().as_str())
        .env("SK_ID", d.id().to_string())
        .env("SK_GROUP", group)
        .env("SK_ATTEMPT", &attempt)
        // The name before attempts were counted; same value.
        .env("SK_DELIVERIES", &attempt)
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
        Some(EXIT_RETRY) => Ok(Outcome::Retry { after: None }),
        Some(code) => Err(format!("--exec command exited with {code}")),
        None => Err("--exec command was killed by a signal".into()),
    }
}
