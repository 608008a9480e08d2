//! The dead-letter queue: entries that failed too often, or that a handler
//! gave up on, move to `{S}:dlq` with `sk-*` metadata (docs/design.md §5).
//!
//! The move and the ack happen in one script, so an entry is never both
//! pending and dead, nor lost between the two.

use redis::Value;

use crate::conn::Connector;
use crate::error::Result;
use crate::explain;
use crate::meta;
use crate::scripts;
use crate::types::{Entry, GroupName, StreamId, StreamKey};

/// A dead letter read back: its `sk-*` metadata parsed, and the entry's
/// own fields without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The dead letter's ID in `{S}:dlq`.
    pub id: StreamId,
    /// The stream the entry died on (`sk-origin`).
    pub origin: Option<String>,
    /// The ID the entry first had (`sk-origin-id`).
    pub origin_id: Option<StreamId>,
    /// The group that gave up on it (`sk-group`).
    pub group: Option<String>,
    /// Handler runs it had (`sk-deliveries`).
    pub attempts: Option<u64>,
    /// Why it was given up on (`sk-reason`).
    pub reason: Option<String>,
    /// When it died, ms since the Unix epoch (`sk-dead-at`).
    pub dead_at_ms: Option<u64>,
    /// The entry's own fields, in order, without the `sk-` ones.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl From<&Entry> for DeadLetter {
    fn from(e: &Entry) -> Self {
        let text = |k: &str| e.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
        let number = |k: &str| e.get_str(k).and_then(|v| v.parse().ok());
        DeadLetter {
            id: e.id,
            origin: text(meta::ORIGIN),
            origin_id: e.get_str(meta::ORIGIN_ID).and_then(|v| v.parse().ok()),
            group: text(meta::GROUP),
            attempts: number(meta::DELIVERIES),
            reason: text(meta::REASON),
            dead_at_ms: number(meta::DEAD_AT),
            fields: e
                .fields
                .iter()
                .filter(|(k, _)| !meta::is_meta(k))
                .cloned()
                .collect(),
        }
    }
}

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
    DeadLetterMove {
        stream,
        group,
        id,
        attempts,
        reason,
        fence: None,
    }
    .invoke(connector)
    .await
}

/// `lua/dead_letter.lua` (behind `lua/fence.lua` with a fence): its KEYS
/// and ARGV, and its reply.
pub(crate) struct DeadLetterMove<'a> {
    /// The stream the entry is pending in.
    pub stream: &'a StreamKey,
    /// The group that gives up on it.
    pub group: &'a GroupName,
    /// The entry.
    pub id: StreamId,
    /// Handler runs so far (`sk-deliveries`).
    pub attempts: u64,
    /// Why (`sk-reason`).
    pub reason: &'a str,
    /// Ordered mode: refused (`Error::Fenced`) unless still held.
    pub fence: Option<&'a crate::lease::Fence>,
}

impl DeadLetterMove<'_> {
    /// The dead letter's ID, or `None` when the entry was not pending.
    pub async fn invoke(&self, connector: &Connector) -> Result<Option<StreamId>> {
        let mut conn = connector.shared();
        let mut invocation = scripts::pick(
            self.fence,
            &scripts::DEAD_LETTER,
            &scripts::DEAD_LETTER_FENCED,
        )
        .key(self.stream);
        invocation
            .key(crate::keys::StreamKeys::dlq(self.stream))
            .key(crate::keys::StreamKeys::attempts(self.stream))
            .arg(self.group)
            .arg(self.id)
            .arg(self.attempts)
            .arg(self.reason)
            .arg(crate::retry::now_ms());
        scripts::add_fence(&mut invocation, self.fence);
        match invocation.invoke_async::<Value>(&mut conn).await {
            Ok(Value::BulkString(b)) => {
                crate::metrics::dead_lettered();
                Ok(Some(StreamId::from_bytes(&b)?))
            }
            Ok(_) => Ok(None),
            Err(e) => Err(scripts::settle_error(
                &mut conn,
                self.stream,
                self.group,
                "dead-letter script",
                e,
            )
            .await),
        }
    }
}

