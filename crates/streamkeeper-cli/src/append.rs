//! Appending many entries for `produce` and `restore`: chunks of up to
//! [`PIPELINE_CHUNK`] XADDs, each chunk in one MULTI/EXEC, so a chunk is
//! written whole or not at all. When the server refuses part way (e.g.
//! `OOM` under `maxmemory`), the error says exactly what was written:
//! how many entries and the last ID. Through a failover a chunk is sent
//! again to the new master (it may then be written twice, never lost), and
//! with `--wait N` a chunk counts as written only once N replicas
//! confirmed it (else it is sent again, as the library's `Producer` does).

use anyhow::Context;
use redis::Value;
use streamkeeper::producer::PIPELINE_CHUNK;
use streamkeeper::types::Bytes;
use streamkeeper::{Connector, StreamId, StreamKey, Wait};

/// One entry to append: its ID (`None` = `*`, the server picks) and fields.
pub type NewEntry = (Option<StreamId>, Vec<(Bytes, Bytes)>);

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
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, fields) in chunk {
            let cmd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(n) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(n);
            }
            match id {
                Some(id) => cmd.arg(id),
                None => cmd.arg("*"),
            };
            for (k, v) in fields {
                cmd.arg(k.as_slice()).arg(v.as_slice());
            }
        }
        let (stream, wait, pipe, redis) = (&self.stream, self.wait, &pipe, &self.redis);
        let sent = self
            .redis
            .retrying("XADD", |mut conn| async move {
                redis.writable().await;
                let replies: Vec<Value> = pipe
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| streamkeeper::Error::redis(format!("XADD {stream}"), e))?;
                if let Some(w) = wait {
                    // Only a chunk that went through whole needs confirming.
                    if replies.iter().all(|v| !matches!(v, Value::ServerError(_))) {
                        let got: u32 = redis::cmd("WAIT")
                            .arg(w.replicas)
                            .arg(u64::try_from(w.timeout.as_millis()).unwrap_or(u64::MAX))
                            .query_async(&mut conn)
                            .await
                            .map_err(|e| streamkeeper::Error::redis("WAIT", e))?;
                        if got < w.replicas {
                            tracing::warn!(%stream, wanted = w.replicas, got,
                                "chunk not confirmed by enough replicas; sending it again");
                            return Err(streamkeeper::Error::NotReplicated {
                                wanted: w.replicas,
                                got,
                            });
                        }
                    }
                }
                Ok(replies)
            })
            .await;
        let replies = match sent {
            Ok(r) => r,
            Err(e) => return Err(self.stopped(&e.to_string(), total)),
        };
        // Inside EXEC a command can still fail on its own (the others
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
            Some(why) => Err(self.stopped(&why, total)),
            None => Ok(ids),
        }
    }

    fn stopped(&self, why: &str, total: Option<u64>) -> anyhow::Error {
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
        anyhow::anyhow!(
            "writing to {} stopped: {why}; {written} entries were written{across}{last}, {rest} not",
            self.stream
        )
    }
}

/// Fails with a one-line message when `stream` exists and is not a stream
/// (checked before anything is written).
pub async fn check_is_stream(redis: &Connector, stream: &StreamKey) -> anyhow::Result<()> {
    let mut conn = redis.shared();
    let kind: String = redis::cmd("TYPE")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis(format!("TYPE {stream}"), e))
        .context("checking the key")?;
    if kind != "stream" && kind != "none" {
        return Err(streamkeeper::Error::WrongType {
            key: stream.to_string(),
            actual: kind,
        }
        .into());
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
