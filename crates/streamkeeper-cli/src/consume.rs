//! `streamkeeper consume`: a consumer group member on the command line.
//!
//! Prints entries as JSON lines, or runs `--exec CMD` per entry with the
//! exit-code protocol of docs/cli.md "consume": 0 ack, 75 retry later,
//! other = failed attempt (dead-lettered after `--max-deliveries`
//! attempts), or feeds one long-lived `--pipe CMD` worker (see
//! `pipe.rs`). The children, and all they start, live and die with this
//! process (`reaper.rs`).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamkeeper::{wire, AckMode, ConsumerName, ConsumerOptions, Delivery, Outcome};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::cli::{AckArg, ConsumeArgs, Global};
use crate::signal;
use crate::Exit;

/// The exit code a `--exec` command uses to ask for a retry (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;

pub async fn run(global: &Global, args: ConsumeArgs) -> anyhow::Result<Exit> {
    if args.peek {
        return peek(global, &args).await;
    }
    let stream = args.stream.clone();
    let group = args.group.clone();
    let consumer = match &args.consumer {
        Some(c) => c.clone(),
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
    // A worker holds at most --concurrency entries; reading further ahead
    // would hold --batch entries in memory (1 MB each, say) for nothing.
    let batch = match (&args.pipe, args.concurrency) {
        (Some(_), c) => args.batch.min(c.unwrap_or(64)),
        _ => args.batch,
    };
    let options = ConsumerOptions {
        batch: batch.max(1),
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
        max_deliveries: args.max_deliveries.0,
        max_age: args.max_age,
        retry_backoff: args.retry_backoff,
        ..ConsumerOptions::default()
    };
    let stop = CancellationToken::new();
    let interrupted = signal::cancel_on_signal(stop.clone());
    crate::output::cancel_when_stdout_closes(stop.clone());
    let activity = Arc::new(Activity::new());
    if let Some(idle) = args.idle_exit {
        tokio::spawn(idle_watchdog(idle, activity.clone(), stop.clone()));
    }
    tracing::debug!(%consumer, "consuming");
    let exec = args.exec.map(Arc::new);
    let timeout = args.timeout;
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
                timeout: args.timeout,
            };
            let (pipe, task) = crate::pipe::Pipe::start(spec, stop.clone());
            (Some(pipe), Some(task))
        }
        None => (None, None),
    };
    let group_name = group.to_string();
    let stdout_closed = stop.clone();
    let handler = move |d: Delivery| {
        let exec = exec.clone();
        let pipe = pipe.clone();
        let stdout_closed = stdout_closed.clone();
        let busy = Activity::busy(&activity);
        let group_name = group_name.clone();
        async move {
            let _busy = busy;
            if let Some(pipe) = pipe {
                return pipe.handle(&d).await;
            }
            let line = wire::traced_delivery_to_line(
                d.stream().as_str(),
                d.entry(),
                d.attempt(),
                d.trace(),
            );
            match exec {
                Some(cmd) => run_exec(&cmd, &d, &group_name, &line, timeout).await,
                None => match crate::output::json_line_str(&line) {
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
            }
        }
    };
    // A plain or sharded stream, shared or ordered mode: the library's
    // one builder (a sharded stream runs a consumer per shard, all in this
    // process and under one name).
    let mut consuming =
        streamkeeper::shard::ShardedConsumer::new(&redis, stream.clone(), group.clone())
            .consumer_name(consumer.clone())
            .options(options)
            .concurrency(concurrency);
    if args.ordered {
        consuming = consuming.ordered(streamkeeper::shard::OrderedOptions {
            heartbeat: args.lease / 5,
            member_ttl: args.lease,
            lease_ttl: args.lease,
        });
    }
    let stats = consuming.run(handler, stop).await;
    // The handler (and with it the last `Pipe`) is gone: the supervisor
    // ends the worker; it says why if the command could not start.
    if let Some(task) = supervisor {
        if let Ok(Some(why)) = task.await {
            stats?;
            anyhow::bail!("{why}; the entries it was given stay pending, no attempt counted");
        }
    }
    let stats = match stats {
        Err(streamkeeper::Error::InvalidInput(why)) if args.ordered => {
            anyhow::bail!("--ordered: {why}")
        }
        stats => stats?,
    };
    tracing::debug!(
        delivered = stats.delivered,
        acked = stats.acked,
        retried = stats.retried,
        dead_lettered = stats.dead_lettered,
        "consumer stopped"
    );
    if args.consumer.is_none() {
        forget_generated_name(&redis, &stream, &group, &consumer).await;
    }
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}

