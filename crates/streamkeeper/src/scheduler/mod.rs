//! The distributed scheduler: interval and cron ticks appended to streams.
//!
//! Definitions live in `{N}:schedules` (hash name → JSON) and next due
//! times in `{N}:due` (zset name → ms); `{N}:state` remembers the last tick
//! of each schedule. Any number of instances run [`Scheduler::run`]: each
//! polls the due set and claims ticks through one Lua script that checks
//! the due time it saw, moves it forward and appends the ticks — so a tick
//! is emitted by exactly one instance, and an instance that dies before the
//! script leaves the tick to the others. No leader, no locks. Due times
//! live in Redis: a restart delays nothing, and edits take effect at the
//! next poll (≤ 100 ms).
//!
//! Two emit paths:
//! - **one script** (single server or Sentinel, or a target in the
//!   namespace's hash slot): claim and `XADD` happen together.
//! - **two-step** (Redis Cluster with a target in another slot, or forced
//!   with [`Scheduler::two_step`]): the claim script moves the due time and
//!   puts the tick in `{N}:outbox`; the instance then appends it with a
//!   dedupe key in the target's slot (`{T}:once:tick:<name>:<due>`, see
//!   [`crate::exactly_once::send_once`]) and clears the outbox entry. An
//!   instance that dies between the steps leaves the tick in the outbox,
//!   and any instance emits outbox ticks older than 2 s; the dedupe key
//!   keeps that exactly-once.

mod model;

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;
use tokio_util::sync::CancellationToken;

pub use model::{cron_next, Missed, Schedule, Spec, MAX_DUE_MS, MIN_EVERY};

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::retry::now_ms;
use crate::scripts;
use crate::types::StreamKey;

/// The default namespace of scheduler keys.
pub const DEFAULT_NAMESPACE: &str = "streamkeeper";

/// How often an idle instance looks at the due set at most.
const POLL: Duration = Duration::from_millis(100);

/// Schedules claimed per script call.
const BATCH: usize = 300;

/// How long an instance leaves a schedule alone whose target key is not a
/// stream (its due time stays, so the tick waits, not lost).
const BLOCKED_RETRY_MS: u64 = 1_000;

impl Scheduler {
    /// Appends one two-step tick with its dedupe key, then removes it from
    /// the outbox.
    async fn emit_from_outbox(
        &self,
        name: &str,
        target: &StreamKey,
        due: u64,
        fields: &[(String, String)],
    ) -> Result<()> {
        let field = format!("{name} {due}");
        let mut conn = self.connector.shared();
        let mut tick: Vec<(Vec<u8>, Vec<u8>)> = fields
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        tick.push((b"sk-schedule".to_vec(), name.as_bytes().to_vec()));
        tick.push((b"sk-due".to_vec(), due.to_string().into_bytes()));
        let stream = target.clone();
        crate::exactly_once::send_once(
            &self.connector,
            &stream,
            &format!("tick:{name}:{due}"),
            TICK_DEDUPE,
            &tick,
        )
        .await?;
        redis::cmd("HDEL")
            .arg(&self.outbox)
            .arg(&field)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis("clearing the schedule outbox", e))
    }

    /// [`Self::emit_from_outbox`], where a failure that retrying cannot fix
    /// (the target is not a stream) is logged with schedule and key; the
    /// tick stays in the outbox and is tried again later.
    async fn emit_or_log(
        &self,
        name: &str,
        target: &StreamKey,
        due: u64,
        fields: &[(String, String)],
    ) -> Result<()> {
        match self.emit_from_outbox(name, target, due, fields).await {
            Err(e) if !e.is_retryable() => {
                tracing::error!(
                    "schedule {name}: cannot append its tick to {target}: {e}; \
                     the tick waits in the outbox"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Emits outbox ticks older than [`OUTBOX_STALE_MS`]: their claimer
    /// died between the two steps.
    async fn recover_outbox(
        &self,
        cache: &HashMap<String, (String, Schedule)>,
        now: u64,
    ) -> Result<()> {
        let mut conn = self.connector.shared();
        let queued: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.outbox)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("reading the schedule outbox", e))?;
        for (field, json) in queued {
            let Some((name, due)) = field.rsplit_once(' ') else {
                continue;
            };
            let Ok(due) = due.parse::<u64>() else {
                continue;
            };
            if now.saturating_sub(due) < OUTBOX_STALE_MS {
                continue;
            }
            let target = match cache.get(name) {
                Some((_, s)) => s.target.clone(),
                None => match self.get(name).await? {
                    Some(s) => s.target,
                    None => {
                        tracing::warn!(schedule = %name, due, "dropping an outbox tick of a removed schedule");
                        redis::cmd("HDEL")
                            .arg(&self.outbox)
                            .arg(&field)
                            .query_async::<()>(&mut conn)
                            .await
                            .map_err(|e| Error::redis("clearing the schedule outbox", e))?;
                        continue;
                    }
                },
            };
            // The stored array already holds sk-schedule and sk-due; strip them.
            let flat: Vec<String> = serde_json::from_str(&json)?;
            let fields: Vec<(String, String)> = flat
                .chunks(2)
                .filter(|p| p.len() == 2 && !p[0].starts_with("sk-"))
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            tracing::info!(schedule = %name, due, "emitting a tick its claimer left in the outbox");
            self.emit_or_log(name, &target, due, &fields).await?;
        }
        Ok(())
    }
}

/// A tick for the outbox path: schedule, target, due time, fields.
type TwoStepTick = (String, StreamKey, u64, Vec<(String, String)>);

/// Names with their due times (`ZRANGE … WITHSCORES`).
type DueTimes = Vec<(String, f64)>;

/// A schedule with its state, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScheduleStatus {
    /// The definition.
    pub schedule: Schedule,
    /// Next due time (ms), `None` when paused.
    pub next_due_ms: Option<u64>,
    /// Due time of the last emitted tick.
    pub last_due_ms: Option<u64>,
    /// When the last tick was emitted.
    pub last_fired_ms: Option<u64>,
}

