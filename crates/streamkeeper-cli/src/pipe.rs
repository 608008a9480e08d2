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
//! Workers are ordinary programs (DESIGN.md §6 "Pipe workers"), so the
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use streamkeeper::{wire, Delivery, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest answer line accepted; a longer one breaks the protocol.
const MAX_LINE: usize = 64 * 1024;
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
/// Timed-out IDs remembered per worker so that their late answers are
/// ignored rather than taken for a protocol error.
const MAX_LATE: usize = 10_000;
/// How long a worker that exited may take to close its stdout (answers it
/// wrote before exiting still count).
const EXIT_DRAIN: Duration = Duration::from_secs(1);
/// How long a worker gets to exit after its stdin closed, before SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What the worker (or its absence) said about one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `ack ID`.
    Ack,
    /// `retry ID [DURATION]` (no duration: the consumer's backoff).
    Retry(Option<Duration>),
    /// `fail ID [REASON]`: a failed attempt.
    Fail(String),
    /// `dead ID REASON`: dead-letter now.
    Dead(String),
    /// The line about this entry did not follow the protocol.
    Malformed(String),
    /// The worker ended during this entry's lone run (it is the cause).
    CutOff(String),
    /// No answer within `--timeout`.
    TimedOut(Duration),
    /// Not this entry's fault and not run to the end: the consumer is
    /// stopping (no answer within the stop timeout) or the command cannot
    /// start. The entry is released: left pending, no attempt counted.
    Released(String),
}

/// Turns an answer into the consumer's outcome: `Err` is a failed attempt
/// (retried with the group's backoff, dead-lettered with the error as the
/// reason's end when it was the `--max-deliveries`-th).
///
/// The pipe consumer runs in manual-ack mode (see [`Pipe::handle`]), so
/// `Outcome::Ack` only settles the handler call: the entry is acked when
/// the worker said `ack`, and left pending when it was released.
pub fn outcome(answer: Answer) -> Result<Outcome, String> {
    match answer {
        Answer::Ack | Answer::Released(_) => Ok(Outcome::Ack),
        Answer::Retry(after) => Ok(Outcome::Retry { after }),
        Answer::Dead(reason) => Ok(Outcome::DeadLetter { reason }),
        // The worker's own words.
        Answer::Fail(reason) => Err(reason),
        Answer::Malformed(why) => Err(format!("malformed answer: {why}")),
        Answer::CutOff(why) => Err(format!("the worker ended during its run: {why}")),
        Answer::TimedOut(after) => Err(format!(
            "timed out after {}",
            humantime::format_duration(after)
        )),
    }
}

/// One answer line, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// An empty line: ignored.
    Blank,
    /// A line about entry `.0` (the answer may be [`Answer::Malformed`]).
    About(&'a str, Answer),
    /// A line that names no entry.
    NoId,
}

fn parse_line(line: &str) -> Line<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Line::Blank;
    }
    let (verb, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Line::NoId;
    }
    let (id, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let tail = tail.trim();
    let answer = match verb {
        "ack" if tail.is_empty() => Answer::Ack,
        "ack" => Answer::Malformed(format!("`ack ID` takes nothing after the ID: {line:?}")),
        "retry" if tail.is_empty() => Answer::Retry(None),
        "retry" => match humantime::parse_duration(tail) {
            Ok(d) => Answer::Retry(Some(d)),
            Err(e) => Answer::Malformed(format!("bad retry delay in {line:?}: {e}")),
        },
        "fail" if tail.is_empty() => Answer::Fail("no reason given".into()),
        "fail" => Answer::Fail(tail.to_string()),
        "dead" if tail.is_empty() => {
            Answer::Malformed(format!("`dead ID REASON` needs a reason: {line:?}"))
        }
        "dead" => Answer::Dead(tail.to_string()),
        _ => Answer::Malformed(format!(
            "unknown answer {verb:?} (use ack, retry, fail or dead): {line:?}"
        )),
    };
    Line::About(id, answer)
}

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
        let line = wire::entry_to_line(d.stream().as_str(), d.entry());
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

