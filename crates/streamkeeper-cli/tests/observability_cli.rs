//! What a user installs and watches (docs/cli.md "Observability"): shell
//! completions and the man page generated from the real grammar, and
//! `--log-format json` giving one JSON object per log line on stderr.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use streamkeeper_testkit::RedisServer;

mod common;

use common::{sk_at, BIN};

/// `streamkeeper <args>` with no Redis and no log settings from the
/// environment.
fn offline(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("STREAMKEEPER_REDIS")
        .env_remove("STREAMKEEPER_LOG")
        .env_remove("STREAMKEEPER_LOG_FORMAT")
        .output()
        .expect("run streamkeeper")
}

/// Its stdout; it must exit 0 with nothing on stderr.
fn printed(args: &[&str]) -> String {
    let o = offline(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{args:?}: {:?}\n{err}", o.status);
    assert!(err.is_empty(), "{args:?} wrote on stderr: {err}");
    String::from_utf8(o.stdout).expect("utf-8 output")
}

#[test]
fn bash_completions_know_every_command_and_flag_and_parse() {
    let script = printed(&["completions", "bash"]);
    for word in [
        "consume",
        "serve",
        "schedule",
        "--max-deliveries",
        "--log-format",
    ] {
        assert!(script.contains(word), "no {word} in the bash completions");
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(script.as_bytes()).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(file.path())
        .output()
        .expect("run bash -n");
    assert!(
        check.status.success(),
        "bash -n refused the completions: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn zsh_fish_and_powershell_completions_are_printed() {
    for shell in ["zsh", "fish", "powershell"] {
        let script = printed(&["completions", shell]);
        assert!(!script.trim().is_empty(), "empty {shell} completions");
        assert!(
            script.contains("consume"),
            "no consume in {shell} completions"
        );
        assert!(
            script.contains("max-deliveries"),
            "no --max-deliveries in {shell} completions"
        );
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let o = offline(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}

#[test]
fn man_prints_one_roff_page_with_every_command() {
    let page = printed(&["man"]);
    let first = page
        .lines()
        .find(|l| !l.starts_with(".ie") && !l.starts_with(".el"))
        .expect("a line");
    assert!(
        first.starts_with(".TH streamkeeper 1"),
        "first line: {first}"
    );
    assert_eq!(page.matches(".TH ").count(), 1, "one document");
    for section in [
        "STREAMKEEPER CONSUME",
        "STREAMKEEPER SERVE",
        "STREAMKEEPER GROUP CREATE",
        "STREAMKEEPER COMPLETIONS",
        "EXIT STATUS",
    ] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no section {section}"
        );
    }
    assert!(
        page.contains("max\\-deliveries"),
        "consume's flags are there"
    );
    assert!(page.is_ascii(), "non-ASCII is escaped for groff");
}

/// The page through `man -l -` or `groff -man -Tutf8`, whichever exists.
#[test]
fn the_man_page_renders() {
    let page = printed(&["man"]);
    let renderers: [(&str, &[&str]); 2] =
        [("groff", &["-man", "-Tutf8", "-ww"]), ("man", &["-l", "-"])];
    let mut rendered = false;
    for (program, args) in renderers {
        let child = Command::new(program)
            .args(args)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "100")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("{program} is not installed: skipped");
            continue;
        };
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(page.as_bytes())
            .expect("write the page");
        let o = child.wait_with_output().expect("wait");
        let out = plain(&String::from_utf8_lossy(&o.stdout));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{program} failed: {err}");
        assert!(err.trim().is_empty(), "{program} warned: {err}");
        for text in [
            "NAME",
            "SYNOPSIS",
            "streamkeeper consume",
            "--max-deliveries",
        ] {
            assert!(out.contains(text), "{program}: no {text:?} in\n{out}");
        }
        rendered = true;
    }
    if !rendered {
        eprintln!("neither man nor groff is installed: the page was not rendered");
    }
}

/// Rendered text without overstrike bold (`N\x08N`), terminal escapes
/// or typographic hyphens and minus signs.
fn plain(rendered: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = rendered.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{8}' => {
                out.pop();
            }
            '\u{1b}' => {
                // CSI … final byte
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            '\u{2010}' | '\u{2011}' | '\u{2212}' => out.push('-'),
            c => out.push(c),
        }
    }
    out.into_iter().collect()
}

