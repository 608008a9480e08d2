//! The real `streamkeeper` binary against a real redis-server: interop with
//! redis-cli, crash and shutdown behaviour, bad input and exit codes.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{cli, command as sk, sk as run, sk_stdin, stderr, xpending, BIN};

fn run_stdin(server: &RedisServer, args: &[&str], stdin: &str) -> Output {
    sk_stdin(server, args, stdin.as_bytes())
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An error run: exit 2 and exactly one line on stderr that mentions `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn ids_in(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect()
}

#[test]
fn entries_written_by_redis_cli_are_consumed_as_json_lines() {
    let server = RedisServer::start().expect("redis");
    let id1 = cli(&server, &["XADD", "s", "*", "user", "ann", "qty", "2"]);
    // A non-UTF-8 value: redis-cli's line parser unescapes \xff inside
    // double quotes, so feed the command on stdin.
    let id2 = {
        let mut child = Command::new("redis-cli")
            .args(server.cli_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"XADD s2 * blob \"\\xff\\x00ok\"\n")
            .expect("write");
        String::from_utf8_lossy(&child.wait_with_output().expect("wait").stdout)
            .trim()
            .to_string()
    };
    let o = run(
        &server,
        &[
            "consume", "s", "--group", "g", "--create", "--from", "-", "--count", "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{{\"stream\":\"s\",\"id\":\"{id1}\",\"fields\":{{\"user\":\"ann\",\"qty\":\"2\"}}}}\n"
        )
    );
    let o = run(
        &server,
        &[
            "consume", "s2", "--group", "g", "--create", "--from", "-", "--count", "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{{\"stream\":\"s2\",\"id\":\"{id2}\",\"fields\":{{\"blob\":{{\"b64\":\"/wBvaw==\"}}}}}}\n")
    );
    assert_eq!(xpending(&server, "s", "g"), 0);
    assert_eq!(xpending(&server, "s2", "g"), 0);
}

#[test]
fn entries_written_by_streamkeeper_are_read_by_redis_cli() {
    let server = RedisServer::start().expect("redis");
    let o = run(
        &server,
        &["produce", "s", "--field", "user=ann", "--field", "qty=2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(
        cli(&server, &["XRANGE", "s", "-", "+"]),
        format!("{id}\nuser\nann\nqty\n2")
    );

    let o = run_stdin(
        &server,
        &["produce", "b", "--json"],
        "{\"fields\":[[\"k\",{\"b64\":\"/wA=\"}],[\"k\",\"again\"]]}\n{\"plain\":\"object\"}\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(ids.len(), 2);
    let raw = Command::new("redis-cli")
        .args(server.cli_args())
        .args(["--no-raw", "XRANGE", "b", "-", "+"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(
        text.contains("\"\\xff\\x00\""),
        "binary value not stored byte for byte: {text}"
    );
    assert!(
        text.contains("\"again\"") && text.contains("\"plain\""),
        "{text}"
    );
}

#[test]
fn sigkilled_consumer_loses_nothing() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (a_log, b_log) = (dir.path().join("a"), dir.path().join("b"));
    let produced = run(
        &server,
        &["produce", "jobs", "--field", "n={i}", "--count", "200"],
    );
    assert!(produced.status.success());
    let all: HashSet<String> = stdout(&produced).lines().map(str::to_string).collect();
    assert_eq!(all.len(), 200);

    let exec_a = format!("cat >> {}; sleep 0.02", a_log.display());
    let mut a = sk(
        &server,
        &[
            "consume", "jobs", "-g", "g", "--create", "--from", "-", "-c", "a", "--exec", &exec_a,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn a");
    assert!(
        eventually_blocking(Duration::from_secs(20), || lines(&a_log).len() >= 20),
        "consumer a never got going"
    );
    a.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    a.wait().expect("reap");
    let pending_at_kill = xpending(&server, "jobs", "g");
    assert!(
        pending_at_kill > 0,
        "the killed consumer held nothing: the test proves nothing"
    );

    let exec_b = format!("cat >> {}", b_log.display());
    let b = run(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "-c",
            "b",
            "--claim-after",
            "1s",
            "--idle-exit",
            "3s",
            "--exec",
            &exec_b,
        ],
    );
    assert!(b.status.success(), "{}", stderr(&b));

    let processed: HashSet<String> = ids_in(&a_log).into_iter().chain(ids_in(&b_log)).collect();
    let missing: Vec<_> = all.difference(&processed).collect();
    assert!(missing.is_empty(), "lost entries: {missing:?}");
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    eprintln!(
        "a processed {}, b processed {}, pending at kill {pending_at_kill}",
        lines(&a_log).len(),
        lines(&b_log).len()
    );
}

fn sigint(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY-free: `kill` from the shell keeps this test free of unsafe.
    let ok = Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn sigint_flushes_acks_so_nothing_processed_is_redelivered() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (a_log, b_log) = (dir.path().join("a"), dir.path().join("b"));
    assert!(run(
        &server,
        &["produce", "jobs", "--field", "n={i}", "--count", "300", "--quiet"]
    )
    .status
    .success());
    let exec_a = format!("cat >> {}; sleep 0.005", a_log.display());
    let a = sk(
        &server,
        &[
            "consume", "jobs", "-g", "g", "--create", "--from", "-", "-c", "a", "--exec", &exec_a,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(eventually_blocking(Duration::from_secs(20), || lines(
        &a_log
    )
    .len()
        >= 50));
    sigint(&a);
    let out = a.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let processed: HashSet<String> = ids_in(&a_log).into_iter().collect();
    assert!(
        processed.len() < 300,
        "finished before the signal: the test proves nothing"
    );

    // Every entry `a` processed is acknowledged: none is pending, and a
    // consumer that reclaims everything idle never sees one again.
    let pending = cli(&server, &["XPENDING", "jobs", "g", "-", "+", "1000"]);
    let pending: HashSet<&str> = pending.lines().collect();
    for id in &processed {
        assert!(
            !pending.contains(id.as_str()),
            "{id} was processed but is still pending"
        );
    }
    let exec_b = format!("cat >> {}", b_log.display());
    let b = run(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "-c",
            "b",
            "--claim-after",
            "1s",
            "--idle-exit",
            "3s",
            "--exec",
            &exec_b,
        ],
    );
    assert!(b.status.success(), "{}", stderr(&b));
    let again: Vec<_> = ids_in(&b_log)
        .into_iter()
        .filter(|id| processed.contains(id))
        .collect();
    assert!(
        again.is_empty(),
        "redelivered after a graceful stop: {again:?}"
    );
    assert_eq!(processed.len() + lines(&b_log).len(), 300);
}

#[test]
fn exec_exit_codes_follow_the_protocol() {
    let server = RedisServer::start().expect("redis");
    assert!(run(
        &server,
        &["produce", "s", "--field", "k=v", "--count", "3", "--quiet"]
    )
    .status
    .success());
    // Exit 1 every time: retried after 100 ms, then 200 ms; the third
    // delivery goes to the DLQ instead of the command.
    let o = run(
        &server,
        &[
            "consume",
            "s",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            "exit 1",
            "--max-deliveries",
            "2",
            "--retry-backoff",
            "100ms",
            "--idle-exit",
            "2s",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cli(&server, &["XLEN", "{s}:dlq"]), "3");
    assert_eq!(xpending(&server, "s", "g"), 0);
    assert_eq!(cli(&server, &["ZCARD", "{s}:retry"]), "0");
    let dead = cli(&server, &["XRANGE", "{s}:dlq", "-", "+", "COUNT", "1"]);
    for field in [
        "k",
        "sk-origin",
        "sk-origin-id",
        "sk-group",
        "sk-deliveries",
        "sk-reason",
        "sk-dead-at",
    ] {
        assert!(
            dead.lines().any(|l| l == field),
            "{field} missing in {dead}"
        );
    }
}

#[test]
fn count_reads_exactly_that_many() {
    let server = RedisServer::start().expect("redis");
    assert!(run(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "500", "--quiet"]
    )
    .status
    .success());
    let o = run(
        &server,
        &[
            "consume", "s", "-g", "g", "--create", "--from", "-", "--count", "7",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 7);
    // Nothing beyond the 7 was taken and left pending.
    assert_eq!(xpending(&server, "s", "g"), 0);
    let info = cli(&server, &["XINFO", "GROUPS", "s"]);
    assert!(info.contains("\n7\n"), "entries-read should be 7: {info}");
}

#[test]
fn tail_prints_last_entries_and_ranges() {
    let server = RedisServer::start().expect("redis");
    let o = run(
        &server,
        &["produce", "s", "--field", "n={i}", "--count", "20"],
    );
    let ids: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let o = run(&server, &["tail", "s", "--count", "3", "--json"]);
    let got: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(got, ids[17..].to_vec());
    let o = run(&server, &["tail", "s", "--from", &ids[5], "--count", "2"]);
    assert_eq!(stdout(&o), format!("{}  n=5\n{}  n=6\n", ids[5], ids[6]));
}

#[test]
fn group_commands_create_list_and_destroy() {
    let server = RedisServer::start().expect("redis");
    let o = run(
        &server,
        &["group", "create", "s", "g", "--from", "-", "--json"],
    );
    assert_eq!(
        stdout(&o).trim(),
        r#"{"stream":"s","group":"g","created":true}"#
    );
    let o = run(&server, &["group", "create", "s", "g", "--json"]);
    assert_eq!(
        stdout(&o).trim(),
        r#"{"stream":"s","group":"g","created":false}"#
    );
    let o = run(&server, &["group", "ls", "s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["group"], "g");
    assert_eq!(v["pending"], 0);
    let o = run(&server, &["group", "destroy", "s", "g"]);
    assert!(o.status.success());
    assert_eq!(cli(&server, &["XINFO", "GROUPS", "s"]), "");
}

#[test]
fn malformed_json_on_stdin_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    let o = run_stdin(
        &server,
        &["produce", "s"],
        "{\"ok\":\"1\"}\n{not json\n{\"ok\":\"3\"}\n",
    );
    assert_one_line_error(&o, "stdin line 2");
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
}

#[test]
fn bad_ids_and_options_are_rejected() {
    let server = RedisServer::start().expect("redis");
    assert_one_line_error(
        &run(&server, &["tail", "s", "--from", "12-ab"]),
        "for '--from",
    );
    assert_one_line_error(
        &run(
            &server,
            &["group", "create", "s", "g", "--from", "nonsense"],
        ),
        "for '--from",
    );
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
    let o = run(&server, &["produce", "s", "--field", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
}

#[test]
fn missing_group_without_create_is_an_error() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    let o = run(&server, &["consume", "s", "--group", "nope"]);
    assert_one_line_error(&o, "--create");
    assert_eq!(cli(&server, &["XINFO", "GROUPS", "s"]), "");
}

#[test]
fn wrongtype_key_is_named_and_left_alone() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["SET", "k", "x"]);
    assert_one_line_error(
        &run(&server, &["produce", "k", "--field", "a=b"]),
        "holds a string",
    );
    assert_one_line_error(
        &run(&server, &["consume", "k", "-g", "g", "--create"]),
        "holds a string",
    );
    assert_one_line_error(&run(&server, &["tail", "k"]), "holds a string");
    assert_eq!(cli(&server, &["GET", "k"]), "x");
}

#[test]
fn unreachable_server_and_bad_urls_say_how_to_fix() {
    let port = streamkeeper_testkit::free_port().expect("port");
    let url = format!("redis://127.0.0.1:{port}");
    let o = Command::new(BIN)
        .args(["--redis", &url, "tail", "s"])
        .output()
        .expect("run");
    assert_one_line_error(&o, "cannot connect to Redis at");
    assert!(stderr(&o).contains("--redis"), "{}", stderr(&o));
    let o = Command::new(BIN)
        .args(["--redis", "localhost:6379", "tail", "s"])
        .output()
        .expect("run");
    assert_one_line_error(&o, "invalid Redis URL");
    let o = Command::new(BIN)
        .env("STREAMKEEPER_REDIS", "http://x")
        .args(["tail", "s"])
        .output()
        .expect("run");
    assert_one_line_error(&o, "unknown scheme");
}

#[test]
fn dlq_commands_list_replay_and_purge() {
    let server = RedisServer::start().expect("redis");
    assert!(run(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "3", "-q"]
    )
    .status
    .success());
    let o = run(
        &server,
        &[
            "consume",
            "s",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            "exit 3",
            "--max-deliveries",
            "1",
            "--retry-backoff",
            "100ms",
            "--idle-exit",
            "2s",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&server, &["dlq", "ls", "s", "--json"]);
    let dead: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0]["stream"], "{s}:dlq");
    assert_eq!(dead[0]["fields"]["sk-group"], "g");
    // One failed attempt, the most --max-deliveries 1 allows.
    assert_eq!(dead[0]["fields"]["sk-deliveries"], "1");

    let first = dead[0]["id"].as_str().expect("id").to_string();
    let o = run(&server, &["dlq", "replay", "s", "--id", &first, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["dead_id"], first.as_str());
    assert_eq!(cli(&server, &["XLEN", "{s}:dlq"]), "2");
    // Replaying it again is an error: it is not there any more.
    assert_one_line_error(
        &run(&server, &["dlq", "replay", "s", "--id", &first]),
        "no dead letter",
    );
    // The replayed entry is processed by the group that gave up on it.
    let o = run(&server, &["consume", "s", "-g", "g", "--count", "1"]);
    let got: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(got["fields"]["k"], "0");
    assert_eq!(got["fields"]["sk-retry-group"], "g");

    let o = run(&server, &["dlq", "purge", "s", "--json"]);
    assert_eq!(stdout(&o).trim(), r#"{"stream":"s","purged":2}"#);
    assert_eq!(cli(&server, &["EXISTS", "{s}:dlq"]), "0");
}

#[test]
fn count_never_waits_for_the_reclaimer() {
    // Regression: the reclaimer's reservation of the --count budget used to
    // end the read loop early, leaving the rest to a reclaim an hour later.
    let server = RedisServer::start().expect("redis");
    assert!(run(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "1000", "-q"]
    )
    .status
    .success());
    for round in 0..5 {
        let g = format!("g{round}");
        assert!(run(&server, &["group", "create", "s", &g, "--from", "-"])
            .status
            .success());
        let mut child = sk(
            &server,
            &[
                "consume",
                "s",
                "-g",
                &g,
                "--count",
                "300",
                "--ack",
                "manual",
                "--claim-after",
                "1h",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
        let done = eventually_blocking(Duration::from_secs(20), || {
            child.try_wait().expect("try_wait").is_some()
        });
        if !done {
            let _ = child.kill();
        }
        assert!(done, "round {round}: consume --count 300 hung");
        assert_eq!(xpending(&server, "s", &g), 300);
    }
}
