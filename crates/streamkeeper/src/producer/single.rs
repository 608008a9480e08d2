//! [`Producer`]: appends to one stream in chunks ([`AppendChunk`]), each
//! written in one step, confirmed by `WAIT` on the node that took it when
//! asked, and sent again through a failover until confirmed.
//!
//! Durability: Redis replicates asynchronously, so an acknowledged XADD
//! can be lost when a replica is promoted before it received it (at most
//! the promotion → `+switch-master` window, about a second of writes, plus
//! what the replica lagged behind). With [`Wait`], a chunk is reported
//! only once `n` replicas confirmed it; a chunk that fewer confirmed (the
//! master was being deposed, or a replica lags) is sent again — to the new
//! master after a failover — so an acknowledged write is never lost to a
//! failover or a killed master, at the price of possible duplicates
//! (at-least-once). With one replica and `Wait { replicas: 1 }` the
//! promoted replica always has every reported entry.
//!
//! On a cluster a chunk and its `WAIT` go over one connection of their own
//! to the slot's primary (a keyless `WAIT` routed by the cluster client
//! could be answered by another node), and after a failover's `MOVED` the
//! chunks follow the node it names at once: redis-rs's slot map can stay
//! stale for seconds.

use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::batched::{BatchOptions, BatchedProducer};
use super::chunk::{self, AppendChunk, Cap, EntryRef, NewEntry, SendError, Wait, PIPELINE_CHUNK};
use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::types::{Bytes, Entry, StreamId, StreamKey};

/// Appends entries to one stream.
///
/// ```no_run
/// # async fn f(redis: streamkeeper::Connector) -> streamkeeper::Result<()> {
/// use streamkeeper::{fields, Producer, StreamKey};
/// let producer = Producer::new(&redis, StreamKey::new("orders")?);
/// let id = producer.send(&fields([("sku", "a-1"), ("qty", "2")])).await?;
/// let ids = producer.send_batch(&[fields([("n", "1")]), fields([("n", "2")])]).await?;
/// assert!(id < ids[0] && ids[0] < ids[1]);
/// # Ok(()) }
/// ```
///
/// Clones share one pinned node connection (on a cluster).
#[derive(Debug, Clone)]
pub struct Producer {
    connector: Connector,
    stream: StreamKey,
    cap: Option<Cap>,
    wait: Option<Wait>,
    trace: crate::trace::TraceSource,
    pinned: Pinned,
}

/// On a cluster: the connection of its own to the node that serves the
/// stream's slot (found from `CLUSTER NODES`, or named by a `MOVED`), kept
/// until it fails or redirects.
#[derive(Clone, Default)]
struct Pinned(Arc<Mutex<Option<MultiplexedConnection>>>);

impl std::fmt::Debug for Pinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pinned")
    }
}

impl Pinned {
    fn get(&self) -> Option<MultiplexedConnection> {
        self.0.lock().ok().and_then(|p| p.clone())
    }

    fn set(&self, node: Option<MultiplexedConnection>) {
        if let Ok(mut p) = self.0.lock() {
            *p = node;
        }
    }
}

impl Producer {
    /// A producer for `stream` on the connector's shared connection.
    pub fn new(connector: &Connector, stream: StreamKey) -> Self {
        Producer {
            connector: connector.clone(),
            stream,
            cap: None,
            wait: None,
            trace: crate::trace::TraceSource::Off,
            pinned: Pinned::default(),
        }
    }

    /// Caps the stream on every append.
    pub fn with_cap(mut self, cap: Cap) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Caps the stream at about `maxlen` entries when `Some`.
    pub fn with_maxlen(mut self, maxlen: Option<u64>) -> Self {
        self.cap = maxlen.map(Cap::MaxLen);
        self
    }

