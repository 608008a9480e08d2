//! Security through the real binary (docs/design.md §6). Least privilege: a
//! user granted only `+@stream +@connection +ping +info +evalsha +eval
//! +script|load` on its keys runs every everyday command; checks that need
//! more say "unknown" instead of refusing the work. Secrets in the
//! connection URL never reach the user's screen, with debug logging on.

use std::process::Command;

use streamkeeper_testkit::{free_port, RedisServer};

mod common;

use common::{cli, json_lines, sk_at, stderr, Run};

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

const SECRET: &str = "hunter2";

/// The CLI against `url` with every log level on.
fn run(url: &str, args: &[&str]) -> Run {
    sk_at(url, args).env("STREAMKEEPER_LOG", "trace").run()
}

#[test]
fn connection_errors_never_show_a_urls_secrets() {
    let port = free_port().expect("port");
    for url in [
        format!("redis+sentinel://127.0.0.1:{port}/m?sentinel_password={SECRET}"),
        format!("redis+sentinel://u:{SECRET}@127.0.0.1:{port}/m?sentinel_username=s&sentinel_password={SECRET}"),
        format!("redis://u:{SECRET}@127.0.0.1:{port}/0?auth_token={SECRET}"),
        format!("redis+cluster://:{SECRET}@127.0.0.1:{port}/?password={SECRET}"),
        format!("redis+unix:///nonexistent/sk.sock?pass={SECRET}"),
        format!("redis://u:{SECRET}@127.0.0.1:{port}/not-a-db"),
    ] {
        run(&url, &["stat"]).fails(2).never_shows(SECRET);
    }
}

#[test]
fn working_commands_never_show_a_urls_secrets() {
    let server = RedisServer::start().expect("redis-server");
    // redis-rs ignores query parameters it does not know: the URL works.
    let url = format!("{}?sentinel_password={SECRET}&token={SECRET}", server.url());
    let produced = run(&url, &["produce", "s", "--field", "k=v"]);
    produced.ok();
    produced.never_shows(SECRET);
    for args in [&["stat"][..], &["doctor"], &["tail", "s"]] {
        run(&url, args).never_shows(SECRET);
    }
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

#[test]
fn a_user_with_only_stream_grants_keeps_consuming_past_a_failing_handler() {
    let (server, url) = limited_server();
    works(
        &url,
        &["produce", "jobs", "--field", "n={i}", "--count", "3"],
    );
    // The retry set is a sorted set this user may not use: the consumer
    // says so and goes on (before, it stopped at its first poll).
    let o = sk_at(
        &url,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            "read l; case \"$l\" in *'\"n\":\"1\"'*) exit 1;; esac",
            "--idle-exit",
            "2s",
            "--max-deliveries",
            "1",
        ],
    )
    .run();
    assert_eq!(o.code(), Some(0), "{}", o.stderr());
    assert!(
        o.stderr().contains("may not use the retry set"),
        "{}",
        o.stderr()
    );
    // The two healthy entries were acked, the failed one dead-lettered.
    assert_eq!(
        cli(&server, &["XPENDING", "jobs", "g"]).lines().next(),
        Some("0")
    );
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "1");
    // Slow handlers' acks go through without the attempt marks.
    works(
        &url,
        &["produce", "slow", "--field", "n={i}", "--count", "3"],
    );
    works(
        &url,
        &[
            "consume",
            "slow",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            "sleep 0.2",
            "--count",
            "3",
        ],
    );
    assert_eq!(
        cli(&server, &["XPENDING", "slow", "g"]).lines().next(),
        Some("0")
    );
}
