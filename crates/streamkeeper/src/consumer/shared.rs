//! [`Shared`]: what the tasks of one started consumer share (its names,
//! options, acker, budget, poison policy, held entries and metrics).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::acker::Acker;
use super::budget::Budget;
use super::in_flight::InFlight;
use super::options::ConsumerOptions;
use super::policy::Policy;
use crate::conn::Connector;
use crate::metrics::ConsumerMetrics;
use crate::types::{ConsumerName, Entry, GroupName, StreamKey};

/// What the consumer's tasks share.
pub(crate) struct Shared {
    pub(crate) connector: Connector,
    pub(crate) stream: StreamKey,
    pub(crate) group: GroupName,
    pub(crate) consumer: ConsumerName,
    pub(crate) options: ConsumerOptions,
    pub(crate) acker: Acker,
    pub(crate) budget: Budget,
    pub(crate) policy: Policy,
    pub(crate) in_flight: Arc<InFlight>,
    /// Entries the policy dead-lettered before a handler saw them.
    pub(crate) dead_before_run: AtomicU64,
    /// Its labelled series, registered once.
    pub(crate) metrics: ConsumerMetrics,
    /// Entries a task had taken from Redis but not handed on when the
    /// consumer stopped: read-ahead like the queued ones, handed back on
    /// close so a peer takes them at once.
    pub(crate) unsent: std::sync::Mutex<Vec<crate::types::StreamId>>,
}

impl Shared {
    /// Records entries taken but not handed on (see `unsent`).
    pub(crate) fn keep_unsent(&self, ids: impl IntoIterator<Item = crate::types::StreamId>) {
        if let Ok(mut u) = self.unsent.lock() {
            u.extend(ids);
        }
    }

    /// Drops (and acks) retries that another group of the stream asked
    /// for: a re-appended retry (a dead letter replayed after its original
    /// was trimmed, or a retry stored before 0.19) is meant for one group.
    pub(crate) fn admit(&self, entries: Vec<Entry>) -> Vec<Entry> {
        entries
            .into_iter()
            .filter(|e| match crate::retry::retry_info(e) {
                Some((group, _)) if group != self.group.as_str() => {
                    self.acker.ack(e.id);
                    false
                }
                _ => true,
            })
            .collect()
    }
}
