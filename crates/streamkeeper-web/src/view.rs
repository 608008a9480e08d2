//! What one page shows of the overview: a summary of everything (streams
//! and groups by health, total lag and dead letters, the worst 10 groups)
//! and one page of rows, filtered, sorted and paged here on the server, so
//! a browser never holds more than [`MAX_PER_PAGE`] streams however many
//! there are. A sharded stream is one row; its shards show when asked for
//! (`shards_of`).
//!
//! The same [`ViewQuery`] drives `/api/overview` and the event stream
//! (`live.rs`), which sends a page and then only what changed on it.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::overview::{GroupRow, Health, Overview, StreamRow};

/// Streams per page unless asked otherwise.
pub const DEFAULT_PER_PAGE: usize = 50;
/// Most streams one page may hold.
pub const MAX_PER_PAGE: usize = 200;
/// Groups the summary names as the worst.
const WORST: usize = 10;

/// Which rows, in which order: the query string of `/api/overview` and
/// `/api/events`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct ViewQuery {
    /// A substring of a stream or group name (case-insensitive).
    pub q: Option<String>,
    /// `name` (default), `lag`, `time_lag`, `dlq`, `rate` or `length`.
    pub sort: Option<String>,
    /// `asc` or `desc` (default: ascending by name, descending otherwise).
    pub dir: Option<String>,
    /// Only rows of this health: `ok`, `warn`, `bad` or `error`.
    pub health: Option<String>,
    /// 1-based page number.
    pub page: Option<usize>,
    /// Streams per page (at most [`MAX_PER_PAGE`]).
    pub per: Option<usize>,
    /// The shards of this sharded stream (its raw key in base64url).
    pub shards_of: Option<String>,
    /// Exactly this stream (its raw key in base64url): a stream's own page.
    pub key: Option<String>,
}

/// A group in the summary's worst list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Worst {
    /// Stream name (display).
    pub stream: String,
    /// Stream raw key (base64url).
    pub key: String,
    /// Group name.
    pub group: String,
    /// Lag in entries.
    pub outstanding: u64,
    /// Lag in time.
    pub time_lag_ms: u64,
    /// When its oldest outstanding entry was added (0: none).
    pub lag_since_ms: u64,
    /// Its colour.
    pub health: Health,
}

/// Counts by health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ByHealth {
    /// Within the thresholds.
    pub ok: usize,
    /// Past half a threshold.
    pub warn: usize,
    /// Past a threshold.
    pub bad: usize,
    /// Could not be inspected (streams only).
    pub error: usize,
}

/// Everything at a glance.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Streams (a sharded stream counts once) by health.
    pub streams: ByHealth,
    /// Groups by health.
    pub groups: ByHealth,
    /// Outstanding entries over every group.
    pub total_lag: u64,
    /// Dead letters over every stream.
    pub total_dead_letters: u64,
    /// The worst groups: red first, then the oldest outstanding entry, then by lag.
    pub worst: Vec<Worst>,
}

/// One page of the overview.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The summary of every stream (not only this page's).
    pub summary: Summary,
    /// This page's rows.
    pub streams: Vec<StreamRow>,
    /// Rows matching the filter.
    pub matching: usize,
    /// This page (1-based) and how many there are.
    pub page: usize,
    /// Pages in all.
    pub pages: usize,
    /// Streams per page.
    pub per: usize,
    /// The sort key and direction used.
    pub sort: String,
    /// `asc` or `desc`.
    pub dir: String,
    /// When the overview was taken (ms since the epoch).
    pub at_ms: u64,
    /// How long collecting it took.
    pub took_ms: u64,
}

