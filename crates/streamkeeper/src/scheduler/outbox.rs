//! The two-step emit (Redis Cluster, target in another hash slot): a tick
//! the claim script queued in `{N}:outbox` is appended with a dedupe key
//! in the target's slot, then cleared; ticks whose claimer died between
//! the steps are emitted by any instance after [`OUTBOX_STALE_MS`].

use std::collections::HashMap;
use std::time::Duration;

use super::handle::Scheduler;
use crate::error::{Error, Result};
use crate::types::StreamKey;

/// How long a tick may sit in the outbox before any instance emits it
/// (its claimer probably died between the two steps).
pub(super) const OUTBOX_STALE_MS: u64 = 2_000;

/// How long the dedupe key of a two-step tick lives.
const TICK_DEDUPE: Duration = Duration::from_secs(24 * 3600);

/// A tick for the outbox path: schedule, target, due time, fields.
pub(super) type TwoStepTick = (String, StreamKey, u64, Vec<(String, String)>);

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
        tick.push((
            crate::meta::SCHEDULE.as_bytes().to_vec(),
            name.as_bytes().to_vec(),
        ));
        tick.push((
            crate::meta::DUE.as_bytes().to_vec(),
            due.to_string().into_bytes(),
        ));
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
    pub(super) async fn emit_or_log(
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
    pub(super) async fn recover_outbox(&self, now: u64) -> Result<()> {
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
            let target = match self.get(name).await? {
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
            };
            // The stored array already holds sk-schedule and sk-due; strip them.
            let flat: Vec<String> = serde_json::from_str(&json)?;
            let fields: Vec<(String, String)> = flat
                .chunks(2)
                .filter(|p| p.len() == 2 && !crate::meta::is_meta(p[0].as_bytes()))
                .map(|p| (p[0].clone(), p[1].clone()))
                .collect();
            tracing::info!(schedule = %name, due, "emitting a tick its claimer left in the outbox");
            self.emit_or_log(name, &target, due, &fields).await?;
        }
        Ok(())
    }
}
