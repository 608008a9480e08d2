//! The overview: every stream (or `--streams`) with its groups, lag in
//! entries and seconds, dead letters, memory and a health colour.
//!
//! Each stream is inspected on its own ([`streamkeeper::inspect::stream_stat`],
//! 32 at a time), so a missing stream, a name that is not UTF-8 or a group
//! Redis will not describe makes that row say so while the rest works.
//! Memory is sampled at most once a minute per stream, and shown as n/a when
//! the user may not run `MEMORY`. The collector (`collector.rs`) takes it
//! for every caller, so many open pages cost Redis no more than one; the
//! view (`view.rs`) filters, sorts and pages it.
//!
//! A dead-letter stream whose stream is gone (`{S}:dlq` without `S`) is a
//! row of its own, so its dead letters show somewhere.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use streamkeeper::inspect::{self, InspectOptions, StreamStat};
use streamkeeper::keys::StreamKeys;
use streamkeeper::shard::ShardLayout;
use streamkeeper::{Connector, StreamKey};

use crate::names::{self, key_of};
use crate::AppState;

/// Streams inspected at once (pipelined on the shared connection).
const CONCURRENCY: usize = 32;
/// How long a memory sample is reused.
const MEMORY_EVERY: Duration = Duration::from_secs(60);

/// Health of a group against `--max-lag` / `--max-time-lag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Within both thresholds (or none set).
    Ok,
    /// Past half of a threshold.
    Warn,
    /// Past a threshold.
    Bad,
}

/// One group of a stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// The group's name (escaped if not UTF-8).
    pub name: String,
    /// The group's raw name in base64url: how the page addresses it.
    pub key: String,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Not delivered yet.
    pub undelivered: u64,
    /// `pending + undelivered`: lag in entries.
    pub outstanding: u64,
    /// Age of the oldest outstanding entry: lag in time.
    pub time_lag_ms: u64,
    /// Age of the oldest pending entry.
    pub oldest_pending_ms: u64,
    /// When the oldest outstanding entry was added (ms since the epoch; 0
    /// when none): the page counts the time lag up from it between updates.
    pub lag_since_ms: u64,
    /// The last ID delivered to the group.
    pub last_delivered: String,
    /// Entries read by the group (Redis ≥ 7).
    pub entries_read: Option<u64>,
    /// Consumers in the group.
    pub consumers: usize,
    /// Consumers flagged dead (idle while holding entries).
    pub dead_consumers: usize,
    /// Colour from the thresholds.
    pub health: Health,
    /// Entries read per second over the last ~10 s (Redis ≥ 7).
    pub rate_out: Option<f64>,
    /// Outstanding over the last history samples (on a page's rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Vec<u64>>,
}

/// One stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamRow {
    /// The key (escaped if not UTF-8).
    pub name: String,
    /// The raw key in base64url: how the page and the API address it
    /// (two names that display alike never mix).
    pub key: String,
    /// Entries in it (`None` when the row could not be inspected).
    pub length: Option<u64>,
    /// First entry's ID.
    pub first_id: Option<String>,
    /// Last entry's ID.
    pub last_id: Option<String>,
    /// Sampled memory; `None` is n/a (not sampled yet, or `MEMORY` denied).
    pub memory_bytes: Option<u64>,
    /// Entries ever added (Redis ≥ 7), for rates.
    pub entries_added: Option<u64>,
    /// Entries in its dead-letter stream.
    pub dead_letters: u64,
    /// Its groups.
    pub groups: Vec<GroupRow>,
    /// Why this row could not be inspected, if it could not.
    pub error: Option<String>,
    /// The worst health of its groups.
    pub health: Health,
    /// On the row of a sharded logical stream (summed over its shards, as
    /// `stat` sums them): how many shards it has. Its shards follow it.
    pub shards: Option<u32>,
    /// On a shard's row: the logical stream it belongs to.
    pub shard_of: Option<String>,
    /// Entries added per second over the last ~10 s (Redis ≥ 7).
    pub rate_in: Option<f64>,
}

