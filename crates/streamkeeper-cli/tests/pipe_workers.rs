//! `consume --pipe` with workers that behave like real ones (docs/design.md §6
//! "Pipe workers"): they crash on one entry, recycle after N jobs, print
//! garbage, hang, are mistyped, start helpers in a session of their own,
//! and get 10 KB entries faster than they answer. Each test counts what
//! matters — runs and acks per entry, dead letters, peak memory,
//! survivors — against a real redis-server and a real Python worker.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{alive, cli, command, produce, sk, stderr, xpending};

/// The test worker: answers by the entry's `do` field, logging `run N`
/// when it gets entry N and `ack N` when it acks it, `start` when it
/// starts. Environment: `RECYCLE` (exit 0 after that many answers),
/// `SLEEP_MS` (per entry), `START_MS` (before reading anything),
/// `SPAWN` (start `sleep 600` in a new session and write its pid there).
const WORKER: &str = r#"
import json, os, signal, subprocess, sys, time
log = open(os.environ["LOG"], "a", buffering=1)
log.write("start\n")
if os.environ.get("SPAWN"):
    p = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.environ["SPAWN"], "w") as f:
        f.write(str(p.pid))
time.sleep(int(os.environ.get("START_MS", "0")) / 1000)
recycle = int(os.environ.get("RECYCLE", "0"))
sleep = int(os.environ.get("SLEEP_MS", "0")) / 1000
answered = 0
for line in sys.stdin:
    e = json.loads(line)
    n, do, id = e["fields"].get("n", "?"), e["fields"].get("do", "ok"), e["id"]
    log.write(f"run {n}\n")
    if sleep:
        time.sleep(sleep)
    if do == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif do == "exit1":
        sys.exit(1)
    elif do == "hang":
        time.sleep(3600)
    elif do == "garbage":
        print("oops", flush=True)
        continue
    elif do == "fail":
        print(f"fail {id} card declined", flush=True)
    else:
        log.write(f"ack {n}\n")
        print(f"ack {id}", flush=True)
    answered += 1
    if recycle and answered >= recycle:
        sys.exit(0)
"#;

struct Worker {
    _dir: tempfile::TempDir,
    cmd: String,
    log: PathBuf,
    dir: PathBuf,
}

fn worker() -> Worker {
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("worker.py");
    std::fs::write(&script, WORKER).expect("write worker");
    Worker {
        cmd: format!("python3 {}", script.display()),
        log: dir.path().join("log"),
        dir: dir.path().to_path_buf(),
        _dir: dir,
    }
}

impl Worker {
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many `verb N` lines there are per N.
    fn per_entry(&self, verb: &str) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for l in self.lines() {
            if let Some(n) = l.strip_prefix(&format!("{verb} ")) {
                *m.entry(n.to_string()).or_default() += 1;
            }
        }
        m
    }

    fn starts(&self) -> usize {
        self.lines().iter().filter(|l| *l == "start").count()
    }
}

fn consumer(server: &RedisServer, w: &Worker, env: &[(&str, &str)], extra: &[&str]) -> Command {
    let mut args = vec![
        "consume",
        "jobs",
        "-g",
        "g",
        "--create",
        "--from",
        "-",
        "--pipe",
        &w.cmd,
        "--retry-backoff",
        "50ms",
    ];
    args.extend_from_slice(extra);
    let mut c = command(server, &args);
    c.env("LOG", &w.log).envs(env.iter().copied());
    c
}

/// Runs to the end, failing the test after `limit` instead of hanging.
fn run_within(mut c: Command, limit: Duration) -> Output {
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("the consumer was still running after {limit:?}");
        }
    }
}

fn dlq(server: &RedisServer) -> (usize, String) {
    let len = cli(server, &["XLEN", "{jobs}:dlq"]).parse().expect("len");
    (len, cli(server, &["XRANGE", "{jobs}:dlq", "-", "+"]))
}

/// Every healthy entry `prefix0..prefixN` acked exactly once.
fn each_acked_once(w: &Worker, prefix: &str, n: u32) {
    let acks = w.per_entry("ack");
    for i in 0..n {
        let key = format!("{prefix}{i}");
        assert_eq!(acks.get(&key).copied(), Some(1), "{key}: acks {acks:?}");
    }
}

