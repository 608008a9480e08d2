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
mod instance;
mod model;
mod outbox;
mod store;

pub use instance::InstanceStats;
pub use model::{cron_next, Missed, Schedule, Spec, MAX_DUE_MS, MAX_NAME_BYTES, MIN_EVERY};
pub use store::ScheduleStatus;

use crate::conn::Connector;
use crate::types::StreamKey;

/// The default namespace of scheduler keys.
pub const DEFAULT_NAMESPACE: &str = "streamkeeper";

/// Names with their due times (`ZRANGE … WITHSCORES`).
type DueTimes = Vec<(String, f64)>;

/// Manages schedules and runs instances in one namespace.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use std::time::Duration;
/// use streamkeeper::scheduler::{Schedule, Scheduler};
/// let scheduler = Scheduler::new(&redis, "streamkeeper");
/// scheduler.add(&Schedule::every("health", Duration::from_secs(30), "checks")?).await?;
/// scheduler.run("instance-1", tokio_util::sync::CancellationToken::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Scheduler {
    connector: Connector,
    schedules: String,
    due: String,
    state: String,
    outbox: String,
    two_step: bool,
    last_recovery: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Scheduler {
    /// A scheduler over the keys of namespace `ns`.
    pub fn new(connector: &Connector, ns: &str) -> Self {
        let keys = crate::keys::SchedulerKeys::new(ns);
        Scheduler {
            connector: connector.clone(),
            schedules: keys.schedules,
            due: keys.due,
            state: keys.state,
            outbox: keys.outbox,
            two_step: false,
            last_recovery: Default::default(),
        }
    }

    /// Always use the two-step emit (see the module doc), as Redis Cluster
    /// needs when a target stream is in another hash slot than the
    /// namespace. On one server the one-script path is used unless this
    /// is set.
    pub fn two_step(mut self, on: bool) -> Self {
        self.two_step = on;
        self
    }

    /// Whether ticks of `target` go through the outbox.
    fn uses_two_step(&self, target: &StreamKey) -> bool {
        let cluster = matches!(
            self.connector.topology(),
            crate::conn::Topology::Cluster { .. }
        );
        (self.two_step || cluster)
            && crate::types::key_slot(target.as_str()) != crate::types::key_slot(&self.due)
    }
}
