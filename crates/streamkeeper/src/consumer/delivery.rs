//! What a handler receives and returns: [`Delivery`], [`Outcome`], [`AckMode`].
//!
//! A delivery is cheap to clone; while any clone lives, the consumer knows
//! the entry is being worked on and does not hand it out a second time
//! (its own reclaim and pending re-reads skip it).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consumer::Shared;
use crate::error::Result;
use crate::types::{Entry, GroupName, StreamId, StreamKey};

/// When entries are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// After the handler returned [`Outcome::Ack`] (at-least-once).
    #[default]
    Auto,
    /// Never: entries are read with `NOACK` and are not pending
    /// (at-most-once: an entry read by a consumer that then crashes is lost).
    None,
    /// The handler calls [`Delivery::ack`] itself.
    Manual,
}

/// What a handler decided about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// Try again later: the entry is acked and stored in `{S}:retry`
    /// (atomically), then re-appended for this group when `after` has
    /// passed. Handler errors and panics become retries with the
    /// consumer's exponential backoff.
    Retry {
        /// Earliest time for the next attempt.
        after: Duration,
    },
    /// Give up on it: move it to the dead-letter stream `{S}:dlq` (with
    /// `sk-*` metadata) and ack it, atomically.
    DeadLetter {
        /// Why, kept with the dead letter.
        reason: String,
    },
}

/// Where a delivery came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// A new entry (`XREADGROUP … >`).
    New,
    /// This consumer's own pending entry, re-read on start or reconnect.
    Pending,
    /// An entry reclaimed from an idle (probably crashed) consumer.
    Claimed,
}

/// The set of entry IDs this consumer currently holds.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Mutex<HashSet<StreamId>>);

impl InFlight {
    /// Marks `id` as held; false if it already was.
    pub(crate) fn insert(&self, id: StreamId) -> bool {
        self.0.lock().map(|mut s| s.insert(id)).unwrap_or(true)
    }

    pub(crate) fn contains(&self, id: &StreamId) -> bool {
        self.0.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    fn remove(&self, id: &StreamId) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(id);
        }
    }
}

struct Inner {
    entry: Entry,
    delivery_count: u64,
    source: Source,
    shared: Arc<Shared>,
    in_flight: Arc<InFlight>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.in_flight.remove(&self.entry.id);
    }
}

/// One entry handed to this consumer.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("stream", &self.inner.shared.stream)
            .field("id", &self.inner.entry.id)
            .field("delivery_count", &self.inner.delivery_count)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl Delivery {
    pub(crate) fn new(
        entry: Entry,
        delivery_count: u64,
        source: Source,
        shared: Arc<Shared>,
        in_flight: Arc<InFlight>,
    ) -> Self {
        Delivery {
            inner: Arc::new(Inner {
                entry,
                delivery_count,
                source,
                shared,
                in_flight,
            }),
        }
    }

    /// The entry.
    pub fn entry(&self) -> &Entry {
        &self.inner.entry
    }

    /// The entry's ID.
    pub fn id(&self) -> StreamId {
        self.inner.entry.id
    }

    /// The stream it came from.
    pub fn stream(&self) -> &StreamKey {
        &self.inner.shared.stream
    }

    /// How many times this entry has been delivered to the group, this
    /// delivery included (1 for a first delivery). Deliveries before a
    /// delayed retry count too.
    pub fn delivery_count(&self) -> u64 {
        self.inner.delivery_count
    }

    /// Whether the entry is new, re-read from this consumer's pending list,
    /// or reclaimed from another consumer.
    pub fn source(&self) -> Source {
        self.inner.source
    }

    /// The consumer group.
    pub fn group(&self) -> &GroupName {
        &self.inner.shared.group
    }

    pub(crate) fn connector(&self) -> &crate::Connector {
        &self.inner.shared.connector
    }

    /// Acks the entry and stores it for a retry after `after` (one
    /// script); the retry mover re-appends it for this group when due.
    pub async fn retry(&self, after: Duration) -> Result<crate::retry::Stored> {
        let s = &self.inner.shared;
        let due = crate::retry::now_ms()
            .saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        crate::retry::store(
            &s.connector,
            &s.stream,
            &s.group,
            self.inner.entry.id,
            due,
            self.inner.delivery_count,
        )
        .await
    }

    /// Queues the acknowledgement; acks are sent in batches (one `XACK` per
    /// batch or interval) and flushed when the consumer closes.
    pub fn ack(&self) {
        self.inner.shared.acker.ack(self.inner.entry.id);
    }

    /// Moves the entry to the dead-letter stream `{S}:dlq` and acks it, in
    /// one script. Returns the dead letter's ID (`None` if the entry was
    /// no longer pending).
    pub async fn dead_letter(&self, reason: &str) -> Result<Option<StreamId>> {
        let s = &self.inner.shared;
        crate::deadletter::dead_letter(
            &s.connector,
            &s.stream,
            &s.group,
            self.inner.entry.id,
            self.inner.delivery_count,
            reason,
        )
        .await
    }
}