/// The summary of an overview (a sharded stream counts once, by its sum).
pub fn summary(o: &Overview) -> Summary {
    let mut s = Summary::default();
    let mut worst: Vec<Worst> = Vec::new();
    for row in o.streams.iter().filter(|r| r.shard_of.is_none()) {
        count(&mut s.streams, row.error.is_some(), row.health);
        s.total_dead_letters += row.dead_letters;
        for g in &row.groups {
            count(&mut s.groups, false, g.health);
            s.total_lag += g.outstanding;
            worst.push(Worst {
                stream: row.name.clone(),
                key: row.key.clone(),
                group: g.name.clone(),
                outstanding: g.outstanding,
                time_lag_ms: g.time_lag_ms,
                lag_since_ms: g.lag_since_ms,
                health: g.health,
            });
        }
    }
    // By when the oldest outstanding entry was added, not by its age: the
    // order stays put while nothing happens (ages move with the clock).
    let since = |w: &Worst| match w.lag_since_ms {
        0 => u64::MAX,
        t => t,
    };
    worst.sort_by(|a, b| {
        rank(b.health)
            .cmp(&rank(a.health))
            .then(since(a).cmp(&since(b)))
            .then(b.outstanding.cmp(&a.outstanding))
            .then(a.stream.cmp(&b.stream))
            .then(a.group.cmp(&b.group))
    });
    worst.truncate(WORST);
    worst.retain(|w| w.outstanding > 0 || w.health != Health::Ok);
    s.worst = worst;
    s
}

fn count(c: &mut ByHealth, error: bool, h: Health) {
    match (error, h) {
        (true, _) => c.error += 1,
        (_, Health::Ok) => c.ok += 1,
        (_, Health::Warn) => c.warn += 1,
        (_, Health::Bad) => c.bad += 1,
    }
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Ok => 0,
        Health::Warn => 1,
        Health::Bad => 2,
    }
}

fn max_of(row: &StreamRow, f: fn(&GroupRow) -> u64) -> u64 {
    row.groups.iter().map(f).max().unwrap_or(0)
}

