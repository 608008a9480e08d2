//! History that survives a restart: every `--history-every` (10 s) one
//! `serve` instance (the holder of the lease `{N}:history-writer`) appends
//! one sample of every stream's length and every group's lag to the stream
//! `{N}:history`; charts and sparklines read it back.
//!
//! Bounded in the user's Redis at any scale: a sample is deflated JSON
//! (field `z`; about 20 KB at 1,000 streams × 3 groups), and the stream is
//! trimmed to as many samples as fit in `--history-max` bytes (64 MB by
//! default). Bounded in `serve`: a chart reads at most [`MAX_POINTS`]
//! samples, spread over the whole history (downsampled in Redis with one
//! `XRANGE … COUNT 1` per point), and keeps one sample in memory at a time.
//!
//! One writer at a time by lease, and a sample is skipped when the last one
//! is younger than 90 % of the period, so two instances never double the
//! points even while the lease changes hands. Samples written before this
//! format (plain JSON in field `d`) are still read.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use streamkeeper::keys::SchedulerKeys;
use streamkeeper::lease::Lease;
use streamkeeper::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// How often samples are written unless `--history-every` says otherwise.
pub const EVERY: Duration = Duration::from_secs(10);

/// Bytes of history kept unless `--history-max` says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;

/// Most points one chart request returns.
pub const MAX_POINTS: usize = 240;

/// Samples a sparkline shows.
pub const TREND: usize = 30;

/// Largest sample inflated (a hand-written giant is refused, not read).
const MAX_SAMPLE_BYTES: u64 = 32 << 20;

/// What one Redis entry costs beside its value (ID, field name, its
/// listpack node and radix-tree leaf).
const ENTRY_OVERHEAD: u64 = 256;

/// The history stream of namespace `ns`: `{ns}:history`.
pub fn key(ns: &str) -> String {
    SchedulerKeys::new(ns).history
}

/// Per stream name, per group name: outstanding over the last samples.
pub type Trends = HashMap<String, HashMap<String, Vec<u64>>>;

/// The sparklines, keyed by the newest sample's ID.
#[derive(Debug)]
pub(crate) struct Cache {
    trends: Mutex<Option<(String, Arc<Trends>)>>,
    /// Chart reads at a time.
    reads: tokio::sync::Semaphore,
}

impl Cache {
    pub(crate) fn new() -> Self {
        Cache {
            trends: Mutex::new(None),
            reads: tokio::sync::Semaphore::new(2),
        }
    }
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

/// The ms part of a stream ID.
fn id_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

async fn range(
    conn: &mut streamkeeper::SharedConn,
    cmd: &str,
    k: &str,
    from: &str,
    to: &str,
    count: usize,
) -> Result<Entries> {
    redis::cmd(cmd)
        .arg(k)
        .arg(from)
        .arg(to)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|e| Error::redis("XRANGE history", e))
}

/// Appends one sample now, unless the newest is younger than 90 % of
/// `every`. Returns whether it wrote.
pub async fn sample_once(state: &AppState, every: Duration) -> Result<bool> {
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let now = streamkeeper::retry::now_ms();
    let newest = range(&mut conn, "XREVRANGE", &k, "+", "-", 1).await?;
    let min_gap = u64::try_from((every * 9 / 10).as_millis()).unwrap_or(u64::MAX);
    if let Some((id, _)) = newest.first() {
        if now.saturating_sub(id_ms(id)) < min_gap {
            return Ok(false);
        }
    }
    let o = crate::collector::Collector::for_sample(state, Duration::from_secs(2))
        .await
        .map_err(|e| Error::InvalidInput(format!("no overview to sample: {e}")))?;
    append(state, &o).await?;
    Ok(true)
}

/// Appends `o` as one sample and trims the history to `--history-max`:
/// first by an estimate of what a sample costs, then, when Redis reports
/// more (`MEMORY USAGE`; small samples cost more than their bytes), down
/// to the share that fits. A user without `MEMORY` rights keeps the
/// estimate.
pub async fn append(state: &AppState, o: &crate::overview::Overview) -> Result<()> {
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let max = state.config().history_max;
    let z = encode(o);
    // What one sample costs Redis: the value rounded up to the
    // allocator's next size class (at most 25 % more), plus the entry.
    let cost = z.len() as u64 * 5 / 4 + ENTRY_OVERHEAD;
    let keep = (max / cost).max(2);
    redis::cmd("XADD")
        .arg(&k)
        .arg("MAXLEN")
        .arg(keep)
        .arg("*")
        .arg("z")
        .arg(z)
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| Error::redis("XADD history", e))?;
    let used: Option<u64> = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(&k)
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap_or(None);
    if let Some(used) = used.filter(|u| *u > max) {
        let len: u64 = redis::cmd("XLEN")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("XLEN history", e))?;
        // The share that fits, with 5 % to spare.
        let fits = (u128::from(len) * u128::from(max) * 95 / (u128::from(used) * 100)) as u64;
        redis::cmd("XTRIM")
            .arg(&k)
            .arg("MAXLEN")
            .arg(fits.max(2))
            .query_async::<u64>(&mut conn)
            .await
            .map_err(|e| Error::redis("XTRIM history", e))?;
    }
    Ok(())
}