    /// Requires `WAIT replicas timeout` after each chunk. A chunk that
    /// reached fewer replicas is never reported: it is sent again (after
    /// re-resolving the master) until confirmed, and fails with
    /// [`Error::GaveUp`] (cause: not replicated) after the connector's
    /// `reconnect_timeout`. Resent chunks may leave duplicates.
    pub fn with_wait(mut self, wait: Wait) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Writes a W3C `traceparent` field into every entry that has none
    /// (docs/design.md §11), so consumers continue the trace: a fixed
    /// context, or the caller's current OpenTelemetry span (feature
    /// `otel`).
    ///
    /// ```no_run
    /// # async fn f(redis: streamkeeper::Connector, s: streamkeeper::StreamKey) -> streamkeeper::Result<()> {
    /// use streamkeeper::trace::{TraceParent, TraceSource};
    /// let caller: TraceParent = std::env::var("TRACEPARENT").unwrap_or_default().parse().unwrap_or(TraceParent::new_root(true));
    /// let p = streamkeeper::Producer::new(&redis, s).with_trace(TraceSource::Fixed(caller));
    /// p.send(&streamkeeper::fields([("k", "v")])).await?;
    /// # Ok(()) }
    /// ```
    pub fn with_trace(mut self, trace: crate::trace::TraceSource) -> Self {
        self.trace = trace;
        self
    }

    /// The stream this producer appends to.
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// Appends one entry and returns its ID.
    pub async fn send(&self, fields: &[(Bytes, Bytes)]) -> Result<StreamId> {
        let ids = self.send_batch(&[fields]).await?;
        ids.into_iter().next().ok_or(Error::Protocol {
            command: "XADD",
            detail: "no id returned".into(),
        })
    }

    /// Appends a serde value as JSON in the `data` field.
    pub async fn send_json<T: Serialize>(&self, value: &T) -> Result<StreamId> {
        self.send(&Entry::data_fields(value)?).await
    }

    /// Appends entries in chunks of up to [`PIPELINE_CHUNK`], each written
    /// in one step; IDs come back in input order. When the server refuses
    /// part way (`OOM`, say) the error is [`Error::PartlyWritten`] with
    /// the IDs written before it (or the refusal itself when nothing was).
    pub async fn send_batch<F: AsRef<[(Bytes, Bytes)]> + Sync>(
        &self,
        batch: &[F],
    ) -> Result<Vec<StreamId>> {
        if batch.iter().any(|f| f.as_ref().is_empty()) {
            return Err(Error::InvalidInput(
                "an entry needs at least one field".into(),
            ));
        }
        let entries: Vec<EntryRef<'_>> = batch.iter().map(|f| (None, f.as_ref())).collect();
        self.write(entries).await
    }

    /// Appends entries with their own IDs (`None`: the server picks), as
    /// `restore` does; otherwise as [`send_batch`](Self::send_batch). An
    /// ID not above the stream's last is the server's refusal of that
    /// entry.
    pub async fn append(&self, entries: &[NewEntry]) -> Result<Vec<StreamId>> {
        let entries: Vec<EntryRef<'_>> = entries
            .iter()
            .map(|(id, fields)| (*id, fields.as_slice()))
            .collect();
        self.write(entries).await
    }

