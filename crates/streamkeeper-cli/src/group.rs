//! `streamkeeper group create|destroy|ls`.

use anyhow::Context;
use comfy_table::Table;
use streamkeeper::{group, GroupName, StartFrom};

use crate::cli::{stream_key, Global, GroupAction, GroupArgs};
use crate::output;
use crate::Exit;

pub async fn run(global: &Global, args: GroupArgs) -> anyhow::Result<Exit> {
    match args.action {
        GroupAction::Create {
            stream,
            group: g,
            from,
        } => {
            let stream = stream_key(&stream)?;
            let g = GroupName::new(g).context("invalid group name")?;
            let from: StartFrom = from.parse().context("invalid --from")?;
            let redis = global.connect().await?;
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
            let stream = stream_key(&stream)?;
            let g = GroupName::new(g).context("invalid group name")?;
            let redis = global.connect().await?;
            let destroyed = group::destroy_group(&redis, &stream, &g).await?;
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
            let stream = stream_key(&stream)?;
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
                        g.name.clone(),
                        g.consumers.to_string(),
                        g.pending.to_string(),
                        g.last_delivered.clone(),
                        g.lag.map_or("unknown".into(), |l| l.to_string()),
                    ]);
                }
                println!("{t}");
            }
        }
    }
    Ok(Exit::Ok)
}
