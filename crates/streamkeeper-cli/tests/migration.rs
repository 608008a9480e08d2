//! Routine cluster operations are not crashes (docs/design.md §6): shared-mode
//! consumers of a sharded stream keep running while every shard's slot
//! is moved to another primary by hand, slowly (seconds in transit, keys
//! split between two nodes: `ASK`, `TRYAGAIN`, `MOVED`, `UNBLOCKED`).
//! Counted per entry: handler runs (0 twice, 0 never) and dead letters.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;
use streamkeeper_testkit::{eventually_blocking, RedisCluster};

/// Logs `SK_STREAM ID` per run, answers `ack`; 2 ms per entry.
const WORKER: &str = r#"
import json, os, sys, time
log = open(os.environ["LOG"], "a", buffering=1)
for line in sys.stdin:
    e = json.loads(line)
    log.write(f"{e['stream']} {e['id']} {os.environ['SK_CONSUMER']}\n")
    time.sleep(0.002)
    print(f"ack {e['id']}", flush=True)
"#;

fn ok(url: &str, args: &[&str]) -> String {
    common::ok_url(url, args)
}

fn consumer(url: &str, worker: &str, log: &std::path::Path, name: &str) -> Child {
    Command::new(BIN)
        .args([
            "--redis",
            url,
            "consume",
            "orders",
            "-g",
            "g",
            "-c",
            name,
            "--pipe",
            worker,
            "--claim-after",
            "1s",
        ])
        .env("LOG", log)
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("consumer")
}

fn runs(log: &std::path::Path) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for l in std::fs::read_to_string(log).unwrap_or_default().lines() {
        // `STREAM ID CONSUMER`: an entry is its stream and ID.
        let entry = l.rsplit_once(' ').map_or(l, |(e, _)| e);
        *m.entry(entry.to_string()).or_default() += 1;
    }
    m
}

#[test]
fn slow_slot_migrations_under_shared_consumers_run_nothing_twice() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    let dir = tempfile::tempdir().expect("tmp");
    let script = dir.path().join("worker.py");
    std::fs::write(&script, WORKER).expect("worker");
    let worker = format!("python3 {}", script.display());
    let log = dir.path().join("runs");
    ok(&url, &["shard", "create", "orders", "--shards", "3"]);
    ok(&url, &["group", "create", "orders", "g", "--from", "-"]);
    ok(
        &url,
        &[
            "produce", "orders", "--field", "n={i}", "--count", "300", "-q",
        ],
    );
    let mut consumers = [
        consumer(&url, &worker, &log, "c1"),
        consumer(&url, &worker, &log, "c2"),
    ];

    // A producer keeps writing while the slots move.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let (url, stop) = (url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut chunks = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let o = common::sk_url(
                    &url,
                    &[
                        "produce", "orders", "--field", "n={i}", "--count", "20", "-q",
                    ],
                );
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                chunks += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            chunks
        })
    };
    // Every shard's slot goes to another primary, a second per key.
    for shard in 0..3 {
        if std::env::var_os("SK_TEST_NO_MIGRATION").is_some() {
            std::thread::sleep(Duration::from_secs(4));
            continue;
        }
        eprintln!(
            "migrating shard {shard} at {:?}",
            std::time::SystemTime::now()
        );
        let key = format!("{{orders:{shard}}}");
        let from = cluster.primary_for_key(&key).expect("owner");
        let to = cluster
            .primary_ports()
            .expect("primaries")
            .into_iter()
            .find(|p| *p != from)
            .expect("another primary");
        let moved = cluster
            .migrate_slowly(&key, to, Duration::from_secs(1))
            .expect("migration");
        assert!(moved >= 1, "{key}: nothing moved");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let chunks = producer.join().expect("producer");
    let total = 300 + 20 * chunks;
    let started = Instant::now();
    let all_ran = eventually_blocking(Duration::from_secs(60), || runs(&log).len() >= total);
    for c in &consumers {
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
    }
    let mut errs = String::new();
    for c in consumers.iter_mut() {
        let _ = c.wait();
        if let Some(mut e) = c.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut errs);
        }
    }
    if let Ok(path) = std::env::var("SK_TEST_KEEP") {
        let _ = std::fs::copy(&log, format!("{path}.runs"));
        let _ = std::fs::write(format!("{path}.err"), &errs);
    }
    let runs = runs(&log);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        all_ran,
        "{} of {total} entries ran ({:?} after the migrations)",
        runs.len(),
        started.elapsed()
    );
    assert!(
        twice.is_empty(),
        "{} entries ran twice with no crash, e.g. {:?}; consumer logs:\n{}",
        twice.len(),
        &twice[..twice.len().min(5)],
        errs.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        !errs.contains("taken over by a peer"),
        "nothing was frozen, yet:\n{errs}"
    );
    let dlq = ok(&url, &["dlq", "ls", "orders", "--json"]);
    assert!(dlq.trim().is_empty(), "dead letters: {dlq}");
}
