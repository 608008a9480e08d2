//! Odd input and odd state (issue 10): every case gets a clear answer,
//! nothing is half-written and nothing panics. Each test runs the real
//! binary against a real redis-server.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

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
    cli(&server, &["SET", "taken", "x"]);
    refused(
        &sk(
            &server,
            &["schedule", "add", "x", "--every", "1s", "--to", "taken"],
        ),
        "holds a string, not a stream",
    );
    for (name, to) in [("bad", "strkey"), ("good", "ticks")] {
        let o = sk(
            &server,
            &["schedule", "add", name, "--every", "200ms", "--to", to],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // The key becomes something else after the schedule was added.
    cli(&server, &["SET", "strkey", "x"]);
    let due_before = cli(&server, &["ZSCORE", "{streamkeeper}:due", "bad"]);
    let mut run = command(&server, &["schedule", "run", "--instance", "i1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    assert!(
        eventually_blocking(Duration::from_secs(10), || {
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
        eventually_blocking(Duration::from_secs(10), || {
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

/// Reads one line of `args`' output, closes the pipe (like `| head -1`)
/// and checks the command ends with exit 0 without another entry coming:
/// the close alone must end it, not the next write.
fn ends_when_stdout_closes(server: &RedisServer, args: &[&str], first: &str) {
    cli(server, &["XADD", "s", "*", "k", "1"]);
    let mut child = command(server, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("first line");
    assert!(line.contains(first), "{line}");
    drop(out);
    let mut status = None;
    assert!(
        eventually_blocking(Duration::from_secs(10), || {
            status = child.try_wait().expect("wait");
            status.is_some()
        }),
        "{args:?} exits once its stdout is closed, without waiting for an entry"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

#[test]
fn tail_follow_ends_cleanly_when_stdout_closes() {
    let server = RedisServer::start().expect("redis");
    ends_when_stdout_closes(&server, &["tail", "s", "-f"], "k=1");
}

#[test]
fn consume_ends_when_stdout_closes_even_with_nothing_to_read() {
    let server = RedisServer::start().expect("redis");
    ends_when_stdout_closes(
        &server,
        &["consume", "s", "-g", "g", "--create", "--from", "0"],
        "k",
    );
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

#[test]
fn dump_to_a_file_never_destroys_it_when_the_dump_cannot_run() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("precious.jsonl");
    std::fs::write(&file, "precious\n").expect("write");
    let path = file.to_str().expect("path");
    cli(&server, &["SET", "k", "x"]);
    let o = sk(&server, &["dump", "k", "-o", path]);
    refused(&o, "holds a string, not a stream");
    assert!(stderr(&o).len() < 200, "short: {}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "precious\n");
    let o = Command::new(common::BIN)
        .args(["--redis", "redis://127.0.0.1:1", "dump", "s", "-o", path])
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "precious\n");
    cli(&server, &["XADD", "s", "1-1", "a", "b"]);
    let o = sk(&server, &["dump", "s", "-o", path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&file)
        .expect("read")
        .contains("1-1"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
    assert_eq!(left.len(), 1, "no temp file left behind");
    let o = sk(&server, &["restore", "k", "-i", path]);
    refused(&o, "holds a string, not a stream");
}

#[test]
fn dlq_replay_with_one_missing_id_replays_nothing() {
    let server = RedisServer::start().expect("redis");
    let fields = [
        "sk-origin",
        "s",
        "sk-origin-id",
        "1-1",
        "sk-group",
        "g",
        "sk-deliveries",
        "3",
        "sk-reason",
        "boom",
        "k",
        "v",
    ];
    let mut args = vec!["XADD", "{s}:dlq", "5-0"];
    args.extend(fields);
    cli(&server, &args);
    let o = sk(
        &server,
        &["dlq", "replay", "s", "--id", "9-9", "--id", "5-0"],
    );
    refused(&o, "9-9");
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0", "nothing replayed");
    assert_eq!(cli(&server, &["XLEN", "{s}:dlq"]), "1");
    cli(&server, &["HSET", "{h}:dlq", "a", "b"]);
    refused(
        &sk(&server, &["dlq", "purge", "h"]),
        "holds a hash, not a stream",
    );
}

#[test]
fn restore_keep_ids_checks_the_streams_last_generated_id_first() {
    let server = RedisServer::start().expect("redis");
    let dump: String = (1..=9)
        .map(|i| format!("{{\"stream\":\"t\",\"id\":\"{i}-1\",\"fields\":{{\"n\":\"{i}\"}}}}\n"))
        .collect();
    // The stream's last entry is gone, but its last-generated ID (5-0)
    // lies inside the dump: XADD would refuse 1-1 … 5-0.
    cli(&server, &["XADD", "t", "0-1", "old", "1"]);
    cli(&server, &["XADD", "t", "5-0", "gone", "1"]);
    cli(&server, &["XDEL", "t", "5-0"]);
    let digest = cli(&server, &["DEBUG", "DIGEST-VALUE", "t"]);
    let o = common::sk_stdin(&server, &["restore", "t", "--keep-ids"], dump.as_bytes());
    refused(&o, "5-0");
    assert_eq!(cli(&server, &["DEBUG", "DIGEST-VALUE", "t"]), digest);
    assert_eq!(cli(&server, &["XLEN", "t"]), "1");
}

/// A server that runs out of memory part way through a big write.
fn small_server() -> RedisServer {
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        extra_args: vec!["--enable-debug-command".into(), "yes".into()],
        ..Default::default()
    })
    .expect("redis");
    let info = cli(&server, &["INFO", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    cli(
        &server,
        &[
            "CONFIG",
            "SET",
            "maxmemory",
            &(used + 3_000_000).to_string(),
        ],
    );
    server
}

fn assert_reports_what_was_written(server: &RedisServer, o: &std::process::Output) {
    let err = stderr(o);
    refused(o, "OOM");
    let n: u64 = err
        .split(" entries were written")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("count in {err}"));
    assert!(n > 0, "{err}");
    assert_eq!(cli(server, &["XLEN", "s"]), n.to_string(), "{err}");
    let last = cli(server, &["XREVRANGE", "s", "+", "-", "COUNT", "1"]);
    let last_id = last.lines().next().expect("an entry").to_string();
    assert!(
        err.contains(&format!("last ID {last_id}")),
        "{last_id}: {err}"
    );
}

#[test]
fn produce_and_restore_under_maxmemory_say_exactly_what_was_written() {
    let value = "x".repeat(1000);
    let server = small_server();
    let o = sk(
        &server,
        &[
            "-q",
            "produce",
            "s",
            "--field",
            &format!("v={value}"),
            "--count",
            "20000",
        ],
    );
    assert_reports_what_was_written(&server, &o);

    let server = small_server();
    let dump: String = (1..=20000)
        .map(|i| format!("{{\"fields\":{{\"n\":\"{i}\",\"v\":\"{value}\"}}}}\n"))
        .collect();
    let o = common::sk_stdin(&server, &["restore", "s"], dump.as_bytes());
    assert_reports_what_was_written(&server, &o);
}

#[test]
fn a_failed_janitor_once_releases_its_lease() {
    let server = RedisServer::start().expect("redis");
    for _ in 0..5 {
        cli(&server, &["XADD", "s", "*", "k", "v"]);
    }
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    let o = sk(
        &server,
        &[
            "janitor",
            "s",
            "--once",
            "--max-len",
            "1",
            "--archive",
            "/nonexistent/dir/archive.jsonl",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        cli(&server, &["EXISTS", "{s}:janitor"]),
        "0",
        "lease released"
    );
    assert_eq!(cli(&server, &["XLEN", "s"]), "5", "nothing dropped");
}

#[test]
fn zero_and_negative_intervals_and_counts_are_refused() {
    let server = RedisServer::start().expect("redis");
    let cases: &[&[&str]] = &[
        &["stat", "--watch", "0s"],
        &["janitor", "s", "--interval", "0s"],
        &["consume", "s", "-g", "g", "--batch", "0"],
        &["consume", "s", "-g", "g", "--concurrency", "0"],
        &["consume", "s", "-g", "g", "--claim-after", "0s"],
        &["produce", "s", "--field", "a=1", "--maxlen", "0"],
        &["produce", "s", "--field", "a=1", "--count", "0"],
        &["consume", "s", "-g", "g", "--count", "0"],
        &["consume", "s", "-g", "g", "--max-deliveries", "0"],
        &["produce", "s", "--field", "a=1", "--count", "-3"],
    ];
    for args in cases {
        let o = sk(&server, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{args:?}");
    }
    assert_eq!(cli(&server, &["DBSIZE"]), "0");
}

#[test]
fn produce_refuses_odd_input_and_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    let stdin_cases: &[(&[&str], &str, &str)] = &[
        (
            &["produce", "s"],
            "{\"fields\":{\"a\":\"1\"},\"extra\":1}\n",
            "unknown key",
        ),
        (
            &["produce", "s"],
            "{\"a\":\"1\",\"a\":\"2\"}\n",
            "appears twice",
        ),
        (
            &["produce", "s", "--count", "3"],
            "{\"a\":\"1\"}\n",
            "--count",
        ),
        (
            &["produce", "s"],
            "{\"sk-retry-group\":\"g\"}\n",
            "reserved",
        ),
    ];
    for (args, input, needle) in stdin_cases {
        let o = common::sk_stdin(&server, args, input.as_bytes());
        refused(&o, needle);
    }
    refused(
        &sk(&server, &["produce", "s", "--field", "sk-retry-group=g"]),
        "reserved",
    );
    assert_eq!(cli(&server, &["DBSIZE"]), "0");
    let o = sk(
        &server,
        &["produce", "s", "--field", "v={{i}}={i}", "--count", "2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let range = cli(&server, &["XRANGE", "s", "-", "+"]);
    assert!(
        range.contains("{i}=0") && range.contains("{i}=1"),
        "{range}"
    );
}

#[test]
fn a_user_without_memory_permission_sees_memory_as_unknown() {
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        tcp_port: Some(0),
        ..Default::default()
    })
    .expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    cli(
        &server,
        &[
            "ACL", "SETUSER", "reader", "on", ">pw", "~*", "&*", "+@all", "-memory",
        ],
    );
    let url = server
        .tcp_url()
        .expect("tcp")
        .replace("redis://", "redis://reader:pw@");
    let run = |args: &[&str]| {
        Command::new(common::BIN)
            .arg("--redis")
            .arg(&url)
            .args(args)
            .env_remove("STREAMKEEPER_REDIS")
            .output()
            .expect("run")
    };
    let o = run(&["--json", "stat", "s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert_eq!(rows[0]["memory_bytes"], serde_json::Value::Null, "{rows:?}");
    assert_eq!(rows[0]["group"], "g");
    let o = run(&["stat", "s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("unknown"));
    let o = run(&["group", "consumers", "s", "g"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Wrong password: a credentials problem, not a server that is down.
    let bad = url.replace(":pw@", ":nope@");
    let o = Command::new(common::BIN)
        .args(["--redis", &bad, "stat"])
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("is redis-server running"), "{err}");
    assert!(!err.contains("pw"), "no password in messages: {err}");
}

#[test]
fn json_output_names_things_the_same_everywhere() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "1-1", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    let o = sk(&server, &["--json", "group", "ls", "s"]);
    let rows = json_lines(&o);
    assert_eq!(rows[0]["group"], "g", "{rows:?}");
    assert!(rows[0].get("name").is_none(), "{rows:?}");
    let o = sk(
        &server,
        &[
            "--json",
            "group",
            "reset",
            "s",
            "g",
            "--to",
            "0-0",
            "--dry-run",
        ],
    );
    let rows = json_lines(&o);
    assert_eq!(rows[0]["stream"], "s", "{rows:?}");
    assert_eq!(rows[0]["group"], "g", "{rows:?}");
    let o = sk(
        &server,
        &["schedule", "add", "hb", "--every", "1s", "--to", "t"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (args, key, value) in [
        (&["--json", "schedule", "pause", "hb"][..], "paused", true),
        (&["--json", "schedule", "resume", "hb"][..], "paused", false),
        (&["--json", "schedule", "rm", "hb"][..], "removed", true),
    ] {
        let o = sk(&server, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let rows = json_lines(&o);
        assert_eq!(rows[0]["name"], "hb", "{args:?}");
        assert_eq!(rows[0][key], value, "{args:?}");
    }
    refused(
        &sk(
            &server,
            &[
                "schedule",
                "add",
                "x",
                "--every",
                "1s",
                "--tz",
                "Europe/Berlin",
                "--to",
                "t",
            ],
        ),
        "--tz",
    );
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "0");
}

#[test]
fn human_tail_keeps_one_entry_on_one_line() {
    let server = RedisServer::start().expect("redis");
    let mut conn = raw(&server);
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("text")
        .arg("two\nlines\0nul")
        .arg("bin")
        .arg(&b"\xff"[..])
        .query(&mut conn)
        .expect("xadd");
    let o = sk(&server, &["tail", "s"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.contains("text=two\\nlines\\x00nul"), "{out:?}");
    assert!(out.contains("bin=\\xff"), "{out:?}");
}

#[test]
fn sigterm_while_still_connecting_exits_130() {
    // A server that accepts the connection and never answers: the command
    // is still connecting (before any command-level handler) when the
    // signal comes, as in the first milliseconds of a run.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    let child = Command::new(common::BIN)
        .args(["--redis", &url, "tail", "s", "-f"])
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let status = format!("/proc/{}/status", child.id());
    // Wait until the process runs main (its SIGTERM handler is in place).
    assert!(eventually_blocking(Duration::from_secs(5), || {
        std::fs::read_to_string(&status)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & (1 << (15 - 1)) != 0)
    }));
    unsafe_terminate(child.id());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{out:?}");
}

#[test]
fn doctor_through_a_sentinel_url_says_sentinel_mode() {
    let topo = streamkeeper_testkit::SentinelTopology::start().expect("sentinel topology");
    let o = Command::new(common::BIN)
        .args(["--redis", &topo.url(), "--json", "doctor"])
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run");
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", stderr(&o));
    let rows = json_lines(&o);
    let mode = rows
        .iter()
        .find(|r| r["check"] == "mode")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        mode["value"]
            .as_str()
            .is_some_and(|v| v.contains("sentinel")),
        "{mode}"
    );
}

#[test]
fn tail_count_pages_through_more_than_one_page_in_order() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &["-q", "produce", "s", "--field", "n={i}", "--count", "2500"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sk(&server, &["--json", "tail", "s", "--count", "2100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert_eq!(rows.len(), 2100);
    assert_eq!(rows[0]["fields"]["n"], "400");
    assert_eq!(rows[2099]["fields"]["n"], "2499");
    let o = sk(&server, &["--json", "tail", "s", "--count", "5000"]);
    assert_eq!(json_lines(&o).len(), 2500);
    let o = sk(&server, &["--json", "tail", "empty", "--count", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn a_closed_stdout_never_makes_a_command_panic() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    let o = sk(
        &server,
        &["schedule", "add", "a", "--every", "1s", "--to", "t"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for args in [
        &["schedule", "ls"][..],
        &["stat"],
        &["--json", "stat"],
        &["group", "ls", "s"],
        &["group", "consumers", "s", "g"],
        &["tail", "s"],
        &["dump", "s"],
        &["dlq", "ls", "s"],
    ] {
        // A pipe whose reading end is already closed: every write fails
        // with EPIPE, like `| head -0`.
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let o = command(&server, args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run");
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
    }
}

#[test]
fn a_user_who_may_not_run_scripts_is_told_so_before_consuming() {
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        tcp_port: Some(0),
        ..Default::default()
    })
    .expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    cli(
        &server,
        &[
            "ACL",
            "SETUSER",
            "noscripts",
            "on",
            ">pw",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ],
    );
    let url = server
        .tcp_url()
        .expect("tcp")
        .replace("redis://", "redis://noscripts:pw@");
    let o = Command::new(common::BIN)
        .args([
            "--redis", &url, "consume", "s", "-g", "g", "--exec", "exit 1",
        ])
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("+evalsha"), "{err}");
    // Nothing was read: the entry is not pending for anyone.
    assert!(cli(&server, &["XPENDING", "s", "g"]).starts_with('0'));
}
