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

/// Writes `lines` (each without its newline) to a file in `dir`.
fn write_lines(dir: &std::path::Path, lines: impl Iterator<Item = String>) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("schedules.jsonl");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    for l in lines {
        w.write_all(l.as_bytes()).expect("write");
        w.write_all(b"\n").expect("write");
    }
    w.flush().expect("flush");
    path
}

/// A valid line whose field `blob` is `size` bytes of `x`.
fn line_with_blob(name: &str, size: usize) -> String {
    format!(
        r#"{{"name":"{name}","every":"60s","to":"t","fields":{{"blob":"{}"}}}}"#,
        "x".repeat(size)
    )
}

/// Runs the binary with `args` and samples its peak RSS (VmHWM of
/// /proc/PID/status, every 5 ms while it runs; the workspace forbids the
/// `unsafe` that `wait4`'s rusage would need): the output and the peak in
/// bytes.
fn run_measuring_rss(server: &RedisServer, args: &[&str]) -> (Output, u64) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = common::command(server, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status_file = format!("/proc/{}/status", child.id());
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).map(|_| b)
    });
    let err_reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).map(|_| b)
    });
    let mut peak_kb = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            peak_kb = peak_kb.max(hwm.unwrap_or(0));
        }
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    let output = Output {
        status,
        stdout: out_reader.join().expect("join").expect("stdout"),
        stderr: err_reader.join().expect("join").expect("stderr"),
    };
    (output, peak_kb * 1024)
}

const MB: u64 = 1024 * 1024;

#[test]
fn a_line_over_one_mib_is_refused_by_number_and_nothing_is_written() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write_lines(
        dir.path(),
        [
            line_with_blob("a", 10),
            line_with_blob("b", 1000),
            line_with_blob("big", 2 * 1024 * 1024),
            line_with_blob("c", 10),
        ]
        .into_iter(),
    );
    let o = sk(
        &server,
        &["schedule", "import", "-i", file.to_str().expect("utf-8")],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("1 bad line(s)") && err.contains("line 3:"),
        "{err}"
    );
    assert!(err.contains("longer than 1 MiB"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:schedules"]), "0");
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:due"]), "0");
    // Just under the limit is fine (the JSON around the blob is < 100 B).
    let file = write_lines(
        dir.path(),
        [line_with_blob("near", 1024 * 1024 - 100)].into_iter(),
    );
    let o = sk(
        &server,
        &["schedule", "import", "-i", file.to_str().expect("utf-8")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "1");
}

#[test]
fn import_memory_stays_bounded_on_lines_of_ten_mb() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write_lines(
        dir.path(),
        (0..30).map(|i| line_with_blob(&format!("huge-{i}"), 10_000_000)),
    );
    let (o, peak) = run_measuring_rss(
        &server,
        &["schedule", "import", "-i", file.to_str().expect("utf-8")],
    );
    let err = stderr(&o);
    eprintln!("30 lines of 10 MB: peak RSS {} MB", peak / MB);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("30 bad line(s)") && err.contains("line 1:"),
        "{err}"
    );
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:schedules"]), "0");
    assert!(peak > 0, "no RSS sample");
    assert!(peak < 200 * MB, "peak RSS {} MB", peak / MB);
}

#[test]
fn import_memory_stays_bounded_on_many_lines_near_the_limit() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    // 150 lines of ~1 MB: 150 MB of input, all valid.
    let file = write_lines(
        dir.path(),
        (0..150).map(|i| line_with_blob(&format!("large-{i}"), 1_000_000)),
    );
    let (o, peak) = run_measuring_rss(
        &server,
        &[
            "--json",
            "schedule",
            "import",
            "-i",
            file.to_str().expect("utf-8"),
        ],
    );
    eprintln!("150 lines of 1 MB: peak RSS {} MB", peak / MB);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["imported"], 150);
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "150");
    assert!(peak > 0, "no RSS sample");
    assert!(peak < 150 * MB, "peak RSS {} MB", peak / MB);
}

#[test]
fn schedule_names_are_bounded_in_import_and_add() {
    let server = RedisServer::start().expect("redis");
    let long = "n".repeat(1025);
    let line = format!(r#"{{"name":"{long}","every":"60s","to":"t"}}"#);
    let o = sk_stdin(
        &server,
        &["schedule", "import"],
        format!("{line}\n").as_bytes(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 1:") && err.contains("1024 bytes"),
        "{err}"
    );
    let o = sk(
        &server,
        &["schedule", "add", &long, "--every", "60s", "--to", "t"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("1024 bytes"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "{streamkeeper}:schedules"]), "0");
    // 1024 bytes is fine.
    let ok = "n".repeat(1024);
    let o = sk(
        &server,
        &["schedule", "add", &ok, "--every", "60s", "--to", "t"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_repeated_name_is_stored_once_and_the_report_says_so() {
    let server = RedisServer::start().expect("redis");
    let text = r#"{"name":"a","every":"60s","to":"first"}
{"name":"b","every":"60s","to":"t"}
{"name":"a","every":"30s","to":"last"}
"#;
    let o = sk_stdin(&server, &["schedule", "import"], text.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.contains("imported 2 schedules"), "{out}");
    assert!(
        out.contains("1 repeated name") && out.contains("last line wins"),
        "{out}"
    );
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "2");
    let a = cli(&server, &["HGET", "{streamkeeper}:schedules", "a"]);
    assert!(a.contains("\"last\"") && a.contains("30000"), "{a}");
    let o = sk_stdin(&server, &["--json", "schedule", "import"], text.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["imported"], 2);
    assert_eq!(v["repeated"], 1);
}

/// Name → due time (ms) from `{streamkeeper}:due`.
fn due_times(server: &RedisServer) -> std::collections::HashMap<String, u64> {
    let flat = cli(
        server,
        &["ZRANGE", "{streamkeeper}:due", "0", "-1", "WITHSCORES"],
    );
    let lines: Vec<&str> = flat.lines().collect();
    lines
        .chunks(2)
        .map(|p| (p[0].to_string(), p[1].parse::<f64>().expect("score") as u64))
        .collect()
}

#[test]
fn imported_interval_schedules_spread_their_first_due_times() {
    let server = RedisServer::start().expect("redis");
    let every = 10_000u64;
    let mut text: String = (0..1000)
        .map(|i| format!("{{\"name\":\"m{i}\",\"every\":\"10s\",\"to\":\"t\"}}\n"))
        .collect();
    text.push_str("{\"name\":\"cron\",\"cron\":\"*/5 * * * * *\",\"to\":\"t\"}\n");
    let o = sk_stdin(&server, &["schedule", "import"], text.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let first = due_times(&server);
    assert_eq!(first.len(), 1001);
    // Cron schedules keep their cron times.
    assert_eq!(first["cron"] % 5000, 0, "cron due {}", first["cron"]);
    let interval: Vec<u64> = first
        .iter()
        .filter(|(n, _)| n.as_str() != "cron")
        .map(|(_, d)| *d)
        .collect();
    let span = interval.iter().max().expect("max") - interval.iter().min().expect("min");
    assert!(
        span > every * 8 / 10,
        "first due times span {span} ms of {every}"
    );
    assert!(span <= every, "first due times span {span} ms of {every}");
    // Importing again gives each name the same place in its interval.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let o = sk_stdin(&server, &["schedule", "import"], text.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let again = due_times(&server);
    for (name, due) in &first {
        if name != "cron" {
            assert_eq!(again[name] % every, due % every, "{name}");
        }
    }
}