/// The dead letters of `stream`, oldest first, at most `count`, as
/// entries (see [`DeadLetter`] for their metadata).
pub async fn list(connector: &Connector, stream: &StreamKey, count: usize) -> Result<Vec<Entry>> {
    let dlq = StreamKey::new(crate::keys::StreamKeys::dlq(stream))?;
    crate::reader::range(connector, &dlq, StreamId::MIN, StreamId::MAX, count).await
}

/// Gives one dead letter back to the group that gave up on it, in one
/// script. When its original entry is still in `stream`, it goes back into
/// the group's pending list under its own ID, parked for a retry due now:
/// no other group of the stream (plain clients included) sees it again.
/// When the original was trimmed, it is appended anew with
/// `sk-retry-group` (other streamkeeper groups skip it; plain clients see
/// it). Its attempt count starts afresh. Returns the entry's ID in the
/// stream (its own, or the new one), or `None` when there is no dead
/// letter with that ID; [`Error::GroupMissing`](crate::Error::GroupMissing)
/// when its group no longer exists (nothing is changed). For a sharded
/// stream use [`shard::replay_dead_letter`](crate::shard::replay_dead_letter):
/// a shard a resize sealed takes no appends, so its letters go to the
/// current layout.
pub async fn replay(
    connector: &Connector,
    stream: &StreamKey,
    id: StreamId,
) -> Result<Option<StreamId>> {
    let Some((_, _, letter)) = read_letter(connector, stream, id).await? else {
        return Ok(None);
    };
    Replay {
        stream,
        id,
        group: letter.group.and_then(|g| GroupName::new(g).ok()),
        origin: letter.origin_id,
    }
    .invoke(connector)
    .await
}

/// [`replay`] into another stream, `target` (a sealed shard's letter into
/// the current layout's shard): see `replay_elsewhere`.
pub(crate) async fn replay_into(
    connector: &Connector,
    stream: &StreamKey,
    id: StreamId,
    target: &StreamKey,
) -> Result<Option<StreamId>> {
    let Some((dlq, raw, letter)) = read_letter(connector, stream, id).await? else {
        return Ok(None);
    };
    replay_elsewhere(connector, &dlq, &raw, &letter, target)
        .await
        .map(Some)
}

/// The dead letter `id` of `stream` (its dead-letter stream's key, the
/// entry, what it says), refused when its group no longer exists: a
/// replay would reach nobody (a copy for it would be skipped by every
/// other group for good).
async fn read_letter(
    connector: &Connector,
    stream: &StreamKey,
    id: StreamId,
) -> Result<Option<(StreamKey, Entry, DeadLetter)>> {
    let dlq = StreamKey::new(crate::keys::StreamKeys::dlq(stream))?;
    let found = crate::reader::range(connector, &dlq, id, id, 1).await?;
    let Some(raw) = found.into_iter().next() else {
        return Ok(None);
    };
    let letter = DeadLetter::from(&raw);
    if let Some(g) = letter.group.as_deref() {
        let groups = crate::group::list_groups(connector, stream).await?;
        if !groups.iter().any(|x| x.name == g) {
            return Err(crate::Error::GroupMissing {
                stream: stream.clone(),
                group: GroupName::new(g)?,
            });
        }
    }
    Ok(Some((dlq, raw, letter)))
}

