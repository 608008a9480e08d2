//! Odd server state: a key of another type, a full server (maxmemory), IDs
//! that are gone, a failed janitor, a Sentinel URL. Every case gets a clear
//! answer, nothing is half-written and nothing panics.

use std::process::{Command, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{assert_one_line_error, cli, command, json_lines, refused, sk, stderr};

fn unsafe_terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
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
    // A Sentinel-managed master says how many replicas it has (0 would
    // be a warning: a failover would have nothing to promote).
    let replicas = rows
        .iter()
        .find(|r| r["check"] == "replicas")
        .unwrap_or_else(|| panic!("{rows:?}"));
    let n: u64 = replicas["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("count");
    assert_eq!(
        replicas["level"],
        if n == 0 { "warn" } else { "ok" },
        "{replicas}"
    );
}

#[test]
fn wrongtype_key_is_named_and_left_alone() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["SET", "k", "x"]);
    assert_one_line_error(
        &sk(&server, &["produce", "k", "--field", "a=b"]),
        "holds a string",
    );
    assert_one_line_error(
        &sk(&server, &["consume", "k", "-g", "g", "--create"]),
        "holds a string",
    );
    assert_one_line_error(&sk(&server, &["tail", "k"]), "holds a string");
    assert_eq!(cli(&server, &["GET", "k"]), "x");
}
