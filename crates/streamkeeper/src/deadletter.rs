//! The dead-letter queue: entries that failed too often, or that a handler
//! gave up on, move to `{S}:dlq` with `sk-*` metadata (DESIGN.md §5).
//!
//! The move and the ack happen in one script, so an entry is never both
//! pending and dead, nor lost between the two.

use redis::Value;

use crate::conn::Connector;
use crate::error::Result;
use crate::explain;
use crate::scripts;
use crate::types::{GroupName, StreamId, StreamKey};

/// Moves the pending entry `id` of `group` to the dead-letter stream and
/// acks it; `attempts` (handler runs so far) is kept as `sk-deliveries`.
/// Returns the dead letter's ID, or `None` if the entry was no
/// longer pending (acked or moved by someone else meanwhile).
pub async fn dead_letter(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    id: StreamId,
    attempts: u64,
    reason: &str,
) -> Result<Option<StreamId>> {
    dead_letter_fenced(connector, stream, group, id, attempts, reason, None).await
}

/// [`dead_letter`] for a fenced (ordered-mode) consumer: refused unless
/// it still holds `fence`.
pub(crate) async fn dead_letter_fenced(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    id: StreamId,
    attempts: u64,
    reason: &str,
    fence: Option<&crate::lease::Fence>,
) -> Result<Option<StreamId>> {
    let now = crate::retry::now_ms();
    let mut conn = connector.shared();
    let mut invocation =
        scripts::pick(fence, &scripts::DEAD_LETTER, &scripts::DEAD_LETTER_FENCED).key(stream);
    invocation
        .key(crate::keys::StreamKeys::dlq(stream))
        .key(crate::keys::StreamKeys::attempts(stream))
        .arg(group)
        .arg(id)
        .arg(attempts)
        .arg(reason)
        .arg(now);
    scripts::add_fence(&mut invocation, fence);
    let r: redis::RedisResult<Value> = invocation.invoke_async(&mut conn).await;
    match r {
        Ok(Value::BulkString(b)) => {
            crate::metrics::dead_lettered();
            Ok(Some(StreamId::from_bytes(&b)?))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            Err(explain::explain_group(&mut conn, stream, group, "dead-letter script", e).await)
        }
    }
}

/// The dead letters of `stream`, oldest first, at most `count`.
pub async fn list(
    connector: &Connector,
    stream: &StreamKey,
    count: usize,
) -> Result<Vec<crate::Entry>> {
    let dlq = StreamKey::new(crate::keys::StreamKeys::dlq(stream))?;
    crate::reader::range(connector, &dlq, StreamId::MIN, StreamId::MAX, count).await
}

/// Moves one dead letter back to `stream` (atomically: XADD + XDEL in one
/// script). Only the group that gave up on it processes it again; its
/// delivery count starts afresh. Returns the new ID, or `None` when there
/// is no dead letter with that ID.
pub async fn replay(
    connector: &Connector,
    stream: &StreamKey,
    id: StreamId,
) -> Result<Option<StreamId>> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = scripts::DLQ_REPLAY
        .key(crate::keys::StreamKeys::dlq(stream))
        .key(stream)
        .arg(id)
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(Value::BulkString(b)) => Ok(Some(StreamId::from_bytes(&b)?)),
        Ok(_) => Ok(None),
        Err(e) => Err(explain::explain(&mut conn, stream, "dead-letter replay", e).await),
    }
}

/// Deletes dead letters with IDs below `before` (all of them with `None`).
/// Returns how many were deleted.
pub async fn purge(
    connector: &Connector,
    stream: &StreamKey,
    before: Option<StreamId>,
) -> Result<u64> {
    let mut conn = connector.shared();
    let dlq = crate::keys::StreamKeys::dlq(stream);
    let r: redis::RedisResult<u64> = match before {
        Some(id) => {
            redis::cmd("XTRIM")
                .arg(&dlq)
                .arg("MINID")
                .arg(id)
                .query_async(&mut conn)
                .await
        }
        None => {
            let len: u64 = redis::cmd("XLEN")
                .arg(&dlq)
                .query_async(&mut conn)
                .await
                .map_err(|e| crate::Error::redis("XLEN", e))?;
            redis::cmd("DEL")
                .arg(&dlq)
                .query_async::<u64>(&mut conn)
                .await
                .map(|_| len)
        }
    };
    r.map_err(|e| crate::Error::redis(format!("purging {dlq}"), e))
}