/// Replays a dead letter of a sealed shard into `target`: appended anew
/// (its fields without the dead-letter metadata, with `sk-origin-id` and
/// `sk-retry-group` as the script's append does, so only its group runs
/// it), then deleted from the dead-letter stream. Two slots, so two steps:
/// a crash between them leaves the letter to be replayed again (at least
/// once, never lost).
async fn replay_elsewhere(
    connector: &Connector,
    dlq: &StreamKey,
    raw: &Entry,
    letter: &DeadLetter,
    target: &StreamKey,
) -> Result<StreamId> {
    const DROPPED: [&str; 8] = [
        meta::ORIGIN,
        meta::DELIVERIES,
        meta::REASON,
        meta::DEAD_AT,
        meta::RETRY_GROUP,
        meta::ATTEMPT,
        meta::GROUP,
        meta::ORIGIN_ID,
    ];
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = raw
        .fields
        .iter()
        .filter(|(k, _)| !DROPPED.iter().any(|d| d.as_bytes() == k.as_slice()))
        .cloned()
        .collect();
    if let Some(origin) = letter.origin_id {
        fields.push((meta::ORIGIN_ID.into(), origin.to_string().into_bytes()));
    }
    if let Some(g) = &letter.group {
        fields.push((meta::RETRY_GROUP.into(), g.clone().into_bytes()));
    }
    let id = crate::producer::Producer::new(connector, target.clone())
        .send(&fields)
        .await?;
    let mut conn = connector.shared();
    let _: u64 = redis::cmd("XDEL")
        .arg(dlq.as_str())
        .arg(raw.id.to_string())
        .query_async(&mut conn)
        .await
        .map_err(|e| crate::Error::redis(format!("XDEL {dlq}"), e))?;
    Ok(id)
}

/// `lua/dlq_replay.lua`: its KEYS and ARGV, and its reply.
struct Replay<'a> {
    stream: &'a StreamKey,
    id: StreamId,
    /// The dead letter's group and first ID, as read before the script
    /// (which checks they still are).
    group: Option<GroupName>,
    origin: Option<StreamId>,
}

impl Replay<'_> {
    /// The entry's ID in the stream, or `None` when there was no such letter.
    async fn invoke(&self, connector: &Connector) -> Result<Option<StreamId>> {
        let mut conn = connector.shared();
        // Without a group the retry-set key is never touched; it only has
        // to be in the stream's slot.
        let retries = match &self.group {
            Some(g) => crate::keys::StreamKeys::retries(self.stream, g),
            None => crate::keys::StreamKeys::retry(self.stream),
        };
        let r: redis::RedisResult<Value> = scripts::DLQ_REPLAY
            .key(crate::keys::StreamKeys::dlq(self.stream))
            .key(self.stream)
            .key(retries)
            .key(crate::keys::StreamKeys::attempts(self.stream))
            .arg(self.id)
            .arg(self.group.as_ref().map_or("", GroupName::as_str))
            .arg(self.origin.map(|o| o.to_string()).unwrap_or_default())
            .arg(
                self.origin
                    .map(|o| o.prev().to_string())
                    .unwrap_or_default(),
            )
            .arg(crate::retry::now_ms())
            .arg(meta::RETRY_CONSUMER)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(Value::Array(parts)) => match parts.get(1) {
                Some(Value::BulkString(b)) => Ok(Some(StreamId::from_bytes(b)?)),
                _ => Err(crate::Error::Protocol {
                    command: "dead-letter replay",
                    detail: format!("{parts:?}"),
                }),
            },
            Ok(_) => Ok(None),
            Err(e) => Err(explain::explain(&mut conn, self.stream, "dead-letter replay", e).await),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_parses_its_metadata_and_keeps_the_user_fields_in_order() {
        let pair = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
        let e = Entry {
            id: StreamId::new(5, 1),
            fields: vec![
                pair("b", "2"),
                pair("a", "1"),
                pair(meta::ORIGIN, "orders"),
                pair(meta::ORIGIN_ID, "3-0"),
                pair(meta::GROUP, "billing"),
                pair(meta::DELIVERIES, "4"),
                pair(meta::REASON, "bad sku"),
                pair(meta::DEAD_AT, "1700"),
            ],
        };
        let d = DeadLetter::from(&e);
        assert_eq!(d.id, StreamId::new(5, 1));
        assert_eq!(d.origin.as_deref(), Some("orders"));
        assert_eq!(d.origin_id, Some(StreamId::new(3, 0)));
        assert_eq!(d.group.as_deref(), Some("billing"));
        assert_eq!(d.attempts, Some(4));
        assert_eq!(d.reason.as_deref(), Some("bad sku"));
        assert_eq!(d.dead_at_ms, Some(1700));
        assert_eq!(d.fields, vec![pair("b", "2"), pair("a", "1")]);
    }
}