#[test]
fn a_worker_killed_by_one_entry_gets_only_that_entry_dead_lettered() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 150);
    produce(&server, &["n=poison", "do=crash"], 1);
    produce(&server, &["n=b{i}"], 150);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[],
            &["--max-deliveries", "2", "--idle-exit", "3s"],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 1, "only the poison entry: {dump}");
    assert!(dump.contains("poison"), "{dump}");
    each_acked_once(&w, "a", 150);
    each_acked_once(&w, "b", 150);
    // Charged twice, so run at most twice alone plus once in the crowd.
    let runs = w.per_entry("run");
    assert!(runs["poison"] <= 3, "poison runs: {}", runs["poison"]);
    assert_eq!(xpending(&server, "jobs", "g"), 0);
}

#[test]
fn poison_entries_left_alone_at_the_end_reach_the_dead_letter_queue() {
    // Charged lone runs explain their worker's death: they must not add
    // up to "the command cannot start" and stop the consumer.
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 18);
    produce(&server, &["n=p{i}", "do=exit1"], 2);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[],
            &["--max-deliveries", "3", "--idle-exit", "3s"],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 2, "{dump}");
    each_acked_once(&w, "a", 18);
    assert_eq!(xpending(&server, "jobs", "g"), 0);
}

#[test]
fn a_recycling_worker_is_restarted_at_once_and_charges_nothing() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 1000);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[("RECYCLE", "50")],
            &["--max-deliveries", "1", "--count", "1000"],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(dlq(&server).0, 0, "{}", dlq(&server).1);
    each_acked_once(&w, "a", 1000);
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    assert!(w.starts() >= 20, "recycled {} times", w.starts());
}

#[test]
fn a_garbage_line_charges_only_the_entry_that_caused_it() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 200);
    produce(&server, &["n=garbage", "do=garbage"], 1);
    produce(&server, &["n=b{i}"], 200);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[],
            &["--max-deliveries", "1", "--idle-exit", "3s"],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 1, "{dump}");
    assert!(dump.contains("garbage"), "{dump}");
    each_acked_once(&w, "a", 200);
    each_acked_once(&w, "b", 200);
}

#[test]
fn a_command_that_cannot_start_stops_the_consumer_and_dead_letters_nothing() {
    for (cmd, says) in [
        ("no-such-worker-xyz --flag", "cannot be started"),
        ("python3 /nonexistent/worker.py", "5 times in a row"),
        ("true", "5 times in a row"),
    ] {
        let server = RedisServer::start().expect("redis");
        let w = Worker {
            cmd: cmd.to_string(),
            ..worker()
        };
        produce(&server, &["n=a{i}"], 100);
        let started = Instant::now();
        let o = run_within(
            consumer(&server, &w, &[], &["--max-deliveries", "1"]),
            Duration::from_secs(90),
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        let last = err
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.contains(cmd) && last.contains(says),
            "{cmd}: last line {last:?}"
        );
        assert_eq!(dlq(&server).0, 0, "{cmd}: {}", dlq(&server).1);
        eprintln!("{cmd}: stopped after {:?}", started.elapsed());
        // Nothing was charged: a working worker with one attempt each
        // handles all of them.
        let good = worker();
        let o = run_within(
            consumer(
                &server,
                &good,
                &[],
                &[
                    "--max-deliveries",
                    "1",
                    "--idle-exit",
                    "2s",
                    "--claim-after",
                    "250ms",
                ],
            ),
            Duration::from_secs(60),
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(dlq(&server).0, 0, "{cmd}: {}", dlq(&server).1);
        each_acked_once(&good, "a", 100);
    }
}

#[test]
fn a_hung_run_times_out_and_only_it_is_charged() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 30);
    produce(&server, &["n=stuck", "do=hang"], 1);
    produce(&server, &["n=b{i}"], 30);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[],
            &[
                "--max-deliveries",
                "1",
                "--timeout",
                "1s",
                "--idle-exit",
                "3s",
            ],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 1, "{dump}");
    assert!(
        dump.contains("stuck") && dump.contains("timed out after 1s"),
        "{dump}"
    );
    each_acked_once(&w, "a", 30);
    each_acked_once(&w, "b", 30);
}

#[test]
fn exec_timeout_kills_the_command_and_fails_the_attempt() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    produce(&server, &["n=a{i}"], 3);
    produce(&server, &["n=stuck"], 1);
    let exec = format!(
        "read l; case \"$l\" in *stuck*) sleep 600 & echo $! > {}; wait;; esac",
        pidfile.display()
    );
    let o = run_within(
        {
            let mut c = command(
                &server,
                &[
                    "consume",
                    "jobs",
                    "-g",
                    "g",
                    "--create",
                    "--from",
                    "-",
                    "--exec",
                    &exec,
                    "--timeout",
                    "1s",
                    "--max-deliveries",
                    "1",
                    "--idle-exit",
                    "2s",
                ],
            );
            c.env("LOG", "/dev/null");
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 1, "{dump}");
    assert!(dump.contains("timed out after 1s"), "{dump}");
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    assert!(
        eventually_blocking(Duration::from_secs(5), || !alive(pid.trim())),
        "the timed-out command's child {pid} survived"
    );
}

