//! Lag and health: how far behind is each group, in entries and in time.
//!
//! Per stream: length, first/last ID, memory (sampled `MEMORY USAGE`, or
//! exact on demand) and bytes per entry. Per group: `pending` (delivered,
//! not acked), `undelivered` (after the last-delivered ID),
//! `outstanding = pending + undelivered`, `time_lag_ms` (age of the oldest
//! outstanding entry), the oldest pending entry's age, and its consumers
//! with their pending count and idle time; consumers idle past a threshold
//! while holding entries are flagged dead. `undelivered` comes from
//! `XINFO GROUPS` lag when Redis knows it and is counted from the IDs when
//! it does not (after XDEL or trimming, and after a failover).

use std::time::Duration;

use redis::Value;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::explain;
use crate::reply::{int, text};
use crate::retry::now_ms;
use crate::types::{StreamId, StreamKey};

/// Settings of an inspection.
#[derive(Debug, Clone)]
pub struct InspectOptions {
    /// Exact memory (`MEMORY USAGE … SAMPLES 0`, walks the whole stream)
    /// instead of the default sample.
    pub exact_memory: bool,
    /// A consumer idle longer than this while holding pending entries is
    /// flagged dead.
    pub dead_after: Duration,
    /// Ask `MEMORY USAGE` at all. Off, `memory_bytes` is 0: a dashboard
    /// refreshing every second samples memory on its own, less often (and
    /// copes with a user who may not run `MEMORY`).
    pub memory: bool,
}

impl Default for InspectOptions {
    fn default() -> Self {
        InspectOptions {
            exact_memory: false,
            dead_after: Duration::from_secs(300),
            memory: true,
        }
    }
}

/// One consumer of a group.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerStat {
    /// Its name.
    pub name: String,
    /// Entries it holds unacknowledged.
    pub pending: u64,
    /// Milliseconds since it last did anything.
    pub idle_ms: u64,
    /// Idle past the threshold while holding entries.
    pub dead: bool,
}

/// One consumer group.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GroupStat {
    /// Its name.
    pub group: String,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Not delivered yet.
    pub undelivered: u64,
    /// `pending + undelivered`.
    pub outstanding: u64,
    /// Age of the oldest outstanding entry, in ms (0 when none).
    pub time_lag_ms: u64,
    /// Age of the oldest pending entry, in ms (0 when none).
    pub oldest_pending_ms: u64,
    /// When the oldest outstanding entry was added (its ID's ms; 0 when
    /// none): unlike `time_lag_ms`, it does not change while nothing
    /// happens, so a live view can send it once and count up itself.
    #[serde(skip)]
    pub oldest_outstanding_at_ms: u64,
    /// The last ID delivered to the group.
    pub last_delivered: StreamId,
    /// Entries the group has read (Redis ≥ 7), for rates.
    pub entries_read: Option<u64>,
    /// Its consumers.
    pub consumers: Vec<ConsumerStat>,
}

/// One stream and its groups.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamStat {
    /// The stream.
    pub stream: String,
    /// Entries in it.
    pub length: u64,
    /// Its first entry's ID.
    pub first_id: Option<StreamId>,
    /// Its last entry's ID.
    pub last_id: Option<StreamId>,
    /// Memory in bytes (sampled unless exact was asked for); 0 when
    /// unknown (see `memory_known`).
    pub memory_bytes: u64,
    /// False when the user may not run `MEMORY USAGE` (an ACL user
    /// without `+memory`): memory is then unknown, not zero.
    pub memory_known: bool,
    /// `memory_bytes / length`.
    pub bytes_per_entry: u64,
    /// Entries ever added to the stream (Redis ≥ 7), for rates.
    pub entries_added: Option<u64>,
    /// Its groups.
    pub groups: Vec<GroupStat>,
}

