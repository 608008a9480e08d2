//! Delayed retries, seen by the failing group only.
//!
//! A failed entry is *parked*, not acked (`lua/retry_store.lua`): it stays
//! pending in its group under the reserved consumer `sk-retry`, and its ID
//! enters the group's retry set `{S}:retry:<group>` (score = due ms). When
//! it is due, a consumer of the group takes it (`lua/retry_take.lua`) and
//! runs it again under the same ID. So other groups of the stream (plain
//! redis-py or Go clients included) never see a retry as a new entry, an
//! entry keeps one identity across its attempts, the trim point holds it
//! while it waits, and `stat` counts it as outstanding. The reclaim
//! (`lua/reclaim.lua`) leaves parked entries alone until they are due.
//!
//! Before 0.19 a retry was acked and re-appended to the stream as a new
//! entry carrying `sk-origin-id`, `sk-retry-group` and `sk-attempt`; the
//! old retry set `{S}:retry` is still drained that way (`mover_loop`),
//! so retries stored by an older version are not lost on upgrade.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::keys::StreamKeys;
use crate::meta;
use crate::scripts;
use crate::types::{ConsumerName, Entry, GroupName, StreamId, StreamKey};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What [`store`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// In the retry set, acked in the stream.
    Scheduled,
    /// The entry was not pending any more (acked or moved by someone else).
    NotPending,
    /// The entry was pending but deleted from the stream; it was acked.
    Deleted,
}

/// Parks the pending entry `id` of `group` until `due_ms` (see the module
/// doc). `attempts` is its failed attempts so far, this one included.
pub async fn store(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    id: StreamId,
    due_ms: u64,
    attempts: u64,
) -> Result<Stored> {
    RetryStore {
        stream,
        group,
        id,
        due_ms,
        attempts,
        reason: None,
        fence: None,
    }
    .invoke(connector)
    .await
}

/// `lua/retry_store.lua` (behind `lua/fence.lua` with a fence): its KEYS
/// and ARGV, and its reply.
pub(crate) struct RetryStore<'a> {
    /// The stream the entry is pending in.
    pub stream: &'a StreamKey,
    /// The group that asks for the retry.
    pub group: &'a GroupName,
    /// The entry.
    pub id: StreamId,
    /// When it is due, ms since the Unix epoch.
    pub due_ms: u64,
    /// Failed attempts so far, this one included.
    pub attempts: u64,
    /// Why this attempt failed, when the handler said.
    pub reason: Option<&'a str>,
    /// Ordered mode: refused (`Error::Fenced`) unless still held.
    pub fence: Option<&'a crate::lease::Fence>,
}

impl RetryStore<'_> {
    /// What the script did: `1` parked, `-1` deleted from the stream, else
    /// not pending.
    pub async fn invoke(&self, connector: &Connector) -> Result<Stored> {
        let mut conn = connector.shared();
        let mut invocation = scripts::pick(
            self.fence,
            &scripts::RETRY_STORE,
            &scripts::RETRY_STORE_FENCED,
        )
        .key(self.stream);
        invocation
            .key(StreamKeys::retries(self.stream, self.group))
            .key(StreamKeys::attempts(self.stream))
            .key(StreamKeys::retry_reasons(self.stream, self.group))
            .arg(self.group)
            .arg(self.id)
            .arg(self.due_ms)
            .arg(self.attempts)
            .arg(meta::RETRY_CONSUMER)
            .arg(self.reason.unwrap_or(""));
        scripts::add_fence(&mut invocation, self.fence);
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(1) => {
                crate::metrics::retried();
                Ok(Stored::Scheduled)
            }
            Ok(-1) => Ok(Stored::Deleted),
            Ok(_) => Ok(Stored::NotPending),
            Err(e) => {
                Err(
                    scripts::settle_error(&mut conn, self.stream, self.group, "retry script", e)
                        .await,
                )
            }
        }
    }
}

/// `lua/retry_take.lua`: hands up to `max` of the group's due retries to
/// `consumer`, which then holds them pending; replies the entries, each
/// with the error its last attempt failed with (when one was given).
pub(crate) struct TakeDue<'a> {
    pub stream: &'a StreamKey,
    pub group: &'a GroupName,
    pub consumer: &'a ConsumerName,
    pub max: usize,
}

