//! One merged view of a sharded stream: every shard read, its entries
//! yielded in ID order across the shards (equal IDs: by shard index), each
//! tagged with its shard. Bounded ([`MergedReader`]: a range, or the last
//! N like `tail -n`) and following ([`MergedFollow`]). `tail S` and
//! `dump S` of the CLI go through it.

use std::collections::VecDeque;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::conn::{Connector, Topology};
use crate::error::{Error, Result};
use crate::pending;
use crate::reader::{self, Reader};
use crate::types::{Entry, StreamId, StreamKey};

/// Entries a page per shard when reading a range.
const PAGE: usize = 1000;

/// An entry of a merged read, with the shard it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    /// The shard's position in the list the reader was given (for a
    /// sharded stream: `i` of `{S:i}`).
    pub index: usize,
    /// The shard's stream key (`{S:i}`).
    pub shard: StreamKey,
    /// The entry, as the shard holds it.
    pub entry: Entry,
}

/// One shard of a bounded read: entries from `next` up to and including
/// `end`, read with `XRANGE` a page at a time on the shared connection.
struct Source {
    key: StreamKey,
    next: StreamId,
    page: VecDeque<Entry>,
    end: StreamId,
    done: bool,
}

/// A bounded merged read of several streams (the shards of a sharded
/// stream): entries in ID order across them, equal IDs in the order of the
/// list. Each shard's end is fixed when the reader is made (its newest
/// entry then, or the range's end if lower), so a read under heavy writes
/// ends; [`MergedReader::follow`] goes on from there. Reads are `XRANGE`
/// pages on the connector's shared connection (no connection per shard);
/// memory: one page per shard.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use streamkeeper::shard::{MergedReader, ShardLayout};
/// use streamkeeper::StreamKey;
/// let shards = ShardLayout::keys_of(&redis, &StreamKey::new("orders")?).await?;
/// let mut last = MergedReader::last(&redis, shards, 5).await?;
/// while let Some(e) = last.next().await? {
///     println!("{} {}", e.shard, e.entry.id);
/// }
/// # Ok(()) }
/// ```
pub struct MergedReader {
    redis: Connector,
    sources: Vec<Source>,
    page: usize,
}

impl MergedReader {
    /// Entries with IDs in `[from, to]` of every stream of `shards` (for a
    /// sharded stream [`ShardLayout::shards`](super::ShardLayout::shards);
    /// a plain stream alone reads as itself, see
    /// [`ShardLayout::keys_of`](super::ShardLayout::keys_of)). A shard that
    /// does not exist reads as empty; one of another type is refused.
    pub async fn range(
        redis: &Connector,
        shards: Vec<StreamKey>,
        from: StreamId,
        to: StreamId,
    ) -> Result<Self> {
        check(redis, &shards).await?;
        let after = from.prev();
        let mut bounds = Vec::with_capacity(shards.len());
        for key in shards {
            let newest = pending::range_rev(redis, &key, StreamId::MAX, StreamId::MIN, 1).await?;
            let end = newest.first().map_or(StreamId::MIN, |e| e.id.min(to));
            bounds.push((key, after, end.max(after)));
        }
        Ok(Self::of(redis, bounds, PAGE))
    }

