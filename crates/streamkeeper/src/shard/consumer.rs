//! [`ShardedConsumer`]: one builder for consuming a logical stream,
//! plain or sharded, in any mode — the choice the CLI's `consume` and a
//! library user make the same way.
//!
//! - A plain stream: one [`GroupConsumer`].
//! - A sharded stream, shared mode: one `GroupConsumer` per shard run as
//!   one (`shared.rs`).
//! - A sharded stream, ordered mode: one owner per shard (`ordered.rs`).
//!
//! In every mode the group is created on every shard when asked
//! (`ConsumerOptions::create`), a shard of another type refuses the run
//! before anything is created, and a group missing on one shard is named
//! with the logical stream ([`Error::GroupMissingOnShard`]).

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::layout::ShardLayout;
use super::member::Member;
use super::ordered::{run_ordered, OrderedOptions};
use super::shared::run_shared;
use crate::conn::Connector;
use crate::consumer::{ConsumerOptions, Delivery, GroupConsumer, Outcome, RunStats};
use crate::error::{Error, Result};
use crate::types::{ConsumerName, GroupName, StreamKey};

/// Consumes stream `S` as a member of a group, whether `S` is a plain
/// stream or a sharded one (its layout is read when [`run`](Self::run)
/// starts), in shared mode or, with [`ordered`](Self::ordered), with one
/// owner per shard so per-key order holds. [`ConsumerOptions`] apply in
/// every mode (see [`OrderedOptions`] for what ordered mode does with
/// them).
///
/// ```no_run
/// # async fn f() -> streamkeeper::Result<()> {
/// use streamkeeper::shard::{OrderedOptions, ShardedConsumer};
/// use streamkeeper::{Connector, ConsumerOptions, GroupName, Outcome, StartFrom, StreamKey};
/// let redis = Connector::connect("redis://127.0.0.1:6379").await?;
/// let stats = ShardedConsumer::new(&redis, StreamKey::new("orders")?, GroupName::new("billing")?)
///     .options(ConsumerOptions { create: Some(StartFrom::Beginning), ..Default::default() })
///     .ordered(OrderedOptions::default())
///     .run(
///         |d| async move { println!("{} {}", d.stream(), d.id()); Ok::<_, std::io::Error>(Outcome::Ack) },
///         tokio_util::sync::CancellationToken::new(),
///     )
///     .await?;
/// println!("{} handled", stats.delivered);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ShardedConsumer {
    redis: Connector,
    stream: StreamKey,
    group: GroupName,
    consumer: ConsumerName,
    options: ConsumerOptions,
    ordered: Option<OrderedOptions>,
    concurrency: usize,
}

impl ShardedConsumer {
    /// A member of `group` on `stream` (plain or sharded), named
    /// [`ConsumerName::unique`] unless [`consumer_name`](Self::consumer_name)
    /// says otherwise; shared mode, one handler at a time.
    pub fn new(redis: &Connector, stream: StreamKey, group: GroupName) -> Self {
        ShardedConsumer {
            redis: redis.clone(),
            stream,
            group,
            consumer: ConsumerName::unique(),
            options: ConsumerOptions::default(),
            ordered: None,
            concurrency: 1,
        }
    }

    /// The consumer (member) name.
    pub fn consumer_name(mut self, name: ConsumerName) -> Self {
        self.consumer = name;
        self
    }

    /// The consumer options, for every shard.
    pub fn options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    /// Ordered mode: one owner per shard in the group, so entries of one
    /// partition key are handled one after the other, in order. Needs a
    /// sharded stream.
    pub fn ordered(mut self, options: OrderedOptions) -> Self {
        self.ordered = Some(options);
        self
    }

    /// Handlers running at once (per shard in shared mode; ordered mode
    /// always runs one entry of a shard at a time).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Runs `handler` on every delivery until `stop` is cancelled, the
    /// options' `limit` is reached or an error retrying cannot fix occurs
    /// (then every shard stops: handlers in flight finish, acks are
    /// flushed).
    pub async fn run<H, F, E>(self, handler: H, stop: CancellationToken) -> Result<RunStats>
    where
        H: Fn(Delivery) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = std::result::Result<Outcome, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let ShardedConsumer {
            redis,
            stream,
            group,
            consumer,
            options,
            ordered,
            concurrency,
        } = self;
        let Some(layout) = ShardLayout::open(&redis, &stream).await? else {
            if ordered.is_some() {
                return Err(Error::InvalidInput(format!(
                    "ordered mode needs a sharded stream ({stream} is not one: `streamkeeper shard create {stream} --shards N`); a plain stream is already in order with one consumer"
                )));
            }
            return GroupConsumer::new(&redis, stream, group)
                .consumer_name(consumer)
                .options(options)
                .run(handler, concurrency, stop)
                .await;
        };
        // Every live generation: older ones still drain after a resize.
        let shards = layout.all_shards();
        // Nothing created on some shards when another is of the wrong type.
        crate::inspect::check_streams(&redis, &shards).await?;
        if let Some(from) = options.create {
            for shard in &shards {
                crate::group::create_group(&redis, shard, &group, from).await?;
            }
        }
        let member = Member {
            redis,
            layout,
            group,
            name: consumer,
            options,
        };
        let ran = match ordered {
            Some(ordered) => run_ordered(member, ordered, handler, stop).await,
            None => run_shared(member, handler, concurrency, stop).await,
        };
        ran.map_err(|e| match e {
            Error::GroupMissing {
                stream: shard,
                group,
            } => Error::GroupMissingOnShard {
                stream,
                shard,
                group,
            },
            e => e,
        })
    }
}