/// The whole overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// Every stream, sorted by key.
    pub streams: Vec<StreamRow>,
    /// When it was taken (ms since the epoch).
    pub at_ms: u64,
    /// How long collecting it took.
    pub took_ms: u64,
}

/// The memory samples.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    memory: Mutex<HashMap<String, (Instant, Option<u64>)>>,
    memory_denied: std::sync::atomic::AtomicBool,
}

/// The health of a group against the thresholds.
pub fn health(
    outstanding: u64,
    time_lag_ms: u64,
    max_lag: Option<u64>,
    max_time_lag: Option<Duration>,
) -> Health {
    let max_ms = max_time_lag.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let over = |v: u64, max: Option<u64>| max.is_some_and(|m| v > m);
    let half = |v: u64, max: Option<u64>| max.is_some_and(|m| v > m / 2);
    if over(outstanding, max_lag) || over(time_lag_ms, max_ms) {
        Health::Bad
    } else if half(outstanding, max_lag) || half(time_lag_ms, max_ms) {
        Health::Warn
    } else {
        Health::Ok
    }
}

/// The raw names to show (`--streams` as given, or every stream key),
/// and the dead-letter streams found by the scan.
async fn targets(state: &AppState) -> streamkeeper::Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
    let wanted = &state.config().streams;
    if !wanted.is_empty() {
        // A sharded stream named in `--streams` shows as its shards (and
        // the row summing them).
        let mut out = Vec::new();
        for name in wanted {
            match StreamKey::new(name.as_str()) {
                Ok(k) => match ShardLayout::keys_of(state.redis(), &k).await {
                    Ok(keys) => out.extend(keys.iter().map(|k| k.as_str().as_bytes().to_vec())),
                    Err(_) => out.push(name.as_bytes().to_vec()),
                },
                Err(_) => out.push(name.as_bytes().to_vec()),
            }
        }
        return Ok((out, Vec::new()));
    }
    let (derived, own): (Vec<Vec<u8>>, Vec<Vec<u8>>) = names::scan_streams(state.redis())
        .await?
        .into_iter()
        .partition(|k| std::str::from_utf8(k).is_ok_and(names::is_derived));
    let dlqs = derived
        .into_iter()
        .filter(|k| k.ends_with(b":dlq"))
        .collect();
    Ok((own, dlqs))
}

/// The streams a dead-letter key can belong to (`{a}:dlq` is the dead-letter
/// stream of `a`, or of `{a}` itself, whose hash tag is `a`).
fn dlq_owners(dlq: &str) -> Vec<String> {
    let Some(base) = dlq.strip_suffix(":dlq") else {
        return Vec::new();
    };
    match base.strip_prefix('{').and_then(|b| b.strip_suffix('}')) {
        Some(inner) if !inner.contains('{') && !inner.contains('}') => {
            vec![inner.to_string(), base.to_string()]
        }
        _ => vec![base.to_string()],
    }
}

/// A row for each dead-letter stream whose stream is gone: its letters
/// show (and can be replayed or purged from its page).
async fn orphan_rows(redis: &Connector, rows: &[StreamRow], dlqs: &[Vec<u8>]) -> Vec<StreamRow> {
    let shown: std::collections::HashSet<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let orphans: Vec<(String, String)> = dlqs
        .iter()
        .filter_map(|k| std::str::from_utf8(k).ok())
        .filter_map(|k| {
            let owners = dlq_owners(k);
            let first = owners.first()?.clone();
            (!owners.iter().any(|o| shown.contains(o.as_str()))).then(|| (first, k.to_string()))
        })
        .collect();
    let cmds = orphans
        .iter()
        .map(|(_, k)| {
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(k);
            cmd
        })
        .collect();
    let lens: Vec<u64> = query_each(redis, cmds).await.unwrap_or_default();
    orphans
        .into_iter()
        .zip(lens)
        .filter(|(_, n)| *n > 0)
        .map(|((name, _), n)| StreamRow {
            dead_letters: n,
            error: Some("the stream is gone; its dead letters remain".into()),
            ..error_row(name.as_bytes(), String::new())
        })
        .collect()
}