    /// The last `n` entries across `shards` (as `tail -n N` on one
    /// stream): the `n` greatest by (ID, shard index), yielded oldest
    /// first. Found by walking every shard backwards in pages of at most
    /// 1000 entries and keeping none of them: memory stays bounded for any
    /// `n`, at the cost of reading the `n` entries twice. `n = 0` yields
    /// nothing and [`follow`](Self::follow)s from each shard's newest entry.
    pub async fn last(redis: &Connector, shards: Vec<StreamKey>, n: u64) -> Result<Self> {
        check(redis, &shards).await?;
        let size = n.clamp(1, PAGE as u64) as usize;
        struct Back {
            key: StreamKey,
            /// Newest first.
            page: VecDeque<Entry>,
            /// The oldest ID fetched so far: the next page is before it.
            cursor: Option<StreamId>,
            exhausted: bool,
            newest: StreamId,
            oldest_taken: Option<StreamId>,
        }
        let mut backs = Vec::with_capacity(shards.len());
        for key in shards {
            let page = pending::range_rev(redis, &key, StreamId::MAX, StreamId::MIN, size).await?;
            backs.push(Back {
                newest: page.first().map_or(StreamId::MIN, |e| e.id),
                cursor: page.last().map(|e| e.id),
                exhausted: page.len() < size,
                page: page.into(),
                key,
                oldest_taken: None,
            });
        }
        let mut left = n;
        while left > 0 {
            for b in backs
                .iter_mut()
                .filter(|b| b.page.is_empty() && !b.exhausted)
            {
                let page = pending::range_rev(
                    redis,
                    &b.key,
                    b.cursor.map_or(StreamId::MAX, |c| c.prev()),
                    StreamId::MIN,
                    size,
                )
                .await?;
                b.exhausted = page.len() < size;
                b.cursor = page.last().map(|e| e.id).or(b.cursor);
                b.page.extend(page);
            }
            let newest = backs
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.page.front().map(|e| (e.id, i)))
                .max();
            let Some((id, i)) = newest else {
                break;
            };
            backs[i].page.pop_front();
            backs[i].oldest_taken = Some(id);
            left -= 1;
        }
        let bounds = backs
            .into_iter()
            .map(|b| {
                let after = b.oldest_taken.map_or(b.newest, |id| id.prev());
                (b.key, after, b.newest)
            })
            .collect();
        Ok(Self::of(redis, bounds, size))
    }

    /// Sources from `(key, after, end)`: entries after `after` up to `end`.
    fn of(redis: &Connector, bounds: Vec<(StreamKey, StreamId, StreamId)>, page: usize) -> Self {
        let sources = bounds
            .into_iter()
            .map(|(key, after, end)| Source {
                key,
                next: after.next(),
                page: VecDeque::new(),
                end,
                // Nothing to read: no read at all.
                done: after >= end,
            })
            .collect();
        MergedReader {
            redis: redis.clone(),
            sources,
            page,
        }
    }

    /// The next entry in (ID, shard index) order, `None` at the end.
    pub async fn next(&mut self) -> Result<Option<ShardEntry>> {
        // Every shard's next entry must be at hand to pick the least.
        for s in self
            .sources
            .iter_mut()
            .filter(|s| s.page.is_empty() && !s.done)
        {
            let page = reader::range(&self.redis, &s.key, s.next, s.end, self.page).await?;
            match page.last() {
                Some(last) if page.len() == self.page && last.id < s.end => {
                    s.next = last.id.next();
                }
                // A short page, or one that reached the end: the last.
                _ => s.done = true,
            }
            s.page.extend(page);
        }
        let next = self
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.page.front().map(|e| (e.id, i)))
            .min();
        let Some((_, i)) = next else {
            return Ok(None);
        };
        let source = &mut self.sources[i];
        Ok(source.page.pop_front().map(|entry| ShardEntry {
            index: i,
            shard: source.key.clone(),
            entry,
        }))
    }

    /// Follows every shard from the end of this bounded read (each shard
    /// after its end, whether or not it was read that far): no entry twice
    /// and none skipped between the two. `block` is the longest wait of one
    /// poll.
    pub fn follow(self, block: Duration) -> MergedFollow {
        let positions = self.ends();
        MergedFollow::new(&self.redis, positions, block)
    }

    /// Where each shard's read ends (its newest entry when the read
    /// started): the positions [`follow`](Self::follow) starts from.
    pub fn ends(&self) -> Vec<(StreamKey, StreamId)> {
        self.sources
            .iter()
            .map(|s| (s.key.clone(), s.end))
            .collect()
    }
}

/// One shard's blocking read in flight (cluster): the future owns the
/// shard's reader and hands it back with the page, to be read again.
type Pending = BoxFuture<'static, (usize, Reader, Result<Vec<Entry>>)>;

fn read_one(i: usize, mut reader: Reader) -> Pending {
    async move {
        let page = reader.next_page().await;
        (i, reader, page)
    }
    .boxed()
}

