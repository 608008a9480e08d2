//! Batched acknowledgements and attempt marks: one round trip per batch or
//! per interval.
//!
//! Handlers queue IDs through a cheap [`Acker`] handle; one task owns the
//! buffers and the connection. Besides acks it keeps the attempt marks of
//! `{S}:attempts` (see `attempts.rs`): a new entry handed to a handler is
//! *started*; if it is still running at the next flush its mark is written
//! with the acks, and the ack that ends it removes the mark. A handler that
//! finishes within one interval never costs a mark. Closing flushes what is
//! queued, so a graceful shutdown never leaves processed entries pending.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::conn::{Connector, SharedConn};
use crate::error::{Error, Result};
use crate::scripts;
use crate::types::{GroupName, StreamId, StreamKey};

enum Msg {
    Ack(StreamId),
    /// A new entry was handed to a handler (its first run in this round).
    Started(StreamId),
    /// An entry's mark was written already (a run after a restart or a
    /// reclaim): its ack must remove it.
    Marked(StreamId),
    /// A retry or dead-letter script settled the entry (and removed its mark).
    Settled(StreamId),
    /// The entry is handed back unsettled: forget it; the reply says
    /// whether its mark was written (and must be taken back).
    Release(StreamId, oneshot::Sender<bool>),
    /// The entry only waits in a queue (a `--pipe` worker's input): no
    /// lazy mark for it; the reply says whether its mark was written
    /// already (and must be taken back). It stays in flight.
    Queued(StreamId, oneshot::Sender<bool>),
    Flush(oneshot::Sender<Result<()>>),
    Close(oneshot::Sender<Result<()>>),
}

/// A handle that queues acknowledgements and attempt marks.
#[derive(Clone)]
pub(crate) struct Acker {
    tx: mpsc::UnboundedSender<Msg>,
    /// Told at once which acks are on their way (the task may be busy
    /// retrying an earlier batch: the entries must stay fresh meanwhile).
    in_flight: Arc<super::in_flight::InFlight>,
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
        fence: Option<crate::lease::Fence>,
        in_flight: Arc<super::in_flight::InFlight>,
    ) -> (Acker, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let acked = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(ack_loop(
            AckTarget {
                attempts: crate::keys::StreamKeys::attempts(&stream),
                fence,
                connector,
                stream,
                group,
                in_flight: in_flight.clone(),
                acked: acked.clone(),
                ids: Vec::with_capacity(max_batch.max(1)),
                clear: Vec::new(),
                started: HashSet::new(),
                marked: HashSet::new(),
                marks_refused: false,
            },
            rx,
            max_batch.max(1),
            interval,
        ));
        (
            Acker {
                tx,
                acked,
                in_flight,
            },
            task,
        )
    }

    /// Queues one ID.
    pub(crate) fn ack(&self, id: StreamId) {
        self.in_flight.ack_queued(id);
        if self.tx.send(Msg::Ack(id)).is_err() {
            self.in_flight.acks_done(&[id]);
            tracing::warn!(%id, "ack after the consumer closed; the entry stays pending and will be redelivered");
        }
    }

    /// A new entry went to a handler.
    pub(crate) fn started(&self, id: StreamId) {
        let _ = self.tx.send(Msg::Started(id));
    }

    /// An entry's mark exists in Redis.
    pub(crate) fn marked(&self, id: StreamId) {
        let _ = self.tx.send(Msg::Marked(id));
    }

    /// A script settled the entry.
    pub(crate) fn settled(&self, id: StreamId) {
        let _ = self.tx.send(Msg::Settled(id));
    }

    /// Forgets a released entry; true when its attempt mark exists in
    /// Redis (written lazily or before the run) and must be taken back.
    pub(crate) async fn release(&self, id: StreamId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Release(id, tx)).is_err() {
            return true;
        }
        rx.await.unwrap_or(true)
    }

    /// The entry waits in a queue, its run not begun: no lazy mark; true
    /// when its mark exists in Redis (and must be taken back).
    pub(crate) async fn queued(&self, id: StreamId) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Queued(id, tx)).is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
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
    /// Ordered mode: every ack goes through the fenced script.
    fence: Option<crate::lease::Fence>,
    stream: StreamKey,
    attempts: String,
    group: GroupName,
    /// Told which acks are on their way and which are done.
    in_flight: Arc<super::in_flight::InFlight>,
    acked: Arc<AtomicU64>,
    /// IDs to acknowledge.
    ids: Vec<StreamId>,
    /// Acked IDs whose mark is to be removed.
    clear: Vec<StreamId>,
    /// New entries handed to a handler, not yet acked nor marked.
    started: HashSet<StreamId>,
    /// Entries whose mark exists in Redis.
    marked: HashSet<StreamId>,
    /// The user may not write the attempt marks (a least-privilege user
    /// with stream commands only): acks go as plain XACK, no marks.
    marks_refused: bool,
}