/// The row of a stream that could not be inspected.
fn error_row(raw: &[u8], error: String) -> StreamRow {
    StreamRow {
        name: names::escaped(raw),
        key: key_of(raw),
        length: None,
        first_id: None,
        last_id: None,
        memory_bytes: None,
        entries_added: None,
        dead_letters: 0,
        groups: Vec::new(),
        error: Some(error),
        health: Health::Ok,
        shards: None,
        shard_of: None,
        rate_in: None,
    }
}

/// Inspects every stream now. Fails only when Redis cannot be reached
/// at all (the listing fails); a stream that fails is a row with `error`.
pub async fn collect(state: &AppState) -> streamkeeper::Result<Overview> {
    let started = Instant::now();
    let redis = state.redis();
    let cfg = state.config();
    let (keys, dlqs) = targets(state).await?;
    let options = InspectOptions {
        memory: false,
        dead_after: cfg.dead_after,
        ..Default::default()
    };
    let stats: Vec<(Vec<u8>, Result<StreamStat, String>)> = futures::stream::iter(keys.into_iter().map(|raw| {
        let (redis, options) = (redis.clone(), options.clone());
        async move {
            let key = match std::str::from_utf8(&raw) {
                Ok(s) => StreamKey::new(s).map_err(|e| e.to_string()),
                Err(_) => Err("the key is not UTF-8; streamkeeper cannot address it (rename it with redis-cli RENAME)".to_string()),
            };
            let r = match key {
                // A shard key not written yet is an empty shard.
                Ok(k) if StreamKeys::parse_shard(k.as_str()).is_some() => inspect::shard_stat(&redis, &k, &options)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(k) => inspect::stream_stat(&redis, &k, &options)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            (raw, r)
        }
    }))
    .buffered(CONCURRENCY)
    .collect()
    .await;
    // A failure to reach Redis fails the overview (the banner), not a row.
    if !stats.is_empty() && stats.iter().all(|(_, r)| r.is_err()) {
        ping(redis).await?;
    }
    // Inspected names are UTF-8 (the others are error rows).
    let ok_names: Vec<String> = stats
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(n, _)| names::escaped(n))
        .collect();
    let dead = dead_letters(redis, &ok_names).await;
    let memory = memory(state, &ok_names).await;
    let mut rows = Vec::with_capacity(stats.len());
    let mut shard_stats = HashMap::new();
    for (raw, r) in stats {
        let name = names::escaped(&raw);
        let row = match r {
            Ok(st) => {
                let memory = memory.get(&name).copied().flatten();
                let dead = dead.get(&name).copied().unwrap_or(0);
                let row = stat_row(name.clone(), &st, memory, dead, cfg);
                if StreamKeys::parse_shard(&name).is_some() {
                    shard_stats.insert(name, st);
                }
                row
            }
            Err(e) => error_row(&raw, e),
        };
        rows.push(row);
    }
    let mut rows = add_shard_sums(redis, rows, &shard_stats, cfg).await;
    let orphans = orphan_rows(redis, &rows, &dlqs).await;
    rows.extend(orphans);
    Ok(Overview {
        streams: rows,
        at_ms: streamkeeper::retry::now_ms(),
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The row of one inspected stream (or of a sum over shards).
fn stat_row(
    name: String,
    st: &StreamStat,
    memory: Option<u64>,
    dead_letters: u64,
    cfg: &crate::Config,
) -> StreamRow {
    let groups: Vec<GroupRow> = st
        .groups
        .iter()
        .map(|g| GroupRow {
            name: g.group.clone(),
            key: key_of(g.group.as_bytes()),
            rate_out: None,
            trend: None,
            pending: g.pending,
            undelivered: g.undelivered,
            outstanding: g.outstanding,
            time_lag_ms: g.time_lag_ms,
            oldest_pending_ms: g.oldest_pending_ms,
            lag_since_ms: g.oldest_outstanding_at_ms,
            last_delivered: g.last_delivered.to_string(),
            entries_read: g.entries_read,
            consumers: g.consumers.len(),
            dead_consumers: g.consumers.iter().filter(|c| c.dead).count(),
            health: health(g.outstanding, g.time_lag_ms, cfg.max_lag, cfg.max_time_lag),
        })
        .collect();
    StreamRow {
        length: Some(st.length),
        first_id: st.first_id.map(|i| i.to_string()),
        last_id: st.last_id.map(|i| i.to_string()),
        memory_bytes: memory,
        entries_added: st.entries_added,
        dead_letters,
        health: worst(groups.iter().map(|g| g.health)),
        groups,
        error: None,
        key: key_of(name.as_bytes()),
        name,
        shards: None,
        shard_of: None,
        rate_in: None,
    }
}

/// Puts a row summed over each sharded stream's shards (as `stat S`
/// sums them) before its first shard, and marks the shard rows. A name
/// that only looks like a shard (no layout, or an index past the count)
/// stays a plain row.
async fn add_shard_sums(
    redis: &Connector,
    rows: Vec<StreamRow>,
    shard_stats: &HashMap<String, StreamStat>,
    cfg: &crate::Config,
) -> Vec<StreamRow> {
    // Per sharded stream: its current shard count and the keys of every
    // live generation (after a resize, older shards still drain).
    let mut layouts: HashMap<String, Option<(u32, Vec<String>)>> = HashMap::new();
    for (stream, _) in shard_stats
        .keys()
        .filter_map(|n| StreamKeys::parse_shard(n))
    {
        if layouts.contains_key(stream) {
            continue;
        }
        let count = match StreamKey::new(stream) {
            Ok(k) => ShardLayout::open(redis, &k).await.ok().flatten().map(|l| {
                let live = l
                    .all_shards()
                    .iter()
                    .map(|k| k.as_str().to_string())
                    .collect();
                (l.count(), live)
            }),
            Err(_) => None,
        };
        layouts.insert(stream.to_string(), count);
    }
    let logical = |row: &StreamRow| -> Option<String> {
        let (stream, _) = StreamKeys::parse_shard(&row.name)?;
        let (_, live) = layouts.get(stream)?.as_ref()?;
        (live.contains(&row.name) && shard_stats.contains_key(&row.name))
            .then(|| stream.to_string())
    };
    let mut out = Vec::with_capacity(rows.len());
    let mut summed = std::collections::HashSet::new();
    for i in 0..rows.len() {
        let Some(stream) = logical(&rows[i]) else {
            out.push(rows[i].clone());
            continue;
        };
        if summed.insert(stream.clone()) {
            let mine: Vec<&StreamRow> = rows
                .iter()
                .filter(|r| logical(r).as_deref() == Some(stream.as_str()))
                .collect();
            let stats: Vec<StreamStat> = mine
                .iter()
                .filter_map(|r| shard_stats.get(&r.name).cloned())
                .collect();
            let memory = mine.iter().map(|r| r.memory_bytes).sum::<Option<u64>>();
            let dead = mine.iter().map(|r| r.dead_letters).sum();
            let sum = inspect::sum_shards(&stream, &stats);
            let count = layouts
                .get(&stream)
                .and_then(|l| l.as_ref().map(|(count, _)| *count))
                .unwrap_or(0);
            let mut row = stat_row(stream.clone(), &sum, memory, dead, cfg);
            row.shards = Some(count);
            out.push(row);
            // Every shard of every live generation, in order; one never
            // written to is empty.
            let live = layouts
                .get(&stream)
                .and_then(|l| l.as_ref().map(|(_, live)| live.clone()))
                .unwrap_or_default();
            for key in live {
                let mut shard = match mine.iter().find(|r| r.name == key) {
                    Some(r) => (*r).clone(),
                    None => stat_row(
                        key.clone(),
                        &inspect::sum_shards(&key, &[]),
                        Some(0),
                        0,
                        cfg,
                    ),
                };
                shard.shard_of = Some(stream.clone());
                out.push(shard);
            }
        }
    }
    out
}

fn worst(it: impl Iterator<Item = Health>) -> Health {
    it.fold(Health::Ok, |a, h| match (a, h) {
        (Health::Bad, _) | (_, Health::Bad) => Health::Bad,
        (Health::Warn, _) | (_, Health::Warn) => Health::Warn,
        _ => Health::Ok,
    })
}

async fn ping(redis: &Connector) -> streamkeeper::Result<()> {
    let mut conn = redis.shared();
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map(|_| ())
        .map_err(|e| streamkeeper::Error::redis("PING", e))
}

/// `XLEN {S}:dlq` of every stream in one pipeline.
async fn dead_letters(redis: &Connector, streams: &[String]) -> HashMap<String, u64> {
    let mut cmds = Vec::new();
    let mut asked = Vec::new();
    for s in streams {
        if let Ok(k) = StreamKey::new(s.as_str()) {
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(streamkeeper::keys::StreamKeys::dlq(&k));
            cmds.push(cmd);
            asked.push(s.clone());
        }
    }
    let lens: Vec<u64> = query_each(redis, cmds).await.unwrap_or_default();
    asked.into_iter().zip(lens).collect()
}

/// One reply per command, in order: one pipeline on a single server; on a
/// cluster, where one pipeline must stay on one node and these keys live
/// in slots all over it, each command on its own (32 at a time).
async fn query_each<T: redis::FromRedisValue>(
    redis: &Connector,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    match redis.shared() {
        streamkeeper::SharedConn::Cluster(conn) => {
            futures::stream::iter(cmds.into_iter().map(|cmd| {
                let mut conn = conn.clone();
                async move { cmd.query_async::<T>(&mut conn).await }
            }))
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
        }
        mut conn => {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd);
            }
            pipe.query_async(&mut conn).await
        }
    }
}

/// Memory of each stream, sampled at most once a minute; n/a (`None`)
/// when `MEMORY` is denied (then never asked again by this process).
async fn memory(state: &AppState, streams: &[String]) -> HashMap<String, Option<u64>> {
    use std::sync::atomic::Ordering;
    let cache = &state.inner.overview;
    let mut out = HashMap::new();
    if cache.memory_denied.load(Ordering::Relaxed) {
        return out;
    }
    let mut stale = Vec::new();
    if let Ok(m) = cache.memory.lock() {
        for s in streams {
            match m.get(s) {
                Some((at, v)) if at.elapsed() < MEMORY_EVERY => {
                    out.insert(s.clone(), *v);
                }
                _ => stale.push(s.clone()),
            }
        }
    }
    if stale.is_empty() {
        return out;
    }
    let cmds = stale
        .iter()
        .map(|s| {
            let mut cmd = redis::cmd("MEMORY");
            cmd.arg("USAGE").arg(s);
            cmd
        })
        .collect();
    match query_each::<Option<u64>>(state.redis(), cmds).await {
        Ok(values) => {
            if let Ok(mut m) = cache.memory.lock() {
                for (s, v) in stale.into_iter().zip(values) {
                    m.insert(s.clone(), (Instant::now(), v));
                    out.insert(s, v);
                }
            }
        }
        Err(e) => {
            if streamkeeper::error::error_code(&e).as_deref() == Some("NOPERM") {
                cache.memory_denied.store(true, Ordering::Relaxed);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_thresholds() {
        let s = Some(Duration::from_secs(10));
        assert_eq!(health(0, 0, None, None), Health::Ok);
        assert_eq!(health(1_000_000, 0, None, None), Health::Ok);
        assert_eq!(health(101, 0, Some(100), None), Health::Bad);
        assert_eq!(health(60, 0, Some(100), None), Health::Warn);
        assert_eq!(health(10, 11_000, Some(100), s), Health::Bad);
        assert_eq!(health(10, 6_000, Some(100), s), Health::Warn);
        assert_eq!(health(10, 1_000, Some(100), s), Health::Ok);
    }
}
