//! `streamkeeper dlq ls|replay|purge`: the dead-letter stream `{S}:dlq`.

use comfy_table::Table;
use streamkeeper::deadletter::DeadLetter;
use streamkeeper::keys::StreamKeys;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{deadletter, StreamId, StreamKey};

use crate::cli::{DlqAction, DlqArgs, Global};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, args: DlqArgs) -> anyhow::Result<Exit> {
    match args.action {
        DlqAction::Ls { stream, count } => {
            let redis = global.connect().await?;
            // A sharded stream: each shard's dead letters, shard by shard.
            let streams = ShardLayout::keys_of(&redis, &stream).await?;
            for stream in streams {
                let dead = deadletter::list(&redis, &stream, count).await?;
                print_dead(global.json, &StreamKeys::dlq(&stream), &dead)?;
            }
        }
        DlqAction::Replay { stream, ids, all } => {
            let redis = global.connect().await?;
            // A sharded stream: each dead letter goes back to its shard.
            let streams = ShardLayout::keys_of(&redis, &stream).await?;
            // (stream, dead letter ID) pairs; every ID is found before the
            // first replay: a missing one writes nothing.
            let mut pairs: Vec<(streamkeeper::StreamKey, StreamId)> = Vec::new();
            let mut conn = redis.shared();
            if all {
                for s in &streams {
                    for e in deadletter::list(&redis, s, usize::MAX >> 1).await? {
                        pairs.push((s.clone(), e.id));
                    }
                }
            } else {
                let mut absent = Vec::new();
                for id in &ids {
                    let mut home = None;
                    for s in &streams {
                        let dlq = StreamKeys::dlq(s);
                        let found: Vec<redis::Value> = redis::cmd("XRANGE")
                            .arg(&dlq)
                            .arg(id)
                            .arg(id)
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| streamkeeper::Error::redis(format!("XRANGE {dlq}"), e))?;
                        if !found.is_empty() {
                            home = Some(s.clone());
                            break;
                        }
                    }
                    match home {
                        Some(s) => pairs.push((s, *id)),
                        None => absent.push(id.to_string()),
                    }
                }
                if !absent.is_empty() {
                    anyhow::bail!(
                        "no dead letter with ID {} in {}; nothing replayed (see `streamkeeper dlq ls {stream}`)",
                        absent.join(", "),
                        StreamKeys::dlq(&stream)
                    );
                }
            }
            let mut missing = Vec::new();
            for (s, id) in pairs {
                // A sealed shard's letters go back by the current layout.
                match streamkeeper::shard::replay_dead_letter(&redis, &s, id).await? {
                    Some((s, new_id)) => {
                        if global.json {
                            output::json_line(&serde_json::json!({
                                "stream": s.as_str(), "dead_id": id.to_string(), "id": new_id.to_string()
                            }));
                        } else {
                            println!("{id} -> {s} {new_id}");
                        }
                    }
                    None => missing.push(id.to_string()),
                }
            }
            // With --all, a dead letter gone meanwhile was replayed or
            // purged by someone else: nothing to say.
            if !missing.is_empty() && !all {
                anyhow::bail!(
                    "no dead letter with ID {} in {} (replayed or purged meanwhile)",
                    missing.join(", "),
                    StreamKeys::dlq(&stream)
                );
            }
        }
        DlqAction::Purge { stream, before } => {
            let redis = global.connect().await?;
            let streams = ShardLayout::keys_of(&redis, &stream).await?;
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
            let d = DeadLetter::from(e);
            let user: Vec<String> = d
                .fields
                .iter()
                .map(|(k, v)| format!("{}={}", output::escaped(k), output::escaped(v)))
                .collect();
            let shown = |v: Option<String>| v.unwrap_or_default();
            t.add_row([
                d.id.to_string(),
                shown(d.origin_id.map(|i| i.to_string())),
                shown(d.group),
                shown(d.attempts.map(|n| n.to_string())),
                shown(d.reason),
                user.join(" "),
            ]);
        }
        println!("{t}");
    }
    Ok(())
}
