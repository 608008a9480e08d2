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
//! | `options.rs` | `ConsumerOptions` |
//! | `builder.rs` | `GroupConsumer` (builder, `start`) and `Deliveries` |
//! | `shared.rs` | what a started consumer's tasks share |
//! | `budget.rs` | what is left of `limit`, shared by the tasks (and shards) |
//! | `in_flight.rs` | entries held or being acked: never handed out twice |
//! | `delivery.rs` | `Delivery` |
//! | `outcome.rs` | `Outcome`, `Settled`, `AckMode`, `Source` |
//! | `run.rs` | `run(handler, concurrency)` |
//! | `span.rs` | the span of one handler run (a `process` span with the `otel` feature) |
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
mod budget;
mod builder;
mod delivery;
mod in_flight;
mod keepalive;
mod options;
mod outcome;
mod policy;
mod read_loop;
mod reclaim;
mod run;
mod shared;
mod span;

pub use crate::lease::Fence;
pub(crate) use budget::Budget;
pub use builder::{Deliveries, GroupConsumer};
pub use delivery::Delivery;
pub use options::{ConsumerOptions, DEFAULT_MAX_DELIVERIES, MIN_CLAIM_AFTER};
pub use outcome::{AckMode, Outcome, Settled, Source};
pub(crate) use policy::{AfterFailure, Policy};
pub use run::RunStats;
