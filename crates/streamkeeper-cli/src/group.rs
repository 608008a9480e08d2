//! `streamkeeper group create|destroy|ls|reset|consumers`; on a sharded
//! stream each acts on every shard (and `ls`/`reset` also print sums).

use comfy_table::Table;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{group, GroupName, StartFrom, StreamId, StreamKey};

use crate::cli::{Global, GroupAction, GroupArgs};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, args: GroupArgs) -> anyhow::Result<Exit> {
    match args.action {
        GroupAction::Create {
            stream,
            group: g,
            from,
        } => {
            let redis = global.connect().await?;
            // A sharded stream: the group exists on every shard.
            let done =
                streamkeeper::shard::groups::create_on_every_key(&redis, &stream, &g, from).await?;
            if global.json {
                let mut line = serde_json::json!({
                    "stream": stream.as_str(), "group": g.as_str(), "created": done.changed > 0,
                });
                if done.sharded {
                    line["shards"] = done.keys.into();
                }
                output::json_line(&line);
            } else if done.sharded {
                println!(
                    "group {g} on {} shards of {stream} ({} created now) from {}",
                    done.keys,
                    done.changed,
                    from.as_arg()
                );
            } else if done.changed > 0 {
                println!("created group {g} on {stream} from {}", from.as_arg());
            } else {
                println!("group {g} already exists on {stream} (unchanged)");
            }
        }
        GroupAction::Destroy { stream, group: g } => {
            let redis = global.connect().await?;
            let destroyed = streamkeeper::shard::groups::destroy_on_every_key(&redis, &stream, &g)
                .await?
                .changed
                > 0;
            if global.json {
                output::json_line(
                    &serde_json::json!({"stream": stream.as_str(), "group": g.as_str(), "destroyed": destroyed}),
                );
            } else if destroyed {
                println!("destroyed group {g} on {stream}");
            } else {
                println!("no group {g} on {stream}");
            }
        }
        GroupAction::Ls { stream } => {
            let redis = global.connect().await?;
            match ShardLayout::open(&redis, &stream).await? {
                Some(layout) => ls_sharded(global, &redis, &layout).await?,
                None => ls_plain(global, &redis, &stream).await?,
            }
        }
        GroupAction::Reset {
            stream,
            group: g,
            to,
            dry_run,
        } => {
            let to = match to {
                StartFrom::After(id) => id,
                StartFrom::Time(t) => StreamId::from_time(t).prev(),
                StartFrom::Beginning => StreamId::MIN,
                StartFrom::End => {
                    anyhow::bail!("--to $ is not supported: give the last ID or a time")
                }
            };
            let redis = global.connect().await?;
            let Some(layout) = ShardLayout::open(&redis, &stream).await? else {
                let p = group::reset_group(&redis, &stream, &g, to, dry_run).await?;
                print_reset(global, &stream, &g, &p, dry_run)?;
                return Ok(Exit::Ok);
            };
            // A sharded stream: the same point on every shard (an ID is a
            // time, so it means the same moment on each). Every shard is
            // checked first (the group exists), so a missing group writes
            // nothing; then each shard is moved in turn.
            let mut previews = Vec::new();
            for shard in layout.all_shards() {
                match group::reset_group(&redis, &shard, &g, to, true).await {
                    Ok(p) => previews.push(p),
                    Err(streamkeeper::Error::GroupMissing { .. }) => anyhow::bail!(
                        "consumer group {g} does not exist on shard {shard} of {stream}; create it on every shard with `streamkeeper group create {stream} {g}` (nothing was moved)"
                    ),
                    Err(e) => return Err(e.into()),
                }
            }
            if !dry_run {
                previews.clear();
                for shard in layout.all_shards() {
                    previews.push(group::reset_group(&redis, &shard, &g, to, false).await?);
                }
            }
            for (shard, p) in layout.all_shards().iter().zip(&previews) {
                print_reset(global, shard, &g, p, dry_run)?;
            }
            let (redelivered, skipped) = previews
                .iter()
                .fold((0, 0), |(r, s), p| (r + p.redelivered, s + p.skipped));
            if global.json {
                output::json_line(&serde_json::json!({
                    "stream": stream.as_str(), "group": g.as_str(), "to": to.to_string(),
                    "redelivered": redelivered, "skipped": skipped,
                    "dry_run": dry_run, "shards": layout.all_shards().len(),
                }));
            } else {
                let verb = if dry_run { "would move" } else { "moved" };
                println!(
                    "{verb} {g} on {} shards of {stream} to {to}: {redelivered} entries delivered again, {skipped} skipped in all",
                    layout.all_shards().len()
                );
            }
        }
        GroupAction::Consumers {
            stream,
            group: g,
            remove_idle,
        } => {
            let redis = global.connect().await?;
            match ShardLayout::open(&redis, &stream).await? {
                // A sharded stream: each shard's consumers (a consumer of
                // the group is one on every shard it read), and removal
                // per shard, the heir taken among that shard's consumers.
                Some(layout) => {
                    let mut rows = Vec::new();
                    for shard in layout.all_shards() {
                        for c in consumers(global, &redis, &shard, &g, remove_idle).await? {
                            rows.push((shard.clone(), c));
                        }
                    }
                    print_consumers(global, &rows, true)?;
                }
                None => {
                    let rows: Vec<_> = consumers(global, &redis, &stream, &g, remove_idle)
                        .await?
                        .into_iter()
                        .map(|c| (stream.clone(), c))
                        .collect();
                    print_consumers(global, &rows, false)?;
                }
            }
        }
    }
    Ok(Exit::Ok)
}

