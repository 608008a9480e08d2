//! Sharded streams through the CLI on one server (`{S:i}` keys work on a
//! single server too): create/ls, produce --key/--key-field routing,
//! stat --shards, the group commands per shard and in sum, consume
//! --ordered, dump → restore; bad input refused with nothing written.

mod common;

use std::collections::HashMap;

use common::{cli, json_lines, sk, sk_stdin};
use streamkeeper::shard::shard_for;
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

/// Exit 2, one line on stderr.
fn refused(server: &RedisServer, args: &[&str]) -> String {
    let o = sk(server, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn shard_create_ls_produce_by_key_and_stat_sums() {
    let server = RedisServer::start().expect("redis");
    // Bad input: exit 2, nothing written.
    refused(&server, &["shard", "create", "ev", "--shards", "0"]);
    refused(&server, &["shard", "create", "ev", "--shards", "1025"]);
    refused(&server, &["shard", "create", "a{b}", "--shards", "2"]);
    assert_eq!(cli(&server, &["DBSIZE"]), "0");
    ok(&server, &["shard", "create", "ev", "--shards", "4"]);
    ok(&server, &["shard", "create", "ev", "--shards", "4"]); // idempotent
    let e = refused(&server, &["shard", "create", "ev", "--shards", "3"]);
    assert!(e.contains("already sharded 4 ways"), "{e}");
    assert_eq!(cli(&server, &["HGET", "{ev}:shards", "count"]), "4");
    ok(&server, &["produce", "plain", "--field", "a=1", "-q"]);
    let e = refused(&server, &["shard", "create", "plain", "--shards", "2"]);
    assert!(e.contains("plain stream"), "{e}");
    refused(
        &server,
        &["produce", "plain", "--key", "k", "--field", "a=1"],
    );
    assert_eq!(cli(&server, &["XLEN", "plain"]), "1");
    // --key: every entry of a key on shard_for(key, 4), in send order.
    for c in ["alice", "bob", "carol", "dave", "erin"] {
        let field = format!("c={c}");
        let o = ok(
            &server,
            &[
                "--json", "produce", "ev", "--key", c, "--field", &field, "--field", "seq={i}",
                "--count", "5",
            ],
        );
        let want = format!("{{ev:{}}}", shard_for(c.as_bytes(), 4));
        for row in json_lines(&o) {
            assert_eq!(row["stream"], want.as_str(), "{c}");
        }
    }
    // --key-field: each stdin entry by its own field.
    let input = "{\"user\":\"u1\",\"n\":\"1\"}\n{\"user\":\"u2\",\"n\":\"2\"}\n";
    let o = sk_stdin(
        &server,
        &["--json", "produce", "ev", "--key-field", "user"],
        input.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = json_lines(&o);
    for (row, user) in rows.iter().zip(["u1", "u2"]) {
        let want = format!("{{ev:{}}}", shard_for(user.as_bytes(), 4));
        assert_eq!(row["stream"], want.as_str());
    }
    // No key: round-robin over the shards.
    let o = ok(
        &server,
        &["--json", "produce", "ev", "--field", "x=1", "--count", "8"],
    );
    let mut per: HashMap<String, u32> = HashMap::new();
    for row in json_lines(&o) {
        *per.entry(row["stream"].as_str().expect("stream").into())
            .or_default() += 1;
    }
    assert_eq!(per.len(), 4, "{per:?}");
    assert!(per.values().all(|&n| n == 2), "{per:?}");
    // A stdin entry without the routing field: refused, nothing written.
    let before = cli(&server, &["XLEN", "{ev:0}"]);
    let o = sk_stdin(
        &server,
        &["produce", "ev", "--key-field", "user"],
        b"{\"other\":\"1\"}\n",
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["XLEN", "{ev:0}"]), before);
    // shard ls: key, its own slot, node, length, per group.
    ok(&server, &["group", "create", "ev", "g", "--from", "-"]);
    let ls = json_lines(&ok(&server, &["--json", "shard", "ls", "ev"]));
    assert_eq!(ls.len(), 4, "{ls:?}");
    let mut slots = std::collections::HashSet::new();
    let mut total = 0;
    for (i, row) in ls.iter().enumerate() {
        let key = format!("{{ev:{i}}}");
        assert_eq!(row["shard"], key.as_str());
        assert_eq!(
            row["slot"].as_u64(),
            Some(u64::from(streamkeeper::keys::key_slot(&key)))
        );
        slots.insert(row["slot"].as_u64());
        assert!(row["node"].as_str().is_some_and(|n| !n.is_empty()));
        assert_eq!(row["group"], "g");
        assert_eq!(row["outstanding"], row["length"]);
        total += row["length"].as_u64().expect("length");
    }
    assert_eq!(slots.len(), 4, "each shard in a slot of its own");
    assert_eq!(total, 25 + 2 + 8);
    // stat: the sums; --shards adds a row per shard.
    let sums = json_lines(&ok(&server, &["--json", "stat", "ev"]));
    assert_eq!(sums.len(), 1, "{sums:?}");
    assert_eq!(sums[0]["stream"], "ev");
    assert_eq!(sums[0]["length"], 35);
    assert_eq!(sums[0]["undelivered"], 35);
    let rows = json_lines(&ok(&server, &["--json", "stat", "ev", "--shards"]));
    assert_eq!(rows.len(), 5, "{rows:?}");
    let per_shard: u64 = rows[1..]
        .iter()
        .map(|r| r["length"].as_u64().expect("length"))
        .sum();
    assert_eq!(per_shard, 35);
}

#[test]
fn group_commands_and_ordered_consume_act_on_every_shard() {
    let server = RedisServer::start().expect("redis");
    ok(&server, &["shard", "create", "ov", "--shards", "3"]);
    for c in 0..6 {
        let (key, field) = (format!("c{c}"), format!("c={c}"));
        ok(
            &server,
            &[
                "produce", "ov", "--key", &key, "--field", &field, "--field", "seq={i}", "--count",
                "10", "-q",
            ],
        );
    }
    // A group missing on the stream: reset refused, nothing moved.
    let e = refused(&server, &["group", "reset", "ov", "g", "--to", "-"]);
    assert!(e.contains("group create ov g"), "{e}");
    ok(&server, &["group", "create", "ov", "g", "--from", "-"]);
    // group ls: one sum row, then a row per shard.
    let ls = json_lines(&ok(&server, &["--json", "group", "ls", "ov"]));
    assert_eq!(ls.len(), 4, "{ls:?}");
    assert_eq!(ls[0]["stream"], "ov");
    assert_eq!(ls[0]["lag"], 60);
    assert!(ls[1..]
        .iter()
        .all(|r| r["stream"].as_str().is_some_and(|s| s.starts_with("{ov:"))));
    // consume --ordered: every entry once, each key in send order.
    let o = ok(
        &server,
        &[
            "consume",
            "ov",
            "-g",
            "g",
            "-c",
            "solo",
            "--ordered",
            "--idle-exit",
            "1500ms",
        ],
    );
    let mut last: HashMap<String, i64> = HashMap::new();
    let mut n = 0;
    for v in json_lines(&o) {
        let c = v["fields"]["c"].as_str().expect("c").to_string();
        let seq: i64 = v["fields"]["seq"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("seq");
        let prev = last.insert(c.clone(), seq).unwrap_or(-1);
        assert_eq!(seq, prev + 1, "key {c}: {seq} after {prev}");
        n += 1;
    }
    assert_eq!(n, 60);
    // The owner left: its leases are released.
    for i in 0..3 {
        assert_eq!(
            cli(&server, &["EXISTS", &format!("{{ov:{i}}}:owner:g")]),
            "0"
        );
    }
    // group consumers: a row per shard the consumer read.
    let cs = json_lines(&ok(&server, &["--json", "group", "consumers", "ov", "g"]));
    assert_eq!(cs.len(), 3, "{cs:?}");
    assert!(cs.iter().all(|c| c["name"] == "solo" && c["pending"] == 0));
    // group reset: every shard back to the start (dry run first).
    let rows = json_lines(&ok(
        &server,
        &[
            "--json",
            "group",
            "reset",
            "ov",
            "g",
            "--to",
            "-",
            "--dry-run",
        ],
    ));
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[3]["stream"], "ov");
    assert_eq!(rows[3]["redelivered"], 60);
    assert_eq!(
        json_lines(&ok(&server, &["--json", "stat", "ov"]))[0]["undelivered"],
        0,
        "a dry run moves nothing"
    );
    ok(&server, &["group", "reset", "ov", "g", "--to", "-"]);
    assert_eq!(
        json_lines(&ok(&server, &["--json", "stat", "ov"]))[0]["undelivered"],
        60
    );
    // tail of a sharded stream: its shards merged (it used to print
    // nothing, as if the stream were empty); tests/shard_tail.rs has more.
    let tail = json_lines(&ok(&server, &["--json", "tail", "ov"]));
    assert_eq!(tail.len(), 10);
    assert!(tail
        .iter()
        .all(|l| l["stream"].as_str().is_some_and(|s| s.starts_with("{ov:"))));
    // --ordered on a plain stream: refused.
    ok(&server, &["produce", "plain", "--field", "a=1", "-q"]);
    refused(
        &server,
        &["consume", "plain", "-g", "x", "--create", "--ordered"],
    );
}

#[test]
fn dump_of_a_sharded_stream_restores_losslessly() {
    let server = RedisServer::start().expect("redis");
    ok(&server, &["shard", "create", "src", "--shards", "3"]);
    for c in 0..4 {
        let key = format!("k{c}");
        ok(
            &server,
            &[
                "produce", "src", "--key", &key, "--field", "v=x{i}", "--count", "5", "-q",
            ],
        );
    }
    let dump = String::from_utf8(ok(&server, &["dump", "src"]).stdout).expect("utf8");
    let lines: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 20);
    let ids: Vec<streamkeeper::StreamId> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id").parse().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "merged in ID order");
    // Into another sharded stream of the same count, IDs kept: each line
    // back to the shard it names.
    ok(&server, &["shard", "create", "dst", "--shards", "3"]);
    let renamed = dump.replace("\"{src:", "\"{dst:");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("dst.jsonl");
    std::fs::write(&file, &renamed).expect("write");
    let path = file.to_str().expect("path");
    ok(&server, &["restore", "dst", "-i", path, "--keep-ids"]);
    assert_eq!(
        String::from_utf8(ok(&server, &["dump", "dst"]).stdout).expect("utf8"),
        renamed
    );
    for i in 0..3 {
        assert_eq!(
            cli(&server, &["XLEN", &format!("{{dst:{i}}}")]),
            cli(&server, &["XLEN", &format!("{{src:{i}}}")])
        );
    }
}

/// A running `consume`, its stdout lines collected by a thread.
struct Running {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(server: &RedisServer, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = common::command(server, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().expect("lock").push(line);
            }
        });
        Running {
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn seqs(&self) -> Vec<i64> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["fields"]["seq"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("seq")
            })
            .collect()
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGTERM, then waits (a graceful stop of ordered mode).
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("consume did not stop on SIGTERM");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(8);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_frozen_ordered_owner_takes_nothing_after_its_lease_ran_out() {
    let server = RedisServer::start().expect("redis");
    ok(&server, &["shard", "create", "z", "--shards", "1"]);
    ok(&server, &["group", "create", "z", "g", "--from", "-"]);
    let produce = |seq: i64| {
        let field = format!("seq={seq}");
        ok(&server, &["produce", "z", "--field", &field, "-q"]);
    };
    let consume = |name: &str| {
        Running::start(
            &server,
            &[
                "consume",
                "z",
                "-g",
                "g",
                "-c",
                name,
                "--ordered",
                "--lease",
                "1s",
            ],
        )
    };
    let a = consume("A");
    produce(0);
    wait_for("A handles 0", || a.seqs() == [0]);
    // …and has acked it (else B would rightly run it again after taking
    // over: an unacked entry of a frozen owner is redelivered).
    wait_for("A acks 0", || {
        cli(&server, &["XPENDING", "{z:0}", "g"]).starts_with('0')
    });
    // A freezes while waiting for new entries (its blocking read is still
    // registered in the server); its lease runs out and B takes the shard.
    a.signal("-STOP");
    let b = consume("B");
    wait_for("B owns the shard", || {
        cli(&server, &["GET", "{z:0}:owner:g"]).starts_with("B:")
    });
    // Entries appended now are B's: a frozen A must not be handed any (an
    // unfenced XREADGROUP BLOCK of A's would get the first one and keep it
    // pending on A, out of B's reach).
    for seq in 1..=5 {
        produce(seq);
    }
    wait_for(
        &format!("B handles 1..5 (A {:?}, B {:?})", a.seqs(), b.seqs()),
        || b.seqs() == [1, 2, 3, 4, 5],
    );
    assert_eq!(a.seqs(), [0]);
    // A wakes up: it may get the shard back by rebalance, but takes nothing
    // that was not handed to it, and nothing runs twice.
    a.signal("-CONT");
    std::thread::sleep(std::time::Duration::from_millis(500));
    for seq in 6..=8 {
        produce(seq);
    }
    wait_for("6..8 handled", || {
        a.seqs()
            .iter()
            .chain(b.seqs().iter())
            .filter(|&&s| s >= 6)
            .count()
            == 3
    });
    let (sa, sb) = (a.seqs(), b.seqs());
    // Interrupted (130) after a clean stop.
    assert_eq!(a.stop().code(), Some(130));
    assert_eq!(b.stop().code(), Some(130));
    assert_eq!(sa[0], 0);
    let mut all: Vec<i64> = sa.iter().chain(sb.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..=8).collect::<Vec<_>>(), "A {sa:?}, B {sb:?}");
    for s in [&sa, &sb] {
        assert!(s.windows(2).all(|w| w[0] < w[1]), "in order: {s:?}");
    }
    assert!(
        cli(&server, &["XPENDING", "{z:0}", "g"]).starts_with('0'),
        "nothing left pending"
    );
}