impl AckTarget {
    fn take(&mut self, msg: Msg) -> Option<Msg> {
        match msg {
            Msg::Ack(id) => {
                // Started and acked within one interval: no mark was ever
                // written, so there is none to remove.
                if !self.started.remove(&id) && self.marked.remove(&id) {
                    self.clear.push(id);
                }
                self.ids.push(id);
                None
            }
            Msg::Started(id) => {
                self.started.insert(id);
                None
            }
            Msg::Marked(id) => {
                // Marked by its owner (also a new entry marked before its
                // run): no lazy mark for it at the next flush.
                self.started.remove(&id);
                self.marked.insert(id);
                None
            }
            Msg::Settled(id) => {
                self.started.remove(&id);
                self.marked.remove(&id);
                None
            }
            Msg::Release(id, reply) => {
                let written = !self.started.remove(&id) && self.marked.remove(&id);
                let _ = reply.send(written);
                None
            }
            Msg::Queued(id, reply) => {
                // The caller takes this run's count back; what is left of
                // the mark (failed attempts before) goes with the ack.
                let written = !self.started.remove(&id) && self.marked.contains(&id);
                let _ = reply.send(written);
                None
            }
            other => Some(other),
        }
    }

    /// Sends the queued acks, mark removals and the marks of handlers still
    /// running, in one round trip, reconnecting and retrying through a
    /// failover (every part is idempotent) until the connector's
    /// `reconnect_timeout`. An ack lost here means a redelivery, not a loss.
    async fn send(&mut self, with_marks: bool) -> Result<()> {
        if self.marks_refused {
            self.started.clear();
            self.clear.clear();
        }
        let marks: Vec<StreamId> = if with_marks {
            self.started.drain().collect()
        } else {
            Vec::new()
        };
        if self.ids.is_empty() && self.clear.is_empty() && marks.is_empty() {
            return Ok(());
        }
        let (stream, group, attempts) = (&self.stream, &self.group, &self.attempts);
        let deferred = std::sync::atomic::AtomicBool::new(false);
        let deferred = &deferred;
        let refused = std::sync::atomic::AtomicBool::new(false);
        let refused = &refused;
        let (ids, clear, running): (&[StreamId], &[StreamId], &[StreamId]) =
            (&self.ids, &self.clear, &marks);
        let fence = self.fence.as_ref();
        let r = self
            .connector
            .retrying("XACK", |mut conn| async move {
                let r = if fence.is_none() && clear.is_empty() && running.is_empty() {
                    plain_xack(&mut conn, stream, group, ids).await
                } else {
                    let ack = AckScript {
                        stream,
                        attempts,
                        group,
                        ids,
                        clear,
                        running,
                        fence,
                    };
                    match ack.invoke(&mut conn).await {
                        // The slot is migrating and the stream and its
                        // attempts hash are on different nodes (or the
                        // hash does not exist yet): the script cannot run
                        // until the slot settles, which may take minutes.
                        // The acks cannot wait that long (their entries
                        // would look idle to peers): plain XACK, one key,
                        // goes through; the marks wait for a later flush.
                        Err(e) if fence.is_none() && crate::error::slot_in_motion(&e) => {
                            deferred.store(true, Ordering::SeqCst);
                            if ids.is_empty() {
                                return Ok(0);
                            }
                            plain_xack(&mut conn, stream, group, ids).await
                        }
                        // A user granted stream commands only (docs/design.md
                        // §6): the marks hash is beyond it; the acks are not.
                        Err(e) if fence.is_none() && crate::error::is_noperm(&e) => {
                            refused.store(true, Ordering::SeqCst);
                            if ids.is_empty() {
                                return Ok(0);
                            }
                            plain_xack(&mut conn, stream, group, ids).await
                        }
                        r => r,
                    }
                };
                match r {
                    Ok(n) => Ok(n),
                    Err(e) => Err(scripts::settle_error(&mut conn, stream, group, "XACK", e).await),
                }
            })
            .await;
        let n = self.ids.len();
        self.in_flight.acks_done(&self.ids);
        self.ids.clear();
        if refused.load(Ordering::SeqCst) && !self.marks_refused {
            tracing::warn!(stream = %self.stream,
                "this user may not write attempt marks ({{S}}:attempts, a hash): acks go without them, and runs cut off by a crash are not counted");
            self.marks_refused = true;
        }
        if r.is_ok() && deferred.load(Ordering::SeqCst) {
            // Acked by plain XACK: the marks to write and to clear wait
            // for a flush after the slot settled.
            tracing::debug!(n, "slot migrating: acked without the attempt marks");
            self.started.extend(marks);
            self.acked.fetch_add(n as u64, Ordering::Relaxed);
            crate::metrics::acked(n);
            return Ok(());
        }
        self.clear.clear();
        match r {
            Ok(_) => {
                self.marked.extend(marks);
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

/// `XACK stream group ids…`: one key, so it goes through while a slot
/// migration splits the stream from its attempts hash.
async fn plain_xack(
    conn: &mut SharedConn,
    stream: &StreamKey,
    group: &GroupName,
    ids: &[StreamId],
) -> redis::RedisResult<u64> {
    redis::cmd("XACK")
        .arg(stream)
        .arg(group)
        .arg(ids)
        .query_async(conn)
        .await
}

async fn ack_loop(
    mut target: AckTarget,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    max_batch: usize,
    interval: Duration,
) {
    // interval_at: a plain interval's first tick is immediate.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    if let Err(e) = target.send(true).await {
                        tracing::error!(error = %e, "final ack failed");
                    }
                    return;
                };
                let mut next = target.take(msg);
                // Drain what is already queued so a burst costs one round trip.
                while next.is_none() && target.ids.len() < max_batch {
                    match rx.try_recv() {
                        Ok(m) => next = target.take(m),
                        Err(_) => break,
                    }
                }
                match next {
                    Some(Msg::Flush(done)) => {
                        let _ = done.send(target.send(true).await);
                    }
                    Some(Msg::Close(done)) => {
                        let _ = done.send(target.send(true).await);
                        return;
                    }
                    _ => {
                        if target.ids.len() >= max_batch {
                            if let Err(e) = target.send(false).await {
                                tracing::error!(error = %e, "ack failed");
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                if let Err(e) = target.send(true).await {
                    tracing::error!(error = %e, "ack failed");
                }
            }
        }
    }
}

/// `lua/ack.lua` (behind `lua/fence.lua` with a fence): its KEYS and ARGV.
struct AckScript<'a> {
    stream: &'a StreamKey,
    attempts: &'a str,
    group: &'a GroupName,
    /// Entries to ack.
    ids: &'a [StreamId],
    /// Attempt marks to remove without an ack (entries settled otherwise).
    clear: &'a [StreamId],
    /// Entries whose handler is running: marked.
    running: &'a [StreamId],
    fence: Option<&'a crate::lease::Fence>,
}

impl AckScript<'_> {
    /// How many entries were acked.
    async fn invoke<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
    ) -> redis::RedisResult<u64> {
        let mut invocation =
            scripts::pick(self.fence, &scripts::ACK, &scripts::ACK_FENCED).key(self.stream);
        invocation
            .key(self.attempts)
            .arg(self.group)
            .arg(self.ids.len())
            .arg(self.clear.len())
            .arg(self.ids)
            .arg(self.clear)
            .arg(self.running);
        scripts::add_fence(&mut invocation, self.fence);
        invocation.invoke_async(conn).await
    }
}

