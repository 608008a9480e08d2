//! [`ConsumerOptions`]: the settings of a group consumer, which the
//! builder methods of [`GroupConsumer`](super::GroupConsumer) set.

use std::time::Duration;

use super::outcome::AckMode;
use crate::lease::Fence;
use crate::types::StartFrom;

/// Attempts per entry before it is dead-lettered, unless told otherwise
/// (the library, `consume` and `consume --ordered` alike).
pub const DEFAULT_MAX_DELIVERIES: u64 = 5;

/// The smallest `claim_after`: a live consumer refreshes what it holds
/// every third of it, and below this, ordinary scheduling and network
/// delays would make live consumers look crashed (their entries taken and
/// handled twice). Smaller values are raised to it.
pub const MIN_CLAIM_AFTER: Duration = Duration::from_millis(250);

/// Settings of a [`GroupConsumer`](super::GroupConsumer); the builder methods set them.
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
    /// [`Deliveries::next`](super::Deliveries::next) and [`GroupConsumer::run`](super::GroupConsumer::run) alike.
    /// Default [`DEFAULT_MAX_DELIVERIES`]; `None` retries for ever.
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
    /// Acks, retries and dead letters are refused ([`Error::Fenced`](crate::Error::Fenced)) once
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
            max_deliveries: Some(DEFAULT_MAX_DELIVERIES),
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
