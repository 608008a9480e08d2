//! Shared mode: every consumer of a group reads every shard. Built from
//! one [`GroupConsumer`] per shard under one consumer name — each with its
//! own blocking connection to its shard's primary, its own acker (acks go
//! to the entry's shard), reclaim, retries and DLQ — run as one.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::member::Member;
use crate::consumer::{Budget, Delivery, GroupConsumer, Outcome, RunStats};
use crate::error::Result;

/// The longest blocking read of a shard while a limit is shared.
pub(crate) const LIMITED_BLOCK: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `handler` on the entries of every shard of `layout` as consumer
/// `consumer` of `group` (shared mode), until `stop` is cancelled or a
/// shard's consumer meets an error that retrying cannot fix; then the
/// other shards stop too (handlers in flight finish, acks are flushed) and
/// that error is returned. `concurrency` applies per shard; `options`
/// (ack mode, `claim_after`, `max_deliveries`, …) apply to every shard.
/// `options.limit` counts deliveries across all the shards: the shards'
/// readers draw from one budget and never read more than is left, so
/// nothing beyond the limit is read ahead and left pending. With a limit
/// each shard's blocking read waits at most 100 ms, so that a reader
/// waiting on an empty shard does not hold the last of the budget from a
/// shard that has entries. [`Delivery::stream`] names the entry's shard.
/// Called through [`ShardedConsumer`](super::ShardedConsumer).
pub(crate) async fn run_shared<H, F, E>(
    member: Member,
    handler: H,
    concurrency: usize,
    stop: CancellationToken,
) -> Result<RunStats>
where
    H: Fn(Delivery) -> F + Clone,
    F: Future<Output = std::result::Result<Outcome, E>>,
    E: std::fmt::Display,
{
    let Member {
        redis,
        layout,
        group,
        name: consumer,
        options,
    } = member;
    let redis = &redis;
    // A child token: one shard's fatal error stops the others, without
    // cancelling the caller's token.
    let all = stop.child_token();
    let budget = Budget::shared(options.limit, layout.count() as usize);
    let mut options = options;
    if options.limit.is_some() {
        options.block = options.block.min(LIMITED_BLOCK);
    }
    let mut runs: FuturesUnordered<_> = layout
        .shards()
        .into_iter()
        .map(|shard| {
            GroupConsumer::new(redis, shard, group.clone())
                .consumer_name(consumer.clone())
                .options(options.clone())
                .shared_budget(budget.clone())
                .run(handler.clone(), concurrency, all.clone())
        })
        .collect();
    let mut total = RunStats::default();
    let mut first_error = None;
    while let Some(r) = runs.next().await {
        match r {
            Ok(s) => {
                total.delivered += s.delivered;
                total.acked += s.acked;
                total.retried += s.retried;
                total.dead_lettered += s.dead_lettered;
            }
            Err(e) => {
                all.cancel();
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