#[cfg(test)]
mod tests {
    //! Against a real redis-server, in real time: the connection's response
    //! timeout would fire spuriously under a paused clock.

    use std::sync::Arc;
    use std::time::Duration;

    use streamkeeper_testkit::{eventually, RedisServer};

    use super::Acker;
    use crate::conn::Connector;
    use crate::consumer::in_flight::InFlight;
    use crate::keys::StreamKeys;
    use crate::types::{GroupName, StreamId, StreamKey};

    const NEVER: Duration = Duration::from_secs(3600);

    struct Setup {
        server: RedisServer,
        stream: StreamKey,
        ids: Vec<StreamId>,
        acker: Acker,
        in_flight: Arc<InFlight>,
    }

    /// A group with `n` entries read (so pending) and an acker for it.
    async fn setup(n: usize, max_batch: usize, interval: Duration) -> Setup {
        let server = RedisServer::start().expect("redis-server");
        let stream = StreamKey::new("orders").expect("key");
        let group = GroupName::new("g").expect("group");
        cli(
            &server,
            &["XGROUP", "CREATE", "orders", "g", "$", "MKSTREAM"],
        );
        let ids = (0..n)
            .map(|_| {
                cli(&server, &["XADD", "orders", "*", "k", "v"])
                    .trim()
                    .parse::<StreamId>()
                    .expect("id")
            })
            .collect();
        cli(
            &server,
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "orders", ">"],
        );
        cli(&server, &["CONFIG", "RESETSTAT"]);
        let connector = Connector::connect(&server.url()).await.expect("connect");
        let in_flight = Arc::new(InFlight::default());
        let (acker, _task) = Acker::spawn(
            connector,
            stream.clone(),
            group,
            max_batch,
            interval,
            None,
            in_flight.clone(),
        );
        Setup {
            server,
            stream,
            ids,
            acker,
            in_flight,
        }
    }

    fn cli(server: &RedisServer, args: &[&str]) -> String {
        server.cli(args).expect("redis-cli")
    }

    fn pending(server: &RedisServer) -> u64 {
        let reply = cli(server, &["XPENDING", "orders", "g"]);
        reply
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("XPENDING count")
    }

    /// Calls of `command` since the setup reset the statistics.
    fn calls(server: &RedisServer, command: &str) -> u64 {
        let stats = cli(server, &["INFO", "commandstats"]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_full_batch_is_sent_as_one_xack() {
        let s = setup(3, 3, NEVER).await;
        for id in &s.ids {
            s.acker.ack(*id);
        }
        let done = eventually(Duration::from_secs(5), || async { pending(&s.server) == 0 }).await;
        assert!(
            done,
            "a full batch goes out without waiting for the interval"
        );
        assert_eq!(calls(&s.server, "xack"), 1);
        assert_eq!(s.acker.acked(), 3);
    }

    #[tokio::test]
    async fn queued_acks_go_out_at_the_interval() {
        let s = setup(2, 100, Duration::from_millis(300)).await;
        for id in &s.ids {
            s.acker.ack(*id);
        }
        assert!(s.in_flight.contains(&s.ids[0]), "in flight until confirmed");
        assert_eq!(pending(&s.server), 2, "nothing is sent before the interval");
        let done = eventually(Duration::from_secs(5), || async { pending(&s.server) == 0 }).await;
        assert!(done, "the interval flushes the queued acks");
        assert_eq!(calls(&s.server, "xack"), 1);
        assert!(
            !s.in_flight.contains(&s.ids[0]),
            "confirmed acks leave InFlight"
        );
    }

    #[tokio::test]
    async fn close_sends_what_is_queued() {
        let s = setup(2, 100, NEVER).await;
        for id in &s.ids {
            s.acker.ack(*id);
        }
        s.acker.close().await.expect("close");
        assert_eq!(pending(&s.server), 0);
        assert_eq!(calls(&s.server, "xack"), 1);
        assert_eq!(s.acker.acked(), 2);
    }

    #[tokio::test]
    async fn only_handlers_still_running_at_a_flush_get_an_attempt_mark() {
        let s = setup(2, 100, NEVER).await;
        let (quick, slow) = (s.ids[0], s.ids[1]);
        s.acker.started(quick);
        s.acker.started(slow);
        s.acker.ack(quick);
        s.acker.flush().await.expect("flush");
        let attempts = StreamKeys::attempts(&s.stream);
        let marks = cli(&s.server, &["HKEYS", &attempts]);
        assert!(marks.contains(&slow.to_string()), "marks: {marks:?}");
        assert!(!marks.contains(&quick.to_string()), "marks: {marks:?}");
        s.acker.ack(slow);
        s.acker.close().await.expect("close");
        assert_eq!(cli(&s.server, &["HLEN", &attempts]).trim(), "0");
        assert_eq!(pending(&s.server), 0);
    }
}
