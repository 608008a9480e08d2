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