fn pairs(v: Value) -> Vec<(String, Value)> {
    match v {
        Value::Map(m) => m.into_iter().map(|(k, v)| (text(&k), v)).collect(),
        Value::Array(a) => {
            let mut it = a.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((text(&k), v));
            }
            out
        }
        _ => Vec::new(),
    }
}

/// The bytes of a name in a reply.
fn raw(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        other => text(other).into_bytes(),
    }
}

/// A name for people: as is when UTF-8, else with odd bytes as `\xNN`.
fn shown(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) => s.to_string(),
        Err(_) => name.escape_ascii().to_string(),
    }
}

fn entry_id(v: &Value) -> Option<StreamId> {
    match v {
        Value::Array(parts) => parts.first().and_then(|id| text(id).parse().ok()),
        _ => None,
    }
}

/// [`stream_stat`] of one shard of a sharded stream: a shard key that
/// does not exist yet (no entry routed to it, no group created) is an
/// empty stream, as the layout says it is, not an error.
pub async fn shard_stat(
    redis: &Connector,
    shard: &StreamKey,
    options: &InspectOptions,
) -> Result<StreamStat> {
    match stream_stat(redis, shard, options).await {
        Err(Error::StreamMissing { .. }) => Ok(StreamStat {
            stream: shard.as_str().to_string(),
            length: 0,
            first_id: None,
            last_id: None,
            memory_bytes: 0,
            memory_known: true,
            bytes_per_entry: 0,
            entries_added: Some(0),
            groups: Vec::new(),
        }),
        other => other,
    }
}

/// Inspects one stream. A missing key is an error naming it.
pub async fn stream_stat(
    connector: &Connector,
    stream: &StreamKey,
    options: &InspectOptions,
) -> Result<StreamStat> {
    let mut conn = connector.shared();
    let mut memory = redis::cmd("MEMORY");
    memory.arg("USAGE").arg(stream);
    if options.exact_memory {
        memory.arg("SAMPLES").arg(0);
    }
    let mut pipe = redis::pipe();
    pipe.cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(stream);
    if options.memory {
        pipe.add_command(memory);
    } else {
        // Keeps the reply a triple: PING answers "PONG", not a number.
        pipe.cmd("PING");
    }
    let mut r: redis::RedisResult<(Value, Value, Value)> = pipe.query_async(&mut conn).await;
    let mut memory_known = options.memory;
    if matches!(&r, Err(e) if crate::error::error_code(e).as_deref() == Some("NOPERM")) {
        // A least-privilege user may read streams but not run MEMORY:
        // everything but the memory figure is still worth showing.
        memory_known = false;
        r = redis::pipe()
            .cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .cmd("PING")
            .query_async(&mut conn)
            .await;
    }
    let (info, groups, memory) = match r {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => {
            return Err(Error::StreamMissing {
                stream: stream.clone(),
            })
        }
        Err(e) => return Err(explain::explain(&mut conn, stream, "XINFO STREAM", e).await),
    };
    let mut length = 0;
    let mut entries_added = None;
    let (mut first, mut last) = (None, None);
    for (k, v) in pairs(info) {
        match k.as_str() {
            "length" => length = int(&v).unwrap_or(0),
            "entries-added" => entries_added = int(&v),
            "first-entry" => first = entry_id(&v),
            "last-entry" => last = entry_id(&v),
            _ => {}
        }
    }
    let memory_bytes = if memory_known {
        int(&memory).unwrap_or(0)
    } else {
        0
    };
    let now = now_ms();
    let mut group_stats = Vec::new();
    let groups = match groups {
        Value::Array(g) => g,
        _ => Vec::new(),
    };
    for g in groups {
        // The raw name addresses the group; the shown one has odd bytes
        // escaped (a group name need not be UTF-8).
        let mut name: Vec<u8> = Vec::new();
        let mut pending = 0;
        let mut last_delivered = StreamId::MIN;
        let mut lag: Option<u64> = None;
        let mut entries_read: Option<u64> = None;
        for (k, v) in pairs(g) {
            match k.as_str() {
                "name" => name = raw(&v),
                "pending" => pending = int(&v).unwrap_or(0),
                "last-delivered-id" => last_delivered = text(&v).parse().unwrap_or(StreamId::MIN),
                "lag" => lag = int(&v),
                "entries-read" => entries_read = int(&v),
                _ => {}
            }
        }
        let mut g = group_stat(
            connector,
            stream,
            &name,
            pending,
            last_delivered,
            lag,
            last,
            now,
            options,
        )
        .await?;
        g.entries_read = entries_read;
        group_stats.push(g);
    }
    Ok(StreamStat {
        stream: stream.to_string(),
        length,
        first_id: first,
        last_id: last,
        memory_bytes,
        memory_known,
        bytes_per_entry: memory_bytes.checked_div(length).unwrap_or(0),
        entries_added,
        groups: group_stats,
    })
}

