//! `consume --pipe CMD`: one long-lived worker process speaking a line protocol.
//!
//! The worker gets one entry JSON line per entry on stdin and answers
//! `ack ID`, `retry ID [DURATION]`, `fail ID [REASON]` or `dead ID REASON`
//! on stdout. A supervisor task owns the process: it feeds it, matches
//! answers to entries, restarts it with backoff when it exits or breaks the
//! protocol, and settles what it left unanswered as failed attempts. The
//! consumer's guarantees come from `GroupConsumer::run`: each entry is one
//! handler call that waits for its answer (so `--concurrency` bounds the
//! unanswered entries), and [`outcome`] is the one place that turns an
//! answer into an [`Outcome`].

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::time::{Duration, Instant};

use streamkeeper::{wire, Delivery, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::children::ChildGroup;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest answer line accepted; a longer one breaks the protocol.
const MAX_LINE: usize = 64 * 1024;
/// First wait before a worker is restarted; it doubles up to [`RESTART_MAX`].
const RESTART_MIN: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(10);
/// A worker that ran this long before it ended restarts after [`RESTART_MIN`] again.
const RESTART_RESET: Duration = Duration::from_secs(30);
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
    /// The worker ended (or was restarted) before answering.
    CutOff(String),
    /// The consumer is stopping and no answer came within the stop
    /// timeout: the entry stays pending; the run counts as an attempt cut
    /// off (it was handed to the worker).
    Abandoned,
}

