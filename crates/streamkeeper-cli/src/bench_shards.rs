//! `bench produce|consume --shards N`: a sharded stream (one stream key per
//! shard, each in its own slot) against a plain redis-rs loop doing the
//! same per-shard pipelined XADD / XREADGROUP+XACK over the same shard keys
//! in the same run. Works on a single server and on a cluster (there the
//! baseline runs on redis-rs's own cluster connection), and prints each
//! primary's share of the stream commands.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use streamkeeper::shard::{ShardLayout, ShardedProducer};
use streamkeeper::{
    fields, Connector, ConsumerOptions, GroupConsumer, GroupName, Outcome, StreamKey,
};
use tokio_util::sync::CancellationToken;

use crate::bench_kit::{rate, Figure, BATCH, ROUNDS};
use crate::cli::{BenchArgs, BenchMode, Global};
use crate::output;

/// The logical stream the bench uses.
const STREAM: &str = "sk-bench-sharded";

pub async fn run(global: &Global, args: &BenchArgs, url: &str, shards: u32) -> anyhow::Result<()> {
    let redis = Connector::connect(url).await?;
    let stream = StreamKey::new(balanced_name(&redis, shards).await?)?;
    if !global.quiet {
        eprintln!("sharded stream {stream}: {shards} shards");
    }
    reset(&redis, &stream, shards).await?;
    let layout = ShardLayout::create(&redis, &stream, shards).await?;
    let payload = "x".repeat(args.size);
    let modes: &[BenchMode] = match args.mode {
        BenchMode::Produce => &[BenchMode::Produce],
        BenchMode::Consume => &[BenchMode::Consume],
        BenchMode::All => &[BenchMode::Produce, BenchMode::Consume],
        _ => anyhow::bail!("--shards applies to bench produce, consume and all"),
    };
    for mode in modes {
        let before = command_counts(&redis).await?;
        let fig = match mode {
            BenchMode::Produce => produce(&redis, &layout, args, &payload).await?,
            _ => consume(&redis, &layout, args, &payload).await?,
        };
        let after = command_counts(&redis).await?;
        crate::bench_kit::report(global.json, &fig);
        report_shares(global.json, fig.mode, &before, &after);
    }
    reset(&redis, &stream, shards).await?;
    Ok(())
}

/// Which primary serves each shard decides how the load spreads, and that
/// follows from the shard keys' hash slots: on a cluster, the bench takes
/// the first name (`sk-bench-sharded`, `sk-bench-sharded-1`, …) whose
/// shards split as evenly as possible over the primaries, so the figure
/// measures the client, not the luck of one name's slots. `shard ls`
/// shows a real stream's spread.
async fn balanced_name(redis: &Connector, shards: u32) -> anyhow::Result<String> {
    let Some(nodes) = redis.cluster_nodes().await? else {
        return Ok(STREAM.to_string());
    };
    let primaries: Vec<_> = nodes
        .into_iter()
        .filter(|n| n.primary && !n.failed() && !n.slots.is_empty())
        .collect();
    let ideal = shards.div_ceil(u32::try_from(primaries.len().max(1))?);
    let mut best = (u32::MAX, STREAM.to_string());
    for candidate in 0..500 {
        let name = if candidate == 0 {
            STREAM.to_string()
        } else {
            format!("{STREAM}-{candidate}")
        };
        let stream = StreamKey::new(name.clone())?;
        let mut per = vec![0u32; primaries.len()];
        for i in 0..shards {
            let slot = streamkeeper::keys::key_slot(
                streamkeeper::keys::StreamKeys::shard(&stream, i).as_str(),
            );
            if let Some(p) = primaries.iter().position(|n| n.serves(slot)) {
                per[p] += 1;
            }
        }
        let worst = per.iter().copied().max().unwrap_or(0);
        if worst < best.0 {
            best = (worst, name);
        }
        if worst <= ideal {
            break;
        }
    }
    Ok(best.1)
}

/// Deletes the bench's shards and layout.
async fn reset(redis: &Connector, stream: &StreamKey, shards: u32) -> anyhow::Result<()> {
    let mut conn = redis.shared();
    let keys = std::iter::once(streamkeeper::keys::StreamKeys::shards(stream)).chain(
        (0..shards.max(64)).map(|i| streamkeeper::keys::StreamKeys::shard(stream, i).to_string()),
    );
    for k in keys {
        let _: () = redis::cmd("DEL").arg(k).query_async(&mut conn).await?;
    }
    Ok(())
}

