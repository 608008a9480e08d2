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
use streamkeeper::scheduler::Scheduler;
use streamkeeper::{pending, Entry, GroupName, StreamId, StreamKey};

use crate::names::escaped;
use crate::{ApiError, AppState};

/// Longest value shown in a list (the detail shows all of it).
const LIST_VALUE_CHARS: usize = 200;

pub(crate) fn stream_key(name: &str) -> Result<StreamKey, ApiError> {
    StreamKey::new(name).map_err(|_| ApiError::bad_request("missing ?stream=NAME"))
}

pub(crate) fn group_name(name: &str) -> Result<GroupName, ApiError> {
    GroupName::new(name).map_err(|_| ApiError::bad_request("missing group name"))
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

/// `GET /api/overview` (and `/api/streams`).
pub(crate) async fn overview(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let o = crate::overview::get(&s).await?;
    Ok(Json(serde_json::to_value(&*o).unwrap_or_default()))
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
        .map(|(k, v)| json!([escaped(k), truncated(escaped(v))]))
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
    stream: String,
    /// Show entries with IDs below this (exclusive); newest first.
    before: Option<String>,
    count: Option<usize>,
    q: Option<String>,
    cap: Option<usize>,
}

/// `GET /api/stream?stream=S[&before=ID][&count=N][&q=FILTER][&cap=M]`:
/// entries newest first, paged by ID (`before` may be a time in ms). With
/// `q`, scans at most `cap` entries and says how many it scanned.
pub(crate) async fn stream_page(
    State(s): State<AppState>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_key(&q.stream)?;
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
    let mut exhausted = false;
    let mut next_before = None;
    loop {
        let want = match &filter {
            None => count - out.len(),
            Some(_) => (cap - scanned).min(500),
        };
        if want == 0 {
            break;
        }
        let page = pending::range_rev(s.redis(), &stream, end, StreamId::MIN, want).await?;
        let n = page.len();
        for e in &page {
            scanned += 1;
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
        "length": total,
        "entries": out,
        "scanned": scanned,
        "cap": cap,
        "filtered": filter.is_some(),
        "next_before": if exhausted { None } else { next_before.map(|i| i.to_string()) },
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct EntryQuery {
    stream: String,
    id: String,
}

/// `GET /api/entry?stream=S&id=ID`: every field as text and hex, the wire
/// JSON, and per group whether it is pending (owner, idle, deliveries).
pub(crate) async fn entry(
    State(s): State<AppState>,
    Query(q): Query<EntryQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_key(&q.stream)?;
    let id = stream_id(&q.id)?;
    let found = streamkeeper::reader::range(s.redis(), &stream, id, id, 1).await?;
    let Some(e) = found.into_iter().next() else {
        return Err(ApiError(
            axum::http::StatusCode::NOT_FOUND,
            format!("no entry {id} in {stream} (trimmed or deleted?)"),
        ));
    };
    let fields: Vec<Value> = e
        .fields
        .iter()
        .map(|(k, v)| json!({ "name": escaped(k), "text": escaped(v), "hex": crate::hex(v) }))
        .collect();
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
        .and_then(|d| serde_json::from_slice::<Value>(d).ok());
    Ok(Json(json!({
        "stream": stream.as_str(),
        "id": e.id.to_string(),
        "fields": fields,
        "wire": streamkeeper::wire::entry_to_json(stream.as_str(), &e),
        "data": data,
        "groups": pending_rows,
    })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamQuery {
    stream: String,
    count: Option<usize>,
}

/// `GET /api/groups?stream=S`: every group with its consumers.
pub(crate) async fn groups(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_key(&q.stream)?;
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
    let stream = stream_key(&q.stream)?;
    let count = q.count.unwrap_or(100).clamp(1, 1000);
    let letters = deadletter::list(s.redis(), &stream, count).await?;
    let mut conn = s.redis().shared();
    let total: u64 = redis::cmd("XLEN")
        .arg(streamkeeper::keys::StreamKeys::dlq(&stream))
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
                .map(|(k, v)| json!([escaped(k), truncated(escaped(v))]))
                .collect();
            json!({
                "id": d.id.to_string(),
                "origin": d.origin,
                "origin_id": d.origin_id.map(|i| i.to_string()),
                "group": d.group,
                "attempts": d.attempts,
                "reason": d.reason,
                "dead_at_ms": d.dead_at_ms,
                "fields": fields,
            })
        })
        .collect();
    Ok(Json(json!({
        "stream": stream.as_str(),
        "total": total,
        "letters": rows,
    })))
}

/// `GET /api/janitor?stream=S`: the trim preview (a dry run) and which
/// group holds the trim point.
pub(crate) async fn janitor(
    State(s): State<AppState>,
    Query(q): Query<StreamQuery>,
) -> Result<Json<Value>, ApiError> {
    let stream = stream_key(&q.stream)?;
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
    let rows: Vec<Value> = bounds
        .iter()
        .map(|b| {
            json!({
                "group": b.group,
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
/// lateness and paused.
pub(crate) async fn schedules(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = Scheduler::new(s.redis(), &s.config().namespace)
        .list()
        .await?;
    let rows: Vec<Value> = list
        .iter()
        .map(|st| {
            let (every_ms, cron) = match &st.schedule.spec {
                streamkeeper::scheduler::Spec::EveryMs(ms) => (Some(*ms), None),
                streamkeeper::scheduler::Spec::Cron { expr, tz } => {
                    (None, Some(format!("{expr} ({tz})")))
                }
            };
            json!({
                "name": st.schedule.name,
                "every_ms": every_ms,
                "cron": cron,
                "target": st.schedule.target,
                "paused": st.schedule.paused,
                "next_due_ms": st.next_due_ms,
                "last_due_ms": st.last_due_ms,
                "last_fired_ms": st.last_fired_ms,
                "lateness_ms": st.lateness_ms(),
            })
        })
        .collect();
    Ok(Json(json!({ "schedules": rows })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistoryQuery {
    count: Option<usize>,
}

/// `GET /api/history[?count=N]`: the last samples of `{N}:history`.
pub(crate) async fn history(
    State(s): State<AppState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let count = q
        .count
        .unwrap_or(60)
        .clamp(1, crate::history::KEEP as usize);
    let samples = crate::history::samples(&s, count).await?;
    Ok(Json(json!({
        "every_ms": crate::history::EVERY.as_millis() as u64,
        "samples": &*samples,
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
