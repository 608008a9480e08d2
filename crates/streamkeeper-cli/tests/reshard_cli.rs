//! `shard resize` as operators run it: up and then down while a keyed
//! `produce --rate` writes and two `consume --ordered` processes run, one
//! of them SIGKILLed and restarted mid-resize, the second resize SIGKILLed
//! part way and run again. Counted: acknowledged writes never handled (0),
//! entries run twice (only what the killed consumer had in hand), per-key
//! order (0 violations).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{cli, command, json_lines, sk};
use streamkeeper_testkit::RedisServer;

fn ok(server: &RedisServer, args: &[&str]) -> std::process::Output {
    let o = sk(server, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// An ordered member whose handler appends `shard id` to `log` (one
/// write per run, so the log's order is the order of handling).
fn member(server: &RedisServer, name: &str, log: &std::path::Path) -> Child {
    let exec = format!("echo \"$SK_STREAM $SK_ID\" >> {}", log.display());
    command(
        server,
        &[
            "consume",
            "ev",
            "-g",
            "g",
            "-c",
            name,
            "--ordered",
            "--exec",
            &exec,
            "-q",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("consume")
}

const USERS: u64 = 16;
const SEQS: u64 = 150;

#[test]
fn resize_up_and_down_under_keyed_producers_and_killed_processes_keeps_key_order() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    ok(&server, &["shard", "create", "ev", "--shards", "3"]);
    ok(&server, &["group", "create", "ev", "g", "--from", "-"]);
    let mut c1 = member(&server, "c1", &log);
    let mut c2 = member(&server, "c2", &log);
    // 2,400 entries, 16 keys, each key's seq 0, 1, 2, … at 400/s.
    let input: String = (0..SEQS)
        .flat_map(|s| (0..USERS).map(move |u| format!("{{\"user\":\"u{u}\",\"seq\":\"{s}\"}}\n")))
        .collect();
    let mut producer = command(
        &server,
        &[
            "--json",
            "produce",
            "ev",
            "--key-field",
            "user",
            "--rate",
            "400",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("produce");
    {
        use std::io::Write;
        let mut stdin = producer.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("stdin");
    }
    let started = Instant::now();
    let at = |t: u64| {
        let due = Duration::from_millis(t);
        if let Some(left) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(left);
        }
    };

    at(1500);
    let up = ok(&server, &["shard", "resize", "ev", "--shards", "5"]);
    let progress = String::from_utf8_lossy(&up.stderr).into_owned();
    assert!(progress.contains("sealed {ev:2}"), "{progress}");
    assert!(
        String::from_utf8_lossy(&up.stdout).contains("resharded 3 → 5 ways (generation 1)"),
        "{up:?}"
    );

    // A consumer dies mid-resize and comes back.
    at(2500);
    c2.kill().expect("kill c2");
    c2.wait().expect("wait c2");
    let mut c2 = member(&server, "c2", &log);

    // The resize process itself is killed once the layout flipped, before
    // every seal; run again, it completes.
    at(3500);
    let mut down = command(&server, &["shard", "resize", "ev", "--shards", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("resize");
    let mut lines = BufReader::new(down.stderr.take().expect("stderr")).lines();
    loop {
        let line = lines.next().expect("progress line").expect("read");
        if line.starts_with("generation 2") {
            break;
        }
    }
    down.kill().expect("kill resize");
    down.wait().expect("wait resize");
    let again = ok(&server, &["shard", "resize", "ev", "--shards", "2"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("completing"),
        "{again:?}"
    );

    let produced = producer.wait_with_output().expect("produce");
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    assert!(
        String::from_utf8_lossy(&produced.stderr).contains("the stream was resharded"),
        "the producer followed: {}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let acked = json_lines(&produced);
    assert_eq!(acked.len() as u64, USERS * SEQS, "every entry acknowledged");
    let streams: HashSet<String> = acked
        .iter()
        .map(|r| r["stream"].as_str().expect("stream").to_string())
        .collect();
    assert!(streams.contains("{ev:0~2}"), "{streams:?}");

    // Entry n of the input is user n % USERS, seq n / USERS.
    let entry: HashMap<(String, String), (String, u64)> = acked
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let at = (
                r["stream"].as_str().expect("stream").to_string(),
                r["id"].as_str().expect("id").to_string(),
            );
            (at, (format!("u{}", n as u64 % USERS), n as u64 / USERS))
        })
        .collect();
    // Everything acknowledged is handled.
    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let runs: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let (stream, id) = l.split_once(' ')?;
                entry.get(&(stream.to_string(), id.to_string())).cloned()
            })
            .collect();
        let distinct: HashSet<&(String, u64)> = runs.iter().collect();
        if distinct.len() as u64 == USERS * SEQS || Instant::now() > deadline {
            break runs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for c in [&mut c1, &mut c2] {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        c.wait().expect("wait consumer");
    }
    let mut count: HashMap<&(String, u64), u64> = HashMap::new();
    for r in &runs {
        *count.entry(r).or_default() += 1;
    }
    let lost = (0..USERS)
        .flat_map(|u| (0..SEQS).map(move |s| (format!("u{u}"), s)))
        .filter(|e| !count.contains_key(e))
        .count();
    assert_eq!(lost, 0, "acknowledged, never handled");
    // A SIGKILL may cut off the entry in hand of each shard the killed
    // consumer owned (at most 5): those run again; nothing else does.
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.len() <= 5, "run more than once: {twice:?}");
    // Per key, in the order handled (a re-run right after its cut-off
    // run aside), seq only grows.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (u, s) in &runs {
        if let Some(prev) = last.insert(u.as_str(), *s) {
            assert!(
                *s > prev || (*s == prev && count[&(u.clone(), *s)] > 1),
                "{u}: {s} after {prev}"
            );
        }
    }
    // shard ls: three generations, the two older sealed and drained.
    let ls = json_lines(&ok(&server, &["--json", "shard", "ls", "ev"]));
    let gens: HashSet<u64> = ls.iter().filter_map(|r| r["generation"].as_u64()).collect();
    assert_eq!(gens, HashSet::from([0, 1, 2]), "{ls:?}");
    for r in &ls {
        let state = r["state"].as_str().expect("state");
        match r["generation"].as_u64() {
            Some(2) => assert_eq!(state, "live", "{r}"),
            _ => assert!(
                state.starts_with("sealed at") && state.ends_with("drained"),
                "{r}"
            ),
        }
    }
    // The janitor retires both drained generations (dry run first).
    let dry =
        String::from_utf8_lossy(&ok(&server, &["janitor", "ev", "--dry-run"]).stdout).into_owned();
    assert!(
        dry.contains("would retire generation 0") && dry.contains("would retire generation 1"),
        "{dry}"
    );
    assert_eq!(
        json_lines(&ok(&server, &["--json", "shard", "ls", "ev"])).len(),
        ls.len()
    );
    let done =
        String::from_utf8_lossy(&ok(&server, &["janitor", "ev", "--once"]).stdout).into_owned();
    assert!(
        done.contains("retired generation 0 (3 sealed shards")
            && done.contains("retired generation 1 (5"),
        "{done}"
    );
    let ls = json_lines(&ok(&server, &["--json", "shard", "ls", "ev"]));
    assert!(ls.iter().all(|r| r["generation"] == 2), "{ls:?}");
    assert_eq!(cli(&server, &["XLEN", "{ev:0}"]), "0");
    // A stale write to a sealed shard is refused by Redis itself.
    let refused = cli(&server, &["XADD", "{ev:0}", "*", "late", "1"]);
    assert!(refused.contains("exhausted"), "{refused}");
}

#[test]
fn resize_refuses_bad_input_with_nothing_written() {
    let server = RedisServer::start().expect("redis");
    for (args, needle) in [
        (
            &["shard", "resize", "nope", "--shards", "2"][..],
            "not a sharded stream",
        ),
        (&["shard", "resize", "nope", "--shards", "0"][..], "0"),
        (&["shard", "resize", "nope"][..], "--shards"),
    ] {
        let o = sk(&server, args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(cli(&server, &["DBSIZE"]), "0");
    // A key of another type where a new shard goes: refused, nothing flipped.
    ok(&server, &["shard", "create", "ev", "--shards", "2"]);
    cli(&server, &["SET", "{ev:1~1}", "x"]);
    let o = sk(&server, &["shard", "resize", "ev", "--shards", "3"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("{ev:1~1}"), "{err}");
    assert_eq!(cli(&server, &["HGET", "{ev}:shards", "count"]), "2");
    assert_eq!(cli(&server, &["EXISTS", "{ev:0}:sealed"]), "0");
}
