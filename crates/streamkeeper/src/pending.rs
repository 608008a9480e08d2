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
use crate::group::list_groups;
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

/// One group's bound on the ack-based trim point (the janitor's rule:
/// `min(oldest pending, next after last-delivered)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimBound {
    /// The group.
    pub group: String,
    /// Nothing below this ID is still needed by the group.
    pub bound: StreamId,
    /// Whether the bound comes from a pending entry (not yet acked) rather
    /// than from entries not yet delivered.
    pub pending: bool,
}

/// Every group's bound on the trim point of `stream`, lowest first: the
/// first one is the group that holds the trim point.
pub async fn trim_bounds(connector: &Connector, stream: &StreamKey) -> Result<Vec<TrimBound>> {
    let groups = list_groups(connector, stream).await?;
    let mut out = Vec::with_capacity(groups.len());
    let mut conn = connector.shared();
    for g in groups {
        let last: StreamId = g.last_delivered;
        let summary: Value = match redis::cmd("XPENDING")
            .arg(stream)
            .arg(&g.name)
            .query_async(&mut conn)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                return Err(explain::explain_group(&mut conn, stream, &g.name, "XPENDING", e).await)
            }
        };
        let oldest = match summary {
            Value::Array(s) => s.get(1).and_then(|v| match v {
                Value::BulkString(b) => StreamId::from_bytes(b).ok(),
                _ => None,
            }),
            _ => None,
        };
        let next = last.next();
        let (bound, pending) = match oldest {
            Some(p) if p < next => (p, true),
            _ => (next, false),
        };
        out.push(TrimBound {
            group: g.name.to_string(),
            bound,
            pending,
        });
    }
    out.sort_by_key(|a| a.bound);
    Ok(out)
}
