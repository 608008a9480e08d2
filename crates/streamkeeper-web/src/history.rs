//! History that survives a restart: every 10 s one `serve` instance (the
//! holder of the lease `{N}:history-writer`) appends one sample of every
//! stream's length and every group's lag to the capped stream
//! `{N}:history`; charts and sparklines read it back.
//!
//! One writer at a time by lease, and a sample is skipped when the last one
//! is younger than 90 % of the period, so two instances never double the
//! points even while the lease changes hands.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use streamkeeper::keys::SchedulerKeys;
use streamkeeper::lease::Lease;
use streamkeeper::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// How often samples are written.
pub const EVERY: Duration = Duration::from_secs(10);

/// Samples kept (`MAXLEN ~`): a day at one per 10 s.
pub const KEEP: u64 = 8_640;

/// The history stream of namespace `ns`: `{ns}:history`.
pub fn key(ns: &str) -> String {
    SchedulerKeys::new(ns).history
}

/// Samples read once: the newest sample's ID, how many were asked, them.
type Read = (String, usize, Arc<Vec<Value>>);

/// The last samples read, keyed by the newest sample's ID.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    last: Mutex<Option<Read>>,
}

/// Writes a sample every `every` while holding the lease, until
/// `shutdown`. Errors (Redis down) are logged and the loop goes on.
pub async fn run(state: AppState, every: Duration, shutdown: CancellationToken) {
    let ns = state.config().namespace.clone();
    let holder = format!("serve-{}-{}", std::process::id(), crate::hex(&rand_bytes()));
    let lease = Lease::plain(
        state.redis(),
        SchedulerKeys::new(&ns).history_writer,
        holder,
        every * 3,
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        match lease.acquire().await {
            Ok(true) => {
                if let Err(e) = sample_once(&state, every).await {
                    tracing::warn!(error = %e, "history sample not written");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "history lease not checked"),
        }
    }
    let _ = lease.release().await;
}

fn rand_bytes() -> [u8; 4] {
    use rand::Rng;
    let mut b = [0u8; 4];
    rand::rng().fill(&mut b);
    b
}

/// Appends one sample now, unless the newest is younger than 90 % of
/// `every`. Returns whether it wrote.
pub async fn sample_once(state: &AppState, every: Duration) -> Result<bool> {
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let now = streamkeeper::retry::now_ms();
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(&k)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("XREVRANGE history", e))?;
    let min_gap = u64::try_from((every * 9 / 10).as_millis()).unwrap_or(u64::MAX);
    if let Some((id, _)) = newest.first() {
        let ms: u64 = id
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if now.saturating_sub(ms) < min_gap {
            return Ok(false);
        }
    }
    let o = crate::overview::collect(state).await?;
    let mut streams = Map::new();
    for s in &o.streams {
        let Some(len) = s.length else { continue };
        let mut groups = Map::new();
        for g in &s.groups {
            groups.insert(
                g.name.clone(),
                json!([g.outstanding, g.time_lag_ms, g.entries_read]),
            );
        }
        streams.insert(
            s.name.clone(),
            json!({ "len": len, "added": s.entries_added, "dlq": s.dead_letters, "g": groups }),
        );
    }
    let data = Value::Object(streams).to_string();
    redis::cmd("XADD")
        .arg(&k)
        .arg("MAXLEN")
        .arg("~")
        .arg(KEEP)
        .arg("*")
        .arg("d")
        .arg(data)
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| Error::redis("XADD history", e))?;
    Ok(true)
}

/// The last `count` samples, oldest first, each `{"t": ms, "s": {stream:
/// {"len", "added", "dlq", "g": {group: [outstanding, time_lag_ms,
/// entries_read]}}}}`. Read again only when a new sample was written.
pub(crate) async fn samples(state: &AppState, count: usize) -> Result<Arc<Vec<Value>>> {
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let newest: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(&k)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("XREVRANGE history", e))?;
    let newest_id = newest.first().map(|(id, _)| id.clone()).unwrap_or_default();
    if let Ok(last) = state.inner.history.last.lock() {
        if let Some((id, n, v)) = last.as_ref() {
            if *id == newest_id && *n == count {
                return Ok(v.clone());
            }
        }
    }
    let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(&k)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis("XREVRANGE history", e))?;
    let mut out: Vec<Value> = rows
        .into_iter()
        .filter_map(|(id, fields)| {
            let t: u64 = id.split('-').next()?.parse().ok()?;
            let d = fields.into_iter().find(|(f, _)| f == "d")?.1;
            let s: Value = serde_json::from_str(&d).ok()?;
            Some(json!({ "t": t, "s": s }))
        })
        .collect();
    out.reverse();
    let out = Arc::new(out);
    if let Ok(mut last) = state.inner.history.last.lock() {
        *last = Some((newest_id, count, out.clone()));
    }
    Ok(out)
}
