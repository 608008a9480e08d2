//! `streamkeeper group create|destroy|ls`.

use comfy_table::Table;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{group, StartFrom, StreamId};

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
            if let Some(layout) = ShardLayout::open(&redis, &stream).await? {
                let mut created = 0;
                for shard in layout.shards() {
                    created += u32::from(group::create_group(&redis, &shard, &g, from).await?);
                }
                if global.json {
                    output::json_line(&serde_json::json!({
                        "stream": stream.as_str(), "group": g.as_str(),
                        "created": created > 0, "shards": layout.count(),
                    }));
                } else {
                    println!(
                        "group {g} on {} shards of {stream} ({created} created now) from {}",
                        layout.count(),
                        from.as_arg()
                    );
                }
                return Ok(Exit::Ok);
            }
            let created = group::create_group(&redis, &stream, &g, from).await?;
            if global.json {
                output::json_line(
                    &serde_json::json!({"stream": stream.as_str(), "group": g.as_str(), "created": created}),
                );
            } else if created {
                println!("created group {g} on {stream} from {}", from.as_arg());
            } else {
                println!("group {g} already exists on {stream} (unchanged)");
            }
        }
        GroupAction::Destroy { stream, group: g } => {
            let redis = global.connect().await?;
            let destroyed = match ShardLayout::open(&redis, &stream).await? {
                Some(layout) => {
                    let mut any = false;
                    for shard in layout.shards() {
                        any |= group::destroy_group(&redis, &shard, &g).await?;
                    }
                    any
                }
                None => group::destroy_group(&redis, &stream, &g).await?,
            };
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
            let groups = group::list_groups(&redis, &stream).await?;
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
                    t.add_row([
                        g.name.to_string(),
                        g.consumers.to_string(),
                        g.pending.to_string(),
                        g.last_delivered.to_string(),
                        g.lag.map_or("unknown".into(), |l| l.to_string()),
                    ]);
                }
                println!("{t}");
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
            let p = group::reset_group(&redis, &stream, &g, to, dry_run).await?;
            if global.json {
                let mut v = serde_json::to_value(&p)?;
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
                    p.from, p.to
                );
            }
        }
        GroupAction::Consumers {
            stream,
            group: g,
            remove_idle,
        } => {
            let redis = global.connect().await?;
            let stat =
                streamkeeper::inspect::stream_stat(&redis, &stream, &Default::default()).await?;
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
                let (stale, live): (Vec<_>, Vec<_>) =
                    consumers.iter().cloned().partition(|c| c.idle_ms > idle_ms);
                let heir = live
                    .iter()
                    .min_by_key(|c| c.idle_ms)
                    .map(|c| c.name.clone());
                for c in &stale {
                    let heir = match (c.pending, heir.as_deref()) {
                        (0, _) => c.name.as_str(),
                        (_, Some(h)) => h,
                        (_, None) => anyhow::bail!(
                            "consumer {} holds {} pending entries and no live consumer can take them; start a consumer or pick a longer --remove-idle",
                            c.name,
                            c.pending
                        ),
                    };
                    let moved = group::remove_consumer(
                        &redis,
                        &stream,
                        &g,
                        &streamkeeper::ConsumerName::new(c.name.clone())?,
                        &streamkeeper::ConsumerName::new(heir)?,
                    )
                    .await?;
                    if global.json {
                        output::json_line(
                            &serde_json::json!({"removed": c.name, "moved": moved, "to": if moved > 0 { Some(heir) } else { None }}),
                        );
                    } else if moved > 0 {
                        println!("removed {} (idle {}); its {moved} pending entries now belong to {heir}", c.name, humantime::format_duration(std::time::Duration::from_secs(c.idle_ms / 1000)));
                    } else {
                        println!(
                            "removed {} (idle {}, nothing pending)",
                            c.name,
                            humantime::format_duration(std::time::Duration::from_secs(
                                c.idle_ms / 1000
                            ))
                        );
                    }
                }
                consumers = live;
            }
            if global.json {
                for c in &consumers {
                    output::json_line(&serde_json::to_value(c)?);
                }
            } else {
                let mut t = Table::new();
                t.load_preset(comfy_table::presets::NOTHING);
                t.set_header(["consumer", "pending", "idle", "dead"]);
                for c in &consumers {
                    t.add_row([
                        c.name.clone(),
                        c.pending.to_string(),
                        format!("{}ms", c.idle_ms),
                        if c.dead { "yes".into() } else { String::new() },
                    ]);
                }
                println!("{t}");
            }
        }
    }
    Ok(Exit::Ok)
}