/// Stderr's lines as JSON objects with a level and fields (message).
fn json_log_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line: {line:?}: {e}"));
            assert!(v.is_object(), "not an object: {line}");
            assert!(v["level"].is_string(), "no level: {line}");
            assert!(v["fields"]["message"].is_string(), "no message: {line}");
            assert!(v["timestamp"].is_string(), "no timestamp: {line}");
            v
        })
        .collect()
}

#[test]
fn log_format_json_writes_one_object_per_log_line() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    sk_at(&url, &["produce", "jobs", "--field", "n=1"]).ok();
    // A handler that fails, saying why on its stderr: a warning, then
    // another for the dead letter, and its own line as an event.
    let run = sk_at(
        &url,
        &[
            "--log-format",
            "json",
            "consume",
            "jobs",
            "-g",
            "workers",
            "--create",
            "--from",
            "-",
            "--count",
            "1",
            "--max-deliveries",
            "1",
            "--exec",
            "echo 'child says hi' >&2; exit 1",
        ],
    )
    .run();
    run.ok();
    let lines = json_log_lines(&run.stderr());
    assert!(lines.len() >= 2, "{run}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["output"] == "child says hi" && l["fields"]["source"] == "exec"),
        "{run}"
    );
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "handler failed")
        .unwrap_or_else(|| panic!("no handler-failed line\n{run}"));
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["fields"]["attempt"], 1);
    assert!(lines.iter().any(
        |l| l["level"] == "WARN" && l["fields"]["message"] == "moved to the dead-letter stream"
    ));

    // The environment variable does the same, and an info line is JSON too.
    let run = sk_at(
        &url,
        &["consume", "jobs", "-g", "workers", "--idle-exit", "200ms"],
    )
    .env("STREAMKEEPER_LOG_FORMAT", "json")
    .run();
    run.ok();
    let lines = json_log_lines(&run.stderr());
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"] == "no entry arrived for the idle time; exiting"),
        "{run}"
    );

    // A --pipe worker's stderr is events too, one per line.
    sk_at(&url, &["produce", "piped", "--field", "n=1"]).ok();
    let run = sk_at(
        &url,
        &[
            "--log-format",
            "json",
            "consume",
            "piped",
            "-g",
            "workers",
            "--create",
            "--from",
            "-",
            "--count",
            "1",
            "--pipe",
            "echo 'worker starting' >&2; while read -r line; do id=$(printf '%s' \"$line\" | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/'); echo \"ack $id\"; done",
        ],
    )
    .run();
    run.ok();
    let lines = json_log_lines(&run.stderr());
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["output"] == "worker starting"
                && l["fields"]["source"] == "pipe worker"),
        "{run}"
    );

    // The final error is a JSON line as well.
    let run = sk_at(
        &url,
        &["--log-format", "json", "consume", "jobs", "-g", "nope"],
    )
    .fails(2);
    let lines = json_log_lines(&run.stderr());
    assert_eq!(lines.len(), 1, "{run}");
    assert_eq!(lines[0]["level"], "ERROR");
    let message = lines[0]["fields"]["message"].as_str().expect("message");
    assert!(
        message.contains("consumer group nope does not exist"),
        "{run}"
    );
}

#[test]
fn log_format_text_stays_the_default() {
    let server = RedisServer::start().expect("redis");
    let run = sk_at(&server.url(), &["consume", "jobs", "-g", "nope"]).fails(2);
    let err = run.stderr();
    assert!(
        err.starts_with("streamkeeper: error: consumer group nope"),
        "{run}"
    );
    let run = sk_at(
        &server.url(),
        &[
            "--log-format",
            "text",
            "consume",
            "jobs",
            "-g",
            "w",
            "--create",
            "--idle-exit",
            "100ms",
        ],
    )
    .run();
    run.ok();
    assert!(run.stderr().contains(" INFO "), "{run}");
    assert!(!run.stderr().trim_start().starts_with('{'), "{run}");
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    for args in [
        &["--log-format", "xml", "doctor"][..],
        &["doctor", "--log-format", "xml"][..],
    ] {
        let o = offline(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "not one line: {err}");
        assert!(err.starts_with("streamkeeper: error:"), "{err}");
        assert!(err.contains("xml") && err.contains("json"), "{err}");
    }
    let o = Command::new(BIN)
        .args(["doctor"])
        .env("STREAMKEEPER_LOG_FORMAT", "xml")
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("xml"));
}
