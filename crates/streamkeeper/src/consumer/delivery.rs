//! What a handler receives: [`Delivery`] (what it returns is in `outcome.rs`).
//!
//! A delivery is cheap to clone; while any clone lives, the consumer knows
//! the entry is being worked on: it does not hand it out a second time and
//! keeps it fresh so no peer reclaims it (see `keepalive.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::in_flight::{Guard, InFlight};
use super::outcome::{Outcome, Settled, Source};
use super::policy::AfterFailure;
use super::shared::Shared;
use crate::error::Result;
use crate::types::{Entry, GroupName, StreamId, StreamKey};

/// An entry read by the consumer and not yet handed out.
pub(crate) struct Held {
    pub(crate) entry: Entry,
    pub(crate) source: Source,
    /// A retry: the error its last attempt failed with.
    pub(crate) last_error: Option<String>,
    guard: Guard,
}

impl Held {
    pub(crate) fn new(entry: Entry, source: Source, in_flight: &Arc<InFlight>) -> Self {
        let guard = Guard::new(entry.id, in_flight.clone());
        Held {
            entry,
            source,
            last_error: None,
            guard,
        }
    }

    /// A retry, with the error its last attempt failed with.
    pub(crate) fn with_last_error(mut self, last_error: Option<String>) -> Self {
        self.last_error = last_error;
        self
    }

    /// Hands the entry out; `earlier` is its attempts before this one.
    pub(crate) fn into_delivery(self, earlier: u64, shared: Arc<Shared>) -> Delivery {
        let Held {
            entry,
            source,
            last_error,
            guard,
        } = self;
        // The handler run continues the producer's trace (design §11).
        let trace =
            std::sync::Mutex::new(crate::trace::TraceParent::of_entry(&entry).map(|p| p.child()));
        Delivery {
            inner: Arc::new(Inner {
                trace,
                entry,
                attempt: std::sync::atomic::AtomicU64::new(earlier + 1),
                released: std::sync::atomic::AtomicBool::new(false),
                source,
                last_error,
                shared,
                guard,
            }),
        }
    }
}

/// Hands `items` on in order; when the consumer stops first, the ones not
/// handed on are kept in `shared.unsent` (for the hand-back on close).
/// False once the consumer stops.
pub(crate) async fn send_all(
    shared: &Shared,
    tx: &tokio::sync::mpsc::Sender<Result<Held>>,
    cancel: &tokio_util::sync::CancellationToken,
    items: impl IntoIterator<Item = Held>,
) -> bool {
    let mut items = items.into_iter();
    while let Some(held) = items.next() {
        let id = held.entry.id;
        tokio::select! {
            _ = cancel.cancelled() => {
                shared.keep_unsent(std::iter::once(id).chain(items.map(|h| h.entry.id)));
                return false;
            }
            sent = tx.send(Ok(held)) => if sent.is_err() { return false },
        }
    }
    true
}

struct Inner {
    entry: Entry,
    /// The handler run's trace context: the entry's `traceparent` with a
    /// span id of this run (the exported span's, with `otel`).
    trace: std::sync::Mutex<Option<crate::trace::TraceParent>>,
    /// Raised by in-place re-runs (ordered mode); shared by every clone.
    attempt: std::sync::atomic::AtomicU64,
    /// Set by [`Delivery::release`]: the handler's `Ack` writes nothing.
    released: std::sync::atomic::AtomicBool,
    source: Source,
    last_error: Option<String>,
    shared: Arc<Shared>,
    guard: Guard,
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
        super::attempts::bump(&self.inner.shared, self.id()).await?;
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
        if let Err(e) = super::attempts::bump(&self.inner.shared, self.id()).await {
            tracing::warn!(id = %self.id(), error = %e, "could not mark the re-run");
        }
    }

    /// A delayed retry ([`Source::Retry`]): the error its last attempt
    /// failed with, when the handler said (asynq's and BullMQ's "last
    /// error").
    pub fn last_error(&self) -> Option<&str> {
        self.inner.last_error.as_deref()
    }

    /// The producer's trace context: the entry's `traceparent` field, when
    /// it holds a valid W3C one.
    pub fn trace_parent(&self) -> Option<crate::trace::TraceParent> {
        crate::trace::TraceParent::of_entry(&self.inner.entry)
    }

    /// This handler run's trace context, to hand on to whatever the
    /// handler calls: the producer's trace id with the run's own span id
    /// (with the `otel` feature, the id of the exported `process` span).
    /// `None` when the entry carries no trace context.
    pub fn trace(&self) -> Option<crate::trace::TraceParent> {
        self.inner.trace.lock().ok().and_then(|t| *t)
    }

    /// Sets the run's trace context (the span the consumer started for it).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn set_trace(&self, t: crate::trace::TraceParent) {
        if let Ok(mut g) = self.inner.trace.lock() {
            *g = Some(t);
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
            super::attempts::unmark(&self.inner.shared, self.id()).await?;
        }
        Ok(())
    }

    /// Says the entry only waits in a queue, its run not begun: the
    /// handler hands entries to a worker that works through its input in
    /// order (`consume --pipe`), and this process cannot tell which one the
    /// worker is on. A crash of this process before the entry is settled
    /// then counts no attempt of it (its mark, if one was written when it
    /// came back after a crash, is taken back); failures the handler
    /// reports (`fail`, `retry`, a timeout) still count. Without this, a
    /// crash would charge every queued entry an attempt, and entries the
    /// worker never read could reach the dead-letter queue.
    pub async fn queued(&self) -> Result<()> {
        if self.inner.shared.acker.queued(self.id()).await {
            super::attempts::unmark(&self.inner.shared, self.id()).await?;
        }
        Ok(())
    }

    /// Leaves the entry pending as it is, its attempts counted (unlike
    /// [`release`](Self::release), no attempt mark is taken back): for an
    /// entry this consumer may no longer run, such as an ordered-mode
    /// owner's that lost its lease or hands its shard over mid-retry. The
    /// next reader gets it first. Like a released delivery, it is neither
    /// acked nor counted as acked when the handler returns
    /// [`Outcome::Ack`].
    pub async fn leave_pending(&self) {
        self.inner
            .released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.inner.shared.acker.release(self.id()).await;
    }

    /// Whether [`release`](Self::release) or
    /// [`leave_pending`](Self::leave_pending) was called.
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
                // Parked with a short delay, it may be taken as a due retry
                // before this delivery lets go of it below: the taker waits
                // for that rather than skipping it as held.
                let parking = super::in_flight::Parking::new(&self.inner.guard);
                let stored = crate::retry::RetryStore {
                    stream: &s.stream,
                    group: &s.group,
                    id: self.inner.entry.id,
                    due_ms: due,
                    attempts: self.attempt(),
                    reason: error,
                    fence: s.options.fence.as_ref(),
                }
                .invoke(&s.connector)
                .await?;
                s.acker.settled(self.inner.entry.id);
                Ok(match stored {
                    crate::retry::Stored::Scheduled => {
                        // Parked: when due it may come back to this very
                        // consumer while this delivery still lives.
                        self.inner.guard.let_go();
                        drop(parking);
                        Settled::RetryScheduled
                    }
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
        let r = crate::deadletter::DeadLetterMove {
            stream: &s.stream,
            group: &s.group,
            id: self.inner.entry.id,
            attempts: self.attempt(),
            reason,
            fence: s.options.fence.as_ref(),
        }
        .invoke(&s.connector)
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
