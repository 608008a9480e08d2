//! Resharding online (docs/design.md §6 "Resharding"): [`resize`] starts a
//! new layout generation with another shard count and seals the shards of
//! the older ones; [`drained`] says when a group is done with a sealed
//! shard, which is when ordered mode hands out the next generation.
//!
//! The steps, each safe to run again (an interrupted resize is completed
//! by running it again):
//!
//! 1. Every group of the live shards is created on the new generation's
//!    shards (from the start: they are empty), so a consumer that follows
//!    the resize finds its group there.
//! 2. The layout flips (one script on `{S}:shards`, refused if it changed
//!    since it was read): appends go to the new generation from now on.
//! 3. Every shard of an older generation is sealed (`lua/shard_seal.lua`):
//!    its cut is recorded in `{S:i}:sealed` and its last ID set to the
//!    largest there is, so an append routed by the old layout is refused
//!    in the shard's own slot; the producer re-reads the layout and
//!    re-routes. Entries appended before the seal are before the cut, and
//!    are read by the groups like any other.
//!
//! Flipping before sealing keeps producers going: a producer still routing
//! by the old layout writes to the old shard until it is sealed, then is
//! refused once and follows; one that read the new layout writes there at
//! once. Its entries to an old shard all come before the cut, so a
//! consumer that handles the old generation first sees each producer's
//! entries of a key in send order.

use super::layout::{format_gens, Generation, ShardLayout, MAX_SHARDS};
use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::keys::StreamKeys;
use crate::types::{GroupName, StartFrom, StreamId, StreamKey};

/// What [`resize`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resized {
    /// The generation appends went to before.
    pub from: Generation,
    /// The generation appends go to now (`from` when the count was
    /// already the one asked for: then only unfinished seals were done).
    pub to: Generation,
    /// The groups created on the new generation's shards.
    pub groups: Vec<GroupName>,
    /// Every sealed shard of an older generation and its cut: the last ID
    /// appended to it.
    pub sealed: Vec<(StreamKey, StreamId)>,
}

