//! `/metrics`: Prometheus text with `# HELP` and `# TYPE` for every family.
//!
//! Stream and group gauges are written from a fresh overview on each
//! scrape, not kept in a recorder, so a deleted stream has no series left
//! behind. The library's counters (produced, delivered, acked, retried,
//! dead-lettered, reclaimed) come from this process's recorder, described
//! and present from the start (at 0) so alerts can rely on them; the
//! per-stream totals Redis keeps (entries added, entries read by a group,
//! dead letters) are exported as well, since a dashboard process does not
//! produce or consume itself.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::overview::{GroupRow, StreamRow};
use crate::{ApiError, AppState};

/// The library's counters with their help text.
pub const COUNTERS: &[(&str, &str)] = &[
    (
        "streamkeeper_produced_total",
        "Entries appended by producers of this process.",
    ),
    (
        "streamkeeper_delivered_total",
        "Entries handed to consumers of this process (read or reclaimed).",
    ),
    (
        "streamkeeper_acked_total",
        "Entries acknowledged by consumers of this process.",
    ),
    (
        "streamkeeper_retried_total",
        "Entries stored for a delayed retry by this process.",
    ),
    (
        "streamkeeper_dead_lettered_total",
        "Entries moved to a dead-letter stream by this process.",
    ),
    (
        "streamkeeper_reclaimed_total",
        "Entries this process reclaimed from crashed consumers.",
    ),
    (
        "streamkeeper_reconnects_total",
        "Reconnects (or failover recoveries) attempted by this process.",
    ),
    (
        "streamkeeper_janitor_trimmed_total",
        "Entries the janitor of this process trimmed.",
    ),
];

/// The process-wide Prometheus recorder, installed once, with the
/// library's counters described and registered at 0.
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            for (name, help) in COUNTERS {
                metrics::describe_counter!(*name, *help);
                metrics::counter!(*name).increment(0);
            }
            Some(handle)
        })
        .clone()
}

/// A metric family: name, type, help, and its value for one row.
type Family<R> = (
    &'static str,
    &'static str,
    &'static str,
    fn(&R) -> Option<f64>,
);

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`.
pub(crate) async fn render(State(s): State<AppState>) -> Result<Response, ApiError> {
    let o = crate::overview::collect(&s).await?;
    // A sharded stream's summed row is left out: its shards are series of
    // their own, and summing them again would count every entry twice in
    // a `sum()` over streams.
    let rows: Vec<&StreamRow> = o.streams.iter().filter(|r| r.shards.is_none()).collect();
    let mut out = String::new();
    let stream_gauges: [Family<StreamRow>; 4] = [
        (
            "streamkeeper_stream_length",
            "gauge",
            "Entries in the stream.",
            |r| r.length.map(|v| v as f64),
        ),
        (
            "streamkeeper_stream_memory_bytes",
            "gauge",
            "Memory of the stream (sampled MEMORY USAGE).",
            |r| r.memory_bytes.map(|v| v as f64),
        ),
        (
            "streamkeeper_stream_entries_added_total",
            "counter",
            "Entries ever added to the stream (Redis >= 7).",
            |r| r.entries_added.map(|v| v as f64),
        ),
        (
            "streamkeeper_stream_dead_letters",
            "gauge",
            "Entries in the stream's dead-letter queue.",
            |r| r.length.map(|_| r.dead_letters as f64),
        ),
    ];
    for (name, kind, help, get) in stream_gauges {
        family(&mut out, name, kind, help);
        for r in &rows {
            if let Some(v) = get(r) {
                let _ = writeln!(out, "{name}{{stream=\"{}\"}} {v}", label(&r.name));
            }
        }
    }
    let group_gauges: [Family<GroupRow>; 6] = [
        (
            "streamkeeper_group_pending",
            "gauge",
            "Entries delivered to the group and not acknowledged.",
            |g| Some(g.pending as f64),
        ),
        (
            "streamkeeper_group_undelivered",
            "gauge",
            "Entries not yet delivered to the group.",
            |g| Some(g.undelivered as f64),
        ),
        (
            "streamkeeper_group_outstanding",
            "gauge",
            "Pending plus undelivered: the group's lag in entries.",
            |g| Some(g.outstanding as f64),
        ),
        (
            "streamkeeper_group_time_lag_seconds",
            "gauge",
            "Age of the group's oldest outstanding entry.",
            |g| Some(g.time_lag_ms as f64 / 1000.0),
        ),
        (
            "streamkeeper_group_entries_read_total",
            "counter",
            "Entries the group has read (Redis >= 7).",
            |g| g.entries_read.map(|v| v as f64),
        ),
        (
            "streamkeeper_group_dead_consumers",
            "gauge",
            "Consumers idle past the threshold while holding entries.",
            |g| Some(g.dead_consumers as f64),
        ),
    ];
    for (name, kind, help, get) in group_gauges {
        family(&mut out, name, kind, help);
        for r in &rows {
            for g in &r.groups {
                if let Some(v) = get(g) {
                    let _ = writeln!(
                        out,
                        "{name}{{stream=\"{}\",group=\"{}\"}} {v}",
                        label(&r.name),
                        label(&g.name)
                    );
                }
            }
        }
    }
    family(
        &mut out,
        "streamkeeper_stream_up",
        "gauge",
        "1 when the stream could be inspected, 0 when its row has an error.",
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "streamkeeper_stream_up{{stream=\"{}\"}} {}",
            label(&r.name),
            u8::from(r.error.is_none())
        );
    }
    if let Some(h) = recorder() {
        out.push_str(&h.render());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}
