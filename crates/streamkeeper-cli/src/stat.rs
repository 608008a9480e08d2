//! `streamkeeper stat`: lag and health, as a table, JSON lines or a
//! health check (`--max-lag`, `--max-time-lag` → exit 1).

use std::collections::HashMap;
use std::time::Duration;

use comfy_table::Table;
use streamkeeper::inspect::{self, GroupStat, InspectOptions, StreamStat, Trend};
use streamkeeper::shard::ShardLayout;
use streamkeeper::{Connector, StreamKey};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, StatArgs};
use crate::output;
use crate::signal;
use crate::Exit;

/// Inspects the given streams, or all of them. A named sharded stream is
/// one row summed over its shards, followed by a row per shard when
/// `per_shard`.
pub async fn collect(
    redis: &Connector,
    names: &[StreamKey],
    options: &InspectOptions,
) -> anyhow::Result<Vec<StreamStat>> {
    collect_with(redis, names, options, false).await
}

/// [`collect`], with a row per shard of sharded streams when `per_shard`.
pub async fn collect_with(
    redis: &Connector,
    names: &[StreamKey],
    options: &InspectOptions,
    per_shard: bool,
) -> anyhow::Result<Vec<StreamStat>> {
    let keys: Vec<StreamKey> = if names.is_empty() {
        inspect::list_streams(redis).await?
    } else {
        names.to_vec()
    };
    let mut out = Vec::new();
    let mut plain = Vec::new();
    // Sharded streams to sum: named ones, and when listing everything,
    // those whose shards the listing found (one row each, not a row per
    // shard key).
    let mut sharded: Vec<ShardLayout> = Vec::new();
    let mut checked: HashMap<String, Option<u32>> = HashMap::new();
    for k in keys {
        if names.is_empty() {
            if let Some((s, i)) = streamkeeper::keys::StreamKeys::parse_shard(k.as_str()) {
                if !checked.contains_key(s) {
                    let layout = match StreamKey::new(s) {
                        Ok(logical) => ShardLayout::open(redis, &logical).await?,
                        Err(_) => None,
                    };
                    checked.insert(s.to_string(), layout.as_ref().map(ShardLayout::count));
                    sharded.extend(layout);
                }
                if checked.get(s).copied().flatten().is_some_and(|n| i < n) {
                    continue;
                }
            }
            plain.push(k);
            continue;
        }
        match ShardLayout::open(redis, &k).await? {
            Some(layout) => sharded.push(layout),
            None => plain.push(k),
        }
    }
    for layout in sharded {
        let shards = match stats(redis, layout.all_shards(), options, true).await {
            Ok(s) => s,
            // Listing everything (a health check): one broken sharded
            // stream (a shard key of the wrong type) is reported, and the
            // others are still inspected. A shard that could not be read
            // at all (its node down, a slot in motion) fails the listing:
            // a health check never passes by not looking.
            Err(e)
                if names.is_empty()
                    && !e
                        .downcast_ref::<streamkeeper::Error>()
                        .is_some_and(|e| e.is_retryable()) =>
            {
                tracing::warn!(stream = %layout.stream(), error = %e, "skipping a sharded stream that cannot be inspected");
                continue;
            }
            Err(e) => return Err(e),
        };
        out.push(inspect::sum_shards(layout.stream().as_str(), &shards));
        if per_shard {
            out.extend(shards);
        }
    }
    out.extend(stats(redis, plain, options, false).await?);
    Ok(out)
}

/// Stats of `keys`, 16 at a time (pipelined on the shared connection), in
/// order; `shards`: the keys are shards, and a missing one is empty.
async fn stats(
    redis: &Connector,
    keys: Vec<StreamKey>,
    options: &InspectOptions,
    shards: bool,
) -> anyhow::Result<Vec<StreamStat>> {
    use futures::StreamExt;
    futures::stream::iter(keys.into_iter().map(|k| {
        let (redis, options) = (redis.clone(), options.clone());
        async move {
            if shards {
                inspect::shard_stat(&redis, &k, &options).await
            } else {
                inspect::stream_stat(&redis, &k, &options).await
            }
        }
    }))
    .buffered(16)
    .collect::<Vec<_>>()
    .await
    .into_iter()
    .map(|r| r.map_err(anyhow::Error::from))
    .collect()
}

