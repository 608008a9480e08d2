//! Read-only views a dashboard needs that the command paths do not: who
//! holds a pending entry, a page of a stream newest first, and which group
//! holds a stream's trim point.
//!
//! Kept apart from `consumer/` and `janitor.rs` so the consumer's hot path
//! stays untouched; everything here is a plain query, nothing is written.

use redis::Value;

use crate::conn::Connector;
use crate::error::Result;
use crate::explain;
use crate::reply::{self, PendingEntry};
use crate::types::{Entry, GroupName, StreamId, StreamKey};

/// The pending entries of `group` with IDs in `[first, last]`, at most
/// `count`, oldest first (extended `XPENDING`): owner, idle time and
/// delivery count of each.
pub async fn pending_range(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    first: StreamId,
    last: StreamId,
    count: usize,
) -> Result<Vec<PendingEntry>> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg(first)
        .arg(last)
        .arg(count.max(1))
        .query_async(&mut conn)
        .await;
    match r {
        Ok(v) => reply::pending_reply(v),
        Err(e) => Err(explain::explain_group(&mut conn, stream, group, "XPENDING", e).await),
    }
}

/// Entries with IDs in `[start, end]`, at most `count`, newest first
/// (`XREVRANGE end start`).
pub async fn range_rev(
    connector: &Connector,
    stream: &StreamKey,
    end: StreamId,
    start: StreamId,
    count: usize,
) -> Result<Vec<Entry>> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg(end)
        .arg(start)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await;
    match r {
        Ok(v) => Ok(reply::entries(v, "XREVRANGE")?.0),
        Err(e) => Err(explain::explain(&mut conn, stream, "XREVRANGE", e).await),
    }
}

pub use crate::janitor::TrimBound;

/// Every group's bound on the trim point of `stream`, lowest first: the
/// first one is the group that holds the trim point. Computed by the
/// janitor's script in a dry run, so the rule lives once.
pub async fn trim_bounds(connector: &Connector, stream: &StreamKey) -> Result<Vec<TrimBound>> {
    let mut bounds = crate::janitor::trim_point(connector, stream, true)
        .await?
        .bounds;
    bounds.sort_by_key(|b| b.bound);
    Ok(bounds)
}