/// The page `q` asks for.
pub fn page(o: &Overview, summary: Summary, q: &ViewQuery) -> Page {
    let needle =
        q.q.as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_lowercase);
    let shards_of = q.shards_of.as_deref().filter(|k| !k.is_empty());
    let parent =
        shards_of.and_then(|k| o.streams.iter().find(|r| r.key == k && r.shards.is_some()));
    let mut rows: Vec<&StreamRow> = o
        .streams
        .iter()
        .filter(|r| match (&q.key, parent) {
            (Some(k), _) if !k.is_empty() => &r.key == k,
            (_, Some(p)) => r.shard_of.as_deref() == Some(p.name.as_str()),
            // The shards of a stream that is not sharded (or not there):
            // none, not every top-level row.
            (_, None) if shards_of.is_some() => false,
            _ => r.shard_of.is_none(),
        })
        .filter(|r| {
            needle.as_deref().is_none_or(|n| {
                r.name.to_lowercase().contains(n)
                    || r.groups.iter().any(|g| g.name.to_lowercase().contains(n))
            })
        })
        .filter(|r| match q.health.as_deref() {
            Some("error") => r.error.is_some(),
            Some("ok") => r.error.is_none() && r.health == Health::Ok,
            Some("warn") => r.error.is_none() && r.health == Health::Warn,
            Some("bad") => r.error.is_none() && r.health == Health::Bad,
            _ => true,
        })
        .collect();
    // An unknown sort key sorts by name.
    let sort = q
        .sort
        .as_deref()
        .filter(|s| ["lag", "time_lag", "dlq", "rate", "length"].contains(s))
        .unwrap_or("name");
    let desc = match q.dir.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        _ => sort != "name",
    };
    let by = |a: &&StreamRow, b: &&StreamRow| -> Ordering {
        let o = match sort {
            "lag" => max_of(a, |g| g.outstanding).cmp(&max_of(b, |g| g.outstanding)),
            "time_lag" => max_of(a, |g| g.time_lag_ms).cmp(&max_of(b, |g| g.time_lag_ms)),
            "dlq" => a.dead_letters.cmp(&b.dead_letters),
            "length" => a.length.cmp(&b.length),
            "rate" => a
                .rate_in
                .unwrap_or(0.0)
                .total_cmp(&b.rate_in.unwrap_or(0.0)),
            _ => Ordering::Equal,
        };
        let o = if desc { o.reverse() } else { o };
        // Ties (and `name`) by name, in the asked direction for `name`.
        let n = a.name.cmp(&b.name);
        o.then(if desc && sort == "name" {
            n.reverse()
        } else {
            n
        })
    };
    rows.sort_by(by);
    let per = q.per.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE);
    let matching = rows.len();
    let pages = matching.div_ceil(per).max(1);
    let page = q.page.unwrap_or(1).clamp(1, pages);
    let mut streams: Vec<StreamRow> = rows
        .into_iter()
        .skip((page - 1) * per)
        .take(per)
        .cloned()
        .collect();
    if let Some(p) = parent {
        // The sum first, then its shards.
        if q.key.as_deref().is_none_or(str::is_empty) {
            streams.insert(0, p.clone());
        }
    }
    Page {
        summary,
        streams,
        matching,
        page,
        pages,
        per,
        sort: sort.to_string(),
        dir: if desc { "desc" } else { "asc" }.to_string(),
        at_ms: o.at_ms,
        took_ms: o.took_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, lag: u64, dlq: u64, health: Health) -> StreamRow {
        StreamRow {
            name: name.into(),
            key: crate::names::key_of(name.as_bytes()),
            length: Some(lag),
            first_id: None,
            last_id: None,
            memory_bytes: None,
            entries_added: None,
            dead_letters: dlq,
            groups: vec![GroupRow {
                name: format!("g-{name}"),
                key: String::new(),
                pending: 0,
                undelivered: lag,
                outstanding: lag,
                time_lag_ms: lag * 10,
                oldest_pending_ms: 0,
                lag_since_ms: 0,
                last_delivered: "0-0".into(),
                entries_read: None,
                consumers: 0,
                dead_consumers: 0,
                health,
                rate_out: None,
                trend: None,
            }],
            error: None,
            health,
            shards: None,
            shard_of: None,
            rate_in: None,
        }
    }

    fn overview() -> Overview {
        Overview {
            streams: (0..120)
                .map(|i| {
                    let h = if i % 40 == 0 { Health::Bad } else { Health::Ok };
                    row(&format!("s{i:03}"), i, 120 - i, h)
                })
                .collect(),
            at_ms: 1,
            took_ms: 1,
        }
    }

    #[test]
    fn a_page_is_filtered_sorted_and_bounded() {
        let o = overview();
        let s = summary(&o);
        assert_eq!(s.streams.bad, 3);
        assert_eq!(s.total_lag, (0..120).sum::<u64>());
        assert_eq!(s.worst.len(), 10);
        assert_eq!(s.worst[0].health, Health::Bad);
        let p = page(&o, s.clone(), &ViewQuery::default());
        assert_eq!((p.streams.len(), p.pages, p.matching), (50, 3, 120));
        assert_eq!(p.streams[0].name, "s000");
        let q = ViewQuery {
            sort: Some("lag".into()),
            per: Some(10_000),
            ..Default::default()
        };
        let p = page(&o, s.clone(), &q);
        assert_eq!(p.streams.len(), MAX_PER_PAGE.min(120));
        assert_eq!(p.streams[0].name, "s119", "largest lag first");
        let q = ViewQuery {
            q: Some("S01".into()),
            page: Some(99),
            ..Default::default()
        };
        let p = page(&o, s.clone(), &q);
        assert_eq!(p.matching, 10, "s010..s019");
        assert_eq!(p.page, 1, "a page past the end is the last one");
        let q = ViewQuery {
            health: Some("bad".into()),
            sort: Some("dlq".into()),
            dir: Some("asc".into()),
            ..Default::default()
        };
        let p = page(&o, s, &q);
        let names: Vec<&str> = p.streams.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["s080", "s040", "s000"]);
    }
}
