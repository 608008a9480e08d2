//! One chunk of appends, written once: the pipeline of XADDs that writes
//! it ([`AppendChunk`]), the `WAIT` that confirms it on the
//! node that took it, and the parsing of its per-entry replies. The one
//! write path of [`Producer`](super::Producer), and through it of the
//! CLI's `produce` and `restore` and of [`ShardedProducer`](crate::shard::ShardedProducer).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::conn::SharedConn;
use crate::error::{Error, Result};
use crate::types::{Bytes, StreamId, StreamKey};

/// How many entries go into one chunk (one script call) at most.
pub const PIPELINE_CHUNK: usize = 1000;

/// One entry to append: its ID (`None`: `*`, the server picks) and fields.
pub type NewEntry = (Option<StreamId>, Vec<(Bytes, Bytes)>);

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

/// Durability requirement for a chunk: `WAIT replicas timeout` on the
/// node that took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    /// Replicas that must acknowledge the chunk.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

/// A chunk of XADDs to one stream sent as one pipeline: one round trip,
/// needing only `XADD` (a least-privilege user without `MULTI` or
/// scripts can run it, docs/design.md §6). Its reply has one value per
/// entry: the new ID, or the server's error for that entry (the others
/// still ran), as `EXEC`'s does. It is not a transaction: another
/// client's entries may land between its own (which only matters for
/// explicit IDs), and a failover or slot move part way is a
/// [`retryable`](crate::Error::is_retryable) error of the whole chunk,
/// sent again (at least once, never lost).
#[derive(Debug, Clone)]
pub struct AppendChunk<'a> {
    stream: &'a StreamKey,
    cap: Option<Cap>,
    entries: Vec<EntryRef<'a>>,
}

/// An entry of a chunk, borrowed: its ID (`None`: `*`) and fields.
pub type EntryRef<'a> = (Option<StreamId>, &'a [(Bytes, Bytes)]);

impl<'a> AppendChunk<'a> {
    /// A chunk appending `entries` (at most [`PIPELINE_CHUNK`]) to
    /// `stream`, capping it by `cap`.
    pub fn new(stream: &'a StreamKey, cap: Option<Cap>, entries: Vec<EntryRef<'a>>) -> Self {
        AppendChunk {
            stream,
            cap,
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
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (id, fields) in &self.entries {
            let xadd = pipe.cmd("XADD").arg(self.stream);
            match self.cap {
                Some(Cap::MaxLen(n)) => xadd.arg("MAXLEN").arg("~").arg(n),
                Some(Cap::MinId(id)) => xadd.arg("MINID").arg("~").arg(id.to_string()),
                None => xadd,
            };
            match id {
                Some(id) => xadd.arg(id.to_string()),
                None => xadd.arg("*"),
            };
            for (k, v) in fields.iter() {
                xadd.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        // A redirect, a demoted master or a slot in motion refuses the
        // rest of the chunk (and may have let a part through): the whole
        // chunk is an error to send again, never a refused entry.
        for v in &replies {
            if let Value::ServerError(e) = v {
                let e = redis::RedisError::from(e.clone());
                if crate::error::redis_is_retryable(&e) {
                    return Err(e);
                }
            }
        }
        Ok(replies)
    }
}

/// Why one send of a chunk failed.
pub(crate) enum SendError {
    /// The call failed as a whole (connection, `MOVED`, `NOPERM`, …).
    Redis(redis::RedisError),
    /// The chunk went through; `WAIT` failed.
    Wait(redis::RedisError),
    /// The chunk went through; fewer replicas than wanted confirmed it.
    NotReplicated { wanted: u32, got: u32 },
}

/// Sends `chunk` on `conn` and, with `wait`, `WAIT` on the same node.
pub(crate) async fn send_confirmed<C: WaitOn>(
    conn: &mut C,
    chunk: &AppendChunk<'_>,
    wait: Option<Wait>,
) -> std::result::Result<Vec<Value>, SendError> {
    let replies: Vec<Value> = chunk.send(conn).await.map_err(SendError::Redis)?;
    if let Some(w) = wait {
        // What went through needs confirming: a chunk refused part way
        // (a shard sealed by a resize refuses the rest of it) is reported
        // with the IDs written before the refusal, confirmed like any.
        if replies.iter().any(|v| !matches!(v, Value::ServerError(_))) {
            let got = conn
                .wait_on(chunk.stream.as_str(), w.replicas, w.timeout)
                .await
                .map_err(SendError::Wait)?;
            if got < w.replicas {
                return Err(SendError::NotReplicated {
                    wanted: w.replicas,
                    got,
                });
            }
        }
    }
    Ok(replies)
}

/// What a written chunk's reply says: the IDs of the entries written, in
/// order, and the first refusal (the entries after it may have been
/// written too: as in `EXEC`, one refusal does not stop the others).
pub(crate) struct Outcome {
    pub(crate) ids: Vec<StreamId>,
    pub(crate) refused: Option<redis::RedisError>,
}

/// Reads the per-entry replies of a chunk.
pub(crate) fn outcome(replies: Vec<Value>) -> Result<Outcome> {
    let mut ids = Vec::with_capacity(replies.len());
    let mut refused = None;
    for v in replies {
        match v {
            Value::ServerError(e) => {
                if refused.is_none() {
                    refused = Some(redis::RedisError::from(e));
                }
            }
            other => ids.push(crate::reply::id_reply(other, "XADD")?),
        }
    }
    Ok(Outcome { ids, refused })
}

/// `WAIT` on the node that took the writes: a node connection sends it
/// as is, the cluster connection routes it to the key's primary.
pub(crate) trait WaitOn: redis::aio::ConnectionLike + Send {
    async fn wait_on(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32>;
}

impl WaitOn for MultiplexedConnection {
    async fn wait_on(
        &mut self,
        _key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .query_async(self)
            .await
    }
}

impl WaitOn for SharedConn {
    async fn wait_on(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        self.wait_replicas(key, replicas, timeout).await
    }
}

/// The error a refused call or entry becomes (`WRONGTYPE` named with the
/// key's real type).
pub(crate) async fn explain(
    conn: &mut SharedConn,
    stream: &StreamKey,
    e: redis::RedisError,
) -> Error {
    crate::explain::explain(conn, stream, "XADD", e).await
}
