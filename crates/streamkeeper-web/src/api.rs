//! The read-only JSON API the page uses: overview, stream pages and the
//! capped filter, entry detail, groups and consumers, dead letters, the
//! janitor's trim preview, schedules and history. Everything here only
//! reads; names and values are sent as text with odd bytes escaped, and
//! the page puts them on screen with `textContent`.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use streamkeeper::deadletter;
use streamkeeper::inspect::{self, InspectOptions};
use streamkeeper::janitor::{self, JanitorOptions};
use streamkeeper::{pending, Entry, GroupName, StreamId};

use crate::names::{escaped, key_of, stream_param, text_of};
use crate::{ApiError, AppState};

/// Longest value shown in a list (the detail shows more).
const LIST_VALUE_CHARS: usize = 200;

/// Most entry bytes one list request reads from Redis (stream pages, dead
/// letters): a page of 1 MB entries stops early and says where to go on
/// (`next_before`, `next_after`), instead of reading 500 MB.
const READ_BUDGET: usize = 8 << 20;

/// Entries read from Redis at a time for a list: one XRANGE of 1 MB
/// entries then blocks Redis for a few milliseconds, not a second.
const READ_BATCH: usize = 20;

/// Most bytes of one value the entry detail shows (as text and as hex);
/// the rest is cut and the value's size said.
const DETAIL_VALUE_BYTES: usize = 256 << 10;

/// Most value bytes the entry detail shows in all (an entry of 100 fields
/// of 256 KB is not sent whole either): fields past it show their size only.
const DETAIL_TOTAL_BYTES: usize = 512 << 10;

/// How many entries to read next for a list: batches that grow from 1
/// (doubling the last one), each at most as many of the largest entry
/// seen so far as fit in what is left of [`READ_BUDGET`], at most
/// [`READ_BATCH`] and `left`. Only entries larger than any seen before
/// can pass the budget, by one batch of them.
fn next_batch(read: usize, largest: usize, last: usize, left: usize) -> usize {
    let fit = READ_BUDGET.saturating_sub(read) / largest.max(1);
    fit.min(last * 2).clamp(1, READ_BATCH).min(left)
}

/// The bytes of an entry's field names and values.
fn entry_bytes(e: &Entry) -> usize {
    e.fields.iter().map(|(k, v)| k.len() + v.len()).sum()
}

pub(crate) fn stream_id(s: &str) -> Result<StreamId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("{s:?} is not a stream ID: use MS-SEQ or MS")))
}

