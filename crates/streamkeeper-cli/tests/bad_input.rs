//! Bad input gets a one-line error that says what and how to fix, exit 2,
//! and nothing written; no panic. The real binary against a real redis-server.

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, refused, sk, stderr};

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
