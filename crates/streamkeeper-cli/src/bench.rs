//! `streamkeeper bench`: throughput of the library against the best plain
//! redis-rs loop doing the same work, on the same server, in the same run.
//!
//! Baselines: produce = pipelines of 1000 XADD; consume = XREADGROUP COUNT
//! 1000 with the XACK of each batch pipelined with the next read; read =
//! XREAD COUNT 1000. Each side runs `ROUNDS` times, interleaved, and the
//! best round counts (the machine is shared and noisy). The consume phase
//! also reports the process's peak RSS, reset before the phase starts.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::json;
use streamkeeper::{
    fields, Connector, ConsumerOptions, GroupConsumer, GroupName, Outcome, Producer, Reader,
    StartFrom, StreamKey,
};
use tokio_util::sync::CancellationToken;

use crate::bench_kit::{
    check_drained, del, fill, peak_rss, plain_consume, plain_produce, produce_figure, rate,
    reply_ids, report, reset_peak_rss, Figure, BATCH, ROUNDS,
};
use crate::cli::{BenchArgs, BenchMode, Global};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, mut args: BenchArgs) -> anyhow::Result<Exit> {
    if args.mode == BenchMode::AckWorker {
        crate::bench_e2e::ack_worker()?;
        return Ok(Exit::Ok);
    }
    if args.pipe.as_deref() == Some(crate::cli::BUILTIN_WORKER) {
        args.pipe = Some(crate::bench_e2e::builtin_worker()?);
    }
    if args.messages == 0 {
        anyhow::bail!("--messages must be at least 1");
    }
    // Without --redis, a private server: never benchmark someone's
    // production Redis by accident.
    let (_server, url) = streamkeeper_testkit::RedisServer::url_or_private(global.redis.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(shards) = args.shards {
        crate::bench_shards::run(global, &args, &url, shards).await?;
        return Ok(Exit::Ok);
    }
    if matches!(
        streamkeeper::conn::parse_topology(&url)?,
        streamkeeper::Topology::Cluster { .. }
    ) {
        anyhow::bail!("on a cluster, bench a sharded stream: add --shards N (e.g. --shards 6)");
    }
    let redis = Connector::connect(&url).await?;
    let client = redis::Client::open(url.as_str())?;
    let mut plain = client.get_multiplexed_async_connection().await?;
    if cfg!(debug_assertions) {
        eprintln!(
            "note: this is a debug build; use `cargo run --release -- bench …` for real figures"
        );
    }
    let payload = "x".repeat(args.size);
    match args.mode {
        BenchMode::E2e => {
            crate::bench_e2e::run_e2e(global, &args).await?;
            return Ok(Exit::Ok);
        }
        BenchMode::Consume if args.pipe.is_some() => {
            let cmd = args.pipe.clone().unwrap_or_default();
            let fig =
                crate::bench_e2e::consume_pipe(&redis, &mut plain, &args, &payload, &cmd).await?;
            report(global.json, &fig);
            return Ok(Exit::Ok);
        }
        BenchMode::Scheduler => {
            bench_scheduler(&url, global.json, &args).await?;
            return Ok(Exit::Ok);
        }
        BenchMode::Janitor => {
            bench_janitor(&redis, &mut plain, global.json, &args, &payload).await?;
            return Ok(Exit::Ok);
        }
        BenchMode::Stat => {
            bench_stat(&redis, &mut plain, global.json, &payload).await?;
            return Ok(Exit::Ok);
        }
        _ => {}
    }
    let modes: &[BenchMode] = match args.mode {
        BenchMode::All => &[BenchMode::Produce, BenchMode::Consume, BenchMode::Read],
        m => std::slice::from_ref(match m {
            BenchMode::Produce => &BenchMode::Produce,
            BenchMode::Consume => &BenchMode::Consume,
            _ => &BenchMode::Read,
        }),
    };
    for mode in modes {
        let fig = match mode {
            BenchMode::Produce => bench_produce(&redis, &mut plain, &args, &payload).await?,
            BenchMode::Consume => bench_consume(&redis, &mut plain, &args, &payload).await?,
            _ => bench_read(&redis, &mut plain, &args, &payload).await?,
        };
        report(global.json, &fig);
    }
    if args.mode == BenchMode::All {
        crate::bench_e2e::run_e2e(global, &args).await?;
    }
    Ok(Exit::Ok)
}

async fn bench_produce(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<Figure> {
    let key = "sk-bench:produce";
    let batch: Vec<_> = (0..BATCH).map(|_| fields([("data", payload)])).collect();
    let producer = Producer::new(redis, StreamKey::new(key)?);
    let mut base = plain.clone();
    produce_figure(
        args.messages,
        args.baseline,
        async || del(plain, key).await,
        async |k| {
            producer.send_batch(&batch[..k]).await?;
            Ok(())
        },
        async || plain_produce(&mut base, key, args.messages, payload).await,
    )
    .await
}

async fn bench_consume(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<Figure> {
    let key = "sk-bench:consume";
    del(plain, key).await?;
    fill(plain, key, args.messages, payload).await?;
    let (mut best, mut best_base) = (0f64, 0f64);
    let mut peak = None;
    for round in 0..ROUNDS {
        let g = format!("sk-{round}");
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(&g)
            .arg("0")
            .query_async(plain)
            .await?;
        reset_peak_rss();
        let t = Instant::now();
        let options = ConsumerOptions {
            batch: BATCH,
            limit: Some(args.messages),
            claim_after: None,
            ..ConsumerOptions::default()
        };
        let stats = GroupConsumer::new(redis, StreamKey::new(key)?, GroupName::new(g.clone())?)
            .options(options)
            .run(
                |_d| async { Ok::<_, std::convert::Infallible>(Outcome::Ack) },
                64,
                CancellationToken::new(),
            )
            .await?;
        best = best.max(rate(stats.acked, t.elapsed()));
        peak = peak.max(peak_rss());
        check_drained(plain, key, &g).await?;
        if args.baseline {
            let g = format!("base-{round}");
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(key)
                .arg(&g)
                .arg("0")
                .query_async(plain)
                .await?;
            let client_conn = redis
                .dedicated(&StreamKey::new(key)?, Duration::from_secs(5))
                .await?;
            let t = Instant::now();
            let n = plain_consume(client_conn, key, &g, args.messages).await?;
            best_base = best_base.max(rate(n, t.elapsed()));
            check_drained(plain, key, &g).await?;
        }
    }
    del(plain, key).await?;
    Ok(Figure {
        mode: "consume",
        messages: args.messages,
        rate: best,
        baseline_rate: args.baseline.then_some(best_base),
        peak_rss_bytes: peak,
    })
}

async fn bench_read(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<Figure> {
    let key = "sk-bench:read";
    del(plain, key).await?;
    fill(plain, key, args.messages, payload).await?;
    let (mut best, mut best_base) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut reader = Reader::new(redis, StreamKey::new(key)?, StartFrom::Beginning)
            .await?
            .page_size(BATCH);
        let mut n = 0u64;
        loop {
            let page = reader.next_page().await?;
            if page.is_empty() {
                break;
            }
            n += page.len() as u64;
        }
        best = best.max(rate(n, t.elapsed()));
        if args.baseline {
            let t = Instant::now();
            let mut after = b"0".to_vec();
            let mut n = 0u64;
            loop {
                let v: Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("STREAMS")
                    .arg(key)
                    .arg(&after)
                    .query_async(plain)
                    .await?;
                let ids = reply_ids(v);
                match ids.last() {
                    Some(last) => after = last.clone(),
                    None => break,
                }
                n += ids.len() as u64;
            }
            best_base = best_base.max(rate(n, t.elapsed()));
        }
    }
    del(plain, key).await?;
    Ok(Figure {
        mode: "read",
        messages: args.messages,
        rate: best,
        baseline_rate: args.baseline.then_some(best_base),
        peak_rss_bytes: None,
    })
}

/// `bench scheduler`: N schedules every D, K instances for a while; every
/// tick's lateness is its entry ID's time minus its `sk-due`.
async fn bench_scheduler(url: &str, json: bool, args: &BenchArgs) -> anyhow::Result<()> {
    use streamkeeper::scheduler::Scheduler;
    if args.schedules == 0 || args.instances == 0 {
        anyhow::bail!("--schedules and --instances must be at least 1");
    }
    let ns = "sk-bench";
    let keys = streamkeeper::keys::SchedulerKeys::new(ns);
    let target = "sk-bench:ticks";
    let redis = Connector::connect(url).await?;
    let mut conn = redis.shared();
    let _: () = redis::cmd("DEL")
        .arg(&keys.schedules)
        .arg(&keys.due)
        .arg(&keys.state)
        .arg(target)
        .query_async(&mut conn)
        .await?;
    let every = u64::try_from(args.every.as_millis())?;
    let n = args.schedules as u64;
    // Adding them: `schedule import` of a file of N lines (written first,
    // not timed), with Redis memory and this process's peak RSS measured.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("schedules.jsonl");
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let every_text = humantime::format_duration(args.every).to_string();
        for i in 0..n {
            writeln!(
                w,
                r#"{{"name":"s{i}","every":"{every_text}","to":"{target}","fields":{{"monitor":"{i}"}},"missed":"catch-up:100"}}"#
            )?;
        }
        w.flush()?;
    }
    let memory_before = used_memory(&mut conn).await?;
    reset_peak_rss();
    let imported = crate::schedule_io::import(&Scheduler::new(&redis, ns), Some(&file)).await?;
    let import_rss = peak_rss();
    let memory_after = used_memory(&mut conn).await?;
    let bytes_per_schedule = memory_after.saturating_sub(memory_before) as f64 / n as f64;
    drop(dir);
    // Import spreads the first due times over one interval by a hash of
    // the name; set them evenly instead, over one interval starting after
    // these writes are surely done (a second, plus 20 µs per schedule), so
    // no tick is late before an instance runs and runs compare.
    let lead = 1000 + n / 50;
    let start = streamkeeper::retry::now_ms() + lead;
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.zadd(&keys.due, format!("s{i}"), start + i * every / n)
                .ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..args.instances {
        let c = Connector::connect(url).await?;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            Scheduler::new(&c, ns)
                .run(&format!("bench-{i}"), stop)
                .await
        }));
    }
    let until_start = start.saturating_sub(streamkeeper::retry::now_ms());
    tokio::time::sleep(Duration::from_millis(until_start) + args.duration).await;
    stop.cancel();
    let mut per_instance = Vec::new();
    for t in tasks {
        per_instance.push(t.await??.emitted);
    }
    // Measure every tick: lateness, duplicates.
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0u64;
    let mut reader = Reader::new(&redis, StreamKey::new(target)?, StartFrom::Beginning)
        .await?
        .page_size(5000);
    let (mut first, mut last) = (u64::MAX, 0u64);
    loop {
        let page = reader.next_page().await?;
        if page.is_empty() {
            break;
        }
        for e in page {
            let due: u64 = e
                .get_str(streamkeeper::meta::DUE)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            let name = e
                .get_str(streamkeeper::meta::SCHEDULE)
                .unwrap_or("")
                .to_string();
            if !seen.insert((name, due)) {
                duplicates += 1;
            }
            hist.record(e.id.ms.saturating_sub(due))?;
            first = first.min(e.id.ms);
            last = last.max(e.id.ms);
        }
    }
    let ticks = hist.len();
    let rate =
        ticks as f64 / (Duration::from_millis(last.saturating_sub(first).max(1))).as_secs_f64();
    if json {
        output::json_line(&json!({
            "mode": "scheduler", "schedules": n, "every_ms": every, "instances": args.instances,
            "ticks": ticks, "rate": rate.round(), "lateness_p50_ms": hist.value_at_quantile(0.5),
            "lateness_p99_ms": hist.value_at_quantile(0.99), "lateness_max_ms": hist.max(),
            "duplicates": duplicates, "per_instance": per_instance,
            "import_seconds": (imported.total_time.as_secs_f64() * 1000.0).round() / 1000.0,
            "import_rate": (n as f64 / imported.total_time.as_secs_f64().max(1e-9)).round(),
            "import_peak_rss_bytes": import_rss,
            "redis_bytes_per_schedule": bytes_per_schedule.round(),
        }));
    } else {
        println!(
            "scheduler {n} schedules every {}, {} instances: {ticks} ticks ({rate:.0}/s), lateness p50 {} ms, p99 {} ms, max {} ms, duplicates {duplicates}, per instance {per_instance:?}",
            humantime::format_duration(args.every),
            args.instances,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99),
            hist.max()
        );
        println!(
            "scheduler import of {n} schedules: {:.1} s ({:.0}/s), peak RSS {:.1} MiB; Redis memory {:.0} bytes per schedule",
            imported.total_time.as_secs_f64(),
            n as f64 / imported.total_time.as_secs_f64().max(1e-9),
            import_rss.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            bytes_per_schedule
        );
    }
    let _: () = redis::cmd("DEL")
        .arg(&keys.schedules)
        .arg(&keys.due)
        .arg(&keys.state)
        .arg(target)
        .query_async(&mut conn)
        .await?;
    Ok(())
}

