//! Helpers shared by the binary's integration tests: run `streamkeeper`
//! against a test server, talk to it with redis-cli, read JSON lines.

#![allow(dead_code)] // each test file uses a different subset

mod run;
#[allow(unused_imports)] // not every test file runs the binary this way
pub use run::{sk_at, Run, Sk};

use std::io::Write;
use std::process::{Command, Output, Stdio};

use streamkeeper_testkit::RedisServer;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_streamkeeper");

/// `streamkeeper --redis <server> <args>`, ignoring any STREAMKEEPER_REDIS.
pub fn command(server: &RedisServer, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--redis")
        .arg(server.url())
        .args(args)
        .env_remove("STREAMKEEPER_REDIS");
    c
}

/// Runs it to completion.
pub fn sk(server: &RedisServer, args: &[&str]) -> Output {
    command(server, args).output().expect("run streamkeeper")
}

/// Runs it with `input` on stdin.
pub fn sk_stdin(server: &RedisServer, args: &[&str], input: &[u8]) -> Output {
    let mut child = command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// redis-cli's trimmed output.
pub fn cli(server: &RedisServer, args: &[&str]) -> String {
    server.cli(args).expect("redis-cli").trim().to_string()
}

/// stdout as JSON values, one per line.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

/// Runs the CLI against `url` (a Sentinel or Cluster URL, say).
pub fn sk_url(url: &str, args: &[&str]) -> Output {
    sk_at(url, args).run().output
}

/// Stdout of a CLI run against `url` that must succeed.
pub fn ok_url(url: &str, args: &[&str]) -> String {
    sk_at(url, args).ok()
}

/// stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// stdout, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An error run: exit 2 and exactly one line on stderr that contains
/// `needle` as written (`refused` also checks for a panic, ignoring case).
pub fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(needle), "{needle:?} not in {err:?}");
}

/// How many entries `group` has pending on `stream` (0 when it has none).
pub fn xpending(server: &RedisServer, stream: &str, group: &str) -> u64 {
    cli(server, &["XPENDING", stream, group])
        .lines()
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .expect("count")
}

/// Produces `count` entries with `fields` (`k=v` each) into `jobs`.
pub fn produce(server: &RedisServer, fields: &[&str], count: u32) {
    let mut args = vec!["produce", "jobs"];
    for f in fields {
        args.push("--field");
        args.push(f);
    }
    let count = count.to_string();
    args.extend(["--count", &count, "--quiet"]);
    sk_at(&server.url(), &args).ok();
}

/// Whether process `pid` is running (a zombie has exited: only its parent
/// has not reaped it yet).
pub fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Exit 2, one line on stderr, no panic.
pub fn refused(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} not in {err:?}"
    );
}