/// One JSON object per (stream, group), with the field names of docs/cli.md "stat".
pub fn json_rows(
    stats: &[StreamStat],
    trends: &HashMap<(String, String), Trend>,
) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for s in stats {
        // Unknown memory (no MEMORY permission) is null, not 0.
        let (memory, per_entry) = if s.memory_known {
            (Some(s.memory_bytes), Some(s.bytes_per_entry))
        } else {
            (None, None)
        };
        let base = serde_json::json!({
            "stream": s.stream, "length": s.length, "first_id": s.first_id, "last_id": s.last_id,
            "memory_bytes": memory, "bytes_per_entry": per_entry,
        });
        if s.groups.is_empty() {
            let mut v = base.clone();
            v["group"] = serde_json::Value::Null;
            rows.push(v);
        }
        for g in &s.groups {
            let mut v = base.clone();
            v["group"] = g.group.clone().into();
            v["pending"] = g.pending.into();
            v["undelivered"] = g.undelivered.into();
            v["outstanding"] = g.outstanding.into();
            v["time_lag_ms"] = g.time_lag_ms.into();
            v["oldest_pending_ms"] = g.oldest_pending_ms.into();
            v["last_delivered"] = g.last_delivered.to_string().into();
            v["consumers"] = serde_json::to_value(&g.consumers).unwrap_or_default();
            if let Some(t) = trends.get(&(s.stream.clone(), g.group.clone())) {
                v["trend"] = serde_json::to_value(t).unwrap_or_default();
            }
            rows.push(v);
        }
    }
    rows
}

fn ms(v: u64) -> String {
    match v {
        0 => "-".into(),
        // Milliseconds matter below 10 s; above, seconds are enough.
        v if v < 10_000 => humantime::format_duration(Duration::from_millis(v)).to_string(),
        v => humantime::format_duration(Duration::from_secs(v / 1000)).to_string(),
    }
}