enum Polls {
    /// One server (standalone or Sentinel-managed): one `XREAD BLOCK`
    /// names every shard.
    One(Reader),
    /// A cluster puts the shards in different slots, which one `XREAD`
    /// cannot name: a blocking read per shard on a dedicated connection to
    /// its primary, all in flight at once, as the shared-mode consumer
    /// reads (`shared.rs`).
    PerShard(FuturesUnordered<Pending>),
}

/// Follows several streams (the shards of a sharded stream) at once and
/// yields what arrives in batches, merged.
///
/// The order promised: each batch is sorted by (ID, shard index); batches
/// come in poll order; each shard's own entries come once each, in ID
/// order. On one server a poll is one `XREAD BLOCK` naming every shard
/// and, as soon as it returns, one `XREAD` without `BLOCK` naming every
/// shard again: every entry the shards held when the first read returned
/// is in that batch, so entries appended together (a `MULTI`, a pipeline
/// that finished before the poll woke) come out in ID order across shards.
/// On a cluster (one blocking read per shard) a batch is the reads that
/// have returned by the time the first of them does. An entry a later
/// poll returns comes after the earlier batch even when its ID is lower:
/// shards have independent IDs, and holding entries back until every
/// shard has been heard from would stall the output on an idle shard.
pub struct MergedFollow {
    keys: Vec<StreamKey>,
    polls: Polls,
}

impl MergedFollow {
    /// Follows `positions` (each stream after its ID); a poll waits at most
    /// `block`.
    pub fn new(redis: &Connector, positions: Vec<(StreamKey, StreamId)>, block: Duration) -> Self {
        let keys = positions.iter().map(|(k, _)| k.clone()).collect();
        let polls = match redis.topology() {
            Topology::Cluster { .. } => Polls::PerShard(
                positions
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| read_one(i, Reader::at(redis, vec![p]).follow(block)))
                    .collect(),
            ),
            _ => Polls::One(Reader::at(redis, positions).follow(block)),
        };
        MergedFollow { keys, polls }
    }

    /// The next batch, merged in (ID, shard index) order; empty when
    /// nothing arrived within the block time (or the connection moved to a
    /// new master). Cancel-safe on a cluster (reads stay in flight); on one
    /// server a cancelled poll's entries are lost, so cancel only to stop.
    pub async fn next_batch(&mut self) -> Result<Vec<ShardEntry>> {
        let mut got: Vec<(usize, Entry)> = Vec::new();
        match &mut self.polls {
            Polls::One(reader) => {
                let mut pages = reader.next_pages().await?;
                if !pages.is_empty() {
                    // A server before 7.2 answers a blocked XREAD with only
                    // the first of its streams written to: what the other
                    // shards got in the same write is read at once, into
                    // this batch.
                    pages.extend(reader.next_pages_now().await);
                }
                for (i, page) in pages {
                    got.extend(page.into_iter().map(|e| (i, e)));
                }
            }
            Polls::PerShard(reads) => {
                let Some(first) = reads.next().await else {
                    return Ok(Vec::new());
                };
                let mut done = vec![first];
                while let Some(Some(r)) = reads.next().now_or_never() {
                    done.push(r);
                }
                let mut failed = None;
                for (i, reader, page) in done {
                    reads.push(read_one(i, reader));
                    match page {
                        Ok(page) => got.extend(page.into_iter().map(|e| (i, e))),
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
            }
        }
        got.sort_by_key(|(i, e)| (e.id, *i));
        Ok(got
            .into_iter()
            .map(|(i, entry)| ShardEntry {
                index: i,
                shard: self.keys[i].clone(),
                entry,
            })
            .collect())
    }
}

/// Refuses an empty list and a key of another type (before any read, so
/// the error names the shard).
async fn check(redis: &Connector, shards: &[StreamKey]) -> Result<()> {
    if shards.is_empty() {
        return Err(Error::InvalidInput(
            "a merged read needs at least one stream".into(),
        ));
    }
    crate::inspect::check_streams(redis, shards).await
}

impl std::fmt::Debug for MergedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedReader")
            .field("shards", &self.sources.len())
            .finish()
    }
}

impl std::fmt::Debug for MergedFollow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedFollow")
            .field("shards", &self.keys)
            .finish()
    }
}
