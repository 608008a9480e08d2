//! Ack-aware trimming: remove only what every consumer group has finished.
//!
//! The trim point `T = min over groups of min(oldest pending, next after
//! last-delivered)` is computed and applied (`XTRIM S MINID T`) in one Lua
//! script, so no concurrent read, claim or ack can make it delete an entry
//! some group still needs. A stream without groups is not ack-trimmed.
//!
//! Optional hard caps (`max_len`, `max_age`) bound a stream whose groups
//! fall too far behind: entries a cap removes while still unacknowledged
//! are first copied to an archive (a JSON-lines file or another stream),
//! counted as `dropped_unacked` and warned about. One janitor works per
//! stream: it holds the lease `{S}:janitor` (SET NX PX, renewed).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use redis::Value;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::explain;
pub use crate::lease::Lease;
use crate::producer::Producer;
use crate::scripts;
use crate::types::{ConsumerName, Entry, StreamId, StreamKey};

/// Where entries removed by a cap while unacknowledged are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Archive {
    /// Appended to a JSON-lines file (the wire format of docs/design.md §5).
    File(PathBuf),
    /// Appended to another stream (same fields, new IDs, plus `sk-origin-id`).
    Stream(StreamKey),
}

impl std::str::FromStr for Archive {
    type Err = Error;
    /// `stream:KEY` or a file path.
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("stream:") {
            Some(k) => Ok(Archive::Stream(StreamKey::new(k)?)),
            None if s.is_empty() => Err(Error::InvalidInput("empty --archive".into())),
            None => Ok(Archive::File(PathBuf::from(s))),
        }
    }
}

/// Settings of a janitor run.
#[derive(Debug, Clone, Default)]
pub struct JanitorOptions {
    /// Report only; trim nothing.
    pub dry_run: bool,
    /// Keep at most this many entries, whatever the groups say.
    pub max_len: Option<u64>,
    /// Keep no entry older than this, whatever the groups say.
    pub max_age: Option<Duration>,
    /// Where unacknowledged entries removed by a cap go first. Required
    /// when a cap is set: a cap never deletes unacked data silently.
    pub archive: Option<Archive>,
}

/// What one janitor run did to one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrimReport {
    /// The stream.
    pub stream: StreamKey,
    /// Entries removed (or, in a dry run, that would be).
    pub trimmed: u64,
    /// The ack-based trim point, `None` when the stream has no group.
    pub trim_to: Option<StreamId>,
    /// Unacknowledged entries a cap removed (archived first).
    pub dropped_unacked: u64,
    /// The group that holds the trim point (its bound is the lowest), when
    /// there is one: the group to look at when the stream does not shrink.
    pub held_by: Option<String>,
    /// Whether that group holds it with a pending entry (not yet acked,
    /// or parked for a retry) rather than entries it has not read yet.
    pub held_by_pending: bool,
}

/// One group's bound on the ack-based trim point: `min(oldest pending,
/// next after last-delivered)` (`lua/trim_point.lua`, the one place the
/// rule lives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimBound {
    /// The group.
    pub group: String,
    /// Nothing below this ID is still needed by the group.
    pub bound: StreamId,
    /// Whether the bound comes from a pending entry (not yet acked) rather
    /// than from entries not yet delivered.
    pub pending: bool,
}

/// What `lua/trim_point.lua` answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrimPointReply {
    /// Entries removed (0 in a dry run).
    pub trimmed: u64,
    /// The trim point, `None` when the stream has no group.
    pub trim_to: Option<StreamId>,
    /// Every group's bound, in the order of `XINFO GROUPS`.
    pub bounds: Vec<TrimBound>,
}