    async fn write(&self, entries: Vec<EntryRef<'_>>) -> Result<Vec<StreamId>> {
        // With a trace context, entries without one get a copy that has it.
        let traced: Vec<super::chunk::NewEntry>;
        let entries = match self.trace.now() {
            None => entries,
            Some(t) => {
                let value: Bytes = t.to_string().into_bytes();
                traced = entries
                    .iter()
                    .map(|(id, fields)| {
                        let mut f = fields.to_vec();
                        if !f
                            .iter()
                            .any(|(k, _)| k.as_slice() == crate::trace::FIELD.as_bytes())
                        {
                            f.push((crate::trace::FIELD.as_bytes().to_vec(), value.clone()));
                        }
                        (*id, f)
                    })
                    .collect();
                traced.iter().map(|(id, f)| (*id, f.as_slice())).collect()
            }
        };
        let mut ids = Vec::with_capacity(entries.len());
        let mut rest = entries;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(PIPELINE_CHUNK));
            let written = self
                .write_chunk(AppendChunk::new(&self.stream, self.cap, rest))
                .await;
            rest = tail;
            match written {
                Ok(chunk::Outcome { ids: got, refused }) => {
                    crate::metrics::produced(got.len());
                    ids.extend(got);
                    if let Some(e) = refused {
                        let mut conn = self.connector.shared();
                        let cause = chunk::explain(&mut conn, &self.stream, e).await;
                        return Err(Error::partly_written(ids, cause));
                    }
                }
                Err(e) => return Err(Error::partly_written(ids, e)),
            }
        }
        Ok(ids)
    }

    /// Writes one chunk: through a failover it is sent again to the new
    /// master (an XADD whose reply was lost, or that the replicas did not
    /// confirm in time, may then be appended twice: at-least-once, never
    /// lost).
    async fn write_chunk(&self, chunk: AppendChunk<'_>) -> Result<chunk::Outcome> {
        let (stream, wait, redis, pinned, chunk) = (
            &self.stream,
            self.wait,
            &self.connector,
            &self.pinned,
            &chunk,
        );
        let replies = redis
            .retrying("XADD", |conn| async move {
                redis.writable().await;
                let mut node = pinned.get();
                if node.is_none() {
                    node = primary_connection(redis, stream).await;
                    pinned.set(node.clone());
                }
                let sent = match node {
                    Some(mut node) => chunk::send_confirmed(&mut node, chunk, wait).await,
                    None => {
                        let mut conn = conn;
                        chunk::send_confirmed(&mut conn, chunk, wait).await
                    }
                };
                match sent {
                    Ok(replies) => Ok(replies),
                    Err(SendError::Redis(e)) => {
                        if let Some(addr) = crate::error::redirected_to(&e) {
                            tracing::info!(%stream, node = %addr, "the slot moved (failover); sending to its new primary");
                            pinned.set(redis.node_connection(&addr).await.ok());
                        } else if e.is_io_error()
                            || e.is_timeout()
                            || e.is_connection_dropped()
                            || e.is_connection_refusal()
                        {
                            // The pinned node is gone: back to the slot map.
                            pinned.set(None);
                        }
                        let mut conn = redis.shared();
                        Err(chunk::explain(&mut conn, stream, e).await)
                    }
                    Err(SendError::Wait(e)) => {
                        if crate::error::is_noperm(&e) {
                            return Err(Error::redis("WAIT", e));
                        }
                        // The chunk went through but cannot be confirmed
                        // (the node died or is a replica now): not
                        // reported, sent again through the slot map.
                        tracing::warn!(%stream, error = %e,
                            "WAIT failed; the chunk is not confirmed, sending it again");
                        pinned.set(None);
                        Err(Error::NotReplicated {
                            wanted: wait.map_or(1, |w| w.replicas),
                            got: 0,
                        })
                    }
                    Err(SendError::NotReplicated { wanted, got }) => {
                        tracing::warn!(%stream, wanted, got,
                            "chunk not confirmed by enough replicas; sending it again");
                        Err(Error::NotReplicated { wanted, got })
                    }
                }
            })
            .await?;
        chunk::outcome(replies)
    }

    /// Turns this producer into a background batcher; see [`BatchedProducer`].
    pub fn batched(self, options: BatchOptions) -> BatchedProducer {
        BatchedProducer::start(self, options)
    }
}

/// On a cluster: a connection of its own to the primary serving
/// `stream`'s slot, as `CLUSTER NODES` says now; `None` on a single server
/// or when that cannot be found out (then the cluster client routes).
async fn primary_connection(
    redis: &Connector,
    stream: &StreamKey,
) -> Option<MultiplexedConnection> {
    let nodes = redis.cluster_nodes().await.ok()??;
    let slot = crate::keys::key_slot(stream.as_str());
    let primary = nodes
        .iter()
        .find(|n| n.primary && !n.failed() && n.serves(slot))?;
    redis.node_connection(&primary.addr).await.ok()
}
