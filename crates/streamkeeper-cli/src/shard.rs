//! `streamkeeper shard create|resize|ls`: sharded logical streams.

use comfy_table::Table;
use streamkeeper::inspect::{self, InspectOptions};
use streamkeeper::keys::key_slot;
use streamkeeper::shard::ShardLayout;

use crate::cli::{Global, ShardAction, ShardArgs};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, args: ShardArgs) -> anyhow::Result<Exit> {
    match args.action {
        ShardAction::Create { stream, shards } => {
            let redis = global.connect().await?;
            let layout = ShardLayout::create(&redis, &stream, shards).await?;
            if global.json {
                output::json_line(&serde_json::json!({
                    "stream": stream.as_str(),
                    "shards": layout.shards().iter().map(|k| k.as_str().to_string()).collect::<Vec<_>>(),
                }));
            } else {
                match layout.count() {
                    1 => println!("{stream} is sharded 1 way: {}", layout.shard(0)),
                    n => println!(
                        "{stream} is sharded {n} ways: {} … {}",
                        layout.shard(0),
                        layout.shard(n - 1)
                    ),
                }
            }
        }
        ShardAction::Resize { stream, shards } => {
            let redis = global.connect().await?;
            let started = std::time::Instant::now();
            let quiet = global.quiet;
            let done = streamkeeper::shard::resize(&redis, &stream, shards, &mut |line| {
                if !quiet {
                    eprintln!("{line}");
                }
            })
            .await?;
            let took = started.elapsed();
            if global.json {
                output::json_line(&serde_json::json!({
                    "stream": stream.as_str(),
                    "generation": done.to.generation,
                    "shards": done.to.count,
                    "from": { "generation": done.from.generation, "shards": done.from.count },
                    "groups": done.groups.iter().map(|g| g.as_str().to_string()).collect::<Vec<_>>(),
                    "sealed": done.sealed.iter().map(|(k, cut)| serde_json::json!({"shard": k.as_str(), "cut": cut.to_string()})).collect::<Vec<_>>(),
                    "seconds": took.as_secs_f64(),
                }));
            } else if done.from == done.to {
                println!(
                    "{stream} has {} shards (generation {}); {} older shard(s) sealed",
                    done.to.count,
                    done.to.generation,
                    done.sealed.len()
                );
            } else {
                println!(
                    "{stream} resharded {} → {} ways (generation {}) in {:.2} s; {} older shard(s) sealed and draining",
                    done.from.count,
                    done.to.count,
                    done.to.generation,
                    took.as_secs_f64(),
                    done.sealed.len()
                );
            }
        }
        ShardAction::Ls { stream } => {
            let redis = global.connect().await?;
            let Some(layout) = ShardLayout::open(&redis, &stream).await? else {
                anyhow::bail!(
                    "{stream} is not a sharded stream (make one with `streamkeeper shard create {stream} --shards N`)"
                );
            };
            let nodes = redis.cluster_nodes().await?;
            let node_of = |slot: u16| match &nodes {
                Some(nodes) => nodes
                    .iter()
                    .find(|n| n.primary && !n.failed() && n.serves(slot))
                    .map_or_else(|| "?".to_string(), |n| n.addr.clone()),
                None => redis.server_addr(),
            };
            let options = InspectOptions::default();
            let mut table = Table::new();
            table.load_preset(comfy_table::presets::NOTHING);
            // "outstanding" = pending + undelivered (as in `stat`); `group ls`
            // shows Redis's own lag (undelivered) instead.
            table.set_header([
                "shard",
                "gen",
                "state",
                "slot",
                "node",
                "length",
                "group",
                "owner",
                "pending",
                "outstanding",
            ]);
            let current = layout.shards();
            for key in layout.all_shards() {
                let generation = streamkeeper::keys::StreamKeys::parse_shard_of(key.as_str())
                    .map_or(0, |(_, g, _)| g);
                let cut = streamkeeper::shard::sealed_at(&redis, &key).await?;
                let stat = inspect::shard_stat(&redis, &key, &options).await?;
                let slot = key_slot(key.as_str());
                let node = node_of(slot);
                let rows: Vec<(String, String, String)> = if stat.groups.is_empty() {
                    vec![("-".into(), "-".into(), "-".into())]
                } else {
                    stat.groups
                        .iter()
                        .map(|g| {
                            (
                                g.group.clone(),
                                g.pending.to_string(),
                                g.outstanding.to_string(),
                            )
                        })
                        .collect()
                };
                // Sealed shards drain: "drained" once no group has
                // anything left there.
                let state = match cut {
                    None if current.contains(&key) => "live".to_string(),
                    None => "unsealed (re-run the resize)".to_string(),
                    Some(cut) => {
                        let mut left = false;
                        for g in &stat.groups {
                            let name = streamkeeper::GroupName::new(g.group.as_str())?;
                            if !streamkeeper::shard::drained(&redis, &key, &name).await? {
                                left = true;
                            }
                        }
                        format!(
                            "sealed at {cut}, {}",
                            if left { "draining" } else { "drained" }
                        )
                    }
                };
                for (group, pending, lag) in rows {
                    // Ordered mode's lease holder (its member name), if any.
                    let owner = match group.as_str() {
                        "-" => None,
                        g => lease_holder(&redis, &key, g).await?,
                    };
                    if global.json {
                        output::json_line(&serde_json::json!({
                            "stream": stream.as_str(), "shard": key.as_str(), "generation": generation,
                            "state": state, "slot": slot,
                            "node": node, "length": stat.length, "group": group, "owner": owner,
                            "pending": pending.parse::<u64>().ok(), "outstanding": lag.parse::<u64>().ok(),
                        }));
                    } else {
                        table.add_row([
                            key.to_string(),
                            generation.to_string(),
                            state.clone(),
                            slot.to_string(),
                            node.clone(),
                            stat.length.to_string(),
                            group,
                            owner.unwrap_or_else(|| "-".into()),
                            pending,
                            lag,
                        ]);
                    }
                }
            }
            if !global.json {
                println!("{table}");
            }
        }
    }
    Ok(Exit::Ok)
}

/// The member holding `shard`'s ordered-mode lease for `group` (the lease
/// value is `member:epoch`), or `None` when nobody does.
async fn lease_holder(
    redis: &streamkeeper::Connector,
    shard: &streamkeeper::StreamKey,
    group: &str,
) -> anyhow::Result<Option<String>> {
    let key = streamkeeper::keys::StreamKeys::owner(shard, group);
    let mut conn = redis.shared();
    let token: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis(format!("GET {key}"), e))?;
    Ok(token.map(|t| t.rsplit_once(':').map_or(t.clone(), |(m, _)| m.to_string())))
}
