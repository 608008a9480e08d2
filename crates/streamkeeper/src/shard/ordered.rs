//! Ordered mode: each shard of a sharded stream has exactly one owner in
//! a group at a time, so entries of one partition key are handled one
//! after the other, in order, end to end.
//!
//! - Members register in `{S}:members:<group>` (a zset of heartbeat
//!   times) every `heartbeat`; one silent for `member_ttl` is gone.
//! - Every member computes the same assignment from the live members:
//!   shard i goes to the member with the highest XXH3 of `member:i`
//!   (rendezvous hashing — sticky: a join or leave moves only the shards
//!   that member wins or held).
//! - Owning shard i takes its lease `{S:i}:owner:<group>` (`SET NX PX`)
//!   with a token `<member>:<epoch>`, the epoch a counter that grows with
//!   every new owner (a restart under the same name included). The read
//!   of new entries and the ack, retry and dead-letter scripts check the
//!   token (the fence), and the owner checks its lease before each run,
//!   so a zombie — frozen past its lease, replaced — takes, runs and
//!   writes nothing.
//! - Taking over, the owner claims every pending entry of the shard for
//!   the group (the previous owner's unfinished work) and reads them
//!   first, in ID order.
//! - Rebalance is cooperative: an owner that should let a shard go stops
//!   reading it, finishes the entry in hand (in the background, its lease
//!   renewed meanwhile, its other shards kept), then releases the lease;
//!   the new owner takes it on its next heartbeat. A crashed owner's
//!   lease runs out after `lease_ttl`.
//! - Across a resize (docs/design.md §6 "Resharding") the layout is read
//!   again every heartbeat; the shards of a generation are handed out
//!   only once the group drained every sealed shard of the older ones
//!   (parent before child: a key's entries up to the cut were handled
//!   before its first entry in the new layout), and the owner of a sealed
//!   shard the group drained lets it go.
//! - A failing (or panicking) entry is retried in place (with the group's
//!   backoff) and the shard's later entries wait; after `max_deliveries`
//!   attempts it goes to the shard's dead-letter stream and the shard
//!   moves on. The rules are the one poison policy of every mode
//!   (`consumer/policy.rs`); only "in place" is ordered mode's own.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use redis::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::layout::ShardLayout;
use super::member::Member;
use crate::conn::Connector;
use crate::consumer::{
    AckMode, AfterFailure, Budget, ConsumerOptions, Delivery, Fence, GroupConsumer, Outcome,
    Policy, RunStats, Source,
};
use crate::error::{Error, Result};
use crate::keys::StreamKeys;
use crate::lease::Lease;
use crate::types::{ConsumerName, GroupName, StreamKey};

/// Timing of ordered mode. How failing entries are treated comes from
/// [`ConsumerOptions`] as in every mode (the one poison policy,
/// `consumer/policy.rs`): `max_deliveries` (5 when `None`: a shard waits
/// behind a failing entry, so ordered mode never retries for ever),
/// `max_age`, `retry_backoff` and `retry_backoff_max` (the wait between
/// two runs of a failing entry, retried in place).
#[derive(Debug, Clone)]
pub struct OrderedOptions {
    /// How often a member says it is alive and rechecks its shards.
    pub heartbeat: Duration,
    /// A member silent this long is gone (its shards move).
    pub member_ttl: Duration,
    /// A shard's owner lease; renewed every heartbeat. A crashed owner's
    /// shards wait this long before another member takes them.
    pub lease_ttl: Duration,
}