/// A running worker process. One task (the supervisor) does all of its
/// I/O: writes and reads are cancel-safe `select!` branches, so feeding
/// and answering never wait on each other and no entry crosses an extra
/// task on its way.
struct Worker {
    /// The reaper (`reaper.rs`) running `sh -c CMD`.
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// Entry lines not yet written: `pending_out[written..]` (at most
    /// `--concurrency` lines; written bytes are dropped as it goes, so the
    /// buffer never outgrows what is unwritten).
    pending_out: Vec<u8>,
    written: usize,
    /// Bytes fed and written in all (a request's `end` is in the first).
    fed_total: u64,
    written_total: u64,
    /// The worker broke the protocol: it gets nothing more (its stdin is
    /// closed) and may finish and answer what it has until this instant.
    broken: Option<(String, Instant)>,
    /// The rest of an over-long answer line is being skipped.
    skipping: bool,
    /// Bytes read from stdout: `read_buf[..read_len]`.
    read_buf: Vec<u8>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// Unanswered entries by the order they were given…
    in_flight: BTreeMap<u64, Request>,
    /// …and by ID (an ID given twice is answered in order).
    by_id: HashMap<String, VecDeque<u64>>,
    next_seq: u64,
    /// The oldest unanswered entry and since when it is the oldest: its
    /// `--timeout` clock.
    oldest: Option<(u64, Instant)>,
    /// When this worker last answered (or started).
    last_answer: Instant,
    /// Answers given by this worker.
    answered: u64,
    /// IDs that timed out: their late answers are ignored.
    late: HashSet<String>,
}

/// Requests taken from the channel at once before answers are looked at.
const FEED_BURST: usize = 1024;
/// Above this many written bytes at the front, `pending_out` is compacted.
const COMPACT_AT: usize = 64 * 1024;

