//! `GroupConsumer::run`: feed deliveries to a handler with bounded
//! concurrency and settle each [`Outcome`].
//!
//! A handler error or panic counts as a retry. On shutdown, reading stops
//! first, handlers already running finish and are settled, and queued acks
//! are flushed, so nothing processed is delivered again.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::consumer::{AckMode, Delivery, GroupConsumer, Outcome};
use crate::error::Result;

/// What a finished [`GroupConsumer::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Deliveries handed to the handler.
    pub delivered: u64,
    /// Handler results that were `Ack`.
    pub acked: u64,
    /// Handler results that were `Retry`, errors or panics.
    pub retried: u64,
    /// Entries moved to the dead-letter stream (handler said so, or
    /// `max_deliveries` was exceeded).
    pub dead_lettered: u64,
}

impl GroupConsumer {
    /// Runs `handler` on every delivery, at most `concurrency` at a time,
    /// until `shutdown` is cancelled or a fatal error occurs.
    pub async fn run<H, F, E>(
        self,
        handler: H,
        concurrency: usize,
        shutdown: CancellationToken,
    ) -> Result<RunStats>
    where
        H: Fn(Delivery) -> F,
        F: Future<Output = std::result::Result<Outcome, E>>,
        E: std::fmt::Display,
    {
        let ack_mode = self.options.ack_mode;
        let limit = self.options.limit;
        let max_deliveries = self.options.max_deliveries;
        let max_age = self.options.max_age;
        let backoff = (self.options.retry_backoff, self.options.retry_backoff_max);
        let mut deliveries = self.start().await?;
        let mut stats = RunStats::default();
        let mut running = FuturesUnordered::new();
        let max_running = concurrency.max(1);
        let mut fatal = None;
        loop {
            let reading = limit.is_none_or(|l| stats.delivered < l);
            if !reading && running.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((d, outcome)) = running.next(), if !running.is_empty() => {
                    settle(&d, outcome, ack_mode, backoff, &mut stats).await;
                }
                next = deliveries.next(), if reading && running.len() < max_running => match next {
                    Some(Ok(d)) => {
                        stats.delivered += 1;
                        if let Some(max) = max_deliveries.filter(|m| d.delivery_count() > *m) {
                            let reason = format!("delivered {} times (max {max})", d.delivery_count());
                            dead_letter(&d, &reason, &mut stats).await;
                            continue;
                        }
                        if let Some(max) = max_age {
                            let first = crate::retry::origin_id(d.entry());
                            let age = std::time::Duration::from_millis(crate::retry::now_ms().saturating_sub(first.ms));
                            if age > max {
                                let reason = format!("older than the max age ({} > {})",
                                    humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                                    humantime::format_duration(max));
                                dead_letter(&d, &reason, &mut stats).await;
                                continue;
                            }
                        }
                        let fut = AssertUnwindSafe(handler(d.clone())).catch_unwind();
                        running.push(async move { (d, fut.await) });
                    }
                    Some(Err(e)) => { fatal = Some(e); break; }
                    None => break,
                },
            }
        }
        // Stop reading before waiting on handlers, so no new work starts.
        deliveries.cancel.cancel();
        while let Some((d, outcome)) = running.next().await {
            settle(&d, outcome, ack_mode, backoff, &mut stats).await;
        }
        let closed = deliveries.close().await;
        match fatal {
            Some(e) => Err(e),
            None => closed.map(|()| stats),
        }
    }
}

async fn dead_letter(d: &Delivery, reason: &str, stats: &mut RunStats) {
    match d.dead_letter(reason).await {
        Ok(Some(dead_id)) => {
            stats.dead_lettered += 1;
            tracing::warn!(id = %d.id(), %dead_id, %reason, "moved to the dead-letter stream");
        }
        Ok(None) => tracing::debug!(id = %d.id(), "not pending any more; nothing to dead-letter"),
        // It stays pending and comes back after claim_after: nothing lost.
        Err(e) => {
            tracing::error!(id = %d.id(), error = %e, "dead-lettering failed; the entry stays pending")
        }
    }
}

async fn settle<E: std::fmt::Display>(
    d: &Delivery,
    outcome: std::thread::Result<std::result::Result<Outcome, E>>,
    ack_mode: AckMode,
    (base, max): (std::time::Duration, std::time::Duration),
    stats: &mut RunStats,
) {
    let after = crate::retry::backoff(d.delivery_count(), base, max);
    let outcome = match outcome {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            tracing::warn!(id = %d.id(), error = %e, ?after, "handler failed; retrying later");
            Outcome::Retry { after }
        }
        Err(_) => {
            tracing::error!(id = %d.id(), ?after, "handler panicked; retrying later");
            Outcome::Retry { after }
        }
    };
    match outcome {
        Outcome::Ack => {
            stats.acked += 1;
            if ack_mode == AckMode::Auto {
                d.ack();
            }
        }
        // With NOACK nothing is pending, so there is nothing to store.
        Outcome::Retry { .. } if ack_mode == AckMode::None => stats.retried += 1,
        Outcome::Retry { after } => {
            stats.retried += 1;
            match d.retry(after).await {
                Ok(stored) => tracing::debug!(id = %d.id(), ?after, ?stored, "retry stored"),
                // Still pending: it comes back after claim_after instead.
                Err(e) => {
                    tracing::error!(id = %d.id(), error = %e, "storing the retry failed; the entry stays pending")
                }
            }
        }
        Outcome::DeadLetter { reason } => dead_letter(d, &reason, stats).await,
    }
}
