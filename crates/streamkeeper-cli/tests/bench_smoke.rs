//! The benches of issue 13 run end to end on small numbers and print the
//! fields scripts read (`bench e2e`, `bench consume --pipe`, `bench
//! scheduler`). Each starts its own private redis-server.

use std::process::{Command, Output};

mod common;

use common::BIN;

fn bench(args: &[&str]) -> Vec<serde_json::Value> {
    let o: Output = Command::new(BIN)
        .args(["-q", "--json", "bench"])
        .args(args)
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run bench");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn bench_e2e_prints_latency_per_transport_and_path() {
    let rows = bench(&["e2e", "--messages", "300", "--rate", "3000/s", "--pipe"]);
    let seen: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            for k in ["p50_us", "p99_us", "max_us"] {
                assert!(r[k].as_u64().is_some_and(|v| v > 0), "{k} in {r}");
            }
            assert!(r["p50_us"].as_u64() <= r["p99_us"].as_u64(), "{r}");
            assert!(r["p99_us"].as_u64() <= r["max_us"].as_u64(), "{r}");
            (
                r["transport"].as_str().unwrap_or("").to_string(),
                r["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("unix", "library"),
        ("unix", "pipe"),
        ("tcp", "library"),
        ("tcp", "pipe"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), p.to_string()))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn bench_consume_pipe_compares_with_in_process() {
    let rows = bench(&["consume", "--pipe", "--messages", "3000"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["mode"], "consume --pipe");
    assert!(r["rate"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    assert!(r["baseline_rate"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    assert!(r["ratio"].as_f64().is_some(), "{r}");
}

#[test]
fn bench_scheduler_imports_and_counts_duplicates() {
    let rows = bench(&[
        "scheduler",
        "--schedules",
        "300",
        "--every",
        "1s",
        "--instances",
        "2",
        "--duration",
        "2s",
    ]);
    let r = &rows[0];
    assert_eq!(r["duplicates"], 0, "{r}");
    assert!(r["ticks"].as_u64().is_some_and(|t| t >= 300), "{r}");
    assert!(r["import_seconds"].as_f64().is_some(), "{r}");
    assert!(
        r["redis_bytes_per_schedule"]
            .as_f64()
            .is_some_and(|b| b > 0.0),
        "{r}"
    );
}

#[test]
fn bench_shards_compares_with_a_plain_loop_and_reports_each_node() {
    let rows = bench(&[
        "all",
        "--shards",
        "3",
        "--messages",
        "3000",
        "--size",
        "10",
        "--baseline",
    ]);
    for mode in ["produce", "consume"] {
        let fig = rows
            .iter()
            .find(|r| r["mode"] == mode && r["rate"].is_number())
            .unwrap_or_else(|| panic!("no {mode} figure in {rows:?}"));
        assert!(
            fig["baseline_rate"].as_f64().is_some_and(|b| b > 0.0),
            "{fig}"
        );
        assert!(fig["ratio"].as_f64().is_some_and(|r| r > 0.0), "{fig}");
        let shares: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["mode"] == mode && r["share"].is_number())
            .collect();
        assert_eq!(shares.len(), 1, "one node on a single server: {rows:?}");
        assert!(shares[0]["commands"].as_u64().is_some_and(|c| c > 0));
    }
}