impl Worker {
    fn spawn(spec: &WorkerSpec) -> std::io::Result<Worker> {
        let mut cmd = crate::reaper::command(&spec.cmd);
        cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the worker's pipes are missing"));
        };
        tracing::debug!(pid = ?child.id(), "--pipe worker started");
        Ok(Worker {
            child,
            stdin: Some(stdin),
            stdout,
            pending_out: Vec::with_capacity(64 * 1024),
            written: 0,
            fed_total: 0,
            written_total: 0,
            broken: None,
            skipping: false,
            read_buf: vec![0; 64 * 1024],
            partial: Vec::new(),
            in_flight: BTreeMap::new(),
            by_id: HashMap::new(),
            next_seq: 0,
            oldest: None,
            last_answer: Instant::now(),
            answered: 0,
            late: HashSet::new(),
        })
    }

    /// Feeds requests and matches answers until the worker ends, breaks
    /// the protocol, hangs, or there is nothing left to do.
    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Request>,
        backlog: &mut Backlog,
        stop: &CancellationToken,
        spec: &WorkerSpec,
        proven: bool,
    ) -> End {
        let mut deadline: Option<Instant> = None;
        let mut exited: Option<(std::process::ExitStatus, Instant)> = None;
        loop {
            // Suspects run alone; otherwise what a recycled worker left
            // goes first.
            if !backlog.suspects.is_empty() {
                if self.in_flight.is_empty() && self.stdin.is_some() && deadline.is_none() {
                    if let Some(r) = backlog.suspects.pop_front() {
                        tracing::info!(id = %r.id, "running a suspect entry alone");
                        self.feed(r);
                    }
                }
            } else if self.stdin.is_some() {
                while let Some(r) = backlog.ready.pop_front() {
                    self.feed(r);
                }
            }
            if backlog.closed && self.in_flight.is_empty() && backlog.is_empty() {
                return End::Closed;
            }
            let now = Instant::now();
            let first = self.in_flight.keys().next().copied();
            if first != self.oldest.map(|(seq, _)| seq) {
                self.oldest = first.map(|seq| (seq, now));
            }
            let run_deadline = spec
                .timeout
                .zip(self.oldest)
                .map(|(t, (_, since))| since + t);
            let drained = self.broken.as_ref().map(|(_, at)| *at + CLOSE_GRACE);
            let timer = [
                deadline,
                exited.map(|(_, at)| at + EXIT_DRAIN),
                run_deadline,
                drained,
            ]
            .into_iter()
            .flatten()
            .min();
            let to_write = self.written < self.pending_out.len() && self.stdin.is_some();
            let take_new = !backlog.closed && backlog.suspects.is_empty();
            tokio::select! {
                biased;
                read = self.stdout.read(&mut self.read_buf) => match read {
                    Ok(0) | Err(_) => {
                        // A last line without a newline still counts.
                        if !self.partial.is_empty() && !self.skipping {
                            let last = std::mem::take(&mut self.partial);
                            if let Err(e) = self.answer(&String::from_utf8_lossy(&last)) {
                                self.break_off(e);
                            }
                        }
                        // Its exit status tells a recycle from a crash.
                        let status = match exited {
                            Some((s, _)) => Some(s),
                            None => tokio::time::timeout(EXIT_DRAIN, self.child.wait()).await.ok().and_then(Result::ok),
                        };
                        return match status {
                            Some(s) => self.ended(format!("worker exited ({})", describe(s)), Some(s)),
                            None => self.ended("worker closed its stdout".to_string(), None),
                        };
                    }
                    Ok(n) => self.answer_lines(n),
                },
                wrote = write_some(self.stdin.as_mut(), &self.pending_out[self.written..]), if to_write => match wrote {
                    Ok(n) => {
                        self.written += n;
                        self.written_total += n as u64;
                        if self.written == self.pending_out.len() {
                            self.pending_out.clear();
                            self.written = 0;
                        } else if self.written >= COMPACT_AT {
                            self.pending_out.drain(..self.written);
                            self.written = 0;
                        }
                    }
                    Err(_) => {
                        // The worker stopped reading (it is exiting): its
                        // exit is noticed and its entries handled then.
                        self.stdin = None;
                        self.pending_out = Vec::new();
                        self.written = 0;
                    }
                },
                status = self.child.wait(), if exited.is_none() => {
                    let at = Instant::now();
                    match status {
                        Ok(s) => exited = Some((s, at)),
                        Err(e) => return self.ended(format!("waiting for the worker failed: {e}"), None),
                    }
                }
                _ = stop.cancelled(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + spec.stop_timeout);
                    backlog.release_all("the consumer is stopping");
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| d <= now) {
                        let why = "no answer within the stop timeout";
                        for r in self.take_unanswered() {
                            r.answer(Answer::Released(why.into()));
                        }
                        return End::Stopped;
                    }
                    if drained.is_some_and(|d| d <= now) {
                        return self.ended("the worker broke the protocol and did not exit".into(), None);
                    }
                    if let Some((status, at)) = exited {
                        if at + EXIT_DRAIN <= now {
                            return self.ended(format!("worker exited ({}) and its stdout stayed open", describe(status)), Some(status));
                        }
                    }
                    if let (Some(timeout), Some(at)) = (spec.timeout, run_deadline) {
                        if at <= now {
                            if let Some(end) = self.time_out(timeout, proven || self.answered > 0) {
                                return end;
                            }
                        }
                    }
                }
                req = rx.recv(), if take_new && self.broken.is_none() => match req {
                    Some(r) => {
                        self.feed(r);
                        // Take what else is queued, so a burst is one write.
                        for _ in 0..FEED_BURST {
                            match rx.try_recv() {
                                Ok(r) => self.feed(r),
                                Err(_) => break,
                            }
                        }
                    }
                    None => backlog.closed = true,
                },
            }
        }
    }

    /// The oldest entry got no answer within `timeout`. Charged when it is
    /// the only one (and the command is known to work) or when the worker
    /// is answering others; a worker that answered nothing at all for
    /// `timeout` with several entries is restarted and they are isolated.
    fn time_out(&mut self, timeout: Duration, proven: bool) -> Option<End> {
        let stuck = self.last_answer + timeout <= Instant::now();
        let lone = self.in_flight.len() == 1;
        let took = humantime::format_duration(timeout);
        if (lone && proven) || !stuck {
            let (_, r) = self.in_flight.pop_first()?;
            self.forget(&r.id);
            tracing::warn!(id = %r.id, "no answer from the --pipe worker after {took}: a failed attempt");
            if self.late.len() < MAX_LATE {
                self.late.insert(r.id.clone());
            }
            r.answer(Answer::TimedOut(timeout));
            if stuck {
                return Some(self.ended(format!("the worker answered nothing for {took}"), None));
            }
            return None;
        }
        Some(self.ended(format!("the worker answered nothing for {took}"), None))
    }

    fn feed(&mut self, mut r: Request) {
        r.end = None;
        if self.stdin.is_some() {
            self.pending_out.extend_from_slice(r.line.as_bytes());
            self.pending_out.push(b'\n');
            self.fed_total += r.line.len() as u64 + 1;
            r.end = Some(self.fed_total);
        }
        // Without stdin the worker is on its way out: the exit is noticed
        // by `serve` and this entry is handled with the others.
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.in_flight.is_empty() {
            // Nothing was waiting: the clock of "answered nothing" starts now.
            self.last_answer = Instant::now();
        }
        self.by_id.entry(r.id.clone()).or_default().push_back(seq);
        self.in_flight.insert(seq, r);
    }

    /// Drops the oldest sequence number of `id`.
    fn forget(&mut self, id: &str) {
        if let Some(seqs) = self.by_id.get_mut(id) {
            seqs.pop_front();
            if seqs.is_empty() {
                self.by_id.remove(id);
            }
        }
    }

    /// Settles the entries answered by the complete lines among the `n`
    /// bytes just read into `read_buf`. A line that breaks the protocol
    /// ends the feeding ([`break_off`](Self::break_off)); the lines after
    /// it still count.
    fn answer_lines(&mut self, n: usize) {
        let buf = std::mem::take(&mut self.read_buf);
        let mut rest = &buf[..n];
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(end);
            rest = &tail[1..];
            if std::mem::take(&mut self.skipping) {
                self.partial.clear();
                continue;
            }
            let result = if self.partial.is_empty() {
                self.answer(&String::from_utf8_lossy(line))
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.answer(&String::from_utf8_lossy(&whole))
            };
            if let Err(why) = result {
                self.break_off(why);
            }
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE {
                self.partial = Vec::new();
                self.skipping = true;
                self.break_off(format!("answer line longer than {} KiB", MAX_LINE / 1024));
            }
        }
        self.read_buf = buf;
    }

    /// The worker broke the protocol: it is fed nothing more (stdin
    /// closed) and has [`CLOSE_GRACE`] to answer what it has and exit;
    /// then it is restarted and what it left unanswered is isolated.
    fn break_off(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::warn!(reason = %why, "--pipe worker broke the protocol; it gets nothing more and is restarted");
            self.broken = Some((why, Instant::now()));
        }
        self.stdin = None;
        self.pending_out = Vec::new();
        self.written = 0;
    }

    /// Settles the entry a line answers; `Err` when the line breaks the
    /// protocol so that the worker must be restarted.
    fn answer(&mut self, text: &str) -> Result<(), String> {
        let (id, answer) = match parse_line(text) {
            Line::Blank => return Ok(()),
            Line::NoId => return Err(format!("answer line names no entry: {text:?}")),
            Line::About(id, answer) => (id, answer),
        };
        let Some(seq) = self.by_id.get(id).and_then(|s| s.front().copied()) else {
            if self.late.remove(id) {
                tracing::info!(%id, "late answer for an entry that timed out; ignored");
                return Ok(());
            }
            return Err(format!(
                "answer for an ID the worker was not given (or already answered): {text:?}"
            ));
        };
        self.forget(id);
        self.answered += 1;
        self.last_answer = Instant::now();
        if let Some(r) = self.in_flight.remove(&seq) {
            r.answer(answer);
        }
        Ok(())
    }

    /// Every unanswered entry, in the order given.
    fn take_unanswered(&mut self) -> Vec<Request> {
        self.by_id.clear();
        std::mem::take(&mut self.in_flight).into_values().collect()
    }

    /// How the worker's turn ends: a protocol break (even if it then
    /// exited 0) is not a clean exit; entries never written to it are
    /// kept apart from those it had.
    fn ended(&mut self, why: String, status: Option<std::process::ExitStatus>) -> End {
        let written = self.written_total;
        let (unanswered, unwritten) = self
            .take_unanswered()
            .into_iter()
            .partition(|r| r.end.is_some_and(|end| end <= written));
        let (why, clean) = match self.broken.take() {
            Some((broke, _)) => (broke, false),
            None => (why, status.is_some_and(|s| s.success())),
        };
        End::Ended {
            why,
            clean,
            code: status.and_then(|s| s.code()),
            unanswered,
            unwritten,
        }
    }

    /// Ends the worker: when `politely`, writes what is still queued,
    /// closes its stdin and gives it [`CLOSE_GRACE`] to exit; then asks
    /// its reaper to kill everything it started, and kills the reaper if
    /// that does not happen.
    async fn close(&mut self, politely: bool) {
        if politely {
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if let Some(stdin) = self.stdin.as_mut() {
                    let _ = stdin.write_all(&self.pending_out[self.written..]).await;
                    let _ = stdin.shutdown().await;
                }
                self.stdin = None;
                let _ = self.child.wait().await;
            })
            .await;
        }
        self.stdin = None;
        if let Some(pid) = self.child.id() {
            crate::reaper::terminate(pid);
            if tokio::time::timeout(CLOSE_GRACE, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// An exit status as sh reports it: the code, or 128 + the signal.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) if c > 128 => format!("exit {c}: killed by signal {}", c - 128),
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Writes some of `buf`; never ready without a stdin.
async fn write_some(stdin: Option<&mut ChildStdin>, buf: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(s) => s.write(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_lines_parse_by_the_protocol() {
        let about = |l| match parse_line(l) {
            Line::About(id, a) => (id.to_string(), a),
            other => panic!("{l:?} parsed as {other:?}"),
        };
        assert_eq!(about("ack 1-0"), ("1-0".into(), Answer::Ack));
        assert_eq!(about("ack 1-0\r\n"), ("1-0".into(), Answer::Ack));
        assert_eq!(about("retry 1-0"), ("1-0".into(), Answer::Retry(None)));
        assert_eq!(
            about("retry 1-0 250ms"),
            (
                "1-0".into(),
                Answer::Retry(Some(Duration::from_millis(250)))
            )
        );
        assert_eq!(
            about("fail 2-1 timed out after 3 s"),
            ("2-1".into(), Answer::Fail("timed out after 3 s".into()))
        );
        assert_eq!(
            about("dead 2-1 bad payload"),
            ("2-1".into(), Answer::Dead("bad payload".into()))
        );
        for bad in ["retry 1-0 soon", "dead 1-0", "ack 1-0 extra", "done 1-0"] {
            assert!(matches!(about(bad).1, Answer::Malformed(_)), "{bad}");
        }
        assert_eq!(parse_line("   "), Line::Blank);
        assert_eq!(parse_line("ack"), Line::NoId);
    }

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(outcome(Answer::Ack), Ok(Outcome::Ack));
        assert_eq!(
            outcome(Answer::Retry(None)),
            Ok(Outcome::Retry { after: None })
        );
        assert_eq!(
            outcome(Answer::Retry(Some(Duration::from_millis(5)))),
            Ok(Outcome::Retry {
                after: Some(Duration::from_millis(5))
            })
        );
        assert_eq!(
            outcome(Answer::Dead("x".into())),
            Ok(Outcome::DeadLetter { reason: "x".into() })
        );
        for failed in [
            Answer::Fail("x".into()),
            Answer::Malformed("x".into()),
            Answer::CutOff("x".into()),
        ] {
            assert!(outcome(failed).is_err());
        }
    }
}
