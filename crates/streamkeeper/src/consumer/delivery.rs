//! What a handler receives and returns: [`Delivery`], [`Outcome`], [`AckMode`].
//!
//! A delivery is cheap to clone; while any clone lives, the consumer knows
//! the entry is being worked on: it does not hand it out a second time and
//! keeps it fresh so no peer reclaims it (see `keepalive.rs`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::consumer::policy::AfterFailure;
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
#[non_exhaustive]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// This attempt failed; try again later. The entry is acked and stored
    /// in `{S}:retry` (atomically), then re-appended for this group when
    /// `after` has passed — or, once `max_deliveries` attempts have
    /// failed, moved to the dead-letter queue. Handler errors and panics
    /// are `Retry { after: None }`.
    Retry {
        /// Earliest time for the next attempt; `None`: the consumer's
        /// exponential backoff.
        after: Option<Duration>,
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
    /// An entry reclaimed from a consumer that stopped keeping it fresh
    /// (it crashed, or was frozen for longer than `claim_after`).
    Claimed,
}

/// What became of a delivery that was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Acknowledgement queued (sent with the next batch).
    Acked,
    /// Acked and stored in `{S}:retry` for another attempt later.
    RetryScheduled,
    /// Moved to the dead-letter stream; the dead letter's ID.
    DeadLettered(StreamId),
    /// It was no longer pending (a peer settled or took it meanwhile):
    /// nothing was written.
    NotPending,
}

/// The entry IDs this consumer holds (read ahead or being handled), and
/// those whose ack is queued or in flight: until Redis confirmed the ack,
/// an entry is still pending, so it is kept fresh like a held one and
/// never handed out again (a re-read after a reconnect, or this
/// consumer's own reclaim while a migrating slot refuses the XACK, would
/// otherwise run it twice).
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    held: Mutex<HashSet<StreamId>>,
    acking: Mutex<HashSet<StreamId>>,
    /// Held entries a peer took over while this process was frozen: they
    /// are not handed out any more.
    lost: Mutex<HashSet<StreamId>>,
    /// Whether `lost` may be non-empty: spares the hot path its lock.
    any_lost: std::sync::atomic::AtomicBool,
}

impl InFlight {
    /// Marks `id` as held; false if it already was, or its ack is on
    /// its way.
    pub(crate) fn insert(&self, id: StreamId) -> bool {
        if self.is_acking(&id) {
            return false;
        }
        self.held.lock().map(|mut s| s.insert(id)).unwrap_or(true)
    }

    /// Held, or its ack not confirmed yet.
    pub(crate) fn contains(&self, id: &StreamId) -> bool {
        self.is_held(id) || self.is_acking(id)
    }