/// `used_memory` of `INFO memory`, in bytes.
async fn used_memory(conn: &mut streamkeeper::SharedConn) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// The ID of the `n`-th entry (0-based) of `key`.
async fn nth_id(plain: &mut MultiplexedConnection, key: &str, n: u64) -> anyhow::Result<String> {
    // XRANGE cannot seek by index: walk in pages of IDs only as needed.
    let mut start = "-".to_string();
    let mut seen = 0u64;
    loop {
        let page: Vec<(String, Value)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query_async(plain)
            .await?;
        if page.is_empty() {
            anyhow::bail!("stream has fewer than {n} entries");
        }
        if seen + page.len() as u64 > n {
            return Ok(page[usize::try_from(n - seen)?].0.clone());
        }
        seen += page.len() as u64;
        start = format!("({}", page.last().map(|p| p.0.clone()).unwrap_or_default());
    }
}

/// Janitor cost: a stream of `--messages` entries and 3 groups at 50 %,
/// 70 % and 90 % of it, nothing pending. Times the first run (which trims
/// half the stream), then steady-state runs (nothing to trim) and dry runs.
async fn bench_janitor(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    json: bool,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<()> {
    use streamkeeper::janitor::{run_once, JanitorOptions};
    let key = "sk-bench:janitor";
    del(plain, key).await?;
    fill(plain, key, args.messages, payload).await?;
    for (g, frac) in [("g50", 50), ("g70", 70), ("g90", 90)] {
        let id = nth_id(plain, key, args.messages * frac / 100 - 1).await?;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key)
            .arg(g)
            .arg(&id)
            .query_async(plain)
            .await?;
    }
    let stream = StreamKey::new(key)?;
    let t = Instant::now();
    let first = run_once(redis, &stream, &JanitorOptions::default()).await?;
    let first_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut steady = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        run_once(redis, &stream, &JanitorOptions::default()).await?;
        steady.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    steady.sort_by(f64::total_cmp);
    let median = steady[steady.len() / 2];
    if json {
        output::json_line(
            &json!({"mode": "janitor", "messages": args.messages, "groups": 3,
            "first_run_ms": first_ms, "first_run_trimmed": first.trimmed, "steady_run_ms_median": median}),
        );
    } else {
        println!(
            "janitor  {} entries, 3 groups: first run trimmed {} in {:.1} ms; later runs (nothing to trim) {:.2} ms median",
            args.messages, first.trimmed, first_ms, median
        );
    }
    del(plain, key).await?;
    Ok(())
}

