//! The group consumer: read, hand out, acknowledge, reclaim.
//!
//! [`GroupConsumer::start`] spawns three tasks it owns: the read loop (on a
//! dedicated blocking connection), the reclaimer (`XAUTOCLAIM`) and the
//! acker (batched `XACK`). Deliveries come out of a [`Deliveries`] stream,
//! or are fed to a handler by [`GroupConsumer::run`].
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
//!         println!("{} delivered {} time(s)", d.id(), d.delivery_count());
//!         Ok::<_, std::convert::Infallible>(Outcome::Ack)
//!     }, 8, shutdown)
//!     .await?;
//! # Ok(()) }
//! ```

mod acker;
mod delivery;
mod read_loop;
mod reclaim;
mod run;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use redis::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use delivery::{AckMode, Delivery, Outcome, Source};
pub use run::RunStats;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::group;
use crate::reply;
use crate::types::{ConsumerName, Entry, GroupName, StartFrom, StreamId, StreamKey};
use acker::Acker;
use delivery::InFlight;

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
    /// Reclaim entries of any consumer idle longer than this (`None`: never).
    pub claim_after: Option<Duration>,
    /// Create the group from here if it does not exist.
    pub create: Option<StartFrom>,
    /// Read at most this many entries in all, then end the stream. Reads
    /// ask only for what is left, so no entry is taken (and left pending)
    /// beyond the limit.
    pub limit: Option<u64>,
    /// In [`GroupConsumer::run`], an entry delivered more often than this
    /// goes to the dead-letter stream instead of the handler.
    pub max_deliveries: Option<u64>,
    /// In [`GroupConsumer::run`], an entry older than this (by the time in
    /// its first ID) goes to the dead-letter stream instead of the handler.
    pub max_age: Option<Duration>,
    /// Backoff of the first retry after a handler error or panic; it
    /// doubles with every delivery…
    pub retry_backoff: Duration,
    /// …up to this.
    pub retry_backoff_max: Duration,
    /// How often the retry mover looks for due retries.
    pub retry_poll: Duration,
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

/// A member of a consumer group on one stream.
#[derive(Debug, Clone)]
pub struct GroupConsumer {
    connector: Connector,
    stream: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
    options: ConsumerOptions,
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
}

/// What is left of [`ConsumerOptions::limit`], shared by the read loop and
/// the reclaimer: each reserves before it reads and settles afterwards,
/// giving back what it did not get.
pub(crate) struct Budget(Option<BudgetInner>);

struct BudgetInner {
    left: std::sync::atomic::AtomicU64,
    /// Reserved by reads still in progress.
    reserved: std::sync::atomic::AtomicU64,
}

impl Budget {
    fn new(limit: Option<u64>) -> Self {
        Budget(limit.map(|l| BudgetInner {
            left: std::sync::atomic::AtomicU64::new(l),
            reserved: std::sync::atomic::AtomicU64::new(0),
        }))
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
                got = l.min(want);
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
    pub(crate) fn delivery(
        self: &Arc<Self>,
        entry: Entry,
        count: u64,
        source: Source,
        in_flight: &Arc<InFlight>,
    ) -> Delivery {
        let earlier = crate::retry::retry_info(&entry).map_or(0, |(_, attempt)| attempt);
        Delivery::new(
            entry,
            count + earlier,
            source,
            self.clone(),
            in_flight.clone(),
        )
    }

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

/// Delivery counts of `entries` from `XPENDING` (one round trip).
pub(crate) async fn pending_counts(
    shared: &Shared,
    entries: &[Entry],
) -> Result<HashMap<StreamId, u64>> {
    let (Some(first), Some(last)) = (
        entries.iter().map(|e| e.id).min(),
        entries.iter().map(|e| e.id).max(),
    ) else {
        return Ok(HashMap::new());
    };
    let mut conn = shared.connector.shared();
    let v: Value = redis::cmd("XPENDING")
        .arg(&shared.stream)
        .arg(&shared.group)
        .arg(first)
        .arg(last)
        .arg(entries.len())
        .arg(&shared.consumer)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("XPENDING {}", shared.stream), e))?;
    Ok(reply::pending_reply(v)?
        .into_iter()
        .map(|p| (p.id, p.deliveries))
        .collect())
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
        }
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

    /// Reclaim entries idle longer than `d`.
    pub fn claim_after(mut self, d: Duration) -> Self {
        self.options.claim_after = Some(d);
        self
    }

    /// Dead-letter entries delivered more than `n` times (see
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

    /// Backoff after a handler error: `base`, doubling per delivery, at most `max`.
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
    pub async fn start(self) -> Result<Deliveries> {
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
        let conn = self.connector.dedicated(self.options.block).await?;
        let (acker, ack_task) = Acker::spawn(
            self.connector.clone(),
            self.stream.clone(),
            self.group.clone(),
            self.options.ack_batch,
            self.options.ack_interval,
        );
        let limit = self.options.limit;
        let shared = Arc::new(Shared {
            connector: self.connector,
            stream: self.stream,
            group: self.group,
            consumer: self.consumer,
            options: self.options,
            acker: acker.clone(),
            budget: Budget::new(limit),
        });
        let capacity = (shared.options.batch * shared.options.prefetch.max(1)).max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        let in_flight = Arc::new(InFlight::default());
        let reader = tokio::spawn(read_loop::read_loop(
            shared.clone(),
            conn,
            tx.clone(),
            in_flight.clone(),
            cancel.clone(),
        ));
        let reclaimer = tokio::spawn(reclaim::reclaim_loop(
            shared.clone(),
            tx,
            in_flight,
            cancel.clone(),
        ));
        let mover = tokio::spawn(crate::retry::mover_loop(
            shared.connector.clone(),
            shared.stream.clone(),
            shared.options.retry_poll,
            cancel.clone(),
        ));
        Ok(Deliveries {
            rx,
            cancel,
            tasks: vec![reader, reclaimer, mover],
            ack_task: Some(ack_task),
            acker,
            shared,
        })
    }
}

/// The stream of deliveries of a started consumer.
///
/// It ends after an error that retrying cannot fix (the error is its last
/// item). [`close`](Self::close) stops reading and flushes queued acks;
/// entries read but not yet handed out stay pending for this consumer and
/// are re-read on its next start (or reclaimed by others).
pub struct Deliveries {
    rx: mpsc::Receiver<Result<Delivery>>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    ack_task: Option<JoinHandle<()>>,
    acker: Acker,
    shared: Arc<Shared>,
}

impl Deliveries {
    /// The next delivery; `None` after close or a fatal error.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await
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
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.rx.close();
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

impl futures::Stream for Deliveries {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