impl TrimPointReply {
    /// Parses `{trimmed, T, {{name, bound, pending}, …}}` or `{0, nil}`.
    fn parse(v: Value) -> Result<Self> {
        let bad = |v: &Value| Error::Protocol {
            command: "trim script",
            detail: format!("{v:?}"),
        };
        let Value::Array(parts) = &v else {
            return Err(bad(&v));
        };
        let trimmed = match parts.first() {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let trim_to = match parts.get(1) {
            Some(Value::BulkString(b)) => Some(StreamId::from_bytes(b)?),
            _ => None,
        };
        let mut bounds = Vec::new();
        if let Some(Value::Array(groups)) = parts.get(2) {
            for g in groups {
                match g {
                    Value::Array(f) if f.len() == 3 => bounds.push(TrimBound {
                        group: crate::reply::text(&f[0]),
                        bound: crate::reply::text(&f[1]).parse()?,
                        pending: crate::reply::int(&f[2]) == Some(1),
                    }),
                    _ => return Err(bad(&v)),
                }
            }
        }
        Ok(TrimPointReply {
            trimmed,
            trim_to,
            bounds,
        })
    }
}

/// Runs `lua/trim_point.lua` on `stream` (KEYS: the stream; ARGV: `1` for
/// a dry run): computes the trim point and, unless `dry_run`, trims below
/// it in the same script.
pub(crate) async fn trim_point(
    connector: &Connector,
    stream: &StreamKey,
    dry_run: bool,
) -> Result<TrimPointReply> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = scripts::TRIM_POINT
        .key(stream)
        .arg(if dry_run { "1" } else { "0" })
        .invoke_async(&mut conn)
        .await;
    match r {
        Ok(v) => TrimPointReply::parse(v),
        Err(e) => Err(explain::explain(&mut conn, stream, "trim script", e).await),
    }
}

/// One janitor run on `stream`: ack-based trim, then caps.
pub async fn run_once(
    connector: &Connector,
    stream: &StreamKey,
    options: &JanitorOptions,
) -> Result<TrimReport> {
    if (options.max_len.is_some() || options.max_age.is_some()) && options.archive.is_none() {
        return Err(Error::InvalidInput(
            "a cap (--max-len/--max-age) needs --archive FILE|stream:KEY: unacknowledged entries are archived before they are dropped".into(),
        ));
    }
    let TrimPointReply {
        mut trimmed,
        trim_to,
        bounds,
    } = trim_point(connector, stream, options.dry_run).await?;
    let holder = trim_to.and_then(|t| bounds.into_iter().find(|b| b.bound == t));
    if options.dry_run {
        if let Some(t) = trim_to {
            trimmed = crate::reader::span(connector, stream, StreamId::MIN, t.prev())
                .await?
                .0;
        }
    } else if trimmed > 0 {
        crate::metrics::trimmed(stream.as_str(), trimmed);
    }
    let mut report = TrimReport {
        stream: stream.clone(),
        trimmed,
        trim_to,
        dropped_unacked: 0,
        held_by_pending: holder.as_ref().is_some_and(|h| h.pending),
        held_by: holder.map(|h| h.group),
    };
    if options.max_len.is_some() || options.max_age.is_some() {
        apply_caps(connector, stream, options, &mut report).await?;
    }
    Ok(report)
}

