//! Delayed retries: a pending entry is stored in `{S}:retry` (score = due
//! ms) and acked in one script; a mover re-appends due entries to `S` in
//! another, so a crash between the steps loses or duplicates nothing.
//!
//! A re-appended entry carries `sk-origin-id` (its first ID),
//! `sk-retry-group` (the group that asked for the retry: other groups of
//! the stream skip it) and `sk-attempt` (deliveries before this one, which
//! count towards `max_deliveries`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::scripts;
use crate::types::{Entry, GroupName, StreamId, StreamKey};

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

/// Stores the pending entry `id` of `group` for a retry at `due_ms` and
/// acks it, atomically. `attempts` is its failed attempts so far, this
/// one included.
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
    /// Ordered mode: refused (`Error::Fenced`) unless still held.
    pub fence: Option<&'a crate::lease::Fence>,
}

impl RetryStore<'_> {
    /// What the script did: `1` stored, `-1` deleted from the stream, else
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
            .key(crate::keys::StreamKeys::retry(self.stream))
            .key(crate::keys::StreamKeys::attempts(self.stream))
            .arg(self.group)
            .arg(self.id)
            .arg(self.due_ms)
            .arg(self.attempts);
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

/// Re-appends up to `max` retries of `stream` that are due now. Returns how
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
            .key(crate::keys::StreamKeys::retry(self.stream))
            .arg(self.now_ms)
            .arg(self.max)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("retry mover on {}", self.stream), e))
    }
}

/// How many retries wait in `{S}:retry`.
pub async fn waiting(connector: &Connector, stream: &StreamKey) -> Result<u64> {
    let mut conn = connector.shared();
    redis::cmd("ZCARD")
        .arg(crate::keys::StreamKeys::retry(stream))
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("ZCARD retry set", e))
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

/// Exponential backoff after the `n`-th failed attempt: `base × 2^(n-1)`,
/// at most `max`.
pub fn backoff(n: u64, base: Duration, max: Duration) -> Duration {
    let exp = u32::try_from(n.saturating_sub(1).min(30)).unwrap_or(30);
    base.saturating_mul(1u32 << exp).min(max)
}

/// Moves due retries of one stream while holding its mover lease. Every
/// consumer of the stream runs this beside its read loop; the lease makes
/// one of them the mover at a time, and another takes over within a few
/// polls when it stops.
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
    let lease = crate::lease::Lease::plain(
        &connector,
        crate::keys::StreamKeys::retry_mover(&stream),
        holder,
        ttl,
    );
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                // Hand the lease on at once rather than after its TTL.
                let _ = lease.release().await;
                return;
            }
            _ = tick.tick() => {}
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
