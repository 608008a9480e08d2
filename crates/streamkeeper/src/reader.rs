//! A plain `XREAD` reader: no group, no acks, just the entries in order.
//!
//! It pages from a start (`$`, the beginning, an ID or a time) and, in
//! follow mode, blocks for new entries on its own dedicated connection.
//! A `$` start is resolved to the stream's last ID once, at creation, so
//! no entry added between two reads is skipped. Inside the crate a reader
//! may name several streams of one server: one `XREAD` reads them all
//! (the merged reader of a sharded stream, `shard/merged.rs`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::conn::Connector;
use crate::error::Result;
use crate::explain;
use crate::reply;
use crate::types::{Entry, StartFrom, StreamId, StreamKey};

/// Reads a stream in order with `XREAD`.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use streamkeeper::{Reader, StartFrom, StreamKey};
/// let mut reader = Reader::new(&redis, StreamKey::new("orders")?, StartFrom::Beginning).await?;
/// loop {
///     let page = reader.next_page().await?;
///     if page.is_empty() { break; }
///     for e in page { println!("{}", e.id); }
/// }
/// # Ok(()) }
/// ```
pub struct Reader {
    connector: Connector,
    /// Opened at the first read, once the builder has set the block time
    /// (the connection's response timeout depends on it).
    conn: Option<MultiplexedConnection>,
    /// One stream, or (crate-private) several on the same server.
    streams: Vec<StreamKey>,
    /// Per stream: the ID after which its next page starts.
    after: Vec<StreamId>,
    page: usize,
    block: Option<Duration>,
    /// Master switches (Sentinel): the connection moves with them.
    switches: tokio::sync::watch::Receiver<u64>,
}

impl Reader {
    /// A reader of `stream` starting at `from`, pages of 1000, not following.
    pub async fn new(connector: &Connector, stream: StreamKey, from: StartFrom) -> Result<Self> {
        let after = match from.last_before() {
            Some(id) => id,
            None => last_entries(connector, &stream, 1)
                .await?
                .first()
                .map_or(StreamId::MIN, |e| e.id),
        };
        Ok(Reader::at(connector, vec![(stream, after)]))
    }

    /// A reader of several streams on one server (a cluster node serving
    /// all their slots, or one server), each from its own position: one
    /// `XREAD` reads them all. An empty list is not allowed (`XREAD`
    /// needs a stream); callers pass at least one.
    pub(crate) fn at(connector: &Connector, streams: Vec<(StreamKey, StreamId)>) -> Self {
        let (streams, after) = streams.into_iter().unzip();
        Reader {
            connector: connector.clone(),
            conn: None,
            streams,
            after,
            page: 1000,
            block: None,
            switches: connector.switches(),
        }
    }

    /// Entries per page (`COUNT`).
    pub fn page_size(mut self, n: usize) -> Self {
        self.page = n.max(1);
        self
    }

    /// Follow mode: when caught up, wait up to `block` for new entries
    /// (an empty page then means "nothing new yet", not the end).
    pub fn follow(mut self, block: Duration) -> Self {
        self.block = Some(block);
        self
    }

    /// The ID after which the next page starts.
    pub fn position(&self) -> StreamId {
        self.after.first().copied().unwrap_or(StreamId::MIN)
    }

    /// The next page. Empty at the end of the stream (or, in follow mode,
    /// when nothing arrived within the block time). In follow mode a
    /// master switch or a failover error is not the end either: the reader
    /// moves to the (new) master and the page is empty.
    pub async fn next_page(&mut self) -> Result<Vec<Entry>> {
        Ok(self
            .next_pages()
            .await?
            .into_iter()
            .flat_map(|(_, page)| page)
            .collect())
    }

