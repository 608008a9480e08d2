//! `bench e2e` (XADD → handler latency at a fixed rate) and `bench consume
//! --pipe` (the `--pipe` worker path against in-process consume).
//!
//! Latency: a producer thread sends XADDs on a fixed schedule (open loop:
//! a late send does not push the next one back), each carrying its send
//! time; the handler records now − send time in an HDR histogram. The
//! consumer blocks in XREADGROUP, so a new entry wakes it at once: no poll
//! interval is involved. Without `--redis`, a private server is measured
//! on its unix socket and on TCP loopback in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use streamkeeper::{
    AckMode, Connector, ConsumerOptions, GroupConsumer, GroupName, Outcome, StreamKey,
};
use tokio_util::sync::CancellationToken;

use crate::bench_kit::{
    check_drained, del, fill, peak_rss, rate, reset_peak_rss, Figure, BATCH, ROUNDS,
};
use crate::cli::{BenchArgs, Global};
use crate::output;
use crate::pipe::{Pipe, WorkerSpec};

/// The command line of the built-in worker: this binary, `bench ack-worker`.
pub fn builtin_worker() -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_string_lossy().replace('\'', r"'\''");
    Ok(format!("'{exe}' bench ack-worker"))
}

/// The trivial worker: answers `ack ID` to every entry line on stdin. It
/// reads in blocks and flushes its answers only before it would block,
/// as a fast worker in any language should.
pub fn ack_worker() -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut input = std::io::BufReader::with_capacity(64 * 1024, std::io::stdin().lock());
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut line = Vec::with_capacity(256);
    loop {
        if input.buffer().is_empty() {
            out.flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let id = serde_json::from_slice::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string));
        if let Some(id) = id {
            writeln!(out, "ack {id}")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Unanswered entries at most on the pipe in the benches.
const PIPE_CONCURRENCY: usize = 256;

/// Which consumer path a latency run measures.
#[derive(Clone)]
enum Path {
    /// `GroupConsumer::run` with an in-process handler.
    Library,
    /// The same through a `--pipe` worker: XADD → worker's answer.
    Pipe(String),
}

impl Path {
    fn name(&self) -> &'static str {
        match self {
            Path::Library => "library",
            Path::Pipe(_) => "pipe",
        }
    }
}

