//! `GroupConsumer::run`: feed deliveries to a handler with bounded
//! concurrency and settle each [`Outcome`].
//!
//! A handler error or panic is a failed attempt (`Retry` with the group's
//! backoff, or the dead-letter queue once attempts are used up). On
//! shutdown, reading stops first, handlers already running finish and are
//! settled, and queued acks are flushed, so nothing processed is delivered
//! again and nothing read ahead counts as an attempt.
//!
//! Each settled run is counted once by outcome (`ack`, `retry`, `failed`,
//! `dead_letter`) on the consumer's series, registered once at start.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::builder::GroupConsumer;
use super::delivery::Delivery;
use super::outcome::{AckMode, Outcome, Settled};
use super::span::RunSpan;
use crate::error::Result;
use crate::metrics::{ConsumerMetrics, Handled};

/// What a finished [`GroupConsumer::run`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Deliveries handed to the handler.
    pub delivered: u64,
    /// Handler results that were `Ack`.
    pub acked: u64,
    /// Failed attempts stored for a retry.
    pub retried: u64,
    /// Entries moved to the dead-letter stream (the handler said so, the
    /// last attempt failed, or the policy refused them before a run).
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
        let self_group = self.group.clone();
        let mut deliveries = self.start().await?;
        let metrics = deliveries.metrics().clone();
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
                    settle(&d, outcome, ack_mode, &mut stats, &metrics).await;
                }
                next = deliveries.next(), if reading && running.len() < max_running => match next {
                    Some(Ok(d)) => {
                        stats.delivered += 1;
                        let span = RunSpan::start(&d, self_group.as_str());
                        let fut = AssertUnwindSafe(handler(d.clone())).catch_unwind();
                        let run = metrics.start_run();
                        running.push(async move {
                            let outcome = fut.await;
                            drop(run);
                            span.end(&outcome);
                            (d, outcome)
                        });
                    }
                    Some(Err(e)) => { fatal = Some(e); break; }
                    None => break,
                },
            }
        }
        // Stop reading before waiting on handlers, so no new work starts.
        deliveries.cancel.cancel();
        while let Some((d, outcome)) = running.next().await {
            settle(&d, outcome, ack_mode, &mut stats, &metrics).await;
        }
        stats.dead_lettered += deliveries.dead_lettered_before_run();
        let closed = deliveries.close().await;
        match fatal {
            Some(e) => Err(e),
            None => closed.map(|()| stats),
        }
    }
}

async fn settle<E: std::fmt::Display>(
    d: &Delivery,
    outcome: std::thread::Result<std::result::Result<Outcome, E>>,
    ack_mode: AckMode,
    stats: &mut RunStats,
    metrics: &ConsumerMetrics,
) {
    let outcome = match outcome {
        Ok(Ok(Outcome::Ack)) if d.is_released() => {
            tracing::debug!(id = %d.id(), "released by the handler; it stays pending");
            return;
        }
        Ok(Ok(o)) => o,
        Ok(Err(e)) if ack_mode != AckMode::None => {
            let error = e.to_string();
            tracing::warn!(id = %d.id(), attempt = d.attempt(), %error, "handler failed");
            let settled = d.fail(&error).await;
            record(d, settled, Handled::Failed, stats, metrics);
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(id = %d.id(), attempt = d.attempt(), error = %e, "handler failed");
            metrics.handled(Handled::Failed);
            stats.retried += 1;
            return;
        }
        Err(_) => {
            tracing::error!(id = %d.id(), attempt = d.attempt(), "handler panicked");
            if ack_mode == AckMode::None {
                metrics.handled(Handled::Failed);
                stats.retried += 1;
                return;
            }
            let settled = d.settle(Outcome::Retry { after: None }).await;
            record(d, settled, Handled::Failed, stats, metrics);
            return;
        }
    };
    let asked = match &outcome {
        Outcome::Ack => Handled::Ack,
        Outcome::Retry { .. } => Handled::Retry,
        Outcome::DeadLetter { .. } => Handled::DeadLetter,
    };
    match outcome {
        Outcome::Ack if ack_mode != AckMode::Auto => {
            stats.acked += 1;
            metrics.handled(Handled::Ack);
        }
        // With NOACK nothing is pending, so there is nothing to store.
        Outcome::Retry { .. } if ack_mode == AckMode::None => {
            stats.retried += 1;
            metrics.handled(Handled::Retry);
        }
        outcome => {
            let settled = d.settle(outcome).await;
            record(d, settled, asked, stats, metrics);
        }
    }
}

/// Counts what settling did (and logs a failure to settle). The run is
/// counted as the handler's `asked` outcome, or `dead_letter` when
/// settling moved it there (the attempts limit); a failure to settle
/// leaves it pending, which is still the outcome the handler asked for.
fn record(
    d: &Delivery,
    settled: Result<Settled>,
    asked: Handled,
    stats: &mut RunStats,
    metrics: &ConsumerMetrics,
) {
    match settled {
        Ok(Settled::Acked) => stats.acked += 1,
        Ok(Settled::RetryScheduled) => stats.retried += 1,
        Ok(Settled::DeadLettered(dead_id)) => {
            stats.dead_lettered += 1;
            metrics.handled(Handled::DeadLetter);
            tracing::warn!(id = %d.id(), %dead_id, attempt = d.attempt(), "moved to the dead-letter stream");
            return;
        }
        Ok(_) => tracing::debug!(id = %d.id(), "not pending any more; nothing to settle"),
        // Still pending: it comes back after claim_after.
        Err(e) => {
            tracing::error!(id = %d.id(), error = %e, "settling failed; the entry stays pending")
        }
    }
    metrics.handled(asked);
}