async fn ls_plain(
    global: &Global,
    redis: &streamkeeper::Connector,
    stream: &StreamKey,
) -> anyhow::Result<()> {
    let groups = group::list_groups(redis, stream).await?;
    if global.json {
        for g in &groups {
            let mut v = serde_json::to_value(g)?;
            v["stream"] = stream.as_str().into();
            output::json_line(&v);
        }
    } else if groups.is_empty() {
        println!("no groups on {stream}");
    } else {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header(["group", "consumers", "pending", "last delivered", "lag"]);
        for g in &groups {
            t.add_row(group_cells(g));
        }
        println!("{t}");
    }
    Ok(())
}

/// `group ls` of a sharded stream: a row per group with the sums over
/// the shards (consumers: distinct names over the shards, one reading
/// several shards counted once; lag unknown if unknown on any shard),
/// then a row per shard and group.
async fn ls_sharded(
    global: &Global,
    redis: &streamkeeper::Connector,
    layout: &ShardLayout,
) -> anyhow::Result<()> {
    let stream = layout.stream();
    let mut per_shard = Vec::new();
    // Consumer names per group, over every shard.
    let mut names: std::collections::HashMap<String, std::collections::HashSet<String>> =
        Default::default();
    let options = streamkeeper::inspect::InspectOptions {
        memory: false,
        ..Default::default()
    };
    for shard in layout.all_shards() {
        let groups = group::list_groups(redis, &shard).await?;
        if !groups.is_empty() {
            let stat = streamkeeper::inspect::shard_stat(redis, &shard, &options).await?;
            for g in stat.groups {
                names
                    .entry(g.group)
                    .or_default()
                    .extend(g.consumers.into_iter().map(|c| c.name));
            }
        }
        for g in groups {
            per_shard.push((shard.clone(), g));
        }
    }
    let mut sums: Vec<(String, u64, u64, Option<u64>)> = Vec::new();
    for (_, g) in &per_shard {
        let name = g.name.to_string();
        match sums.iter_mut().find(|s| s.0 == name) {
            Some(s) => {
                s.2 += g.pending;
                s.3 = s.3.zip(g.lag).map(|(a, b)| a + b);
            }
            None => {
                let consumers = names.get(&name).map_or(0, |n| n.len() as u64);
                sums.push((name, consumers, g.pending, g.lag))
            }
        }
    }
    if global.json {
        for (name, consumers, pending, lag) in &sums {
            output::json_line(&serde_json::json!({
                "stream": stream.as_str(), "group": name, "consumers": consumers,
                "pending": pending, "lag": lag, "shards": layout.all_shards().len(),
            }));
        }
        for (shard, g) in &per_shard {
            let mut v = serde_json::to_value(g)?;
            v["stream"] = shard.as_str().into();
            output::json_line(&v);
        }
    } else if per_shard.is_empty() {
        println!(
            "no groups on {stream} ({} shards)",
            layout.all_shards().len()
        );
    } else {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header([
            "stream",
            "group",
            "consumers",
            "pending",
            "last delivered",
            "lag",
        ]);
        for (name, consumers, pending, lag) in &sums {
            t.add_row([
                stream.to_string(),
                name.clone(),
                consumers.to_string(),
                pending.to_string(),
                "-".into(),
                lag.map_or("unknown".into(), |l| l.to_string()),
            ]);
        }
        for (shard, g) in &per_shard {
            let mut row = vec![shard.to_string()];
            row.extend(group_cells(g));
            t.add_row(row);
        }
        println!("{t}");
    }
    Ok(())
}

/// A group's cells in `group ls`: name, consumers, pending, last
/// delivered, lag.
fn group_cells(g: &streamkeeper::group::GroupInfo) -> [String; 5] {
    [
        g.name.to_string(),
        g.consumers.to_string(),
        g.pending.to_string(),
        g.last_delivered.to_string(),
        g.lag.map_or("unknown".into(), |l| l.to_string()),
    ]
}

