//! `consume --pipe CMD` against a real redis-server: the line protocol
//! (ack, retry, fail, dead), protocol errors, a crashing worker, a
//! graceful stop, no orphan worker, and the Python example worker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{alive, cli, command, produce, sk, stderr, xpending};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A test worker in sh: answers by the entry's `do` field and logs each
/// answer with the line it answers to `log`, and each start to
/// `log.starts`. `retry` and `unknown` behave only on a first attempt.
fn worker(dir: &Path) -> (String, PathBuf) {
    let log = dir.join("answers");
    let script = dir.join("worker.sh");
    std::fs::write(
        &script,
        r#"LOG="$1"
echo start >> "$LOG.starts"
while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/^{"stream":"[^"]*","id":"\([^"]*\)".*/\1/p')
  case "$line" in
    *'"do":"retry"'*'"attempt":'[2-9]*) ans="ack $id" ;;
    *'"do":"retry"'*) ans="retry $id 50ms" ;;
    *'"do":"fail"'*) ans="fail $id it broke" ;;
    *'"do":"dead"'*) ans="dead $id poison pill" ;;
    *'"do":"garbage"'*) ans="maybe $id" ;;
    *'"do":"baddelay"'*) ans="retry $id soonish" ;;
    *'"do":"unknown"'*'"attempt":'[2-9]*) ans="ack $id" ;;
    *'"do":"unknown"'*) ans="ack 1-1" ;;
    *) ans="ack $id" ;;
  esac
  printf '%s %s\n' "$ans" "$line" >> "$LOG"
  printf '%s\n' "$ans"
done
"#,
    )
    .expect("write worker");
    (format!("sh {} {}", script.display(), log.display()), log)
}

fn consume_pipe(server: &RedisServer, pipe: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "consume",
        "jobs",
        "-g",
        "g",
        "--create",
        "--from",
        "-",
        "--pipe",
        pipe,
        "--idle-exit",
        "2s",
        "--retry-backoff",
        "50ms",
    ];
    args.extend_from_slice(extra);
    sk(server, &args)
}

fn answers(log: &Path, verb: &str, field: &str) -> usize {
    lines(log)
        .iter()
        .filter(|l| l.starts_with(&format!("{verb} ")) && l.contains(field))
        .count()
}

fn dlq(server: &RedisServer) -> String {
    cli(server, &["XRANGE", "{jobs}:dlq", "-", "+"])
}

#[test]
fn pipe_worker_answers_ack_retry_fail_and_dead() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (cmd, log) = worker(dir.path());
    produce(&server, &["do=ack", "n={i}"], 5);
    produce(&server, &["do=retry"], 1);
    produce(&server, &["do=fail"], 1);
    produce(&server, &["do=dead"], 1);

    let o = consume_pipe(&server, &cmd, &["--max-deliveries", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    for n in 0..5 {
        let field = format!("\"n\":\"{n}\"");
        assert_eq!(answers(&log, "ack", &field), 1, "n={n}: {:?}", lines(&log));
    }
    assert_eq!(answers(&log, "retry", "\"do\":\"retry\""), 1);
    assert_eq!(
        answers(&log, "ack", "\"do\":\"retry\""),
        1,
        "retried once, then acked"
    );
    // Two failed attempts, then dead-lettered without a third run.
    assert_eq!(answers(&log, "fail", "\"do\":\"fail\""), 2);
    assert_eq!(answers(&log, "dead", "\"do\":\"dead\""), 1);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "2");
    let dead = dlq(&server);
    assert!(dead.contains("poison pill"), "{dead}");
    assert!(dead.contains("max 2"), "{dead}");
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    assert_eq!(lines(&dir.path().join("answers.starts")).len(), 1);
    // Settled entries leave no attempt mark behind (the retried one too).
    assert_eq!(cli(&server, &["HLEN", "{jobs}:attempts"]), "0");
}

#[test]
fn malformed_answers_count_as_failed_attempts_never_acks() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (cmd, log) = worker(dir.path());
    produce(&server, &["do=garbage"], 1);
    produce(&server, &["do=baddelay"], 1);
    produce(&server, &["do=ack"], 1);

    let o = consume_pipe(&server, &cmd, &["--max-deliveries", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("malformed"), "{err}");
    // One attempt each, then the dead-letter queue: never acked.
    assert_eq!(answers(&log, "maybe", "garbage"), 1);
    assert_eq!(answers(&log, "retry", "baddelay"), 1);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "2");
    assert_eq!(answers(&log, "ack", "\"do\":\"ack\""), 1);
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    // A malformed line about a known entry does not restart the worker.
    assert_eq!(lines(&dir.path().join("answers.starts")).len(), 1);
}

