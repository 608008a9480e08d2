//! Bad input gets a one-line error that says what and how to fix, exit 2,
//! and nothing written; no panic: options, IDs, JSON on stdin, schedules,
//! a group that does not exist, a bad or unreachable `--redis` URL. The
//! real binary against a real redis-server.

use std::process::Command;

use streamkeeper_testkit::RedisServer;

mod common;

use common::{assert_one_line_error, cli, refused, sk, sk_stdin, stderr, BIN};

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
fn malformed_json_on_stdin_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    let o = sk_stdin(
        &server,
        &["produce", "s"],
        "{\"ok\":\"1\"}\n{not json\n{\"ok\":\"3\"}\n".as_bytes(),
    );
    assert_one_line_error(&o, "stdin line 2");
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
}

#[test]
fn bad_ids_and_options_are_rejected() {
    let server = RedisServer::start().expect("redis");
    assert_one_line_error(
        &sk(&server, &["tail", "s", "--from", "12-ab"]),
        "for '--from",
    );
    assert_one_line_error(
        &sk(
            &server,
            &["group", "create", "s", "g", "--from", "nonsense"],
        ),
        "for '--from",
    );
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
    let o = sk(&server, &["produce", "s", "--field", "novalue"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["EXISTS", "s"]), "0");
}

#[test]
fn missing_group_without_create_is_an_error() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    let o = sk(&server, &["consume", "s", "--group", "nope"]);
    assert_one_line_error(&o, "--create");
    assert_eq!(cli(&server, &["XINFO", "GROUPS", "s"]), "");
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
