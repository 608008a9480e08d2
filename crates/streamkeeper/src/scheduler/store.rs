//! Schedule definitions and their state: add, remove, get, pause,
//! list (`{N}:schedules`, `{N}:due`, `{N}:state`).

use std::collections::HashMap;

use super::handle::{DueTimes, Scheduler};
use super::model::Schedule;
use crate::error::{Error, Result};
use crate::retry::now_ms;

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

impl Scheduler {
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

    /// Adds or replaces many schedules in pipelined batches (each
    /// schedule's definition and due time in one `MULTI`); validated
    /// first, so nothing is stored if any is invalid. Batches are not one
    /// transaction: after a connection loss, some are stored and running
    /// the same import again completes it (an add replaces).
    ///
    /// Interval schedules' first due times are spread over one interval,
    /// stable per name ([`Schedule::first_due_spread`]), so many schedules
    /// stored together do not all fall due at once; cron schedules keep
    /// their cron times.
    pub async fn add_batch(&self, schedules: &[Schedule]) -> Result<()> {
        for s in schedules {
            s.validate()?;
        }
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for s in schedules {
            pipe.hset(&self.schedules, &s.name, serde_json::to_string(s)?)
                .ignore();
            if s.paused {
                pipe.zrem(&self.due, &s.name).ignore();
            } else {
                pipe.zadd(&self.due, &s.name, s.first_due_spread(now))
                    .ignore();
            }
        }
        let mut conn = self.connector.shared();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("storing {} schedules", schedules.len()), e))
    }

    /// One page of schedule definitions (`HSCAN`): the next cursor (0 when
    /// done) and the schedules. Memory stays bounded by the page, however
    /// many schedules there are.
    pub async fn scan(&self, cursor: u64, count: usize) -> Result<(u64, Vec<Schedule>)> {
        let mut conn = self.connector.shared();
        let (next, flat): (u64, Vec<String>) = redis::cmd("HSCAN")
            .arg(&self.schedules)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("scanning schedules", e))?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        for pair in flat.chunks(2) {
            if let [_, json] = pair {
                out.push(serde_json::from_str(json)?);
            }
        }
        Ok((next, out))
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
}