#[test]
fn answer_for_an_id_not_given_restarts_the_worker() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (cmd, log) = worker(dir.path());
    produce(&server, &["do=unknown"], 1);
    produce(&server, &["do=ack", "n={i}"], 5);

    let o = consume_pipe(&server, &cmd, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("not given"), "{err}");
    assert!(lines(&dir.path().join("answers.starts")).len() >= 2);
    // Cut off by the restart, retried, and acked by the new worker.
    assert_eq!(answers(&log, "ack 1-1", "\"do\":\"unknown\""), 1);
    let acked_again = lines(&log)
        .iter()
        .filter(|l| l.starts_with("ack ") && l.contains("\"do\":\"unknown\"") && retried(l))
        .count();
    assert_eq!(acked_again, 1, "{:?}", lines(&log));
    // Answers the old worker wrote after the bad line were not taken (the
    // entries were cut off and came back): at least once each.
    for n in 0..5 {
        assert!(
            answers(&log, "ack", &format!("\"n\":\"{n}\"")) >= 1,
            "n={n}"
        );
    }
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "0");
}

#[test]
fn worker_crash_mid_batch_loses_nothing() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (generic, log) = worker(dir.path());
    // First start: take 10 lines, answer the first 5, crash.
    let crash = dir.path().join("crash.sh");
    std::fs::write(
        &crash,
        format!(
            r#"if [ ! -e "{marker}" ]; then
  touch "{marker}"
  echo start >> "{log}.starts"
  i=0
  while IFS= read -r line; do
    i=$((i+1))
    id=$(printf '%s\n' "$line" | sed -n 's/^{{"stream":"[^"]*","id":"\([^"]*\)".*/\1/p')
    if [ $i -le 5 ]; then printf 'ack %s %s\n' "$id" "$line" >> "{log}"; echo "ack $id"; fi
    if [ $i -ge 10 ]; then exit 3; fi
  done
fi
exec {generic}
"#,
            marker = dir.path().join("crashed").display(),
            log = log.display(),
        ),
    )
    .expect("write");
    produce(&server, &["n={i}"], 20);

    let o = consume_pipe(
        &server,
        &format!("sh {}", crash.display()),
        &["--concurrency", "10"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(lines(&dir.path().join("answers.starts")).len(), 2);
    for n in 0..20 {
        assert_eq!(
            answers(&log, "ack", &format!("\"n\":\"{n}\"")),
            1,
            "n={n}: {:?}",
            lines(&log)
        );
    }
    // The unanswered ones were run again one at a time, none charged:
    // none went through the retry set.
    let retried = lines(&log).iter().filter(|l| retried(l)).count();
    assert_eq!(retried, 0, "charged: {:?}", lines(&log));
    assert!(stderr(&o).contains("unanswered"), "{}", stderr(&o));
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "0");
}

/// Whether a logged line shows a run after a failed attempt.
fn retried(line: &str) -> bool {
    line.contains("\"attempt\":") && !line.contains("\"attempt\":1}")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn stop_waits_for_in_flight_answers_and_leaves_the_rest_pending() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let got = dir.path().join("got");
    let script = dir.path().join("slow.sh");
    // `never` gets no answer; `slow` is answered a second after it arrived.
    std::fs::write(
        &script,
        format!(
            r#"while IFS= read -r line; do
  id=$(printf '%s\n' "$line" | sed -n 's/^{{"stream":"[^"]*","id":"\([^"]*\)".*/\1/p')
  case "$line" in
    *never*) echo "never $id" >> "{got}" ;;
    *) echo "slow $id" >> "{got}"; sleep 1; echo "ack $id" ;;
  esac
done
"#,
            got = got.display()
        ),
    )
    .expect("write");
    produce(&server, &["do=never"], 1);
    produce(&server, &["do=slow"], 1);
    let pipe = format!("sh {}", script.display());
    let mut child = command(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--pipe",
            &pipe,
            "--stop-timeout",
            "3s",
            "--max-deliveries",
            "1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(eventually_blocking(Duration::from_secs(10), || lines(&got)
        .len()
        == 2));
    let t = Instant::now();
    signal(&child, "INT");
    let status = child.wait().expect("wait");
    let took = t.elapsed();
    assert_eq!(status.code(), Some(130));
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    let never = lines(&got)[0].split(' ').nth(1).expect("id").to_string();
    // `slow` was answered during the stop and acked; `never` stays
    // pending, with no attempt counted (no retry, no dead letter).
    let pending = cli(&server, &["XPENDING", "jobs", "g", "-", "+", "10"]);
    assert_eq!(xpending(&server, "jobs", "g"), 1, "{pending}");
    assert!(pending.contains(&never), "{pending}");
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "0");
    assert_eq!(cli(&server, &["ZCARD", "{jobs}:retry:g"]), "0");
}

