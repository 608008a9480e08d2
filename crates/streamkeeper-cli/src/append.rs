//! Appending many entries for `produce` and `restore`: chunks of up to
//! [`PIPELINE_CHUNK`] XADDs, each chunk in one script ([`AppendChunk`]:
//! as MULTI/EXEC, without needing MULTI), so a chunk is never interleaved
//! with other writes. When the server refuses part way (e.g.
//! `OOM` under `maxmemory`), the error says exactly what was written:
//! how many entries and the last ID. Through a failover a chunk is sent
//! again to the new master (it may then be written twice, never lost), and
//! with `--wait N` a chunk counts as written only once N replicas
//! confirmed it (else it is sent again, as the library's `Producer` does).

use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::Value;
use streamkeeper::producer::{AppendChunk, PIPELINE_CHUNK};
use streamkeeper::{Connector, StreamId, StreamKey, Wait};

pub use streamkeeper::producer::NewEntry;

/// Appends to one stream and counts what was written.
pub struct Appender {
    redis: Connector,
    stream: StreamKey,
    maxlen: Option<u64>,
    wait: Option<Wait>,
    written: u64,
    last: Option<StreamId>,
    /// When one of several ([`Appenders`]): entries written to the others,
    /// and how many streams there are, for the error message.
    elsewhere: Option<(u64, usize)>,
    /// On a cluster, after a failover moved the stream's slot: a
    /// connection of its own to the node a `MOVED` named. redis-rs's slot
    /// map can stay stale for seconds after a failover; the chunks go to
    /// this node until it fails or redirects again.
    pinned: std::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Appender {
    /// An appender to `stream`, capping it at about `maxlen` entries.
    pub fn new(redis: &Connector, stream: StreamKey, maxlen: Option<u64>) -> Self {
        Appender {
            redis: redis.clone(),
            stream,
            maxlen,
            wait: None,
            written: 0,
            last: None,
            elsewhere: None,
            pinned: std::sync::Mutex::new(None),
        }
    }

    /// Requires `WAIT replicas timeout` after each chunk (see [`Wait`]).
    pub fn with_wait(mut self, wait: Option<Wait>) -> Self {
        self.wait = wait;
        self
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk` (at most [`PIPELINE_CHUNK`] entries) atomically;
    /// returns the new IDs. `total` (if known) is how many entries the
    /// whole command meant to write, for the error message.
    pub async fn append(
        &mut self,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        debug_assert!(chunk.len() <= PIPELINE_CHUNK);
        let pipe = AppendChunk::new(self.stream.clone(), self.maxlen, chunk.to_vec());
        let (stream, wait, chunk_call, redis, pinned) =
            (&self.stream, self.wait, &pipe, &self.redis, &self.pinned);
        let sent = self
            .redis
            .retrying("XADD", |conn| async move {
                redis.writable().await;
                let mut node = pinned.lock().ok().and_then(|p| p.clone());
                if node.is_none() {
                    // On a cluster the chunk and its WAIT go over one
                    // connection to the slot's primary: routed separately,
                    // a WAIT could be answered by another node.
                    node = primary_connection(redis, stream).await;
                    if let Ok(mut p) = pinned.lock() {
                        p.clone_from(&node);
                    }
                }
                let attempt = match node {
                    Some(mut node) => send_chunk(&mut node, stream, chunk_call, wait).await,
                    None => {
                        let mut conn = conn;
                        send_chunk(&mut conn, stream, chunk_call, wait).await
                    }
                };
                match attempt {
                    Err(ChunkError::Redis(e)) => {
                        let moved = streamkeeper::error::redirected_to(&e);
                        let lost = e.is_io_error()
                            || e.is_timeout()
                            || e.is_connection_dropped()
                            || e.is_connection_refusal();
                        if let Some(addr) = moved {
                            tracing::info!(%stream, node = %addr, "the slot moved (failover); sending to its new primary");
                            let node = redis.node_connection(&addr).await.ok();
                            if let Ok(mut p) = pinned.lock() {
                                *p = node;
                            }
                        } else if lost {
                            // The pinned node is gone: back to the slot map.
                            if let Ok(mut p) = pinned.lock() {
                                *p = None;
                            }
                        }
                        Err(streamkeeper::Error::redis(format!("XADD {stream}"), e))
                    }
                    Err(ChunkError::Wait(e)) => {
                        if streamkeeper::error::error_code(&e).as_deref() == Some("NOPERM") {
                            return Err(streamkeeper::Error::redis("WAIT", e));
                        }
                        // The chunk went through but cannot be confirmed (the
                        // node died or is a replica now): not reported, sent
                        // again through the slot map.
                        tracing::warn!(%stream, error = %e,
                            "WAIT failed; the chunk is not confirmed, sending it again");
                        if let Ok(mut p) = pinned.lock() {
                            *p = None;
                        }
                        Err(streamkeeper::Error::NotReplicated {
                            wanted: wait.map_or(1, |w| w.replicas),
                            got: 0,
                        })
                    }
                    Err(ChunkError::NotReplicated { wanted, got }) => {
                        tracing::warn!(%stream, wanted, got,
                            "chunk not confirmed by enough replicas; sending it again");
                        Err(streamkeeper::Error::NotReplicated { wanted, got })
                    }
                    Ok(replies) => Ok(replies),
                }
            })
            .await;
        let replies = match sent {
            Ok(r) => r,
            Err(e) => {
                // After retrying (a failover, replicas that never confirmed)
                // the last chunk may have been written, unconfirmed.
                let unsure = e.is_retryable() || matches!(e, streamkeeper::Error::GaveUp { .. });
                return Err(self.stopped(&e.to_string(), total, unsure));
            }
        };
        // Inside the chunk an XADD can still fail on its own (the others
        // run): count every success, and report the first failure.
        let mut ids = Vec::with_capacity(chunk.len());
        let mut failure: Option<String> = None;
        for v in replies {
            match v {
                Value::BulkString(b) => ids.push(StreamId::from_bytes(&b)?),
                Value::SimpleString(s) => ids.push(s.parse()?),
                Value::ServerError(e) => {
                    failure.get_or_insert_with(|| match e.details() {
                        Some(d) => format!("{} {d}", e.code()),
                        None => e.code().to_string(),
                    });
                }
                other => {
                    failure.get_or_insert_with(|| format!("unexpected reply {other:?}"));
                }
            }
        }
        self.written += ids.len() as u64;
        self.last = ids.last().copied().or(self.last);
        match failure {
            Some(why) => Err(self.stopped(&why, total, false)),
            None => Ok(ids),
        }
    }

    fn stopped(&self, why: &str, total: Option<u64>, unsure: bool) -> anyhow::Error {
        let last = self
            .last
            .map_or(String::new(), |l| format!(" (last ID {l})"));
        let (written, across) = match self.elsewhere {
            Some((others, streams)) => (
                self.written + others,
                format!(" in all, across {streams} streams"),
            ),
            None => (self.written, String::new()),
        };
        let rest = total.map_or("the rest were".to_string(), |t| {
            format!("the other {} were", t.saturating_sub(written))
        });
        let not = if unsure {
            "not confirmed (the chunk in flight may have been written, unconfirmed)"
        } else {
            "not"
        };
        anyhow::anyhow!(
            "writing to {} stopped: {why}; {written} entries were written{across}{last}, {rest} {not}",
            self.stream
        )
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
    let slot = streamkeeper::keys::key_slot(stream.as_str());
    let primary = nodes
        .iter()
        .find(|n| n.primary && !n.failed() && n.serves(slot))?;
    redis.node_connection(&primary.addr).await.ok()
}

/// Why one send of a chunk failed.
enum ChunkError {
    /// The transaction failed (connection, `MOVED`, `OOM`, …).
    Redis(redis::RedisError),
    /// The chunk went through; `WAIT` failed.
    Wait(redis::RedisError),
    /// The chunk went through; fewer replicas than wanted confirmed it.
    NotReplicated { wanted: u32, got: u32 },
}

/// Sends a chunk ([`AppendChunk`]) on `conn` and, with `wait`,
/// `WAIT` on the same node connection.
async fn send_chunk<C: WaitOn>(
    conn: &mut C,
    stream: &StreamKey,
    chunk: &AppendChunk,
    wait: Option<Wait>,
) -> Result<Vec<Value>, ChunkError> {
    let replies: Vec<Value> = chunk.send(conn).await.map_err(ChunkError::Redis)?;
    if let Some(w) = wait {
        // Only a chunk that went through whole needs confirming.
        if replies.iter().all(|v| !matches!(v, Value::ServerError(_))) {
            let got = conn
                .wait_on(stream.as_str(), w.replicas, w.timeout)
                .await
                .map_err(ChunkError::Wait)?;
            if got < w.replicas {
                return Err(ChunkError::NotReplicated {
                    wanted: w.replicas,
                    got,
                });
            }
        }
    }
    Ok(replies)
}

/// `WAIT` on the node that took the writes: a node connection sends it
/// as is, the cluster connection routes it to the key's primary.
trait WaitOn: redis::aio::ConnectionLike + Send {
    async fn wait_on(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<u32>;
}

impl WaitOn for MultiplexedConnection {
    async fn wait_on(
        &mut self,
        _key: &str,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<u32> {
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(self)
            .await
    }
}

impl WaitOn for streamkeeper::SharedConn {
    async fn wait_on(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> redis::RedisResult<u32> {
        self.wait_replicas(key, replicas, timeout).await
    }
}

/// Fails with a one-line message when `stream` exists and is not a stream
/// (checked before anything is written). A user not granted `TYPE` gets
/// no check, not a refusal: the `XADD`'s own `WRONGTYPE` still protects a
/// key of another type (DESIGN.md §6, least privilege).
pub async fn check_is_stream(redis: &Connector, stream: &StreamKey) -> anyhow::Result<()> {
    let mut conn = redis.shared();
    let kind: String = match redis::cmd("TYPE").arg(stream).query_async(&mut conn).await {
        Ok(kind) => kind,
        Err(e) if streamkeeper::error::error_code(&e).as_deref() == Some("NOPERM") => {
            tracing::debug!(%stream, "TYPE not granted; the key's type is unknown, XADD checks it");
            return Ok(());
        }
        Err(e) => {
            return Err(streamkeeper::Error::redis(format!("TYPE {stream}"), e))
                .context("checking the key")
        }
    };
    if kind != "stream" && kind != "none" {
        return Err(streamkeeper::Error::WrongType {
            key: stream.to_string(),
            actual: kind,
        }
        .into());
    }
    Ok(())
}

/// [`check_is_stream`] for every key, before a command writes to any of
/// them (the shards of a sharded stream): one of the wrong type refuses
/// the command with nothing written.
pub async fn check_all_streams(redis: &Connector, keys: &[StreamKey]) -> anyhow::Result<()> {
    for k in keys {
        check_is_stream(redis, k).await?;
    }
    Ok(())
}

/// One [`Appender`] per target stream (the shards of a sharded stream, or
/// just the one stream): every target's type is checked before anything
/// is written, and when one stops, the error counts what was written to
/// all of them, not only to that one.
pub struct Appenders {
    appenders: Vec<Appender>,
}

impl Appenders {
    /// Appenders for `targets`, after checking none is a key of another
    /// type (`WRONGTYPE` would stop the writes part way).
    pub async fn open(
        redis: &Connector,
        targets: &[StreamKey],
        maxlen: Option<u64>,
        wait: Option<Wait>,
    ) -> anyhow::Result<Self> {
        for t in targets {
            check_is_stream(redis, t).await?;
        }
        Ok(Appenders {
            appenders: targets
                .iter()
                .map(|t| Appender::new(redis, t.clone(), maxlen).with_wait(wait))
                .collect(),
        })
    }

    /// Entries written to all targets so far.
    pub fn written(&self) -> u64 {
        self.appenders.iter().map(Appender::written).sum()
    }

    /// Appends `chunk` to target `t` (see [`Appender::append`]).
    pub async fn append(
        &mut self,
        t: usize,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        if self.appenders.len() > 1 {
            let others = self.written() - self.appenders[t].written();
            self.appenders[t].elsewhere = Some((others, self.appenders.len()));
        }
        self.appenders[t].append(chunk, total).await
    }
}
