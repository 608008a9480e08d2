//! `consume --pipe CMD`: one long-lived worker process speaking a line protocol.
//!
//! The worker gets one entry JSON line per entry on stdin and answers
//! `ack ID`, `retry ID [DURATION]`, `fail ID [REASON]` or `dead ID REASON`
//! on stdout. A supervisor task owns the process: it feeds it, matches
//! answers to entries and restarts it when it ends. The consumer's
//! guarantees come from `GroupConsumer::run`: each entry is one handler
//! call that waits for its answer (so `--concurrency` bounds the entries
//! held, and with them the memory), and [`outcome`] is the one place that
//! turns an answer into an [`Outcome`].
//!
//! Workers are ordinary programs (docs/design.md §6 "Pipe workers"), so the
//! supervisor charges an attempt only to the entry that caused it:
//!
//! - **recycling**: a worker that exits 0 is restarted at once; the
//!   entries it was given and did not answer are fed to the next one,
//!   uncharged (after [`MAX_RECYCLED`] such cut-offs an entry is treated
//!   as a suspect);
//! - **isolation**: a worker that crashes, breaks the protocol or hangs
//!   with several entries unanswered charges none of them; they become
//!   *suspects*, run one at a time, and only an entry whose lone run
//!   fails the same way is charged;
//! - **a command that cannot start** (exit 126/127, or [`START_FAILURES`]
//!   workers in a row that end before answering anything) stops the
//!   consumer with the command's name; its entries are released (left
//!   pending with no attempt counted), never dead-lettered;
//! - **timeouts** (`--timeout D`): the oldest unanswered entry's clock
//!   starts when it becomes the oldest; after D it is a failed attempt
//!   ("timed out after D"), and a worker that answered nothing for D is
//!   restarted (its entries isolated as above).
//!
//! Every worker runs under a reaper (`reaper.rs`), so nothing it starts
//! outlives the consumer.
//!
//! Layout: `protocol.rs` is the line protocol (answers, their parsing and
//! the outcome each maps to), `worker.rs` one running worker process and
//! its I/O, and this file the supervisor that owns workers across
//! restarts and the [`Pipe`] handle the consumer calls.

mod protocol;
mod worker;

use std::collections::VecDeque;
use std::time::Duration;

use streamkeeper::{wire, Delivery, Outcome};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use protocol::{outcome, Answer};
use worker::Worker;

/// First wait before a crashed worker is restarted; it doubles up to
/// [`RESTART_MAX`] while workers crash without answering anything, and
/// is back to this after any answer. A worker that exits 0 is restarted
/// at once.
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);
/// Workers in a row that end before answering anything: then the command
/// is taken to be broken (mistyped, missing a dependency) and the consumer
/// stops.
pub const START_FAILURES: u32 = 5;
/// Cut-offs by recycling workers (exit 0) an entry takes uncharged before
/// it is run alone like a suspect (a worker that exits 0 on one entry
/// every time would otherwise loop).
const MAX_RECYCLED: u32 = 3;

/// How to start the worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Run via `sh -c` (under a reaper).
    pub cmd: String,
    /// Extra environment (SK_STREAM, SK_GROUP, SK_CONSUMER).
    pub env: Vec<(String, String)>,
    /// After the consumer is told to stop, how long in-flight entries may
    /// wait for their answers.
    pub stop_timeout: Duration,
    /// `--timeout`: how long the oldest unanswered entry may wait.
    pub timeout: Option<Duration>,
}

struct Request {
    id: String,
    line: String,
    reply: oneshot::Sender<Answer>,
    /// Times a recycling worker (exit 0) left it unanswered.
    recycled: u32,
    /// Where its line ends in the bytes written to this worker (`None`:
    /// the worker had no stdin, it never got it).
    end: Option<u64>,
}

impl Request {
    fn answer(self, answer: Answer) {
        let _ = self.reply.send(answer);
    }
}

/// The consumer's side of the pipe: cheap to clone, one per handler.
#[derive(Clone)]
pub struct Pipe {
    tx: mpsc::Sender<Request>,
}

