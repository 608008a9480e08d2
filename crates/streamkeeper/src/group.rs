//! Consumer group administration: create, destroy, list, reset, remove a
//! consumer, on one stream key ([`crate::shard::groups`] acts on every
//! shard of a sharded stream).
//!
//! Creating from a time resolves the time to an ID on the client (Redis
//! accepts only IDs); a group that already exists is not an error for
//! [`create_group`] unless the caller asks for that.

use redis::Value;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::explain;
use crate::reply::{int, text};
use crate::types::{ConsumerName, GroupName, StartFrom, StreamId, StreamKey};

/// What `XINFO GROUPS` says about one group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GroupInfo {
    /// The group's name (`group` in JSON, as everywhere in `--json` output).
    #[serde(rename = "group")]
    pub name: GroupName,
    /// Number of consumers.
    pub consumers: u64,
    /// Entries delivered and not yet acknowledged.
    pub pending: u64,
    /// The last ID delivered to the group.
    pub last_delivered: StreamId,
    /// Entries read by the group (Redis ≥ 7; `None` when unknown).
    pub entries_read: Option<u64>,
    /// Entries not yet delivered, as Redis counts them (`None` after
    /// deletions made it unknowable).
    pub lag: Option<u64>,
}

/// Creates `group` on `stream` starting after `from`, creating the stream
/// if it does not exist (`MKSTREAM`). Returns `false` if the group already
/// existed (it is left unchanged).
pub async fn create_group(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    from: StartFrom,
) -> Result<bool> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(from.as_arg())
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await;
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(explain::explain(&mut conn, stream, "XGROUP CREATE", e).await),
    }
}

/// Destroys a group (its pending entries are forgotten, the stream stays).
/// Returns `false` if there was no such group.
pub async fn destroy_group(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
) -> Result<bool> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<i64> = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(stream)
        .arg(group)
        .query_async(&mut conn)
        .await;
    match r {
        Ok(n) => {
            // Its parked retries went with its pending list. Best effort:
            // a stale set is harmless (taking an ID that is not pending
            // does nothing), and DEL may be beyond a least-privilege user.
            let _ = redis::cmd("DEL")
                .arg(crate::keys::StreamKeys::retries(stream, group))
                .arg(crate::keys::StreamKeys::retry_reasons(stream, group))
                .query_async::<()>(&mut conn)
                .await;
            Ok(n > 0)
        }
        Err(e) if e.code() == Some("NOGROUP") || is_no_such_key(&e) => Ok(false),
        Err(e) => Err(explain::explain(&mut conn, stream, "XGROUP DESTROY", e).await),
    }
}

fn is_no_such_key(e: &redis::RedisError) -> bool {
    e.to_string().contains("no such key")
}

/// Lists the groups of a stream. A missing stream has no groups.
pub async fn list_groups(connector: &Connector, stream: &StreamKey) -> Result<Vec<GroupInfo>> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    let v = match r {
        Ok(v) => v,
        Err(e) if is_no_such_key(&e) => return Ok(Vec::new()),
        Err(e) => return Err(explain::explain(&mut conn, stream, "XINFO GROUPS", e).await),
    };
    let Value::Array(groups) = v else {
        return Ok(Vec::new());
    };
    groups.into_iter().map(parse_group).collect()
}

fn parse_group(v: Value) -> Result<GroupInfo> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m,
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        other => {
            return Err(Error::Protocol {
                command: "XINFO GROUPS",
                detail: format!("unexpected item {other:?}"),
            })
        }
    };
    let mut name = None;
    let mut info = GroupInfo {
        name: GroupName::new("-")?,
        consumers: 0,
        pending: 0,
        last_delivered: StreamId::MIN,
        entries_read: None,
        lag: None,
    };
    for (k, v) in pairs {
        let key = text(&k);
        match key.as_str() {
            "name" => name = Some(GroupName::new(text(&v))?),
            "consumers" => info.consumers = int(&v).unwrap_or(0),
            "pending" => info.pending = int(&v).unwrap_or(0),
            "last-delivered-id" => info.last_delivered = text(&v).parse()?,
            "entries-read" => info.entries_read = int(&v),
            "lag" => info.lag = int(&v),
            _ => {}
        }
    }
    info.name = name.ok_or(Error::Protocol {
        command: "XINFO GROUPS",
        detail: "a group without a name".into(),
    })?;
    Ok(info)
}