/// `bench e2e`.
pub async fn run_e2e(global: &Global, args: &BenchArgs) -> anyhow::Result<()> {
    let rate = args.rate.unwrap_or(10_000.0);
    let _server;
    let targets: Vec<(&str, String)> = match &global.redis {
        Some(url) => vec![("given", url.clone())],
        None => {
            let server =
                streamkeeper_testkit::RedisServer::start_with(streamkeeper_testkit::ServerConfig {
                    tcp_port: Some(0),
                    ..Default::default()
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut t = vec![("unix", server.url())];
            if let Some(tcp) = server.tcp_url() {
                t.push(("tcp", tcp));
            }
            _server = server;
            t
        }
    };
    let mut paths = vec![Path::Library];
    if let Some(cmd) = &args.pipe {
        paths.push(Path::Pipe(cmd.clone()));
    }
    for (transport, url) in &targets {
        for path in &paths {
            let l = latency_once(url, rate, args.messages, args.size, path).await?;
            if global.json {
                output::json_line(&json!({
                    "mode": "e2e", "transport": transport, "path": path.name(),
                    "messages": args.messages, "rate": rate.round(),
                    "sent_rate": l.sent_rate.round(),
                    "p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us, "max_us": l.max_us,
                }));
            } else {
                println!(
                    "e2e      {transport:<5} {:<7} {:>8} msgs at {:>7.0}/s (sent {:>7.0}/s)  p50 {:>6} µs  p99 {:>6} µs  p99.9 {:>6} µs  max {:>6} µs",
                    path.name(), args.messages, rate, l.sent_rate, l.p50_us, l.p99_us, l.p999_us, l.max_us
                );
            }
        }
    }
    Ok(())
}

struct Latency {
    sent_rate: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

async fn latency_once(
    url: &str,
    rate: f64,
    messages: u64,
    size: usize,
    path: &Path,
) -> anyhow::Result<Latency> {
    let key = "sk-bench:e2e";
    let group = "e2e";
    let redis = Connector::connect(url).await?;
    let client = redis::Client::open(url)?;
    let mut plain = client.get_multiplexed_async_connection().await?;
    del(&mut plain, key).await?;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut plain)
        .await?;
    // A tenth of a second of warm-up at the same rate, not recorded.
    let warmup = ((rate / 10.0) as u64).clamp(10, 10_000);
    let total = messages + warmup;
    let anchor = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let stop = CancellationToken::new();
    let options = ConsumerOptions {
        batch: 100,
        limit: Some(total),
        claim_after: None,
        ack_mode: match path {
            Path::Library => AckMode::Auto,
            Path::Pipe(_) => AckMode::Manual,
        },
        ..ConsumerOptions::default()
    };
    let consumer =
        GroupConsumer::new(&redis, StreamKey::new(key)?, GroupName::new(group)?).options(options);
    let record = {
        let hist = hist.clone();
        move |d: &streamkeeper::Delivery| {
            let sent: Option<u128> = d.entry().get_str("t").and_then(|t| t.parse().ok());
            let warm = d.entry().get_str("w") == Some("1");
            if let (Some(sent), false) = (sent, warm) {
                let us = anchor.elapsed().as_nanos().saturating_sub(sent) / 1000;
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record(u64::try_from(us).unwrap_or(u64::MAX).max(1));
                }
            }
        }
    };
    let consumer_task = match path {
        Path::Library => {
            let stop = stop.clone();
            tokio::spawn(async move {
                consumer
                    .run(
                        move |d| {
                            record(&d);
                            async { Ok::<_, std::convert::Infallible>(Outcome::Ack) }
                        },
                        64,
                        stop,
                    )
                    .await
            })
        }
        Path::Pipe(cmd) => {
            let (pipe, supervisor) = Pipe::start(
                WorkerSpec {
                    cmd: cmd.clone(),
                    env: Vec::new(),
                    stop_timeout: Duration::from_secs(5),
                    timeout: None,
                },
                stop.clone(),
            );
            let stop = stop.clone();
            tokio::spawn(async move {
                let r = consumer
                    .run(
                        move |d| {
                            let pipe = pipe.clone();
                            let record = record.clone();
                            async move {
                                let o = pipe.handle(&d).await;
                                record(&d);
                                o
                            }
                        },
                        PIPE_CONCURRENCY,
                        stop,
                    )
                    .await;
                let _ = supervisor.await;
                r
            })
        }
    };
    // Let the consumer reach its blocking read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let payload = "x".repeat(size);
    let producer = {
        let runtime = tokio::runtime::Handle::current();
        let conn = client.get_multiplexed_async_connection().await?;
        std::thread::spawn(move || {
            produce_at_rate(runtime, conn, key, rate, total, warmup, payload, anchor)
        })
    };
    let sent_rate = tokio::task::spawn_blocking(move || producer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("bench e2e: the producer thread panicked"))??;
    match tokio::time::timeout(Duration::from_secs(60), consumer_task).await {
        Ok(r) => {
            r??;
        }
        Err(_) => {
            stop.cancel();
            anyhow::bail!("bench e2e: the consumer did not get every entry within 60 s");
        }
    }
    check_drained(&mut plain, key, group).await?;
    del(&mut plain, key).await?;
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    Ok(Latency {
        sent_rate,
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    })
}

/// Sends `total` XADDs at `rate` per second, each with its send time (ns
/// since `anchor`) in field `t`; the first `warmup` are marked `w=1`.
/// A dedicated thread keeps the schedule (std sleep is far finer than a
/// tokio timer) and hands each XADD to the runtime without waiting for
/// the reply, so a slow reply never delays the next send. Returns the
/// rate actually sent.
#[allow(clippy::too_many_arguments)]
fn produce_at_rate(
    runtime: tokio::runtime::Handle,
    conn: MultiplexedConnection,
    key: &'static str,
    rate: f64,
    total: u64,
    warmup: u64,
    payload: String,
    anchor: Instant,
) -> anyhow::Result<f64> {
    let payload = Arc::new(payload);
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut replies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key)
            .arg("*")
            .arg("t")
            .arg(anchor.elapsed().as_nanos().to_string())
            .arg("w")
            .arg(if i < warmup { "1" } else { "0" })
            .arg("data")
            .arg(payload.as_str());
        let mut c = conn.clone();
        let failed = failed.clone();
        replies.push(runtime.spawn(async move {
            if cmd.query_async::<()>(&mut c).await.is_err() {
                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    let sent = total as f64 / start.elapsed().as_secs_f64().max(1e-9);
    for r in replies {
        let _ = runtime.block_on(r);
    }
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if failed > 0 {
        anyhow::bail!("bench e2e: {failed} XADDs failed");
    }
    Ok(sent)
}

/// `bench consume --pipe`: in-process consume and the same through a
/// `--pipe` worker, interleaved, best of [`ROUNDS`] each.
pub async fn consume_pipe(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    args: &BenchArgs,
    payload: &str,
    cmd: &str,
) -> anyhow::Result<Figure> {
    let key = "sk-bench:consume-pipe";
    del(plain, key).await?;
    fill(plain, key, args.messages, payload).await?;
    let (mut best_lib, mut best_pipe) = (0f64, 0f64);
    let mut peak = None;
    for round in 0..ROUNDS {
        for piped in [false, true] {
            let g = format!("{}-{round}", if piped { "pipe" } else { "lib" });
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&g)
                .arg("0")
                .query_async(plain)
                .await?;
            let options = ConsumerOptions {
                batch: BATCH,
                limit: Some(args.messages),
                claim_after: None,
                ack_mode: if piped {
                    AckMode::Manual
                } else {
                    AckMode::Auto
                },
                ..ConsumerOptions::default()
            };
            let consumer =
                GroupConsumer::new(redis, StreamKey::new(key)?, GroupName::new(g.clone())?)
                    .options(options);
            reset_peak_rss();
            let t = Instant::now();
            let done = if piped {
                let stop = CancellationToken::new();
                let (pipe, supervisor) = Pipe::start(
                    WorkerSpec {
                        cmd: cmd.to_string(),
                        env: Vec::new(),
                        stop_timeout: Duration::from_secs(5),
                        timeout: None,
                    },
                    stop.clone(),
                );
                let stats = consumer
                    .run(
                        move |d| {
                            let pipe = pipe.clone();
                            async move { pipe.handle(&d).await }
                        },
                        PIPE_CONCURRENCY,
                        stop,
                    )
                    .await?;
                let elapsed = t.elapsed();
                let _ = supervisor.await;
                if stats.retried > 0 || stats.dead_lettered > 0 {
                    anyhow::bail!(
                        "bench: the --pipe worker did not ack everything ({} retried, {} dead); is it `ack ID` per line?",
                        stats.retried, stats.dead_lettered
                    );
                }
                best_pipe = best_pipe.max(rate(stats.acked, elapsed));
                peak = peak.max(peak_rss());
                stats.acked
            } else {
                let stats = consumer
                    .run(
                        |_d| async { Ok::<_, std::convert::Infallible>(Outcome::Ack) },
                        64,
                        CancellationToken::new(),
                    )
                    .await?;
                best_lib = best_lib.max(rate(stats.acked, t.elapsed()));
                stats.acked
            };
            if done != args.messages {
                anyhow::bail!("bench bug: group {g} handled {done} of {}", args.messages);
            }
            check_drained(plain, key, &g).await?;
        }
    }
    del(plain, key).await?;
    Ok(Figure {
        mode: "consume --pipe",
        messages: args.messages,
        rate: best_pipe,
        baseline_rate: Some(best_lib),
        peak_rss_bytes: peak,
    })
}
