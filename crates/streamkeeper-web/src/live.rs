//! `/api/events?VIEW`: live updates of one page as server-sent events.
//!
//! Every open page subscribes to the one collector (`collector.rs`), so
//! pages add no Redis load. The first event is a `page` (the summary and
//! the rows in view, as `/api/overview?VIEW` answers); after that, on each
//! new snapshot, a `changes` event carries only the rows in view that
//! changed, each as `{row, changes}` (the row's key and its changed
//! fields), and the summary when it changed. Ages that only grow with the
//! clock (`time_lag_ms`, `oldest_pending_ms`) do not count as a change:
//! the page counts them up from `lag_since_ms`, so an idle stream with a
//! backlog costs no bandwidth. When the rows in view are no
//! longer the same rows (a stream appeared, the sort moved one), a new
//! `page` is sent. While Redis cannot be reached a `down` event carries the
//! reason, so the page shows a banner and clears it by itself.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::{json, Map, Value};

use crate::collector::{Collector, Snapshot};
use crate::view::ViewQuery;
use crate::AppState;

/// What one page was last sent.
#[derive(Default)]
struct Sent {
    keys: Vec<String>,
    rows: HashMap<String, Map<String, Value>>,
    summary: Option<Value>,
    meta: Option<Value>,
    down: bool,
}

/// The event stream of one page.
pub(crate) async fn events(
    State(state): State<AppState>,
    Query(view): Query<ViewQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = Collector::subscribe(&state);
    let start = (rx, state, view, Sent::default(), true);
    let stream =
        futures::stream::unfold(start, |(mut rx, state, view, mut sent, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let snapshot: Option<Snapshot> = rx.borrow_and_update().clone();
            let event = match snapshot {
                // Nothing collected yet: wait for the first.
                None => Event::default().comment("waiting"),
                Some(Err(e)) => {
                    sent = Sent {
                        down: true,
                        ..Sent::default()
                    };
                    Event::default().event("down").data(e)
                }
                Some(Ok(o)) => {
                    let page = crate::api::page_of(&state, &o, &view).await;
                    next_event(&mut sent, page)
                }
            };
            Some((Ok(event), (rx, state, view, sent, false)))
        });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The `page` or `changes` event taking the page from what was sent to
/// `page`, and notes what is sent now.
fn next_event(sent: &mut Sent, page: crate::view::Page) -> Event {
    let value = serde_json::to_value(&page).unwrap_or_default();
    let keys: Vec<String> = page.streams.iter().map(|r| r.key.clone()).collect();
    let rows: HashMap<String, Map<String, Value>> = value["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["key"].as_str()?.to_string(), r.as_object()?.clone())))
        .collect();
    // What counts as a change: the rows without the ages.
    let stable: HashMap<&String, Value> = rows.iter().map(|(k, r)| (k, without_ages(r))).collect();
    let summary = value["summary"].clone();
    let meta = json!([
        page.matching,
        page.page,
        page.pages,
        page.per,
        page.sort,
        page.dir
    ]);
    if sent.down || keys != sent.keys || sent.meta.as_ref() != Some(&meta) {
        *sent = Sent {
            keys,
            rows,
            summary: Some(summary),
            meta: Some(meta),
            down: false,
        };
        return Event::default().event("page").data(value.to_string());
    }
    let mut changed = Vec::new();
    for key in &keys {
        let (Some(now), Some(before)) = (rows.get(key), sent.rows.get(key)) else {
            continue;
        };
        let before = without_ages(before);
        let changes: Map<String, Value> = now
            .iter()
            .filter(|(k, _)| before.get(*k) != stable[key].get(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changes.is_empty() {
            changed.push(json!({ "row": key, "changes": changes }));
        }
    }
    let summary_changed =
        sent.summary.as_ref().map(summary_without_ages) != Some(summary_without_ages(&summary));
    // Unchanged rows keep what was sent, so slow drifts still add up to a change.
    for key in &keys {
        if changed.iter().any(|c| c["row"] == **key) {
            if let Some(r) = rows.get(key) {
                sent.rows.insert(key.clone(), r.clone());
            }
        }
    }
    if changed.is_empty() && !summary_changed {
        return Event::default().comment("unchanged");
    }
    let mut out = json!({ "rows": changed, "at_ms": page.at_ms, "took_ms": page.took_ms });
    if summary_changed {
        out["summary"] = summary.clone();
        sent.summary = Some(summary);
    }
    Event::default().event("changes").data(out.to_string())
}

/// A row without the ages that grow with the clock.
fn without_ages(row: &Map<String, Value>) -> Value {
    let mut row = row.clone();
    if let Some(Value::Array(groups)) = row.get_mut("groups") {
        for g in groups.iter_mut().filter_map(Value::as_object_mut) {
            g.remove("time_lag_ms");
            g.remove("oldest_pending_ms");
        }
    }
    Value::Object(row)
}

/// The summary without the worst list's ages (its order and lags stay).
fn summary_without_ages(s: &Value) -> Value {
    let mut s = s.clone();
    if let Some(Value::Array(worst)) = s.get_mut("worst") {
        for w in worst.iter_mut().filter_map(Value::as_object_mut) {
            w.remove("time_lag_ms");
        }
    }
    s
}
