//! The consumer's guarantees under ordinary operations, attacked the way an
//! independent tester would: live consumers with handlers slower than
//! `--claim-after`, graceful restart loops, SIGKILL loops, and a SIGKILLed
//! consumer's `--exec` children. Each test counts what matters — handler
//! runs per entry, entries dead-lettered without a handler run, children
//! left running — and asserts it is 0.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli, command, sk};
use streamkeeper_testkit::RedisServer;

fn produce(server: &RedisServer, stream: &str, n: u64, slow_every: Option<u64>) {
    let mut lines = String::new();
    for i in 0..n {
        let slow = slow_every.is_some_and(|k| i % k == 0);
        lines.push_str(&format!(
            "{{\"n\":\"{i}\",\"slow\":\"{}\"}}\n",
            u8::from(slow)
        ));
    }
    let o = common::sk_stdin(server, &["-q", "produce", stream], lines.as_bytes());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A consumer process, SIGKILLed if a failing test leaves it running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A consumer running `script` per entry; its logs go to `dir`.
fn consumer(server: &RedisServer, dir: &Path, name: &str, extra: &[&str], script: &str) -> Proc {
    let err = std::fs::File::create(dir.join(format!("{name}.err"))).expect("err file");
    let mut args = vec!["consume", "s", "-g", "g", "-c", name, "--exec", script];
    args.extend_from_slice(extra);
    Proc(
        command(server, &args)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn consumer"),
    )
}

/// Lines of the handler log, counted per entry ID.
fn runs(log: &Path, prefix: &str) -> HashMap<String, u32> {
    let mut m = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        if let Some(id) = line.strip_prefix(prefix) {
            *m.entry(id.trim().to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

fn dead_letter_ids(server: &RedisServer) -> Vec<String> {
    let o = sk(server, &["--json", "dlq", "ls", "s", "--count", "100000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    common::json_lines(&o)
        .iter()
        .map(|v| {
            v["fields"]["sk-origin-id"]
                .as_str()
                .map(str::to_string)
                .expect("sk-origin-id")
        })
        .collect()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "consumer did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn live_consumers_never_take_each_others_entries_however_slow_the_handler() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    // 600 entries, every 50th takes 1.5 s: longer than --claim-after. Both
    // consumers read ahead far more than they can handle within 1 s.
    produce(&server, "s", 600, Some(50));
    let script = format!(
        "if grep -q '\"slow\":\"1\"'; then sleep 1.5; else sleep 0.005; fi; echo \"run $SK_ID\" >> {}",
        log.display()
    );
    let extra = [
        "--claim-after",
        "1s",
        "--idle-exit",
        "3s",
        "--concurrency",
        "2",
    ];
    let mut a = consumer(&server, dir.path(), "a", &extra, &script);
    let mut b = consumer(&server, dir.path(), "b", &extra, &script);
    for c in [&mut a, &mut b] {
        let status = wait_exit(c, Duration::from_secs(60));
        assert!(status.success(), "consumer exit: {status:?}");
    }
    let runs = runs(&log, "run ");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(runs.len(), 600, "every entry handled");
    assert!(
        twice.is_empty(),
        "{} entries handled more than once without any crash: {twice:?}",
        twice.len()
    );
    let reclaim_logs = ["a", "b"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.err"))).unwrap_or_default())
        .filter(|e| e.contains("reclaimed entries"))
        .count();
    assert_eq!(reclaim_logs, 0, "a live consumer's entries were reclaimed");
    assert_eq!(cli(&server, &["XLEN", "{s}:dlq"]), "0");
    eprintln!(
        "600 entries, 2 live consumers, claim-after 1s, 12 handlers of 1.5 s: {} runs",
        runs.values().sum::<u32>()
    );
}

#[test]
fn graceful_stops_never_push_healthy_entries_to_the_dead_letter_queue() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    produce(&server, "s", 40, None);
    let script = format!("sleep 0.3; echo \"run $SK_ID\" >> {}", log.display());
    // Six stop-start cycles with the default (unique) name: every stop
    // leaves read-ahead pending, to be reclaimed by the next incarnation.
    for round in 0..6 {
        let mut c = consumer(
            &server,
            dir.path(),
            &format!("c{round}"),
            &["--claim-after", "1s", "--max-deliveries", "2"],
            &script,
        );
        std::thread::sleep(Duration::from_millis(2500));
        sigterm(&c);
        let status = wait_exit(&mut c, Duration::from_secs(10));
        assert_eq!(status.code(), Some(130), "round {round}");
    }
    let dead = dead_letter_ids(&server);
    assert!(
        dead.is_empty(),
        "{} healthy entries dead-lettered after graceful stops: {dead:?}",
        dead.len()
    );
    let runs = runs(&log, "run ");
    let twice = runs.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "graceful stops caused repeated runs");
    eprintln!(
        "6 graceful stops: {} of 40 entries handled, 0 dead-lettered, 0 twice",
        runs.len()
    );
}

#[test]
fn sigkill_loop_dead_letters_no_entry_that_never_ran() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    let total = 1500u64;
    produce(&server, "s", total, None);
    let script = format!(
        "echo \"start $SK_ID\" >> {log}; sleep 0.01; echo \"done $SK_ID\" >> {log}",
        log = log.display()
    );
    let extra = ["--claim-after", "1s", "--max-deliveries", "3"];
    let names = ["k0", "k1", "k2"];
    let mut members: Vec<Proc> = names
        .iter()
        .map(|n| consumer(&server, dir.path(), n, &extra, &script))
        .collect();
    // SIGKILL one consumer every 600 ms for 9 s, restarting it at once.
    let mut kills = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        std::thread::sleep(Duration::from_millis(600));
        let i = kills % members.len();
        members[i].kill().expect("kill");
        members[i].wait().expect("reap");
        members[i] = consumer(&server, dir.path(), names[i], &extra, &script);
        kills += 1;
    }
    // Let the survivors finish the backlog, then stop them gracefully.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = runs(&log, "done ").len() as u64;
        let dead = dead_letter_ids(&server).len() as u64;
        if done + dead >= total || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for m in &mut members {
        sigterm(m);
        wait_exit(m, Duration::from_secs(10));
    }
    let started_runs = runs(&log, "start ");
    let done = runs(&log, "done ");
    let dead = dead_letter_ids(&server);
    let never_ran: Vec<_> = dead
        .iter()
        .filter(|id| !started_runs.contains_key(*id))
        .collect();
    let under_max: Vec<_> = dead
        .iter()
        .filter(|id| started_runs.get(*id).copied().unwrap_or(0) < 3)
        .collect();
    let settled: std::collections::HashSet<&String> = done.keys().chain(dead.iter()).collect();
    let lost = total as usize - settled.len();
    eprintln!(
        "{kills} SIGKILLs, {total} entries: {} handled, {} dead-lettered, {} dead without 3 runs, {} lost",
        done.len(),
        dead.len(),
        under_max.len(),
        lost
    );
    assert!(kills >= 12);
    assert!(
        never_ran.is_empty(),
        "{} entries dead-lettered without a handler run",
        never_ran.len()
    );
    assert!(
        under_max.is_empty(),
        "{} entries dead-lettered with fewer than 3 runs",
        under_max.len()
    );
    assert_eq!(lost, 0, "entries neither handled nor dead-lettered");
}

#[test]
fn exec_children_die_with_a_sigkilled_consumer() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    produce(&server, "s", 2, None);
    // A marker that no other process on the machine has.
    let marker = format!(
        "{}.{}",
        40 + std::process::id() % 50,
        std::process::id() % 997
    );
    let script = format!("sleep {marker}; echo never");
    let mut c = consumer(
        &server,
        dir.path(),
        "victim",
        &["--concurrency", "2"],
        &script,
    );
    let running = |m: &str| {
        Command::new("pgrep")
            .args(["-f", &format!("^sleep {m}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    };
    assert!(
        streamkeeper_testkit::eventually_blocking(Duration::from_secs(10), || running(&marker)
            == 2),
        "the two handlers never started"
    );
    c.kill().expect("SIGKILL");
    c.wait().expect("reap");
    assert!(
        streamkeeper_testkit::eventually_blocking(Duration::from_secs(5), || running(&marker) == 0),
        "{} --exec children outlived their SIGKILLed consumer",
        running(&marker)
    );
}

#[test]
fn an_entry_that_kills_its_consumer_every_time_reaches_the_dead_letter_queue() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    produce(&server, "s", 1, None);
    // The handler SIGKILLs the consumer that runs it ($PPID of `sh -c`).
    let script = format!("echo \"run $SK_ID\" >> {}; kill -9 $PPID", log.display());
    let mut restarts = 0;
    while cli(&server, &["XLEN", "{s}:dlq"]) == "0" {
        assert!(
            restarts < 10,
            "still not dead-lettered after {restarts} crashes"
        );
        let mut c = consumer(
            &server,
            dir.path(),
            "p",
            &["--max-deliveries", "3", "--idle-exit", "2s"],
            &script,
        );
        wait_exit(&mut c, Duration::from_secs(20));
        restarts += 1;
    }
    let runs: u32 = runs(&log, "run ").values().sum();
    eprintln!("crashed its consumer {runs} times, then dead-lettered");
    // Three counted attempts; the very first run of a new entry may be cut
    // off before its mark is written (attempts.rs), so at most one more.
    assert!((3..=4).contains(&runs), "{runs} runs");
    let dead = dead_letter_ids(&server);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        cli(&server, &["XPENDING", "s", "g"]).lines().next(),
        Some("0")
    );
}

#[test]
fn graceful_restarts_under_a_fixed_name_count_no_attempt_that_never_ran() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    sk(&server, &["group", "create", "s", "g", "--from", "-"]);
    produce(&server, "s", 100, None);
    let script = format!(
        "echo \"run $SK_ID $SK_ATTEMPT\" >> {}; sleep 0.2",
        log.display()
    );
    let extra = [
        "--claim-after",
        "1s",
        "--max-deliveries",
        "2",
        "--batch",
        "20",
        "--concurrency",
        "2",
    ];
    // Two consumers with fixed names, stopped by SIGTERM soon after each
    // start, so that stops land while they re-read and mark their own
    // pending entries; each restarts under its name.
    let names = ["f0", "f1"];
    let mut members: Vec<Proc> = names
        .iter()
        .map(|n| consumer(&server, dir.path(), n, &extra, &script))
        .collect();
    for round in 0..14u64 {
        std::thread::sleep(Duration::from_millis(150 + (round * 97) % 600));
        let i = usize::try_from(round).unwrap_or(0) % names.len();
        sigterm(&members[i]);
        let status = wait_exit(&mut members[i], Duration::from_secs(10));
        assert_eq!(status.code(), Some(130), "round {round}");
        members[i] = consumer(&server, dir.path(), names[i], &extra, &script);
    }
    // Drain under the same names, then stop.
    for m in &mut members {
        sigterm(m);
        wait_exit(m, Duration::from_secs(10));
    }
    for n in names {
        let mut c = consumer(
            &server,
            dir.path(),
            n,
            &[
                "--max-deliveries",
                "2",
                "--idle-exit",
                "2s",
                "--concurrency",
                "4",
            ],
            &script,
        );
        wait_exit(&mut c, Duration::from_secs(60));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let later_attempts: Vec<&str> = text.lines().filter(|l| !l.ends_with(" 1")).collect();
    let dead = dead_letter_ids(&server);
    let runs = runs(&log, "run ");
    eprintln!(
        "14 graceful restarts under fixed names: {} entries run, {} runs not attempt 1, {} dead-lettered",
        runs.len(),
        later_attempts.len(),
        dead.len()
    );
    assert!(
        later_attempts.is_empty(),
        "runs counted earlier attempts that never ran: {later_attempts:?}"
    );
    assert!(
        dead.is_empty(),
        "dead-lettered after graceful stops: {dead:?}"
    );
    assert_eq!(runs.len(), 100, "every entry ran");
}

#[test]
fn a_claim_after_too_short_to_tell_live_from_crashed_is_refused() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &[
            "consume",
            "s",
            "-g",
            "g",
            "--create",
            "--claim-after",
            "20ms",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("250ms"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0", "nothing written");
}
