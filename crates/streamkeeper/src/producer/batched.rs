//! [`BatchedProducer`]: coalesces concurrent sends from many tasks into
//! chunks written by one [`Producer`].

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::chunk::PIPELINE_CHUNK;
use super::single::Producer;
use crate::error::{Error, Result};
use crate::types::{Bytes, StreamId};

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
    pub(crate) fn start(producer: Producer, options: BatchOptions) -> Self {
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