impl TakeDue<'_> {
    pub(crate) async fn invoke(
        &self,
        connector: &Connector,
    ) -> Result<Vec<(Entry, Option<String>)>> {
        let mut conn = connector.shared();
        let r: redis::RedisResult<redis::Value> = scripts::RETRY_TAKE
            .key(self.stream)
            .key(StreamKeys::retries(self.stream, self.group))
            .key(StreamKeys::attempts(self.stream))
            .key(StreamKeys::retry_reasons(self.stream, self.group))
            .arg(self.group)
            .arg(self.consumer)
            .arg(now_ms())
            .arg(self.max)
            .arg(meta::RETRY_CONSUMER)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(redis::Value::Array(mut parts)) if parts.len() == 2 => {
                let errors = parts.pop().unwrap_or(redis::Value::Nil);
                let taken = parts.pop().unwrap_or(redis::Value::Nil);
                let entries = crate::reply::entries(taken, "retry take")?.0;
                let errors: Vec<Option<String>> = match errors {
                    redis::Value::Array(e) => e
                        .iter()
                        .map(|v| match v {
                            redis::Value::BulkString(b) => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                Ok(entries
                    .into_iter()
                    .zip(errors.into_iter().chain(std::iter::repeat(None)))
                    .collect())
            }
            Ok(other) => Err(Error::Protocol {
                command: "retry take",
                detail: format!("{other:?}"),
            }),
            Err(e) => Err(crate::explain::explain_group(
                &mut conn,
                self.stream,
                self.group,
                "retry take",
                e,
            )
            .await),
        }
    }
}

/// Whether a parked retry of `group` is due now (false when Redis could
/// not say).
pub(crate) async fn any_due(connector: &Connector, stream: &StreamKey, group: &GroupName) -> bool {
    let mut conn = connector.shared();
    redis::cmd("ZRANGEBYSCORE")
        .arg(StreamKeys::retries(stream, group))
        .arg("-inf")
        .arg(now_ms())
        .arg("LIMIT")
        .arg(0)
        .arg(1)
        .query_async::<Vec<String>>(&mut conn)
        .await
        .is_ok_and(|v| !v.is_empty())
}

/// One parked retry of a group: [`parked`] lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Parked {
    /// The entry's ID (the one it was first appended with).
    pub id: StreamId,
    /// When it is due, ms since the Unix epoch.
    pub due_ms: u64,
    /// Its attempts so far (failed, or cut off by a crash).
    pub attempts: u64,
    /// The error its last attempt failed with, when the handler said.
    pub last_error: Option<String>,
}

/// The group's parked retries, soonest due first, at most `max`.
pub async fn parked(
    connector: &Connector,
    stream: &StreamKey,
    group: &GroupName,
    max: usize,
) -> Result<Vec<Parked>> {
    let mut conn = connector.shared();
    let stop = isize::try_from(max).unwrap_or(isize::MAX).saturating_sub(1);
    let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(StreamKeys::retries(stream, group))
        .arg(0)
        .arg(stop)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("ZRANGE retry set", e))?;
    let ids: Vec<StreamId> = pairs.iter().filter_map(|(id, _)| id.parse().ok()).collect();
    // Attempts and last errors of every one, in one round trip.
    let (attempts, why): (Vec<Option<u64>>, Vec<Option<String>>) = if ids.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(StreamKeys::attempts(stream));
        for id in &ids {
            pipe.arg(StreamKeys::attempt_field(group, *id));
        }
        pipe.cmd("HMGET")
            .arg(StreamKeys::retry_reasons(stream, group))
            .arg(&ids);
        pipe.query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("HMGET attempt marks and retry reasons", e))?
    };
    Ok(pairs
        .into_iter()
        .filter_map(|(id, due)| Some((id.parse().ok()?, due)))
        .zip(attempts.into_iter().chain(std::iter::repeat(None)))
        .zip(why.into_iter().chain(std::iter::repeat(None)))
        .map(|(((id, due), attempts), last_error)| Parked {
            id,
            // Scores are whole milliseconds, written by retry_store.lua.
            due_ms: due as u64,
            attempts: attempts.unwrap_or(0),
            last_error,
        })
        .collect())
}

/// Re-appends up to `max` retries of the old retry set `{S}:retry` that
/// are due now (retries stored before 0.19). Returns how
/// many moved. Safe to run from any number of processes at once.
pub async fn move_due(connector: &Connector, stream: &StreamKey, max: usize) -> Result<u64> {
    MoveDue {
        stream,
        now_ms: now_ms(),
        max,
    }
    .invoke(connector)
    .await
}

