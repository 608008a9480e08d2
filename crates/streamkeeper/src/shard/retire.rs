//! Retiring the generations a resize left behind once they served their
//! purpose (docs/design.md §6 "Resharding"; run by the janitor): the
//! oldest sealed generations every group [`drained`](super::drained),
//! whose dead-letter streams are empty, leave the layout; their shards
//! are emptied and lose their groups but stay, sealed (a tombstone of a
//! few hundred bytes), so that a producer still routing by an old layout
//! is refused and follows instead of writing where nobody reads.

use super::layout::{format_gens, Generation, ShardLayout};
use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::keys::StreamKeys;
use crate::types::StreamKey;

/// Retires `stream`'s oldest generations that are done with: every shard
/// sealed, drained by every group, its dead-letter stream empty (dead
/// letters are never deleted with a generation; replay or purge them
/// first). The generations leave the layout first (consumers stop reading
/// a shard the layout no longer lists), then their shards are emptied,
/// their groups destroyed (with their parked retries) and their leases
/// deleted; the empty sealed shard stays. With `dry_run`, only says which
/// would go. Returns them, oldest first.
pub async fn retire_drained(
    redis: &Connector,
    stream: &StreamKey,
    dry_run: bool,
) -> Result<Vec<Generation>> {
    let Some(layout) = ShardLayout::open(redis, stream).await? else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    let mut groups = Vec::new();
    'gens: for generation in layout.older() {
        for shard in generation.shards(stream) {
            if super::resize::sealed_at(redis, &shard).await?.is_none() {
                break 'gens;
            }
            let here = crate::group::list_groups(redis, &shard).await?;
            for g in &here {
                if !super::resize::drained(redis, &shard, &g.name).await? {
                    break 'gens;
                }
            }
            if dead_letters(redis, &shard).await? > 0 {
                break 'gens;
            }
            groups.extend(here.into_iter().map(|g| g.name));
        }
        done.push(*generation);
    }
    if done.is_empty() || dry_run {
        return Ok(done);
    }
    let before = format_gens(&layout.generations());
    let kept: Vec<Generation> = layout
        .generations()
        .into_iter()
        .filter(|g| !done.contains(g))
        .collect();
    super::resize::flip(redis, stream, &before, &format_gens(&kept), layout.count()).await?;
    let mut conn = redis.shared();
    for generation in &done {
        for shard in generation.shards(stream) {
            // The shard key stays, empty and sealed: deleted, a producer
            // still routing by an old layout would create it anew and
            // write where nobody reads. Its groups and their keys go.
            let _: u64 = redis::cmd("XTRIM")
                .arg(shard.as_str())
                .arg("MAXLEN")
                .arg(0)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis(format!("XTRIM {shard}"), e))?;
            for g in &groups {
                crate::group::destroy_group(redis, &shard, g).await?;
            }
            let mut keys = vec![StreamKeys::dlq(&shard)];
            for g in &groups {
                keys.push(StreamKeys::owner(&shard, g.as_str()));
                keys.push(StreamKeys::epoch(&shard, g.as_str()));
            }
            // One key a command: a least-privilege user may lack
            // multi-key DEL.
            for key in keys {
                let _: () = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| Error::redis(format!("DEL {key}"), e))?;
            }
        }
        tracing::info!(%stream, generation = generation.generation, shards = generation.count,
            "retired a drained generation of shards");
    }
    Ok(done)
}

/// Entries in `shard`'s dead-letter stream (0 when it has none).
async fn dead_letters(redis: &Connector, shard: &StreamKey) -> Result<u64> {
    let key = StreamKeys::dlq(shard);
    let mut conn = redis.shared();
    redis::cmd("XLEN")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("XLEN {key}"), e))
}