/// Changes `stream`'s shard count to `count` while producers and
/// consumers run: a new layout generation, the older ones' shards sealed
/// (module doc). Says what it does through `progress`, one line a step.
/// Running it again after an interruption completes it; running it with
/// the count already in force seals what an interrupted run left
/// unsealed and changes nothing else.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use streamkeeper::{shard, StreamKey};
/// let done = shard::resize(&redis, &StreamKey::new("orders")?, 8, &mut |line| eprintln!("{line}")).await?;
/// println!("generation {} has {} shards", done.to.generation, done.to.count);
/// # Ok(()) }
/// ```
pub async fn resize(
    redis: &Connector,
    stream: &StreamKey,
    count: u32,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Resized> {
    if count == 0 || count > MAX_SHARDS {
        return Err(Error::InvalidInput(format!(
            "a sharded stream has 1 to {MAX_SHARDS} shards, not {count}"
        )));
    }
    let Some(layout) = ShardLayout::open(redis, stream).await? else {
        let mut conn = redis.shared();
        let plain: bool = redis::cmd("EXISTS")
            .arg(stream.as_str())
            .query_async(&mut conn)
            .await
            .unwrap_or(false);
        return Err(Error::InvalidInput(if plain {
            format!(
                "{stream} is a plain stream, not a sharded one: only a sharded stream is resized (to spread a plain stream's entries, dump it, make a new sharded stream with `streamkeeper shard create NEW --shards {count}` and restore into it)"
            )
        } else {
            format!(
                "{stream} is not a sharded stream: make one with `streamkeeper shard create {stream} --shards {count}`"
            )
        }));
    };
    crate::inspect::check_streams(redis, &layout.all_shards()).await?;
    let from = layout.current();
    let mut groups = Vec::new();
    let layout = if from.count == count {
        progress(&format!(
            "{stream} has {count} shards (generation {}); completing what an earlier resize left",
            from.generation
        ));
        layout
    } else {
        let to = Generation {
            generation: from.generation + 1,
            count,
        };
        let new_shards = to.shards(stream);
        crate::inspect::check_streams(redis, &new_shards).await?;
        // An earlier, interrupted run to another count may have left
        // empty shards beyond this count: they would read as a layout
        // lowered by hand.
        drop_empty_beyond(redis, stream, to).await?;
        groups = copy_groups(redis, &layout.all_shards(), &new_shards).await?;
        progress(&format!(
            "created {} group(s) on the {count} shards of generation {}",
            groups.len(),
            to.generation
        ));
        let before = format_gens(&layout.generations());
        let mut gens = layout.generations();
        gens.push(to);
        if let Err(e) = flip(redis, stream, &before, &format_gens(&gens), count).await {
            // Another resize won the race: the shards this one made beyond
            // the winner's count of the same generation are nobody's.
            if let Ok(Some(won)) = ShardLayout::open(redis, stream).await {
                if won.generation() == to.generation {
                    let _ = drop_empty_beyond(redis, stream, won.current()).await;
                }
            }
            return Err(e);
        }
        progress(&format!(
            "generation {}: {count} shards ({} … {}); appends go there now",
            to.generation,
            StreamKeys::shard_of(stream, to.generation, 0),
            StreamKeys::shard_of(stream, to.generation, count - 1)
        ));
        let layout = ShardLayout::open(redis, stream)
            .await?
            .ok_or_else(|| Error::InvalidInput(format!("{stream}: its layout was deleted")))?;
        // Groups created on the old shards while this ran.
        for g in copy_groups(redis, &layout.all_shards(), &new_shards).await? {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        layout
    };
    let older: Vec<StreamKey> = layout
        .older()
        .iter()
        .flat_map(|g| g.shards(stream))
        .collect();
    let mut sealed = Vec::with_capacity(older.len());
    for (n, shard) in older.iter().enumerate() {
        let cut = seal(redis, shard).await?;
        progress(&format!(
            "sealed {shard} at {cut} ({}/{})",
            n + 1,
            older.len()
        ));
        sealed.push((shard.clone(), cut));
    }
    Ok(Resized {
        from,
        to: layout.current(),
        groups,
        sealed,
    })
}

/// Seals `shard` (see the module doc); returns its cut.
pub(crate) async fn seal(redis: &Connector, shard: &StreamKey) -> Result<StreamId> {
    let mut conn = redis.shared();
    let cut: redis::RedisResult<String> = crate::scripts::SHARD_SEAL
        .key(shard.as_str())
        .key(StreamKeys::sealed(shard))
        .invoke_async(&mut conn)
        .await;
    let cut = cut.map_err(|e| match crate::error::error_code(&e).as_deref() {
        Some("SKTYPE") => Error::InvalidInput(format!(
            "{shard} is a {} key, not a stream: it cannot be a shard; rename it and run the resize again",
            e.detail().unwrap_or("other").trim()
        )),
        _ => Error::redis(format!("sealing {shard}"), e),
    })?;
    cut.parse().map_err(|_| Error::Protocol {
        command: "EVALSHA",
        detail: format!("the seal of {shard} answered {cut:?}, not an ID"),
    })
}

/// The cut of `shard` if a resize sealed it.
///
/// A user granted stream commands only (docs/design.md §6 "Least
/// privilege") may not `GET` the seal record: then the shard itself says
/// it is sealed (its last ID is the largest there is), and the cut is its
/// last entry (`0-0` when empty).
pub async fn sealed_at(redis: &Connector, shard: &StreamKey) -> Result<Option<StreamId>> {
    let mut conn = redis.shared();
    let key = StreamKeys::sealed(shard);
    let cut: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg(&key).query_async(&mut conn).await;
    match cut {
        Ok(cut) => Ok(cut.and_then(|c| c.parse().ok())),
        Err(e) if crate::error::is_noperm(&e) => sealed_by_its_last_id(redis, shard).await,
        Err(e) => Err(Error::redis(format!("GET {key}"), e)),
    }
}

/// [`sealed_at`] from the stream alone (`XINFO STREAM`).
async fn sealed_by_its_last_id(redis: &Connector, shard: &StreamKey) -> Result<Option<StreamId>> {
    let mut conn = redis.shared();
    let info: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(shard.as_str())
        .query_async(&mut conn)
        .await;
    let info = match info {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(Error::redis(format!("XINFO STREAM {shard}"), e)),
    };
    let pairs: Vec<(redis::Value, redis::Value)> = match info {
        redis::Value::Map(m) => m,
        redis::Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| Some((p.first()?.clone(), p.get(1)?.clone())))
            .collect(),
        _ => Vec::new(),
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| crate::reply::text(k) == name)
            .map(|(_, v)| v.clone())
    };
    let sealed = field("last-generated-id")
        .and_then(|v| crate::reply::text(&v).parse::<StreamId>().ok())
        == Some(StreamId::MAX);
    if !sealed {
        return Ok(None);
    }
    let last = match field("last-entry") {
        Some(redis::Value::Array(e)) => {
            e.first().and_then(|id| crate::reply::text(id).parse().ok())
        }
        _ => None,
    };
    Ok(Some(last.unwrap_or(StreamId::new(0, 0))))
}

