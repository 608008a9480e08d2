//! Scheduler instances against a real server: missed-tick policies across
//! a restart, due times that survive restarts, edits while running.

mod common;
use common::{cmd, setup};
use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamkeeper::retry::now_ms;
use streamkeeper::scheduler::{Missed, Schedule, Scheduler};
use streamkeeper::{Connector, StreamId, StreamKey};
use streamkeeper_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

/// (schedule, due ms, emitted ms) of every tick in `stream`.
async fn ticks(redis: &Connector, stream: &str) -> Vec<(String, u64, u64)> {
    let entries = streamkeeper::reader::range(
        redis,
        &StreamKey::new(stream).expect("key"),
        StreamId::MIN,
        StreamId::MAX,
        1_000_000,
    )
    .await
    .expect("range");
    entries
        .iter()
        .map(|e| {
            (
                e.get_str("sk-schedule").expect("sk-schedule").to_string(),
                e.get_str("sk-due")
                    .and_then(|d| d.parse().ok())
                    .expect("sk-due"),
                e.id.ms,
            )
        })
        .collect()
}

fn start(
    redis: &Connector,
    ns: &str,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<streamkeeper::Result<streamkeeper::scheduler::InstanceStats>>,
) {
    let stop = CancellationToken::new();
    let s = Scheduler::new(redis, ns);
    let token = stop.clone();
    (
        stop,
        tokio::spawn(async move { s.run("test", token).await }),
    )
}

#[tokio::test]
async fn missed_ticks_after_a_restart_follow_the_policy() {
    let (_server, redis) = setup().await;
    let scheduler = Scheduler::new(&redis, "ns");
    for (name, missed) in [
        ("skip", Missed::Skip),
        ("once", Missed::Once),
        ("catch-up-2", Missed::CatchUp(2)),
    ] {
        let s = Schedule::every(name, Duration::from_secs(1), "ticks")
            .expect("schedule")
            .missed(missed);
        scheduler.add(&s).await.expect("add");
    }
    let (stop, task) = start(&redis, "ns");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.cancel();
    task.await.expect("join").expect("run");
    let stopped = now_ms();
    tokio::time::sleep(Duration::from_millis(3300)).await; // ~3 ticks missed
    let restarted = now_ms();
    let (stop, task) = start(&redis, "ns");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    task.await.expect("join").expect("run");

    let all = ticks(&redis, "ticks").await;
    let in_gap = |name: &str| {
        all.iter()
            .filter(|(n, due, _)| n == name && *due > stopped && *due + 1000 < restarted)
            .count()
    };
    assert_eq!(in_gap("skip"), 0, "skip emits no backlog");
    assert_eq!(in_gap("once"), 1, "once emits exactly one catch-up tick");
    assert_eq!(in_gap("catch-up-2"), 2, "catch-up:2 emits exactly two");
    // And every schedule goes on with its current tick, once each.
    for name in ["skip", "once", "catch-up-2"] {
        let mut dues: Vec<u64> = all
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, d, _)| *d)
            .collect();
        let before = dues.len();
        dues.dedup();
        assert_eq!(before, dues.len(), "{name}: duplicate ticks");
        assert!(
            dues.iter()
                .any(|d| *d + 1000 >= restarted && *d <= restarted + 1000),
            "{name}: no current tick"
        );
    }
}

#[tokio::test]
async fn a_long_interval_is_not_delayed_by_a_restart() {
    let (_server, redis) = setup().await;
    let scheduler = Scheduler::new(&redis, "ns");
    scheduler
        .add(
            &Schedule::every("report", Duration::from_secs(22 * 3600), "reports")
                .expect("schedule"),
        )
        .await
        .expect("add");
    let due_before = scheduler.list().await.expect("list")[0]
        .next_due_ms
        .expect("due");
    for _ in 0..2 {
        let (stop, task) = start(&redis, "ns");
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        task.await.expect("join").expect("run");
    }
    let due_after = scheduler.list().await.expect("list")[0]
        .next_due_ms
        .expect("due");
    assert_eq!(
        due_before, due_after,
        "the due time lives in Redis, not in the instance"
    );
    assert!(ticks(&redis, "reports").await.is_empty());
}

