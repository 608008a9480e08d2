//! The entries a consumer holds (read ahead or being handled) and those
//! whose ack is on its way: what must not be handed out twice and must be
//! kept fresh. Shared by the read loop, the reclaimer, the keepalive and
//! the acker.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::types::StreamId;

/// The entry IDs this consumer holds (read ahead or being handled), and
/// those whose ack is queued or in flight: until Redis confirmed the ack,
/// an entry is still pending, so it is kept fresh like a held one and
/// never handed out again (a re-read after a reconnect, or this
/// consumer's own reclaim while a migrating slot refuses the XACK, would
/// otherwise run it twice).
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    held: Mutex<HashSet<StreamId>>,
    acking: Mutex<HashSet<StreamId>>,
    /// Held entries a peer took over while this process was frozen: they
    /// are not handed out any more.
    lost: Mutex<HashSet<StreamId>>,
    /// Whether `lost` may be non-empty: spares the hot path its lock.
    any_lost: std::sync::atomic::AtomicBool,
    /// Held entries whose delivery is parking them as a retry right now:
    /// once parked, the holder lets go, and a due retry taken meanwhile
    /// waits for that instead of being skipped as held by a running
    /// delivery.
    parking: Mutex<HashSet<StreamId>>,
}

impl InFlight {
    /// Marks `id` as held; false if it already was, or its ack is on
    /// its way.
    pub(crate) fn insert(&self, id: StreamId) -> bool {
        if self.is_acking(&id) {
            return false;
        }
        self.held.lock().map(|mut s| s.insert(id)).unwrap_or(true)
    }

    /// Held, or its ack not confirmed yet.
    pub(crate) fn contains(&self, id: &StreamId) -> bool {
        self.is_held(id) || self.is_acking(id)
    }

    /// Held: read ahead or being handled.
    pub(crate) fn is_held(&self, id: &StreamId) -> bool {
        self.held.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    fn is_acking(&self, id: &StreamId) -> bool {
        self.acking.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    /// The ack of `id` is queued.
    pub(crate) fn ack_queued(&self, id: StreamId) {
        if let Ok(mut s) = self.acking.lock() {
            s.insert(id);
        }
    }

    /// The acks of `ids` are done with (confirmed, or given up: then the
    /// entries are pending again like any other).
    pub(crate) fn acks_done(&self, ids: &[StreamId]) {
        if let Ok(mut s) = self.acking.lock() {
            for id in ids {
                s.remove(id);
            }
        }
    }

    /// The IDs to keep fresh now: held ones and those being acked.
    pub(crate) fn snapshot(&self) -> Vec<StreamId> {
        let mut ids: Vec<StreamId> = self
            .held
            .lock()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        if let Ok(s) = self.acking.lock() {
            ids.extend(s.iter().copied());
        }
        ids
    }

    /// Records that a peer owns `id` now.
    pub(crate) fn mark_lost(&self, id: StreamId) {
        if let Ok(mut s) = self.lost.lock() {
            s.insert(id);
            self.any_lost
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// True (once) if a peer took `id` over.
    pub(crate) fn take_lost(&self, id: &StreamId) -> bool {
        if !self.any_lost.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        self.lost.lock().map(|mut s| s.remove(id)).unwrap_or(false)
    }

    /// Whether the holder of `id` is parking it as a retry.
    pub(crate) fn is_parking(&self, id: &StreamId) -> bool {
        self.parking.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    pub(crate) fn remove(&self, id: &StreamId) {
        if let Ok(mut s) = self.held.lock() {
            s.remove(id);
        }
        if self.any_lost.load(std::sync::atomic::Ordering::SeqCst) {
            if let Ok(mut s) = self.lost.lock() {
                s.remove(id);
                if s.is_empty() {
                    self.any_lost
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
}

/// Keeps an ID in the held set for as long as it lives, or until it is
/// let go of.
pub(crate) struct Guard {
    id: StreamId,
    in_flight: Arc<InFlight>,
    armed: std::sync::atomic::AtomicBool,
}

impl Guard {
    pub(crate) fn new(id: StreamId, in_flight: Arc<InFlight>) -> Self {
        Guard {
            id,
            in_flight,
            armed: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The entry is not this holder's any more (a parked retry): the ID
    /// leaves the held set now, so the same entry can be handed out again
    /// while this delivery still lives, and the later drop leaves the new
    /// holder's claim alone.
    pub(crate) fn let_go(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.in_flight.remove(&self.id);
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.let_go();
    }
}

/// Marks a held entry as being parked as a retry for as long as it lives
/// (see [`InFlight::is_parking`]).
pub(crate) struct Parking<'a> {
    id: StreamId,
    in_flight: &'a InFlight,
}

impl<'a> Parking<'a> {
    pub(crate) fn new(guard: &'a Guard) -> Self {
        if let Ok(mut s) = guard.in_flight.parking.lock() {
            s.insert(guard.id);
        }
        Parking {
            id: guard.id,
            in_flight: &guard.in_flight,
        }
    }
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.in_flight.parking.lock() {
            s.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InFlight;
    use crate::types::StreamId;

    const A: StreamId = StreamId::new(1, 0);
    const B: StreamId = StreamId::new(2, 0);

    #[test]
    fn an_id_is_held_once_until_removed() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        assert!(!in_flight.insert(A), "a held entry is not handed out twice");
        assert!(in_flight.is_held(&A) && in_flight.contains(&A));
        in_flight.remove(&A);
        assert!(!in_flight.contains(&A));
        assert!(in_flight.insert(A));
    }

    #[test]
    fn an_entry_whose_ack_is_on_its_way_is_not_handed_out_again() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        in_flight.ack_queued(A);
        in_flight.remove(&A);
        assert!(!in_flight.is_held(&A));
        assert!(in_flight.contains(&A), "still pending until Redis confirms");
        assert!(!in_flight.insert(A), "a re-read must not run it twice");
        in_flight.acks_done(&[A]);
        assert!(!in_flight.contains(&A));
        assert!(in_flight.insert(A), "a given-up ack makes it pending again");
    }

    #[test]
    fn snapshot_keeps_held_and_acking_entries_fresh() {
        let in_flight = InFlight::default();
        assert!(in_flight.insert(A));
        in_flight.ack_queued(B);
        let mut ids = in_flight.snapshot();
        ids.sort();
        assert_eq!(ids, vec![A, B]);
        in_flight.remove(&A);
        in_flight.acks_done(&[B]);
        assert!(in_flight.snapshot().is_empty());
    }

    #[test]
    fn a_guard_let_go_of_leaves_the_next_holder_alone() {
        let in_flight = std::sync::Arc::new(InFlight::default());
        assert!(in_flight.insert(A));
        let old = super::Guard::new(A, in_flight.clone());
        old.let_go();
        assert!(
            in_flight.insert(A),
            "handed out again while the old guard lives"
        );
        drop(old);
        assert!(
            in_flight.is_held(&A),
            "the old guard's drop took the new claim"
        );
    }

    #[test]
    fn a_lost_entry_is_reported_once_and_forgotten_on_remove() {
        let in_flight = InFlight::default();
        assert!(!in_flight.take_lost(&A), "nothing lost yet");
        in_flight.mark_lost(A);
        in_flight.mark_lost(B);
        assert!(in_flight.take_lost(&A));
        assert!(!in_flight.take_lost(&A), "reported once");
        in_flight.remove(&B);
        assert!(!in_flight.take_lost(&B), "remove forgets a lost entry");
    }
}
