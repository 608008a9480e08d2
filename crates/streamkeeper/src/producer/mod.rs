//! Appending entries: [`Producer`] (single sends and batches, in chunks
//! written in one step, optionally confirmed by `WAIT`) and
//! [`BatchedProducer`] (coalesces concurrent sends into chunks). The one
//! append path: the CLI's `produce` and `restore` and
//! [`ShardedProducer`](crate::shard::ShardedProducer) write through it.
//!
//! | file | what |
//! |---|---|
//! | `chunk.rs` | `AppendChunk` (one pipeline of XADDs), `Cap`, `Wait`, sending a chunk and its `WAIT` on one node, reading its per-entry replies |
//! | `single.rs` | `Producer`: chunking, retrying through failovers, pinning the slot's primary on a cluster |
//! | `batched.rs` | `BatchedProducer` and `BatchOptions` |

mod batched;
mod chunk;
mod single;

pub use batched::{BatchOptions, BatchedProducer};
pub use chunk::{AppendChunk, Cap, EntryRef, NewEntry, Wait, PIPELINE_CHUNK};
pub use single::Producer;