impl Default for OrderedOptions {
    fn default() -> Self {
        OrderedOptions {
            heartbeat: Duration::from_secs(1),
            member_ttl: Duration::from_secs(5),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// Attempts of an entry in ordered mode when `max_deliveries` is `None`
/// (a shard cannot wait for ever behind one entry).
pub const ORDERED_MAX_DELIVERIES: u64 = crate::consumer::DEFAULT_MAX_DELIVERIES;

/// The member rendezvous hashing gives shard `i` (of generation 0) among
/// `members`.
pub fn owner_of(members: &[String], i: u32) -> Option<&String> {
    owner_by(members, &i.to_string())
}

/// The member rendezvous hashing gives the shard labelled `label` (`i`
/// in generation 0, `i~g` later).
fn owner_by<'a>(members: &'a [String], label: &str) -> Option<&'a String> {
    members
        .iter()
        .max_by_key(|m| super::route::key_hash(format!("{m}:{label}").as_bytes()))
}

/// The shards whose entries may be handed out now, with their rendezvous
/// labels: those of the oldest generation the group has not drained, and
/// of the later ones only once every older one is drained. `drained`
/// keeps the sealed shards found drained (they stay so).
async fn eligible(
    redis: &Connector,
    layout: &ShardLayout,
    group: &GroupName,
    drained: &mut std::collections::HashSet<StreamKey>,
) -> Vec<(StreamKey, String)> {
    let mut out = Vec::new();
    let current = layout.generation();
    for generation in layout.generations() {
        let label = |i: u32| match generation.generation {
            0 => i.to_string(),
            g => format!("{i}~{g}"),
        };
        let mut all_drained = true;
        for i in 0..generation.count {
            let shard = StreamKeys::shard_of(layout.stream(), generation.generation, i);
            if generation.generation != current && !drained.contains(&shard) {
                match super::resize::drained(redis, &shard, group).await {
                    Ok(true) => {
                        drained.insert(shard);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "ordered mode: checking a sealed shard failed");
                    }
                }
            } else if drained.contains(&shard) {
                continue;
            }
            all_drained = false;
            out.push((shard, label(i)));
        }
        if !all_drained {
            break;
        }
    }
    out
}