#[test]
fn a_shard_of_the_wrong_type_or_oom_part_way_is_reported_across_all_shards() {
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        extra_args: vec![
            "--maxmemory".into(),
            "3mb".into(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ],
        ..Default::default()
    })
    .expect("redis");
    ok(&server, &["shard", "create", "wt", "--shards", "3"]);
    cli(&server, &["SET", "{wt:2}", "x"]);
    // WRONGTYPE on one shard: refused before anything is written.
    let err = refused(
        &server,
        &["produce", "wt", "--field", "a={i}", "--count", "30"],
    );
    assert!(err.contains("{wt:2}"), "{err}");
    let err = {
        let o = sk_stdin(
            &server,
            &["restore", "wt"],
            b"{\"a\":\"1\"}\n{\"b\":\"2\"}\n",
        );
        assert_eq!(o.status.code(), Some(2));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(err.contains("{wt:2}"), "{err}");
    for i in 0..2 {
        assert_eq!(cli(&server, &["XLEN", &format!("{{wt:{i}}}")]).trim(), "0");
    }
    // OOM part way: the error counts what every shard got.
    ok(&server, &["shard", "create", "big", "--shards", "3"]);
    let pad = format!("pad={}", "x".repeat(2000));
    let o = sk(
        &server,
        &["produce", "big", "--field", &pad, "--count", "20000", "-q"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let stored: u64 = (0..3)
        .map(|i| {
            cli(&server, &["XLEN", &format!("{{big:{i}}}")])
                .trim()
                .parse::<u64>()
                .expect("xlen")
        })
        .sum();
    assert!(stored > 0, "some chunks fit before OOM");
    assert!(
        err.contains(&format!(
            "{stored} entries were written in all, across 3 streams"
        )),
        "{err} (stored {stored})"
    );
}

#[test]
fn consume_count_counts_across_the_shards_and_reads_nothing_beyond() {
    let server = RedisServer::start().expect("redis");
    // "rr": 30 entries round-robin (10 a shard); "one": 30 entries under
    // one key, so two of its shards stay empty, and their blocking reads
    // must not hold the budget from the full one.
    // "ord": the same in ordered mode (one owner per shard).
    for (stream, key) in [("rr", None), ("one", Some("same")), ("ord", Some("same"))] {
        ok(&server, &["shard", "create", stream, "--shards", "3"]);
        let mut args = vec!["produce", stream, "--field", "n={i}", "--count", "30", "-q"];
        if let Some(k) = key {
            args.extend(["--key", k]);
        }
        ok(&server, &args);
        ok(&server, &["group", "create", stream, "g", "--from", "-"]);
        for want in [10, 7] {
            let want_s = want.to_string();
            let mut args = vec!["consume", stream, "-g", "g", "--count", &want_s];
            if stream == "ord" {
                args.push("--ordered");
            }
            let o = ok(&server, &args);
            assert_eq!(json_lines(&o).len(), want, "{stream}");
        }
        let mut read = 0u64;
        let mut pending = 0u64;
        for i in 0..3 {
            let info = cli(&server, &["XINFO", "GROUPS", &format!("{{{stream}:{i}}}")]);
            let field = |name: &str| -> u64 {
                let lines: Vec<&str> = info.lines().collect();
                let at = lines.iter().position(|l| *l == name).expect(name);
                // A shard never read from has no entries-read yet.
                lines[at + 1].trim().parse().unwrap_or(0)
            };
            read += field("entries-read");
            pending += field("pending");
        }
        assert_eq!(read, 17, "{stream}: nothing read beyond the two counts");
        assert_eq!(pending, 0, "{stream}: all 17 acked, none read ahead");
    }
}

#[test]
fn ordered_mode_counts_runs_cut_off_by_a_crash_and_dead_letters_the_poison() {
    // An entry that SIGKILLs its consumer on every run must not block its
    // shard for good: with --max-deliveries 3 it runs 3 times (attempt 1,
    // 2, 3), then goes to the dead-letter stream, and the entries behind
    // it run, in order. In-place retries count too (SK_ATTEMPT rises).
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("runs.log");
    ok(&server, &["shard", "create", "pz", "--shards", "2"]);
    ok(&server, &["group", "create", "pz", "g", "--from", "-"]);
    // "0" succeeds just before the poison kills its consumer: its ack
    // must not die with it (a re-run would count as an attempt).
    for n in ["0", "poison", "1", "flaky", "2"] {
        ok(
            &server,
            &[
                "produce",
                "pz",
                "--key",
                "same",
                "--field",
                &format!("n={n}"),
                "-q",
            ],
        );
    }
    let exec = format!(
        "x=$(cat); echo \"$SK_ATTEMPT $x\" >> {log}; case \"$x\" in \
         *poison*) kill -9 $PPID;; \
         *flaky*) [ \"$SK_ATTEMPT\" -ge 2 ] || exit 1;; esac",
        log = log.display()
    );
    let mut generations = 0;
    loop {
        generations += 1;
        assert!(generations <= 8, "still not done after 8 runs of consume");
        let o = sk(
            &server,
            &[
                "consume",
                "pz",
                "-g",
                "g",
                "-c",
                "c1",
                "--ordered",
                "--lease",
                "1s",
                "--max-deliveries",
                "3",
                "--retry-backoff",
                "100ms",
                "--idle-exit",
                "2s",
                "--exec",
                &exec,
            ],
        );
        match o.status.code() {
            Some(0) => break,
            None => continue, // killed by its poison
            other => panic!(
                "consume exited {other:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
    }
    let runs = std::fs::read_to_string(&log).expect("log");
    let of = |n: &str| -> Vec<String> {
        runs.lines()
            .filter(|l| l.contains(&format!("\"n\":\"{n}\"")))
            .map(|l| l.split(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(of("poison"), ["1", "2", "3"], "{runs}");
    assert_eq!(
        of("flaky"),
        ["1", "2"],
        "an in-place retry is attempt 2: {runs}"
    );
    assert_eq!(of("0"), ["1"], "handled once, before the poison: {runs}");
    assert_eq!(of("1").len(), 1, "{runs}");
    assert_eq!(of("2").len(), 1, "{runs}");
    let order: Vec<&str> = runs
        .lines()
        .filter_map(|l| {
            ["\"0\"", "poison", "\"1\"", "flaky", "\"2\""]
                .into_iter()
                .find(|n| l.contains(n))
        })
        .collect();
    let mut seen = order.clone();
    seen.dedup();
    assert_eq!(
        seen,
        ["\"0\"", "poison", "\"1\"", "flaky", "\"2\""],
        "per-key order: {runs}"
    );
    let dead = json_lines(&ok(&server, &["--json", "dlq", "ls", "pz"]));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let text = dead[0].to_string();
    assert!(text.contains("poison"), "{text}");
    assert!(
        text.contains("\"deliveries\":3") || text.contains("\"sk-deliveries\":\"3\""),
        "{text}"
    );
}

#[test]
fn shards_not_written_yet_are_empty_and_a_wrong_type_shard_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    // Entries under one key: the other shard keys do not exist yet.
    ok(&server, &["shard", "create", "e", "--shards", "3"]);
    ok(
        &server,
        &[
            "produce", "e", "--key", "k", "--field", "a=1", "--count", "4", "-q",
        ],
    );
    let stat = json_lines(&ok(&server, &["--json", "stat", "e"]));
    assert_eq!(stat[0]["length"], 4, "{stat:?}");
    let ls = json_lines(&ok(&server, &["--json", "shard", "ls", "e"]));
    assert_eq!(ls.len(), 3, "{ls:?}");
    // group ls counts distinct consumers over the shards.
    ok(&server, &["group", "create", "e", "g", "--from", "-"]);
    cli(&server, &["XGROUP", "CREATECONSUMER", "{e:0}", "g", "a"]);
    cli(&server, &["XGROUP", "CREATECONSUMER", "{e:1}", "g", "b"]);
    cli(&server, &["XGROUP", "CREATECONSUMER", "{e:2}", "g", "b"]);
    let groups = json_lines(&ok(&server, &["--json", "group", "ls", "e"]));
    assert_eq!(groups[0]["consumers"], 2, "{groups:?}");
    // shard ls names an ordered-mode owner (the lease holds member:epoch).
    cli(&server, &["SET", "{e:1}:owner:g", "worker-7:3"]);
    let ls = json_lines(&ok(&server, &["--json", "shard", "ls", "e"]));
    let owners: Vec<&serde_json::Value> = ls.iter().map(|r| &r["owner"]).collect();
    assert_eq!(
        owners,
        [
            &serde_json::Value::Null,
            &"worker-7".into(),
            &serde_json::Value::Null
        ]
    );
    assert_eq!(
        ls.iter()
            .map(|r| r["length"].as_u64().expect("length"))
            .sum::<u64>(),
        4
    );
    // A shard of the wrong type: group create/destroy and consume --create
    // refuse before touching the other shards.
    ok(&server, &["shard", "create", "w", "--shards", "3"]);
    cli(&server, &["SET", "{w:1}", "x"]);
    for args in [
        vec!["group", "create", "w", "g", "--from", "-"],
        vec!["group", "destroy", "w", "g"],
        vec!["consume", "w", "-g", "g", "--create", "--count", "1"],
    ] {
        let err = refused(&server, &args);
        assert!(err.contains("{w:1}"), "{args:?}: {err}");
        assert_eq!(cli(&server, &["EXISTS", "{w:0}", "{w:2}"]), "0", "{args:?}");
    }
    // A group missing on one shard: the fix named is the logical one.
    ok(&server, &["shard", "create", "m", "--shards", "2"]);
    cli(
        &server,
        &["XGROUP", "CREATE", "{m:0}", "g", "$", "MKSTREAM"],
    );
    cli(&server, &["XADD", "{m:1}", "*", "a", "1"]);
    let err = refused(&server, &["consume", "m", "-g", "g", "--count", "1"]);
    assert!(err.contains("group create m g"), "{err}");
    // A shard count lowered by hand would hide a shard: refused.
    ok(&server, &["shard", "create", "h", "--shards", "3"]);
    ok(
        &server,
        &["produce", "h", "--field", "a=1", "--count", "9", "-q"],
    );
    cli(&server, &["HSET", "{h}:shards", "count", "2"]);
    for args in [vec!["stat", "h"], vec!["produce", "h", "--field", "a=1"]] {
        let err = refused(&server, &args);
        assert!(err.contains("{h:2} exists"), "{args:?}: {err}");
    }
    cli(&server, &["HSET", "{h}:shards", "count", "3"]);
    // stat without names: one summed row per sharded stream; a sharded
    // stream with a shard of the wrong type is reported, not fatal.
    cli(&server, &["XADD", "{w:0}", "*", "a", "1"]);
    let listed = ok(&server, &["--json", "stat"]);
    assert!(String::from_utf8_lossy(&listed.stderr).contains("{w:1}"));
    let all = json_lines(&listed);
    let names: Vec<&str> = all.iter().filter_map(|r| r["stream"].as_str()).collect();
    assert!(names.contains(&"e") && names.contains(&"m"), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with('{')), "{names:?}");
    let e = all.iter().find(|r| r["stream"] == "e").expect("e");
    assert_eq!(e["length"], 4);
}

#[test]
fn restore_names_a_line_that_is_not_utf8_and_skips_it_with_skip_bad() {
    let server = RedisServer::start().expect("redis");
    let input = b"{\"fields\":{\"a\":\"1\"}}\n\xff\xfe garbage\n{\"fields\":{\"a\":\"2\"}}\n";
    let o = sk_stdin(&server, &["restore", "ru"], input);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("line 2") && err.contains("UTF-8"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "ru"]), "0", "nothing written");
    let o = sk_stdin(&server, &["restore", "ru", "--skip-bad"], input);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(cli(&server, &["XLEN", "ru"]), "2");
}