fn print_reset(
    global: &Global,
    stream: &StreamKey,
    g: &GroupName,
    p: &group::ResetPreview,
    dry_run: bool,
) -> anyhow::Result<()> {
    if global.json {
        let mut v = serde_json::to_value(p)?;
        v["stream"] = stream.as_str().into();
        v["group"] = g.as_str().into();
        v["dry_run"] = dry_run.into();
        output::json_line(&v);
    } else {
        let what = if p.redelivered > 0 {
            format!("{} entries will be delivered again", p.redelivered)
        } else if p.skipped > 0 {
            format!(
                "{} entries will be skipped (never delivered to {g})",
                p.skipped
            )
        } else {
            "no entry changes hands".to_string()
        };
        let range = p
            .range
            .as_ref()
            .map_or(String::new(), |(a, b)| format!(" ({a} … {b})"));
        let verb = if dry_run { "would move" } else { "moved" };
        println!(
            "{verb} {g} on {stream} from {} to {}: {what}{range}",
            with_time(p.from),
            with_time(p.to)
        );
    }
    Ok(())
}

/// An ID with the time it stands for, `1700000000000-0 (2023-11-14T22:13:20Z)`
/// (the start of the stream, `0-0`, has none).
fn with_time(id: StreamId) -> String {
    if id == StreamId::MIN {
        return id.to_string();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(id.ms);
    format!("{id} ({})", humantime::format_rfc3339_seconds(t))
}

/// The consumers of `g` on one stream key, after removing the idle ones
/// (their pending entries handed to the most recently active consumer)
/// when `remove_idle` is given.
async fn consumers(
    global: &Global,
    redis: &streamkeeper::Connector,
    stream: &StreamKey,
    g: &GroupName,
    remove_idle: Option<std::time::Duration>,
) -> anyhow::Result<Vec<streamkeeper::inspect::ConsumerStat>> {
    let stat = streamkeeper::inspect::stream_stat(redis, stream, &Default::default()).await?;
    let gs = stat
        .groups
        .iter()
        .find(|x| x.group == g.as_str())
        .ok_or_else(|| streamkeeper::Error::GroupMissing {
            stream: stream.clone(),
            group: g.clone(),
        })?;
    let mut consumers = gs.consumers.clone();
    if let Some(idle) = remove_idle {
        let idle_ms = idle.as_millis() as u64;
        // `sk-retry` holds the parked retries: idle by design, never
        // removed and never an heir.
        let reserved =
            |c: &streamkeeper::inspect::ConsumerStat| c.name == streamkeeper::meta::RETRY_CONSUMER;
        let (stale, live): (Vec<_>, Vec<_>) = consumers
            .iter()
            .filter(|c| !reserved(c))
            .cloned()
            .partition(|c| c.idle_ms > idle_ms);
        let heir = live
            .iter()
            .min_by_key(|c| c.idle_ms)
            .map(|c| c.name.clone());
        for c in &stale {
            let heir = match (c.pending, heir.as_deref()) {
                (0, _) => c.name.as_str(),
                (_, Some(h)) => h,
                (_, None) => anyhow::bail!(
                    "consumer {} holds {} pending entries of {stream} and no live consumer can take them; start a consumer or pick a longer --remove-idle",
                    c.name,
                    c.pending
                ),
            };
            let moved = group::remove_consumer(
                redis,
                stream,
                g,
                &streamkeeper::ConsumerName::new(c.name.clone())?,
                &streamkeeper::ConsumerName::new(heir)?,
            )
            .await?;
            let idle = humantime::format_duration(std::time::Duration::from_secs(c.idle_ms / 1000));
            if global.json {
                output::json_line(
                    &serde_json::json!({"removed": c.name, "moved": moved, "to": if moved > 0 { Some(heir) } else { None }}),
                );
            } else if moved > 0 {
                println!(
                    "removed {} (idle {idle}); its {moved} pending entries now belong to {heir}",
                    c.name
                );
            } else {
                println!("removed {} (idle {idle}, nothing pending)", c.name);
            }
        }
        consumers = live;
        consumers.extend(gs.consumers.iter().filter(|c| reserved(c)).cloned());
    }
    Ok(consumers)
}

/// Prints consumers; `sharded` adds the shard each row is about.
fn print_consumers(
    global: &Global,
    rows: &[(StreamKey, streamkeeper::inspect::ConsumerStat)],
    sharded: bool,
) -> anyhow::Result<()> {
    if global.json {
        for (shard, c) in rows {
            let mut v = serde_json::to_value(c)?;
            if sharded {
                v["stream"] = shard.as_str().into();
            }
            output::json_line(&v);
        }
    } else {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        let mut header = vec!["consumer", "pending", "idle", "dead"];
        if sharded {
            header.insert(0, "shard");
        }
        t.set_header(header);
        for (shard, c) in rows {
            let mut row = vec![
                c.name.clone(),
                c.pending.to_string(),
                format!("{}ms", c.idle_ms),
                if c.dead { "yes".into() } else { String::new() },
            ];
            if sharded {
                row.insert(0, shard.to_string());
            }
            t.add_row(row);
        }
        println!("{t}");
    }
    Ok(())
}
