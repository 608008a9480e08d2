//! Every command takes a `redis+cluster://h:p,…` URL, with streams spread
//! over the cluster's three primaries: one test per command family, then
//! sharded streams (create, per-key order and what every shard sums to,
//! dead letters, ordered mode, dump → restore), TLS, a failover during
//! `produce` and a primary down. Each test starts its own cluster.

mod common;

use std::process::Command;
use std::time::Duration;

use common::BIN;
use streamkeeper_testkit::RedisCluster;

/// A raw HTTP/1.1 GET on loopback; the whole response ("" if nothing answers).
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return String::new();
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn sk(url: &str, args: &[&str]) -> std::process::Output {
    common::sk_url(url, args)
}

/// Three streams whose slots live on three different primaries, each with
/// 5 entries, readable with `tail` and consumed (acknowledged) by group `g`.
fn three_streams_on_three_primaries(cluster: &RedisCluster) -> [&'static str; 3] {
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    let names = ["a", "b", "c"];
    let owners: std::collections::HashSet<u16> = names
        .iter()
        .map(|n| cluster.primary_for_key(n).expect("owner"))
        .collect();
    assert_eq!(owners.len(), 3, "the test streams span every primary");
    for s in names {
        ok(&["produce", s, "--field", "n={i}", "--count", "5", "-q"]);
        assert_eq!(ok(&["tail", s, "--json"]).lines().count(), 5);
        ok(&["group", "create", s, "g", "--from", "-"]);
        assert_eq!(
            ok(&["consume", s, "-g", "g", "--count", "5"])
                .lines()
                .count(),
            5
        );
    }
    names
}

/// A poison entry in `b`: `--exec` fails, max-deliveries 1 → the DLQ of b.
fn dead_letter_a_poison_entry_of_b(url: &str) {
    common::ok_url(url, &["produce", "b", "--field", "poison=1", "-q"]);
    let o = sk(
        url,
        &[
            "consume",
            "b",
            "-g",
            "g",
            "--exec",
            "exit 1",
            "--max-deliveries",
            "1",
            "--idle-exit",
            "2s",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn produce_tail_group_and_consume_reach_every_primary_and_stat_finds_every_stream() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let names = three_streams_on_three_primaries(&cluster);
    // stat finds every stream, whichever primary holds it.
    let stat = common::ok_url(&url, &["stat", "--json"]);
    for s in names {
        assert!(
            stat.contains(&format!("\"stream\":\"{s}\"")),
            "{s} in {stat}"
        );
    }
}

#[test]
fn the_janitor_trims_and_the_dlq_keeps_poison_entries_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    three_streams_on_three_primaries(&cluster);
    assert!(ok(&["janitor", "a", "--once", "--json"]).contains("\"trimmed\":5"));
    dead_letter_a_poison_entry_of_b(&url);
    assert!(ok(&["dlq", "ls", "b"]).contains("poison"));
}

#[test]
fn dump_then_restore_into_another_slot_is_lossless_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    three_streams_on_three_primaries(&cluster);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("c.jsonl");
    ok(&["dump", "c", "-o", file.to_str().expect("path")]);
    ok(&[
        "restore",
        "c2",
        "-i",
        file.to_str().expect("path"),
        "--keep-ids",
    ]);
    assert_eq!(
        ok(&["dump", "c"]).replace("\"c\"", "\"c2\""),
        ok(&["dump", "c2"])
    );
}

#[test]
fn schedule_ticks_reach_a_target_in_another_slot_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    // The scheduler's ticks reach a target in another slot (two-step emit).
    ok(&["schedule", "add", "hb", "--every", "1s", "--to", "ticks"]);
    assert!(ok(&["schedule", "ls"]).contains("hb"));
    let mut run = Command::new(BIN)
        .args(["--redis", &url, "schedule", "run"])
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("schedule run");
    let fired = streamkeeper_testkit::eventually_blocking(Duration::from_secs(15), || {
        ok(&["tail", "ticks", "--json"]).lines().count() >= 2
    });
    let _ = run.kill();
    let _ = run.wait();
    assert!(fired, "the schedule fired into another slot");
}