/// Turns an answer into the consumer's outcome: `Err` is a failed attempt
/// (retried with the group's backoff, dead-lettered when it was the
/// `--max-deliveries`-th).
///
/// The pipe consumer runs in manual-ack mode (see [`Pipe::handle`]), so
/// `Outcome::Ack` only settles the handler call: the entry is acked when
/// the worker said `ack`, and left pending when it was abandoned.
pub fn outcome(answer: Answer) -> Result<Outcome, String> {
    match answer {
        Answer::Ack | Answer::Abandoned => Ok(Outcome::Ack),
        Answer::Retry(after) => Ok(Outcome::Retry { after }),
        Answer::Dead(reason) => Ok(Outcome::DeadLetter { reason }),
        Answer::Fail(reason) => Err(format!("worker answered fail: {reason}")),
        Answer::Malformed(why) => Err(format!("malformed answer: {why}")),
        Answer::CutOff(why) => Err(format!("cut off: {why}")),
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
    /// Run via `sh -c`.
    pub cmd: String,
    /// Extra environment (SK_STREAM, SK_GROUP, SK_CONSUMER).
    pub env: Vec<(String, String)>,
    /// After the consumer is told to stop, how long in-flight entries may
    /// wait for their answers.
    pub stop_timeout: Duration,
}

struct Request {
    id: String,
    line: String,
    reply: oneshot::Sender<Answer>,
}

/// The consumer's side of the pipe: cheap to clone, one per handler.
#[derive(Clone)]
pub struct Pipe {
    tx: mpsc::Sender<Request>,
}

impl Pipe {
    /// Starts the supervisor (which starts the worker). It ends, killing
    /// the worker, once every clone of the returned `Pipe` is dropped and
    /// the last answer is in.
    pub fn start(spec: WorkerSpec, stop: CancellationToken) -> (Pipe, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(supervise(spec, rx, stop));
        (Pipe { tx }, task)
    }

    /// Sends one entry line and waits for its answer.
    pub async fn ask(&self, id: String, line: String) -> Answer {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request { id, line, reply }).await.is_err() {
            return Answer::CutOff("the worker supervisor stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Answer::CutOff("the worker supervisor stopped".into()))
    }

    /// The handler of one delivery: feed it, wait, ack on `ack`, map the
    /// answer with [`outcome`].
    pub async fn handle(&self, d: &Delivery) -> Result<Outcome, String> {
        let line = wire::entry_to_line(d.stream().as_str(), d.entry());
        let answer = self.ask(d.id().to_string(), line).await;
        match &answer {
            Answer::Ack => d.ack(),
            Answer::Malformed(why) => {
                tracing::warn!(id = %d.id(), %why, "malformed answer from the --pipe worker; counted as a failed attempt")
            }
            Answer::Abandoned => {
                tracing::info!(id = %d.id(), "no answer before the stop timeout; the entry stays pending")
            }
            _ => {}
        }
        outcome(answer)
    }
}

/// Why one worker's turn ended.
enum End {
    /// Every `Pipe` is gone and nothing is in flight: stop for good.
    Closed,
    /// The consumer stopped and the stop timeout passed.
    Stopped,
    /// Restart the worker (the reason is logged; in-flight entries were
    /// cut off).
    Restart(String),
}

async fn supervise(spec: WorkerSpec, mut rx: mpsc::Receiver<Request>, stop: CancellationToken) {
    let mut backoff = RESTART_MIN;
    loop {
        if stop.is_cancelled() {
            // No new worker once stopping: what still comes is left pending.
            abandon_rest(&mut rx).await;
            return;
        }
        let started = Instant::now();
        let end = match Worker::spawn(&spec) {
            Ok(mut worker) => {
                let end = worker.serve(&mut rx, &stop, spec.stop_timeout).await;
                worker.close(matches!(end, End::Closed)).await;
                end
            }
            Err(e) => End::Restart(format!("cannot start the --pipe command: {e}")),
        };
        match end {
            End::Closed => return,
            End::Stopped => {
                abandon_rest(&mut rx).await;
                return;
            }
            End::Restart(why) => {
                if started.elapsed() >= RESTART_RESET {
                    backoff = RESTART_MIN;
                }
                tracing::warn!(reason = %why, ?backoff, "--pipe worker ended; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(RESTART_MAX);
            }
        }
    }
}

/// Answers everything still coming with [`Answer::Abandoned`] until every
/// `Pipe` is dropped.
async fn abandon_rest(rx: &mut mpsc::Receiver<Request>) {
    while let Some(r) = rx.recv().await {
        let _ = r.reply.send(Answer::Abandoned);
    }
}

/// A running worker process. One task (the supervisor) does all of its
/// I/O: writes and reads are cancel-safe `select!` branches, so feeding
/// and answering never wait on each other and no entry crosses an extra
/// task on its way.
struct Worker {
    child: Child,
    /// The worker's process group (`children.rs`): killed, helpers and
    /// all, when the worker is closed or the consumer dies.
    group: ChildGroup,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    /// Entry lines not yet written (at most `--concurrency` of them).
    pending_out: Vec<u8>,
    written: usize,
    /// Bytes read from stdout: `read_buf[..read_len]`.
    read_buf: Vec<u8>,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The entry each unanswered ID was given for…
    in_flight: HashMap<String, oneshot::Sender<Answer>>,
    /// …and later deliveries of an ID that is still unanswered (rare).
    repeats: HashMap<String, VecDeque<oneshot::Sender<Answer>>>,
    in_flight_len: usize,
}

/// Requests taken from the channel at once before answers are looked at.
const FEED_BURST: usize = 1024;

impl Worker {
    fn spawn(spec: &WorkerSpec) -> std::io::Result<Worker> {
        // Its own process group: a Ctrl-C on the terminal reaches the
        // consumer only, which stops feeding and waits for answers; and
        // the group dies with the consumer, however the consumer ends.
        let group = ChildGroup::start().map_err(std::io::Error::other)?;
        let mut cmd = group.command(&spec.cmd);
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
            group,
            stdin: Some(stdin),
            stdout,
            pending_out: Vec::with_capacity(64 * 1024),
            written: 0,
            read_buf: vec![0; 64 * 1024],
            partial: Vec::new(),
            in_flight: HashMap::new(),
            repeats: HashMap::new(),
            in_flight_len: 0,
        })
    }

    /// Feeds requests and matches answers until the worker ends, breaks
    /// the protocol, or there is nothing left to do.
    async fn serve(
        &mut self,
        rx: &mut mpsc::Receiver<Request>,
        stop: &CancellationToken,
        stop_timeout: Duration,
    ) -> End {
        let mut closed = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut exited: Option<(std::process::ExitStatus, tokio::time::Instant)> = None;
        loop {
            if closed && self.in_flight_len == 0 {
                return End::Closed;
            }
            let timer = deadline
                .into_iter()
                .chain(exited.map(|(_, at)| at + EXIT_DRAIN))
                .min();
            let to_write = !self.pending_out.is_empty() && self.stdin.is_some();
            tokio::select! {
                biased;
                read = self.stdout.read(&mut self.read_buf) => match read {
                    Ok(0) | Err(_) => {
                        let why = match exited {
                            Some((status, _)) => format!("worker exited ({status})"),
                            None => "worker closed its stdout".to_string(),
                        };
                        // A last line without a newline still counts.
                        if !self.partial.is_empty() {
                            let last = std::mem::take(&mut self.partial);
                            if let Err(e) = self.answer(&String::from_utf8_lossy(&last)) {
                                return self.restart(e);
                            }
                        }
                        return self.restart(why);
                    }
                    Ok(n) => {
                        if let Err(why) = self.answer_lines(n) {
                            return self.restart(why);
                        }
                    }
                },
                wrote = write_some(self.stdin.as_mut(), &self.pending_out[self.written..]), if to_write => match wrote {
                    Ok(n) => {
                        self.written += n;
                        if self.written == self.pending_out.len() {
                            self.pending_out.clear();
                            self.written = 0;
                        }
                    }
                    Err(_) => {
                        // The worker stopped reading (it is exiting): its
                        // exit is noticed and its entries cut off.
                        self.stdin = None;
                        self.pending_out.clear();
                        self.written = 0;
                    }
                },
                status = self.child.wait(), if exited.is_none() => {
                    let at = tokio::time::Instant::now();
                    match status {
                        Ok(s) => exited = Some((s, at)),
                        Err(e) => return self.restart(format!("waiting for the worker failed: {e}")),
                    }
                }
                _ = stop.cancelled(), if deadline.is_none() => {
                    deadline = Some(tokio::time::Instant::now() + stop_timeout);
                }
                _ = sleep_until(timer), if timer.is_some() => {
                    if let Some((status, _)) = exited {
                        return self.restart(format!("worker exited ({status}) and its stdout stayed open"));
                    }
                    self.settle_all(|| Answer::Abandoned);
                    return End::Stopped;
                }
                req = rx.recv(), if !closed => match req {
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
                    None => closed = true,
                },
            }
        }
    }

    fn feed(&mut self, r: Request) {
        if self.stdin.is_some() {
            self.pending_out.extend_from_slice(r.line.as_bytes());
            self.pending_out.push(b'\n');
        }
        // Without stdin the worker is on its way out: the exit is noticed
        // by `serve` and this entry is cut off with the others.
        match self.in_flight.entry(r.id) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(r.reply);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                self.repeats
                    .entry(o.key().clone())
                    .or_default()
                    .push_back(r.reply);
            }
        }
        self.in_flight_len += 1;
    }

    /// Settles the entries answered by the complete lines among the `n`
    /// bytes just read into `read_buf`.
    fn answer_lines(&mut self, n: usize) -> Result<(), String> {
        let buf = std::mem::take(&mut self.read_buf);
        let result = (|| {
            let mut rest = &buf[..n];
            while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                let (line, tail) = rest.split_at(end);
                rest = &tail[1..];
                if self.partial.is_empty() {
                    self.answer(&String::from_utf8_lossy(line))?;
                } else {
                    let mut whole = std::mem::take(&mut self.partial);
                    whole.extend_from_slice(line);
                    self.answer(&String::from_utf8_lossy(&whole))?;
                }
            }
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE {
                return Err(format!("answer line longer than {} KiB", MAX_LINE / 1024));
            }
            Ok(())
        })();
        self.read_buf = buf;
        result
    }

    /// Settles the entry a line answers; `Err` when the line breaks the
    /// protocol so that the worker must be restarted.
    fn answer(&mut self, text: &str) -> Result<(), String> {
        let (id, answer) = match parse_line(text) {
            Line::Blank => return Ok(()),
            Line::NoId => return Err(format!("answer line names no entry: {text:?}")),
            Line::About(id, answer) => (id, answer),
        };
        let Some(reply) = self.in_flight.remove(id) else {
            return Err(format!(
                "answer for an ID the worker was not given (or already answered): {text:?}"
            ));
        };
        if let Some(more) = self.repeats.get_mut(id) {
            if let Some(next) = more.pop_front() {
                self.in_flight.insert(id.to_string(), next);
            }
            if more.is_empty() {
                self.repeats.remove(id);
            }
        }
        self.in_flight_len -= 1;
        let _ = reply.send(answer);
        Ok(())
    }

    fn settle_all(&mut self, answer: impl Fn() -> Answer) {
        for (_, reply) in self.in_flight.drain() {
            let _ = reply.send(answer());
        }
        for (_, more) in self.repeats.drain() {
            for reply in more {
                let _ = reply.send(answer());
            }
        }
        self.in_flight_len = 0;
    }

    fn restart(&mut self, why: String) -> End {
        if self.in_flight_len > 0 {
            tracing::warn!(
                unanswered = self.in_flight_len,
                reason = %why,
                "--pipe worker left entries unanswered; they count as failed attempts"
            );
        }
        self.settle_all(|| Answer::CutOff(why.clone()));
        End::Restart(why)
    }

    /// Ends the worker: when `politely`, writes what is still queued,
    /// closes its stdin and gives it [`CLOSE_GRACE`] to exit; then kills
    /// its whole process group.
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
        self.group.kill_all();
        let _ = self.child.kill().await;
    }
}

