//! Odd input and odd state (issue 10): every case gets a clear answer,
//! nothing is half-written and nothing panics. Each test runs the real
//! binary against a real redis-server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually, RedisServer};

mod common;

use common::{cli, command, json_lines, sk};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("client")
        .get_connection()
        .expect("connection")
}

/// Exit 2, one line on stderr, no panic.
fn refused(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} not in {err:?}"
    );
}

#[test]
fn schedules_that_never_fire_are_refused_and_ls_never_panics() {
    let server = RedisServer::start().expect("redis");
    refused(
        &sk(
            &server,
            &[
                "schedule",
                "add",
                "never",
                "--cron",
                "0 0 30 2 *",
                "--to",
                "t",
            ],
        ),
        "never fires",
    );
    refused(
        &sk(
            &server,
            &[
                "schedule",
                "add",
                "far",
                "--every",
                "100000years",
                "--to",
                "t",
            ],
        ),
        "too long",
    );
    assert_eq!(cli(&server, &["DBSIZE"]), "0", "nothing stored");
    // A definition stored by an older version with a due time past year 9999.
    let json = r#"{"name":"old","spec":{"cron":{"expr":"0 0 30 2 *","tz":"UTC"}},"target":"t","fields":[],"missed":"skip","jitter_ms":0,"paused":false}"#;
    cli(&server, &["HSET", "{streamkeeper}:schedules", "old", json]);
    cli(
        &server,
        &["ZADD", "{streamkeeper}:due", "1.8446744073709552e19", "old"],
    );
    for args in [&["schedule", "ls"][..], &["--json", "schedule", "ls"][..]] {
        let o = sk(&server, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("old"));
    }
}

#[test]
fn a_target_that_is_not_a_stream_stops_only_its_schedule_and_keeps_its_tick() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["SET", "strkey", "x"]);
    for (name, to) in [("bad", "strkey"), ("good", "ticks")] {
        let o = sk(
            &server,
            &["schedule", "add", name, "--every", "200ms", "--to", to],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let due_before = cli(&server, &["ZSCORE", "{streamkeeper}:due", "bad"]);
    let mut run = command(&server, &["schedule", "run", "--instance", "i1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        eventually(Duration::from_secs(10), || {
            cli(&server, &["XLEN", "ticks"]).parse::<u64>().unwrap_or(0) >= 3
        }),
        "the good schedule keeps firing"
    );
    assert!(run.try_wait().expect("wait").is_none(), "run keeps running");
    assert_eq!(
        cli(&server, &["ZSCORE", "{streamkeeper}:due", "bad"]),
        due_before,
        "the failing schedule's due time did not move (its tick is not lost)"
    );
    // Fix the key: the waiting tick goes out.
    cli(&server, &["DEL", "strkey"]);
    assert!(
        eventually(Duration::from_secs(10), || {
            cli(&server, &["XLEN", "strkey"])
                .parse::<u64>()
                .unwrap_or(0)
                >= 1
        }),
        "the tick is emitted once the key is a stream"
    );
    unsafe_terminate(run.id());
    let out = run.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.contains("bad") && l.contains("strkey") && l.contains("not a stream")),
        "the error names schedule and key: {err}"
    );
    assert_eq!(out.status.code(), Some(130));
}

fn unsafe_terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[test]
fn tail_follow_ends_cleanly_when_stdout_closes() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "1"]);
    let mut child = command(&server, &["tail", "s", "-f"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert!(line.contains("k=1"), "{line}");
    drop(out); // like `| head -1`
    let mut status = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            cli(&server, &["XADD", "s", "*", "k", "2"]);
            status = child.try_wait().expect("wait");
            status.is_some()
        }),
        "tail -f exits once its stdout is closed"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn stat_shows_non_utf8_names_escaped() {
    let server = RedisServer::start().expect("redis");
    let mut conn = raw(&server);
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .expect("xadd");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("s")
        .arg(&b"g\xff"[..])
        .arg("0")
        .query(&mut conn)
        .expect("group");
    let _: String = redis::cmd("XADD")
        .arg(&b"bad\xfekey"[..])
        .arg("*")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .expect("xadd");
    let o = sk(&server, &["stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("g\\xff"), "{text}");
    let o = sk(&server, &["--json", "stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert!(rows.iter().any(|r| r["group"] == "g\\xff"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r["stream"] == "bad\\xfekey") || stderr(&o).contains("bad\\xfekey"),
        "the non-UTF-8 stream is named: {rows:?} {}",
        stderr(&o)
    );
}