async fn produce(
    redis: &Connector,
    layout: &ShardLayout,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<Figure> {
    let producer = ShardedProducer::new(redis, layout.clone());
    let batch: Vec<(Option<&[u8]>, _)> = (0..BATCH)
        .map(|_| (None, fields([("data", payload)])))
        .collect();
    crate::bench_kit::produce_figure(
        args.messages,
        args.baseline,
        async || clear(redis, layout).await,
        async |k| {
            producer.send_batch(&batch[..k]).await?;
            Ok(())
        },
        async || plain_produce(redis, layout, args.messages, payload).await,
    )
    .await
}

/// Empties every shard (keeps the layout).
async fn clear(redis: &Connector, layout: &ShardLayout) -> anyhow::Result<()> {
    let mut conn = redis.shared();
    for k in layout.shards() {
        let _: () = redis::cmd("DEL")
            .arg(k.as_str())
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

/// The plain loop: each batch split round-robin over the shards, one
/// pipelined XADD per shard, the shards in parallel — on redis-rs's own
/// connection (its cluster client on a cluster).
async fn plain_produce(
    redis: &Connector,
    layout: &ShardLayout,
    n: u64,
    payload: &str,
) -> anyhow::Result<()> {
    let conn = redis.shared();
    let shards = layout.shards();
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64);
        let per = k.div_ceil(u64::from(layout.count()));
        let sends = shards.iter().enumerate().map(|(i, key)| {
            let mut conn = conn.clone();
            let count = per.min(k.saturating_sub(per * i as u64));
            async move {
                if count == 0 {
                    return Ok(());
                }
                let mut pipe = redis::pipe();
                for _ in 0..count {
                    pipe.cmd("XADD")
                        .arg(key.as_str())
                        .arg("*")
                        .arg("data")
                        .arg(payload)
                        .ignore();
                }
                pipe.query_async::<()>(&mut conn).await
            }
        });
        try_join_all(sends).await?;
        left -= k;
    }
    Ok(())
}

async fn consume(
    redis: &Connector,
    layout: &ShardLayout,
    args: &BenchArgs,
    payload: &str,
) -> anyhow::Result<Figure> {
    clear(redis, layout).await?;
    plain_produce(redis, layout, args.messages, payload).await?;
    let per_shard = shard_lengths(redis, layout).await?;
    let (mut best, mut best_base) = (0f64, 0f64);
    for round in 0..ROUNDS {
        let g = GroupName::new(format!("sk-{round}"))?;
        create_groups(redis, layout, g.as_str()).await?;
        let t = Instant::now();
        let runs = layout
            .shards()
            .into_iter()
            .zip(&per_shard)
            .map(|(key, &n)| {
                let options = ConsumerOptions {
                    batch: BATCH,
                    limit: Some(n),
                    claim_after: None,
                    ..ConsumerOptions::default()
                };
                GroupConsumer::new(redis, key, g.clone())
                    .options(options)
                    .run(
                        |_d| async { Ok::<_, std::convert::Infallible>(Outcome::Ack) },
                        64,
                        CancellationToken::new(),
                    )
            });
        let acked: u64 = try_join_all(runs).await?.iter().map(|s| s.acked).sum();
        best = best.max(rate(acked, t.elapsed()));
        if args.baseline {
            let g = format!("base-{round}");
            create_groups(redis, layout, &g).await?;
            let t = Instant::now();
            let loops = layout
                .shards()
                .into_iter()
                .zip(&per_shard)
                .map(|(key, &n)| {
                    let g = g.clone();
                    async move {
                        let conn = redis.dedicated(&key, Duration::from_secs(5)).await?;
                        crate::bench_kit::plain_consume(conn, key.as_str(), &g, n).await
                    }
                });
            let n: u64 = try_join_all(loops).await?.iter().sum();
            best_base = best_base.max(rate(n, t.elapsed()));
        }
    }
    clear(redis, layout).await?;
    Ok(Figure {
        mode: "consume",
        messages: args.messages,
        rate: best,
        baseline_rate: args.baseline.then_some(best_base),
        peak_rss_bytes: None,
    })
}

async fn shard_lengths(redis: &Connector, layout: &ShardLayout) -> anyhow::Result<Vec<u64>> {
    let mut conn = redis.shared();
    let mut out = Vec::new();
    for k in layout.shards() {
        let n: u64 = redis::cmd("XLEN")
            .arg(k.as_str())
            .query_async(&mut conn)
            .await?;
        out.push(n);
    }
    Ok(out)
}

async fn create_groups(redis: &Connector, layout: &ShardLayout, g: &str) -> anyhow::Result<()> {
    let mut conn = redis.shared();
    for k in layout.shards() {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(k.as_str())
            .arg(g)
            .arg("0")
            .query_async(&mut conn)
            .await?;
    }
    Ok(())
}

/// Stream commands (XADD, XREADGROUP, XACK, EVALSHA) each primary has
/// served so far, from `INFO commandstats`.
async fn command_counts(redis: &Connector) -> anyhow::Result<HashMap<String, u64>> {
    let nodes: Vec<String> = match redis.cluster_nodes().await? {
        Some(nodes) => nodes
            .into_iter()
            .filter(|n| n.primary && !n.failed() && !n.slots.is_empty())
            .map(|n| n.addr)
            .collect(),
        None => vec![redis.server_addr()],
    };
    let mut out = HashMap::new();
    for node in nodes {
        let info: String = match redis.cluster_nodes().await? {
            Some(_) => {
                let mut conn = redis.node_connection(&node).await?;
                redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(&mut conn)
                    .await?
            }
            None => {
                let mut conn = redis.shared();
                redis::cmd("INFO")
                    .arg("commandstats")
                    .query_async(&mut conn)
                    .await?
            }
        };
        let calls: u64 = info
            .lines()
            .filter(|l| {
                [
                    "cmdstat_xadd:",
                    "cmdstat_xreadgroup:",
                    "cmdstat_xack:",
                    "cmdstat_evalsha:",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        out.insert(node, calls);
    }
    Ok(out)
}

fn report_shares(
    json: bool,
    mode: &str,
    before: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
) {
    let mut deltas: Vec<(&String, u64)> = after
        .iter()
        .map(|(n, a)| (n, a.saturating_sub(before.get(n).copied().unwrap_or(0))))
        .collect();
    deltas.sort();
    let total: u64 = deltas.iter().map(|(_, d)| d).sum();
    for (node, d) in deltas {
        let share = if total == 0 {
            0.0
        } else {
            d as f64 / total as f64
        };
        if json {
            output::json_line(&serde_json::json!({
                "mode": mode, "node": node, "commands": d,
                "share": (share * 1000.0).round() / 1000.0,
            }));
        } else {
            println!(
                "  {node:<21} {d:>9} stream commands  {:>5.1} %",
                share * 100.0
            );
        }
    }
}
