//! Appending entries: single sends, pipelined batches, and a background
//! batcher that coalesces concurrent sends into pipelines.
//!
//! Every XADD may carry an approximate cap (`MAXLEN ~` / `MINID ~`), and a
//! batch may end with `WAIT n timeout`.
//!
//! Durability: Redis replicates asynchronously, so an acknowledged XADD
//! can be lost when a replica is promoted before it received it (at most
//! the promotion → `+switch-master` window, about a second of writes, plus
//! what the replica lagged behind). With [`Wait`], a batch is reported
//! only once `n` replicas confirmed it; a batch that fewer confirmed (the
//! master was being deposed, or a replica lags) is sent again — to the new
//! master after a failover — so an acknowledged write is never lost to a
//! failover or a killed master, at the price of possible duplicates
//! (at-least-once). With one replica and `Wait { replicas: 1 }` the
//! promoted replica always has every reported entry.

use std::time::Duration;

use redis::Value;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::reply;
use crate::types::{Bytes, Entry, StreamId, StreamKey};

/// How many XADDs go into one pipeline at most.
pub const PIPELINE_CHUNK: usize = 1000;

/// One entry to append: its ID (`None`: `*`, the server picks) and fields.
pub type NewEntry = (Option<StreamId>, Vec<(Bytes, Bytes)>);

/// A chunk of XADDs to one stream sent as one script (`lua/append.lua`):
/// written in one step like `MULTI`/`EXEC`, but needing only stream
/// commands and `EVALSHA` (a user not granted `MULTI` can run it,
/// DESIGN.md §6). Its reply has one value per entry: the new ID, or the
/// server's error for that entry (the others still ran), as `EXEC`'s does.
#[derive(Debug, Clone)]
pub struct AppendChunk {
    stream: StreamKey,
    maxlen: Option<u64>,
    entries: Vec<NewEntry>,
}

impl AppendChunk {
    /// A chunk appending `entries` to `stream`, capping it at about
    /// `maxlen` entries.
    pub fn new(stream: StreamKey, maxlen: Option<u64>, entries: Vec<NewEntry>) -> Self {
        AppendChunk {
            stream,
            maxlen,
            entries,
        }
    }

    /// Sends the chunk; the reply holds one value per entry (an ID or a
    /// `Value::ServerError`). An error of the whole call (a connection
    /// lost, `MOVED`, `NOPERM`) is returned as is.
    pub async fn send<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<Vec<Value>> {
        let mut call = crate::scripts::APPEND.key(self.stream.as_str());
        call.arg(self.maxlen.map_or(String::new(), |n| n.to_string()));
        for (id, fields) in &self.entries {
            match id {
                Some(id) => call.arg(id.to_string()),
                None => call.arg("*"),
            };
            call.arg(fields.len());
            for (k, v) in fields {
                call.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        call.invoke_async(conn).await
    }
}

/// An approximate cap applied by every XADD (`~`: Redis trims whole
/// macro-nodes, which is much cheaper than exact trimming).
///
/// A cap deletes entries whether or not consumer groups have processed
/// them; prefer the janitor for ack-aware trimming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// Keep about this many entries (`MAXLEN ~ n`).
    MaxLen(u64),
    /// Drop entries below this ID (`MINID ~ id`).
    MinId(StreamId),
}

/// Durability requirement for a batch: `WAIT replicas timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Replicas that must acknowledge the batch.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

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
#[derive(Debug, Clone)]
pub struct Producer {
    connector: Connector,
    stream: StreamKey,
    cap: Option<Cap>,
    wait: Option<Wait>,
}

impl Producer {
    /// A producer for `stream` on the connector's shared connection.
    pub fn new(connector: &Connector, stream: StreamKey) -> Self {
        Producer {
            connector: connector.clone(),
            stream,
            cap: None,
            wait: None,
        }
    }

    /// Caps the stream on every append.
    pub fn with_cap(mut self, cap: Cap) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Requires `WAIT replicas timeout` after each batch. A batch that
    /// reached fewer replicas is never reported: it is sent again (after
    /// re-resolving the master) until confirmed, and fails with
    /// [`Error::GaveUp`] (cause: not replicated) after the connector's
    /// `reconnect_timeout`. Resent batches may leave duplicates.
    pub fn with_wait(mut self, wait: Wait) -> Self {
        self.wait = Some(wait);
        self
    }

