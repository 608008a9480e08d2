//! Appending to a sharded stream: route by partition key, pipeline per
//! shard, and follow a resize: an append refused by a sealed shard
//! (docs/design.md §6 "Resharding") re-reads the layout and is sent again
//! by the new one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::join_all;

use super::layout::ShardLayout;
use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::producer::{Producer, Wait};
use crate::types::{Bytes, StreamId, StreamKey};

/// A producer for a sharded stream. An entry with a partition key goes to
/// [`shard_for`](super::shard_for)`(key, N)`: same key, same shard, send
/// order kept. Without a key, entries go round-robin. When a resize
/// sealed the shard an entry was routed to, the producer re-reads the
/// layout and sends the entries not written again by the new one: each
/// key's entries stay in send order (those before the cut are handled
/// first).
///
/// ```no_run
/// # async fn f() -> streamkeeper::Result<()> {
/// use streamkeeper::{fields, shard::{ShardLayout, ShardedProducer}, Connector, StreamKey};
/// let redis = Connector::connect("redis+cluster://127.0.0.1:7101").await?;
/// let layout = ShardLayout::create(&redis, &StreamKey::new("orders")?, 6).await?;
/// let producer = ShardedProducer::new(&redis, layout);
/// let (shard, id) = producer.send(Some(b"customer-42"), &fields([("sku", "a-1")])).await?;
/// println!("{id} in {shard}");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ShardedProducer {
    redis: Connector,
    routing: RwLock<Arc<Routing>>,
    wait: Option<Wait>,
    maxlen: Option<u64>,
    next: AtomicU32,
}

/// One layout and a producer per shard of its current generation.
#[derive(Debug)]
struct Routing {
    layout: ShardLayout,
    producers: Vec<Producer>,
}

/// How long a producer waits for a layout newer than the one a sealed
/// shard was routed by (the resize flips the layout before sealing, so
/// this only waits out a layout read from a lagging replica).
const FOLLOW_FOR: Duration = Duration::from_secs(10);

impl ShardedProducer {
    /// A producer for every shard of `layout`.
    pub fn new(redis: &Connector, layout: ShardLayout) -> Self {
        let producer = ShardedProducer {
            redis: redis.clone(),
            routing: RwLock::new(Arc::new(Routing {
                layout: layout.clone(),
                producers: Vec::new(),
            })),
            wait: None,
            maxlen: None,
            next: AtomicU32::new(0),
        };
        producer.set_layout(layout);
        producer
    }

    fn set_layout(&self, layout: ShardLayout) {
        let producers = layout
            .shards()
            .into_iter()
            .map(|k| {
                let p = Producer::new(&self.redis, k).with_maxlen(self.maxlen);
                match self.wait {
                    Some(w) => p.with_wait(w),
                    None => p,
                }
            })
            .collect();
        if let Ok(mut r) = self.routing.write() {
            *r = Arc::new(Routing { layout, producers });
        }
    }

    fn routing(&self) -> Arc<Routing> {
        match self.routing.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Requires `WAIT` after each batch on every shard (see [`Wait`]).
    pub fn with_wait(mut self, wait: Wait) -> Self {
        self.wait = Some(wait);
        let layout = self.layout();
        self.set_layout(layout);
        self
    }

    /// Caps every shard at about `maxlen` entries when `Some`.
    pub fn with_maxlen(mut self, maxlen: Option<u64>) -> Self {
        self.maxlen = maxlen;
        let layout = self.layout();
        self.set_layout(layout);
        self
    }

    /// The layout written to now.
    pub fn layout(&self) -> ShardLayout {
        self.routing().layout.clone()
    }

    /// The producer of shard `i` of the current layout (`i` < its count).
    pub fn shard_producer(&self, i: u32) -> Producer {
        let r = self.routing();
        r.producers[i as usize % r.producers.len()].clone()
    }

    /// The shard an entry with partition key `key` goes to:
    /// [`shard_for`](super::route::shard_for); without a key, the next
    /// shard in turn.
    pub fn route(&self, key: Option<&[u8]>) -> u32 {
        Self::route_in(&self.routing().layout, &self.next, key)
    }

    fn route_in(layout: &ShardLayout, next: &AtomicU32, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => super::route::shard_for(k, layout.count()),
            None => next.fetch_add(1, Ordering::Relaxed) % layout.count(),
        }
    }

