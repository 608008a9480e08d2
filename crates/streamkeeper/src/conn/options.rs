//! How a [`Connector`](super::Connector) behaves: timeouts, reconnecting,
//! the replica hold ([`ConnectorOptions`]), and the limits of the waits
//! around a failover.

use std::time::Duration;

/// The longest writes pause between a failover's start
/// (`+failover-state-send-slaveof-noone`) and the switch: a failover that
/// announces no new master by then was aborted, and writes go on.
pub const FAILOVER_PAUSE_MAX: Duration = Duration::from_secs(10);

/// Extra time a blocking read's connection waits beyond the `BLOCK` time
/// before it declares the server unresponsive.
pub const BLOCK_MARGIN: Duration = Duration::from_secs(3);

/// Timeouts and retry settings of a [`Connector`](super::Connector).
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The deadline of every normal (non-blocking) command: a frozen
    /// server fails it (retryably) instead of hanging the caller.
    pub io_timeout: Duration,
    /// How long an operation keeps reconnecting and retrying through a
    /// failover or outage before it gives up with the cause (`None`: never).
    pub reconnect_timeout: Option<Duration>,
    /// Opt-in (`None` by default; the CLI's `produce --hold-writes`):
    /// after following a Sentinel failover, how long writers
    /// ([`Connector::writable`](super::Connector::writable)) may wait for the new master to have a
    /// replica in sync before they write anyway. Off, writes resume as soon
    /// as the switch is followed (availability first, docs/design.md §6); on,
    /// a second failover before a replica synced cannot erase them, at the
    /// price of seconds without writes (with one replica, until Sentinel
    /// has turned the old master into one: ~15 s). Writes pause from a
    /// failover's start to the switch either way.
    /// See [`writable`](super::Connector::writable).
    pub replica_hold: Option<Duration>,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        ConnectorOptions {
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(5),
            reconnect_timeout: Some(Duration::from_secs(60)),
            replica_hold: None,
        }
    }
}