/// Removes what the caps exclude; archives each entry first.
async fn apply_caps(
    connector: &Connector,
    stream: &StreamKey,
    options: &JanitorOptions,
    report: &mut TrimReport,
) -> Result<()> {
    let mut conn = connector.shared();
    let len: u64 = match redis::cmd("XLEN").arg(stream).query_async(&mut conn).await {
        Ok(n) => n,
        Err(e) => return Err(crate::explain::explain(&mut conn, stream, "XLEN", e).await),
    };
    let mut excess = options.max_len.map_or(0, |m| len.saturating_sub(m));
    let age_limit = options.max_age.map(|a| {
        StreamId::new(
            crate::retry::now_ms().saturating_sub(u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            0,
        )
    });
    let mut cut: Option<StreamId> = None;
    let mut start = StreamId::MIN;
    let mut archived = Vec::new();
    loop {
        let page = crate::reader::range(connector, stream, start, StreamId::MAX, 1000).await?;
        if page.is_empty() {
            break;
        }
        let mut done = false;
        for e in page.iter() {
            let too_old = age_limit.is_some_and(|limit| e.id < limit);
            if excess == 0 && !too_old {
                done = true;
                break;
            }
            excess = excess.saturating_sub(1);
            cut = Some(e.id.next());
            archived.push(e.clone());
        }
        if !options.dry_run && !archived.is_empty() {
            if let Some(archive) = &options.archive {
                write_archive(connector, stream, archive, &archived).await?;
            }
        }
        report.dropped_unacked += archived.len() as u64;
        archived.clear();
        if done {
            break;
        }
        match page.last() {
            Some(l) => start = l.id.next(),
            None => break,
        }
    }
    if let (Some(cut), false) = (cut, options.dry_run) {
        let trimmed = redis::cmd("XTRIM")
            .arg(stream)
            .arg("MINID")
            .arg(cut)
            .query_async(&mut conn)
            .await;
        let n: u64 = match trimmed {
            Ok(n) => n,
            Err(e) => {
                return Err(crate::explain::explain(&mut conn, stream, "XTRIM by cap", e).await)
            }
        };
        report.trimmed += n;
        crate::metrics::trimmed(stream.as_str(), n);
        tracing::warn!(%stream, dropped_unacked = report.dropped_unacked,
            "a cap removed entries that some group had not acknowledged; they are in the archive");
    }
    Ok(())
}

async fn write_archive(
    connector: &Connector,
    stream: &StreamKey,
    archive: &Archive,
    entries: &[Entry],
) -> Result<()> {
    match archive {
        Archive::File(path) => {
            let mut buf = String::new();
            for e in entries {
                buf.push_str(&crate::wire::entry_to_line(stream.as_str(), e));
                buf.push('\n');
            }
            // Blocking file I/O (append + fsync) off the async threads.
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|source| Error::Io {
                        action: "open archive",
                        path: path.clone(),
                        source,
                    })?;
                f.write_all(buf.as_bytes())
                    .and_then(|()| f.sync_data())
                    .map_err(|source| Error::Io {
                        action: "write archive",
                        path,
                        source,
                    })
            })
            .await
            .map_err(|e| Error::InvalidInput(format!("archive writer stopped: {e}")))?
        }
        Archive::Stream(key) => {
            let batch: Vec<_> = entries
                .iter()
                .map(|e| {
                    let mut f = e.fields.clone();
                    f.push((
                        crate::meta::ORIGIN_ID.as_bytes().to_vec(),
                        e.id.to_string().into_bytes(),
                    ));
                    f
                })
                .collect();
            Producer::new(connector, key.clone())
                .send_batch(&batch)
                .await
                .map(|_| ())
        }
    }
}

/// The lease that lets one janitor work on `stream` while others stand
/// by (`{S}:janitor`, plain), for `holder`, valid `ttl` after each renewal.
/// A user not granted the lease key works without it (warned once): every
/// trim is one atomic script, so two janitors never trim what a group needs.
pub fn lease(
    connector: &Connector,
    stream: &StreamKey,
    holder: &ConsumerName,
    ttl: Duration,
) -> Lease {
    Lease::plain(
        connector,
        crate::keys::StreamKeys::janitor_lease(stream),
        holder.as_str(),
        ttl,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trim_script_reply_parses_with_every_groups_bound() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let group = |n: &str, b: &str, p: i64| Value::Array(vec![bulk(n), bulk(b), Value::Int(p)]);
        let r = TrimPointReply::parse(Value::Array(vec![
            Value::Int(3),
            bulk("5-0"),
            Value::Array(vec![group("a", "5-0", 1), group("b", "9-1", 0)]),
        ]))
        .expect("parse");
        assert_eq!(r.trimmed, 3);
        assert_eq!(r.trim_to, Some(StreamId::new(5, 0)));
        assert_eq!(
            r.bounds,
            vec![
                TrimBound {
                    group: "a".into(),
                    bound: StreamId::new(5, 0),
                    pending: true
                },
                TrimBound {
                    group: "b".into(),
                    bound: StreamId::new(9, 1),
                    pending: false
                },
            ]
        );
        let none =
            TrimPointReply::parse(Value::Array(vec![Value::Int(0), Value::Nil])).expect("none");
        assert_eq!((none.trim_to, none.bounds.len()), (None, 0));
        assert!(TrimPointReply::parse(Value::Int(1)).is_err());
    }

    #[test]
    fn archive_targets_parse() {
        assert_eq!(
            "stream:old".parse::<Archive>().expect("stream"),
            Archive::Stream(StreamKey::new("old").expect("k"))
        );
        assert_eq!(
            "/tmp/a.jsonl".parse::<Archive>().expect("file"),
            Archive::File("/tmp/a.jsonl".into())
        );
        assert!("".parse::<Archive>().is_err());
    }
}