#[test]
fn the_dashboard_api_sees_streams_dead_letters_and_memory_of_every_primary() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let names = three_streams_on_three_primaries(&cluster);
    dead_letter_a_poison_entry_of_b(&url);
    let port = streamkeeper_testkit::free_port().expect("port");
    let mut serve = Command::new(BIN)
        .args([
            "--redis",
            &url,
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let mut body = String::new();
    let listed = streamkeeper_testkit::eventually_blocking(Duration::from_secs(15), || {
        body = http_get(port, "/api/streams");
        names
            .iter()
            .all(|s| body.contains(&format!("\"name\":\"{s}\"")))
    });
    // Dead letters and memory are read from each stream's own node (b's
    // poison entry is in {b}:dlq).
    let mut overview = String::new();
    let counted = streamkeeper_testkit::eventually_blocking(Duration::from_secs(15), || {
        overview = http_get(port, "/api/overview");
        let Some(json) = overview.split("\r\n\r\n").nth(1) else {
            return false;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
            return false;
        };
        let rows = v["streams"].as_array().cloned().unwrap_or_default();
        let row = |n: &str| rows.iter().find(|r| r["name"] == n).cloned();
        row("b").is_some_and(|r| r["dead_letters"] == 1)
            && names
                .iter()
                .all(|n| row(n).is_some_and(|r| r["memory_bytes"].as_u64().is_some_and(|m| m > 0)))
    });
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(listed, "the dashboard lists a, b and c: {body}");
    assert!(counted, "dead letters and memory on a cluster: {overview}");
}

#[test]
fn doctor_reports_every_node_with_its_role_slots_link_and_round_trip() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    // doctor reports every node: 3 primaries with their slots, 3 replicas
    // with their link, each with its round trip from here.
    let doctor = sk(&url, &["--json", "doctor"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let nodes: Vec<&serde_json::Value> = rows.iter().filter(|r| r["role"].is_string()).collect();
    assert_eq!(nodes.len(), 6, "{rows:?}");
    assert_eq!(nodes.iter().filter(|r| r["role"] == "primary").count(), 3);
    assert!(nodes
        .iter()
        .filter(|r| r["role"] == "primary")
        .all(|r| r["slots"].as_array().is_some_and(|s| !s.is_empty())));
    assert!(nodes
        .iter()
        .filter(|r| r["role"] == "replica")
        .all(|r| r["link"].as_str().is_some_and(|l| l.starts_with("link up"))));
    assert!(nodes.iter().all(|r| r["rtt_us"].as_u64().is_some()));
    assert!(rows
        .iter()
        .any(|r| r["check"] == "mode" && r["value"] == "cluster"));
    eprintln!("{}", String::from_utf8_lossy(&sk(&url, &["doctor"]).stdout));
}

/// The sharded stream `ev` (6 shards): 8 customers × 25 entries, keyed by
/// customer, `seq` counting per customer.
fn produce_keyed_customers(url: &str) {
    let ok = |args: &[&str]| common::ok_url(url, args);
    ok(&["shard", "create", "ev", "--shards", "6"]);
    for c in 0..8 {
        let key = format!("customer-{c}");
        let field = format!("c={c}");
        ok(&[
            "produce", "ev", "--key", &key, "--field", &field, "--field", "seq={i}", "--count",
            "25", "-q",
        ]);
    }
}

/// Creates group `g` on `ev` from the start and consumes (acknowledges)
/// everything; returns what consume printed.
fn consume_all_of_ev(url: &str) -> String {
    common::ok_url(url, &["group", "create", "ev", "g", "--from", "-"]);
    common::ok_url(url, &["consume", "ev", "-g", "g", "--idle-exit", "2s"])
}

#[test]
fn shard_create_is_idempotent_and_mismatched_shard_options_are_refused_with_nothing_written() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let run = |args: &[&str]| sk(&url, args);
    let ok = |args: &[&str]| common::ok_url(&url, args);
    ok(&["shard", "create", "ev", "--shards", "6"]);
    // Idempotent.
    ok(&["shard", "create", "ev", "--shards", "6"]);
    // Refused, with nothing written: another count, a plain stream, --key
    // on a plain stream, --ordered on a plain stream.
    assert_eq!(
        run(&["shard", "create", "ev", "--shards", "4"])
            .status
            .code(),
        Some(2)
    );
    ok(&["produce", "plain", "--field", "a=1", "-q"]);
    assert_eq!(
        run(&["shard", "create", "plain", "--shards", "2"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&["produce", "plain", "--key", "k", "--field", "a=1"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(ok(&["tail", "plain", "--json"]).lines().count(), 1);
    assert_eq!(
        run(&["consume", "plain", "-g", "x", "--create", "--ordered"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn keyed_entries_stay_in_order_on_one_shard_and_every_shard_is_counted_dumped_and_trimmed() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    produce_keyed_customers(&url);
    let out = consume_all_of_ev(&url);
    let mut shard_of: std::collections::HashMap<String, String> = Default::default();
    let mut last_seq: std::collections::HashMap<String, i64> = Default::default();
    let mut seen = 0;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let shard = v["stream"].as_str().expect("stream").to_string();
        let c = v["fields"]["c"].as_str().expect("c").to_string();
        let seq: i64 = v["fields"]["seq"]
            .as_str()
            .expect("seq")
            .parse()
            .expect("n");
        // Same key, same shard; and within a key, handled in send order.
        assert_eq!(
            shard_of.entry(c.clone()).or_insert_with(|| shard.clone()),
            &shard
        );
        let prev = last_seq.insert(c.clone(), seq).unwrap_or(-1);
        assert!(seq > prev, "customer {c}: seq {seq} after {prev}");
        seen += 1;
    }
    assert_eq!(seen, 200, "every entry handled once");
    // The shards live on more than one primary; stat sums them.
    let ls = ok(&["--json", "shard", "ls", "ev"]);
    let nodes: std::collections::HashSet<String> = ls
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["node"].to_string())
        .collect();
    assert_eq!(ls.lines().count(), 6, "{ls}");
    assert!(nodes.len() >= 2, "shards on {nodes:?}");
    let stat: serde_json::Value =
        serde_json::from_str(ok(&["--json", "stat", "ev"]).lines().next().expect("row"))
            .expect("json");
    assert_eq!(stat["stream"], "ev");
    assert_eq!(stat["length"], 200);
    assert_eq!(stat["outstanding"], 0);
    // dump merges the shards in ID order, each line naming its shard.
    let dump = ok(&["dump", "ev"]);
    let lines: Vec<serde_json::Value> = dump
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 200);
    let ids: Vec<streamkeeper::StreamId> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id").parse().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "merged in ID order");
    assert!(lines
        .iter()
        .all(|l| l["stream"].as_str().is_some_and(|s| s.starts_with("{ev:"))));
    // The janitor trims every shard (all acknowledged by g).
    let trimmed: u64 = ok(&["--json", "janitor", "ev", "--once"])
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["trimmed"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(trimmed, 200);
}

#[test]
fn dead_letters_of_every_shard_are_listed_and_replayed_into_their_shard_by_the_logical_name() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let run = |args: &[&str]| sk(&url, args);
    let ok = |args: &[&str]| common::ok_url(&url, args);
    produce_keyed_customers(&url);
    consume_all_of_ev(&url);
    // Dead letters of every shard, under the logical name.
    ok(&[
        "produce",
        "ev",
        "--key",
        "customer-0",
        "--field",
        "poison=1",
        "-q",
    ]);
    let o = run(&[
        "consume",
        "ev",
        "-g",
        "g",
        "--exec",
        "exit 1",
        "--max-deliveries",
        "1",
        "--idle-exit",
        "2s",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ok(&["dlq", "ls", "ev"]).contains("poison"));
    // Replayed into the shard it came from, by the logical name.
    let dead: serde_json::Value = serde_json::from_str(
        ok(&["--json", "dlq", "ls", "ev"])
            .lines()
            .find(|l| l.contains("poison"))
            .expect("dead letter"),
    )
    .expect("json");
    let replayed = ok(&[
        "dlq",
        "replay",
        "ev",
        "--id",
        dead["id"].as_str().expect("id"),
    ]);
    assert!(replayed.contains("{ev:"), "{replayed}");
    assert!(!ok(&["dlq", "ls", "ev"]).contains("poison"));
    assert_eq!(
        run(&["dlq", "replay", "ev", "--id", "1-1"]).status.code(),
        Some(2)
    );
}

#[test]
fn two_ordered_consumers_split_the_shards_and_handle_each_key_in_order_once() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    // Ordered mode: two consumers split the shards; each key's entries are
    // handled by one of them, in order; every entry once.
    ok(&["shard", "create", "ov", "--shards", "4"]);
    for c in 0..6 {
        let (key, field) = (format!("c{c}"), format!("c={c}"));
        ok(&[
            "produce", "ov", "--key", &key, "--field", &field, "--field", "seq={i}", "--count",
            "20", "-q",
        ]);
    }
    let spawn = |name: &str| {
        Command::new(BIN)
            .args([
                "--redis",
                &url,
                "consume",
                "ov",
                "-g",
                "o",
                "-c",
                name,
                "--create",
                "--from",
                "-",
                "--ordered",
                "--idle-exit",
                "3s",
            ])
            .env_remove("STREAMKEEPER_REDIS")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("consume --ordered")
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let outputs = [
        a.wait_with_output().expect("a"),
        b.wait_with_output().expect("b"),
    ];
    let mut handled = std::collections::HashSet::new();
    for o in &outputs {
        let mut last: std::collections::HashMap<String, i64> = Default::default();
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            let c = v["fields"]["c"].as_str().expect("c").to_string();
            let seq: i64 = v["fields"]["seq"]
                .as_str()
                .expect("seq")
                .parse()
                .expect("n");
            let prev = last.insert(c.clone(), seq).unwrap_or(-1);
            assert!(seq > prev, "ordered: key {c} seq {seq} after {prev}");
            assert!(handled.insert((c, seq)), "handled twice without a crash");
        }
    }
    assert_eq!(handled.len(), 120, "every entry of ov handled");
}

#[test]
fn dump_then_restore_of_a_sharded_stream_is_lossless_and_refuses_used_or_stray_ids() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let run = |args: &[&str]| sk(&url, args);
    let ok = |args: &[&str]| common::ok_url(&url, args);
    produce_keyed_customers(&url);
    let dump = ok(&["dump", "ev"]);
    assert_eq!(dump.lines().count(), 200);
    // restore puts each line back into the shard it names, IDs kept:
    // dump → restore of a sharded stream is lossless.
    ok(&["shard", "create", "ev3", "--shards", "6"]);
    let renamed = dump.replace("\"{ev:", "\"{ev3:");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("ev3.jsonl");
    std::fs::write(&file, &renamed).expect("write");
    ok(&[
        "restore",
        "ev3",
        "-i",
        file.to_str().expect("path"),
        "--keep-ids",
    ]);
    assert_eq!(ok(&["dump", "ev3"]), renamed);
    // --keep-ids lines that name no shard of the target are refused, with
    // nothing written.
    let o = run(&[
        "restore",
        "ev3",
        "-i",
        file.to_str().expect("path"),
        "--keep-ids",
    ]);
    assert_eq!(o.status.code(), Some(2), "IDs already used");
    let stray = dir.path().join("stray.jsonl");
    std::fs::write(&stray, dump.replace("\"{ev:", "\"{other:")).expect("write");
    ok(&["shard", "create", "ev4", "--shards", "6"]);
    let o = run(&[
        "restore",
        "ev4",
        "-i",
        stray.to_str().expect("path"),
        "--keep-ids",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("name one of its shards"));
    assert_eq!(ok(&["dump", "ev4"]).lines().count(), 0);
}

#[test]
fn a_tls_cluster_checks_certificates_unless_told_not_to() {
    let cluster = RedisCluster::start_tls().expect("TLS cluster");
    let url = cluster.tls_url().expect("tls url");
    let ca = cluster.ca_file().expect("ca file");
    // An untrusted (self-signed) certificate is refused: one line, no write.
    let o = sk(&url, &["produce", "t", "--field", "a=1"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "an unverified certificate was accepted"
    );
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        cluster
            .cli(
                cluster.primary_for_key("t").expect("owner"),
                &["EXISTS", "t"]
            )
            .trim(),
        "0"
    );
    // Trusting the certificate (SSL_CERT_FILE): every node is verified,
    // the dedicated blocking connections to each shard's primary too.
    let run_trusted = |args: &[&str]| {
        Command::new(BIN)
            .env("SSL_CERT_FILE", &ca)
            .args(["--redis", &url])
            .args(args)
            .output()
            .expect("run")
    };
    let trusted = |args: &[&str]| {
        let o = run_trusted(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    trusted(&["shard", "create", "ts", "--shards", "3"]);
    trusted(&["produce", "ts", "--field", "n={i}", "--count", "30", "-q"]);
    trusted(&["group", "create", "ts", "g", "--from", "-"]);
    assert_eq!(
        trusted(&["consume", "ts", "-g", "g", "--count", "30"])
            .lines()
            .count(),
        30
    );
    // doctor exits 1 for its warnings (no AOF here); every node answered
    // over TLS: 3 primaries, 3 replicas with their link up.
    let doctor = String::from_utf8_lossy(&run_trusted(&["doctor"]).stdout).into_owned();
    let nodes: Vec<&str> = doctor.lines().filter(|l| l.contains(" node ")).collect();
    assert_eq!(nodes.len(), 6, "{doctor}");
    assert_eq!(
        nodes
            .iter()
            .filter(|l| l.starts_with("ok") && l.contains("primary"))
            .count(),
        3,
        "{doctor}"
    );
    // `#insecure` skips the checks, as for rediss://.
    let insecure = format!("{url}/#insecure");
    let o = sk(&insecure, &["produce", "t", "--field", "a=1", "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let primary = cluster.primary_for_key("t").expect("owner");
    assert_eq!(cluster.cli(primary, &["XLEN", "t"]).trim(), "1");
}

/// How many of `acked` (the JSON lines `produce --json` printed for
/// `stream`) are missing from the primaries that own their keys now.
fn acknowledged_entries_missing(
    cluster: &RedisCluster,
    stream: &str,
    acked: &[serde_json::Value],
) -> usize {
    let mut present = std::collections::HashSet::new();
    let keys: std::collections::BTreeSet<String> = acked
        .iter()
        .map(|v| v["stream"].as_str().unwrap_or(stream).to_string())
        .collect();
    for key in keys {
        let port = cluster.primary_for_key(&key).expect("owner");
        for id in cluster.cli(port, &["XRANGE", &key, "-", "+"]).lines() {
            present.insert((key.clone(), id.trim().to_string()));
        }
    }
    acked
        .iter()
        .filter(|v| {
            let key = v["stream"].as_str().unwrap_or(stream).to_string();
            !present.contains(&(key, v["id"].as_str().expect("id").to_string()))
        })
        .count()
}

/// `produce` running through a manual failover of its stream's primary
/// keeps going (it used to exit 2 at the first `MOVED` inside its
/// `MULTI`/`EXEC`), and loses no acknowledged entry, with `--wait 1` and
/// without, for a plain and a sharded stream.
#[test]
fn produce_keeps_going_through_a_failover_and_loses_nothing_acknowledged() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    common::ok_url(&url, &["shard", "create", "fs", "--shards", "3"]);
    // The plain streams and a shard of fs on the primary we fail over.
    let victim = cluster.primary_for_key("fp").expect("owner");
    let fp2 = (0..)
        .map(|n| format!("fp{n}"))
        .find(|k| cluster.primary_for_key(k).ok() == Some(victim))
        .expect("a second name on the victim");
    assert!((0..3).any(|i| cluster.primary_for_key(&format!("{{fs:{i}}}")).ok() == Some(victim)));
    let runs: Vec<(&str, Vec<&str>)> = vec![
        ("fp", vec!["--wait", "1"]),
        (fp2.as_str(), vec![]),
        ("fs", vec!["--key", "k{i}"]),
    ];
    let mut children = Vec::new();
    for (stream, extra) in &runs {
        let mut child = Command::new(BIN)
            .args(["--redis", &url, "--json", "produce", stream])
            .args(["--field", "n={i}", "--count", "1000000", "--rate", "500/s"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn produce");
        let out = child.stdout.take().expect("stdout");
        let acked = std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(Result::ok)
                .map(|l| serde_json::from_str::<serde_json::Value>(&l).expect("json line"))
                .collect::<Vec<_>>()
        });
        children.push((stream, child, acked));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let failed_over_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    cluster.failover(victim).expect("failover");
    std::thread::sleep(Duration::from_secs(3));
    for (stream, mut child, acked) in children {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "produce {stream} stopped at the failover: {}",
            {
                let mut e = String::new();
                use std::io::Read;
                let _ = child.stderr.take().expect("stderr").read_to_string(&mut e);
                e
            }
        );
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(130), "{stream}");
        let acked = acked.join().expect("reader");
        let after = acked
            .iter()
            .filter(|v| {
                let id = v["id"].as_str().expect("id");
                id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()) > Some(failed_over_at)
            })
            .count();
        assert!(
            after > 0,
            "{stream}: nothing acknowledged after the failover"
        );
        // Every acknowledged ID is there (read from the new primaries).
        let lost = acknowledged_entries_missing(&cluster, stream, &acked);
        assert_eq!(
            lost,
            0,
            "{stream}: {lost} of {} acknowledged entries lost",
            acked.len()
        );
        eprintln!(
            "{stream}: {} acknowledged ({after} after the failover), 0 lost",
            acked.len()
        );
    }
}

/// Health checks never pass by not looking (docs/design.md §6): with a primary
/// SIGKILLed, `stat` without names either says it could not look (exit 2)
/// or lists every stream, the unreadable ones as unknown (exit 1); it
/// never exits 0 with rows missing. `doctor` prints its report and exits
/// 1 (a check failed), not "cannot connect".
#[test]
fn stat_and_doctor_with_a_primary_down_never_pass() {
    let mut cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let mut names: Vec<String> = (0..16).map(|i| format!("s{i}")).collect();
    for s in &names {
        common::ok_url(&url, &["produce", s, "--field", "n=1", "-q"]);
    }
    // A sharded stream, one shard per primary: never silently skipped.
    common::ok_url(&url, &["shard", "create", "sh", "--shards", "3"]);
    common::ok_url(
        &url,
        &["produce", "sh", "--field", "n={i}", "--count", "9", "-q"],
    );
    names.push("sh".into());
    let victim = cluster.primary_for_key("s0").expect("owner");
    cluster.kill_node(victim).expect("kill");
    // Before the replica takes over (NODE_TIMEOUT) and after it did.
    for when in ["at once", "after the failover window"] {
        if when != "at once" {
            std::thread::sleep(streamkeeper_testkit::NODE_TIMEOUT * 2);
        }
        let stat = sk(&url, &["--json", "stat"]);
        let out = String::from_utf8_lossy(&stat.stdout);
        let missing: Vec<&String> = names
            .iter()
            .filter(|s| !out.contains(&format!("\"stream\":\"{s}\"")))
            .collect();
        match stat.status.code() {
            Some(2) => {}
            Some(0 | 1) if missing.is_empty() => {}
            other => panic!(
                "{when}: stat exited {other:?} with {missing:?} missing: {out}{}",
                String::from_utf8_lossy(&stat.stderr)
            ),
        }
        let doctor = sk(&url, &["doctor"]);
        let report = String::from_utf8_lossy(&doctor.stdout);
        let err = String::from_utf8_lossy(&doctor.stderr);
        assert_eq!(doctor.status.code(), Some(1), "{when}: {report}{err}");
        assert!(report.contains(&victim.to_string()), "{when}: {report}");
        assert!(!err.contains("cannot connect"), "{when}: {err}");
    }
}