    /// [`Reader::next_pages`] without blocking, in follow mode too: what
    /// the streams hold now. An error is logged and reads as nothing (the
    /// positions did not move; the next read gets those entries).
    pub(crate) async fn next_pages_now(&mut self) -> Vec<(usize, Vec<Entry>)> {
        let block = self.block.take();
        let pages = self.next_pages().await;
        self.block = block;
        pages.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "read without blocking failed; the next poll reads it");
            Vec::new()
        })
    }

    /// [`Reader::next_page`] of every stream the reader names, in one
    /// `XREAD`: `(index of the stream, its page)` for each stream that had
    /// entries (`COUNT` applies per stream).
    pub(crate) async fn next_pages(&mut self) -> Result<Vec<(usize, Vec<Entry>)>> {
        if self.switches.has_changed().unwrap_or(false) {
            self.switches.mark_unchanged();
            self.conn = None;
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT").arg(self.page);
        if let Some(b) = self.block {
            cmd.arg("BLOCK")
                .arg(u64::try_from(b.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.arg("STREAMS").arg(&self.streams).arg(&self.after);
        // The first stream stands for all of them: they share a server.
        let first = self
            .streams
            .first()
            .cloned()
            .ok_or_else(|| crate::Error::Protocol {
                command: "XREAD",
                detail: "a reader of no stream".into(),
            })?;
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                // Without follow, reads do not block; 5 s is the same
                // generous response time as before.
                let block = self.block.unwrap_or(Duration::from_secs(5));
                self.conn
                    .insert(self.connector.dedicated(&first, block).await?)
            }
        };
        let read = tokio::select! {
            r = cmd.query_async(conn) => Some(r),
            _ = self.switches.changed() => None,
        };
        let v: Value = match read {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                let e = explain::explain(conn, &first, "XREAD", e).await;
                if self.block.is_none() || !e.is_retryable() {
                    return Err(e);
                }
                tracing::warn!(stream = %first, error = %e, "read failed; reconnecting");
                self.conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = self.connector.recover().await {
                    tracing::warn!(error = %e, "no server to reconnect to yet");
                }
                return Ok(Vec::new());
            }
            None => {
                // The master moved: read from the new one next time.
                self.conn = None;
                return Ok(Vec::new());
            }
        };
        let mut pages = Vec::new();
        for (key, page) in reply::read_reply_by_stream(v, "XREAD")? {
            let Some(i) = self
                .streams
                .iter()
                .position(|s| s.as_str().as_bytes() == key)
            else {
                return Err(crate::Error::Protocol {
                    command: "XREAD",
                    detail: format!(
                        "a reply for {} that was not asked for",
                        String::from_utf8_lossy(&key)
                    ),
                });
            };
            if let Some(last) = page.last() {
                self.after[i] = last.id;
            }
            pages.push((i, page));
        }
        Ok(pages)
    }
}

/// The last `n` entries of a stream, oldest first.
pub async fn last_entries(
    connector: &Connector,
    stream: &StreamKey,
    n: usize,
) -> Result<Vec<Entry>> {
    let mut conn = connector.shared();
    let r: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(n)
        .query_async(&mut conn)
        .await;
    let v = match r {
        Ok(v) => v,
        Err(e) => return Err(explain::explain(&mut conn, stream, "XREVRANGE", e).await),
    };
    let (mut entries, _) = reply::entries(v, "XREVRANGE")?;
    entries.reverse();
    Ok(entries)
}

/// The IDs of the oldest and the newest of the last `n` entries (`None`
/// for an empty stream or `n = 0`). Pages backwards 1000 entries at a
/// time and keeps none of them, so memory stays bounded for any `n`.
pub async fn last_span(
    connector: &Connector,
    stream: &StreamKey,
    n: u64,
) -> Result<Option<(StreamId, StreamId)>> {
    const PAGE: u64 = 1000;
    let mut conn = connector.shared();
    let mut end = "+".to_string();
    let mut left = n;
    let mut span: Option<(StreamId, StreamId)> = None;
    while left > 0 {
        let count = left.min(PAGE);
        let r: redis::RedisResult<Value> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg(&end)
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await;
        let v = match r {
            Ok(v) => v,
            Err(e) => return Err(explain::explain(&mut conn, stream, "XREVRANGE", e).await),
        };
        let (page, _) = reply::entries(v, "XREVRANGE")?;
        let (Some(newest), Some(oldest)) = (page.first(), page.last()) else {
            break;
        };
        span = Some((oldest.id, span.map_or(newest.id, |(_, last)| last)));
        left -= page.len() as u64;
        if (page.len() as u64) < count {
            break;
        }
        // Exclusive range start (Redis ≥ 6.2).
        end = format!("({}", oldest.id);
    }
    Ok(span)
}

/// How many entries have IDs in `[first, last]`, and the IDs of the first
/// and last of them. Pages through the range (10 000 entries a page);
/// Redis has no command that counts a stream range.
pub async fn span(
    connector: &Connector,
    stream: &StreamKey,
    first: StreamId,
    last: StreamId,
) -> Result<(u64, Option<(StreamId, StreamId)>)> {
    const PAGE: usize = 10_000;
    let mut n = 0u64;
    let mut ends: Option<(StreamId, StreamId)> = None;
    let mut start = first;
    while start <= last {
        let page = range(connector, stream, start, last, PAGE).await?;
        let (Some(a), Some(b)) = (page.first(), page.last()) else {
            break;
        };
        n += page.len() as u64;
        ends = Some((ends.map_or(a.id, |(f, _)| f), b.id));
        if page.len() < PAGE {
            break;
        }
        start = b.id.next();
    }
    Ok((n, ends))
}

/// Entries with IDs in `[start, end]`, at most `count`, oldest first.
pub async fn range(
    connector: &Connector,
    stream: &StreamKey,
    start: StreamId,
    end: StreamId,
    count: usize,
) -> Result<Vec<Entry>> {
    let mut conn = connector.shared();
    let end_arg = if end == StreamId::MAX {
        "+".to_string()
    } else {
        end.to_string()
    };
    let r: redis::RedisResult<Value> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end_arg)
        .arg("COUNT")
        .arg(count)
        .query_async(&mut conn)
        .await;
    match r {
        Ok(v) => Ok(reply::entries(v, "XRANGE")?.0),
        Err(e) => Err(explain::explain(&mut conn, stream, "XRANGE", e).await),
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("streams", &self.streams)
            .field("after", &self.after)
            .finish()
    }
}
