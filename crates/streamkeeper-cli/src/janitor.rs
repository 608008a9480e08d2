//! `streamkeeper janitor`: ack-aware trimming, once or on an interval,
//! one janitor per stream (lease).

use std::time::Duration;

use streamkeeper::janitor::{self, JanitorOptions, TrimReport};
use streamkeeper::lease::Lease;
use streamkeeper::shard::ShardLayout;
use streamkeeper::StreamKey;
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, JanitorArgs};
use crate::output;
use crate::signal;
use crate::Exit;

fn report(json: bool, r: &TrimReport, dry_run: bool) {
    if json {
        let mut v = serde_json::to_value(r).unwrap_or_default();
        v["dry_run"] = dry_run.into();
        output::json_line(&v);
    } else {
        let verb = if dry_run { "would trim" } else { "trimmed" };
        // Names on one line: control characters and odd bytes escaped.
        let held_by = r.held_by.as_deref().map(|g| output::escaped(g.as_bytes()));
        let to = match (r.trim_to, &held_by) {
            (None, _) => "no group: nothing is ack-trimmed".to_string(),
            (Some(t), Some(g)) if r.held_by_pending => {
                format!("trim point {t}, held by group {g}: its oldest pending entry")
            }
            (Some(t), Some(g)) => {
                format!("trim point {t}, held by group {g}: entries it has not read yet")
            }
            (Some(t), None) => format!("trim point {t}"),
        };
        let mut line = format!(
            "{}: {verb} {} ({to})",
            output::escaped(r.stream.as_str().as_bytes()),
            r.trimmed
        );
        if r.dropped_unacked > 0 {
            line.push_str(&format!(
                "; {} unacknowledged entries archived and dropped by a cap",
                r.dropped_unacked
            ));
        }
        println!("{line}");
    }
}

/// The sharded streams the keys to clean belong to, each once: after
/// trimming, the janitor retires their drained generations (a resize's
/// sealed shards every group is done with).
fn sharded_streams(keys: &[StreamKey]) -> Vec<StreamKey> {
    let mut out: Vec<StreamKey> = Vec::new();
    for k in keys {
        if let Some((s, _, _)) = streamkeeper::keys::StreamKeys::parse_shard_of(k.as_str()) {
            if let Ok(s) = StreamKey::new(s) {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    out
}

fn report_retired(
    json: bool,
    stream: &StreamKey,
    g: streamkeeper::shard::Generation,
    dry_run: bool,
) {
    if json {
        output::json_line(&serde_json::json!({
            "stream": stream.as_str(), "retired_generation": g.generation,
            "shards": g.count, "dry_run": dry_run,
        }));
    } else {
        let verb = if dry_run { "would retire" } else { "retired" };
        println!(
            "{}: {verb} generation {} ({} sealed shards every group drained)",
            output::escaped(stream.as_str().as_bytes()),
            g.generation,
            g.count
        );
    }
}

/// The keys to clean this run: the named streams (a sharded stream shard
/// by shard: each has its own groups' trim point and its own lease), or
/// with `--all` every stream that has a consumer group now.
async fn targets(
    redis: &streamkeeper::Connector,
    args: &JanitorArgs,
) -> anyhow::Result<Vec<StreamKey>> {
    let mut keys = Vec::new();
    if args.all {
        for s in streamkeeper::inspect::list_streams(redis).await? {
            if !streamkeeper::group::list_groups(redis, &s)
                .await?
                .is_empty()
            {
                keys.push(s);
            }
        }
    } else {
        for s in &args.streams {
            keys.extend(ShardLayout::keys_of(redis, s).await?);
        }
    }
    Ok(keys)
}

pub async fn run(global: &Global, args: JanitorArgs) -> anyhow::Result<Exit> {
    let archive = args.archive.clone();
    if (args.max_len.is_some() || args.max_age.is_some()) && archive.is_none() {
        anyhow::bail!("--max-len/--max-age need --archive FILE|stream:KEY: unacknowledged entries are archived before a cap drops them");
    }
    let options = JanitorOptions {
        dry_run: args.dry_run,
        max_len: args.max_len,
        max_age: args.max_age,
        archive,
    };
    let redis = global.connect().await?;
    let me = streamkeeper::ConsumerName::unique();
    // The lease outlives a few missed renewals but not a dead janitor for long.
    let ttl = (args.interval * 3).max(Duration::from_secs(5));
    let mut streams: Vec<StreamKey> = Vec::new();
    let mut leases: Vec<Lease> = Vec::new();
    let stop = CancellationToken::new();
    let interrupted = signal::cancel_on_signal(stop.clone());
    let result: anyhow::Result<()> = async {
        loop {
            let now = targets(&redis, &args).await?;
            if now != streams {
                for lease in &leases {
                    // Streams gone from the list hand their lease on.
                    let kept = now
                        .iter()
                        .any(|s| streamkeeper::keys::StreamKeys::janitor_lease(s) == lease.key());
                    if !kept {
                        let _ = lease.release().await;
                    }
                }
                streams = now;
                leases = streams
                    .iter()
                    .map(|s| janitor::lease(&redis, s, &me, ttl))
                    .collect();
            }
            for (s, lease) in streams.iter().zip(&leases) {
                if !options.dry_run && !lease.acquire().await? {
                    tracing::info!(stream = %s, "another janitor holds the lease; standing by");
                    continue;
                }
                let r = janitor::run_once(&redis, s, &options).await?;
                report(global.json, &r, options.dry_run);
            }
            for s in sharded_streams(&streams) {
                let gone = streamkeeper::shard::retire_drained(&redis, &s, options.dry_run).await?;
                for g in gone {
                    report_retired(global.json, &s, g, options.dry_run);
                }
            }
            if args.once || args.dry_run {
                return Ok(());
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(args.interval) => {}
            }
        }
    }
    .await;
    // Released on every way out, a failed run too: otherwise the next
    // janitor would stand by for the lease's whole TTL.
    if !options.dry_run {
        for lease in &leases {
            let _ = lease.release().await;
        }
    }
    result?;
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}