fn print_human(
    stats: &[StreamStat],
    trends: &HashMap<(String, String), Trend>,
    rates: &HashMap<(String, String), (f64, f64)>,
) {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_header([
        "stream",
        "length",
        "memory",
        "group",
        "pending",
        "undelivered",
        "time lag",
        "oldest pending",
        "consumers",
        "trend",
    ]);
    for s in stats {
        let mem = if s.memory_known {
            format!(
                "{:.1} KiB ({} B/entry)",
                s.memory_bytes as f64 / 1024.0,
                s.bytes_per_entry
            )
        } else {
            "unknown (no MEMORY permission)".to_string()
        };
        if s.groups.is_empty() {
            t.add_row([
                s.stream.clone(),
                s.length.to_string(),
                mem.clone(),
                "(no group)".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for g in &s.groups {
            let consumers: Vec<String> = g
                .consumers
                .iter()
                .map(|c| {
                    format!(
                        "{}:{}{}",
                        c.name,
                        c.pending,
                        if c.dead { " DEAD" } else { "" }
                    )
                })
                .collect();
            let key = (s.stream.clone(), g.group.clone());
            let mut trend = trends
                .get(&key)
                .map(|t| {
                    serde_json::to_value(t)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .unwrap_or_default();
            if let Some((i, o)) = rates.get(&key) {
                trend.push_str(&format!(" (in {i:.0}/s, out {o:.0}/s)"));
            }
            t.add_row([
                s.stream.clone(),
                s.length.to_string(),
                mem.clone(),
                g.group.clone(),
                g.pending.to_string(),
                g.undelivered.to_string(),
                ms(g.time_lag_ms),
                ms(g.oldest_pending_ms),
                consumers.join(" "),
                trend,
            ]);
        }
    }
    println!("{t}");
}

/// Groups over a threshold, as messages.
fn violations(stats: &[StreamStat], args: &StatArgs) -> Vec<String> {
    let mut out = Vec::new();
    for s in stats {
        for wanted in &args.groups {
            if !s.groups.iter().any(|g| g.group == wanted.as_str()) {
                out.push(format!("{} has no group {wanted}", s.stream));
            }
        }
        for g in &s.groups {
            out.extend(group_violations(s, g, args));
        }
    }
    out
}

/// The thresholds one group exceeds, one line each.
fn group_violations(s: &StreamStat, g: &GroupStat, args: &StatArgs) -> Vec<String> {
    inspect::LagLimits {
        max_lag: args.max_lag,
        max_time_lag: args.max_time_lag,
    }
    .violations(&s.stream, g, "--")
}

pub async fn run(global: &Global, args: StatArgs) -> anyhow::Result<Exit> {
    let redis = global.connect().await?;
    let options = InspectOptions {
        exact_memory: args.exact_memory,
        dead_after: args.dead_after,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let interrupted = signal::cancel_on_signal(stop.clone());
    let mut previous: HashMap<(String, String), (StreamStat, GroupStat, std::time::Instant)> =
        HashMap::new();
    loop {
        let mut stats = collect_with(&redis, &args.streams, &options, args.shards).await?;
        if !args.groups.is_empty() {
            for s in &mut stats {
                s.groups
                    .retain(|g| args.groups.iter().any(|w| g.group == w.as_str()));
            }
        }
        let mut trends = HashMap::new();
        let mut rates = HashMap::new();
        let now = std::time::Instant::now();
        for s in &stats {
            for g in &s.groups {
                let key = (s.stream.clone(), g.group.clone());
                if let Some((sb, gb, at)) = previous.get(&key) {
                    trends.insert(key.clone(), inspect::trend(gb, g));
                    if let Some(r) =
                        inspect::rates(sb, s, gb, g, now.duration_since(*at).as_secs_f64())
                    {
                        rates.insert(key.clone(), r);
                    }
                }
                previous.insert(key, (s.clone(), g.clone(), now));
            }
        }
        if global.quiet && !global.json {
            // -q: the exit code (and a failed check's line) says it all.
        } else if global.json {
            for mut row in json_rows(&stats, &trends) {
                let key = (
                    row["stream"].as_str().unwrap_or("").to_string(),
                    row["group"].as_str().unwrap_or("").to_string(),
                );
                if let Some((rate_in, rate_out)) = rates.get(&key) {
                    row["rate_in"] = (rate_in.round()).into();
                    row["rate_out"] = (rate_out.round()).into();
                }
                if args.max_lag.is_some() || args.max_time_lag.is_some() {
                    // A health check's verdict per group, for scripts.
                    let args = &args;
                    let failed = stats
                        .iter()
                        .filter(|s| s.stream == key.0)
                        .flat_map(|s| {
                            s.groups
                                .iter()
                                .filter(|g| g.group == key.1)
                                .flat_map(move |g| group_violations(s, g, args))
                        })
                        .count();
                    // A row without the group asked for (`-g G`) is a failed check.
                    let missing = !args.groups.is_empty() && key.1.is_empty();
                    row["check"] = if failed == 0 && !missing {
                        "pass"
                    } else {
                        "fail"
                    }
                    .into();
                }
                output::json_line(&row);
            }
        } else {
            print_human(&stats, &trends, &rates);
        }
        let bad = violations(&stats, &args);
        for b in &bad {
            eprintln!("streamkeeper: check failed: {b}");
        }
        let Some(every) = args.watch else {
            return Ok(if bad.is_empty() {
                Exit::Ok
            } else {
                Exit::CheckFailed
            });
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        if !global.json {
            println!();
        }
    }
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}
