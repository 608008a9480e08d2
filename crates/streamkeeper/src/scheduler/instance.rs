//! One scheduler instance: polls the due set, claims due ticks through
//! the claim script ([`super::claim`]) and hands two-step ticks to the
//! outbox path. Any number run at once; no leader, no locks.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::claim::{ClaimBatch, ClaimItem, ClaimReply};
use super::handle::{DueTimes, Scheduler};
use super::model::Schedule;
use super::outbox::TwoStepTick;
use crate::error::{Error, Result};
use crate::retry::now_ms;

/// How often an idle instance looks at the due set at most.
const POLL: Duration = Duration::from_millis(100);

/// Schedules claimed per script call.
const BATCH: usize = 300;

/// How long an instance leaves a schedule alone whose target key is not a
/// stream (its due time stays, so the tick waits, not lost).
const BLOCKED_RETRY_MS: u64 = 1_000;

/// What one instance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Ticks this instance appended.
    pub emitted: u64,
    /// Schedule transitions it won.
    pub claimed: u64,
}

impl Scheduler {
    /// Runs one instance until `shutdown` is cancelled. Any number may run
    /// at once, in any processes; each due tick is emitted exactly once.
    pub async fn run(&self, instance: &str, shutdown: CancellationToken) -> Result<InstanceStats> {
        let mut stats = InstanceStats::default();
        let mut due_estimate = 0u64;
        let mut blocked: HashMap<String, u64> = HashMap::new();
        tracing::info!(%instance, "scheduler instance started");
        loop {
            let wait = match self
                .poll_once(&mut stats, &mut due_estimate, &mut blocked)
                .await
            {
                Ok(w) => w,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "scheduler poll failed; reconnecting");
                    let _ = self.connector.recover().await;
                    Duration::from_millis(500)
                }
                Err(e) => return Err(e),
            };
            if wait.is_zero() {
                if shutdown.is_cancelled() {
                    break;
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        tracing::info!(%instance, emitted = stats.emitted, "scheduler instance stopped");
        Ok(stats)
    }

    /// One poll: claims what is due; returns how long to wait before the
    /// next (zero when there may be more due right now).
    async fn poll_once(
        &self,
        stats: &mut InstanceStats,
        due_estimate: &mut u64,
        blocked: &mut HashMap<String, u64>,
    ) -> Result<Duration> {
        let now = now_ms();
        // Stale outbox ticks: looked for about once a second.
        let last = self
            .last_recovery
            .load(std::sync::atomic::Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000 {
            self.last_recovery
                .store(now, std::sync::atomic::Ordering::Relaxed);
            self.recover_outbox(now).await?;
        }
        let mut conn = self.connector.shared();
        // Instances start at random places in a large due set, so they
        // rarely race for the same schedules (a lost race costs a no-op).
        let spread = due_estimate.saturating_sub(BATCH as u64);
        let offset = if spread > 0 {
            rand::random::<u64>() % (spread + 1)
        } else {
            0
        };
        // One round trip: how many are due, a batch of them, and the
        // earliest due time (to sleep until it when none is due).
        let (count, due, head): (u64, DueTimes, DueTimes) = redis::pipe()
            .cmd("ZCOUNT")
            .arg(&self.due)
            .arg("-inf")
            .arg(now)
            .cmd("ZRANGEBYSCORE")
            .arg(&self.due)
            .arg("-inf")
            .arg(now)
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(offset)
            .arg(BATCH)
            .cmd("ZRANGE")
            .arg(&self.due)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("reading due schedules", e))?;
        *due_estimate = count;
        if due.is_empty() && count > 0 {
            // The window moved past the end while others claimed: look again.
            return Ok(Duration::ZERO);
        }
        if due.is_empty() {
            let until = head
                .first()
                .map_or(u64::MAX, |(_, s)| (*s as u64).saturating_sub(now));
            return Ok(Duration::from_millis(until)
                .min(POLL)
                .max(Duration::from_millis(1)));
        }
        let full = due.len() == BATCH;
        // Definitions: fetch the JSON of all due schedules, parse only what changed.
        let names: Vec<&str> = due.iter().map(|(n, _)| n.as_str()).collect();
        let jsons: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&self.schedules)
            .arg(&names)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("reading schedule definitions", e))?;
        let mut batch = ClaimBatch::default();
        let mut two_step: Vec<TwoStepTick> = Vec::new();
        let mut soonest_jitter = u64::MAX;
        let mut orphans = Vec::new();
        blocked.retain(|_, until| *until > now);
        // Targets of the schedules in this claim, to name them in errors.
        let mut target_of: HashMap<String, String> = HashMap::new();
        for ((name, score), json) in due.iter().zip(jsons) {
            if blocked.contains_key(name) {
                continue;
            }
            let Some(json) = json else {
                // A due time without a definition (removed meanwhile).
                orphans.push(name.as_str());
                continue;
            };
            // Parsed on every claim, not cached: a parse costs about a
            // microsecond, while a cache of every definition grew with the
            // number of schedules (1M schedules: hundreds of MB per
            // instance, and its rehashes stalled the poll loop for
            // hundreds of ms).
            let schedule = match serde_json::from_str::<Schedule>(&json) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(schedule = %name, error = %e, "unreadable schedule definition; skipped");
                    continue;
                }
            };
            target_of.insert(name.clone(), schedule.target.to_string());
            let due_ms = *score as u64;
            let offset = schedule.jitter_offset(due_ms);
            if now < due_ms + offset {
                soonest_jitter = soonest_jitter.min(due_ms + offset - now);
                continue;
            }
            let (ticks, next) = schedule.plan(due_ms, now);
            let target = if self.uses_two_step(&schedule.target) {
                for t in &ticks {
                    two_step.push((
                        name.clone(),
                        schedule.target.clone(),
                        *t,
                        schedule.fields.clone(),
                    ));
                }
                None
            } else {
                Some(schedule.target.clone())
            };
            batch.push(ClaimItem {
                name: name.clone(),
                expected_due: due_ms,
                next_due: next,
                target,
                ticks,
                fields: schedule.fields.clone(),
            });
        }
        let items = batch.len();
        if !orphans.is_empty() {
            redis::cmd("ZREM")
                .arg(&self.due)
                .arg(&orphans)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| Error::redis("removing orphan due times", e))?;
        }
        if items > 0 {
            let reply: ClaimReply = batch
                .invoke(&mut conn, &self.due, &self.state, &self.outbox, now)
                .await?;
            for (name, kind) in &reply.skipped {
                let target = target_of.get(name).cloned();
                tracing::error!(
                    "schedule {name}: target {} is a {kind}, not a stream; its \
                     tick waits until that key is a stream or deleted",
                    target.as_deref().unwrap_or("?")
                );
                blocked.insert(name.clone(), now + BLOCKED_RETRY_MS);
            }
            stats.emitted += reply.emitted;
            stats.claimed += reply.claimed;
            for item in reply
                .claimed_items
                .iter()
                .filter_map(|&k| batch.items().get(k))
            {
                crate::metrics::ticks_emitted(&item.name, now, &item.ticks);
            }
            let queued = reply.queued;
            // Second step, for the ticks this call queued (the script
            // names them; ticks another instance won are its to send).
            for (name, target, due_tick, fields) in two_step {
                if queued.contains(&format!("{name} {due_tick}")) {
                    self.emit_or_log(&name, &target, due_tick, &fields).await?;
                }
            }
        }
        if full || items > 0 {
            // More may be due right now; the next poll finds out (and, if
            // nothing is, sleeps until the earliest due time).
            return Ok(Duration::ZERO);
        }
        Ok(
            Duration::from_millis(soonest_jitter.min(POLL.as_millis() as u64))
                .max(Duration::from_millis(1)),
        )
    }
}
