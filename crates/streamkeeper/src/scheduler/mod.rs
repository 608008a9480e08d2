//! The distributed scheduler: interval and cron ticks appended to streams.
//!
//! Definitions live in `{N}:schedules` (hash name → JSON) and next due
//! times in `{N}:due` (zset name → ms); `{N}:state` remembers the last tick
//! of each schedule. Any number of instances run [`Scheduler::run`]: each
//! polls the due set and claims ticks through one Lua script that checks
//! the due time it saw, moves it forward and appends the ticks — so a tick
//! is emitted by exactly one instance, and an instance that dies before the
//! script leaves the tick to the others. No leader, no locks. Due times
//! live in Redis: a restart delays nothing, and edits take effect at the
//! next poll (≤ 100 ms).
//!
//! Two emit paths:
//! - **one script** (single server or Sentinel, or a target in the
//!   namespace's hash slot): claim and `XADD` happen together.
//! - **two-step** (Redis Cluster with a target in another slot, or forced
//!   with [`Scheduler::two_step`]): the claim script moves the due time and
//!   puts the tick in `{N}:outbox`; the instance then appends it with a
//!   dedupe key in the target's slot (`{T}:once:tick:<name>:<due>`, see
//!   [`crate::exactly_once::send_once`]) and clears the outbox entry. An
//!   instance that dies between the steps leaves the tick in the outbox,
//!   and any instance emits outbox ticks older than 2 s; the dedupe key
//!   keeps that exactly-once.

mod claim;
mod handle;
mod instance;
mod model;
mod outbox;
mod store;

pub use handle::Scheduler;
pub use instance::InstanceStats;
pub use model::{cron_next, Missed, Schedule, Spec, MAX_DUE_MS, MAX_NAME_BYTES, MIN_EVERY};
pub use store::ScheduleStatus;

/// The default namespace of scheduler keys.
pub const DEFAULT_NAMESPACE: &str = "streamkeeper";
