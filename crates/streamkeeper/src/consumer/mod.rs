//! The group consumer: read, hand out, acknowledge, reclaim.
//!
//! [`GroupConsumer::start`] spawns the tasks it owns: the read loop (on a
//! dedicated blocking connection), the reclaimer (`XAUTOCLAIM`), the
//! keepalive that keeps held entries fresh so live consumers are never
//! reclaimed from, the retry mover (one per stream, by lease) and the
//! acker (batched `XACK` and attempt marks). Deliveries come out of
//! [`Deliveries::next`], or are fed to a handler by [`GroupConsumer::run`];
//! either way the poison policy (`policy.rs`) and the attempt count
//! (`attempts.rs`) apply.
//!
//! | file | what |
//! |---|---|
//! | `read_loop.rs` | own pending first, then `XREADGROUP … >`; reconnects |
//! | `reclaim.rs` | `XAUTOCLAIM` of entries whose consumer stopped touching them |
//! | `keepalive.rs` | `XCLAIM <self> 0 … JUSTID` of every held entry |
//! | `attempts.rs` | `{S}:attempts`: handler runs, not reads |
//! | `policy.rs` | max attempts, max age, backoff |
//! | `acker.rs` | batched acks and lazy attempt marks |
//! | `delivery.rs` | `Delivery`, `Outcome`, `Settled`, `AckMode`, `Source` |
//! | `run.rs` | `run(handler, concurrency)` |
//!
//! ```no_run
//! # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
//! use streamkeeper::{GroupConsumer, Outcome, StartFrom, StreamKey, GroupName};
//! let consumer = GroupConsumer::new(&redis, StreamKey::new("orders")?, GroupName::new("billing")?)
//!     .create_group(StartFrom::Beginning)
//!     .claim_after(std::time::Duration::from_secs(30));
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! consumer
//!     .run(|d| async move {
//!         println!("{} attempt #{}", d.id(), d.attempt());
//!         Ok::<_, std::convert::Infallible>(Outcome::Ack)
//!     }, 8, shutdown)
//!     .await?;
//! # Ok(()) }
//! ```

mod acker;
mod attempts;
mod delivery;
mod keepalive;
mod policy;
mod read_loop;
mod reclaim;
mod run;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use delivery::{AckMode, Delivery, Outcome, Settled, Source};
pub use run::RunStats;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::group;
use crate::types::{ConsumerName, Entry, GroupName, StartFrom, StreamKey};
use acker::Acker;
use delivery::{Held, InFlight};
use policy::Policy;

/// The smallest `claim_after`: a live consumer refreshes what it holds
/// every third of it, and below this, ordinary scheduling and network
/// delays would make live consumers look crashed (their entries taken and
/// handled twice). Smaller values are raised to it.
pub const MIN_CLAIM_AFTER: Duration = Duration::from_millis(250);

