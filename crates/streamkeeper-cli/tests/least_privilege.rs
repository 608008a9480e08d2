//! Least privilege (docs/design.md §6): a user granted only `+@stream
//! +@connection +ping +info +evalsha +eval +script|load` on its keys runs
//! every everyday command through the real binary; checks that need more
//! say "unknown" instead of refusing the work.

use std::process::{Command, Output};

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, BIN};

/// A server with the user `worker` (password `pw`) holding exactly the
/// grants docs/design.md §6 names, on every key; returns the URL that logs in
/// as that user.
fn limited_server() -> (RedisServer, String) {
    let server = RedisServer::start().expect("redis-server");
    let acl = cli(
        &server,
        &[
            "ACL",
            "SETUSER",
            "worker",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "-@all",
            "+@stream",
            "+@connection",
            "+ping",
            "+info",
            "+evalsha",
            "+eval",
            "+script|load",
        ],
    );
    assert_eq!(acl, "OK");
    let url = format!("{}?user=worker&pass=pw", server.url());
    (server, url)
}

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run")
}

/// Runs `args` as the limited user; it must succeed.
fn works(url: &str, args: &[&str]) -> String {
    let o = run(url, args);
    assert!(
        o.status.success(),
        "{args:?} refused for the limited user (exit {:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_user_with_only_stream_grants_produces_and_consumes() {
    let (server, url) = limited_server();
    works(
        &url,
        &["produce", "orders", "--field", "n={i}", "--count", "5"],
    );
    works(
        &url,
        &["produce", "orders", "--field", "n=w", "--wait", "0"],
    );
    works(
        &url,
        &["group", "create", "orders", "billing", "--from", "-"],
    );
    assert!(works(&url, &["group", "ls", "orders"]).contains("billing"));
    works(
        &url,
        &["consume", "orders", "--group", "billing", "--count", "6"],
    );
    assert_eq!(
        cli(&server, &["XPENDING", "orders", "billing"])
            .lines()
            .next(),
        Some("0")
    );
    let tail = works(&url, &["tail", "orders"]);
    assert!(tail.contains("n=4"), "{tail}");
}

#[test]
fn a_user_with_only_stream_grants_runs_the_health_and_upkeep_commands() {
    let (server, url) = limited_server();
    works(
        &url,
        &["produce", "orders", "--field", "n={i}", "--count", "5"],
    );
    works(
        &url,
        &["group", "create", "orders", "billing", "--from", "-"],
    );
    works(
        &url,
        &["consume", "orders", "--group", "billing", "--count", "5"],
    );
    let stat = works(&url, &["--json", "stat", "orders"]);
    assert!(stat.contains("\"group\":\"billing\""), "{stat}");
    // Without names stat must find the streams (SCAN is not granted): it
    // either lists them or says it could not look, never 0 with none.
    let all = run(&url, &["stat"]);
    let listed = String::from_utf8_lossy(&all.stdout).contains("orders");
    assert!(
        listed || all.status.code() == Some(2),
        "exit {:?}: {}",
        all.status.code(),
        String::from_utf8_lossy(&all.stderr)
    );
    let doctor = run(&url, &["doctor"]);
    assert_ne!(
        doctor.status.code(),
        Some(2),
        "doctor could not run: {}",
        String::from_utf8_lossy(&doctor.stderr)
    );
    let report = String::from_utf8_lossy(&doctor.stdout);
    assert!(report.contains("unknown"), "{report}");
    works(&url, &["janitor", "orders", "--once"]);
    assert_eq!(
        cli(&server, &["XLEN", "orders"]),
        "0",
        "acked entries trimmed"
    );
    works(&url, &["dlq", "ls", "orders"]);
}

#[test]
fn the_servers_wrongtype_still_protects_a_key_of_another_type() {
    let (server, url) = limited_server();
    cli(&server, &["SET", "orders", "not a stream"]);
    let o = run(&url, &["produce", "orders", "--field", "n=1"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("WRONGTYPE") || err.contains("not a stream"),
        "{err}"
    );
    assert_eq!(cli(&server, &["GET", "orders"]), "not a stream");
}
