//! `streamkeeper dlq ls|replay|purge`: the dead-letter stream `{S}:dlq`.

use anyhow::Context;
use comfy_table::Table;
use streamkeeper::keys::StreamKeys;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{deadletter, StartFrom, StreamId, StreamKey};

use crate::cli::{DlqAction, DlqArgs, Global};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, args: DlqArgs) -> anyhow::Result<Exit> {
    match args.action {
        DlqAction::Ls { stream, count } => {
            let redis = global.connect().await?;
            // A sharded stream: each shard's dead letters, shard by shard.
            let streams = match ShardLayout::open(&redis, &stream).await? {
                Some(layout) => layout.shards(),
                None => vec![stream],
            };
            for stream in streams {
                let dead = deadletter::list(&redis, &stream, count).await?;
                print_dead(global.json, &StreamKeys::dlq(&stream), &dead)?;
            }
        }
        DlqAction::Replay { stream, ids, all } => {
            let ids: Vec<StreamId> = ids
                .iter()
                .map(|i| i.parse::<StreamId>().with_context(|| "invalid --id"))
                .collect::<anyhow::Result<_>>()?;
            let redis = global.connect().await?;
            if let Some(layout) = ShardLayout::open(&redis, &stream).await? {
                anyhow::bail!(
                    "{stream} is sharded: replay each shard's dead letters, e.g. `streamkeeper dlq replay '{}' --all` (see `streamkeeper dlq ls {stream}`)",
                    layout.shard(0)
                );
            }
            let ids = if all {
                deadletter::list(&redis, &stream, usize::MAX >> 1)
                    .await?
                    .into_iter()
                    .map(|e| e.id)
                    .collect()
            } else {
                ids
            };
            // Every ID is checked before the first replay: a missing one
            // writes nothing.
            let dlq = StreamKeys::dlq(&stream);
            let mut conn = redis.shared();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("XRANGE").arg(&dlq).arg(id).arg(id);
            }
            let found: Vec<Vec<redis::Value>> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| streamkeeper::Error::redis(format!("XRANGE {dlq}"), e))?;
            let absent: Vec<String> = ids
                .iter()
                .zip(&found)
                .filter(|(_, f)| f.is_empty())
                .map(|(id, _)| id.to_string())
                .collect();
            if !absent.is_empty() {
                anyhow::bail!(
                    "no dead letter with ID {} in {dlq}; nothing replayed (see `streamkeeper dlq ls {stream}`)",
                    absent.join(", ")
                );
            }
            let mut missing = Vec::new();
            for id in ids {
                match deadletter::replay(&redis, &stream, id).await? {
                    Some(new_id) => {
                        if global.json {
                            output::json_line(
                                &serde_json::json!({"dead_id": id.to_string(), "id": new_id.to_string()}),
                            );
                        } else {
                            println!("{id} -> {stream} {new_id}");
                        }
                    }
                    None => missing.push(id.to_string()),
                }
            }
            if !missing.is_empty() {
                anyhow::bail!(
                    "no dead letter with ID {} in {}",
                    missing.join(", "),
                    StreamKeys::dlq(&stream)
                );
            }
        }
        DlqAction::Purge { stream, before } => {
            let before = before.map(|b| match b {
                StartFrom::After(id) => id,
                StartFrom::Time(t) => StreamId::from_time(t),
                StartFrom::End => StreamId::MAX,
                StartFrom::Beginning => StreamId::MIN,
            });
            let redis = global.connect().await?;
            let streams = match ShardLayout::open(&redis, &stream).await? {
                Some(layout) => layout.shards(),
                None => vec![stream],
            };
            for stream in &streams {
                let dlq = StreamKey::new(StreamKeys::dlq(stream))?;
                crate::append::check_is_stream(&redis, &dlq).await?;
            }
            for stream in streams {
                let n = deadletter::purge(&redis, &stream, before).await?;
                if global.json {
                    output::json_line(&serde_json::json!({"stream": stream.as_str(), "purged": n}));
                } else {
                    println!("purged {n} dead letters of {stream}");
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// Prints the dead letters of one dead-letter stream.
fn print_dead(json: bool, dlq: &str, dead: &[streamkeeper::Entry]) -> anyhow::Result<()> {
    if json {
        for e in dead {
            output::entry(true, dlq, e)?;
        }
    } else if dead.is_empty() {
        println!("no dead letters in {dlq}");
    } else {
        let mut t = Table::new();
        t.load_preset(comfy_table::presets::NOTHING);
        t.set_header(["id", "origin id", "group", "deliveries", "reason", "fields"]);
        for e in dead {
            let user: Vec<String> = e
                .fields
                .iter()
                .filter(|(k, _)| !k.starts_with(b"sk-"))
                .map(|(k, v)| format!("{}={}", output::escaped(k), output::escaped(v)))
                .collect();
            t.add_row([
                e.id.to_string(),
                e.get_str("sk-origin-id").unwrap_or("").to_string(),
                e.get_str("sk-group").unwrap_or("").to_string(),
                e.get_str("sk-deliveries").unwrap_or("").to_string(),
                e.get_str("sk-reason").unwrap_or("").to_string(),
                user.join(" "),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