/// `--peek`: the next entries the group would get (its retries that fell
/// due, then what follows its last delivered ID, on every key of the
/// stream), read with XRANGE: nothing is taken.
async fn peek(global: &Global, args: &ConsumeArgs) -> anyhow::Result<Exit> {
    let redis = global.connect().await?;
    let count = usize::try_from(args.count.unwrap_or(10)).unwrap_or(usize::MAX);
    let mut shown = 0;
    for key in streamkeeper::shard::ShardLayout::keys_of(&redis, &args.stream).await? {
        let groups = streamkeeper::group::list_groups(&redis, &key).await?;
        let Some(g) = groups.iter().find(|g| g.name == args.group) else {
            return Err(streamkeeper::Error::GroupMissing {
                stream: key,
                group: args.group.clone(),
            }
            .into());
        };
        // Retries that fell due come first, as a consumer takes them.
        let now = streamkeeper::retry::now_ms();
        for p in streamkeeper::retry::parked(&redis, &key, &args.group, count - shown).await? {
            if p.due_ms > now || shown >= count {
                break;
            }
            for e in streamkeeper::reader::range(&redis, &key, p.id, p.id, 1).await? {
                crate::output::entry(true, key.as_str(), &e)?;
                shown += 1;
            }
        }
        if shown >= count {
            break;
        }
        let next = streamkeeper::reader::range(
            &redis,
            &key,
            g.last_delivered.next(),
            streamkeeper::StreamId::MAX,
            count - shown,
        )
        .await?;
        for e in &next {
            crate::output::entry(true, key.as_str(), e)?;
        }
        shown += next.len();
        if shown >= count {
            break;
        }
    }
    if shown == 0 && !global.quiet {
        crate::logs::announce(&format!(
            "nothing new for group {} on {}",
            args.group, args.stream
        ));
    }
    Ok(Exit::Ok)
}

/// A clean exit leaves no generated consumer name behind (each run would
/// add one to `group consumers` for good): it is deleted from every key of
/// the stream where it holds nothing. One holding entries stays, so they
/// can be reclaimed. Best effort: a failure is only logged.
async fn forget_generated_name(
    redis: &streamkeeper::Connector,
    stream: &streamkeeper::StreamKey,
    group: &streamkeeper::GroupName,
    consumer: &ConsumerName,
) {
    let keys = match streamkeeper::shard::ShardLayout::keys_of(redis, stream).await {
        Ok(keys) => keys,
        Err(e) => {
            tracing::debug!(error = %e, "could not list the stream's keys; the consumer name stays");
            return;
        }
    };
    for key in keys {
        match streamkeeper::group::forget_consumer(redis, &key, group, consumer).await {
            Ok(true) => tracing::debug!(%key, %consumer, "generated consumer name removed"),
            Ok(false) => {
                tracing::info!(%key, %consumer, "the consumer still holds entries; its name stays")
            }
            Err(e) => tracing::debug!(%key, error = %e, "could not remove the consumer name"),
        }
    }
}

/// What `--idle-exit` watches: handlers running now, and when the last
/// one ended. Idle means no handler running (a `--pipe` worker being
/// restarted still holds its entries' handlers) for the idle time.
struct Activity {
    since: Instant,
    running: AtomicUsize,
    last_ms: AtomicU64,
}

/// Held by a running handler.
struct Busy(Arc<Activity>);

