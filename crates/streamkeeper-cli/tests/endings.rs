//! How commands end when their reader goes away or a signal arrives: a
//! closed stdout ends a command cleanly (never a panic), SIGTERM while
//! still connecting exits 130.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{cli, command, sk, stderr};

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
