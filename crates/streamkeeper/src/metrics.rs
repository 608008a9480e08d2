//! What the library records through the `metrics` facade: every name, its
//! help text ([`describe`]) and the helpers that record it. Nothing is
//! exported unless the application installs a recorder (the CLI's
//! `--metrics ADDR` and `serve` do); without one each call is a no-op.
//!
//! The consumer's per-entry series are labelled by stream and group, so
//! their handles are registered once per run (`ConsumerMetrics`), not
//! looked up with fresh label strings per entry.

use metrics::{Counter, Gauge, Histogram};

/// Entries settled after a handler run, by `outcome`.
pub const ENTRIES_HANDLED: &str = "streamkeeper_entries_handled_total";
/// Handler run durations (a histogram).
pub const HANDLER_SECONDS: &str = "streamkeeper_handler_seconds";
/// Handler runs in progress.
pub const IN_FLIGHT: &str = "streamkeeper_in_flight";
/// Entries reclaimed from consumers that stopped keeping them fresh.
pub const RECLAIMED: &str = "streamkeeper_reclaimed_total";
/// Ticks emitted by the scheduler, by `schedule`.
pub const TICKS_EMITTED: &str = "streamkeeper_ticks_emitted_total";
/// How late a tick was emitted after its due time (a histogram).
pub const TICK_LATENESS: &str = "streamkeeper_tick_lateness_seconds";
/// Entries the janitor trimmed, by `stream`.
pub const TRIMMED: &str = "streamkeeper_trimmed_total";

/// The histograms, for an exporter that needs bucket bounds per name.
pub const HISTOGRAMS: &[&str] = &[HANDLER_SECONDS, TICK_LATENESS];

/// The process-wide counters without labels: present from the start (at
/// 0) in an exporter that registers them, so alerts can rely on them.
pub const PROCESS_COUNTERS: &[&str] = &[
    "streamkeeper_produced_total",
    "streamkeeper_delivered_total",
    "streamkeeper_acked_total",
    "streamkeeper_retried_total",
    "streamkeeper_dead_lettered_total",
    "streamkeeper_reconnects_total",
];

/// Gives every metric the library records its help text (Prometheus
/// `# HELP`). Call it once after installing a recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "streamkeeper_produced_total",
        "Entries appended by producers of this process."
    );
    describe_counter!(
        "streamkeeper_delivered_total",
        "Entries handed to consumers of this process (read, reclaimed or due for a retry)."
    );
    describe_counter!(
        "streamkeeper_acked_total",
        "Entries acknowledged by consumers of this process."
    );
    describe_counter!(
        "streamkeeper_retried_total",
        "Entries stored for a delayed retry by this process."
    );
    describe_counter!(
        "streamkeeper_dead_lettered_total",
        "Entries moved to a dead-letter stream by this process."
    );
    describe_counter!(
        "streamkeeper_reconnects_total",
        "Reconnects (or failover recoveries) attempted by this process."
    );
    describe_counter!(
        ENTRIES_HANDLED,
        "Handler runs settled, by outcome: ack, retry (the handler asked), failed (error or panic; retried later), dead_letter."
    );
    describe_histogram!(HANDLER_SECONDS, Unit::Seconds, "Duration of handler runs.");
    describe_gauge!(IN_FLIGHT, "Handler runs in progress.");
    describe_counter!(
        RECLAIMED,
        "Entries this process reclaimed from consumers that stopped keeping them fresh."
    );
    describe_counter!(TICKS_EMITTED, "Ticks this scheduler emitted.");
    describe_histogram!(
        TICK_LATENESS,
        Unit::Seconds,
        "How late a tick was emitted after its due time."
    );
    describe_counter!(TRIMMED, "Entries the janitor of this process trimmed.");
}

/// A name as a label value: the name as is, with a backslash doubled and
/// control characters escaped (`\r`, `\n`, `\t`, `\u{…}`), so no raw
/// control byte reaches an exporter and two names never share a label.
/// Quotes are left to the exporter, whose format decides how to escape
/// them.
pub fn label(name: &str) -> String {
    if !name.chars().any(|c| c == '\\' || c.is_control()) {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.extend(c.escape_debug()),
            c => out.push(c),
        }
    }
    out
}

/// Why a handler run ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handled {
    /// Acknowledged.
    Ack,
    /// The handler returned `Outcome::Retry`.
    Retry,
    /// The handler failed (error or panic); the entry stays pending.
    Failed,
    /// Moved to the dead-letter stream.
    DeadLetter,
}

/// One consumer's labelled series, registered once when it starts.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMetrics {
    ack: Counter,
    retry: Counter,
    failed: Counter,
    dead_letter: Counter,
    handler_seconds: Histogram,
    in_flight: Gauge,
    reclaimed: Counter,
}

impl ConsumerMetrics {
    pub(crate) fn new(stream: &str, group: &str) -> Self {
        let (stream, group) = (label(stream), label(group));
        let handled = |outcome: &'static str| metrics::counter!(ENTRIES_HANDLED, "stream" => stream.clone(), "group" => group.clone(), "outcome" => outcome);
        ConsumerMetrics {
            ack: handled("ack"),
            retry: handled("retry"),
            failed: handled("failed"),
            dead_letter: handled("dead_letter"),
            handler_seconds: metrics::histogram!(HANDLER_SECONDS, "stream" => stream.clone(), "group" => group.clone()),
            in_flight: metrics::gauge!(IN_FLIGHT, "stream" => stream.clone(), "group" => group.clone()),
            reclaimed: metrics::counter!(RECLAIMED, "stream" => stream, "group" => group),
        }
    }

