//! Counters recorded through the `metrics` facade. Nothing is exported
//! unless the application installs a recorder (the CLI's `serve` does).

/// A reconnect (or failover recovery) was attempted.
pub(crate) fn reconnect() {
    metrics::counter!("streamkeeper_reconnects_total").increment(1);
}

/// Entries appended by producers.
pub(crate) fn produced(n: usize) {
    metrics::counter!("streamkeeper_produced_total").increment(n as u64);
}

/// Entries moved to a dead-letter stream.
pub(crate) fn dead_lettered() {
    metrics::counter!("streamkeeper_dead_lettered_total").increment(1);
}

/// Entries stored for a delayed retry.
pub(crate) fn retried() {
    metrics::counter!("streamkeeper_retried_total").increment(1);
}

/// Entries handed to this process by XREADGROUP or reclaiming.
pub(crate) fn delivered(n: usize, reclaimed: bool) {
    metrics::counter!("streamkeeper_delivered_total").increment(n as u64);
    if reclaimed {
        metrics::counter!("streamkeeper_reclaimed_total").increment(n as u64);
    }
}

/// Entries acknowledged.
pub(crate) fn acked(n: usize) {
    metrics::counter!("streamkeeper_acked_total").increment(n as u64);
}
