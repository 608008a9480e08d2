//! Batched acknowledgements: one `XACK` per batch or per interval.
//!
//! Handlers queue IDs through a cheap [`Acker`] handle; one task owns the
//! buffer and the connection. Closing flushes what is queued, so a graceful
//! shutdown never leaves processed entries pending (they would be
//! redelivered).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::types::{GroupName, StreamId, StreamKey};

enum Msg {
    Ack(StreamId),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// A handle that queues acknowledgements.
#[derive(Clone)]
pub(crate) struct Acker {
    tx: mpsc::UnboundedSender<Msg>,
    acked: Arc<AtomicU64>,
}

impl Acker {
    /// Starts the ack task for one stream and group.
    pub(crate) fn spawn(
        connector: Connector,
        stream: StreamKey,
        group: GroupName,
        max_batch: usize,
        interval: Duration,
    ) -> (Acker, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(ack_loop(
            AckTarget {
                connector,
                stream,
                group,
                acked: acked.clone(),
            },
            rx,
            max_batch.max(1),
            interval,
        ));
        (Acker { tx, acked }, task)
    }

    /// Queues one ID.
    pub(crate) fn ack(&self, id: StreamId) {
        if self.tx.send(Msg::Ack(id)).is_err() {
            tracing::warn!(%id, "ack after the consumer closed; the entry stays pending and will be redelivered");
        }
    }

    /// Sends everything queued now.
    pub(crate) async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .map_err(|_| Error::Shutdown("acker"))?;
        rx.await.map_err(|_| Error::Shutdown("acker"))?
    }

    /// Flushes and stops the task.
    pub(crate) async fn close(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(tx)).is_err() {
            return Ok(());
        }
        rx.await.map_err(|_| Error::Shutdown("acker"))?
    }

    /// Entries acknowledged so far.
    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

struct AckTarget {
    connector: Connector,
    stream: StreamKey,
    group: GroupName,
    acked: Arc<AtomicU64>,
}

impl AckTarget {
    /// Sends one XACK for `ids`, reconnecting and retrying through a
    /// failover (XACK is idempotent) until the connector's
    /// `reconnect_timeout`. An ack lost here means a redelivery, not a loss.
    async fn send(&mut self, ids: &mut Vec<StreamId>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (stream, group) = (&self.stream, &self.group);
        let batch: &[StreamId] = ids;
        let r = self
            .connector
            .retrying("XACK", |mut conn| async move {
                redis::cmd("XACK")
                    .arg(stream)
                    .arg(group)
                    .arg(batch)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(|e| Error::redis(format!("XACK on {stream} group {group}"), e))
            })
            .await;
        let n = ids.len();
        ids.clear();
        match r {
            Ok(_) => {
                self.acked.fetch_add(n as u64, Ordering::Relaxed);
                crate::metrics::acked(n);
                Ok(())
            }
            Err(e) => {
                tracing::error!(
                    n,
                    "XACK failed; these entries stay pending and will be redelivered"
                );
                Err(e)
            }
        }
    }
}

async fn ack_loop(
    mut target: AckTarget,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    max_batch: usize,
    interval: Duration,
) {
    let mut ids: Vec<StreamId> = Vec::with_capacity(max_batch);
    // interval_at: a plain interval's first tick is immediate.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Ack(id)) => {
                    ids.push(id);
                    // Drain what is already queued so a burst costs one XACK.
                    while ids.len() < max_batch {
                        match rx.try_recv() {
                            Ok(Msg::Ack(id)) => ids.push(id),
                            Ok(Msg::Flush(done)) => {
                                let _ = done.send(target.send(&mut ids).await);
                            }
                            Ok(Msg::Close(done)) => {
                                let _ = done.send(target.send(&mut ids).await);
                                return;
                            }
                            Err(_) => break,
                        }
                    }
                    if ids.len() >= max_batch {
                        if let Err(e) = target.send(&mut ids).await {
                            tracing::error!(error = %e, "ack failed");
                        }
                    }
                }
                Some(Msg::Flush(done)) => {
                    let _ = done.send(target.send(&mut ids).await);
                }
                Some(Msg::Close(done)) => {
                    let _ = done.send(target.send(&mut ids).await);
                    return;
                }
                None => {
                    if let Err(e) = target.send(&mut ids).await {
                        tracing::error!(error = %e, "final ack failed");
                    }
                    return;
                }
            },
            _ = tick.tick() => {
                if let Err(e) = target.send(&mut ids).await {
                    tracing::error!(error = %e, "ack failed");
                }
            }
        }
    }
}