/// `stat` over 100 streams × 1000 entries, 2 groups each (one halfway).
async fn bench_stat(
    redis: &Connector,
    plain: &mut MultiplexedConnection,
    json: bool,
    payload: &str,
) -> anyhow::Result<()> {
    let names: Vec<String> = (0..100).map(|i| format!("sk-bench:stat:{i}")).collect();
    for n in &names {
        del(plain, n).await?;
        fill(plain, n, 1000, payload).await?;
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(n)
            .arg("all")
            .arg("$")
            .query_async(plain)
            .await?;
        let mid = nth_id(plain, n, 499).await?;
        // ENTRIESREAD keeps Redis's lag known, as it is for groups that
        // consumed normally (unknown lag makes stat count entries instead).
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(n)
            .arg("half")
            .arg(&mid)
            .arg("ENTRIESREAD")
            .arg(500)
            .query_async(plain)
            .await?;
    }
    let options = streamkeeper::inspect::InspectOptions::default();
    let keys = names
        .iter()
        .map(StreamKey::new)
        .collect::<streamkeeper::Result<Vec<_>>>()?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let stats = crate::stat::collect(redis, &keys, &options).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if stats.len() != 100 {
            anyhow::bail!("bench bug: stat saw {} streams", stats.len());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if json {
        output::json_line(
            &json!({"mode": "stat", "streams": 100, "groups_per_stream": 2, "ms_median": median}),
        );
    } else {
        println!("stat     100 streams × 2 groups: {median:.1} ms per full stat (median of 10)");
    }
    for n in &names {
        del(plain, n).await?;
    }
    Ok(())
}
