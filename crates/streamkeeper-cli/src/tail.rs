//! `streamkeeper tail`: print entries with XREAD, optionally following.

use std::time::Duration;

use streamkeeper::shard::{MergedFollow, MergedReader, ShardLayout};
use streamkeeper::{reader, Connector, Reader, StartFrom, StreamId};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, TailArgs};
use crate::output;
use crate::signal;
use crate::Exit;

pub async fn run(global: &Global, args: TailArgs) -> anyhow::Result<Exit> {
    let stream = args.stream.clone();
    // --from ID is inclusive: start after the ID just before it.
    let from = args.from.map(|f| match f {
        StartFrom::After(id) => StartFrom::After(id.prev()),
        other => other,
    });
    let redis = global.connect().await?;
    let stop = CancellationToken::new();
    let interrupted = signal::cancel_on_signal(stop.clone());
    output::cancel_when_stdout_closes(stop.clone());
    // A sharded stream has no key of its own (XREAD on its name would find
    // nothing, which looks like an empty stream): its shards merged.
    if let Some(layout) = ShardLayout::open(&redis, &stream).await? {
        sharded(global, &args, from, &redis, layout, &stop).await?;
        return Ok(if interrupted.get() {
            Exit::Interrupted
        } else {
            Exit::Ok
        });
    }
    let name = stream.as_str().to_string();

    let mut reader = match from {
        Some(from) => Reader::new(&redis, stream.clone(), from).await?,
        None => {
            // Like tail(1): the last N entries, then (with --follow) what
            // comes next. The start is found by paging backwards and the
            // entries are printed page by page: memory stays bounded for
            // any --count.
            let n = args.count.unwrap_or(10) as u64;
            let after = match reader::last_span(&redis, &stream, n).await? {
                None => StartFrom::End,
                Some((first, last)) => {
                    let mut pages =
                        Reader::new(&redis, stream.clone(), StartFrom::After(first.prev())).await?;
                    'pages: loop {
                        let page = tokio::select! {
                            _ = stop.cancelled() => break 'pages,
                            p = pages.next_page() => p?,
                        };
                        if page.is_empty() {
                            break;
                        }
                        for e in &page {
                            if e.id > last {
                                break 'pages;
                            }
                            output::entry(global.json, &name, e)?;
                        }
                    }
                    StartFrom::After(last)
                }
            };
            if !args.follow || stop.is_cancelled() {
                return Ok(if interrupted.get() {
                    Exit::Interrupted
                } else {
                    Exit::Ok
                });
            }
            Reader::new(&redis, stream.clone(), after).await?
        }
    };
    let mut left = if args.from.is_some() && !args.follow {
        args.count
    } else {
        None
    };
    if args.follow {
        reader = reader.follow(Duration::from_secs(5));
    }
    loop {
        let page = tokio::select! {
            _ = stop.cancelled() => break,
            p = reader.next_page() => p?,
        };
        if page.is_empty() && !args.follow {
            break;
        }
        for e in &page {
            if left == Some(0) {
                break;
            }
            output::entry(global.json, &name, e)?;
            left = left.map(|l| l - 1);
        }
        if left == Some(0) && !args.follow {
            break;
        }
    }
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}

/// `tail` of a sharded stream: its shards merged in ID order
/// ([`MergedReader`], then with `--follow` [`MergedFollow`]), each line
/// naming its shard. `from` is the exclusive start (as for one stream).
///
/// [`MergedFollow`]: streamkeeper::shard::MergedFollow
async fn sharded(
    global: &Global,
    args: &TailArgs,
    from: Option<StartFrom>,
    redis: &Connector,
    layout: ShardLayout,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let shards = layout.all_shards();
    let (mut merged, mut left) = match from.map(|f| f.last_before()) {
        None => {
            let n = args.count.unwrap_or(10) as u64;
            (MergedReader::last(redis, shards, n).await?, None)
        }
        // `$`: nothing old; follow from each shard's newest entry.
        Some(None) => (MergedReader::last(redis, shards, 0).await?, None),
        Some(Some(after)) => {
            let left = if args.follow { None } else { args.count };
            let merged = MergedReader::range(redis, shards, after.next(), StreamId::MAX).await?;
            (merged, left)
        }
    };
    while left != Some(0) {
        let next = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            e = merged.next() => e?,
        };
        let Some(e) = next else {
            break;
        };
        output::shard_entry(global.json, &e)?;
        left = left.map(|l| l - 1);
    }
    if !args.follow {
        return Ok(());
    }
    // Each shard's position: where a follower rebuilt after a resize
    // (new shards to read) goes on from, nothing twice or skipped.
    let mut positions = merged.ends();
    let block = Duration::from_secs(1);
    let mut follow = MergedFollow::new(redis, positions.clone(), block);
    let mut looked = std::time::Instant::now();
    loop {
        let batch = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            b = follow.next_batch() => b?,
        };
        for e in &batch {
            output::shard_entry(global.json, e)?;
            if let Some(p) = positions.iter_mut().find(|(k, _)| *k == e.shard) {
                p.1 = e.entry.id;
            }
        }
        // Follow a resize: the shards of a new generation, from their start.
        if looked.elapsed() >= block {
            looked = std::time::Instant::now();
            if let Ok(Some(now)) = ShardLayout::open(redis, layout.stream()).await {
                let new: Vec<_> = now
                    .all_shards()
                    .into_iter()
                    .filter(|k| !positions.iter().any(|(p, _)| p == k))
                    .collect();
                if !new.is_empty() {
                    tracing::info!(stream = %layout.stream(), shards = new.len(), "the stream was resharded; following its new shards");
                    positions.extend(new.into_iter().map(|k| (k, StreamId::new(0, 0))));
                    follow = MergedFollow::new(redis, positions.clone(), block);
                }
            }
        }
    }
}
