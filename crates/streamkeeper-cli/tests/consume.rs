//! `consume` on its own against a real redis-server: `--exec` exit codes
//! follow the protocol (retried with backoff, then dead-lettered with
//! their provenance fields), and `--count N` reads exactly N entries and
//! never waits for the reclaimer.

use std::process::Stdio;
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{cli, command, sk, stderr, stdout, xpending};

#[test]
fn exec_exit_codes_follow_the_protocol() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "k=v", "--count", "3", "--quiet"]
    )
    .status
    .success());
    // Exit 1 every time: retried after 100 ms, then 200 ms; the third
    // delivery goes to the DLQ instead of the command.
    let o = sk(
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
    assert_eq!(cli(&server, &["ZCARD", "{s}:retry:g"]), "0");
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
    assert!(sk(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "500", "--quiet"]
    )
    .status
    .success());
    let o = sk(
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
fn count_never_waits_for_the_reclaimer() {
    // Regression: the reclaimer's reservation of the --count budget used to
    // end the read loop early, leaving the rest to a reclaim an hour later.
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "1000", "-q"]
    )
    .status
    .success());
    for round in 0..5 {
        let g = format!("g{round}");
        assert!(sk(&server, &["group", "create", "s", &g, "--from", "-"])
            .status
            .success());
        let mut child = command(
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

#[test]
fn a_dead_letter_says_what_the_exec_command_and_the_pipe_worker_said() {
    let server = RedisServer::start().expect("redis");
    let ok = |args: &[&str]| {
        let o = sk(&server, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    ok(&["produce", "orders", "--field", "n=7", "--quiet"]);
    ok(&["produce", "payments", "--field", "n=8", "--quiet"]);
    // --exec: the tail of its stderr, on the attempt that used up the limit.
    let o = ok(&[
        "consume",
        "orders",
        "-g",
        "billing",
        "--create",
        "--from",
        "-",
        "--exec",
        "echo \"card declined (attempt $SK_ATTEMPT)\" >&2; exit 3",
        "--max-deliveries",
        "2",
        "--retry-backoff",
        "50ms",
        "--idle-exit",
        "1s",
    ]);
    assert!(
        stderr(&o).contains("card declined (attempt 1)"),
        "stderr still reaches ours"
    );
    let dead: serde_json::Value =
        serde_json::from_str(stdout(&ok(&["--json", "dlq", "ls", "orders"])).trim())
            .expect("one dead letter");
    let reason = dead["fields"]["sk-reason"].as_str().expect("reason");
    assert!(
        reason.contains("failed 2 attempts (max 2)")
            && reason.contains("exited with 3")
            && reason.contains("card declined (attempt 2)"),
        "{reason}"
    );
    // --pipe: the worker's `fail ID REASON`.
    ok(&[
        "consume",
        "payments",
        "-g",
        "billing",
        "--create",
        "--from",
        "-",
        "--pipe",
        r#"while read -r l; do id=$(printf '%s' "$l" | sed 's/.*"id":"\([^"]*\)".*/\1/'); echo "fail $id InvalidOperation: no such account"; done"#,
        "--max-deliveries",
        "1",
        "--idle-exit",
        "1s",
    ]);
    let dead: serde_json::Value =
        serde_json::from_str(stdout(&ok(&["--json", "dlq", "ls", "payments"])).trim())
            .expect("one dead letter");
    let reason = dead["fields"]["sk-reason"].as_str().expect("reason");
    assert!(
        reason.contains("InvalidOperation: no such account"),
        "{reason}"
    );
}

#[test]
fn peek_takes_nothing_and_a_clean_exit_leaves_no_generated_consumer_name() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    ok(&[
        "produce", "orders", "--field", "n={i}", "--count", "5", "--quiet",
    ]);
    ok(&["group", "create", "orders", "billing", "--from", "-"]);
    let peeked = ok(&["consume", "orders", "-g", "billing", "--peek", "-n", "2"]);
    assert_eq!(peeked.lines().count(), 2, "{peeked}");
    assert!(peeked.contains("\"n\":\"0\"") && peeked.contains("\"n\":\"1\""));
    // Nothing was taken: no pending entry, no consumer, and the group still
    // gets those two first.
    assert_eq!(xpending(&server, "orders", "billing"), 0);
    assert_eq!(
        cli(&server, &["XINFO", "CONSUMERS", "orders", "billing"]),
        ""
    );
    let taken = ok(&["consume", "orders", "-g", "billing", "--count", "2"]);
    let ids = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["id"].to_string())
            .collect()
    };
    assert_eq!(ids(&taken), ids(&peeked));
    // That run's generated name is gone; a name given with -c stays.
    assert_eq!(
        cli(&server, &["XINFO", "CONSUMERS", "orders", "billing"]),
        ""
    );
    ok(&[
        "consume", "orders", "-g", "billing", "-c", "worker-1", "--count", "1",
    ]);
    assert!(cli(&server, &["XINFO", "CONSUMERS", "orders", "billing"]).contains("worker-1"));
    // A generated name that still holds entries stays (--ack manual: read,
    // never acked), so they can be reclaimed.
    ok(&[
        "consume", "orders", "-g", "billing", "--ack", "manual", "--count", "1",
    ]);
    let consumers = cli(&server, &["XINFO", "CONSUMERS", "orders", "billing"]);
    assert_eq!(consumers.matches("name").count(), 2, "{consumers}");
    // Peeking a missing group is a clear error.
    let o = sk(&server, &["consume", "orders", "-g", "nope", "--peek"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}

#[test]
fn a_consumer_with_count_takes_a_retry_that_falls_due() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    ok(&["produce", "jobs", "--field", "n=1", "--quiet"]);
    // Exit 75: retry after the backoff (1 s); parked meanwhile.
    ok(&[
        "consume",
        "jobs",
        "-g",
        "g",
        "--create",
        "--from",
        "-",
        "--exec",
        "exit 75",
        "--retry-backoff",
        "1s",
        "--count",
        "1",
    ]);
    assert_eq!(cli(&server, &["ZCARD", "{jobs}:retry:g"]), "1");
    // Once due, a peek shows it first (and takes nothing).
    std::thread::sleep(Duration::from_millis(1100));
    let peeked = stdout(&sk(&server, &["consume", "jobs", "-g", "g", "--peek"]));
    assert!(peeked.contains("\"n\":\"1\""), "{peeked}");
    assert_eq!(cli(&server, &["ZCARD", "{jobs}:retry:g"]), "1");
    let mut child = command(&server, &["consume", "jobs", "-g", "g", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let done = eventually_blocking(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !done {
        let _ = child.kill();
    }
    assert!(done, "a --count 1 consumer never took the due retry");
    let out = child.wait_with_output().expect("wait");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("\"attempt\":2"), "{line}");
    assert_eq!(xpending(&server, "jobs", "g"), 0);
}