/// Whether `group` is done with `shard`: the shard is sealed, nothing
/// after the group's last delivered entry is left to read, and nothing is
/// pending (parked retries included). A group the shard does not have has
/// nothing to do there. Once true it stays true (nothing can be appended
/// to a sealed shard), short of a `group reset`.
pub async fn drained(redis: &Connector, shard: &StreamKey, group: &GroupName) -> Result<bool> {
    if sealed_at(redis, shard).await?.is_none() {
        return Ok(false);
    }
    let groups = crate::group::list_groups(redis, shard).await?;
    let Some(info) = groups.into_iter().find(|g| &g.name == group) else {
        return Ok(true);
    };
    if info.pending > 0 {
        return Ok(false);
    }
    let mut conn = redis.shared();
    let after: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(shard.as_str())
        .arg(format!("({}", info.last_delivered))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("XRANGE {shard}"), e))?;
    Ok(after.is_empty())
}

pub(crate) async fn flip(
    redis: &Connector,
    stream: &StreamKey,
    before: &str,
    after: &str,
    count: u32,
) -> Result<()> {
    let mut conn = redis.shared();
    let r: redis::RedisResult<i64> = crate::scripts::SHARD_FLIP
        .key(StreamKeys::shards(stream))
        .arg(before)
        .arg(after)
        .arg(count)
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(match crate::error::error_code(&e).as_deref() {
            Some("SKSTALE") => Error::InvalidInput(format!(
                "the layout of {stream} changed while resizing (another resize at the same time?): run the resize again"
            )),
            Some("SKNOLAYOUT") => Error::InvalidInput(format!(
                "{stream}: its layout was deleted while resizing"
            )),
            _ => Error::redis(format!("changing the layout of {stream}"), e),
        }),
    }
}

/// Creates every group found on `from` on each of `to`, from the start;
/// returns the groups' names.
async fn copy_groups(
    redis: &Connector,
    from: &[StreamKey],
    to: &[StreamKey],
) -> Result<Vec<GroupName>> {
    let mut names: Vec<GroupName> = Vec::new();
    for key in from {
        for g in crate::group::list_groups(redis, key).await? {
            if !names.contains(&g.name) {
                names.push(g.name);
            }
        }
    }
    for key in to {
        for g in &names {
            crate::group::create_group(redis, key, g, StartFrom::Beginning).await?;
        }
    }
    Ok(names)
}

/// Deletes the empty shards of `generation` numbered `count` and up that
/// an interrupted resize to a larger count made (nothing was appended to
/// them: the layout never pointed there).
async fn drop_empty_beyond(redis: &Connector, stream: &StreamKey, to: Generation) -> Result<()> {
    let mut conn = redis.shared();
    for i in to.count..MAX_SHARDS {
        let key = StreamKeys::shard_of(stream, to.generation, i);
        let len: redis::RedisResult<u64> = redis::cmd("XLEN")
            .arg(key.as_str())
            .query_async(&mut conn)
            .await;
        let exists: bool = redis::cmd("EXISTS")
            .arg(key.as_str())
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("EXISTS {key}"), e))?;
        if !exists {
            return Ok(());
        }
        match len {
            Ok(0) => {
                let _: () = redis::cmd("DEL")
                    .arg(key.as_str())
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis(format!("DEL {key}"), e))?;
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "{key} exists and is not an empty stream, but generation {} of {stream} will have {} shards: move or delete it, then run the resize again",
                    to.generation, to.count
                )))
            }
        }
    }
    Ok(())
}