/// Settings of a [`GroupConsumer`]; the builder methods set them.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Entries per `XREADGROUP` (COUNT).
    pub batch: usize,
    /// Batches read ahead of the handler (memory bound: `batch × prefetch`).
    pub prefetch: usize,
    /// `BLOCK` time of one read.
    pub block: Duration,
    /// When entries are acknowledged.
    pub ack_mode: AckMode,
    /// Most IDs in one `XACK`.
    pub ack_batch: usize,
    /// Longest time an ack waits before it is sent.
    pub ack_interval: Duration,
    /// Reclaim entries that stayed idle longer than this (`None`: never).
    /// A live consumer keeps every entry it holds fresh (read ahead or
    /// running, however long its handler takes), so this is the time to
    /// detect a crashed or frozen consumer, not a handler time limit.
    pub claim_after: Option<Duration>,
    /// Create the group from here if it does not exist.
    pub create: Option<StartFrom>,
    /// Read at most this many entries in all, then end the stream. Reads
    /// ask only for what is left, so no entry is taken (and left pending)
    /// beyond the limit.
    pub limit: Option<u64>,
    /// Most attempts per entry: handler runs that failed, panicked or were
    /// cut off by a crash. The run that uses up the last attempt moves the
    /// entry to the dead-letter stream (with its ack, atomically). Reads
    /// that never reached a handler do not count, and a graceful stop
    /// never pushes an entry towards the dead-letter queue. Applies to
    /// [`Deliveries::next`] and [`GroupConsumer::run`] alike.
    pub max_deliveries: Option<u64>,
    /// An entry older than this (by the time in its first ID) goes to the
    /// dead-letter stream instead of a handler.
    pub max_age: Option<Duration>,
    /// Backoff of the first retry after a failed attempt; it doubles with
    /// every attempt…
    pub retry_backoff: Duration,
    /// …up to this.
    pub retry_backoff_max: Duration,
    /// How often the retry mover looks for due retries.
    pub retry_poll: Duration,
    /// Ordered mode: the shard's owner lease and this owner's token.
    /// Acks, retries and dead letters are refused (error `SKFENCED`) once
    /// the lease is no longer this consumer's, so a zombie cannot write.
    pub fence: Option<Fence>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            batch: 100,
            prefetch: 2,
            block: Duration::from_secs(5),
            ack_mode: AckMode::Auto,
            ack_batch: 1000,
            ack_interval: Duration::from_millis(50),
            claim_after: Some(Duration::from_secs(60)),
            create: None,
            limit: None,
            max_deliveries: None,
            max_age: None,
            retry_backoff: Duration::from_secs(1),
            retry_backoff_max: Duration::from_secs(300),
            retry_poll: Duration::from_millis(200),
            fence: None,
        }
    }
}

impl ConsumerOptions {
    /// How often the reclaimer looks for idle entries: a quarter of
    /// `claim_after`, between 100 ms and 30 s.
    pub fn claim_interval(&self) -> Duration {
        self.claim_after
            .map(|d| (d / 4).clamp(Duration::from_millis(100), Duration::from_secs(30)))
            .unwrap_or(Duration::from_secs(30))
    }
}

/// The owner lease a fenced consumer must still hold to settle entries
/// (see [`ConsumerOptions::fence`]); set by the ordered mode of
/// [`crate::shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease key (in the stream's slot).
    pub key: String,
    /// The value this owner set in it.
    pub token: String,
}

/// A member of a consumer group on one stream.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    connector: Connector,
    stream: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
    options: ConsumerOptions,
    /// Set by [`crate::shard::run_shared`] so that `options.limit` counts
    /// across the shards; otherwise made from `options.limit` at start.
    budget: Option<Budget>,
}

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
}

/// What is left of [`ConsumerOptions::limit`], shared by the read loop and
/// the reclaimer (and, in [`crate::shard::run_shared`], by every shard's
/// consumer): each reserves before it reads and settles afterwards, giving
/// back what it did not get.
#[derive(Debug, Clone, Default)]
pub(crate) struct Budget(Option<Arc<BudgetInner>>);

