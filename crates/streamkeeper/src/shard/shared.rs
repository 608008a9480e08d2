//! Shared mode: every consumer of a group reads every shard. Built from
//! one [`GroupConsumer`] per shard under one consumer name — each with its
//! own blocking connection to its shard's primary, its own acker (acks go
//! to the entry's shard), reclaim, retries and DLQ — run as one.
//!
//! It follows a resize (docs/design.md §6 "Resharding"): every
//! [`LAYOUT_POLL`] it re-reads the layout, starts a consumer on each shard
//! of a new generation and stops the one of a sealed shard the group has
//! drained. Shared mode promises no order, so the generations are read at
//! once; nothing is lost (a sealed shard is read to its end) and nothing
//! runs twice (an entry lives in one shard).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::layout::ShardLayout;
use super::member::Member;
use crate::consumer::{Budget, Delivery, GroupConsumer, Outcome, RunStats};
use crate::error::Result;
use crate::types::{StartFrom, StreamKey};

/// How often a consumer of a sharded stream re-reads its layout to follow
/// a resize.
pub(crate) const LAYOUT_POLL: std::time::Duration = std::time::Duration::from_secs(1);

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
    H: Fn(Delivery) -> F + Clone + Send + Sync,
    F: Future<Output = std::result::Result<Outcome, E>> + Send,
    E: std::fmt::Display + Send,
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
    let budget = Budget::shared(options.limit, layout.all_shards().len());
    let mut options = options;
    if options.limit.is_some() {
        options.block = options.block.min(LIMITED_BLOCK);
    }
    type Run<'a> = Pin<Box<dyn Future<Output = (StreamKey, Result<RunStats>)> + Send + 'a>>;
    let start = |shard: StreamKey, token: CancellationToken| -> Run<'_> {
        let run = GroupConsumer::new(redis, shard.clone(), group.clone())
            .consumer_name(consumer.clone())
            .options(options.clone())
            .shared_budget(budget.clone())
            .run(handler.clone(), concurrency, token);
        Box::pin(async move { (shard, run.await) })
    };
    // The shards read now (each with a token of its own, to stop one the
    // group drained) and those done with.
    let mut running: HashMap<StreamKey, CancellationToken> = HashMap::new();
    let mut done: HashSet<StreamKey> = HashSet::new();
    let mut runs: FuturesUnordered<Run<'_>> = FuturesUnordered::new();
    for shard in layout.all_shards() {
        let token = all.child_token();
        running.insert(shard.clone(), token.clone());
        runs.push(start(shard, token));
    }
    let mut layout = layout;
    let mut poll = tokio::time::interval(LAYOUT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut total = RunStats::default();
    let mut first_error = None;
    loop {
        if runs.is_empty() && (all.is_cancelled() || budget.exhausted()) {
            break;
        }
        tokio::select! {
            Some((shard, r)) = runs.next(), if !runs.is_empty() => {
                running.remove(&shard);
                let retired = r.is_err() && !layout.all_shards().contains(&shard);
                done.insert(shard);
                match r {
                    // A generation the janitor retired while its consumer
                    // was still on the way out: nothing was left there.
                    Err(e) if retired => {
                        tracing::debug!(error = %e, "a retired shard's consumer ended");
                    }
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
            _ = poll.tick(), if !all.is_cancelled() && !budget.exhausted() => {
                for shard in follow(redis, &mut layout, &group, &running, &done).await {
                    let token = all.child_token();
                    running.insert(shard.clone(), token.clone());
                    runs.push(start(shard, token));
                }
            }
            _ = all.cancelled(), if runs.is_empty() => {}
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// One look at the layout: returns the shards of a generation not read
/// yet, to start, and stops the sealed shards the group drained. Errors
/// are logged and left to the next look.
async fn follow(
    redis: &crate::Connector,
    layout: &mut ShardLayout,
    group: &crate::GroupName,
    running: &HashMap<StreamKey, CancellationToken>,
    done: &HashSet<StreamKey>,
) -> Vec<StreamKey> {
    match ShardLayout::open(redis, layout.stream()).await {
        Ok(Some(now)) => *layout = now,
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(stream = %layout.stream(), error = %e, "reading the layout failed; retrying");
            return Vec::new();
        }
    }
    let mut new = Vec::new();
    let current = layout.shards();
    for shard in layout.all_shards() {
        if running.contains_key(&shard) || done.contains(&shard) {
            continue;
        }
        // A group created on the old shards after the resize copied the
        // groups: its entries here are all new, read from the start.
        if let Err(e) = crate::group::create_group(redis, &shard, group, StartFrom::Beginning).await
        {
            tracing::warn!(%shard, error = %e, "creating the group on a new shard failed; retrying");
            continue;
        }
        tracing::info!(%shard, generation = layout.generation(), "the stream was resharded; reading the new shard");
        new.push(shard);
    }
    let live = layout.all_shards();
    for (shard, token) in running {
        if current.contains(shard) {
            continue;
        }
        if !live.contains(shard) {
            // Retired by the janitor: drained by the group long since.
            token.cancel();
            continue;
        }
        match super::resize::drained(redis, shard, group).await {
            Ok(true) => {
                tracing::info!(%shard, "the group drained this sealed shard; done with it");
                token.cancel();
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%shard, error = %e, "checking a sealed shard failed"),
        }
    }
    new
}
