//! Sharded logical streams: one stream `S` spread over N stream keys
//! `{S:0}` … `{S:N-1}`, each in a hash slot of its own, so that on Redis
//! Cluster the shards land on different primaries (docs/design.md §6
//! "Sharding").
//!
//! - The layout (N and a version) lives in `{S}:shards` and is read from
//!   there, never found by SCAN ([`ShardLayout::open`]).
//! - Producers route by partition key with [`shard_for`] (stable,
//!   documented, the same in any language); entries without a key go
//!   round-robin. Same key → same shard → send order kept
//!   ([`ShardedProducer`]).
//! - [`ShardedConsumer`] consumes any stream, plain or sharded, in either
//!   mode below; the CLI's `consume` goes through it.
//! - Consumers of a group read every shard (shared mode, `shared.rs`):
//!   one [`GroupConsumer`](crate::GroupConsumer) per shard, each with its
//!   own blocking connection to its shard's primary, run as one. Each shard is an ordinary
//!   stream, so reclaim, retries, the DLQ (`{S:i}:dlq`), the janitor and
//!   exactly-once work per shard unchanged.
//! - Ordered mode (`ordered.rs`): one owner per shard per group at a
//!   time, fenced, so per-key order holds end to end.
//!
//! | file | what |
//! |---|---|
//! | `route.rs` | `shard_for`: jump consistent hash of XXH3-64 |
//! | `layout.rs` | `ShardLayout`: create (atomic, refuses a plain stream), open, shard keys |
//! | `groups.rs` | `create_on_every_key`, `destroy_on_every_key`: group commands on every shard |
//! | `producer.rs` | `ShardedProducer`: per-key routing, pipelined per shard |
//! | `consumer.rs` | `ShardedConsumer`: the one builder for plain, shared and ordered consuming |
//! | `member.rs` | `Member`: the group member the two modes' runners take |
//! | `shared.rs` | shared mode: `run_shared`, a consumer per shard run as one |
//! | `ordered.rs` | ordered mode: one owner per shard (leases, fencing, rendezvous assignment, cooperative rebalance) |

mod consumer;
pub mod groups;
mod layout;
mod member;
mod ordered;
mod producer;
mod route;
mod shared;

pub use consumer::ShardedConsumer;
pub use layout::{ShardLayout, MAX_SHARDS};
pub use ordered::{owner_of, OrderedOptions, ORDERED_MAX_DELIVERIES};
pub use producer::ShardedProducer;
pub use route::{jump_consistent_hash, key_hash, shard_for};
