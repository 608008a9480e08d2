//! Holding writes across a Sentinel failover: from its start until the
//! switch, and (opt-in) until the new master has a replica in sync.
//!
//! From the moment the leading sentinel promotes a replica
//! (`+failover-state-send-slaveof-noone`) until the switch is followed,
//! whatever the old master acknowledges is erased by the resync: writes
//! are held from that event on.
//!
//! Right after a failover the promoted master usually has no replica:
//! Sentinel turns the old master into one only seconds later (its
//! reconfiguration period). A write acknowledged in that time exists on
//! one server only, and a second failover then promotes a server that
//! never saw it — the resync erases every such write (measured: 1,020 of
//! 5,020 writes at 200/s with failovers 4 s apart). So with the opt-in
//! `ConnectorOptions::replica_hold` (`produce --hold-writes`; off by
//! default: availability first), after the
//! [`Connector`](crate::Connector) follows a switch, writers
//! ([`Producer`](crate::Producer), the CLI's `produce`/`restore`) wait in
//! [`Connector::writable`](crate::Connector::writable) until
//! `INFO replication` on the new master shows a replica `online` and
//! caught up, or `ConnectorOptions::replica_hold` passed (then they go
//! on, with a warning: only `WAIT` can protect those writes).

use std::time::Duration;

use tokio::sync::watch;

/// Open (writes flow) or held (after a switch, until a replica syncs).
#[derive(Debug)]
pub(crate) struct ReplicaHold {
    open: watch::Sender<bool>,
}

impl ReplicaHold {
    pub(crate) fn new() -> Self {
        ReplicaHold {
            open: watch::channel(true).0,
        }
    }

    pub(crate) fn hold(&self) {
        self.open.send_replace(false);
    }

    pub(crate) fn release(&self) {
        self.open.send_replace(true);
    }

    pub(crate) fn is_held(&self) -> bool {
        !*self.open.borrow()
    }

    /// Waits until released, at most `max`.
    pub(crate) async fn wait(&self, max: Duration) {
        let mut open = self.open.subscribe();
        let _ = tokio::time::timeout(max, open.wait_for(|o| *o)).await;
    }
}

/// Whether `INFO replication` shows a replica `online` whose offset has
/// reached the master's.
pub(crate) fn replica_in_sync(info: &str) -> bool {
    let master_offset = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
        .and_then(|v| v.parse::<u64>().ok());
    let Some(master_offset) = master_offset else {
        return false;
    };
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(':'))
        .any(|l| {
            let fields = l.split_once(':').map_or("", |(_, f)| f.trim());
            let field = |name: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            field("state") == Some("online")
                && field("offset")
                    .and_then(|o| o.parse::<u64>().ok())
                    .is_some_and(|o| o >= master_offset)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_online_and_caught_up_is_in_sync() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=1200,lag=0\r\n\
            master_repl_offset:1200\r\n";
        assert!(replica_in_sync(info));
    }

    #[test]
    fn no_replica_a_syncing_one_or_one_behind_is_not() {
        let none = "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:1200\r\n";
        let syncing = "connected_slaves:1\r\n\
            slave0:ip=127.0.0.1,port=7001,state=wait_bgsave,offset=0,lag=0\r\n\
            master_repl_offset:1200\r\n";
        let behind = "connected_slaves:1\r\n\
            slave0:ip=127.0.0.1,port=7001,state=online,offset=900,lag=1\r\n\
            master_repl_offset:1200\r\n";
        assert!(!replica_in_sync(none));
        assert!(!replica_in_sync(syncing));
        assert!(!replica_in_sync(behind));
    }

    #[tokio::test]
    async fn a_held_gate_opens_on_release_or_after_the_limit() {
        let hold = ReplicaHold::new();
        hold.hold();
        assert!(hold.is_held());
        let t = std::time::Instant::now();
        hold.wait(Duration::from_millis(50)).await;
        assert!(t.elapsed() >= Duration::from_millis(50));
        hold.release();
        hold.wait(Duration::from_secs(60)).await;
        assert!(!hold.is_held());
    }
}