// Reply parsing lives in `reply.rs`; re-exported for `conn.rs` (under
// rewrite for issue 9), which still names them here.

/// What moving a group's last-delivered ID does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResetPreview {
    /// The last-delivered ID now.
    pub from: StreamId,
    /// The last-delivered ID after the reset.
    pub to: StreamId,
    /// Entries that will be delivered again (moving back).
    pub redelivered: u64,
    /// Entries that will never be delivered (moving forward).
    pub skipped: u64,
    /// First and last ID of the affected range, if any.
    pub range: Option<(StreamId, StreamId)>,
}

/// Moves the group's last-delivered ID to `to` (`XGROUP SETID`), or with
/// `dry_run` only says how many entries that re-delivers or skips.
/// Pending entries are not touched.
pub async fn reset_group(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    to: StreamId,
    dry_run: bool,
) -> Result<ResetPreview> {
    let info = list_groups(connector, stream).await?;
    let g = info
        .iter()
        .find(|g| g.name == group.as_str())
        .ok_or_else(|| Error::GroupMissing {
            stream: stream.clone(),
            group: group.clone(),
        })?;
    let from: StreamId = g.last_delivered;
    let (lo, hi) = if to < from {
        (to.next(), from)
    } else {
        (from.next(), to)
    };
    let (n, ends) = if lo <= hi {
        crate::reader::span(connector, stream, lo, hi).await?
    } else {
        (0, None)
    };
    let preview = ResetPreview {
        from,
        to,
        redelivered: if to < from { n } else { 0 },
        skipped: if to > from { n } else { 0 },
        range: ends,
    };
    if !dry_run {
        let mut conn = connector.shared();
        if let Err(e) = redis::cmd("XGROUP")
            .arg("SETID")
            .arg(stream)
            .arg(group)
            .arg(to)
            .query_async::<()>(&mut conn)
            .await
        {
            return Err(explain::explain_group(&mut conn, stream, group, "XGROUP SETID", e).await);
        }
    }
    Ok(preview)
}

/// Deletes `consumer` from the group if it holds no pending entry (one
/// script); `Ok(false)` when it holds some (they stay, to be re-read or
/// reclaimed). For names generated per process, on a clean exit.
pub async fn forget_consumer(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    consumer: &ConsumerName,
) -> Result<bool> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<i64> = crate::scripts::FORGET_CONSUMER
        .key(stream)
        .arg(group)
        .arg(consumer)
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(n) => Ok(n == 1),
        Err(e) => {
            Err(explain::explain_group(&mut conn, stream, group, "forgetting a consumer", e).await)
        }
    }
}

/// Hands every pending entry of `from` to `to` and deletes `from`, in one
/// script (nothing is dropped). Returns how many entries moved. The
/// reserved consumer `sk-retry` (the group's parked retries) is neither
/// removed nor an heir.
pub async fn remove_consumer(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    from: &ConsumerName,
    to: &ConsumerName,
) -> Result<u64> {
    if *from == crate::meta::RETRY_CONSUMER || *to == crate::meta::RETRY_CONSUMER {
        return Err(Error::InvalidInput(format!(
            "{} holds the group's parked retries: it is neither removed nor given other entries",
            crate::meta::RETRY_CONSUMER
        )));
    }
    Handoff {
        stream,
        group,
        from,
        to,
    }
    .invoke(connector)
    .await
}

/// `lua/handoff.lua`: its KEYS and ARGV, and its reply (entries moved).
struct Handoff<'a> {
    stream: &'a StreamKey,
    group: &'a GroupName,
    from: &'a ConsumerName,
    to: &'a ConsumerName,
}

impl Handoff<'_> {
    async fn invoke(&self, connector: &Connector) -> Result<u64> {
        let (from, to) = (self.from, self.to);
        let mut conn = connector.shared();
        crate::scripts::HANDOFF
            .key(self.stream)
            .arg(self.group)
            .arg(from)
            .arg(to)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("handing {from}'s pending entries to {to}"), e))
    }
}