#[tokio::test]
async fn edits_pauses_and_deletes_take_effect_while_running() {
    let (_server, redis) = setup().await;
    let scheduler = Scheduler::new(&redis, "ns");
    let every = |name: &str, ms: u64| {
        Schedule::every(name, Duration::from_millis(ms), "ticks").expect("schedule")
    };
    for name in ["edited", "paused", "deleted"] {
        scheduler.add(&every(name, 500)).await.expect("add");
    }
    let (stop, task) = start(&redis, "ns");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let changed = now_ms();
    scheduler.add(&every("edited", 200)).await.expect("edit");
    assert!(scheduler.set_paused("paused", true).await.expect("pause"));
    assert!(scheduler.remove("deleted").await.expect("remove"));
    tokio::time::sleep(Duration::from_millis(1600)).await;
    stop.cancel();
    task.await.expect("join").expect("run");

    let all = ticks(&redis, "ticks").await;
    let by_name = |name: &str| -> Vec<(u64, u64)> {
        all.iter()
            .filter(|(n, ..)| n == name)
            .map(|(_, d, e)| (*d, *e))
            .collect()
    };
    // One poll is ≤ 100 ms; nothing of paused/deleted is emitted after it.
    for name in ["paused", "deleted"] {
        let late: Vec<_> = by_name(name)
            .into_iter()
            .filter(|(_, emitted)| *emitted > changed + 100)
            .collect();
        assert!(late.is_empty(), "{name} still fired: {late:?}");
        assert!(
            !by_name(name).is_empty(),
            "{name} never fired before the change"
        );
    }
    let edited = by_name("edited");
    let before: Vec<u64> = edited
        .iter()
        .filter(|(d, _)| *d <= changed)
        .map(|(d, _)| *d)
        .collect();
    let after: Vec<u64> = edited
        .iter()
        .filter(|(d, _)| *d > changed)
        .map(|(d, _)| *d)
        .collect();
    assert!(
        before.windows(2).all(|w| w[1] - w[0] == 500),
        "old interval: {before:?}"
    );
    assert!(after.len() >= 6, "new interval not in effect: {after:?}");
    assert!(
        after.windows(2).all(|w| w[1] - w[0] == 200),
        "new interval: {after:?}"
    );
    assert!(
        after[0] <= changed + 200 + 100,
        "first tick at the new interval came late"
    );

    // Resume: it fires again.
    assert!(scheduler.set_paused("paused", false).await.expect("resume"));
    let status: HashMap<String, Option<u64>> = scheduler
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.schedule.name, s.next_due_ms))
        .collect();
    assert!(status["paused"].is_some());
    assert!(!status.contains_key("deleted"));
}

