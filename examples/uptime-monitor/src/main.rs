//! An uptime monitor built on streamkeeper, the use case its scheduler
//! exists for.
//!
//! - One schedule per monitored site (`uptime:` namespace), each with its
//!   own interval, appends check ticks to the stream `uptime:checks`.
//! - Two scheduler instances run (any number could): each tick is emitted
//!   exactly once.
//! - Checkers in the consumer group `checkers` take the ticks and do the
//!   HTTP check (reqwest, 1 s timeout).
//! - Each result goes to `uptime:results:<site>`: a stream is a time
//!   series, the entry ID is the time of the check.
//! - The summary prints uptime % and p50/p99 latency per site.
//!
//! The sites are test HTTP servers this program starts on 127.0.0.1: one
//! fast, one slow, one failing every third request, one that hangs past
//! the timeout and one that is down. Run it with
//! `cargo run --release -p uptime-monitor -- --seconds 10`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use comfy_table::Table;
use streamkeeper::scheduler::{Schedule, Scheduler};
use streamkeeper::{
    fields, Connector, ConsumerName, GroupConsumer, GroupName, Outcome, Producer, StartFrom,
    StreamId, StreamKey,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "HTTP uptime checks scheduled and processed through Redis Streams")]
struct Args {
    /// Redis URL (default: a private redis-server started for the run).
    #[arg(long, env = "STREAMKEEPER_REDIS")]
    redis: Option<String>,
    /// How long to monitor.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// How a test site behaves.
#[derive(Clone, Copy)]
enum Behaviour {
    Fast,
    Slow(Duration),
    FailsEvery(u64),
    Hangs,
    Down,
}

const CHECKS: &str = "uptime:checks";
const NAMESPACE: &str = "uptime";
const TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("warn")
        .init();
    let (_server, url) = streamkeeper_testkit::RedisServer::url_or_private(args.redis)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let redis = Connector::connect(&url).await?;
    let stop = CancellationToken::new();
    // The sites outlive the checkers: a check still in flight when the
    // checkers stop must not find its site gone.
    let sites_stop = CancellationToken::new();

    // The monitored sites.
    let sites = [
        ("fast", Behaviour::Fast, Duration::from_millis(200)),
        (
            "slow",
            Behaviour::Slow(Duration::from_millis(150)),
            Duration::from_millis(300),
        ),
        (
            "flaky",
            Behaviour::FailsEvery(3),
            Duration::from_millis(250),
        ),
        ("hangs", Behaviour::Hangs, Duration::from_millis(500)),
        ("down", Behaviour::Down, Duration::from_millis(400)),
    ];
    let scheduler = Scheduler::new(&redis, NAMESPACE);
    let mut conn = redis.shared();
    let mut cleanup = redis::cmd("DEL");
    cleanup.arg(CHECKS);
    for (name, behaviour, every) in sites {
        let url = serve(behaviour, sites_stop.clone()).await?;
        cleanup.arg(format!("uptime:results:{name}"));
        scheduler
            .add(
                &Schedule::every(name, every, CHECKS)?
                    .field("site", name)
                    .field("url", &url),
            )
            .await?;
    }
    let _: () = cleanup.query_async(&mut conn).await?;
    streamkeeper::group::create_group(
        &redis,
        &StreamKey::new(CHECKS)?,
        &GroupName::new("checkers")?,
        StartFrom::End,
    )
    .await?;

    // Two scheduler instances and three checkers.
    let mut tasks = Vec::new();
    for i in 0..2 {
        let (s, stop) = (scheduler.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            s.run(&format!("scheduler-{i}"), stop).await.map(|_| ())
        }));
    }
    let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let checked = Arc::new(AtomicU64::new(0));
    for i in 0..3 {
        let (redis, http, stop, checked) =
            (redis.clone(), http.clone(), stop.clone(), checked.clone());
        tasks.push(tokio::spawn(async move {
            GroupConsumer::new(&redis, StreamKey::new(CHECKS)?, GroupName::new("checkers")?)
                .consumer_name(ConsumerName::new(format!("checker-{i}"))?)
                .run(
                    move |d| {
                        let (redis, http, checked) = (redis.clone(), http.clone(), checked.clone());
                        async move {
                            let site = d.entry().get_str("site").unwrap_or("?").to_string();
                            let url = d.entry().get_str("url").unwrap_or("").to_string();
                            let started = Instant::now();
                            let (ok, status) = match http.get(&url).send().await {
                                Ok(r) => (r.status().is_success(), r.status().as_u16().to_string()),
                                Err(e) if e.is_timeout() => (false, "timeout".into()),
                                Err(_) => (false, "unreachable".into()),
                            };
                            let latency = started.elapsed().as_millis().to_string();
                            let results = StreamKey::new(format!("uptime:results:{site}"))?;
                            Producer::new(&redis, results)
                                .send(&fields([
                                    ("ok", if ok { "1" } else { "0" }),
                                    ("status", status.as_str()),
                                    ("latency_ms", latency.as_str()),
                                ]))
                                .await?;
                            checked.fetch_add(1, Ordering::Relaxed);
                            Ok::<_, streamkeeper::Error>(Outcome::Ack)
                        }
                    },
                    16,
                    stop,
                )
                .await
                .map(|_| ())
        }));
    }
    eprintln!("monitoring {} sites for {} s …", sites.len(), args.seconds);
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    sites_stop.cancel();
    for (name, ..) in sites {
        scheduler.remove(name).await?;
    }

    // The summary, from the result streams.
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header([
        "site",
        "interval",
        "checks",
        "uptime",
        "p50 latency",
        "p99 latency",
        "last status",
    ]);
    for (name, _, every) in sites {
        let results = streamkeeper::reader::range(
            &redis,
            &StreamKey::new(format!("uptime:results:{name}"))?,
            StreamId::MIN,
            StreamId::MAX,
            1_000_000,
        )
        .await?;
        let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
        let mut up = 0u64;
        for r in &results {
            if r.get_str("ok") == Some("1") {
                up += 1;
            }
            hist.record(
                r.get_str("latency_ms")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0),
            )?;
        }
        let n = results.len() as u64;
        table.add_row([
            name.to_string(),
            format!("{} ms", every.as_millis()),
            n.to_string(),
            if n == 0 {
                "-".into()
            } else {
                format!("{:.1} %", 100.0 * up as f64 / n as f64)
            },
            format!("{} ms", hist.value_at_quantile(0.5)),
            format!("{} ms", hist.value_at_quantile(0.99)),
            results
                .last()
                .and_then(|r| r.get_str("status"))
                .unwrap_or("-")
                .to_string(),
        ]);
    }
    println!("{table}");
    println!(
        "{} checks done by 3 checkers from ticks of 2 scheduler instances",
        checked.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Starts a test HTTP server on 127.0.0.1 behaving as told; returns its URL.
async fn serve(behaviour: Behaviour, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/health", listener.local_addr()?);
    if let Behaviour::Down = behaviour {
        drop(listener); // nothing listens there any more: connection refused
        return Ok(url);
    }
    let requests = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            };
            let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                let status = match behaviour {
                    Behaviour::Fast | Behaviour::Down => "200 OK",
                    Behaviour::Slow(d) => {
                        tokio::time::sleep(d).await;
                        "200 OK"
                    }
                    Behaviour::FailsEvery(k) if n.is_multiple_of(k) => "500 Internal Server Error",
                    Behaviour::FailsEvery(_) => "200 OK",
                    Behaviour::Hangs => {
                        tokio::time::sleep(TIMEOUT * 3).await;
                        "200 OK"
                    }
                };
                let body = "ok";
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    Ok(url)
}
