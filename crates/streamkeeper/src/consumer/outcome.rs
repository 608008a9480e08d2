//! The words of a handler's work: when entries are acked ([`AckMode`]),
//! what the handler decided ([`Outcome`]), where a delivery came from
//! ([`Source`]) and what became of it ([`Settled`]).

use std::time::Duration;

use crate::types::StreamId;

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
    /// The handler calls [`Delivery::ack`](super::Delivery::ack) itself.
    Manual,
}

/// What a handler decided about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done: acknowledge it.
    Ack,
    /// This attempt failed; try again later. The entry stays pending in
    /// its group, parked (`{S}:retry:<group>`, one script), and is handed
    /// out again under the same ID when `after` has passed — or, once
    /// `max_deliveries` attempts have
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
    /// A delayed retry that fell due: the same entry, same ID, after a
    /// failed attempt (see [`Delivery::retry`](crate::Delivery::retry)).
    Retry,
}

/// What became of a delivery that was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Acknowledgement queued (sent with the next batch).
    Acked,
    /// Parked in its group (`{S}:retry:<group>`) for another attempt later.
    RetryScheduled,
    /// Moved to the dead-letter stream; the dead letter's ID.
    DeadLettered(StreamId),
    /// It was no longer pending (a peer settled or took it meanwhile):
    /// nothing was written.
    NotPending,
}
