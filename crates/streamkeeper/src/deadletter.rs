//! The dead-letter queue: entries that failed too often, or that a handler
//! gave up on, move to `{S}:dlq` with `sk-*` metadata (DESIGN.md §5).
//!
//! The move and the ack happen in one script, so an entry is never both
//! pending and dead, nor lost between the two.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::Value;

use crate::conn::Connector;
use crate::error::Result;
use crate::keys;
use crate::scripts;
use crate::types::{GroupName, StreamId, StreamKey};

/// The suffix of the dead-letter stream: `{S}:dlq`.
pub const DLQ_SUFFIX: &str = "dlq";

/// Moves the pending entry `id` of `group` to the dead-letter stream and
/// acks it. Returns the dead letter's ID, or `None` if the entry was no
/// longer pending (acked or moved by someone else meanwhile).
pub async fn dead_letter(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    id: StreamId,
    deliveries: u64,
    reason: &str,
) -> Result<Option<StreamId>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = scripts::DEAD_LETTER
        .key(stream)
        .key(stream.derived(DLQ_SUFFIX))
        .arg(group)
        .arg(id)
        .arg(deliveries)
        .arg(reason)
        .arg(u64::try_from(now).unwrap_or(0))
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(Value::BulkString(b)) => Ok(Some(StreamId::from_bytes(&b)?)),
        Ok(_) => Ok(None),
        Err(e) => Err(keys::explain_group(&mut conn, stream, group, "dead-letter script", e).await),
    }
}
