//! One running `--pipe` worker process: started under a reaper, fed entry
//! lines, its answer lines read and matched to the entries it was given,
//! timed out and closed. The supervisor (`mod.rs`) decides what happens
//! when it ends.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::protocol::{parse_line, Answer, Line, MAX_LINE};
use super::{Backlog, End, Request, WorkerSpec};

/// Timed-out IDs remembered per worker so that their late answers are
/// ignored rather than taken for a protocol error.
const MAX_LATE: usize = 10_000;
/// How long a worker that exited may take to close its stdout (answers it
/// wrote before exiting still count).
const EXIT_DRAIN: Duration = Duration::from_secs(1);
/// How long a worker gets to exit after its stdin closed, before SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A running worker process. One task (the supervisor) does all of its
/// I/O: writes and reads are cancel-safe `select!` branches, so feeding
/// and answering never wait on each other and no entry crosses an extra
/// task on its way.
pub(super) struct Worker {
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
    pub(super) answered: u64,
    /// IDs that timed out: their late answers are ignored.
    late: HashSet<String>,
}

/// Requests taken from the channel at once before answers are looked at.
const FEED_BURST: usize = 1024;
/// Above this many written bytes at the front, `pending_out` is compacted.
const COMPACT_AT: usize = 64 * 1024;

impl Worker {
    pub(super) fn spawn(spec: &WorkerSpec) -> std::io::Result<Worker> {
        let mut cmd = crate::reaper::command(&spec.cmd);
        cmd.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if crate::logs::json() {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        if let Some(err) = child.stderr.take() {
            tokio::spawn(crate::logs::forward(err));
        }
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
    pub(super) async fn serve(
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
    pub(super) async fn close(&mut self, politely: bool) {
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
