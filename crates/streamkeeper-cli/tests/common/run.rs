//! `Run`: one CLI invocation and assertions on what it did, so a test reads
//! `run(&url, &["stat"]).ok()` or `.fails(2).stderr_contains("…")` instead of
//! decoding `Output` by hand. Every failed assertion shows the command, its
//! exit code, stdout and stderr.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use super::BIN;

/// A `streamkeeper --redis <url> <args>` command being built; any
/// `STREAMKEEPER_REDIS` of the environment is ignored.
#[derive(Debug)]
pub struct Sk {
    command: Command,
    shown: String,
    stdin: Option<Vec<u8>>,
}

/// `streamkeeper --redis <url> <args>`: add `.stdin(…)`/`.env(…)`, then
/// `.run()` (or `.ok()`/`.fails(code)` directly).
pub fn sk_at(url: &str, args: &[&str]) -> Sk {
    let mut command = Command::new(BIN);
    command
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("STREAMKEEPER_REDIS");
    Sk {
        command,
        shown: format!("streamkeeper --redis {url} {}", args.join(" ")),
        stdin: None,
    }
}

impl Sk {
    /// Feeds `input` on stdin (otherwise stdin is empty).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self.shown = format!("{key}={value} {}", self.shown);
        self
    }

    /// Runs the command to completion.
    pub fn run(mut self) -> Run {
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.shown));
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = &self.stdin {
            // A command that exits without reading all of it is its business.
            let _ = stdin.write_all(input);
        }
        drop(stdin);
        let output = child.wait_with_output().expect("wait");
        Run {
            shown: self.shown,
            output,
        }
    }

    /// Runs it; it must exit 0. Returns stdout.
    pub fn ok(self) -> String {
        self.run().ok()
    }

    /// Runs it; it must exit with `code`.
    pub fn fails(self, code: i32) -> Run {
        self.run().fails(code)
    }
}

/// A finished run: exit code, stdout and stderr.
#[derive(Debug)]
pub struct Run {
    shown: String,
    /// What the command left, for checks the methods do not cover.
    pub output: Output,
}

/// The command, its exit code, stdout and stderr: what a failed
/// assertion shows.
impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "  command: {}\n  exit: {:?}\n  stdout: {}\n  stderr: {}",
            self.shown,
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
}

impl Run {
    /// The exit code (`None` when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Stdout, lossily decoded.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Stderr, lossily decoded.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics with `what` and everything the run left.
    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{self}")
    }

    /// It exited 0; returns stdout.
    pub fn ok(&self) -> String {
        if !self.output.status.success() {
            self.fail("expected exit 0");
        }
        self.stdout()
    }

    /// It exited with `code`.
    pub fn fails(self, code: i32) -> Self {
        if self.code() != Some(code) {
            self.fail(&format!("expected exit {code}"));
        }
        self
    }

    /// Its stderr contains `text`.
    pub fn stderr_contains(self, text: &str) -> Self {
        if !self.stderr().contains(text) {
            self.fail(&format!("expected stderr to contain {text:?}"));
        }
        self
    }

    /// Its stdout contains `text`.
    pub fn stdout_contains(self, text: &str) -> Self {
        if !self.stdout().contains(text) {
            self.fail(&format!("expected stdout to contain {text:?}"));
        }
        self
    }

    /// Neither stdout nor stderr contains `text`.
    pub fn never_shows(self, text: &str) -> Self {
        if self.stdout().contains(text) || self.stderr().contains(text) {
            self.fail(&format!("{text:?} was shown"));
        }
        self
    }

    /// Stdout parsed as one JSON value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.output.stdout)
            .unwrap_or_else(|e| self.fail(&format!("stdout is not JSON: {e}")))
    }

    /// Stdout as JSON values, one per line.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| self.fail(&format!("not a JSON line: {l:?}: {e}")))
            })
            .collect()
    }

    /// Stdout's lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_string).collect()
    }
}