#[derive(Debug)]
struct BudgetInner {
    left: std::sync::atomic::AtomicU64,
    /// Reserved by reads still in progress.
    reserved: std::sync::atomic::AtomicU64,
    /// How many consumers draw from it: each reservation takes at most an
    /// even share of what is left.
    sharers: u64,
    /// Cancelled once the budget is used up for good, to wake the loops
    /// waiting for work that will never come (see [`Budget::spent`]).
    spent: CancellationToken,
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Budget::shared(limit, 1)
    }

    /// A budget `sharers` consumers draw from (the shards of
    /// [`crate::shard::run_shared`]).
    pub(crate) fn shared(limit: Option<u64>, sharers: usize) -> Self {
        let budget = Budget(limit.map(|l| {
            Arc::new(BudgetInner {
                left: std::sync::atomic::AtomicU64::new(l),
                reserved: std::sync::atomic::AtomicU64::new(0),
                sharers: (sharers as u64).max(1),
                spent: CancellationToken::new(),
            })
        }));
        budget.mark_if_spent();
        budget
    }

    /// Reserves up to `want`; 0 means nothing is left right now.
    pub(crate) fn reserve(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let Some(b) = &self.0 else { return want };
        let want = want as u64;
        let mut got = 0;
        let _ = b
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                got = l.min(want).min(l.div_ceil(b.sharers));
                Some(l - got)
            });
        b.reserved.fetch_add(got, Ordering::SeqCst);
        usize::try_from(got).unwrap_or(usize::MAX)
    }

    /// Ends a reservation of `reserved` that received `got` entries.
    pub(crate) fn settle(&self, reserved: usize, got: usize) {
        use std::sync::atomic::Ordering;
        if let Some(b) = &self.0 {
            b.left
                .fetch_add(reserved.saturating_sub(got) as u64, Ordering::SeqCst);
            b.reserved.fetch_sub(reserved as u64, Ordering::SeqCst);
        }
        // Only a settle (or a zero limit) can use the budget up for good.
        self.mark_if_spent();
    }

    fn mark_if_spent(&self) {
        if let Some(b) = &self.0 {
            if self.exhausted() {
                b.spent.cancel();
            }
        }
    }

    /// True when other consumers draw from this budget too.
    pub(crate) fn is_shared(&self) -> bool {
        self.0.as_ref().is_some_and(|b| b.sharers > 1)
    }

    /// Resolves once the budget is used up for good; never without a limit.
    pub(crate) async fn spent(&self) {
        match &self.0 {
            Some(b) => b.spent.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// True when the limit is set and used up for good: nothing left and
    /// no read in progress that could give some back.
    pub(crate) fn exhausted(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0.as_ref().is_some_and(|b| {
            b.left.load(Ordering::SeqCst) == 0 && b.reserved.load(Ordering::SeqCst) == 0
        })
    }
}

impl Shared {
    /// Drops (and acks) retries that another group of the stream asked
    /// for: a re-appended retry is meant for one group only.
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

/// Fails with [`Error::NoPermission`] when the user may not run Lua
/// scripts: acks with attempt marks, retries and dead letters are scripts,
/// and without them failed entries would silently never be retried.
async fn check_scripts_allowed(connector: &Connector) -> Result<()> {
    let mut conn = connector.shared();
    let probe = redis::Script::new("return 1");
    match probe.invoke_async::<_, i64>(&mut conn).await {
        Ok(_) => Ok(()),
        Err(e) if crate::error::error_code(&e).as_deref() == Some("NOPERM") => {
            Err(Error::NoPermission {
                command: "EVALSHA/EVAL".into(),
                needed_for: "a consumer group member (acks, retries, dead letters)".into(),
                acl: "evalsha +eval".into(),
            })
        }
        Err(e) => Err(Error::redis("checking that Lua scripts may run", e)),
    }
}

impl GroupConsumer {
    /// A consumer named uniquely for this process (see
    /// [`ConsumerName::unique`]); set a stable name with
    /// [`consumer_name`](Self::consumer_name) so a restart re-reads its
    /// own pending entries.
    pub fn new(connector: &Connector, stream: StreamKey, group: GroupName) -> Self {
        GroupConsumer {
            connector: connector.clone(),
            stream,
            group,
            consumer: ConsumerName::unique(),
            options: ConsumerOptions::default(),
            budget: None,
        }
    }

    /// Draws deliveries from `budget` (shared with other consumers)
    /// instead of a budget of its own made from `options.limit`.
    pub(crate) fn shared_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Sets the consumer's name.
    pub fn consumer_name(mut self, name: ConsumerName) -> Self {
        self.consumer = name;
        self
    }

    /// Replaces all options at once.
    pub fn options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    /// Creates the group (and the stream) from `from` if missing.
    pub fn create_group(mut self, from: StartFrom) -> Self {
        self.options.create = Some(from);
        self
    }

    /// Entries per read.
    pub fn batch(mut self, n: usize) -> Self {
        self.options.batch = n.max(1);
        self
    }

    /// `BLOCK` time of one read.
    pub fn block(mut self, d: Duration) -> Self {
        self.options.block = d;
        self
    }

    /// Ack mode.
    pub fn ack_mode(mut self, m: AckMode) -> Self {
        self.options.ack_mode = m;
        self
    }

    /// Reclaim entries idle longer than `d` (at least [`MIN_CLAIM_AFTER`]).
    pub fn claim_after(mut self, d: Duration) -> Self {
        self.options.claim_after = Some(d);
        self
    }

    /// Dead-letter entries after `n` failed attempts (see
    /// [`ConsumerOptions::max_deliveries`]).
    pub fn max_deliveries(mut self, n: u64) -> Self {
        self.options.max_deliveries = Some(n);
        self
    }

    /// Dead-letter entries older than `d` (see [`ConsumerOptions::max_age`]).
    pub fn max_age(mut self, d: Duration) -> Self {
        self.options.max_age = Some(d);
        self
    }

    /// Backoff after a failed attempt: `base`, doubling per attempt, at most `max`.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.options.retry_backoff = base;
        self.options.retry_backoff_max = max;
        self
    }

    /// Read at most `n` entries, then end (see [`ConsumerOptions::limit`]).
    pub fn limit(mut self, n: u64) -> Self {
        self.options.limit = Some(n);
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &ConsumerName {
        &self.consumer
    }

    /// Checks the group (creating it if asked), opens the dedicated
    /// connection and starts the tasks. Fails with
    /// [`Error::GroupMissing`] or [`Error::WrongType`] before reading
    /// anything.
    pub async fn start(mut self) -> Result<Deliveries> {
        if let Some(d) = self.options.claim_after.filter(|d| *d < MIN_CLAIM_AFTER) {
            tracing::warn!(claim_after = ?d, min = ?MIN_CLAIM_AFTER, "claim_after raised to its minimum");
            self.options.claim_after = Some(MIN_CLAIM_AFTER);
        }
        match self.options.create {
            Some(from) => {
                group::create_group(&self.connector, &self.stream, &self.group, from).await?;
            }
            None => {
                let groups = group::list_groups(&self.connector, &self.stream).await?;
                if !groups.iter().any(|g| g.name == self.group.as_str()) {
                    return Err(Error::GroupMissing {
                        stream: self.stream.clone(),
                        group: self.group.clone(),
                    });
                }
            }
        }
        if self.options.ack_mode != AckMode::None {
            check_scripts_allowed(&self.connector).await?;
        }
        let conn = self
            .connector
            .dedicated(&self.stream, self.options.block)
            .await?;
        let in_flight = Arc::new(InFlight::default());
        let (acker, ack_task) = Acker::spawn(
            self.connector.clone(),
            self.stream.clone(),
            self.group.clone(),
            self.options.ack_batch,
            self.options.ack_interval,
            self.options.fence.clone(),
            in_flight.clone(),
        );
        let limit = self.options.limit;
        let shared = Arc::new(Shared {
            connector: self.connector,
            stream: self.stream,
            group: self.group,
            consumer: self.consumer,
            policy: Policy::new(&self.options),
            options: self.options,
            acker: acker.clone(),
            budget: self.budget.unwrap_or_else(|| Budget::new(limit)),
            in_flight: in_flight.clone(),
            dead_before_run: AtomicU64::new(0),
        });
        let capacity = (shared.options.batch * shared.options.prefetch.max(1)).max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(read_loop::read_loop(
            shared.clone(),
            conn,
            tx.clone(),
            in_flight.clone(),
            cancel.clone(),
        ))];
        // With NOACK nothing is pending: nothing to reclaim, keep fresh or retry.
        if shared.options.ack_mode != AckMode::None {
            tasks.push(tokio::spawn(reclaim::reclaim_loop(
                shared.clone(),
                tx,
                in_flight.clone(),
                cancel.clone(),
            )));
            tasks.push(tokio::spawn(keepalive::keepalive_loop(
                shared.clone(),
                in_flight,
                cancel.clone(),
            )));
            tasks.push(tokio::spawn(crate::retry::mover_loop(
                shared.connector.clone(),
                shared.stream.clone(),
                shared.consumer.to_string(),
                shared.options.retry_poll,
                cancel.clone(),
            )));
        }
        Ok(Deliveries {
            rx,
            marking: None,
            cancel,
            tasks,
            ack_task: Some(ack_task),
            acker,
            shared,
        })
    }
}

/// The deliveries of a started consumer.
///
/// It ends after an error that retrying cannot fix (the error is its last
/// item). [`close`](Self::close) stops reading and flushes queued acks;
/// entries read but not yet handed out stay pending for this consumer and
/// are re-read on its next start (or reclaimed by others) without counting
/// as an attempt.
pub struct Deliveries {
    rx: mpsc::Receiver<Result<Held>>,
    /// An entry whose run is being marked before it is handed out. The
    /// mark runs in a task of its own and is kept here, so a `next()`
    /// dropped half way (a shutdown racing it) neither loses the entry nor
    /// leaves a mark for a run that never happened: the next call hands
    /// it out, and `close` takes the mark back.
    marking: Option<(Held, JoinHandle<Result<u64>>)>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    ack_task: Option<JoinHandle<()>>,
    acker: Acker,
    shared: Arc<Shared>,
}

impl Deliveries {
    /// The next delivery; `None` after close or a fatal error.
    ///
    /// Handing an entry out starts an attempt (see
    /// [`Delivery::attempt`]). An entry that is out of attempts (its
    /// earlier runs were cut off by crashes) or older than `max_age` is
    /// moved to the dead-letter queue here instead of being returned.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        loop {
            let (held, cut_off) = match self.marking.as_mut() {
                Some((_, task)) => {
                    // Awaiting a `&mut JoinHandle` is cancel-safe.
                    let marked = task.await;
                    let (held, _) = self.marking.take()?;
                    let id = held.entry.id;
                    match marked {
                        Ok(Ok(n)) => {
                            self.shared.acker.marked(id);
                            (held, n)
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%id, error = %e, "could not mark the attempt; it is not counted");
                            (held, 0)
                        }
                        Err(_) => (held, 0),
                    }
                }
                None => {
                    let held = match self.rx.recv().await? {
                        Ok(h) => h,
                        Err(e) => return Some(Err(e)),
                    };
                    if self.shared.in_flight.take_lost(&held.entry.id) {
                        continue;
                    }
                    if self.shared.options.ack_mode == AckMode::None || held.source == Source::New {
                        (held, 0)
                    } else {
                        // It came back: a run of it may have been cut off
                        // before. Mark this run before it starts, so that an
                        // entry which crashes its consumer every time is
                        // counted every time.
                        let (shared, id) = (self.shared.clone(), held.entry.id);
                        let task = tokio::spawn(async move { attempts::start(&shared, id).await });
                        self.marking = Some((held, task));
                        continue;
                    }
                }
            };
            let shared = &self.shared;
            let id = held.entry.id;
            let retried = crate::retry::retry_info(&held.entry).map_or(0, |(_, a)| a);
            if shared.options.ack_mode == AckMode::None {
                return Some(Ok(held.into_delivery(retried, shared.clone())));
            }
            let earlier = retried + cut_off;
            if let Some(reason) = shared.policy.before_run(&held.entry, earlier) {
                match crate::deadletter::dead_letter_fenced(
                    &shared.connector,
                    &shared.stream,
                    &shared.group,
                    id,
                    earlier,
                    &reason,
                    shared.options.fence.as_ref(),
                )
                .await
                {
                    Ok(Some(dead_id)) => {
                        shared.dead_before_run.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%id, %dead_id, %reason, "moved to the dead-letter stream");
                    }
                    Ok(None) => {}
                    // It stays pending and comes back after claim_after.
                    Err(e) => {
                        tracing::error!(%id, error = %e, "dead-lettering failed; the entry stays pending")
                    }
                }
                shared.acker.settled(id);
                continue;
            }
            if held.source == Source::New {
                shared.acker.started(id);
            }
            return Some(Ok(held.into_delivery(earlier, shared.clone())));
        }
    }

    /// The deliveries as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Delivery>> {
        futures::stream::unfold(self, |mut d| async move {
            let item = d.next().await?;
            Some((item, d))
        })
    }

    /// Entries the poison policy moved to the dead-letter queue before a
    /// handler saw them (out of attempts, or older than `max_age`).
    pub fn dead_lettered_before_run(&self) -> u64 {
        self.shared.dead_before_run.load(Ordering::Relaxed)
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &ConsumerName {
        &self.shared.consumer
    }

    /// Sends the queued acks now.
    pub async fn flush_acks(&self) -> Result<()> {
        self.acker.flush().await
    }

    /// Entries acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acker.acked()
    }

    /// Stops reading, then flushes queued acks.
    pub async fn close(mut self) -> Result<()> {
        self.stop().await
    }

    async fn stop(&mut self) -> Result<()> {
        self.cancel.cancel();
        // Read ahead and never handed out: given back to the group below.
        let mut unhandled = Vec::new();
        // An entry marked for a run that never started: take the mark back.
        if let Some((held, task)) = self.marking.take() {
            if let Ok(Ok(_)) = task.await {
                if let Err(e) = attempts::unmark(&self.shared, held.entry.id).await {
                    tracing::warn!(id = %held.entry.id, error = %e, "could not take back an attempt mark");
                }
            }
            unhandled.push(held.entry.id);
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(held) = item {
                unhandled.push(held.entry.id);
            }
        }
        if !unhandled.is_empty() && self.shared.options.ack_mode != AckMode::None {
            keepalive::hand_back(&self.shared, &unhandled).await;
        }
        let r = self.acker.close().await;
        if let Some(t) = self.ack_task.take() {
            let _ = t.await;
        }
        r
    }
}