    /// One settled handler run.
    pub(crate) fn handled(&self, how: Handled) {
        match how {
            Handled::Ack => &self.ack,
            Handled::Retry => &self.retry,
            Handled::Failed => &self.failed,
            Handled::DeadLetter => &self.dead_letter,
        }
        .increment(1);
    }

    /// Entries reclaimed from another consumer.
    pub(crate) fn reclaimed(&self, n: usize) {
        self.reclaimed.increment(n as u64);
    }

    /// Counts a handler run as in flight until the guard drops (a panic
    /// or a cancelled run included), then records its duration.
    pub(crate) fn start_run(&self) -> RunGuard {
        self.in_flight.increment(1.0);
        RunGuard {
            started: std::time::Instant::now(),
            in_flight: self.in_flight.clone(),
            seconds: self.handler_seconds.clone(),
        }
    }
}

/// A handler run in progress (see [`ConsumerMetrics::start_run`]).
#[derive(Debug)]
pub(crate) struct RunGuard {
    started: std::time::Instant,
    in_flight: Gauge,
    seconds: Histogram,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
        self.seconds.record(self.started.elapsed().as_secs_f64());
    }
}

/// Most schedules with series of their own in one process; ticks of the
/// others are counted under `schedule="(other)"`. A million schedules
/// must not become a million counters and histograms (in this process and
/// in Prometheus).
pub const MAX_SCHEDULE_LABELS: usize = 1_000;

/// The `schedule` label of `name`: its own for the first
/// [`MAX_SCHEDULE_LABELS`] names seen, `(other)` after.
fn schedule_label(name: &str) -> String {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Ok(mut seen) = SEEN.get_or_init(Default::default).lock() else {
        return "(other)".to_string();
    };
    if seen.contains(name) || seen.len() < MAX_SCHEDULE_LABELS {
        seen.insert(name.to_string());
        label(name)
    } else {
        "(other)".to_string()
    }
}

/// Ticks of one schedule emitted, with each tick's due time (ms).
pub(crate) fn ticks_emitted(schedule: &str, now_ms: u64, due_ms: &[u64]) {
    let schedule = schedule_label(schedule);
    metrics::counter!(TICKS_EMITTED, "schedule" => schedule.clone()).increment(due_ms.len() as u64);
    let late = metrics::histogram!(TICK_LATENESS, "schedule" => schedule);
    for due in due_ms {
        late.record(now_ms.saturating_sub(*due) as f64 / 1000.0);
    }
}

/// Entries the janitor trimmed from a stream.
pub(crate) fn trimmed(stream: &str, n: u64) {
    metrics::counter!(TRIMMED, "stream" => label(stream)).increment(n);
}

/// A reconnect (or failover recovery) was attempted.
pub(crate) fn reconnect() {
    metrics::counter!("streamkeeper_reconnects_total").increment(1);
}

/// Entries appended by producers.
pub(crate) fn produced(n: usize) {
    metrics::counter!("streamkeeper_produced_total").increment(n as u64);
}

/// Entries moved to a dead-letter stream.
pub(crate) fn dead_lettered() {
    metrics::counter!("streamkeeper_dead_lettered_total").increment(1);
}

/// Entries stored for a delayed retry.
pub(crate) fn retried() {
    metrics::counter!("streamkeeper_retried_total").increment(1);
}

/// Entries handed to this process by XREADGROUP, reclaiming or a retry
/// falling due.
pub(crate) fn delivered(n: usize) {
    metrics::counter!("streamkeeper_delivered_total").increment(n as u64);
}

/// Entries acknowledged.
pub(crate) fn acked(n: usize) {
    metrics::counter!("streamkeeper_acked_total").increment(n as u64);
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_keep_names_apart_and_hold_no_control_characters() {
        assert_eq!(label("orders"), "orders");
        assert_eq!(label("a\\b"), "a\\\\b");
        assert_eq!(label("a\rb"), "a\\rb");
        assert_ne!(label("a\rb"), label("a\\rb"));
        assert_eq!(label("a\"b"), "a\"b");
        assert!(!label("\u{0}\u{7f}\r\n\t").chars().any(char::is_control));
    }
}

#[cfg(test)]
mod schedule_label_tests {
    use super::*;

    #[test]
    fn schedules_beyond_the_cap_share_one_label_and_earlier_ones_keep_theirs() {
        let first = schedule_label("cap-test-first");
        assert_eq!(first, "cap-test-first");
        let mut calls = 0;
        while schedule_label(&format!("cap-test-{calls}")) != "(other)" {
            calls += 1;
            assert!(calls <= MAX_SCHEDULE_LABELS, "no cap after {calls} names");
        }
        assert_eq!(schedule_label("cap-test-first"), "cap-test-first");
        assert_eq!(schedule_label("cap-test-never-seen"), "(other)");
    }
}
