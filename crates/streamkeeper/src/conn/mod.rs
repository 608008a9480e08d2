//! The [`Connector`]: parses a connection URL and hands out connections.
//!
//! Normal commands share one auto-reconnecting multiplexed connection whose
//! every command has a deadline (`io_timeout`). Blocking reads
//! (`XREAD`/`XREADGROUP … BLOCK`) each get a *dedicated* connection whose
//! deadline is the block time plus a margin: redis-rs's default 500 ms
//! response timeout would otherwise cut every blocking read short, and a
//! blocking read on the shared connection would stall every other command
//! queued behind it.
//!
//! Sentinel: re-resolving the master only after an error is not enough —
//! a deposed master keeps accepting writes until Sentinel reconfigures it,
//! and the resync then erases them. So the connector subscribes to
//! `+switch-master` on the sentinels and moves to the new master as soon as
//! it is announced; every dedicated connection follows, because its owner
//! watches [`Connector::switches`]. It also checks `ROLE` on every
//! (re)connect and re-resolves on I/O errors, `READONLY`, `UNBLOCKED` and
//! `LOADING`.
//!
//! | file | what |
//! |---|---|
//! | `url.rs` | `Topology`, `parse_topology`: what a URL points at |
//! | `options.rs` | `ConnectorOptions`, `FAILOVER_PAUSE_MAX`, `BLOCK_MARGIN` |
//! | `shared.rs` | `SharedConn`: one server or a cluster, `WAIT` on the key's node |
//! | `connector.rs` | `Connector`: connecting, handing out connections, `recover`, `retrying` |
//! | `sentinel.rs` | resolving and following a Sentinel-managed master |
//! | `backoff.rs` | `Backoff`: the one reconnect wait, topology-aware |

mod backoff;
mod connector;
mod options;
mod sentinel;
mod shared;
mod url;

pub use crate::redact::redact;
pub(crate) use backoff::Backoff;
pub use connector::Connector;
pub use options::{ConnectorOptions, BLOCK_MARGIN, FAILOVER_PAUSE_MAX};
pub use shared::SharedConn;
pub use url::{parse_topology, Topology};