impl Pipe {
    /// Starts the supervisor (which starts the worker). It ends, killing
    /// the worker, once every clone of the returned `Pipe` is dropped and
    /// the last answer is in. The task's result is `Some(why)` when the
    /// command could not be started: the consumer must stop with an error
    /// (the supervisor has cancelled `stop` already).
    pub fn start(spec: WorkerSpec, stop: CancellationToken) -> (Pipe, JoinHandle<Option<String>>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(supervise(spec, rx, stop));
        (Pipe { tx }, task)
    }

    /// Sends one entry line and waits for its answer.
    pub async fn ask(&self, id: String, line: String) -> Answer {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            id,
            line,
            reply,
            recycled: 0,
            end: None,
        };
        if self.tx.send(request).await.is_err() {
            return Answer::Released("the worker supervisor stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::Released("the worker supervisor stopped".into()))
    }

    /// The handler of one delivery: feed it, wait, ack on `ack`, release
    /// on [`Answer::Released`], map the answer with [`outcome`].
    pub async fn handle(&self, d: &Delivery) -> Result<Outcome, String> {
        // The worker reads its input in order; which entry it is on is
        // unknown here, so a crash of this process charges none of them
        // (the supervisor charges worker failures to the entry at fault).
        if let Err(e) = d.queued().await {
            tracing::warn!(id = %d.id(), error = %e, "could not take back the attempt mark");
        }
        let line =
            wire::traced_delivery_to_line(d.stream().as_str(), d.entry(), d.attempt(), d.trace());
        let answer = self.ask(d.id().to_string(), line).await;
        match &answer {
            Answer::Ack => d.ack(),
            Answer::Released(why) => {
                tracing::info!(id = %d.id(), reason = %why, "entry released: it stays pending, no attempt counted");
                if let Err(e) = d.release().await {
                    tracing::warn!(id = %d.id(), error = %e, "could not take back the attempt mark");
                }
            }
            Answer::Malformed(why) => {
                tracing::warn!(id = %d.id(), %why, "malformed answer from the --pipe worker; counted as a failed attempt")
            }
            _ => {}
        }
        outcome(answer)
    }
}

/// Entries waiting for a worker, across worker restarts.
#[derive(Default)]
struct Backlog {
    /// Fed before anything new: cut off by a recycling worker.
    ready: VecDeque<Request>,
    /// Run one at a time, nothing else in flight (isolation).
    suspects: VecDeque<Request>,
    /// Every `Pipe` is gone: nothing new will come.
    closed: bool,
}

impl Backlog {
    fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.suspects.is_empty()
    }

    fn release_all(&mut self, why: &str) {
        for r in self.ready.drain(..).chain(self.suspects.drain(..)) {
            r.answer(Answer::Released(why.to_string()));
        }
    }
}

/// Why one worker's turn ended.
enum End {
    /// Every `Pipe` is gone and nothing is in flight: stop for good.
    Closed,
    /// The consumer stopped and the stop timeout passed (what was
    /// unanswered is released).
    Stopped,
    /// The worker ended, broke the protocol or hung.
    Ended {
        why: String,
        /// It exited 0 by itself (recycling), nothing wrong.
        clean: bool,
        /// Its exit code, when it exited.
        code: Option<i32>,
        /// What it was given and did not answer, in the order given.
        unanswered: Vec<Request>,
        /// What was meant for it but never written to it: no suspicion.
        unwritten: Vec<Request>,
    },
}