on_every_topology!(two_step_emit_is_exactly_once_with_several_instances);
async fn two_step_emit_is_exactly_once_with_several_instances(redis: Connector) {
    let scheduler = Scheduler::new(&redis, "ns").two_step(true);
    assert_ne!(
        streamkeeper::types::key_slot("ticks"),
        streamkeeper::types::key_slot("{ns}:due"),
        "the target must be in another slot for this test"
    );
    for i in 0..5 {
        let s = Schedule::every(&format!("s{i}"), Duration::from_millis(200), "ticks")
            .expect("schedule");
        scheduler.add(&s).await.expect("add");
    }
    let mut running = Vec::new();
    for i in 0..3 {
        let stop = CancellationToken::new();
        let s = Scheduler::new(&redis, "ns").two_step(true);
        let token = stop.clone();
        running.push((
            stop,
            tokio::spawn(async move { s.run(&format!("i{i}"), token).await }),
        ));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (stop, task) in running {
        stop.cancel();
        task.await.expect("join").expect("run");
    }
    let all = ticks(&redis, "ticks").await;
    let mut per: HashMap<String, Vec<u64>> = HashMap::new();
    for (name, due, _) in all {
        per.entry(name).or_default().push(due);
    }
    assert_eq!(per.len(), 5);
    for (name, mut dues) in per {
        let n = dues.len();
        dues.sort_unstable();
        dues.dedup();
        assert_eq!(n, dues.len(), "{name}: duplicates");
        assert!(
            dues.windows(2).all(|w| w[1] - w[0] == 200),
            "{name}: gaps {dues:?}"
        );
        assert!(dues.len() >= 12, "{name}: only {} ticks", dues.len());
    }
}

#[tokio::test]
async fn a_tick_left_in_the_outbox_by_a_dead_instance_is_emitted_once() {
    let (_server, redis) = setup().await;
    let scheduler = Scheduler::new(&redis, "ns").two_step(true);
    scheduler
        .add(
            &Schedule::every("hb", Duration::from_secs(3600), "ticks")
                .expect("schedule")
                .field("k", "v"),
        )
        .await
        .expect("add");
    // An instance claimed the tick due 5 s ago (step one) and died before
    // appending it (step two).
    let due = now_ms() - 5_000;
    let mut conn = redis.shared();
    let _: () = redis::cmd("HSET")
        .arg("{ns}:outbox")
        .arg(format!("hb {due}"))
        .arg(format!(r#"["k","v","sk-schedule","hb","sk-due","{due}"]"#))
        .query_async(&mut conn)
        .await
        .expect("HSET");
    // Two instances find it at once; the dedupe key lets only one append.
    let (stop_a, a) = start_two_step(&redis);
    let (stop_b, b) = start_two_step(&redis);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop_a.cancel();
    stop_b.cancel();
    a.await.expect("join").expect("run");
    b.await.expect("join").expect("run");
    let all = ticks(&redis, "ticks").await;
    assert_eq!(
        all.iter()
            .filter(|(n, d, _)| n == "hb" && *d == due)
            .count(),
        1,
        "{all:?}"
    );
    let left: u64 = redis::cmd("HLEN")
        .arg("{ns}:outbox")
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    assert_eq!(left, 0);
}

fn start_two_step(
    redis: &Connector,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<streamkeeper::Result<streamkeeper::scheduler::InstanceStats>>,
) {
    let stop = CancellationToken::new();
    let s = Scheduler::new(redis, "ns").two_step(true);
    let token = stop.clone();
    (
        stop,
        tokio::spawn(async move { s.run("two-step", token).await }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_tick_to_a_non_stream_waits_in_the_outbox_and_the_instance_runs_on() {
    use streamkeeper::scheduler::{Schedule, Scheduler};
    use tokio_util::sync::CancellationToken;
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    let scheduler = Scheduler::new(&redis, "ns").two_step(true);
    for (name, to) in [("bad", "strkey"), ("good", "ticks")] {
        let s = Schedule::every(name, Duration::from_millis(200), to).expect("schedule");
        scheduler.add(&s).await.expect("add");
    }
    let _: () = cmd(&redis, &["SET", "strkey", "x"]).await;
    let stop = CancellationToken::new();
    let instance = {
        let (s, token) = (scheduler.clone(), stop.clone());
        tokio::spawn(async move { s.run("i1", token).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!instance.is_finished(), "the instance keeps running");
    let good: u64 = cmd(&redis, &["XLEN", "ticks"]).await;
    assert!(good >= 3, "the good schedule fires: {good}");
    let waiting: u64 = cmd(&redis, &["HLEN", "{ns}:outbox"]).await;
    assert!(waiting >= 1, "the bad schedule's ticks wait in the outbox");
    // Fixed: the outbox recovery emits what waited.
    let _: () = cmd(&redis, &["DEL", "strkey"]).await;
    let t = Instant::now();
    loop {
        let n: u64 = cmd(&redis, &["XLEN", "strkey"]).await;
        if n >= waiting {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "only {n} of {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    instance.await.expect("join").expect("run");
}
