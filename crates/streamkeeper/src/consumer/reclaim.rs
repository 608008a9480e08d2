//! Reclaiming the work of crashed consumers (`XAUTOCLAIM` in
//! `lua/reclaim.lua`), and taking the group's retries that fell due.
//!
//! Every `claim_interval`, entries of this group idle longer than
//! `claim_after` move to this consumer and are delivered with
//! [`Source::Claimed`](crate::consumer::Source::Claimed); parked retries
//! (idle by design, see `retry.rs`) are left alone. Every `retry_poll`,
//! the group's due retries move to this consumer and are delivered with
//! [`Source::Retry`](crate::consumer::Source::Retry). It runs on the
//! shared connection (XAUTOCLAIM never blocks), beside the blocking read,
//! so a quiet stream does not delay reclaiming. Live consumers keep what
//! they hold fresh (`keepalive.rs`), so only the entries of a consumer
//! that crashed (or stayed frozen for longer than `claim_after`) go idle
//! for that long, whatever the handlers' run time.

use std::sync::Arc;

use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::Held;
use super::in_flight::InFlight;
use super::outcome::Source;
use super::shared::Shared;
use crate::error::Result;
use crate::explain;
use crate::reply;
use crate::types::StreamId;

pub(crate) async fn reclaim_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Held>>,
    in_flight: Arc<InFlight>,
    cancel: CancellationToken,
) {
    let Some(claim_after) = shared.options.claim_after else {
        return;
    };
    let mut tick = tokio::time::interval(shared.options.claim_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.budget.spent() => return,
            _ = tick.tick() => {}
        }
        if shared.budget.exhausted() {
            return;
        }
        let mut cursor = StreamId::MIN;
        loop {
            let want = shared.budget.reserve(shared.options.batch);
            if want == 0 {
                break;
            }
            let round = tokio::select! {
                // What was reserved goes back: a consumer stopped alone (a
                // sealed shard drained) leaves its share to the others.
                _ = cancel.cancelled() => {
                    shared.budget.settle(want, 0);
                    return;
                }
                r = claim_once(&shared, cursor, claim_after, &in_flight, want) => r,
            };
            let got = round.as_ref().map(|r| r.1.len()).unwrap_or(0);
            shared.budget.settle(want, got);
            match round {
                Ok((next, deliveries)) => {
                    crate::metrics::delivered(deliveries.len());
                    shared.metrics.reclaimed(deliveries.len());
                    if !super::delivery::send_all(&shared, &tx, &cancel, deliveries).await {
                        return;
                    }
                    if next == StreamId::MIN {
                        break;
                    }
                    cursor = next;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "XAUTOCLAIM failed; reconnecting, will retry next interval");
                    if let Err(e) = shared.connector.recover().await {
                        tracing::warn!(error = %e, "no server to reconnect to yet");
                    }
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    }
}

async fn claim_once(
    shared: &Arc<Shared>,
    cursor: StreamId,
    claim_after: std::time::Duration,
    in_flight: &Arc<InFlight>,
    count: usize,
) -> Result<(StreamId, Vec<Held>)> {
    let mut conn = shared.connector.shared();
    let r: redis::RedisResult<Value> = crate::scripts::RECLAIM
        .key(&shared.stream)
        .key(crate::keys::StreamKeys::retries(
            &shared.stream,
            &shared.group,
        ))
        .arg(&shared.group)
        .arg(&shared.consumer)
        .arg(u64::try_from(claim_after.as_millis()).unwrap_or(u64::MAX))
        .arg(cursor)
        .arg(count)
        .arg(crate::meta::RETRY_CONSUMER)
        .invoke_async(&mut conn)
        .await;
    let r = match r {
        // A least-privilege user may not read the retry set (a sorted
        // set): plain XAUTOCLAIM then (it cannot have parked anything).
        Err(e) if crate::error::is_noperm(&e) => {
            redis::cmd("XAUTOCLAIM")
                .arg(&shared.stream)
                .arg(&shared.group)
                .arg(&shared.consumer)
                .arg(u64::try_from(claim_after.as_millis()).unwrap_or(u64::MAX))
                .arg(cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut conn)
                .await
        }
        r => r,
    };
    let v = match r {
        Ok(v) => v,
        Err(e) => {
            return Err(explain::explain_group(
                &mut conn,
                &shared.stream,
                &shared.group,
                "XAUTOCLAIM",
                e,
            )
            .await)
        }
    };
    let (next, claimed, deleted) = reply::autoclaim_reply(v)?;
    let claimed = shared.admit(claimed);
    if !deleted.is_empty() {
        tracing::warn!(stream = %shared.stream, n = deleted.len(),
            "pending entries were deleted from the stream before being processed (XDEL or trimming)");
    }
    // Entries this consumer already holds were "claimed" from itself: they
    // are being worked on, so do not hand them out twice.
    let fresh: Vec<_> = claimed
        .into_iter()
        .filter(|e| !in_flight.contains(&e.id))
        .collect();
    if !fresh.is_empty() {
        tracing::info!(stream = %shared.stream, group = %shared.group, n = fresh.len(),
            "reclaimed entries from idle consumers");
    }
    let deliveries = fresh
        .into_iter()
        .filter(|e| in_flight.insert(e.id))
        .map(|e| Held::new(e, Source::Claimed, in_flight))
        .collect();
    Ok((next, deliveries))
}

/// Hands this consumer the group's retries that fell due, every
/// `retry_poll`, as [`Source::Retry`] deliveries.
pub(crate) async fn retry_loop(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Held>>,
    in_flight: Arc<InFlight>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(shared.options.retry_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = shared.budget.spent() => return,
            _ = tick.tick() => {}
        }
        let mut ready: Vec<(crate::types::Entry, Option<String>)> = Vec::new();
        // With a limit (`--count N`) the read loop holds the budget during
        // its short blocking reads and gives it back between them: wait
        // for a share for up to one poll, or due retries would starve.
        let mut waited = std::time::Duration::ZERO;
        let mut due: Option<bool> = None;
        loop {
            let want = shared.budget.reserve(shared.options.batch);
            if want == 0 {
                if shared.budget.exhausted() || waited >= shared.options.retry_poll {
                    break;
                }
                if due.is_none() {
                    due = Some(
                        crate::retry::any_due(&shared.connector, &shared.stream, &shared.group)
                            .await,
                    );
                }
                if due == Some(true) {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                    }
                    waited += std::time::Duration::from_millis(5);
                    continue;
                }
                break;
            }
            let take = crate::retry::TakeDue {
                stream: &shared.stream,
                group: &shared.group,
                consumer: &shared.consumer,
                max: want,
            };
            let round = tokio::select! {
                _ = cancel.cancelled() => {
                    shared.budget.settle(want, 0);
                    return;
                }
                r = take.invoke(&shared.connector) => r,
            };
            let got = round.as_ref().map(Vec::len).unwrap_or(0);
            shared.budget.settle(want, got);
            match round {
                Ok(entries) => {
                    crate::metrics::delivered(entries.len());
                    ready.extend(entries);
                    if got < want {
                        break;
                    }
                }
                Err(e) if e.is_noperm() => {
                    // A least-privilege user (stream commands only) cannot
                    // park retries either: a failed entry stays pending
                    // and is reclaimed after claim_after instead.
                    tracing::warn!(stream = %shared.stream, error = %e,
                        "this user may not use the retry set (sorted sets); failed entries are retried by the reclaim after claim_after");
                    return;
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "taking due retries failed; reconnecting, will retry next poll");
                    if let Err(e) = shared.connector.recover().await {
                        tracing::warn!(error = %e, "no server to reconnect to yet");
                    }
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        let mut ready = ready.into_iter();
        while let Some((e, last_error)) = ready.next() {
            // Taken from the retry set, it is this consumer's now: a
            // keepalive that saw it parked (owned by sk-retry) may have
            // called it lost; it is not.
            in_flight.take_lost(&e.id);
            // Held here already (a reset or a reclaim handed it to this
            // consumer, which runs it now): that run settles it. Keeping
            // it to hand out later would run it again after its ack. (The
            // delivery whose failure parked it let go of it then.)
            // Its holder parking it right now lets go in a moment: wait for
            // that (bounded) rather than skip it and leave it pending
            // until claim_after.
            let mut waited = 0;
            while in_flight.is_parking(&e.id) && waited < 200 {
                tokio::select! {
                    _ = cancel.cancelled() => {
                        shared.keep_unsent(std::iter::once(e.id).chain(ready.map(|(e, _)| e.id)));
                        return;
                    }
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
                waited += 1;
            }
            if !in_flight.insert(e.id) {
                continue;
            }
            let held = Held::new(e, Source::Retry, &in_flight).with_last_error(last_error);
            let id = held.entry.id;
            tokio::select! {
                // Taken from the retry set, so this consumer's now: handed
                // back on close like read-ahead.
                _ = cancel.cancelled() => {
                    shared.keep_unsent(std::iter::once(id).chain(ready.map(|(e, _)| e.id)));
                    return;
                }
                sent = tx.send(Ok(held)) => if sent.is_err() { return },
            }
        }
    }
}