/// One shard this member runs.
struct Owned {
    fence: Fence,
    stop: CancellationToken,
    task: JoinHandle<Result<RunStats>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `handler` as member `member` of `group` in ordered mode on every
/// shard this member owns, until `stop`; then finishes the entries in
/// hand, releases its leases and leaves. Its `options` supply batch and
/// block settings, the poison policy and `limit`, which counts deliveries
/// across the shards this member runs: once used up, the member runs what
/// it read and leaves. Its ack mode and `claim_after` are ordered mode's
/// own (acked after each run; a new owner claims the shard's pending
/// entries). Called through [`ShardedConsumer`](super::ShardedConsumer).
pub(crate) async fn run_ordered<H, F, E>(
    plan: Member,
    options: OrderedOptions,
    handler: H,
    stop: CancellationToken,
) -> Result<RunStats>
where
    H: Fn(Delivery) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = std::result::Result<Outcome, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let Member {
        redis,
        layout,
        group,
        name: member,
        options: consumer,
    } = plan;
    let (redis, group, member) = (&redis, &group, &member);
    let mut layout = layout;
    let members_key = StreamKeys::members(layout.stream(), group.as_str());
    let mut owned: HashMap<StreamKey, Owned> = HashMap::new();
    // Shards let go of, still finishing the entry in hand: their leases
    // are kept until then, so nobody runs the shard twice at once.
    let mut releasing: HashMap<StreamKey, Owned> = HashMap::new();
    let mut drained = std::collections::HashSet::new();
    let ttl_ms = ms(options.lease_ttl);
    // `consumer.limit` counts across the shards this member runs, as in
    // shared mode; once it is used up the member leaves.
    let budget = Budget::shared(consumer.limit, layout.all_shards().len());
    let mut consumer = consumer;
    if consumer.limit.is_some() {
        consumer.block = consumer.block.min(super::shared::LIMITED_BLOCK);
    }
    let mut total = RunStats::default();
    let mut tick = tokio::time::interval(options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The limit is used up: run what was read, take no new shard, leave
    // once the owned shards' consumers are done (leases renewed meanwhile).
    let mut draining = false;
    let result = loop {
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            _ = budget.spent(), if !draining => draining = true,
            _ = tick.tick() => {}
        }
        if draining && owned.values().all(|o| o.task.is_finished()) {
            break Ok(());
        }
        let members = match heartbeat(redis, &members_key, member, &options).await {
            Ok(m) => m,
            Err(e) if e.is_retryable() => {
                tracing::warn!(error = %e, "ordered mode: heartbeat failed; retrying");
                continue;
            }
            Err(e) => break Err(e),
        };
        settle_releasing(redis, &mut releasing, ttl_ms, &mut total).await;
        // Follow a resize: the layout may have a new generation.
        match ShardLayout::open(redis, layout.stream()).await {
            Ok(Some(now)) => layout = now,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "ordered mode: reading the layout failed"),
        }
        let shards = eligible(redis, &layout, group, &mut drained).await;
        // Owned shards no longer handed out (sealed and drained): let go.
        let gone: Vec<StreamKey> = owned
            .keys()
            .filter(|k| !shards.iter().any(|(s, _)| s == *k))
            .cloned()
            .collect();
        for shard in gone {
            if let Some(o) = owned.remove(&shard) {
                tracing::info!(%shard, "ordered mode: the group drained this sealed shard; letting it go");
                o.stop.cancel();
                releasing.insert(shard, o);
            }
        }
        for (shard, label) in shards {
            let i = &shard;
            let lease = StreamKeys::owner(&shard, group.as_str());
            let mine = owner_by(&members, &label) == Some(&member.to_string());
            let finished = owned.get(i).is_some_and(|o| o.task.is_finished());
            if let (Some(o), true) = (owned.get(i), mine && !finished) {
                // Keep it: renew, or stop at once if the lease was lost.
                match o.fence.renew(redis, options.lease_ttl).await {
                    Ok(true) => continue,
                    Ok(false) => {
                        tracing::warn!(%shard, "ordered mode: lost the lease; stopping this shard");
                        o.stop.cancel();
                    }
                    Err(e) => {
                        tracing::warn!(%shard, error = %e, "ordered mode: renewing the lease failed");
                        continue;
                    }
                }
            }
            if let Some(o) = owned.remove(i) {
                // Hand it over: stop reading; the entry in hand finishes
                // in the background (the heartbeat must go on meanwhile,
                // or this member's other leases would run out), then the
                // lease is released.
                o.stop.cancel();
                releasing.insert(shard.clone(), o);
                continue;
            }
            if !mine || draining || releasing.contains_key(i) {
                continue;
            }
            let epoch = StreamKeys::epoch(&shard, group.as_str());
            let owner = Lease::fenced(redis, lease, epoch, member.as_str(), options.lease_ttl);
            let fence = match owner.take().await {
                Ok(Some(f)) => f,
                Ok(None) => continue, // the previous owner has not let go yet
                Err(e) => {
                    tracing::warn!(%shard, error = %e, "ordered mode: taking the lease failed");
                    continue;
                }
            };
            if let Err(e) = claim_all(redis, &shard, group, member).await {
                tracing::warn!(%shard, error = %e, "ordered mode: taking over pending entries failed");
                let _ = fence.release(redis).await;
                continue;
            }
            tracing::info!(%shard, token = %fence.token, "ordered mode: owner");
            let run_stop = CancellationToken::new();
            let task = tokio::spawn(run_shard(
                redis.clone(),
                shard.clone(),
                group.clone(),
                member.clone(),
                ConsumerOptions {
                    fence: Some(fence.clone()),
                    ..consumer.clone()
                },
                handler.clone(),
                budget.clone(),
                run_stop.clone(),
            ));
            owned.insert(
                shard,
                Owned {
                    fence,
                    stop: run_stop,
                    task,
                },
            );
        }
        settle_releasing(redis, &mut releasing, ttl_ms, &mut total).await;
    };
    tracing::info!(%member, shards = owned.len() + releasing.len(), "ordered mode: leaving; finishing the entries in hand");
    for o in owned.values() {
        o.stop.cancel();
    }
    releasing.extend(owned.drain());
    // Gone from the members at once, so the others plan without this one;
    // they take its shards as each lease is released.
    let mut conn = redis.shared();
    let _: redis::RedisResult<()> = redis::cmd("ZREM")
        .arg(&members_key)
        .arg(member.as_str())
        .query_async(&mut conn)
        .await;
    let poll = options.heartbeat.min(Duration::from_millis(50));
    loop {
        settle_releasing(redis, &mut releasing, ttl_ms, &mut total).await;
        if releasing.is_empty() {
            break;
        }
        tokio::time::sleep(poll).await;
    }
    result.map(|()| total)
}