impl ScheduleStatus {
    /// How late the last tick was emitted, in ms.
    pub fn lateness_ms(&self) -> Option<u64> {
        Some(self.last_fired_ms?.saturating_sub(self.last_due_ms?))
    }
}

/// What one instance did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Ticks this instance appended.
    pub emitted: u64,
    /// Schedule transitions it won.
    pub claimed: u64,
}

/// Manages schedules and runs instances in one namespace.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use std::time::Duration;
/// use streamkeeper::scheduler::{Schedule, Scheduler};
/// let scheduler = Scheduler::new(&redis, "streamkeeper");
/// scheduler.add(&Schedule::every("health", Duration::from_secs(30), "checks")?).await?;
/// scheduler.run("instance-1", tokio_util::sync::CancellationToken::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    connector: Connector,
    schedules: String,
    due: String,
    state: String,
    outbox: String,
    two_step: bool,
    last_recovery: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// How long a tick may sit in the outbox before any instance emits it
/// (its claimer probably died between the two steps).
const OUTBOX_STALE_MS: u64 = 2_000;

/// How long the dedupe key of a two-step tick lives.
const TICK_DEDUPE: Duration = Duration::from_secs(24 * 3600);

impl Scheduler {
    /// A scheduler over the keys of namespace `ns`.
    pub fn new(connector: &Connector, ns: &str) -> Self {
        let keys = crate::keys::SchedulerKeys::new(ns);
        Scheduler {
            connector: connector.clone(),
            schedules: keys.schedules,
            due: keys.due,
            state: keys.state,
            outbox: keys.outbox,
            two_step: false,
            last_recovery: Default::default(),
        }
    }

    /// Always use the two-step emit (see the module doc), as Redis Cluster
    /// needs when a target stream is in another hash slot than the
    /// namespace. On one server the one-script path is used unless this
    /// is set.
    pub fn two_step(mut self, on: bool) -> Self {
        self.two_step = on;
        self
    }

    /// Whether ticks of `target` go through the outbox.
    fn uses_two_step(&self, target: &StreamKey) -> bool {
        let cluster = matches!(
            self.connector.topology(),
            crate::conn::Topology::Cluster { .. }
        );
        (self.two_step || cluster)
            && crate::types::key_slot(target.as_str()) != crate::types::key_slot(&self.due)
    }

