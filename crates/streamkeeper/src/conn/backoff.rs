//! [`Backoff`]: the one wait between reconnect attempts, jittered and
//! exponential, shorter on a cluster (a replica takes over within the node
//! timeout) and shortest while a slot is in motion.

use std::time::Duration;

use super::url::Topology;
use crate::error::Error;

/// The longest wait on a cluster: a replica takes over within the node
/// timeout (seconds), so the slot's new primary is looked for at least
/// this often.
const CLUSTER_MAX: Duration = Duration::from_secs(1);

/// The longest wait while a slot is in motion
/// ([`crate::error::slot_in_motion`]): asking again is cheap and finds the
/// new owner soon.
const SLOT_IN_MOTION_MAX: Duration = Duration::from_millis(250);

/// Jittered exponential backoff between reconnect attempts (100 ms → 5 s).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let base = 100u64.saturating_mul(1 << self.attempt.min(6)).min(5_000);
        self.attempt += 1;
        let jitter = rand::random::<u64>() % (base / 2 + 1);
        Duration::from_millis(base / 2 + jitter)
    }

    /// The wait after `error` on a deployment of `topology`: [`next`]
    /// (Self::next), capped at 1 s on a cluster and at 250 ms while the
    /// error says a slot is in motion.
    pub(crate) fn after(&mut self, topology: &Topology, error: &Error) -> Duration {
        let delay = self.next();
        if error.slot_in_motion() {
            return delay.min(SLOT_IN_MOTION_MAX);
        }
        match topology {
            Topology::Cluster { .. } => delay.min(CLUSTER_MAX),
            _ => delay,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Topology {
        Topology::Cluster {
            nodes: vec!["127.0.0.1:7000".into()],
            tls: false,
        }
    }

    /// A server's error reply, parsed the way redis-rs parses one.
    fn server_error(text: &str) -> Error {
        let line = format!("-{text}\r\n");
        match redis::parse_redis_value(line.as_bytes()) {
            Ok(redis::Value::ServerError(e)) => Error::redis("XADD", e.into()),
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[test]
    fn waits_grow_to_five_seconds_on_one_server_and_stay_short_on_a_cluster() {
        let io = Error::Shutdown("test");
        let mut single = Backoff::default();
        let waits: Vec<Duration> = (0..10)
            .map(|_| single.after(&Topology::Standalone, &io))
            .collect();
        assert!(waits[0] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[9] >= Duration::from_millis(2_500), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(5)));
        let mut on_cluster = Backoff::default();
        for _ in 0..10 {
            assert!(on_cluster.after(&cluster(), &io) <= CLUSTER_MAX);
        }
        single.reset();
        assert!(single.next() <= Duration::from_millis(100));
    }

    #[test]
    fn a_slot_in_motion_is_asked_about_again_soon() {
        let mut b = Backoff::default();
        for _ in 0..10 {
            let moved = server_error("MOVED 3999 127.0.0.1:7001");
            assert_eq!(moved.server_code().as_deref(), Some("MOVED"));
            assert!(b.after(&Topology::Standalone, &moved) <= SLOT_IN_MOTION_MAX);
        }
    }
}