/// Writes some of `buf`; never ready without a stdin.
async fn write_some(stdin: Option<&mut ChildStdin>, buf: &[u8]) -> std::io::Result<usize> {
    match stdin {
        Some(s) => s.write(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
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
    fn pipe_flags_parse_as_typed_values() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from([&["streamkeeper"], args].concat());
        let cli = parse(&[
            "consume",
            "s",
            "-g",
            "g",
            "--pipe",
            "python3 w.py",
            "--stop-timeout",
            "3s",
        ])
        .expect("parse");
        let Command::Consume(a) = cli.command else {
            panic!("not consume")
        };
        assert_eq!(a.pipe.as_deref(), Some("python3 w.py"));
        assert_eq!(a.stop_timeout, Duration::from_secs(3));
        assert_eq!(a.concurrency, None);
        assert!(parse(&["consume", "s", "-g", "g", "--pipe", "x", "--exec", "y"]).is_err());
        assert!(parse(&[
            "consume",
            "s",
            "-g",
            "g",
            "--pipe",
            "x",
            "--stop-timeout",
            "soon"
        ])
        .is_err());
        let Command::Bench(b) = parse(&["bench", "consume", "--pipe"])
            .expect("parse")
            .command
        else {
            panic!("not bench")
        };
        assert_eq!(b.pipe.as_deref(), Some(crate::bench_e2e::BUILTIN_WORKER));
        let Command::Bench(b) = parse(&["bench", "e2e", "--rate", "5000/s"])
            .expect("parse")
            .command
        else {
            panic!("not bench")
        };
        assert_eq!(b.rate, Some(5000.0));
        assert_eq!(b.pipe, None);
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
