//! The poison policy of a consumer, in one place: when an entry goes to
//! the dead-letter queue instead of its handler, and what a failed attempt
//! turns into (a delayed retry with backoff, or a dead letter).
//!
//! It is applied to every delivery however it is consumed: entries taken
//! from the [`Deliveries`](crate::consumer::Deliveries) stream and entries
//! fed to [`GroupConsumer::run`](crate::GroupConsumer::run) meet the same
//! rules, because [`Deliveries::next`](crate::consumer::Deliveries::next)
//! applies the first half and [`Delivery::retry`](crate::Delivery::retry)
//! the second.

use std::time::Duration;

use super::options::ConsumerOptions;
use crate::types::Entry;

/// What the options say about failing entries.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    max_attempts: Option<u64>,
    max_age: Option<Duration>,
    backoff: Duration,
    backoff_max: Duration,
}

/// What becomes of a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Try again after this long.
    Retry(Duration),
    /// Out of attempts: dead-letter it with this reason.
    Dead(String),
}

impl Policy {
    pub(crate) fn new(options: &ConsumerOptions) -> Self {
        Policy {
            max_attempts: options.max_deliveries,
            max_age: options.max_age,
            backoff: options.retry_backoff,
            backoff_max: options.retry_backoff_max,
        }
    }

    /// Before a handler run: `Some(reason)` when the entry must go to the
    /// dead-letter queue instead. `earlier` counts the attempts it already
    /// had (failed, or cut off by a crash); reads that never reached a
    /// handler are not among them.
    pub(crate) fn before_run(&self, entry: &Entry, earlier: u64) -> Option<String> {
        self.before_run_after(entry, earlier, None)
    }

    /// [`before_run`](Self::before_run) for a retry whose last attempt
    /// failed with `last_error` (the dead letter says so; without it, the
    /// last attempt was cut off by a crash).
    pub(crate) fn before_run_after(
        &self,
        entry: &Entry,
        earlier: u64,
        last_error: Option<&str>,
    ) -> Option<String> {
        if let Some(max) = self.max_attempts.filter(|m| earlier >= *m) {
            return Some(match last_error {
                Some(e) => format!("had {earlier} attempts (max {max}); last error: {e}"),
                None => format!("had {earlier} attempts (max {max}), the last cut off by a crash"),
            });
        }
        let max = self.max_age?;
        let first = crate::retry::origin_id(entry);
        let age = Duration::from_millis(crate::retry::now_ms().saturating_sub(first.ms));
        (age > max).then(|| {
            format!(
                "older than the max age ({} > {})",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(max)
            )
        })
    }

    /// After the `attempt`-th run failed: retry after `after` (or the
    /// backoff when `None`), or dead-letter once attempts are used up.
    pub(crate) fn after_failure(&self, attempt: u64, after: Option<Duration>) -> AfterFailure {
        match self.max_attempts {
            Some(max) if attempt >= max => {
                AfterFailure::Dead(format!("failed {attempt} attempts (max {max})"))
            }
            _ => AfterFailure::Retry(after.unwrap_or_else(|| self.backoff(attempt))),
        }
    }

    /// The group's backoff after the `attempt`-th failed run.
    pub(crate) fn backoff(&self, attempt: u64) -> Duration {
        crate::retry::backoff(attempt, self.backoff, self.backoff_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::StreamId;

    fn policy(max: Option<u64>) -> Policy {
        Policy::new(&ConsumerOptions {
            max_deliveries: max,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(8),
            ..ConsumerOptions::default()
        })
    }

    fn fresh_entry() -> Entry {
        Entry {
            id: StreamId::new(crate::retry::now_ms(), 0),
            fields: vec![(b"k".to_vec(), b"v".to_vec())],
        }
    }

    #[test]
    fn attempts_count_towards_the_limit_reads_do_not() {
        let p = policy(Some(3));
        assert_eq!(p.before_run(&fresh_entry(), 0), None);
        assert_eq!(p.before_run(&fresh_entry(), 2), None);
        assert!(p.before_run(&fresh_entry(), 3).is_some());
        assert_eq!(
            p.before_run_after(&fresh_entry(), 3, Some("card declined")),
            Some("had 3 attempts (max 3); last error: card declined".into())
        );
        assert_eq!(
            p.after_failure(1, None),
            AfterFailure::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            p.after_failure(2, Some(Duration::from_millis(5))),
            AfterFailure::Retry(Duration::from_millis(5))
        );
        assert!(matches!(p.after_failure(3, None), AfterFailure::Dead(_)));
        assert_eq!(
            policy(None).after_failure(100, None),
            AfterFailure::Retry(Duration::from_secs(8))
        );
    }

    #[test]
    fn old_entries_are_dead_lettered_before_a_run() {
        let p = Policy {
            max_age: Some(Duration::from_secs(60)),
            ..policy(None)
        };
        let old = Entry {
            id: StreamId::new(crate::retry::now_ms() - 120_000, 0),
            fields: vec![],
        };
        assert!(p.before_run(&old, 0).is_some());
        assert_eq!(p.before_run(&fresh_entry(), 0), None);
    }
}