#[test]
fn idle_exit_does_not_fire_while_the_worker_restarts() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=a{i}"], 200);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[("RECYCLE", "20"), ("START_MS", "700")],
            &["--idle-exit", "400ms"],
        ),
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    each_acked_once(&w, "a", 200);
}

#[test]
fn a_fail_answer_keeps_the_workers_reason_in_the_dead_letter() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    produce(&server, &["n=card", "do=fail"], 1);
    let o = run_within(
        consumer(
            &server,
            &w,
            &[],
            &["--max-deliveries", "1", "--idle-exit", "2s"],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (dead, dump) = dlq(&server);
    assert_eq!(dead, 1, "{dump}");
    assert!(dump.contains("card declined"), "{dump}");
}

fn spawn_with_helper(server: &RedisServer, w: &Worker, pidfile: &Path) -> Child {
    let spawn = pidfile.to_str().expect("utf-8 path");
    let mut c = consumer(server, w, &[("SPAWN", spawn)], &[]);
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    assert!(
        eventually_blocking(Duration::from_secs(15), || std::fs::read_to_string(pidfile)
            .is_ok_and(|p| !p.trim().is_empty())),
        "the worker never started its helper"
    );
    child
}

#[test]
fn a_helper_in_its_own_session_dies_with_the_consumer() {
    for sig in ["KILL", "TERM"] {
        let server = RedisServer::start().expect("redis");
        let w = worker();
        let pidfile = w.dir.join(format!("helper-{sig}"));
        let child = spawn_with_helper(&server, &w, &pidfile);
        let helper = std::fs::read_to_string(&pidfile).expect("pid");
        let helper = helper.trim();
        assert!(alive(helper), "the helper is not running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let out = child.wait_with_output().expect("wait");
        assert!(
            eventually_blocking(Duration::from_secs(5), || !alive(helper)),
            "SIG{sig}: helper {helper} (setsid) outlived the consumer ({:?})",
            out.status
        );
    }
}

/// Peak RSS (VmHWM) of `pid` in KiB, while it runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[test]
fn memory_stays_bounded_with_10kb_entries_and_a_busy_worker() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    let big = format!("data={}", "x".repeat(10 * 1024));
    produce(&server, &["n=a{i}", &big], 8000);
    let mut c = consumer(
        &server,
        &w,
        &[("SLEEP_MS", "1")],
        &["--idle-exit", "3s", "--count", "8000"],
    );
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(kib) = peak_rss_kib(child.id()) {
            peak = peak.max(kib);
        }
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after 180 s");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    each_acked_once(&w, "a", 8000);
    eprintln!("peak RSS of the consumer: {} MiB", peak / 1024);
    // 8,000 × 10 KB = 80 MB went through; --concurrency (64) entries of
    // 10 KB are what it may hold.
    assert!(peak < 60 * 1024, "peak RSS {} MiB", peak / 1024);
}

#[test]
fn sigkilling_the_consumer_charges_no_entry_its_worker_never_read() {
    let server = RedisServer::start().expect("redis");
    let w = worker();
    // A worker slow to start: all ten entries wait in its input, unread.
    assert!(sk(
        &server,
        &["produce", "jobs", "--field", "n=q{i}", "--count", "10", "-q"]
    )
    .status
    .success());
    for round in 0..3 {
        let mut c = consumer(
            &server,
            &w,
            &[("START_MS", "60000")],
            &["-c", "c1", "--max-deliveries", "1", "--claim-after", "1s"],
        );
        let mut child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Long enough for the lazy attempt marks of every queued entry.
        std::thread::sleep(Duration::from_millis(1500));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let (dead, _) = dlq(&server);
        assert_eq!(dead, 0, "round {round}: dead-lettered without a run");
    }
    assert!(
        !w.lines().iter().any(|l| l.starts_with("run ")),
        "the slow worker read nothing"
    );
    // A worker that answers: the never-read entries are acked once each.
    let healthy = worker();
    let o = run_within(
        consumer(
            &server,
            &healthy,
            &[],
            &["-c", "c1", "--max-deliveries", "1", "--idle-exit", "2s"],
        ),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    each_acked_once(&healthy, "q", 10);
    let (dead, letters) = dlq(&server);
    assert_eq!(dead, 0, "{letters}");
}
