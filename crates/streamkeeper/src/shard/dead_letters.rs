//! Dead letters of a sharded stream across a resize: a shard a resize
//! sealed takes no appends, so its dead letters are replayed into the
//! current layout's shard at the same index (modulo the count).

use super::layout::ShardLayout;
use crate::conn::Connector;
use crate::error::Result;
use crate::keys::StreamKeys;
use crate::types::{StreamId, StreamKey};

/// Gives dead letter `id` of `stream` (a plain stream or a shard) back to
/// its group, as [`deadletter::replay`](crate::deadletter::replay) does;
/// a letter of a shard a resize sealed is appended anew to
/// [`replay_target`]'s shard, then deleted from the dead-letter stream
/// (two slots, two steps: at least once, never lost). Returns where the
/// entry is now (stream and ID), or `None` when there is no such letter.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector, id: streamkeeper::StreamId) -> streamkeeper::Result<()> {
/// use streamkeeper::{shard, StreamKey};
/// if let Some((stream, id)) = shard::replay_dead_letter(&redis, &StreamKey::new("{orders:0}")?, id).await? {
///     println!("back in {stream} as {id}");
/// }
/// # Ok(()) }
/// ```
pub async fn replay_dead_letter(
    redis: &Connector,
    stream: &StreamKey,
    id: StreamId,
) -> Result<Option<(StreamKey, StreamId)>> {
    let target = replay_target(redis, stream).await?;
    let replayed = if &target == stream {
        crate::deadletter::replay(redis, stream, id).await?
    } else {
        crate::deadletter::replay_into(redis, stream, id, &target).await?
    };
    Ok(replayed.map(|id| (target, id)))
}

/// Where a dead letter of `stream` goes back to: `stream` itself, or for a
/// shard a resize sealed, the current layout's shard at its index (modulo
/// the count).
pub async fn replay_target(redis: &Connector, stream: &StreamKey) -> Result<StreamKey> {
    let Some((logical, _, i)) = StreamKeys::parse_shard_of(stream.as_str()) else {
        return Ok(stream.clone());
    };
    if super::resize::sealed_at(redis, stream).await?.is_none() {
        return Ok(stream.clone());
    }
    Ok(
        match ShardLayout::open(redis, &StreamKey::new(logical)?).await? {
            Some(layout) => layout.shard(i % layout.count()),
            None => stream.clone(),
        },
    )
}
