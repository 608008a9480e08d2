//! Appending many entries for `produce` and `restore`, through the
//! library's [`Producer`] (chunks written in one step, `WAIT` on the node
//! that took them, failover and `MOVED` handling): this file only counts
//! what was written, across the streams of one command, so that when the
//! server refuses part way (e.g. `OOM` under `maxmemory`) the error says
//! exactly what was written: how many entries and the last ID.

use streamkeeper::{Connector, Producer, StreamId, StreamKey, Wait};

pub use streamkeeper::producer::NewEntry;

/// Appends to one stream and counts what was written.
pub struct Appender {
    producer: Producer,
    written: u64,
    last: Option<StreamId>,
    /// When one of several ([`Appenders`]): entries written to the others,
    /// and how many streams there are, for the error message.
    elsewhere: Option<(u64, usize)>,
}

impl Appender {
    /// An appender to `stream`, capping it at about `maxlen` entries.
    pub fn new(redis: &Connector, stream: StreamKey, maxlen: Option<u64>) -> Self {
        Self::of(Producer::new(redis, stream).with_maxlen(maxlen))
    }

    /// An appender writing through `producer`.
    pub fn of(producer: Producer) -> Self {
        Appender {
            producer,
            written: 0,
            last: None,
            elsewhere: None,
        }
    }

    /// Requires `WAIT replicas timeout` after each chunk (see [`Wait`]).
    pub fn with_wait(mut self, wait: Option<Wait>) -> Self {
        if let Some(w) = wait {
            self.producer = self.producer.with_wait(w);
        }
        self
    }

    /// Writes a `traceparent` into each entry (see [`streamkeeper::trace`]).
    pub fn with_trace(mut self, trace: streamkeeper::trace::TraceSource) -> Self {
        self.producer = self.producer.with_trace(trace);
        self
    }

    /// Entries written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk` (written in chunks of at most
    /// [`PIPELINE_CHUNK`](streamkeeper::producer::PIPELINE_CHUNK) entries,
    /// each atomically); returns the new IDs. `total` (if known) is how
    /// many entries the whole command meant to write, for the error
    /// message.
    pub async fn append(
        &mut self,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        match self.append_or_sealed(chunk, total).await? {
            (ids, false) => Ok(ids),
            (_, true) => Err(self.stopped(
                &streamkeeper::Error::ShardSealed {
                    stream: self.producer.stream().clone(),
                },
                total,
            )),
        }
    }

    /// [`append`](Self::append), but a stream sealed by a resize (a shard
    /// of an older layout generation) is not an error: the IDs written
    /// before the seal come back with `true`, and the caller sends the
    /// rest by the new layout.
    pub async fn append_or_sealed(
        &mut self,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<(Vec<StreamId>, bool)> {
        match self.producer.append(chunk).await {
            Ok(ids) => {
                self.count(&ids);
                Ok((ids, false))
            }
            Err(e) if e.is_sealed() => {
                let written = match e {
                    streamkeeper::Error::PartlyWritten { written, .. } => written,
                    _ => Vec::new(),
                };
                self.count(&written);
                Ok((written, true))
            }
            Err(streamkeeper::Error::PartlyWritten { written, cause }) => {
                self.count(&written);
                Err(self.stopped(&cause, total))
            }
            Err(e) => Err(self.stopped(&e, total)),
        }
    }

    fn count(&mut self, ids: &[StreamId]) {
        self.written += ids.len() as u64;
        self.last = ids.last().copied().or(self.last);
    }

    fn stopped(&self, cause: &streamkeeper::Error, total: Option<u64>) -> anyhow::Error {
        // After retrying (a failover, replicas that never confirmed) the
        // chunk in flight may have been written, unconfirmed.
        let unsure = cause.is_retryable() || matches!(cause, streamkeeper::Error::GaveUp { .. });
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
            "writing to {} stopped: {cause}; {written} entries were written{across}{last}, {rest} {not}",
            self.producer.stream()
        )
    }
}

/// Fails with a one-line message when `stream` exists and is not a stream
/// (checked before anything is written); see
/// [`check_streams`](streamkeeper::inspect::check_streams).
pub async fn check_is_stream(redis: &Connector, stream: &StreamKey) -> anyhow::Result<()> {
    check_all_streams(redis, std::slice::from_ref(stream)).await
}

/// [`check_is_stream`] for every key, before a command writes to any of
/// them (the shards of a sharded stream): one of the wrong type refuses
/// the command with nothing written.
pub async fn check_all_streams(redis: &Connector, keys: &[StreamKey]) -> anyhow::Result<()> {
    Ok(streamkeeper::inspect::check_streams(redis, keys).await?)
}

/// One [`Appender`] per target stream (the shards of a sharded stream, or
/// just the one stream): every target's type is checked before anything
/// is written, and when one stops, the error counts what was written to
/// all of them, not only to that one.
pub struct Appenders {
    appenders: Vec<Appender>,
    /// Entries written by the appenders these replaced (a resize moved the
    /// writes to other shards).
    earlier: u64,
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
        check_all_streams(redis, targets).await?;
        Ok(Appenders {
            appenders: targets
                .iter()
                .map(|t| Appender::new(redis, t.clone(), maxlen).with_wait(wait))
                .collect(),
            earlier: 0,
        })
    }

    /// Appenders writing through `producers` (whose streams were checked).
    pub fn of(producers: impl IntoIterator<Item = Producer>) -> Self {
        Appenders {
            appenders: producers.into_iter().map(Appender::of).collect(),
            earlier: 0,
        }
    }

    /// These appenders, counting `earlier` entries written before them
    /// (by the appenders they replace).
    pub fn after(mut self, earlier: u64) -> Self {
        self.earlier = earlier;
        self
    }

    /// Writes a `traceparent` into each entry (see [`streamkeeper::trace`]).
    pub fn with_trace(mut self, trace: streamkeeper::trace::TraceSource) -> Self {
        self.appenders = self
            .appenders
            .into_iter()
            .map(|a| a.with_trace(trace))
            .collect();
        self
    }

    /// Entries written to all targets so far.
    pub fn written(&self) -> u64 {
        self.earlier + self.appenders.iter().map(Appender::written).sum::<u64>()
    }

    /// Appends `chunk` to target `t` (see [`Appender::append`]).
    pub async fn append(
        &mut self,
        t: usize,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<Vec<StreamId>> {
        self.note_others(t);
        self.appenders[t].append(chunk, total).await
    }

    /// Appends `chunk` to target `t`, a sealed shard not an error (see
    /// [`Appender::append_or_sealed`]).
    pub async fn append_or_sealed(
        &mut self,
        t: usize,
        chunk: &[NewEntry],
        total: Option<u64>,
    ) -> anyhow::Result<(Vec<StreamId>, bool)> {
        self.note_others(t);
        self.appenders[t].append_or_sealed(chunk, total).await
    }

    fn note_others(&mut self, t: usize) {
        if self.appenders.len() > 1 || self.earlier > 0 {
            let others = self.written() - self.appenders[t].written();
            self.appenders[t].elsewhere = Some((others, self.appenders.len()));
        }
    }
}
