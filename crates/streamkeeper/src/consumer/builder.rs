//! [`GroupConsumer`] (the builder and `start`, which spawns the tasks a
//! consumer owns) and [`Deliveries`] (what a started consumer hands out).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::acker::Acker;
use super::attempts;
use super::budget::Budget;
use super::delivery::{Delivery, Held};
use super::in_flight::InFlight;
use super::keepalive;
use super::options::{ConsumerOptions, MIN_CLAIM_AFTER};
use super::outcome::{AckMode, Source};
use super::policy::Policy;
use super::read_loop;
use super::reclaim;
use super::shared::Shared;
use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::group;
use crate::metrics::ConsumerMetrics;
use crate::types::{ConsumerName, GroupName, StartFrom, StreamKey};

/// A member of a consumer group on one stream.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    pub(super) connector: Connector,
    pub(super) stream: StreamKey,
    pub(super) group: GroupName,
    pub(super) consumer: ConsumerName,
    pub(super) options: ConsumerOptions,
    /// Set by [`crate::shard::run_shared`] so that `options.limit` counts
    /// across the shards; otherwise made from `options.limit` at start.
    pub(super) budget: Option<Budget>,
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
        if self.consumer == crate::meta::RETRY_CONSUMER {
            return Err(Error::InvalidInput(format!(
                "the consumer name {} is reserved: it holds every group's parked retries; pick another",
                crate::meta::RETRY_CONSUMER
            )));
        }
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
        let metrics = ConsumerMetrics::new(self.stream.as_str(), self.group.as_str());
        let shared = Arc::new(Shared {
            metrics,
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
            unsent: std::sync::Mutex::new(Vec::new()),
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
                tx.clone(),
                in_flight.clone(),
                cancel.clone(),
            )));
            tasks.push(tokio::spawn(reclaim::retry_loop(
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
    pub(super) cancel: CancellationToken,
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
            if let Some(reason) =
                shared
                    .policy
                    .before_run_after(&held.entry, earlier, held.last_error.as_deref())
            {
                let dead = crate::deadletter::DeadLetterMove {
                    stream: &shared.stream,
                    group: &shared.group,
                    id,
                    attempts: earlier,
                    reason: &reason,
                    fence: shared.options.fence.as_ref(),
                };
                match dead.invoke(&shared.connector).await {
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

    /// The consumer's labelled series (for `run`).
    pub(super) fn metrics(&self) -> &ConsumerMetrics {
        &self.shared.metrics
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
        // Taken by a task that stopped before handing them on.
        if let Ok(mut unsent) = self.shared.unsent.lock() {
            unhandled.append(&mut unsent);
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
