//! `/metrics`: Prometheus text with `# HELP` and `# TYPE` for every family.
//!
//! Stream and group gauges are written from the collector's first overview
//! taken after the scrape began (shared with open pages), not kept in a recorder, so a deleted stream has no series left
//! behind. The library's metrics (produced, delivered, acked, retried,
//! dead-lettered; labelled ones such as reclaimed) come from this
//! process's recorder ([`recorder`]), described, with the unlabelled
//! counters present from the start (at 0) so alerts can rely on them; the
//! per-stream totals Redis keeps (entries added, entries read by a group,
//! dead letters) are exported as well, since a dashboard process does not
//! produce or consume itself.

use std::fmt::Write;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::overview::{GroupRow, StreamRow};
use crate::{ApiError, AppState};

/// Bucket bounds (seconds) of the library's histograms: handler runs
/// from a millisecond to a minute, tick lateness up to five minutes.
const HANDLER_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const LATENESS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The process-wide Prometheus recorder, installed once: the library's
/// metrics described (`# HELP`), its histograms rendered with buckets
/// (not as summaries), and its unlabelled counters registered at 0. The
/// dashboard's `/metrics` appends it; the CLI's `--metrics ADDR` serves
/// it alone. `None` when another recorder was installed first.
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(streamkeeper::metrics::HANDLER_SECONDS.into()),
                    HANDLER_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(streamkeeper::metrics::TICK_LATENESS.into()),
                    LATENESS_BUCKETS,
                )
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            streamkeeper::metrics::describe();
            for name in streamkeeper::metrics::PROCESS_COUNTERS {
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

/// A label value escaped as the text format wants (`\\`, `\"`, `\n`), and
/// any other control character written as an escape of its own, so no raw
/// control byte reaches the scrape and every line parses. The text format
/// knows only those three escapes, so the others are spelled with an
/// escaped backslash: a carriage return becomes the label text `\r`, a tab
/// `\t`, others `\u{1b}`. Display names never hold `\r`, `\t` or `\u{…}`
/// otherwise (a UTF-8 name shows a backslash doubled, a non-UTF-8 one has
/// its control bytes escaped already), so two names never share a label.
pub(crate) fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\\\r"),
            '\t' => out.push_str("\\\\t"),
            c if c.is_control() => {
                out.push('\\');
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// `GET /metrics`.
pub(crate) async fn render(State(s): State<AppState>) -> Result<Response, ApiError> {
    // A snapshot taken after this scrape began: no series of a stream
    // deleted before it.
    let o = crate::collector::Collector::latest(&s, std::time::Duration::ZERO)
        .await
        .map_err(|e| ApiError(axum::http::StatusCode::SERVICE_UNAVAILABLE, e))?;
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

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("plain"), "plain");
        assert_eq!(label("a\\b"), "a\\\\b");
        assert_eq!(label("a\"b"), "a\\\"b");
        assert_eq!(label("a\nb"), "a\\nb");
        assert_eq!(label("a\rb"), "a\\\\rb");
        assert_eq!(label("a\tb"), "a\\\\tb");
        assert_eq!(label("a\u{1b}b\u{85}"), "a\\\\u{1b}b\\\\u{85}");
        assert!(!label("\u{0}\u{7f}\r\n").chars().any(char::is_control));
    }
}