/// Releases the shards in `releasing` whose consumer has finished, and
/// renews the leases of those still finishing their entry in hand.
async fn settle_releasing(
    redis: &Connector,
    releasing: &mut HashMap<StreamKey, Owned>,
    ttl_ms: u64,
    total: &mut RunStats,
) {
    let shards: Vec<StreamKey> = releasing.keys().cloned().collect();
    for shard in shards {
        let i = &shard;
        let finished = releasing.get(i).is_some_and(|o| o.task.is_finished());
        if finished {
            if let Some(o) = releasing.remove(i) {
                *total = add(std::mem::take(total), o.task.await);
                let _ = o.fence.release(redis).await;
                tracing::info!(%shard, "ordered mode: released");
            }
        } else if let Some(o) = releasing.get(i) {
            let _ = o.fence.renew(redis, Duration::from_millis(ttl_ms)).await;
        }
    }
}

fn add(
    mut total: RunStats,
    r: std::result::Result<Result<RunStats>, tokio::task::JoinError>,
) -> RunStats {
    match r {
        Ok(Ok(s)) => {
            total.delivered += s.delivered;
            total.acked += s.acked;
            total.retried += s.retried;
            total.dead_lettered += s.dead_lettered;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "ordered mode: a shard's consumer ended"),
        Err(e) => tracing::warn!(error = %e, "ordered mode: a shard's consumer panicked"),
    }
    total
}

/// Says this member is alive, drops members silent past `member_ttl`,
/// and returns the live ones, sorted.
async fn heartbeat(
    redis: &Connector,
    key: &str,
    member: &ConsumerName,
    options: &OrderedOptions,
) -> Result<Vec<String>> {
    let now = crate::retry::now_ms();
    let mut conn = redis.shared();
    let (_, _, mut members): ((), (), Vec<String>) = redis::pipe()
        .cmd("ZADD")
        .arg(key)
        .arg(now)
        .arg(member.as_str())
        .cmd("ZREMRANGEBYSCORE")
        .arg(key)
        .arg("-inf")
        .arg(now.saturating_sub(ms(options.member_ttl)))
        .cmd("ZRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .map_err(|e| Error::redis(format!("heartbeat in {key}"), e))?;
    members.sort();
    Ok(members)
}

/// Claims every pending entry of `group` on `shard` for `member`
/// (`XAUTOCLAIM … 0 … JUSTID`: no delivery counted), so the new owner
/// reads the previous owner's unfinished entries first, in ID order.
async fn claim_all(
    redis: &Connector,
    shard: &StreamKey,
    group: &GroupName,
    member: &ConsumerName,
) -> Result<()> {
    let mut conn = redis.shared();
    let mut cursor = "0-0".to_string();
    loop {
        let v: Value = redis::cmd("XAUTOCLAIM")
            .arg(shard.as_str())
            .arg(group.as_str())
            .arg(member.as_str())
            .arg(0)
            .arg(&cursor)
            .arg("COUNT")
            .arg(1000)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis(format!("XAUTOCLAIM {shard}"), e))?;
        let next = match &v {
            Value::Array(parts) => parts.first().map(crate::reply::text),
            _ => None,
        };
        match next {
            Some(n) if n != "0-0" => cursor = n,
            _ => return Ok(()),
        }
    }
}

