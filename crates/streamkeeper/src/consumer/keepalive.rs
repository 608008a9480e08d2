//! Liveness, not idleness: a live consumer keeps every entry it holds
//! fresh, so that no peer reclaims it.
//!
//! `XAUTOCLAIM` takes entries idle longer than `claim_after`. Without this
//! task that includes entries waiting in a live consumer's read-ahead
//! buffer and entries whose handler simply runs long — handled twice with
//! no crash at all. Every `claim_after / 3` this task runs `touch.lua` on
//! every held entry: `XCLAIM <self> 0 … JUSTID` resets the idle time
//! without counting a delivery. So only a consumer that stopped touching —
//! it crashed, or was frozen for longer than `claim_after` — loses its
//! entries: `claim_after` is the crash-detection time, not a handler time
//! limit. An entry a peer took over meanwhile is not taken back; it is
//! dropped from the buffer instead (a running handler finishes).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::in_flight::InFlight;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::reply;
use crate::scripts;
use crate::types::StreamId;

/// Most IDs one script call touches.
const TOUCH_CHUNK: usize = 1000;

/// How often held entries are touched for a given `claim_after`.
pub(crate) fn touch_interval(claim_after: Option<Duration>) -> Duration {
    claim_after
        .map(|d| (d / 3).clamp(Duration::from_millis(20), Duration::from_secs(10)))
        .unwrap_or(Duration::from_secs(10))
}

pub(crate) async fn keepalive_loop(
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
    cancel: CancellationToken,
) {
    let every = touch_interval(shared.options.claim_after);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let held = in_flight.snapshot();
        for chunk in held.chunks(TOUCH_CHUNK) {
            match touch(&shared, chunk).await {
                Ok(mut lost) => {
                    // An entry whose ack went through meanwhile is not
                    // pending any more: not lost, done.
                    lost.retain(|id| in_flight.is_held(id));
                    if !lost.is_empty() {
                        tracing::warn!(stream = %shared.stream, group = %shared.group, n = lost.len(),
                            "entries this consumer held were taken over by a peer (was this process frozen for longer than claim_after?)");
                    }
                    for id in lost {
                        in_flight.mark_lost(id);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "keeping held entries fresh failed; retrying next interval");
                    if e.is_retryable() {
                        let _ = shared.connector.recover().await;
                    }
                    break;
                }
            }
        }
    }
}

async fn touch(shared: &Shared, ids: &[StreamId]) -> Result<Vec<StreamId>> {
    set_idle(shared, ids, Duration::ZERO).await
}

/// On a graceful stop: makes the read-ahead `ids` (still owned, never
/// handed to a handler) look idle for `claim_after`, so a live peer's next
/// reclaim takes them at once rather than `claim_after` later. No delivery
/// or attempt is counted.
pub(crate) async fn hand_back(shared: &Shared, ids: &[StreamId]) {
    let Some(claim_after) = shared.options.claim_after else {
        return;
    };
    for chunk in ids.chunks(TOUCH_CHUNK) {
        if let Err(e) = set_idle(shared, chunk, claim_after).await {
            tracing::debug!(error = %e, "could not hand read-ahead back; peers take it after claim_after");
            return;
        }
    }
    tracing::debug!(n = ids.len(), "handed read-ahead back to the group");
}

async fn set_idle(shared: &Shared, ids: &[StreamId], idle: Duration) -> Result<Vec<StreamId>> {
    Touch { shared, ids, idle }.invoke().await
}

/// `lua/touch.lua`: its KEYS and ARGV, and its reply (the IDs still held
/// by this consumer, now idle `idle`).
struct Touch<'a> {
    shared: &'a Shared,
    ids: &'a [StreamId],
    idle: Duration,
}

impl Touch<'_> {
    async fn invoke(&self) -> Result<Vec<StreamId>> {
        let shared = self.shared;
        let mut conn = shared.connector.shared();
        let v = scripts::TOUCH
            .key(&shared.stream)
            .arg(&shared.group)
            .arg(&shared.consumer)
            .arg(u64::try_from(self.idle.as_millis()).unwrap_or(u64::MAX))
            .arg(self.ids)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("touching held entries of {}", shared.stream), e))?;
        reply::id_list(v, "touch script")
    }
}