#[allow(clippy::too_many_arguments)]
async fn group_stat(
    connector: &Connector,
    stream: &StreamKey,
    name: &[u8],
    pending: u64,
    last_delivered: StreamId,
    lag: Option<u64>,
    last_entry: Option<StreamId>,
    now: u64,
    options: &InspectOptions,
) -> Result<GroupStat> {
    let mut conn = connector.shared();
    let (summary, consumers, next): (Value, Value, Value) = redis::pipe()
        .cmd("XPENDING")
        .arg(stream)
        .arg(name)
        .cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(name)
        .cmd("XRANGE")
        .arg(stream)
        .arg(last_delivered.next())
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("inspecting group {} of {stream}", shown(name)), e))?;
    let oldest_pending = match &summary {
        Value::Array(s) if int(&s[0]).unwrap_or(0) > 0 => {
            s.get(1).and_then(|v| text(v).parse::<StreamId>().ok())
        }
        _ => None,
    };
    let first_undelivered = match next {
        Value::Array(entries) => entries.first().and_then(entry_id),
        _ => None,
    };
    // Redis's lag is unknown after deletions; trust it only when it is
    // there and agrees with the IDs (0 exactly when nothing is after L).
    let undelivered = match (lag, first_undelivered) {
        (_, None) => 0,
        (Some(l), Some(_)) if l > 0 => l,
        _ => match last_entry {
            Some(last) => {
                crate::reader::span(connector, stream, last_delivered.next(), last)
                    .await?
                    .0
            }
            None => 0,
        },
    };
    let oldest_outstanding = match (oldest_pending, first_undelivered) {
        (Some(p), Some(u)) => Some(p.min(u)),
        (p, u) => p.or(u),
    };
    let dead_ms = u64::try_from(options.dead_after.as_millis()).unwrap_or(u64::MAX);
    let consumers = match consumers {
        Value::Array(cs) => cs
            .into_iter()
            .map(|c| {
                let mut stat = ConsumerStat {
                    name: String::new(),
                    pending: 0,
                    idle_ms: 0,
                    dead: false,
                };
                for (k, v) in pairs(c) {
                    match k.as_str() {
                        "name" => stat.name = shown(&raw(&v)),
                        "pending" => stat.pending = int(&v).unwrap_or(0),
                        "idle" => stat.idle_ms = int(&v).unwrap_or(0),
                        _ => {}
                    }
                }
                // `sk-retry` holds parked retries: idle by design, never dead.
                stat.dead = stat.pending > 0
                    && stat.idle_ms > dead_ms
                    && stat.name != crate::meta::RETRY_CONSUMER;
                stat
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(GroupStat {
        group: shown(name),
        pending,
        undelivered,
        outstanding: pending + undelivered,
        time_lag_ms: oldest_outstanding.map_or(0, |id| now.saturating_sub(id.ms)),
        oldest_pending_ms: oldest_pending.map_or(0, |id| now.saturating_sub(id.ms)),
        oldest_outstanding_at_ms: oldest_outstanding.map_or(0, |id| id.ms),
        last_delivered,
        entries_read: None,
        consumers,
    })
}

/// Every stream key in the database as raw bytes (`SCAN … TYPE stream`,
/// never `KEYS`; on a cluster, on every primary), sorted: names need not
/// be UTF-8.
pub async fn list_stream_names(connector: &Connector) -> Result<Vec<Vec<u8>>> {
    let mut conn = connector.shared();
    let nodes: Vec<Option<String>> = match &mut conn {
        crate::SharedConn::Cluster(c) => {
            let primaries: Vec<crate::cluster::ClusterNode> = crate::cluster::nodes(c)
                .await?
                .into_iter()
                .filter(|n| n.primary && !n.slots.is_empty())
                .collect();
            check_every_slot_readable(&primaries)?;
            primaries.into_iter().map(|n| Some(n.addr)).collect()
        }
        crate::SharedConn::Single(_) => vec![None],
    };
    let mut out = Vec::new();
    for node in nodes {
        let mut cursor = 0u64;
        loop {
            let (next, keys) = scan_page(&mut conn, node.as_deref(), cursor)
                .await
                .map_err(|e| Error::redis("SCAN", e))?;
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Listing every stream of a cluster must reach every slot: a primary
/// that is down (before its replica takes over) or a slot no primary
/// serves would leave its streams out silently, and a health check would
/// pass over them.
fn check_every_slot_readable(primaries: &[crate::cluster::ClusterNode]) -> Result<()> {
    if let Some(down) = primaries.iter().find(|n| n.failed()) {
        return Err(Error::Unreadable {
            what: format!("the streams of node {} (slots {})", down.addr, down.slots.join(",")),
            why: "the node is down and no replica has taken over yet; wait for the failover, or name the streams to inspect the others".into(),
        });
    }
    let unserved = (0..16384u16)
        .filter(|&slot| !primaries.iter().any(|n| n.serves(slot)))
        .count();
    if unserved > 0 {
        return Err(Error::Unreadable {
            what: format!("the streams of {unserved} slot(s) no primary serves"),
            why: "the cluster is not ok (CLUSTER INFO); name the streams to inspect the others"
                .into(),
        });
    }
    Ok(())
}

/// One `SCAN … TYPE stream` page, on `node` of a cluster when given.
async fn scan_page(
    conn: &mut crate::SharedConn,
    node: Option<&str>,
    cursor: u64,
) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("COUNT")
        .arg(1000)
        .arg("TYPE")
        .arg("stream");
    match (conn, node) {
        (crate::SharedConn::Cluster(c), Some(addr)) => {
            let v = crate::cluster::on_node(c, addr, &cmd).await?;
            redis::from_redis_value(v).map_err(Into::into)
        }
        (conn, _) => cmd.query_async(conn).await,
    }
}

/// Every stream key in the database (`SCAN … TYPE stream`), sorted.
pub async fn list_streams(connector: &Connector) -> Result<Vec<StreamKey>> {
    let mut out = Vec::new();
    for k in list_stream_names(connector).await? {
        match String::from_utf8(k) {
            Ok(k) => out.extend(StreamKey::new(k).ok()),
            // Stream keys are UTF-8 in this library; say which one is
            // left out rather than failing for all of them.
            Err(e) => tracing::warn!(
                "skipping stream {}: its name is not UTF-8",
                e.as_bytes().escape_ascii()
            ),
        }
    }
    Ok(out)
}

/// Lag thresholds of a health check (`stat --max-lag`, `/healthz?max-lag=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LagLimits {
    /// Most outstanding entries (pending, parked for a retry, undelivered).
    pub max_lag: Option<u64>,
    /// Oldest outstanding entry's age.
    pub max_time_lag: Option<Duration>,
}

impl LagLimits {
    /// Whether any threshold is set.
    pub fn any(&self) -> bool {
        self.max_lag.is_some() || self.max_time_lag.is_some()
    }

    /// The thresholds `g` of `stream` exceeds, a line each; `flag` is how
    /// the caller spells them (`--` on the command line, nothing in a URL).
    ///
    /// ```
    /// # use streamkeeper::inspect::{GroupStat, LagLimits};
    /// let g = GroupStat { group: "billing".into(), outstanding: 3, ..Default::default() };
    /// let limits = LagLimits { max_lag: Some(2), max_time_lag: None };
    /// assert_eq!(
    ///     limits.violations("orders", &g, "--"),
    ///     vec!["orders group billing: 3 outstanding > --max-lag 2".to_string()]
    /// );
    /// ```
    pub fn violations(&self, stream: &str, g: &GroupStat, flag: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(max) = self.max_lag.filter(|m| g.outstanding > *m) {
            out.push(format!(
                "{stream} group {}: {} outstanding > {flag}max-lag {max}",
                g.group, g.outstanding
            ));
        }
        if let Some(max) = self
            .max_time_lag
            .filter(|m| u128::from(g.time_lag_ms) > m.as_millis())
        {
            let lag = Duration::from_millis(g.time_lag_ms);
            out.push(format!(
                "{stream} group {}: time lag {} > {flag}max-time-lag {}",
                g.group,
                humantime::format_duration(lag),
                humantime::format_duration(max)
            ));
        }
        out
    }
}

/// Where a group is heading between two samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trend {
    /// Nothing outstanding.
    CaughtUp,
    /// Outstanding shrank.
    CatchingUp,
    /// Outstanding grew.
    FallingBehind,
    /// Outstanding entries and no progress at all.
    Stalled,
    /// Outstanding unchanged while entries flow.
    Steady,
}

/// Compares two samples of the same group.
pub fn trend(before: &GroupStat, after: &GroupStat) -> Trend {
    if after.outstanding == 0 {
        Trend::CaughtUp
    } else if after.outstanding < before.outstanding {
        Trend::CatchingUp
    } else if after.last_delivered == before.last_delivered && after.pending >= before.pending {
        if after.outstanding > before.outstanding {
            Trend::FallingBehind
        } else {
            Trend::Stalled
        }
    } else if after.outstanding > before.outstanding {
        Trend::FallingBehind
    } else {
        Trend::Steady
    }
}

/// Entries per second in (added to the stream) and out (read by the group
/// and no longer pending) between two samples `secs` apart. `None` when
/// Redis does not report the counters.
pub fn rates(
    stream_before: &StreamStat,
    stream_after: &StreamStat,
    before: &GroupStat,
    after: &GroupStat,
    secs: f64,
) -> Option<(f64, f64)> {
    let secs = secs.max(1e-3);
    let added = stream_after
        .entries_added?
        .checked_sub(stream_before.entries_added?)?;
    let done = |g: &GroupStat| g.entries_read.map(|r| r.saturating_sub(g.pending));
    let finished = done(after)?.saturating_sub(done(before)?);
    Some((added as f64 / secs, finished as f64 / secs))
}

/// The sum over the shards of a sharded stream (see [`crate::shard`]):
/// lengths, memory, pending and undelivered add up; the first/last IDs
/// are the oldest/newest of any shard; a group's time lag and oldest
/// pending are the worst shard's; a consumer reading several shards is one row
/// (pending summed, idle the least).
/// `stream` names the logical stream.
pub fn sum_shards(stream: &str, shards: &[StreamStat]) -> StreamStat {
    let mut groups: Vec<GroupStat> = Vec::new();
    for g in shards.iter().flat_map(|s| &s.groups) {
        match groups.iter_mut().find(|x| x.group == g.group) {
            Some(x) => {
                x.pending += g.pending;
                x.undelivered += g.undelivered;
                x.outstanding += g.outstanding;
                x.time_lag_ms = x.time_lag_ms.max(g.time_lag_ms);
                x.oldest_pending_ms = x.oldest_pending_ms.max(g.oldest_pending_ms);
                x.oldest_outstanding_at_ms =
                    match (x.oldest_outstanding_at_ms, g.oldest_outstanding_at_ms) {
                        (0, b) => b,
                        (a, 0) => a,
                        (a, b) => a.min(b),
                    };
                x.last_delivered = x.last_delivered.max(g.last_delivered);
                x.entries_read = match (x.entries_read, g.entries_read) {
                    (Some(a), Some(b)) => Some(a + b),
                    _ => None,
                };
                for c in &g.consumers {
                    // One consumer reads every shard: one row, summed.
                    match x.consumers.iter_mut().find(|y| y.name == c.name) {
                        Some(y) => {
                            y.pending += c.pending;
                            y.idle_ms = y.idle_ms.min(c.idle_ms);
                            y.dead = y.dead && c.dead;
                        }
                        None => x.consumers.push(c.clone()),
                    }
                }
            }
            None => groups.push(g.clone()),
        }
    }
    let length = shards.iter().map(|s| s.length).sum::<u64>();
    let memory_bytes = shards.iter().map(|s| s.memory_bytes).sum::<u64>();
    StreamStat {
        stream: stream.to_string(),
        length,
        first_id: shards.iter().filter_map(|s| s.first_id).min(),
        last_id: shards.iter().filter_map(|s| s.last_id).max(),
        memory_bytes,
        memory_known: shards.iter().all(|s| s.memory_known),
        bytes_per_entry: memory_bytes.checked_div(length).unwrap_or(0),
        entries_added: shards.iter().map(|s| s.entries_added).sum::<Option<u64>>(),
        groups,
    }
}

/// Fails with [`Error::WrongType`] when one of `keys` exists and is not a
/// stream, before a command writes to any of them (the shards of a
/// sharded stream: one of the wrong type would stop the writes part way).
/// A user not granted `TYPE` gets no check, not a refusal: the writes' own
/// `WRONGTYPE` still protects a key of another type (least privilege,
/// docs/design.md §6).
pub async fn check_streams(redis: &Connector, keys: &[StreamKey]) -> Result<()> {
    let mut conn = redis.shared();
    for key in keys {
        let kind: String = match redis::cmd("TYPE").arg(key).query_async(&mut conn).await {
            Ok(kind) => kind,
            Err(e) if crate::error::is_noperm(&e) => {
                tracing::debug!(%key, "TYPE not granted; the key's type is unknown, the writes check it");
                return Ok(());
            }
            Err(e) => return Err(Error::redis(format!("TYPE {key}"), e)),
        };
        if kind != "stream" && kind != "none" {
            return Err(Error::WrongType {
                key: key.to_string(),
                actual: kind,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(pending: u64, undelivered: u64, last: &str) -> GroupStat {
        GroupStat {
            group: "g".into(),
            pending,
            undelivered,
            outstanding: pending + undelivered,
            time_lag_ms: 0,
            oldest_pending_ms: 0,
            oldest_outstanding_at_ms: 0,
            last_delivered: last.parse().expect("id"),
            entries_read: None,
            consumers: Vec::new(),
        }
    }

    #[test]
    fn trends_name_what_a_group_does() {
        assert_eq!(trend(&g(5, 5, "1-0"), &g(0, 0, "2-0")), Trend::CaughtUp);
        assert_eq!(trend(&g(5, 50, "1-0"), &g(5, 20, "2-0")), Trend::CatchingUp);
        assert_eq!(
            trend(&g(5, 20, "1-0"), &g(5, 50, "2-0")),
            Trend::FallingBehind
        );
        assert_eq!(trend(&g(5, 20, "1-0"), &g(5, 20, "1-0")), Trend::Stalled);
        assert_eq!(trend(&g(5, 20, "1-0"), &g(5, 20, "3-0")), Trend::Steady);
    }
}
