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
//! - [`MergedReader`] and [`MergedFollow`] read every shard as one stream
//!   in ID order (no group): `tail S`, `tail S --follow`, `dump S`.
//! - [`resize`] changes the shard count online: a new layout generation
//!   (shards `{S:i~g}`), the older generations' shards sealed at a cut;
//!   producers follow on the first refused append, consumers on their
//!   next layout check, ordered mode handing out a generation only once
//!   the group [`drained`] every shard of the older ones.
//!
//! | file | what |
//! |---|---|
//! | `route.rs` | `shard_for`: jump consistent hash of XXH3-64 |
//! | `layout.rs` | `ShardLayout`, `Generation`: create (atomic, refuses a plain stream), open, the live generations and their shard keys |
//! | `resize.rs` | `resize` (new generation, seal the older ones), `drained`, `sealed_at` |
//! | `dead_letters.rs` | `replay_dead_letter`: a sealed shard's dead letters go back by the current layout |
//! | `retire.rs` | `retire_drained`: the janitor's end of a resize (drained generations leave the layout, their keys deleted) |
//! | `groups.rs` | `create_on_every_key`, `destroy_on_every_key`: group commands on every shard |
//! | `producer.rs` | `ShardedProducer`: per-key routing, pipelined per shard |
//! | `consumer.rs` | `ShardedConsumer`: the one builder for plain, shared and ordered consuming |
//! | `member.rs` | `Member`: the group member the two modes' runners take |
//! | `shared.rs` | shared mode: `run_shared`, a consumer per shard run as one |
//! | `merged.rs` | `MergedReader` (a range, or the last N, merged in ID order) and `MergedFollow` (every shard followed at once): the merged view without a group |
//! | `ordered.rs` | ordered mode: one owner per shard (leases, fencing, rendezvous assignment, cooperative rebalance) |

mod consumer;
mod dead_letters;
pub mod groups;
mod layout;
mod member;
mod merged;
mod ordered;
mod producer;
mod resize;
mod retire;
mod route;
mod shared;

pub use consumer::ShardedConsumer;
pub use dead_letters::{replay_dead_letter, replay_target};
pub use layout::{Generation, ShardLayout, MAX_SHARDS};
pub use merged::{MergedFollow, MergedReader, ShardEntry};
pub use ordered::{owner_of, OrderedOptions, ORDERED_MAX_DELIVERIES};
pub use producer::ShardedProducer;
pub use resize::{drained, resize, sealed_at, Resized};
pub use retire::retire_drained;
pub use route::{jump_consistent_hash, key_hash, shard_for};