impl std::fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliveries")
            .field("stream", &self.shared.stream)
            .field("group", &self.shared.group)
            .field("consumer", &self.shared.consumer)
            .finish()
    }
}

impl Drop for Deliveries {
    fn drop(&mut self) {
        // Without an async close the tasks are stopped; acks already queued
        // are still sent because the acker drains its channel on shutdown.
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Budget;

    /// Whether `spent()` resolves within a minute of (paused) test time.
    async fn spent_within_a_minute(budget: &Budget) -> bool {
        tokio::time::timeout(Duration::from_secs(60), budget.spent())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_every_reservation_is_granted_and_never_spent() {
        let budget = Budget::new(None);
        assert_eq!(budget.reserve(500), 500);
        budget.settle(500, 0);
        assert!(!budget.exhausted());
        assert!(!budget.is_shared());
        assert!(!spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_takes_at_most_what_is_left() {
        let budget = Budget::new(Some(5));
        assert_eq!(budget.reserve(3), 3);
        assert_eq!(budget.reserve(3), 2);
        assert_eq!(budget.reserve(3), 0, "nothing is left while both reads run");
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_read_did_not_get_is_given_back() {
        let budget = Budget::new(Some(5));
        assert_eq!(budget.reserve(5), 5);
        budget.settle(5, 2);
        assert!(!budget.exhausted());
        assert_eq!(budget.reserve(10), 3, "the 3 unread come back");
    }

    #[tokio::test(start_paused = true)]
    async fn spent_resolves_only_once_the_last_reservation_is_settled() {
        let budget = Budget::new(Some(2));
        assert_eq!(budget.reserve(2), 2);
        // Nothing left, but the read in progress may give some back.
        assert!(!budget.exhausted());
        assert!(!spent_within_a_minute(&budget).await);
        budget.settle(2, 2);
        assert!(budget.exhausted());
        assert!(spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_is_spent_from_the_start() {
        let budget = Budget::new(Some(0));
        assert_eq!(budget.reserve(1), 0);
        assert!(budget.exhausted());
        assert!(spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn sharers_each_take_an_even_share_of_what_is_left() {
        let budget = Budget::shared(Some(10), 3);
        assert!(budget.is_shared());
        // ceil(10 / 3) = 4, then ceil(6 / 3) = 2, then ceil(4 / 3) = 2.
        assert_eq!(budget.reserve(100), 4);
        assert_eq!(budget.reserve(100), 2);
        assert_eq!(budget.reserve(100), 2);
        let clone = budget.clone();
        assert_eq!(clone.reserve(100), 1, "clones draw from the same budget");
        assert_eq!(budget.reserve(100), 1);
        assert_eq!(budget.reserve(100), 0);
        for got in [4, 2, 2, 1, 1] {
            budget.settle(got, got);
        }
        assert!(clone.exhausted());
        assert!(spent_within_a_minute(&clone).await);
    }
}
