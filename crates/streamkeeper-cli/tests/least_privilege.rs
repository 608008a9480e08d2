//! Least privilege (DESIGN.md §6): a user granted only `+@stream
//! +@connection +ping +info +evalsha +eval +script|load` on its keys runs
//! every everyday command through the real binary; checks that need more
//! say "unknown" instead of refusing the work.

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, sk_at};

/// A server with the user `worker` (password `pw`) holding exactly the
/// grants DESIGN.md §6 names, on every key; returns the URL that logs in
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

/// Runs `args` as the limited user; it must succeed.
fn works(url: &str, args: &[&str]) -> String {
    sk_at(url, args).ok()
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
    let all = sk_at(&url, &["stat"]).run();
    assert!(
        all.stdout().contains("orders") || all.code() == Some(2),
        "{all}"
    );
    let doctor = sk_at(&url, &["doctor"]).run();
    assert_ne!(doctor.code(), Some(2), "doctor could not run:\n{doctor}");
    doctor.stdout_contains("unknown");
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
    let o = sk_at(&url, &["produce", "orders", "--field", "n=1"]).fails(2);
    let err = o.stderr();
    assert!(
        err.contains("WRONGTYPE") || err.contains("not a stream"),
        "{err}"
    );
    assert_eq!(cli(&server, &["GET", "orders"]), "not a stream");
}