    /// The stream this producer appends to.
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    fn xadd(&self, pipe: &mut redis::Pipeline, fields: &[(Bytes, Bytes)]) {
        let cmd = pipe.cmd("XADD").arg(&self.stream);
        match self.cap {
            Some(Cap::MaxLen(n)) => {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            Some(Cap::MinId(id)) => {
                cmd.arg("MINID").arg("~").arg(id);
            }
            None => {}
        }
        cmd.arg("*");
        for (k, v) in fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
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

    /// Appends entries in pipelines of up to [`PIPELINE_CHUNK`]; IDs come
    /// back in input order.
    pub async fn send_batch<F: AsRef<[(Bytes, Bytes)]> + Sync>(
        &self,
        batch: &[F],
    ) -> Result<Vec<StreamId>> {
        let mut ids = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(PIPELINE_CHUNK) {
            if chunk.iter().any(|f| f.as_ref().is_empty()) {
                return Err(Error::InvalidInput(
                    "an entry needs at least one field".into(),
                ));
            }
            let mut pipe = redis::pipe();
            for fields in chunk {
                self.xadd(&mut pipe, fields.as_ref());
            }
            if let Some(w) = self.wait {
                pipe.cmd("WAIT")
                    .arg(w.replicas)
                    .arg(u64::try_from(w.timeout.as_millis()).unwrap_or(u64::MAX));
            }
            // Through a failover the pipeline is sent again on the new
            // master: an XADD whose reply was lost (or that the replicas did
            // not confirm in time) may then be appended twice
            // (at-least-once production), never lost.
            let wait = self.wait;
            let n = chunk.len();
            let replies: Vec<Value> = self
                .connector
                .retrying("XADD", |mut conn| {
                    let pipe = &pipe;
                    let stream = &self.stream;
                    async move {
                        self.connector.writable().await;
                        let replies: Vec<Value> = match pipe.query_async(&mut conn).await {
                            Ok(r) => r,
                            Err(e) => {
                                return Err(
                                    crate::explain::explain(&mut conn, stream, "XADD", e).await
                                )
                            }
                        };
                        if let Some(w) = wait {
                            let got = match replies.get(n) {
                                Some(Value::Int(k)) => u32::try_from(*k).unwrap_or(0),
                                _ => 0,
                            };
                            if got < w.replicas {
                                tracing::warn!(%stream, wanted = w.replicas, got,
                                    "batch not confirmed by enough replicas; sending it again");
                                return Err(Error::NotReplicated {
                                    wanted: w.replicas,
                                    got,
                                });
                            }
                        }
                        Ok(replies)
                    }
                })
                .await?;
            let mut replies = replies.into_iter();
            for _ in chunk {
                let v = replies.next().ok_or(Error::Protocol {
                    command: "XADD",
                    detail: "short pipeline reply".into(),
                })?;
                ids.push(reply::id_reply(v, "XADD")?);
            }
            crate::metrics::produced(chunk.len());
        }
        Ok(ids)
    }

    /// Turns this producer into a background batcher; see [`BatchedProducer`].
    pub fn batched(self, options: BatchOptions) -> BatchedProducer {
        BatchedProducer::start(self, options)
    }
}

/// Settings of a [`BatchedProducer`].
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Most entries in one pipeline.
    pub max_batch: usize,
    /// How long the first entry of a batch may wait for company.
    pub linger: Duration,
    /// Most entries queued and not yet written; `send` waits when full
    /// (backpressure instead of unbounded memory).
    pub max_in_flight: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_batch: PIPELINE_CHUNK,
            linger: Duration::from_millis(1),
            max_in_flight: 10 * PIPELINE_CHUNK,
        }
    }
}

struct Request {
    fields: Vec<(Bytes, Bytes)>,
    reply: oneshot::Sender<Result<StreamId>>,
}

/// Coalesces concurrent sends from many tasks into pipelines.
///
/// ```no_run
/// # async fn f(p: streamkeeper::Producer) -> streamkeeper::Result<()> {
/// let batched = p.batched(Default::default());
/// let id = batched.send(streamkeeper::fields([("k", "v")])).await?;
/// batched.close().await; // flushes what is queued
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BatchedProducer {
    tx: mpsc::Sender<Request>,
    task: JoinHandle<()>,
}

impl BatchedProducer {
    fn start(producer: Producer, options: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.max_in_flight.max(1));
        let task = tokio::spawn(batch_loop(producer, options, rx));
        BatchedProducer { tx, task }
    }

    /// Queues one entry and waits for its ID. IDs follow the order in which
    /// `send` calls were queued.
    pub async fn send(&self, fields: Vec<(Bytes, Bytes)>) -> Result<StreamId> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { fields, reply })
            .await
            .map_err(|_| Error::Shutdown("batched producer"))?;
        rx.await.map_err(|_| Error::Shutdown("batched producer"))?
    }

    /// Writes everything queued, then stops the background task.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

async fn batch_loop(producer: Producer, options: BatchOptions, mut rx: mpsc::Receiver<Request>) {
    let max = options.max_batch.max(1);
    let mut batch: Vec<Request> = Vec::with_capacity(max);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        let deadline = tokio::time::Instant::now() + options.linger;
        while batch.len() < max {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
        let (fields, replies): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|r| (r.fields, r.reply)).unzip();
        match producer.send_batch(&fields).await {
            Ok(ids) => {
                for (reply, id) in replies.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                // Error is not Clone (it wraps sources): every send of the
                // batch gets the same error, shared.
                let retryable = e.is_retryable();
                let source = std::sync::Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Error::BatchFailed {
                        source: source.clone(),
                        retryable,
                    }));
                }
            }
        }
    }
}