    /// Adds or replaces a schedule (validated first; nothing is stored on
    /// error). A replaced schedule's next tick is computed from now.
    pub async fn add(&self, schedule: &Schedule) -> Result<()> {
        schedule.validate()?;
        let json = serde_json::to_string(schedule)?;
        let mut pipe = redis::pipe();
        pipe.atomic().hset(&self.schedules, &schedule.name, json);
        if schedule.paused {
            pipe.zrem(&self.due, &schedule.name);
        } else {
            pipe.zadd(&self.due, &schedule.name, schedule.next_after(now_ms()));
        }
        let mut conn = self.connector.shared();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("storing schedule {}", schedule.name), e))
    }

    /// Removes a schedule; `false` if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        let mut conn = self.connector.shared();
        let (n, _, _): (u64, u64, u64) = redis::pipe()
            .atomic()
            .hdel(&self.schedules, name)
            .zrem(&self.due, name)
            .hdel(&self.state, name)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("removing schedule {name}"), e))?;
        Ok(n > 0)
    }

    /// The definition of one schedule.
    pub async fn get(&self, name: &str) -> Result<Option<Schedule>> {
        let mut conn = self.connector.shared();
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.schedules)
            .arg(name)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("HGET schedule", e))?;
        json.map(|j| serde_json::from_str(&j).map_err(Error::from))
            .transpose()
    }

    /// Pauses or resumes a schedule; `false` if there is no such schedule.
    /// Resuming computes the next tick from now (nothing is caught up).
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let Some(mut s) = self.get(name).await? else {
            return Ok(false);
        };
        s.paused = paused;
        self.add(&s).await?;
        Ok(true)
    }

    /// Every schedule with its next due time and last tick, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleStatus>> {
        let mut conn = self.connector.shared();
        let (defs, due, state): (HashMap<String, String>, DueTimes, HashMap<String, String>) =
            redis::pipe()
                .hgetall(&self.schedules)
                .cmd("ZRANGE")
                .arg(&self.due)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .hgetall(&self.state)
                .query_async(&mut conn)
                .await
                .map_err(|e| Error::redis("listing schedules", e))?;
        let due: HashMap<String, u64> = due.into_iter().map(|(n, s)| (n, s as u64)).collect();
        let mut out = Vec::with_capacity(defs.len());
        for (name, json) in defs {
            let schedule: Schedule = serde_json::from_str(&json)?;
            let mut last = state
                .get(&name)
                .map(|s| s.split(' ').map(|p| p.parse::<u64>().ok()));
            let last_due_ms = last.as_mut().and_then(|it| it.next().flatten());
            let last_fired_ms = last.as_mut().and_then(|it| it.next().flatten());
            out.push(ScheduleStatus {
                next_due_ms: due.get(&name).copied(),
                schedule,
                last_due_ms,
                last_fired_ms,
            });
        }
        out.sort_by(|a, b| a.schedule.name.cmp(&b.schedule.name));
        Ok(out)
    }

    /// Runs one instance until `shutdown` is cancelled. Any number may run
    /// at once, in any processes; each due tick is emitted exactly once.
    pub async fn run(&self, instance: &str, shutdown: CancellationToken) -> Result<InstanceStats> {
        let mut stats = InstanceStats::default();
        let mut cache: HashMap<String, (String, Schedule)> = HashMap::new();
        let mut due_estimate = 0u64;
        let mut blocked: HashMap<String, u64> = HashMap::new();
        tracing::info!(%instance, "scheduler instance started");
        loop {
            let wait = match self
                .poll_once(&mut cache, &mut stats, &mut due_estimate, &mut blocked)
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
        cache: &mut HashMap<String, (String, Schedule)>,
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
            self.recover_outbox(cache, now).await?;
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
        let mut targets: Vec<StreamKey> = Vec::new();
        let mut args: Vec<Vec<u8>> = Vec::new();
        let mut two_step: Vec<TwoStepTick> = Vec::new();
        let mut items = 0usize;
        let mut soonest_jitter = u64::MAX;
        let mut orphans = Vec::new();
        blocked.retain(|_, until| *until > now);
        for ((name, score), json) in due.iter().zip(jsons) {
            if blocked.contains_key(name) {
                continue;
            }
            let Some(json) = json else {
                // A due time without a definition (removed meanwhile).
                orphans.push(name.as_str());
                continue;
            };
            let fresh = cache.get(name).is_none_or(|(j, _)| *j != json);
            if fresh {
                match serde_json::from_str::<Schedule>(&json) {
                    Ok(s) => {
                        cache.insert(name.clone(), (json, s));
                    }
                    Err(e) => {
                        tracing::error!(schedule = %name, error = %e, "unreadable schedule definition; skipped");
                        continue;
                    }
                }
            }
            let Some((_, schedule)) = cache.get(name) else {
                continue;
            };
            let due_ms = *score as u64;
            let offset = schedule.jitter_offset(due_ms);
            if now < due_ms + offset {
                soonest_jitter = soonest_jitter.min(due_ms + offset - now);
                continue;
            }
            let (ticks, next) = schedule.plan(due_ms, now);
            let target_index = if self.uses_two_step(&schedule.target) {
                for t in &ticks {
                    two_step.push((
                        name.clone(),
                        schedule.target.clone(),
                        *t,
                        schedule.fields.clone(),
                    ));
                }
                0
            } else {
                let i = match targets.iter().position(|t| *t == schedule.target) {
                    Some(i) => i,
                    None => {
                        targets.push(schedule.target.clone());
                        targets.len() - 1
                    }
                };
                i + 4
            };
            args.push(name.as_bytes().to_vec());
            args.push(due_ms.to_string().into_bytes());
            args.push(next.to_string().into_bytes());
            args.push(target_index.to_string().into_bytes());
            args.push(ticks.len().to_string().into_bytes());
            args.extend(ticks.iter().map(|t| t.to_string().into_bytes()));
            args.push(schedule.fields.len().to_string().into_bytes());
            for (k, v) in &schedule.fields {
                args.push(k.as_bytes().to_vec());
                args.push(v.as_bytes().to_vec());
            }
            items += 1;
        }
        if !orphans.is_empty() {
            redis::cmd("ZREM")
                .arg(&self.due)
                .arg(&orphans)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| Error::redis("removing orphan due times", e))?;
        }
        if items > 0 {
            let mut invocation = scripts::SCHEDULE_CLAIM.key(&self.due);
            invocation.key(&self.state).key(&self.outbox);
            for t in &targets {
                invocation.key(t);
            }
            invocation.arg(now).arg(items);
            for a in &args {
                invocation.arg(a.as_slice());
            }
            let r: redis::RedisResult<Value> = invocation.invoke_async(&mut conn).await;
            let mut queued: std::collections::HashSet<String> = Default::default();
            match r {
                Ok(Value::Array(v)) => {
                    if let Some(Value::Array(fields)) = v.get(2) {
                        queued = fields.iter().map(crate::reply::text).collect();
                    }
                    let num = |i: usize| match v.get(i) {
                        Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                        _ => 0,
                    };
                    if let Some(Value::Array(skipped)) = v.get(3) {
                        for pair in skipped.chunks(2) {
                            let name = crate::reply::text(&pair[0]);
                            let kind = pair.get(1).map(crate::reply::text).unwrap_or_default();
                            let target = cache.get(&name).map(|(_, s)| s.target.to_string());
                            tracing::error!(
                                "schedule {name}: target {} is a {kind}, not a stream; its \
                                 tick waits until that key is a stream or deleted",
                                target.as_deref().unwrap_or("?")
                            );
                            blocked.insert(name, now + BLOCKED_RETRY_MS);
                        }
                    }
                    stats.emitted += num(0);
                    stats.claimed += num(1);
                    metrics::counter!("streamkeeper_schedule_ticks_total").increment(num(0));
                }
                Ok(other) => {
                    return Err(Error::Protocol {
                        command: "schedule claim script",
                        detail: format!("{other:?}"),
                    })
                }
                Err(e) => return Err(Error::redis("schedule claim script", e)),
            }
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