    /// Re-reads the layout after `stale`'s shard was found sealed, until
    /// it is newer than `stale` (giving up after 10 s).
    pub async fn follow(&self, stale: &ShardLayout) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let now = self.routing();
            if now.layout.generation() > stale.generation() {
                return Ok(());
            }
            match ShardLayout::open(&self.redis, stale.stream()).await? {
                Some(l) if l.generation() > stale.generation() => {
                    tracing::info!(stream = %stale.stream(), generation = l.generation(), shards = l.count(),
                        "the stream was resharded; appending by the new layout");
                    self.set_layout(l);
                    return Ok(());
                }
                _ if started.elapsed() > FOLLOW_FOR => {
                    return Err(Error::ShardSealed {
                        stream: stale.stream().clone(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Appends one entry; returns its shard and ID.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        fields: &[(Bytes, Bytes)],
    ) -> Result<(StreamKey, StreamId)> {
        loop {
            let r = self.routing();
            let i = Self::route_in(&r.layout, &self.next, key);
            let producer = &r.producers[i as usize];
            match producer.send(fields).await {
                Ok(id) => return Ok((producer.stream().clone(), id)),
                Err(e) if e.is_sealed() => self.follow(&r.layout).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends entries (`(partition key, fields)`), one pipeline per shard,
    /// the shards in parallel; returns each entry's shard and ID in input
    /// order. Entries of one shard keep their relative order; those a
    /// sealed shard refused are sent again, in order, by the new layout.
    pub async fn send_batch<K, F>(
        &self,
        batch: &[(Option<K>, F)],
    ) -> Result<Vec<(StreamKey, StreamId)>>
    where
        K: AsRef<[u8]>,
        F: AsRef<[(Bytes, Bytes)]> + Sync,
    {
        let mut out: Vec<Option<(StreamKey, StreamId)>> = vec![None; batch.len()];
        let mut left: Vec<usize> = (0..batch.len()).collect();
        while !left.is_empty() {
            let r = self.routing();
            let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); r.producers.len()];
            for &n in &left {
                let key = batch[n].0.as_ref().map(AsRef::as_ref);
                per_shard[Self::route_in(&r.layout, &self.next, key) as usize].push(n);
            }
            let sends = per_shard
                .iter()
                .enumerate()
                .filter(|(_, idx)| !idx.is_empty())
                .map(|(shard, idx)| {
                    let r = &r;
                    async move {
                        let entries: Vec<&[(Bytes, Bytes)]> =
                            idx.iter().map(|&n| batch[n].1.as_ref()).collect();
                        (shard, r.producers[shard].send_batch(&entries).await)
                    }
                });
            let mut sealed = false;
            let mut failed = None;
            let mut still: Vec<usize> = Vec::new();
            for (shard, sent) in join_all(sends).await {
                let key = r.producers[shard].stream().clone();
                let idx = &per_shard[shard];
                let (ids, error) = match sent {
                    Ok(ids) => (ids, None),
                    Err(Error::PartlyWritten { written, cause }) => (written, Some(*cause)),
                    Err(e) => (Vec::new(), Some(e)),
                };
                for (&n, id) in idx.iter().zip(&ids) {
                    out[n] = Some((key.clone(), *id));
                }
                match error {
                    None => {}
                    Some(e) if e.is_sealed() => {
                        sealed = true;
                        still.extend(&idx[ids.len()..]);
                    }
                    Some(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                let written: Vec<StreamId> = out.iter().flatten().map(|(_, id)| *id).collect();
                return Err(Error::partly_written(written, e));
            }
            if sealed {
                self.follow(&r.layout).await?;
            }
            still.sort_unstable();
            left = still;
        }
        Ok(out.into_iter().flatten().collect())
    }
}