#[test]
fn sigkilled_consumer_leaves_no_worker_behind() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let pidfile = dir.path().join("pid");
    let pipe = format!("echo $$ > {}; exec sleep 600", pidfile.display());
    let mut child = command(
        &server,
        &["consume", "jobs", "-g", "g", "--create", "--pipe", &pipe],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    assert!(eventually_blocking(Duration::from_secs(10), || {
        !lines(&pidfile).is_empty()
    }));
    let pid = lines(&pidfile)[0].trim().to_string();
    assert!(
        eventually_blocking(Duration::from_secs(5), || std::fs::read_to_string(format!(
            "/proc/{pid}/cmdline"
        ))
        .is_ok_and(|c| c.starts_with("sleep"))),
        "the worker never ran"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        eventually_blocking(Duration::from_secs(5), || !alive(&pid)),
        "worker {pid} outlived its consumer"
    );
}

#[test]
fn pipe_flags_are_checked() {
    let server = RedisServer::start().expect("redis");
    for args in [
        &[
            "consume", "jobs", "-g", "g", "--pipe", "cat", "--ack", "none",
        ][..],
        &[
            "consume", "jobs", "-g", "g", "--pipe", "cat", "--exec", "cat",
        ][..],
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "--pipe",
            "cat",
            "--concurrency",
            "0",
        ][..],
    ] {
        let o = sk(&server, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
    }
}

/// python3 on PATH, or a loud skip (a failure where CI is set: CI has it).
fn python3() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "python3 is missing on CI: the Python worker example is not tested"
    );
    eprintln!("\n*** SKIPPED: python3 not found; the Python worker example was NOT tested ***\n");
    None
}

#[test]
fn python_worker_example_acks_fails_and_dead_letters() {
    let Some(python) = python3() else { return };
    let server = RedisServer::start().expect("redis");
    let worker = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/python-worker/worker.py")
        .canonicalize()
        .expect("examples/python-worker/worker.py");
    produce(&server, &["n={i}"], 50);
    produce(&server, &["n=-1"], 1);
    produce(&server, &["n=abc"], 1);
    // One entry of a traced job: the worker logs with its trace id.
    let traced = command(
        &server,
        &["produce", "jobs", "--field", "n=1000", "--quiet"],
    )
    .env(
        "TRACEPARENT",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )
    .output()
    .expect("produce");
    assert!(traced.status.success(), "{}", stderr(&traced));
    let pipe = format!("{python} {}", worker.display());
    let o = consume_pipe(&server, &pipe, &["--max-deliveries", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    // The worker logs each result on stderr: 49² = 2401.
    assert!(err.contains("49 squared is 2401"), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("1000 squared is 1000000"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.starts_with("trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id="),
        "the worker's log joins the producer's trace: {line}"
    );
    assert!(
        !err.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7"),
        "a span of its own"
    );
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "2");
    let dead = dlq(&server);
    assert!(dead.contains("negative"), "{dead}");
    assert!(dead.contains("max 2"), "{dead}");
}

#[test]
fn the_worker_never_holds_more_than_concurrency_unanswered() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let got = dir.path().join("got");
    // Reads and never answers.
    let pipe = format!("while IFS= read -r l; do echo x >> {}; done", got.display());
    produce(&server, &["n={i}"], 10);
    let mut child = command(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--pipe",
            &pipe,
            "--concurrency",
            "3",
            "--stop-timeout",
            "100ms",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn");
    assert!(eventually_blocking(Duration::from_secs(10), || lines(&got)
        .len()
        >= 3));
    // Absence can only be checked by waiting a while.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&got).len(), 3);
    signal(&child, "TERM");
    assert_eq!(child.wait().expect("wait").code(), Some(130));
    // Nothing was answered: nothing acked, retried or dead-lettered.
    assert_eq!(xpending(&server, "jobs", "g"), 10);
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "0");
}