async fn supervise(
    spec: WorkerSpec,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
) -> Option<String> {
    let mut backlog = Backlog::default();
    let mut backoff = RESTART_MIN;
    // Some worker answered something: the command works, so a lone entry
    // that ends a worker is to blame.
    let mut proven = false;
    // Workers in a row that ended before answering anything.
    let mut streak = 0u32;
    // After a clean exit with nothing to do, the next worker starts when
    // there is work (a worker that exits at once is not restarted in a
    // loop).
    let mut lazy = false;
    loop {
        if stop.is_cancelled() {
            // No new worker once stopping: what still comes is left pending.
            backlog.release_all("the consumer is stopping");
            release_rest(&mut rx, "the consumer is stopping").await;
            return None;
        }
        if lazy && backlog.is_empty() {
            tokio::select! {
                r = rx.recv(), if !backlog.closed => match r {
                    Some(r) => backlog.ready.push_back(r),
                    None => return None,
                },
                _ = stop.cancelled() => continue,
            }
        }
        if backlog.closed && backlog.is_empty() {
            return None;
        }
        lazy = false;
        let mut worker = match Worker::spawn(&spec) {
            Ok(w) => w,
            Err(e) => {
                let why = format!("cannot start the --pipe command {:?}: {e}", spec.cmd);
                return Some(give_up(why, Vec::new(), &mut backlog, &mut rx, &stop).await);
            }
        };
        let end = worker
            .serve(&mut rx, &mut backlog, &stop, &spec, proven)
            .await;
        worker.close(matches!(end, End::Closed)).await;
        let answered = worker.answered > 0;
        if answered {
            proven = true;
            streak = 0;
            backoff = RESTART_MIN;
        }
        let (why, clean, code, unanswered) = match end {
            End::Closed => return None,
            End::Stopped => {
                backlog.release_all("the consumer stopped");
                release_rest(&mut rx, "the consumer stopped").await;
                return None;
            }
            End::Ended {
                why,
                clean,
                code,
                unanswered,
                unwritten,
            } => {
                for r in unwritten.into_iter().rev() {
                    backlog.ready.push_front(r);
                }
                (why, clean, code, unanswered)
            }
        };
        // A lone run that ended its worker is charged to its entry below:
        // that worker's death is explained, so it does not count towards
        // "cannot start" (poison entries left alone at the end of a stream
        // must reach the dead-letter queue, not stop the consumer).
        let charged = !clean && proven && unanswered.len() == 1;
        if !answered && !charged && (!clean || !unanswered.is_empty()) {
            streak += 1;
        }
        if !answered && matches!(code, Some(126 | 127)) {
            let why = format!(
                "the --pipe command {:?} cannot be started ({why}: sh says exit {} means {}); check the command and its path",
                spec.cmd,
                code.unwrap_or_default(),
                if code == Some(127) { "command not found" } else { "not executable" }
            );
            return Some(give_up(why, unanswered, &mut backlog, &mut rx, &stop).await);
        }
        if streak >= START_FAILURES {
            let why = format!(
                "the --pipe command {:?} ended {streak} times in a row before answering anything (last: {why}); check that it runs and answers one line per entry",
                spec.cmd
            );
            return Some(give_up(why, unanswered, &mut backlog, &mut rx, &stop).await);
        }
        if clean {
            let n = unanswered.len();
            for r in unanswered.into_iter().rev() {
                let mut r = r;
                r.recycled += 1;
                if r.recycled > MAX_RECYCLED {
                    backlog.suspects.push_front(r);
                } else {
                    backlog.ready.push_front(r);
                }
            }
            tracing::debug!(
                fed_again = n,
                "--pipe worker exited 0; restarting it at once"
            );
            lazy = backlog.is_empty();
            continue;
        }
        match unanswered.len() {
            0 => {}
            1 if charged => {
                let r = unanswered.into_iter().next().expect("one");
                tracing::warn!(id = %r.id, reason = %why, "--pipe worker ended during this entry's lone run; counted as its failed attempt");
                r.answer(Answer::CutOff(why.clone()));
            }
            n => {
                tracing::warn!(
                    unanswered = n,
                    reason = %why,
                    "--pipe worker ended with entries unanswered; none is charged: they run one at a time to find the cause"
                );
                backlog.suspects.extend(unanswered);
            }
        }
        tracing::warn!(reason = %why, ?backoff, "--pipe worker ended; restarting it");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => {}
        }
        if !answered {
            backoff = (backoff * 2).min(RESTART_MAX);
        }
    }
}

/// The command cannot work: releases every entry (pending, no attempt
/// counted), stops the consumer and returns `why` for its error.
async fn give_up(
    why: String,
    unanswered: Vec<Request>,
    backlog: &mut Backlog,
    rx: &mut mpsc::Receiver<Request>,
    stop: &CancellationToken,
) -> String {
    tracing::error!(reason = %why, "stopping the consumer; its entries stay pending");
    stop.cancel();
    for r in unanswered {
        r.answer(Answer::Released(why.clone()));
    }
    backlog.release_all(&why);
    release_rest(rx, &why).await;
    why
}

/// Answers everything still coming with [`Answer::Released`] until every
/// `Pipe` is dropped.
async fn release_rest(rx: &mut mpsc::Receiver<Request>, why: &str) {
    while let Some(r) = rx.recv().await {
        r.answer(Answer::Released(why.to_string()));
    }
}