/// `lua/retry_move.lua`: its KEYS and ARGV; it replies how many moved.
struct MoveDue<'a> {
    stream: &'a StreamKey,
    now_ms: u64,
    max: usize,
}

impl MoveDue<'_> {
    async fn invoke(&self, connector: &Connector) -> Result<u64> {
        let mut conn = connector.shared();
        scripts::RETRY_MOVE
            .key(self.stream)
            .key(StreamKeys::retry(self.stream))
            .arg(self.now_ms)
            .arg(self.max)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("retry mover on {}", self.stream), e))
    }
}

/// How many retries of `group` wait for their time (parked, plus any an
/// older version stored in `{S}:retry`).
pub async fn waiting(connector: &Connector, stream: &StreamKey, group: &GroupName) -> Result<u64> {
    let mut conn = connector.shared();
    let (parked, legacy): (u64, u64) = redis::pipe()
        .cmd("ZCARD")
        .arg(StreamKeys::retries(stream, group))
        .cmd("ZCARD")
        .arg(StreamKeys::retry(stream))
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("ZCARD retry set", e))?;
    Ok(parked + legacy)
}

/// The retry bookkeeping of an entry: which group it is meant for and how
/// many failed attempts it had before. `None` for an entry never retried.
pub fn retry_info(entry: &Entry) -> Option<(&str, u64)> {
    let group = entry.get_str(crate::meta::RETRY_GROUP)?;
    let attempt = entry
        .get_str(crate::meta::ATTEMPT)
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Some((group, attempt))
}

/// The first ID of an entry: `sk-origin-id` when it was retried, else its own.
pub fn origin_id(entry: &Entry) -> StreamId {
    entry
        .get_str(crate::meta::ORIGIN_ID)
        .and_then(|s| s.parse().ok())
        .unwrap_or(entry.id)
}

/// How many entries the old retry set still holds.
async fn legacy_left(connector: &Connector, stream: &StreamKey) -> redis::RedisResult<u64> {
    let mut conn = connector.shared();
    redis::cmd("ZCARD")
        .arg(StreamKeys::retry(stream))
        .query_async(&mut conn)
        .await
}

/// Exponential backoff after the `n`-th failed attempt: `base × 2^(n-1)`,
/// at most `max`.
pub fn backoff(n: u64, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(n.saturating_sub(1).min(30)).unwrap_or(30);
    base.saturating_mul(1u32 << exp).min(max)
}

/// Drains the old retry set `{S}:retry` (retries stored before 0.19) while
/// holding its mover lease, and stops once it is empty. Every consumer of
/// the stream runs this beside its read loop; the lease makes one of them
/// the mover at a time, and another takes over within a few polls when it
/// stops.
pub(crate) async fn mover_loop(
    connector: Connector,
    stream: StreamKey,
    holder: String,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Long enough to survive a few slow polls, short enough that another
    // consumer takes over soon after this one stops.
    let ttl = (every * 10).max(Duration::from_secs(2));
    let lease =
        crate::lease::Lease::plain(&connector, StreamKeys::retry_mover(&stream), holder, ttl);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                // Hand the lease on at once rather than after its TTL.
                let _ = lease.release().await;
                return;
            }
            _ = tick.tick() => {}
        }
        match legacy_left(&connector, &stream).await {
            Ok(0) => return,
            // A least-privilege user cannot have stored any.
            Err(e) if crate::error::is_noperm(&e) => return,
            _ => {}
        }
        match lease.acquire().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "retry mover lease failed; trying next poll");
                if e.is_retryable() {
                    let _ = connector.recover().await;
                }
                continue;
            }
        }
        loop {
            match move_due(&connector, &stream, 100).await {
                Ok(100) => continue,
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(%stream, n, "re-appended due retries");
                    }
                    break;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "retry mover failed; reconnecting");
                    let _ = connector.recover().await;
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "retry mover failed");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(n, Duration::from_secs(1), Duration::from_secs(10));
        assert_eq!(b(1), Duration::from_secs(1));
        assert_eq!(b(2), Duration::from_secs(2));
        assert_eq!(b(4), Duration::from_secs(8));
        assert_eq!(b(5), Duration::from_secs(10));
        assert_eq!(b(1000), Duration::from_secs(10));
    }
}