/// One sample: `{stream: {"len", "added", "dlq", "g": {group:
/// [outstanding, time_lag_ms, entries_read]}}}`, deflated.
pub fn encode(o: &crate::overview::Overview) -> Vec<u8> {
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
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(Value::Object(streams).to_string().as_bytes());
    z.finish().unwrap_or_default()
}

/// The streams of one stored sample (either format), or `None` if it is
/// not one.
fn decode(fields: Vec<(String, Vec<u8>)>) -> Option<Map<String, Value>> {
    let (name, value) = fields.into_iter().find(|(f, _)| f == "z" || f == "d")?;
    let text = if name == "z" {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(value.as_slice())
            .take(MAX_SAMPLE_BYTES)
            .read_to_end(&mut out)
            .ok()?;
        out
    } else {
        value
    };
    match serde_json::from_slice(&text).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Stored samples spread over the whole history, oldest first, at most
/// `points`: all of them when there are fewer, else the first sample at
/// or after each of `points` evenly spaced times. Each is handed to `f`
/// as soon as it is read (one in memory at a time).
async fn spread(
    state: &AppState,
    points: usize,
    mut f: impl FnMut(u64, Map<String, Value>),
) -> Result<()> {
    let _permit = state.inner.history.reads.acquire().await;
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let first = range(&mut conn, "XRANGE", &k, "-", "+", 1).await?;
    let last = range(&mut conn, "XREVRANGE", &k, "+", "-", 1).await?;
    let (Some((first, _)), Some((last, _))) = (first.first(), last.first()) else {
        return Ok(());
    };
    let (t0, t1) = (id_ms(first), id_ms(last));
    let points = points.clamp(1, MAX_POINTS);
    let mut seen = String::new();
    for i in 0..points {
        let t = if points == 1 {
            t1
        } else {
            t0 + (t1 - t0) * i as u64 / (points as u64 - 1)
        };
        // After the last one read, so spread-out points never repeat.
        let from = if !seen.is_empty() && id_ms(&seen) >= t {
            format!("({seen}")
        } else {
            t.to_string()
        };
        let got = range(&mut conn, "XRANGE", &k, &from, "+", 1).await?;
        let Some((id, fields)) = got.into_iter().next() else {
            break;
        };
        if id == seen {
            continue;
        }
        seen.clone_from(&id);
        if let Some(s) = decode(fields) {
            f(id_ms(&id), s);
        }
    }
    Ok(())
}

/// Chart points of one stream, oldest first, at most `points` spread over
/// the whole history: `[{"t": ms, "len", "added", "dlq", "g": {group:
/// [outstanding, time_lag_ms, entries_read]}}]`.
pub(crate) async fn series(state: &AppState, stream: &str, points: usize) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    spread(state, points, |t, mut s| {
        if let Some(Value::Object(mut row)) = s.remove(stream) {
            row.insert("t".into(), json!(t));
            out.push(Value::Object(row));
        }
    })
    .await?;
    Ok(out)
}

/// Outstanding per group over the last [`TREND`] samples, for the
/// overview's sparklines; read again only when a new sample was written.
pub(crate) async fn trends(state: &AppState) -> Result<Arc<Trends>> {
    let k = key(&state.config().namespace);
    let mut conn = state.redis().shared();
    let newest = range(&mut conn, "XREVRANGE", &k, "+", "-", 1).await?;
    let newest_id = newest.first().map(|(id, _)| id.clone()).unwrap_or_default();
    if let Ok(last) = state.inner.history.trends.lock() {
        if let Some((id, t)) = last.as_ref() {
            if *id == newest_id {
                return Ok(t.clone());
            }
        }
    }
    let _permit = state.inner.history.reads.acquire().await;
    let rows = range(&mut conn, "XREVRANGE", &k, "+", "-", TREND).await?;
    let mut trends = Trends::new();
    for (_, fields) in rows.into_iter().rev() {
        let Some(sample) = decode(fields) else {
            continue;
        };
        for (stream, row) in sample {
            let Some(groups) = row.get("g").and_then(Value::as_object) else {
                continue;
            };
            let entry = trends.entry(stream).or_default();
            for (g, v) in groups {
                let out = v.get(0).and_then(Value::as_u64).unwrap_or(0);
                entry.entry(g.clone()).or_default().push(out);
            }
        }
    }
    let trends = Arc::new(trends);
    if let Ok(mut last) = state.inner.history.trends.lock() {
        *last = Some((newest_id, trends.clone()));
    }
    Ok(trends)
}