/// `GET /api/config`: what the page needs to know about this server.
pub(crate) async fn config(State(s): State<AppState>) -> Json<Value> {
    let c = s.config();
    Json(json!({
        "allow_actions": c.allow_actions,
        "csrf": if c.allow_actions { s.csrf() } else { "" },
        "redis": streamkeeper::conn::redact(s.redis().url()),
        "max_lag": c.max_lag,
        "max_time_lag_ms": c.max_time_lag.map(|d| d.as_millis() as u64),
        "namespace": c.namespace,
        "scan_cap": c.scan_cap,
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// `GET /api/overview?VIEW` (and `/api/streams`): the summary and one page
/// of rows (see [`ViewQuery`](crate::view::ViewQuery)), from a snapshot at
/// most a second old.
pub(crate) async fn overview(
    State(s): State<AppState>,
    Query(view): Query<crate::view::ViewQuery>,
) -> Result<Json<crate::view::Page>, ApiError> {
    let o = crate::collector::Collector::latest(&s, std::time::Duration::from_secs(1))
        .await
        .map_err(|e| ApiError(axum::http::StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(page_of(&s, &o, &view).await))
}

/// The page `view` asks for, with the sparklines of its groups.
pub(crate) async fn page_of(
    s: &AppState,
    o: &crate::overview::Overview,
    view: &crate::view::ViewQuery,
) -> crate::view::Page {
    let mut page = crate::view::page(o, crate::view::summary(o), view);
    // History is optional: without it (denied, not written yet) no trend.
    if let Ok(trends) = crate::history::trends(s).await {
        for row in &mut page.streams {
            let Some(groups) = trends.get(&row.name) else {
                continue;
            };
            for g in &mut row.groups {
                g.trend = groups.get(&g.name).cloned();
            }
        }
    }
    page
}

fn truncated(s: String) -> String {
    if s.chars().count() <= LIST_VALUE_CHARS {
        s
    } else {
        let mut t: String = s.chars().take(LIST_VALUE_CHARS).collect();
        t.push('…');
        t
    }
}

fn entry_row(e: &Entry) -> Value {
    let fields: Vec<Value> = e
        .fields
        .iter()
        .map(|(k, v)| json!([text_of(k), truncated(text_of(v))]))
        .collect();
    json!({ "id": e.id.to_string(), "fields": fields })
}

/// What a filter matches: `field=value` exactly, or a substring anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    Field(Vec<u8>, Vec<u8>),
    Substring(Vec<u8>),
}

impl Filter {
    pub(crate) fn parse(q: &str) -> Option<Filter> {
        let q = q.trim();
        if q.is_empty() {
            return None;
        }
        Some(match q.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(' ') => {
                Filter::Field(k.as_bytes().to_vec(), v.as_bytes().to_vec())
            }
            _ => Filter::Substring(q.as_bytes().to_vec()),
        })
    }

    pub(crate) fn matches(&self, e: &Entry) -> bool {
        match self {
            Filter::Field(k, v) => e.fields.iter().any(|(fk, fv)| fk == k && fv == v),
            Filter::Substring(s) => e.fields.iter().any(|(fk, fv)| {
                fk.windows(s.len()).any(|w| w == s.as_slice())
                    || fv.windows(s.len()).any(|w| w == s.as_slice())
            }),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    stream: Option<String>,
    /// The stream's raw name in base64url; wins over `stream`.
    key: Option<String>,
    /// Show entries with IDs below this (exclusive); newest first.
    before: Option<String>,
    count: Option<usize>,
    q: Option<String>,
    cap: Option<usize>,
}

/// `GET /api/stream?stream=S[&before=ID][&count=N][&q=FILTER][&cap=M]`
/// (or `key=BASE64URL` for `stream=`, as on every endpoint):
/// entries newest first, paged by ID (`before` may be a time in ms). With
/// `q`, scans at most `cap` entries and says how many it scanned.
pub(crate) async fn stream_page(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_param(q.key.as_deref(), q.stream.as_deref())?;
    let count = q.count.unwrap_or(50).clamp(1, 500);
    let cap = q
        .cap
        .unwrap_or(s.config().scan_cap)
        .clamp(1, s.config().scan_cap.max(1));
    let mut end = match q.before.as_deref().filter(|b| !b.is_empty()) {
        Some(b) => {
            let id = stream_id(b)?;
            if id == StreamId::MIN {
                StreamId::MIN
            } else {
                id.prev()
            }
        }
        None => StreamId::MAX,
    };
    let filter = q.q.as_deref().and_then(Filter::parse);
    let mut conn = s.redis().shared();
    let total: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis("XLEN", e))?;
    let mut out = Vec::new();
    let mut scanned = 0usize;
    let mut read = 0usize;
    let mut largest = 0usize;
    let mut last = 0usize;
    let mut exhausted = false;
    let mut next_before = None;
    loop {
        let left = match &filter {
            None => count - out.len(),
            Some(_) => cap - scanned,
        };
        let want = next_batch(read, largest, last, left);
        last = want;
        if want == 0 || read >= READ_BUDGET {
            break;
        }
        let page = pending::range_rev(s.redis(), &stream, end, StreamId::MIN, want).await?;
        let n = page.len();
        for e in &page {
            scanned += 1;
            read += entry_bytes(e);
            largest = largest.max(entry_bytes(e));
            next_before = Some(e.id);
            if filter.as_ref().is_none_or(|f| f.matches(e)) {
                out.push(entry_row(e));
                if out.len() >= count {
                    break;
                }
            }
        }
        if n < want {
            exhausted = true;
            break;
        }
        if out.len() >= count || scanned >= cap {
            break;
        }
        match page.last() {
            Some(l) if l.id != StreamId::MIN => end = l.id.prev(),
            _ => {
                exhausted = true;
                break;
            }
        }
    }
    Ok(Json(json!({
        "stream": stream.as_str(),
        "key": key_of(stream.as_str().as_bytes()),
        "length": total,
        "entries": out,
        "scanned": scanned,
        "cap": cap,
        "filtered": filter.is_some(),
        "bytes_read": read,
        "next_before": if exhausted { None } else { next_before.map(|i| i.to_string()) },
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EntryQuery {
    stream: Option<String>,
    key: Option<String>,
    id: String,
}

/// `GET /api/entry?stream=S&id=ID`: every field as text and hex, the wire
/// JSON, and per group whether it is pending (owner, idle, deliveries).
pub(crate) async fn entry(
    State(s): State<AppState>,
    Query(q): Query<EntryQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_param(q.key.as_deref(), q.stream.as_deref())?;
    let id = stream_id(&q.id)?;
    let found = streamkeeper::reader::range(s.redis(), &stream, id, id, 1).await?;
    let Some(e) = found.into_iter().next() else {
        return Err(ApiError(
            axum::http::StatusCode::NOT_FOUND,
            format!("no entry {id} in {stream} (trimmed or deleted?)"),
        ));
    };
    let size = entry_bytes(&e);
    let mut left = DETAIL_TOTAL_BYTES;
    let fields: Vec<Value> = e
        .fields
        .iter()
        .map(|(k, v)| {
            let shown = &v[..v.len().min(DETAIL_VALUE_BYTES).min(left)];
            left -= shown.len();
            json!({
                "name": text_of(k),
                "text": text_of(shown),
                "hex": crate::hex(shown),
                "bytes": v.len(),
                "truncated": shown.len() < v.len(),
            })
        })
        .collect();
    // The whole entry as wire JSON or parsed data only while it is small:
    // a 100 MB entry is not sent three times over.
    let small = size <= DETAIL_VALUE_BYTES;
    let mut pending_rows = Vec::new();
    for g in streamkeeper::group::list_groups(s.redis(), &stream).await? {
        let Ok(gname) = GroupName::new(g.name.as_str()) else {
            continue;
        };
        let delivered = g.last_delivered >= id;
        let p = pending::pending_range(s.redis(), &stream, &gname, id, id, 1)
            .await
            .unwrap_or_default();
        let state = match (p.first(), delivered) {
            (Some(_), _) => "pending",
            (None, true) => "acked",
            (None, false) => "undelivered",
        };
        pending_rows.push(json!({
            "group": g.name,
            "state": state,
            "consumer": p.first().map(|p| p.consumer.clone()),
            "idle_ms": p.first().map(|p| p.idle_ms),
            "deliveries": p.first().map(|p| p.deliveries),
        }));
    }
    let data = e
        .get(streamkeeper::types::DATA_FIELD)
        .filter(|_| small)
        .and_then(|d| serde_json::from_slice::<Value>(d).ok());
    let wire = small.then(|| streamkeeper::wire::entry_to_json(stream.as_str(), &e));
    Ok(Json(json!({
        "stream": stream.as_str(),
        "id": e.id.to_string(),
        "bytes": size,
        "fields": fields,
        "wire": wire,
        "data": data,
        "groups": pending_rows,
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    stream: Option<String>,
    key: Option<String>,
    count: Option<usize>,
}

/// `GET /api/groups?stream=S`: every group with its consumers.
pub(crate) async fn groups(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_param(q.key.as_deref(), q.stream.as_deref())?;
    let options = InspectOptions {
        memory: false,
        dead_after: s.config().dead_after,
        ..Default::default()
    };
    let st = inspect::stream_stat(s.redis(), &stream, &options).await?;
    Ok(Json(json!({
        "stream": st.stream,
        "length": st.length,
        "last_id": st.last_id,
        "dead_after_ms": s.config().dead_after.as_millis() as u64,
        "removable_after_ms": crate::actions::REMOVABLE_AFTER_MS
            .min(s.config().dead_after.as_millis() as u64),
        "groups": st.groups,
    })))
}

/// `GET /api/dlq?stream=S[&count=N]`: dead letters, oldest first, with
/// reason, attempts and origin.
pub(crate) async fn dlq(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_param(q.key.as_deref(), q.stream.as_deref())?;
    let count = q.count.unwrap_or(100).clamp(1, 500);
    let dlq = streamkeeper::StreamKey::new(streamkeeper::keys::StreamKeys::dlq(&stream))?;
    // Oldest first, in batches, within the byte budget.
    let mut letters = Vec::new();
    let mut read = 0usize;
    let mut largest = 0usize;
    let mut last = 0usize;
    let mut from = StreamId::MIN;
    let mut more = false;
    while letters.len() < count {
        if read >= READ_BUDGET {
            more = true;
            break;
        }
        let want = next_batch(read, largest, last, count - letters.len());
        last = want;
        let batch = streamkeeper::reader::range(s.redis(), &dlq, from, StreamId::MAX, want).await?;
        let n = batch.len();
        for e in &batch {
            read += entry_bytes(e);
            largest = largest.max(entry_bytes(e));
        }
        match batch.last() {
            Some(l) if l.id != StreamId::MAX => from = l.id.next(),
            _ => {}
        }
        letters.extend(batch);
        if n < want {
            break;
        }
    }
    let mut conn = s.redis().shared();
    let total: u64 = redis::cmd("XLEN")
        .arg(&dlq)
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis("XLEN", e))?;
    let rows: Vec<Value> = letters
        .iter()
        .map(|e| {
            let d = deadletter::DeadLetter::from(e);
            let fields: Vec<Value> = d
                .fields
                .iter()
                .map(|(k, v)| json!([text_of(k), truncated(text_of(v))]))
                .collect();
            json!({
                "id": d.id.to_string(),
                "origin": d.origin,
                "origin_id": d.origin_id.map(|i| i.to_string()),
                "group": d.group,
                "attempts": d.attempts,
                "reason": d.reason.map(truncated),
                "dead_at_ms": d.dead_at_ms,
                "fields": fields,
            })
        })
        .collect();
    Ok(Json(json!({
        "stream": stream.as_str(),
        "total": total,
        "letters": rows,
        "bytes_read": read,
        "cut_by_bytes": more,
    })))
}

/// `GET /api/janitor?stream=S`: the trim preview (a dry run) and which
/// group holds the trim point; each group row has its name escaped and
/// its `gkey` (base64url of the raw name).
pub(crate) async fn janitor(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_param(q.key.as_deref(), q.stream.as_deref())?;
    let report = janitor::run_once(
        s.redis(),
        &stream,
        &JanitorOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await?;
    let bounds = pending::trim_bounds(s.redis(), &stream).await?;
    // A group name that is not UTF-8 is a row like the others, escaped
    // (the library's text of it is lossy).
    let raws = crate::names::raw_groups(s.redis(), &stream).await;
    let rows: Vec<Value> = bounds
        .iter()
        .map(|b| {
            let (group, gkey) = crate::names::group_shown(&b.group, &raws);
            json!({
                "group": group,
                "gkey": gkey,
                "bound": b.bound.to_string(),
                "why": if b.pending { "oldest pending entry (not acknowledged)" } else { "entries not yet delivered" },
                "holds": Some(b.bound) == report.trim_to,
            })
        })
        .collect();
    Ok(Json(json!({
        "stream": report.stream,
        "trim_to": report.trim_to,
        "would_trim": report.trimmed,
        "groups": rows,
    })))
}

/// `GET /api/schedules`: every schedule with next due, last fired,
/// lateness, paused, and `overdue_ms` (how late its next tick is when
/// `next_due_ms` has passed, else null), plus the server's `now_ms`. The
/// hashes are read here, not through `Scheduler::list`, so one definition
/// written by hand wrong (not JSON, fields missing, a cron that never
/// parses) is a row with an `error` saying what is wrong, not a failed
/// tab.
pub(crate) async fn schedules(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    type Raw = std::collections::HashMap<Vec<u8>, Vec<u8>>;
    let keys = streamkeeper::keys::SchedulerKeys::new(&s.config().namespace);
    let mut conn = s.redis().shared();
    let (defs, due, state): (Raw, Vec<(Vec<u8>, f64)>, Raw) = redis::pipe()
        .hgetall(&keys.schedules)
        .cmd("ZRANGE")
        .arg(&keys.due)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .hgetall(&keys.state)
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis("listing schedules", e))?;
    let due: std::collections::HashMap<Vec<u8>, u64> =
        due.into_iter().map(|(n, d)| (n, d as u64)).collect();
    let now = streamkeeper::retry::now_ms();
    let mut defs: Vec<(Vec<u8>, Vec<u8>)> = defs.into_iter().collect();
    defs.sort();
    let rows: Vec<Value> = defs
        .iter()
        .map(|(name, def)| {
            let last = state.get(name).map(|v| {
                String::from_utf8_lossy(v)
                    .split(' ')
                    .map(|p| p.parse::<u64>().ok())
                    .collect::<Vec<_>>()
            });
            let last_due_ms = last.as_ref().and_then(|l| l.first().copied().flatten());
            let last_fired_ms = last.as_ref().and_then(|l| l.get(1).copied().flatten());
            let next_due_ms = due.get(name).copied();
            let mut row = json!({
                "name": escaped(name),
                "next_due_ms": next_due_ms,
                "last_due_ms": last_due_ms,
                "last_fired_ms": last_fired_ms,
                "lateness_ms": last_fired_ms
                    .zip(last_due_ms)
                    .map(|(f, d)| f.saturating_sub(d)),
                "overdue_ms": next_due_ms.filter(|d| *d < now).map(|d| now - d),
                "error": Value::Null,
            });
            match schedule_of(name, def) {
                Ok(sch) => {
                    let (every_ms, cron) = match &sch.spec {
                        streamkeeper::scheduler::Spec::EveryMs(ms) => (Some(*ms), None),
                        streamkeeper::scheduler::Spec::Cron { expr, tz } => {
                            (None, Some(format!("{expr} ({tz})")))
                        }
                    };
                    row["name"] = json!(sch.name);
                    row["every_ms"] = json!(every_ms);
                    row["cron"] = json!(cron);
                    row["target"] = json!(sch.target);
                    row["paused"] = json!(sch.paused);
                    if sch.paused {
                        row["overdue_ms"] = Value::Null;
                    }
                }
                Err(e) => row["error"] = json!(e),
            }
            row
        })
        .collect();
    Ok(Json(json!({ "now_ms": now, "schedules": rows })))
}

/// One stored definition, checked as `schedule add` checks it; what is
/// wrong with it otherwise, in one line.
fn schedule_of(name: &[u8], def: &[u8]) -> Result<streamkeeper::scheduler::Schedule, String> {
    let sch: streamkeeper::scheduler::Schedule = serde_json::from_slice(def)
        .map_err(|e| format!("the stored definition is not a schedule: {e}"))?;
    sch.validate().map_err(|e| e.to_string())?;
    if sch.name.as_bytes() != name {
        return Err(format!(
            "the definition is named {:?}, not as its hash field",
            sch.name
        ));
    }
    Ok(sch)
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    stream: Option<String>,
    key: Option<String>,
    points: Option<usize>,
}

/// `GET /api/history?key=K|stream=S[&points=N]`: one stream's chart points
/// from `{N}:history`, at most [`MAX_POINTS`](crate::history::MAX_POINTS)
/// spread over the whole history, oldest first.
pub(crate) async fn history(
    State(s): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let raw = crate::names::key_param(q.key.as_deref(), q.stream.as_deref(), ("stream", "key"))?;
    // Samples name streams as the overview shows them.
    let name = escaped(raw.as_bytes());
    let points = q.points.unwrap_or(120).clamp(1, crate::history::MAX_POINTS);
    // A history key of another type (written by hand) is no history: an
    // empty chart that says why, not a failed page.
    let (series, error) = match crate::history::series(&s, &name, points).await {
        Ok(series) => (series, None),
        Err(e) if e.server_code().as_deref() == Some("WRONGTYPE") => (
            Vec::new(),
            Some(format!(
                "{} is not a stream, so no history is kept: delete it (redis-cli DEL) and serve writes it again",
                crate::history::key(&s.config().namespace)
            )),
        ),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({
        "stream": name,
        "every_ms": s.config().history_every.as_millis() as u64,
        "max_points": crate::history::MAX_POINTS,
        "points": series,
        "error": error,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: StreamId::new(1, 0),
            fields: fields
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn filters_match_a_field_or_a_substring() {
        let entry = e(&[("user", "alice"), ("note", "hello world")]);
        assert!(Filter::parse("user=alice").is_some_and(|f| f.matches(&entry)));
        assert!(!Filter::parse("user=bob").is_some_and(|f| f.matches(&entry)));
        assert!(Filter::parse("lo wo").is_some_and(|f| f.matches(&entry)));
        assert!(!Filter::parse("nothing").is_some_and(|f| f.matches(&entry)));
        assert_eq!(Filter::parse("  "), None);
    }
}