impl Activity {
    fn new() -> Self {
        Activity {
            since: Instant::now(),
            running: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn busy(this: &Arc<Activity>) -> Busy {
        this.running.fetch_add(1, Ordering::SeqCst);
        Busy(this.clone())
    }

    /// How long nothing has been running (zero while something is).
    fn idle_for(&self) -> Duration {
        if self.running.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::SeqCst)),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_ms.store(self.0.now_ms(), Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn idle_watchdog(idle: Duration, activity: Arc<Activity>, stop: CancellationToken) {
    let tick = (idle / 10).clamp(Duration::from_millis(10), Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if activity.idle_for() >= idle {
            tracing::info!(?idle, "no entry arrived for the idle time; exiting");
            stop.cancel();
            return;
        }
    }
}

/// Runs the command for one entry (under a reaper: killed with all it
/// started on `timeout` or when this process dies) and maps its exit code
/// to an outcome.
async fn run_exec(
    cmd: &str,
    d: &Delivery,
    group: &str,
    line: &str,
    timeout: Option<Duration>,
) -> Result<Outcome, String> {
    let attempt = d.attempt().to_string();
    let mut command = crate::reaper::command(cmd);
    // The run's trace context (W3C), for the command to continue.
    match d.trace() {
        Some(t) => command.env(streamkeeper::trace::ENV, t.to_string()),
        None => command.env_remove(streamkeeper::trace::ENV),
    };
    let mut child = command
        .env("SK_STREAM", d.stream().as_str())
        .env("SK_ID", d.id().to_string())
        .env("SK_GROUP", group)
        .env("SK_ATTEMPT", &attempt)
        // The name before attempts were counted; same value.
        .env("SK_DELIVERIES", &attempt)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run --exec command: {e}"))?;
    // Its stderr still reaches ours, line by line; the tail is kept for
    // the failure (and a dead letter's reason says why).
    let stderr_tail = child.stderr.take().map(|e| tokio::spawn(forward_stderr(e)));
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin closes the pipe early;
        // that is not an error of the entry.
        let _ = stdin.write_all(line.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    let waited = match timeout {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(w) => w,
            Err(_) => {
                if let Some(pid) = child.id() {
                    crate::reaper::terminate(pid);
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let _ = child.kill().await;
                let took = humantime::format_duration(t);
                tracing::warn!(id = %d.id(), "--exec command killed: no result after {took}");
                return Err(format!("timed out after {took}"));
            }
        },
        None => child.wait().await,
    };
    let status = waited.map_err(|e| format!("--exec command failed: {e}"))?;
    let said = match stderr_tail {
        // The command may have left a child holding its stderr open.
        Some(t) => tokio::time::timeout(Duration::from_millis(200), t)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => String::new(),
    };
    let failed = |what: String| {
        if said.is_empty() {
            Err(what)
        } else {
            Err(format!("{what}: {said}"))
        }
    };
    match status.code() {
        Some(0) => Ok(Outcome::Ack),
        Some(EXIT_RETRY) => Ok(Outcome::Retry { after: None }),
        Some(code) if code > 128 => failed(format!(
            "--exec command was killed by signal {}",
            code - 128
        )),
        Some(code) => failed(format!("--exec command exited with {code}")),
        None => failed("--exec command was killed by a signal".into()),
    }
}

/// The most of a failing `--exec` command's stderr a failure keeps.
const STDERR_TAIL: usize = 400;

/// Copies an `--exec` command's stderr to ours and returns its last
/// non-empty lines, at most [`STDERR_TAIL`] bytes, joined by ` | `.
async fn forward_stderr(from: tokio::process::ChildStderr) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(from).split(b'\n');
    let mut tail: std::collections::VecDeque<String> = Default::default();
    let mut size = 0;
    while let Ok(Some(line)) = lines.next_segment().await {
        crate::logs::handler_line(&line, "exec");
        let text = String::from_utf8_lossy(&line).trim().to_string();
        if text.is_empty() {
            continue;
        }
        size += text.len();
        tail.push_back(text);
        while size > STDERR_TAIL && tail.len() > 1 {
            size -= tail.pop_front().map_or(0, |l| l.len());
        }
    }
    let joined = Vec::from(tail).join(" | ");
    match joined.char_indices().rev().nth(STDERR_TAIL) {
        // One line longer than the limit: keep its end.
        Some((cut, _)) => format!("…{}", &joined[cut..]),
        None => joined,
    }
}
