//! streamkeeper: reliable event streaming on Redis Streams.
//!
//! Producers that pipeline, group consumers that reclaim the work of
//! crashed peers and never stop silently, and plain readers — all on
//! entries kept exactly as Redis holds them, so any other client can read
//! and write the same streams.
//!
//! ```no_run
//! # async fn f() -> streamkeeper::Result<()> {
//! use streamkeeper::{fields, Connector, GroupConsumer, GroupName, Outcome, Producer, StartFrom, StreamKey};
//! let redis = Connector::connect("redis://127.0.0.1:6379").await?;
//! let orders = StreamKey::new("orders")?;
//! Producer::new(&redis, orders.clone()).send(&fields([("sku", "a-1")])).await?;
//! let mut deliveries = GroupConsumer::new(&redis, orders, GroupName::new("billing")?)
//!     .create_group(StartFrom::Beginning)
//!     .start()
//!     .await?;
//! if let Some(d) = deliveries.next().await {
//!     let d = d?;
//!     println!("{:?}", d.entry().get_str("sku"));
//!     d.ack();
//! }
//! deliveries.close().await?; // flushes the ack
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | [`types`] | `StreamKey`, `GroupName`, `ConsumerName`, `StreamId`, `StartFrom`, `Entry` |
//! | [`error`] | the one `Error` enum and `is_retryable()` |
//! | [`conn`] | `Connector`: URL parsing, `SharedConn` (one server or a cluster), dedicated blocking connections, Sentinel switch following |
//! | `redact` | masking every secret a URL carries (`conn::redact`) before it is shown |
//! | `replica_hold` | pausing writes across a Sentinel failover until the switch (opt-in: until the new master has a replica in sync) |
//! | [`cluster`] | Redis Cluster: the cluster client, `CLUSTER NODES` (`ClusterNode`), the primary of a slot, per-node commands |
//! | [`producer`] | `Producer` (the one append path: chunks in one step, caps, WAIT on the slot's node, failover resends) and `BatchedProducer` |
//! | [`consumer`] | `GroupConsumer`: read loop, prefetch, batched acks, reclaim, `run()` |
//! | [`reader`] | `Reader`: plain XREAD paging and follow (crate-private: several streams of one server in one XREAD); `last_entries`, `range` |
//! | [`group`] | consumer group admin: create, destroy, list |
//! | [`deadletter`] | the dead-letter queue `{S}:dlq`: move (atomic with the ack), list, replay, purge |
//! | [`inspect`] | lag and health: pending, undelivered, time lag, memory, dead consumers |
//! | [`janitor`] | ack-aware trimming (one script), caps with archive, the per-stream lease |
//! | [`lease`] | the one `Lease` (plain, or fenced with an epoch token) and its `Fence`: janitor, retry mover, ordered owners, dashboard history writer |
//! | [`pending`] | read-only views for dashboards: pending owners, pages newest first, trim-point holders |
//! | [`retry`] | delayed retries: parked in the group (`{S}:retry:<group>`), taken when due, backoff |
//! | [`scheduler`] | distributed interval/cron scheduler: `model` (ticks), `store` (definitions), `instance` (polling), `claim` (typed script arguments), `outbox` (two-step emit) |
//! | [`shard`] | sharded logical streams `{S:0}`…`{S:N-1}`: layout, `shard_for` routing, `ShardedProducer`, `ShardedConsumer` (plain, shared or ordered consuming of any stream), ordered mode (leases, fencing, rebalance), `MergedReader`/`MergedFollow` (every shard read as one stream in ID order: `tail`, `dump`) |
//! | [`exactly_once`] | `ack_and_produce` and `send_once` scripts |
//! | `scripts` | the Lua scripts of `src/lua/`, loaded with `include_str!`; each is called through a typed struct next to the module that uses it (KEYS/ARGV written, reply parsed, refusals as `Error` variants) |
//! | [`trace`] | W3C `traceparent` in entries: the producer writes it, each handler run continues it |
//! | `otel` | (feature `otel`) a `process` span per handler run and a `send` span for appends, through the OpenTelemetry API |
//! | [`wire`] | the JSON-lines format of entries (docs/design.md §5) |
//! | `reply` | parsing raw stream replies, keeping field order and bytes |
//! | [`metrics`] | every metric name with its help text (`describe`), label values (`label`), and the recording helpers; the consumer's labelled series are registered once per run |
//! | [`meta`] | the `sk-…` field names streamkeeper writes into entries |
//! | [`keys`] | the key scheme (docs/design.md §4): `StreamKeys`, `SchedulerKeys`, `key_slot` |
//! | `explain` | turning `WRONGTYPE`/`NOGROUP` into errors that say what to do |

pub mod cluster;
pub mod conn;
pub mod consumer;
pub mod deadletter;
pub mod error;
pub mod exactly_once;
mod explain;
pub mod group;
pub mod inspect;
pub mod janitor;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
pub mod pending;
pub mod producer;
pub mod reader;
mod redact;
mod replica_hold;
mod reply;
pub mod retry;
pub mod scheduler;
mod scripts;
pub mod shard;
pub mod trace;
pub mod types;
pub mod wire;

pub use conn::{Connector, ConnectorOptions, SharedConn, Topology};
pub use consumer::{
    AckMode, ConsumerOptions, Deliveries, Delivery, Fence, GroupConsumer, Outcome, RunStats,
    Settled, Source,
};
pub use error::{Error, Result};
pub use producer::{BatchOptions, BatchedProducer, Cap, Producer, Wait};
pub use reader::Reader;
pub use reply::PendingEntry;
pub use scheduler::{Schedule, Scheduler, Spec};
pub use shard::{OrderedOptions, ShardLayout, ShardedConsumer, ShardedProducer};
pub use types::{fields, ConsumerName, Entry, GroupName, StartFrom, StreamId, StreamKey};
