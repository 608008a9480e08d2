//! The [`Scheduler`] handle: the namespace's keys and how ticks are
//! emitted. Its operations live by subject: `store.rs` (definitions),
//! `instance.rs` (polling and claiming), `outbox.rs` (the two-step emit).

use crate::conn::Connector;
use crate::types::StreamKey;

/// Names with their due times (`ZRANGE … WITHSCORES`).
pub(super) type DueTimes = Vec<(String, f64)>;

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
    pub(super) connector: Connector,
    pub(super) schedules: String,
    pub(super) due: String,
    pub(super) state: String,
    pub(super) outbox: String,
    pub(super) two_step: bool,
    pub(super) last_recovery: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
    pub(super) fn uses_two_step(&self, target: &StreamKey) -> bool {
        let cluster = matches!(
            self.connector.topology(),
            crate::conn::Topology::Cluster { .. }
        );
        (self.two_step || cluster)
            && crate::types::key_slot(target.as_str()) != crate::types::key_slot(&self.due)
    }
}