    /// Held: read ahead or being handled.
    pub(crate) fn is_held(&self, id: &StreamId) -> bool {
        self.held.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    fn is_acking(&self, id: &StreamId) -> bool {
        self.acking.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    /// The ack of `id` is queued.
    pub(crate) fn ack_queued(&self, id: StreamId) {
        if let Ok(mut s) = self.acking.lock() {
            s.insert(id);
        }
    }

    /// The acks of `ids` are done with (confirmed, or given up: then the
    /// entries are pending again like any other).
    pub(crate) fn acks_done(&self, ids: &[StreamId]) {
        if let Ok(mut s) = self.acking.lock() {
            for id in ids {
                s.remove(id);
            }
        }
    }

    /// The IDs to keep fresh now: held ones and those being acked.
    pub(crate) fn snapshot(&self) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self
            .held
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if let Ok(s) = self.acking.lock() {
            ids.extend(s.iter().copied());
        }
        ids
    }

    /// Records that a peer owns `id` now.
    pub(crate) fn mark_lost(&self, id: StreamId) {
        if let Ok(mut s) = self.lost.lock() {
            s.insert(id);
            self.any_lost
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// True (once) if a peer took `id` over.
    pub(crate) fn take_lost(&self, id: &StreamId) -> bool {
        if !self.any_lost.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.lost.lock().map(|mut s| s.remove(id)).unwrap_or(false)
    }

    pub(crate) fn remove(&self, id: &StreamId) {
        if let Ok(mut s) = self.held.lock() {
            s.remove(id);
        }
        if self.any_lost.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(mut s) = self.lost.lock() {
                s.remove(id);
                if s.is_empty() {
                    self.any_lost
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
}

/// Keeps an ID in the held set for as long as it lives.
pub(crate) struct Guard {
    id: StreamId,
    in_flight: Arc<InFlight>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.in_flight.remove(&self.id);
    }
}

/// An entry read by the consumer and not yet handed out.
pub(crate) struct Held {
    pub(crate) entry: Entry,
    pub(crate) source: Source,
    guard: Guard,
}

impl Held {
    pub(crate) fn new(entry: Entry, source: Source, in_flight: &Arc<InFlight>) -> Self {
        let guard = Guard {
            id: entry.id,
            in_flight: in_flight.clone(),
        };
        Held {
            entry,
            source,
            guard,
        }
    }

    /// Hands the entry out; `earlier` is its attempts before this one.
    pub(crate) fn into_delivery(self, earlier: u64, shared: Arc<Shared>) -> Delivery {
        let Held {
            entry,
            source,
            guard,
        } = self;
        Delivery {
            inner: Arc::new(Inner {
                entry,
                attempt: std::sync::atomic::AtomicU64::new(earlier + 1),
                released: std::sync::atomic::AtomicBool::new(false),
                source,
                shared,
                _guard: guard,
            }),
        }
    }
}

struct Inner {
    entry: Entry,
    /// Raised by in-place re-runs (ordered mode); shared by every clone.
    attempt: std::sync::atomic::AtomicU64,
    /// Set by [`Delivery::release`]: the handler's `Ack` writes nothing.
    released: std::sync::atomic::AtomicBool,
    source: Source,
    shared: Arc<Shared>,
    _guard: Guard,
}

/// One entry handed to this consumer's handler.
#[derive(Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("stream", &self.inner.shared.stream)
            .field("id", &self.inner.entry.id)
            .field("attempt", &self.attempt())
            .field("source", &self.inner.source)
            .finish()
    }
}

impl Delivery {
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

    /// Which attempt this is: 1 the first time a handler gets the entry,
    /// plus one for every earlier handler run that failed, panicked or was
    /// cut off by a crash (also across delayed retries). Reads that never
    /// reached a handler — read ahead, then a graceful stop or a crash —
    /// do not count. This is what `max_deliveries` limits.
    pub fn attempt(&self) -> u64 {
        self.inner.attempt.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Acks now and waits until Redis has it (ordered mode: the next entry
    /// of the shard must not start while this one's ack could still be
    /// lost with a crash, or a crash would re-run it and count the re-run
    /// as an attempt).
    pub(crate) async fn ack_now(&self) -> Result<()> {
        self.ack();
        self.inner.shared.acker.flush().await
    }

    /// Writes the entry's attempt mark before its run (ordered mode), so
    /// that a crash during the very first run counts too; shared mode
    /// marks new entries lazily instead (see `attempts`).
    pub(crate) async fn mark_now(&self) -> Result<()> {
        crate::consumer::attempts::bump(&self.inner.shared, self.id()).await?;
        self.inner.shared.acker.marked(self.id());
        Ok(())
    }

    /// Sets the attempt every clone reports (and a dead letter records).
    pub(crate) fn set_attempt(&self, attempt: u64) {
        self.inner
            .attempt
            .store(attempt, std::sync::atomic::Ordering::SeqCst);
    }

    /// Starts another run of the same delivery in place (ordered mode
    /// retries a failed entry without letting it go): raises the attempt
    /// every clone reports, and the entry's attempt mark, so that a crash
    /// during this run counts it too. The mark is best effort: if Redis
    /// refuses it, a crash now is counted as in shared mode's first run.
    pub(crate) async fn start_rerun(&self, attempt: u64) {
        self.set_attempt(attempt);
        if let Err(e) = crate::consumer::attempts::bump(&self.inner.shared, self.id()).await {
            tracing::warn!(id = %self.id(), error = %e, "could not mark the re-run");
        }
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

    /// Queues the acknowledgement; acks are sent in batches (one `XACK` per
    /// batch or interval) and flushed when the consumer closes.
    pub fn ack(&self) {
        self.inner.shared.acker.ack(self.inner.entry.id);
    }

    /// Records this attempt as failed: the entry is acked and stored for a
    /// retry after `after` (`None`: the consumer's backoff) in one script,
    /// or, when this was the last attempt `max_deliveries` allows, moved to
    /// the dead-letter queue.
    pub async fn retry(&self, after: Option<Duration>) -> Result<Settled> {
        self.failed(after, None).await
    }

    /// Records this attempt as failed because of `error`, like
    /// [`retry`](Self::retry) with the consumer's backoff; when it was the
    /// last attempt, the dead letter's reason ends with `error` (the
    /// handler's own words, e.g. a `--pipe` worker's `fail ID REASON`).
    ///
    /// ```no_run
    /// # async fn f(d: streamkeeper::Delivery) -> streamkeeper::Result<()> {
    /// d.fail("card declined").await?;
    /// # Ok(()) }
    /// ```
    pub async fn fail(&self, error: &str) -> Result<Settled> {
        self.failed(None, Some(error)).await
    }

    /// Hands the entry back without counting this run as an attempt: it
    /// stays pending (this consumer re-reads it after a restart, a peer
    /// reclaims it after `claim_after`) and the attempt mark of this run
    /// is taken back. For a run that never really started, e.g. a worker
    /// process that could not be started at all. A handler that released
    /// its delivery may return [`Outcome::Ack`]: nothing is acked.
    pub async fn release(&self) -> Result<()> {
        self.inner
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if self.inner.shared.acker.release(self.id()).await {
            crate::consumer::attempts::unmark(&self.inner.shared, self.id()).await?;
        }
        Ok(())
    }

    /// Whether [`release`](Self::release) was called.
    pub fn is_released(&self) -> bool {
        self.inner
            .released
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn failed(&self, after: Option<Duration>, error: Option<&str>) -> Result<Settled> {
        let s = &self.inner.shared;
        match s.policy.after_failure(self.attempt(), after) {
            AfterFailure::Dead(reason) => match error {
                Some(error) => self.dead_letter(&format!("{reason}: {error}")).await,
                None => self.dead_letter(&reason).await,
            },
            AfterFailure::Retry(after) => {
                let due = crate::retry::now_ms()
                    .saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
                let stored = crate::retry::store_fenced(
                    &s.connector,
                    &s.stream,
                    &s.group,
                    self.inner.entry.id,
                    due,
                    self.attempt(),
                    s.options.fence.as_ref(),
                )
                .await?;
                s.acker.settled(self.inner.entry.id);
                Ok(match stored {
                    crate::retry::Stored::Scheduled => Settled::RetryScheduled,
                    crate::retry::Stored::Deleted | crate::retry::Stored::NotPending => {
                        Settled::NotPending
                    }
                })
            }
        }
    }

    /// Moves the entry to the dead-letter stream `{S}:dlq` and acks it, in
    /// one script.
    pub async fn dead_letter(&self, reason: &str) -> Result<Settled> {
        let s = &self.inner.shared;
        let r = crate::deadletter::dead_letter_fenced(
            &s.connector,
            &s.stream,
            &s.group,
            self.inner.entry.id,
            self.attempt(),
            reason,
            s.options.fence.as_ref(),
        )
        .await?;
        s.acker.settled(self.inner.entry.id);
        Ok(match r {
            Some(id) => Settled::DeadLettered(id),
            None => Settled::NotPending,
        })
    }

    /// Settles the delivery as a handler decided: ack, retry (or dead
    /// letter once out of attempts), or dead letter.
    pub async fn settle(&self, outcome: Outcome) -> Result<Settled> {
        match outcome {
            Outcome::Ack if self.is_released() => Ok(Settled::NotPending),
            Outcome::Ack => {
                self.ack();
                Ok(Settled::Acked)
            }
            Outcome::Retry { after } => self.retry(after).await,
            Outcome::DeadLetter { reason } => self.dead_letter(&reason).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;
    use crate::types::StreamId;

    const A: StreamId = StreamId::new(1, 0);
    const B: StreamId = StreamId::new(2, 0);

    #[test]
    fn an_id_is_held_once_until_removed() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        assert!(!in_flight.insert(A), "a held entry is not handed out twice");
        assert!(in_flight.is_held(&A) && in_flight.contains(&A));
        in_flight.remove(&A);
        assert!(!in_flight.contains(&A));
        assert!(in_flight.insert(A));
    }

    #[test]
    fn an_entry_whose_ack_is_on_its_way_is_not_handed_out_again() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        in_flight.ack_queued(A);
        in_flight.remove(&A);
        assert!(!in_flight.is_held(&A));
        assert!(in_flight.contains(&A), "still pending until Redis confirms");
        assert!(!in_flight.insert(A), "a re-read must not run it twice");
        in_flight.acks_done(&[A]);
        assert!(!in_flight.contains(&A));
        assert!(in_flight.insert(A), "a given-up ack makes it pending again");
    }

    #[test]
    fn snapshot_keeps_held_and_acking_entries_fresh() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        in_flight.ack_queued(B);
        let mut ids = in_flight.snapshot();
        ids.sort();
        assert_eq!(ids, vec![A, B]);
        in_flight.remove(&A);
        in_flight.acks_done(&[B]);
        assert!(in_flight.snapshot().is_empty());
    }

    #[test]
    fn a_lost_entry_is_reported_once_and_forgotten_on_remove() {
        let in_flight = InFlight::default();
        assert!(!in_flight.take_lost(&A), "nothing lost yet");
        in_flight.mark_lost(A);
        in_flight.mark_lost(B);
        assert!(in_flight.take_lost(&A));
        assert!(!in_flight.take_lost(&A), "reported once");
        in_flight.remove(&B);
        assert!(!in_flight.take_lost(&B), "remove forgets a lost entry");
    }
}
