//! `schedule import` and `schedule export` with the real binary: all lines
//! validated before anything is written, stdin and files, and
//! import(export) giving back the same schedules.

use std::collections::BTreeSet;
use std::process::Output;

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, sk, sk_stdin};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The exported lines as a set of JSON texts (key order as printed).
fn export(server: &RedisServer, ns: &str) -> BTreeSet<String> {
    let o = sk(server, &["schedule", "export", "--namespace", ns]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v.to_string()
        })
        .collect()
}

const GOOD: &str = r#"{"name":"health","every":"30s","to":"checks","fields":{"url":"http://127.0.0.1:8080/"},"missed":"skip"}
{"name":"report","cron":"0 0 6 * * *","tz":"Europe/Berlin","to":"reports","fields":{},"missed":"once"}

{"name":"poll","every":"250ms","to":"polls","fields":{"k":"1"},"missed":"catch-up:3","jitter":"2s"}
{"name":"old","every":"3600s","to":"t","fields":[["k","1"],["k","2"]],"missed":"skip","paused":true}
"#;

#[test]
fn import_writes_nothing_when_any_line_is_bad() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("schedules.jsonl");
    let mut text = GOOD.to_string();
    text.push_str("{\"name\":\"x\",\"every\":\"soon\",\"to\":\"t\"}\n");
    text.push_str("not json\n");
    std::fs::write(&file, text).expect("write");
    let o = sk(
        &server,
        &["schedule", "import", "-i", file.to_str().expect("utf-8")],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("2 bad line(s)"), "{err}");
    assert!(err.contains("line 6:") && err.contains("line 7:"), "{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:schedules"]), "0");
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:due"]), "0");
}

#[test]
fn export_then_import_round_trips() {
    let server = RedisServer::start().expect("redis");
    let o = sk_stdin(&server, &["schedule", "import"], GOOD.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("imported 4 schedules"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Paused schedules have no due time.
    assert_eq!(cli(&server, &["ZCARD", "{streamkeeper}:due"]), "3");
    let first = export(&server, "streamkeeper");
    let given: BTreeSet<String> = GOOD
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .expect("json")
                .to_string()
        })
        .collect();
    assert_eq!(first, given);

    let dump: String = first.iter().map(|l| format!("{l}\n")).collect();
    let o = sk_stdin(
        &server,
        &["schedule", "import", "--namespace", "copy"],
        dump.as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(export(&server, "copy"), first);
}

#[test]
fn import_of_many_lines_from_a_file() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("many.jsonl");
    let text: String = (0..25_000)
        .map(|i| format!("{{\"name\":\"m{i}\",\"every\":\"60s\",\"to\":\"monitors\",\"fields\":{{\"id\":\"{i}\"}}}}\n"))
        .collect();
    std::fs::write(&file, text).expect("write");
    let o = sk(
        &server,
        &[
            "--json",
            "schedule",
            "import",
            "-i",
            file.to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("one JSON object on stdout");
    assert_eq!(v["imported"], 25_000);
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "25000");
    assert_eq!(cli(&server, &["ZCARD", "{streamkeeper}:due"]), "25000");
    assert_eq!(export(&server, "streamkeeper").len(), 25_000);
}
