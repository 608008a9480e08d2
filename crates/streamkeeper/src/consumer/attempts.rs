//! Attempt marks: how `max_deliveries` counts handler runs, not reads.
//!
//! Redis counts *deliveries*: every read, re-read and reclaim raises an
//! entry's delivery counter, also when the entry only sat in a read-ahead
//! buffer. streamkeeper counts *attempts* instead, in the hash
//! `{S}:attempts` (field `<group> NUL <id>`, value = handler runs of this
//! entry started and not settled):
//!
//! - a new entry handed to a handler is marked lazily by the acker (only if
//!   its handler is still running at the next flush: fast handlers cost
//!   nothing);
//! - an entry that comes back after a restart or a reclaim is marked
//!   before its handler starts ([`start`]); the value then says how many
//!   runs were cut off by a crash;
//! - ack, retry, dead-letter and `ack_and_produce` remove the mark in the
//!   same script that settles the entry.
//!
//! Failed runs are carried by the retry itself (`sk-attempt`), so an
//! entry's attempts = `sk-attempt` + runs cut off by crashes. A crash
//! within the first flush interval of a new entry's first run is not
//! counted (the mark was not written yet); the entry's next run is marked
//! before it starts, so an entry that crashes its consumer every time still
//! reaches the dead-letter queue, after at most one extra run.

use super::shared::Shared;
use crate::error::{Error, Result};
use crate::scripts;
use crate::types::StreamId;

/// Marks the start of a run of `id` and returns the runs of this round
/// that were cut off before (0 when none).
pub(crate) async fn start(shared: &Shared, id: StreamId) -> Result<u64> {
    AttemptStart { shared, id }.invoke().await
}

/// `lua/attempt_start.lua`: its KEYS and ARGV, and its reply (the runs
/// marked so far, this one included).
struct AttemptStart<'a> {
    shared: &'a Shared,
    id: StreamId,
}

impl AttemptStart<'_> {
    /// The runs cut off before this one.
    async fn invoke(&self) -> Result<u64> {
        let mut conn = self.shared.connector.shared();
        let counts: Vec<u64> = scripts::ATTEMPT_START
            .key(crate::keys::StreamKeys::attempts(&self.shared.stream))
            .arg(&self.shared.group)
            .arg(self.id)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("attempt mark on {}", self.shared.stream), e))?;
        Ok(counts.first().copied().unwrap_or(1).saturating_sub(1))
    }
}

/// Counts one more unsettled run of `id` (an in-place re-run).
pub(crate) async fn bump(shared: &Shared, id: StreamId) -> Result<()> {
    incr(shared, id, 1).await.map(|_| ())
}

/// Takes back the mark of a run that was marked but never started (the
/// consumer stopped in between).
pub(crate) async fn unmark(shared: &Shared, id: StreamId) -> Result<()> {
    if incr(shared, id, -1).await? <= 0 {
        let mut conn = shared.connector.shared();
        redis::cmd("HDEL")
            .arg(crate::keys::StreamKeys::attempts(&shared.stream))
            .arg(mark_field(shared, id))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("attempt mark on {}", shared.stream), e))?;
    }
    Ok(())
}

/// The entry's field in `{S}:attempts`.
fn mark_field(shared: &Shared, id: StreamId) -> Vec<u8> {
    crate::keys::StreamKeys::attempt_field(&shared.group, id)
}

/// Adds `by` to the entry's mark; returns the new value.
async fn incr(shared: &Shared, id: StreamId, by: i64) -> Result<i64> {
    let mut conn = shared.connector.shared();
    redis::cmd("HINCRBY")
        .arg(crate::keys::StreamKeys::attempts(&shared.stream))
        .arg(mark_field(shared, id))
        .arg(by)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("attempt mark on {}", shared.stream), e))
}
