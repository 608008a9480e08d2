//! The read loop of a group consumer, on its own dedicated connection.
//!
//! It first re-reads this consumer's own pending entries (`0`), then blocks
//! on new ones (`>`). The bounded channel it feeds is the prefetch: while
//! the handler works on one batch the next is already read, and the loop
//! waits when the channel is full, so memory is bounded by the prefetch and
//! not by the backlog. After a retryable error (failover, dropped
//! connection) it reconnects with jittered backoff and resumes from the
//! group's state: pending first, then `>`. When the connector moves to a
//! new master (a Sentinel `+switch-master`), the read in progress on the
//! deposed one is abandoned at once and the loop reconnects. A fenced
//! (ordered-mode) consumer reads new entries through the fence, so an
//! owner that lost its lease takes none.

use std::sync::Arc;

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::Held;
use super::in_flight::InFlight;
use super::outcome::Source;
use super::shared::Shared;
use crate::conn::Backoff;
use crate::error::Result;

use crate::reply;
use crate::types::{Entry, StreamId};

enum Phase {
    /// Re-reading own pending entries after this ID.
    Pending(StreamId),
    /// Reading new entries.
    New,
}

pub(crate) async fn read_loop(
    shared: Arc<Shared>,
    mut conn: MultiplexedConnection,
    tx: mpsc::Sender<Result<Held>>,
    in_flight: Arc<InFlight>,
    cancel: CancellationToken,
) {
    let noack = shared.options.ack_mode == crate::AckMode::None;
    let mut phase = if noack {
        Phase::New
    } else {
        Phase::Pending(StreamId::MIN)
    };
    let mut backoff = Backoff::default();
    let mut failing_since: Option<std::time::Instant> = None;
    let mut switches = shared.connector.switches();
    loop {
        let want = shared.budget.reserve(shared.options.batch);
        if want == 0 {
            if shared.budget.exhausted() {
                return;
            }
            // The reclaimer holds the rest for a moment; it may give some back.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = shared.budget.spent() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => continue,
            }
        }
        let step = tokio::select! {
            // What was reserved goes back: a consumer stopped alone (a
            // sealed shard its group drained) leaves its share of a
            // shared limit to the others.
            _ = cancel.cancelled() => {
                shared.budget.settle(want, 0);
                return;
            }
            _ = switches.changed() => {
                shared.budget.settle(want, 0);
                tracing::info!(stream = %shared.stream, to = %shared.connector.server_addr(),
                    "master switched; moving the blocking read");
                match shared.connector.dedicated(&shared.stream, shared.options.block).await {
                    Ok(c) => conn = c,
                    Err(e) => tracing::warn!(error = %e, "reconnect failed"),
                }
                if !noack {
                    phase = Phase::Pending(StreamId::MIN);
                }
                continue;
            }
            r = read_once(&shared, &mut conn, &mut phase, &in_flight, noack, want) => r,
        };
        let got = step.as_ref().map(Vec::len).unwrap_or(0);
        shared.budget.settle(want, got);
        if got == 0 && shared.budget.is_limited() {
            // Let the other shards' readers and this consumer's retry taker,
            // polling for budget, have what this empty read gave back before
            // reserving it again.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        }
        match step {
            Ok(deliveries) => {
                crate::metrics::delivered(deliveries.len());
                backoff.reset();
                failing_since = None;
                if !super::delivery::send_all(&shared, &tx, &cancel, deliveries).await {
                    return;
                }
            }
            Err(e) if e.is_retryable() => {
                let since = *failing_since.get_or_insert_with(std::time::Instant::now);
                if let Some(limit) = shared.connector.options().reconnect_timeout {
                    if since.elapsed() >= limit {
                        let gave_up = crate::Error::GaveUp {
                            what: format!("reading {} as group {}", shared.stream, shared.group),
                            after: since.elapsed(),
                            cause: Box::new(e),
                        };
                        let _ = tx.send(Err(gave_up)).await;
                        return;
                    }
                }
                let delay = backoff.after(shared.connector.topology(), &e);
                tracing::warn!(stream = %shared.stream, group = %shared.group, error = %e, ?delay,
                    "read failed, reconnecting");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                if let Err(e) = shared.connector.recover().await {
                    tracing::warn!(error = %e, "no server to reconnect to yet");
                    continue;
                }
                match shared
                    .connector
                    .dedicated(&shared.stream, shared.options.block)
                    .await
                {
                    Ok(c) => conn = c,
                    Err(e) => tracing::warn!(error = %e, "reconnect failed"),
                }
                if !noack {
                    phase = Phase::Pending(StreamId::MIN);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

async fn read_once(
    shared: &Arc<Shared>,
    conn: &mut MultiplexedConnection,
    phase: &mut Phase,
    in_flight: &Arc<InFlight>,
    noack: bool,
    count: usize,
) -> Result<Vec<Held>> {
    let opts = &shared.options;
    if let (Phase::New, Some(fence), false) = (&*phase, &opts.fence, noack) {
        return read_new_fenced(shared, conn, in_flight, fence, count).await;
    }
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(&shared.group)
        .arg(&shared.consumer)
        .arg("COUNT")
        .arg(count);
    match phase {
        Phase::Pending(after) => {
            cmd.arg("STREAMS").arg(&shared.stream).arg(*after);
        }
        Phase::New => {
            cmd.arg("BLOCK").arg(
                u64::try_from(opts.block.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
            if noack {
                cmd.arg("NOACK");
            }
            cmd.arg("STREAMS").arg(&shared.stream).arg(">");
        }
    }
    let v: Value = explained(cmd.query_async(conn).await, conn, shared, "XREADGROUP").await?;
    let (entries, deleted) = reply::read_reply(v, "XREADGROUP")?;
    let entries = shared.admit(entries);
    match phase {
        Phase::Pending(_) => {
            let last = entries
                .iter()
                .map(|e| e.id)
                .chain(deleted.iter().copied())
                .max();
            if !deleted.is_empty() {
                // Pending but deleted (trimmed or XDEL'd): nothing left to
                // process, so drop them from the pending list.
                for id in &deleted {
                    shared.acker.ack(*id);
                }
            }
            match last {
                Some(last) => *phase = Phase::Pending(last),
                None => {
                    *phase = Phase::New;
                    return Ok(Vec::new());
                }
            }
            // Entries still held (a re-read after a reconnect) are being
            // worked on already: not handed out twice.
            Ok(entries
                .into_iter()
                .filter(|e| in_flight.insert(e.id))
                .map(|e| Held::new(e, Source::Pending, in_flight))
                .collect())
        }
        Phase::New => Ok(entries
            .into_iter()
            .filter(|e| in_flight.insert(e.id))
            .map(|e| Held::new(e, Source::New, in_flight))
            .collect()),
    }
}

/// Ordered mode's read of new entries: `XREADGROUP` behind the fence
/// (`lua/read_new.lua`), so an owner that lost its lease takes nothing.
/// When nothing is new it waits on a plain `XREAD BLOCK` after the
/// stream's newest entry (a script cannot block), then returns nothing;
/// the loop reads again through the fence.
async fn read_new_fenced(
    shared: &Arc<Shared>,
    conn: &mut MultiplexedConnection,
    in_flight: &Arc<InFlight>,
    fence: &crate::lease::Fence,
    count: usize,
) -> Result<Vec<Held>> {
    let read = ReadNewFenced {
        shared,
        fence,
        count,
    }
    .invoke(conn)
    .await;
    let (entries, newest) = explained(read, conn, shared, "XREADGROUP (fenced)").await??;
    if entries.is_empty() {
        let after = match newest {
            Value::Nil => "0-0".to_string(),
            v => reply::text(&v),
        };
        let block = u64::try_from(shared.options.block.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let _: Value = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(block)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(shared.stream.as_str())
            .arg(after)
            .query_async(conn)
            .await
            .map_err(|e| crate::Error::redis(format!("XREAD {}", shared.stream), e))?;
        return Ok(Vec::new());
    }
    let entries = shared.admit(entries);
    Ok(entries
        .into_iter()
        .filter(|e| in_flight.insert(e.id))
        .map(|e| Held::new(e, Source::New, in_flight))
        .collect())
}

/// `r`, or its error explained (a missing group or stream named, see
/// [`explain::explain_group`]).
async fn explained<T>(
    r: redis::RedisResult<T>,
    conn: &MultiplexedConnection,
    shared: &Shared,
    command: &str,
) -> Result<T> {
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let mut c = conn.clone();
            // A fenced read refused (`SKFENCED`) is `Error::Fenced`.
            Err(
                crate::scripts::settle_error(&mut c, &shared.stream, &shared.group, command, e)
                    .await,
            )
        }
    }
}

/// `lua/read_new.lua` behind `lua/fence.lua`: its KEYS and ARGV, and its
/// reply `{XREADGROUP reply, the stream's newest ID}`.
struct ReadNewFenced<'a> {
    shared: &'a Shared,
    fence: &'a crate::lease::Fence,
    count: usize,
}

impl ReadNewFenced<'_> {
    /// The script's error as is (to be explained); else the entries read
    /// and the newest ID (`Nil` for an empty stream), or a parse error.
    async fn invoke(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> redis::RedisResult<Result<(Vec<Entry>, Value)>> {
        let v: Value = crate::scripts::READ_NEW_FENCED
            .key(self.shared.stream.as_str())
            .key(&self.fence.key)
            .arg(&self.shared.group)
            .arg(&self.shared.consumer)
            .arg(self.count)
            .arg(&self.fence.token)
            .invoke_async(conn)
            .await?;
        let (got, newest) = match v {
            Value::Array(parts) => {
                let mut parts = parts.into_iter();
                (
                    parts.next().unwrap_or(Value::Nil),
                    parts.next().unwrap_or(Value::Nil),
                )
            }
            _ => (Value::Nil, Value::Nil),
        };
        Ok(reply::read_reply(got, "XREADGROUP").map(|(entries, _)| (entries, newest)))
    }
}
