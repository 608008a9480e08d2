//! Appending to a sharded stream: route by partition key, pipeline per
//! shard.

use std::sync::atomic::{AtomicU32, Ordering};

use futures::future::try_join_all;

use super::layout::ShardLayout;
use crate::conn::Connector;
use crate::error::Result;
use crate::producer::{Producer, Wait};
use crate::types::{Bytes, StreamId, StreamKey};

/// A producer for a sharded stream. An entry with a partition key goes to
/// [`shard_for`](super::shard_for)`(key, N)`: same key, same shard, send
/// order kept. Without a key, entries go round-robin.
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
    layout: ShardLayout,
    producers: Vec<Producer>,
    next: AtomicU32,
}

impl ShardedProducer {
    /// A producer for every shard of `layout`.
    pub fn new(redis: &Connector, layout: ShardLayout) -> Self {
        let producers = layout
            .shards()
            .into_iter()
            .map(|k| Producer::new(redis, k))
            .collect();
        ShardedProducer {
            layout,
            producers,
            next: AtomicU32::new(0),
        }
    }

    /// Requires `WAIT` after each batch on every shard (see [`Wait`]).
    pub fn with_wait(mut self, wait: Wait) -> Self {
        self.producers = self
            .producers
            .into_iter()
            .map(|p| p.with_wait(wait))
            .collect();
        self
    }

    /// Caps every shard at about `maxlen` entries when `Some`.
    pub fn with_maxlen(mut self, maxlen: Option<u64>) -> Self {
        self.producers = self
            .producers
            .into_iter()
            .map(|p| p.with_maxlen(maxlen))
            .collect();
        self
    }

    /// The layout written to.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// The producer of shard `i` (`i` < the shard count).
    pub fn shard_producer(&self, i: u32) -> &Producer {
        &self.producers[i as usize % self.producers.len()]
    }

    /// The shard an entry with partition key `key` goes to:
    /// [`shard_for`](super::route::shard_for); without a key, the next
    /// shard in turn.
    pub fn route(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(k) => super::route::shard_for(k, self.layout.count()),
            None => self.next.fetch_add(1, Ordering::Relaxed) % self.layout.count(),
        }
    }

    /// Appends one entry; returns its shard and ID.
    pub async fn send(
        &self,
        key: Option<&[u8]>,
        fields: &[(Bytes, Bytes)],
    ) -> Result<(StreamKey, StreamId)> {
        let i = self.route(key);
        let producer = &self.producers[i as usize];
        let id = producer.send(fields).await?;
        Ok((producer.stream().clone(), id))
    }

    /// Appends entries (`(partition key, fields)`), one pipeline per shard,
    /// the shards in parallel; returns each entry's shard and ID in input
    /// order. Entries of one shard keep their relative order.
    pub async fn send_batch<K, F>(
        &self,
        batch: &[(Option<K>, F)],
    ) -> Result<Vec<(StreamKey, StreamId)>>
    where
        K: AsRef<[u8]>,
        F: AsRef<[(Bytes, Bytes)]> + Sync,
    {
        let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); self.producers.len()];
        for (n, (key, _)) in batch.iter().enumerate() {
            per_shard[self.route(key.as_ref().map(AsRef::as_ref)) as usize].push(n);
        }
        let sends = per_shard
            .iter()
            .enumerate()
            .filter(|(_, idx)| !idx.is_empty())
            .map(|(shard, idx)| async move {
                let entries: Vec<&[(Bytes, Bytes)]> =
                    idx.iter().map(|&n| batch[n].1.as_ref()).collect();
                let ids = self.producers[shard].send_batch(&entries).await?;
                Ok::<_, crate::Error>((shard, ids))
            });
        let mut out: Vec<Option<(StreamKey, StreamId)>> = vec![None; batch.len()];
        for (shard, ids) in try_join_all(sends).await? {
            let key = self.producers[shard].stream().clone();
            for (&n, id) in per_shard[shard].iter().zip(ids) {
                out[n] = Some((key.clone(), id));
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
}