/// The one consumer of a shard this member owns: one entry at a time,
/// a failing one retried in place.
#[allow(clippy::too_many_arguments)]
async fn run_shard<H, F, E>(
    redis: Connector,
    shard: StreamKey,
    group: GroupName,
    member: ConsumerName,
    consumer: ConsumerOptions,
    handler: H,
    budget: Budget,
    stop: CancellationToken,
) -> Result<RunStats>
where
    H: Fn(Delivery) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = std::result::Result<Outcome, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let policy = Policy::new(&ConsumerOptions {
        max_deliveries: consumer.max_deliveries.or(Some(ORDERED_MAX_DELIVERIES)),
        ..consumer.clone()
    });
    let consumer = ConsumerOptions {
        // Acked here after a success; an entry left unacked at a stop
        // stays pending for the next owner, never in the retry set (that
        // would break the order).
        ack_mode: AckMode::Manual,
        claim_after: None,
        max_deliveries: None,
        max_age: None,
        create: None,
        limit: None,
        ..consumer
    };
    let in_hand = stop.clone();
    let fence = consumer.fence.clone();
    let conn = redis.clone();
    GroupConsumer::new(&redis, shard, group)
        .consumer_name(member)
        .options(consumer)
        .shared_budget(budget)
        .run(
            move |d: Delivery| {
                let (handler, policy, stop) = (handler.clone(), policy.clone(), in_hand.clone());
                let (fence, redis) = (fence.clone(), conn.clone());
                async move {
                    // Runs before this delivery: failed ones and ones cut
                    // off by a crash (the attempt marks) count towards
                    // max_deliveries, so an entry that kills its consumer
                    // every time still reaches the dead-letter stream.
                    let earlier = d.attempt().saturating_sub(1);
                    if let Some(reason) = policy.before_run(d.entry(), earlier) {
                        // Not run again: the dead letter records the runs made.
                        d.set_attempt(earlier);
                        return Ok(Outcome::DeadLetter { reason });
                    }
                    let mut runs = 0u64;
                    loop {
                        // An owner that lost its lease (frozen past it, then
                        // replaced) runs nothing more: the entries it holds
                        // belong to the new owner, who claimed them.
                        let lost = match &fence {
                            Some(f) => !f.still_held(&redis).await,
                            None => false,
                        };
                        if lost {
                            tracing::warn!(id = %d.id(), "ordered mode: lost the lease; not running the entry");
                            stop.cancel();
                            d.leave_pending().await;
                            return Ok(Outcome::Ack);
                        }
                        runs += 1;
                        let attempt = earlier + runs;
                        if runs > 1 {
                            d.start_rerun(attempt).await;
                        } else if d.source() == Source::New {
                            // Re-read and reclaimed entries were marked
                            // before they were handed out.
                            if let Err(e) = d.mark_now().await {
                                tracing::warn!(id = %d.id(), error = %e, "could not mark the run");
                            }
                        }
                        // A panic is a failed run like an error, retried here:
                        // left to `run`, it would go through the retry set and
                        // come back after the shard's later entries.
                        let run = AssertUnwindSafe(handler(d.clone())).catch_unwind();
                        let (why, after) = match run.await {
                            Err(_) => ("the handler panicked".to_string(), None),
                            // Handed back unsettled: left pending, first
                            // in line for this shard's next run.
                            Ok(Ok(Outcome::Ack)) if d.is_released() => {
                                stop.cancel();
                                return Ok::<_, std::convert::Infallible>(Outcome::Ack);
                            }
                            Ok(Ok(Outcome::Ack)) => {
                                if let Err(e) = d.ack_now().await {
                                    tracing::warn!(id = %d.id(), error = %e, "ordered mode: the ack failed; the entry stays pending");
                                    d.leave_pending().await;
                                }
                                return Ok::<_, std::convert::Infallible>(Outcome::Ack);
                            }
                            Ok(Ok(Outcome::DeadLetter { reason })) => {
                                return Ok(Outcome::DeadLetter { reason })
                            }
                            Ok(Ok(Outcome::Retry { after })) => {
                                ("the handler asked for a retry".to_string(), after)
                            }
                            Ok(Err(e)) => (e.to_string(), None),
                        };
                        let wait = match policy.after_failure(attempt, after) {
                            AfterFailure::Dead(reason) => {
                                return Ok(Outcome::DeadLetter {
                                    reason: format!("{reason}: {why}"),
                                })
                            }
                            AfterFailure::Retry(wait) => wait,
                        };
                        tracing::warn!(id = %d.id(), attempt, error = %why, ?wait, "ordered mode: retrying in place; the shard waits");
                        tokio::select! {
                            // Handing the shard over: leave it pending (not
                            // acked) for the next owner, who reads it first.
                            _ = stop.cancelled() => {
                                d.leave_pending().await;
                                return Ok(Outcome::Ack);
                            }
                            _ = tokio::time::sleep(wait) => {}
                        }
                    }
                }
            },
            1,
            stop,
        )
        .await
}
