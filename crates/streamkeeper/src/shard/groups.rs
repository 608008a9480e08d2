//! Group commands on a logical stream: a plain stream, or every shard of
//! a sharded one (the group must exist on each shard, or reading one
//! shard fails). Every key is checked first, so nothing is half done.

use super::layout::ShardLayout;
use crate::conn::Connector;
use crate::error::Result;
use crate::group;
use crate::types::{GroupName, StartFrom, StreamKey};

/// What a group command on a logical stream did: on how many stream keys
/// (1 for a plain stream, every shard of a sharded one) and on how many of
/// them it changed something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnEveryKey {
    /// The stream is sharded (its keys are its shards).
    pub sharded: bool,
    /// Stream keys acted on.
    pub keys: u32,
    /// Keys where something changed (a group created, or destroyed).
    pub changed: u32,
}

/// [`create_group`](crate::group::create_group) on every key of `stream`: its shards when it is a
/// sharded stream. Every key is checked first (a key of another type
/// writes nothing), so the group never ends up on some shards only.
///
/// ```no_run
/// # async fn f(redis: &streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use streamkeeper::{shard::groups, GroupName, StartFrom, StreamKey};
/// let done = groups::create_on_every_key(
///     redis, &StreamKey::new("orders")?, &GroupName::new("billing")?, StartFrom::Beginning,
/// ).await?;
/// println!("created on {} of {} keys", done.changed, done.keys);
/// # Ok(()) }
/// ```
pub async fn create_on_every_key(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    from: StartFrom,
) -> Result<OnEveryKey> {
    let (keys, mut done) = every_key(connector, stream).await?;
    for key in &keys {
        done.changed += u32::from(group::create_group(connector, key, group, from).await?);
    }
    Ok(done)
}

/// [`destroy_group`](crate::group::destroy_group) on every key of `stream` (its shards when sharded),
/// after checking every key is a stream.
pub async fn destroy_on_every_key(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
) -> Result<OnEveryKey> {
    let (keys, mut done) = every_key(connector, stream).await?;
    for key in &keys {
        done.changed += u32::from(group::destroy_group(connector, key, group).await?);
    }
    Ok(done)
}

/// The keys of a logical stream, each checked to be a stream (or absent),
/// and a tally with nothing changed yet.
async fn every_key(
    connector: &Connector,
    stream: &StreamKey,
) -> Result<(Vec<StreamKey>, OnEveryKey)> {
    let keys = match ShardLayout::open(connector, stream).await? {
        Some(layout) => {
            let shards = layout.all_shards();
            crate::inspect::check_streams(connector, &shards).await?;
            shards
        }
        None => vec![stream.clone()],
    };
    let done = OnEveryKey {
        sharded: keys.len() > 1 || keys[0] != *stream,
        keys: keys.len() as u32,
        changed: 0,
    };
    Ok((keys, done))
}
