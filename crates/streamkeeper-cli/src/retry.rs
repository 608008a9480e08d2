//! `streamkeeper retry ls`: the entries waiting for a delayed retry. They
//! stay pending in their group (held by `sk-retry`), so `stat` counts them
//! as outstanding; this says which they are and when each is due.

use comfy_table::Table;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{group, retry};

use crate::cli::{Global, RetryAction, RetryArgs};
use crate::Exit;

pub async fn run(global: &Global, args: RetryArgs) -> anyhow::Result<Exit> {
    let RetryAction::Ls {
        stream,
        group: only,
        count,
    } = args.action;
    let redis = global.connect().await?;
    let now = retry::now_ms();
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["stream", "group", "id", "due", "attempts", "last error"]);
    let mut rows = 0;
    let keys = ShardLayout::keys_of(&redis, &stream).await?;
    if keys == [stream.clone()] {
        // A missing stream is an error (exit 2), not "nothing waits".
        let look = streamkeeper::inspect::InspectOptions {
            memory: false,
            ..Default::default()
        };
        streamkeeper::inspect::stream_stat(&redis, &stream, &look).await?;
    }
    for key in keys {
        // So is a missing group.
        let all = group::list_groups(&redis, &key).await?;
        let groups = match &only {
            Some(g) if all.iter().any(|x| &x.name == g) => vec![g.clone()],
            Some(g) => {
                return Err(streamkeeper::Error::GroupMissing {
                    stream: key,
                    group: g.clone(),
                }
                .into())
            }
            None => all.into_iter().map(|g| g.name).collect(),
        };
        for g in groups {
            for p in retry::parked(&redis, &key, &g, count).await? {
                rows += 1;
                if global.json {
                    crate::output::json_line(&serde_json::json!({
                        "stream": key.as_str(),
                        "group": g.as_str(),
                        "id": p.id.to_string(),
                        "due_ms": p.due_ms,
                        "attempts": p.attempts,
                        "last_error": p.last_error,
                    }));
                } else {
                    table.add_row([
                        key.to_string(),
                        g.to_string(),
                        p.id.to_string(),
                        due(p.due_ms, now),
                        p.attempts.to_string(),
                        p.last_error.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
    }
    if !global.json {
        if rows == 0 {
            eprintln!("no entry of {stream} waits for a retry");
        } else {
            println!("{table}");
        }
    }
    Ok(Exit::Ok)
}

/// `in 4m 59s`, or `due` once the time has come (a consumer takes it at
/// its next poll; none is running if it stays).
fn due(due_ms: u64, now_ms: u64) -> String {
    match due_ms.checked_sub(now_ms).filter(|d| *d > 0) {
        Some(left) => format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(left.div_ceil(1000)))
        ),
        None => "due".into(),
    }
}
