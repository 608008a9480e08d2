//! `streamkeeper demo`: the end-to-end scenario of docs/design.md §9.
//!
//! A producer writes orders; group `billing` (two fast consumers) and
//! group `analytics` (one slow consumer) read them. A third billing
//! consumer crashes mid-batch without acking; the survivors reclaim its
//! entries. One order fails once and succeeds on its delayed retry; one
//! poison order always fails and ends in the dead-letter
//! stream of billing (analytics only counts orders, so it accepts it).
//! The summary counts what each group processed: nothing is lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comfy_table::Table;
use serde_json::json;
use streamkeeper::{
    fields, Connector, ConsumerName, GroupConsumer, GroupName, Outcome, Producer, RunStats,
    StartFrom, StreamId, StreamKey,
};
use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, Global};
use crate::output;
use crate::Exit;

const STREAM: &str = "demo:orders";
const CLAIM_AFTER: Duration = Duration::from_secs(1);
const MAX_DELIVERIES: u64 = 3;

type Seen = Arc<Mutex<HashSet<StreamId>>>;

pub async fn run(global: &Global, args: DemoArgs) -> anyhow::Result<Exit> {
    let (_server, url) = streamkeeper_testkit::RedisServer::url_or_private(global.redis.clone())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if _server.is_some() {
        eprintln!("started a private redis-server at {url}");
    }
    let redis = Connector::connect(&url).await?;
    let stream = StreamKey::new(STREAM)?;
    let mut conn = redis.shared();
    let _: () = redis::cmd("DEL")
        .arg(stream.as_str())
        .arg(streamkeeper::keys::StreamKeys::dlq(&stream))
        .query_async(&mut conn)
        .await?;
    let billing = GroupName::new("billing")?;
    let analytics = GroupName::new("analytics")?;
    for g in [&billing, &analytics] {
        streamkeeper::group::create_group(&redis, &stream, g, StartFrom::Beginning).await?;
    }
    let started = Instant::now();

    // 1. The producer, with one poison order in the middle.
    let poison_at = args.messages / 2;
    let producer = Producer::new(&redis, stream.clone());
    let mut produced = 0u64;
    let mut poison_id = None;
    let first: Vec<_> = (0..poison_at).map(order).collect();
    produced += producer.send_batch(&first).await?.len() as u64;
    poison_id = Some(
        poison_id.unwrap_or(
            producer
                .send(&fields([("order", "poison"), ("poison", "1")]))
                .await?,
        ),
    );
    produced += 1;
    let flaky_id = producer
        .send(&fields([("order", "flaky"), ("flaky", "1")]))
        .await?;
    produced += 1;
    eprintln!("produced the first {produced} orders (one poison, one that fails once); the rest follow while consumers run");

    // 2. A billing consumer takes a batch and crashes before acking any of it.
    let mut crashing = GroupConsumer::new(&redis, stream.clone(), billing.clone())
        .consumer_name(ConsumerName::new("billing-crashes")?)
        .batch(50)
        .limit(50)
        .start()
        .await?;
    let mut taken = 0;
    while taken < 50 {
        match crashing.next().await {
            Some(Ok(_)) => taken += 1,
            _ => break,
        }
    }
    drop(crashing); // no ack, no close: its 50 entries stay pending
    eprintln!("consumer billing-crashes took {taken} orders and crashed without acking");

    // 3. The survivors and the slow group, while the rest is produced.
    let stop = CancellationToken::new();
    // A heartbeat schedule: two scheduler instances, ticks handled by a group.
    let ticks = StreamKey::new("demo:ticks")?;
    let _: () = redis::cmd("DEL")
        .arg(ticks.as_str())
        .query_async(&mut conn)
        .await?;
    let scheduler = streamkeeper::scheduler::Scheduler::new(&redis, "demo");
    scheduler
        .add(
            &streamkeeper::scheduler::Schedule::every(
                "heartbeat",
                Duration::from_millis(200),
                ticks.as_str(),
            )?
            .field("check", "inventory"),
        )
        .await?;
    let tick_group = GroupName::new("tick-handlers")?;
    streamkeeper::group::create_group(&redis, &ticks, &tick_group, StartFrom::Beginning).await?;
    let mut sched_tasks = Vec::new();
    for i in 0..2 {
        let (s, stop) = (scheduler.clone(), stop.clone());
        sched_tasks.push(tokio::spawn(async move {
            s.run(&format!("demo-scheduler-{i}"), stop).await
        }));
    }
    let tick_dues: Arc<Mutex<Vec<u64>>> = Arc::default();
    {
        let (redis, ticks, tick_group, stop, tick_dues) = (
            redis.clone(),
            ticks.clone(),
            tick_group.clone(),
            stop.clone(),
            tick_dues.clone(),
        );
        sched_tasks.push(tokio::spawn(async move {
            GroupConsumer::new(&redis, ticks, tick_group)
                .run(
                    move |d| {
                        let tick_dues = tick_dues.clone();
                        async move {
                            let due = d
                                .entry()
                                .get_str(streamkeeper::meta::DUE)
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            if let Ok(mut t) = tick_dues.lock() {
                                t.push(due);
                            }
                            Ok::<_, std::convert::Infallible>(Outcome::Ack)
                        }
                    },
                    1,
                    stop,
                )
                .await
                .map(|_| streamkeeper::scheduler::InstanceStats::default())
        }));
    }
    let seen_billing: Seen = Arc::default();
    let seen_analytics: Seen = Arc::default();
    let mut workers = Vec::new();
    let members = [
        ("billing-1", &billing, &seen_billing, Duration::ZERO, true),
        ("billing-2", &billing, &seen_billing, Duration::ZERO, true),
        (
            "analytics-1",
            &analytics,
            &seen_analytics,
            Duration::from_micros(200),
            false,
        ),
    ];
    for (name, group, seen, work, rejects_poison) in members {
        let member = Member {
            name,
            group: group.clone(),
            seen: seen.clone(),
            work,
            rejects_poison,
        };
        workers.push(tokio::spawn(member.run(
            redis.clone(),
            stream.clone(),
            stop.clone(),
        )));
    }
    // The janitor trims, every 300 ms, only what both groups acknowledged.
    let janitor_task = {
        let (redis, stream, stop) = (redis.clone(), stream.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut trimmed, mut max_len) = (0u64, 0u64, 0u64);
            loop {
                let mut conn = redis.shared();
                let len: u64 = redis::cmd("XLEN")
                    .arg(&stream)
                    .query_async(&mut conn)
                    .await?;
                max_len = max_len.max(len);
                let r =
                    streamkeeper::janitor::run_once(&redis, &stream, &Default::default()).await?;
                runs += 1;
                trimmed += r.trimmed;
                tokio::select! {
                    _ = stop.cancelled() => return anyhow::Ok((runs, trimmed, max_len)),
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        })
    };
    let rest: Vec<_> = (poison_at + 1..args.messages).map(order).collect();
    for chunk in rest.chunks(500) {
        produced += producer.send_batch(chunk).await?.len() as u64;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 4. Wait until both groups are done: every order processed or dead-lettered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let dlq = StreamKey::new(streamkeeper::keys::StreamKeys::dlq(&stream))?;
    loop {
        let dead = xlen(&redis, &dlq).await?;
        let pending_b = pending(&redis, &stream, &billing).await?;
        let pending_a = pending(&redis, &stream, &analytics).await?;
        let done_b = count(&seen_billing) as u64 + dead >= produced && pending_b == 0;
        let done_a = count(&seen_analytics) as u64 >= produced && pending_a == 0;
        if (done_b && done_a) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let mut stats = Vec::new();
    for w in workers {
        stats.push(w.await??);
    }
    let mut emitted = 0;
    for t in sched_tasks {
        emitted += t.await??.emitted;
    }
    scheduler.remove("heartbeat").await?;
    let (handled, distinct) = tick_dues.lock().map_or((0, 0), |t| {
        let mut d = t.clone();
        d.sort_unstable();
        d.dedup();
        (t.len(), d.len())
    });

    let (mut janitor_runs, mut trimmed, max_len) = janitor_task.await??;
    let last = streamkeeper::janitor::run_once(&redis, &stream, &Default::default()).await?;
    janitor_runs += 1;
    trimmed += last.trimmed;
    let remaining = xlen(&redis, &stream).await?;

    // 5. The summary.
    let dead = xlen(&redis, &dlq).await?;
    let dead_ids = dead_letter_origins(&redis, &dlq).await?;
    let mut rows = Vec::new();
    let mut lost_total = 0;
    for (g, seen) in [(&billing, &seen_billing), (&analytics, &seen_analytics)] {
        let processed = count(seen) as u64;
        let dead_here = if g == &billing { dead } else { 0 };
        let pend = pending(&redis, &stream, g).await?;
        let lost = produced.saturating_sub(processed + dead_here);
        lost_total += lost;
        rows.push((g.to_string(), processed, dead_here, pend, lost));
    }
    let delivered: u64 = stats.iter().map(|s: &RunStats| s.delivered).sum();
    if global.json {
        for (g, processed, dead, pend, lost) in &rows {
            output::json_line(&json!({
                "group": g, "produced": produced, "processed": processed,
                "dead_lettered": dead, "pending": pend, "lost": lost,
            }));
        }
        output::json_line(&json!({
            "janitor_runs": janitor_runs, "trimmed": trimmed, "peak_length": max_len, "length": remaining,
        }));
        output::json_line(&json!({
            "schedule": "heartbeat", "emitted": emitted, "handled": handled, "duplicates": handled - distinct,
        }));
    } else {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        t.set_header([
            "group",
            "produced",
            "processed",
            "dead-lettered",
            "pending",
            "lost",
        ]);
        for (g, processed, dead, pend, lost) in &rows {
            t.add_row([
                g.clone(),
                produced.to_string(),
                processed.to_string(),
                dead.to_string(),
                pend.to_string(),
                lost.to_string(),
            ]);
        }
        println!("{t}");
        println!(
            "the crashed consumer's {taken} orders were reclaimed by the survivors; {delivered} deliveries in all;\n\
             order {flaky_id} failed once and {} on retry; poison order {} is in {} ({});\n\
             schedule heartbeat (every 200ms, 2 scheduler instances): {emitted} ticks emitted, {handled} handled, {} duplicates;\n\
             janitor: {janitor_runs} runs trimmed {trimmed} entries, each acknowledged by both groups first; \
             {stream} peaked at {max_len} entries and now holds {remaining}; took {:.1}s",
            if seen_billing.lock().is_ok_and(|s| s.contains(&flaky_id)) { "succeeded" } else { "did NOT succeed" },
            poison_id.map(|i| i.to_string()).unwrap_or_default(),
            dlq,
            if poison_id.is_some_and(|p| dead_ids.contains(&p)) { "ok" } else { "MISSING" },
            handled - distinct,
            started.elapsed().as_secs_f64()
        );
    }
    if _server.is_some() {
        eprintln!(
            "dashboard: the private server stops now; run `streamkeeper demo --redis URL` against your own server, then `streamkeeper --redis URL serve` and open http://127.0.0.1:9187/"
        );
    } else {
        eprintln!(
            "dashboard: `streamkeeper --redis {} serve`, then open http://127.0.0.1:9187/",
            streamkeeper::conn::redact(&url)
        );
    }
    Ok(if lost_total == 0 {
        Exit::Ok
    } else {
        Exit::CheckFailed
    })
}

fn order(i: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields([
        ("order", i.to_string()),
        ("amount", format!("{}.{:02}", i % 97, i % 100)),
    ])
}

fn count(seen: &Seen) -> usize {
    seen.lock().map(|s| s.len()).unwrap_or(0)
}

/// One demo consumer: billing members reject the poison order, the
/// analytics member (slower, `work` per entry) accepts everything.
struct Member {
    name: &'static str,
    group: GroupName,
    seen: Seen,
    work: Duration,
    rejects_poison: bool,
}

impl Member {
    async fn run(
        self,
        redis: Connector,
        stream: StreamKey,
        stop: CancellationToken,
    ) -> anyhow::Result<RunStats> {
        let Member {
            name,
            group,
            seen,
            work,
            rejects_poison,
        } = self;
        let stats = GroupConsumer::new(&redis, stream, group)
            .consumer_name(ConsumerName::new(name)?)
            .claim_after(CLAIM_AFTER)
            .max_deliveries(MAX_DELIVERIES)
            .retry_backoff(Duration::from_millis(300), Duration::from_secs(5))
            .run(
                move |d| {
                    let seen = seen.clone();
                    async move {
                        if rejects_poison && d.entry().get("poison").is_some() {
                            return Err("cannot parse order");
                        }
                        if rejects_poison && d.entry().get("flaky").is_some() && d.attempt() == 1 {
                            return Err("payment service timed out");
                        }
                        if !work.is_zero() {
                            tokio::time::sleep(work).await;
                        }
                        if let Ok(mut s) = seen.lock() {
                            // A retried entry has a new ID; count it as the one it was.
                            s.insert(streamkeeper::retry::origin_id(d.entry()));
                        }
                        Ok(Outcome::Ack)
                    }
                },
                16,
                stop,
            )
            .await?;
        Ok(stats)
    }
}

async fn xlen(redis: &Connector, key: &StreamKey) -> anyhow::Result<u64> {
    let mut conn = redis.shared();
    Ok(redis::cmd("XLEN").arg(key).query_async(&mut conn).await?)
}

async fn pending(redis: &Connector, stream: &StreamKey, group: &GroupName) -> anyhow::Result<u64> {
    let groups = streamkeeper::group::list_groups(redis, stream).await?;
    Ok(groups
        .iter()
        .find(|g| g.name == group.as_str())
        .map_or(0, |g| g.pending))
}

async fn dead_letter_origins(
    redis: &Connector,
    dlq: &StreamKey,
) -> anyhow::Result<HashSet<StreamId>> {
    let entries =
        streamkeeper::reader::range(redis, dlq, StreamId::MIN, StreamId::MAX, 1000).await?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            e.get_str(streamkeeper::meta::ORIGIN_ID)
                .and_then(|s| s.parse().ok())
        })
        .collect())
}
