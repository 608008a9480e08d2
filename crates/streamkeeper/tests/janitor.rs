//! The janitor against a real server: exact trim points, caps that archive
//! first, the lease, and a randomized concurrent property test.

mod common;
use common::setup;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use streamkeeper::janitor::{self, Archive, JanitorOptions};
use streamkeeper::{fields, Connector, ConsumerName, Producer, StreamId, StreamKey};

async fn cmd<T: redis::FromRedisValue>(redis: &Connector, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    let mut conn = redis.shared();
    c.query_async(&mut conn).await.expect(args[0])
}

async fn ids(redis: &Connector, s: &str) -> Vec<StreamId> {
    streamkeeper::reader::range(
        redis,
        &StreamKey::new(s).expect("key"),
        StreamId::MIN,
        StreamId::MAX,
        1_000_000,
    )
    .await
    .expect("range")
    .iter()
    .map(|e| e.id)
    .collect()
}

/// Reads `n` entries as `consumer` of `group` and returns their IDs.
async fn read(redis: &Connector, s: &str, group: &str, consumer: &str, n: usize) -> Vec<String> {
    let v: redis::Value = {
        let mut conn = redis.shared();
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(n)
            .arg("STREAMS")
            .arg(s)
            .arg(">")
            .query_async(&mut conn)
            .await
            .expect("XREADGROUP")
    };
    let mut out = Vec::new();
    if let redis::Value::Array(streams) = v {
        for st in streams {
            if let redis::Value::Array(mut kv) = st {
                if let Some(redis::Value::Array(entries)) = kv.pop() {
                    for e in entries {
                        if let redis::Value::Array(parts) = e {
                            if let Some(redis::Value::BulkString(id)) = parts.first() {
                                out.push(String::from_utf8_lossy(id).into_owned());
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn janitor_trims_exactly_to_the_trim_point() {
    let (_server, redis) = setup().await;
    let s = StreamKey::new("orders").expect("key");
    let batch: Vec<_> = (0..10).map(|i| fields([("n", i.to_string())])).collect();
    let all = Producer::new(&redis, s.clone())
        .send_batch(&batch)
        .await
        .expect("produce");
    let _: () = cmd(&redis, &["XGROUP", "CREATE", "orders", "a", "0"]).await;
    let _: () = cmd(&redis, &["XGROUP", "CREATE", "orders", "b", "0"]).await;
    let a = read(&redis, "orders", "a", "a1", 6).await; // entries 0..5 delivered to a
    for id in &a[..3] {
        let _: u64 = cmd(&redis, &["XACK", "orders", "a", id]).await; // 0..2 acked, 3..5 pending
    }
    let b = read(&redis, "orders", "b", "b1", 8).await;
    for id in &b {
        let _: u64 = cmd(&redis, &["XACK", "orders", "b", id]).await; // 0..7 acked by b
    }
    // T = min(a: oldest pending = entry 3, b: after entry 7) = entry 3.
    let dry = janitor::run_once(
        &redis,
        &s,
        &JanitorOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .expect("dry run");
    assert_eq!((dry.trimmed, dry.trim_to), (3, Some(all[3])));
    assert_eq!(
        ids(&redis, "orders").await.len(),
        10,
        "a dry run trims nothing"
    );

    let r = janitor::run_once(&redis, &s, &JanitorOptions::default())
        .await
        .expect("run");
    assert_eq!(r.trimmed, 3);
    assert_eq!(r.trim_to, Some(all[3]));
    assert_eq!(ids(&redis, "orders").await, all[3..].to_vec());

    let _: u64 = cmd(&redis, &["XACK", "orders", "a", &a[3]]).await;
    let r = janitor::run_once(&redis, &s, &JanitorOptions::default())
        .await
        .expect("run");
    assert_eq!((r.trimmed, r.trim_to), (1, Some(all[4])));

    // A new group that starts at the beginning holds everything.
    let _: () = cmd(&redis, &["XGROUP", "CREATE", "orders", "c", "0"]).await;
    let r = janitor::run_once(&redis, &s, &JanitorOptions::default())
        .await
        .expect("run");
    assert_eq!(r.trimmed, 0);
    assert_eq!(ids(&redis, "orders").await.len(), 6);

    // No group at all: no ack-based trim.
    let lonely = StreamKey::new("lonely").expect("key");
    Producer::new(&redis, lonely.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let r = janitor::run_once(&redis, &lonely, &JanitorOptions::default())
        .await
        .expect("run");
    assert_eq!((r.trimmed, r.trim_to), (0, None));
}

#[tokio::test]
async fn caps_archive_unacked_entries_before_dropping_them() {
    let (_server, redis) = setup().await;
    let s = StreamKey::new("events").expect("key");
    let batch: Vec<_> = (0..10).map(|i| fields([("n", i.to_string())])).collect();
    let all = Producer::new(&redis, s.clone())
        .send_batch(&batch)
        .await
        .expect("produce");
    let _: () = cmd(&redis, &["XGROUP", "CREATE", "events", "slow", "0"]).await;

    let no_archive = janitor::run_once(
        &redis,
        &s,
        &JanitorOptions {
            max_len: Some(5),
            ..Default::default()
        },
    )
    .await;
    assert!(no_archive
        .expect_err("a cap needs an archive")
        .to_string()
        .contains("--archive"));
    assert_eq!(ids(&redis, "events").await.len(), 10);

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("archive.jsonl");
    let r = janitor::run_once(
        &redis,
        &s,
        &JanitorOptions {
            max_len: Some(4),
            archive: Some(Archive::File(file.clone())),
            ..Default::default()
        },
    )
    .await
    .expect("capped run");
    assert_eq!((r.trimmed, r.dropped_unacked), (6, 6));
    assert_eq!(ids(&redis, "events").await, all[6..].to_vec());
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .expect("archive")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), 6);
    for (line, id) in lines.iter().zip(&all[..6]) {
        let p = streamkeeper::wire::parse_line(line, "archive").expect("wire format");
        assert_eq!(p.id, Some(*id));
    }

    // Age cap into a stream archive.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = Producer::new(&redis, s.clone())
        .send(&fields([("n", "new")]))
        .await
        .expect("send");
    let r = janitor::run_once(
        &redis,
        &s,
        &JanitorOptions {
            max_age: Some(Duration::from_millis(30)),
            archive: Some(Archive::Stream(
                StreamKey::new("events-archive").expect("key"),
            )),
            ..Default::default()
        },
    )
    .await
    .expect("age cap");
    assert_eq!(r.dropped_unacked, 4);
    assert_eq!(ids(&redis, "events").await, vec![fresh]);
    assert_eq!(ids(&redis, "events-archive").await.len(), 4);
}

#[tokio::test]
async fn two_janitors_never_both_hold_the_lease() {
    let (_server, redis) = setup().await;
    let s = StreamKey::new("s").expect("key");
    let a = janitor::lease(
        &redis,
        &s,
        &ConsumerName::new("janitor-a").expect("name"),
        Duration::from_millis(400),
    );
    let b = janitor::lease(
        &redis,
        &s,
        &ConsumerName::new("janitor-b").expect("name"),
        Duration::from_millis(400),
    );
    assert!(a.acquire().await.expect("a"));
    assert!(!b.acquire().await.expect("b"));
    assert!(a.acquire().await.expect("a renews"));
    // a dies (stops renewing); after the lease time b takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.acquire().await.expect("b takes over"));
    assert!(!a.acquire().await.expect("a is out"));
    b.release().await.expect("release");
    assert!(a.acquire().await.expect("free again"));
}

/// What the test knows: produced IDs, where each group started, and the
/// IDs each group is about to ack (recorded *before* XACK is sent, so the
/// model never claims an entry is needed after the group let it go).
#[derive(Default)]
struct Model {
    produced: BTreeSet<StreamId>,
    start: HashMap<String, StreamId>,
    acked: HashMap<String, BTreeSet<StreamId>>,
}

impl Model {
    fn needed(&self) -> Vec<StreamId> {
        self.produced
            .iter()
            .filter(|id| {
                self.start.iter().any(|(g, start)| {
                    **id > *start && !self.acked.get(g).is_some_and(|a| a.contains(id))
                })
            })
            .copied()
            .collect()
    }
}

on_every_topology!(janitor_never_trims_unacked_entries);
async fn janitor_never_trims_unacked_entries(redis: Connector) {
    let cases = 200;
    let mut checks = 0;
    let mut trimmed_total = 0;
    for seed in 0..cases {
        let (c, t) = one_case(&redis, seed).await;
        checks += c;
        trimmed_total += t;
    }
    eprintln!("{cases} cases, {checks} invariant checks, {trimmed_total} entries trimmed");
    assert!(
        trimmed_total > 1000,
        "the janitor hardly ever trimmed: the test proves little"
    );
}

async fn one_case(redis: &Connector, seed: u64) -> (u64, u64) {
    let key = format!("prop{seed}");
    let s = StreamKey::new(key.clone()).expect("key");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let groups: Vec<String> = (0..rng.random_range(2..=3))
        .map(|g| format!("g{g}"))
        .collect();
    let model = Arc::new(Mutex::new(Model::default()));
    let producer = Producer::new(redis, s.clone());
    // Some entries exist before the groups; groups start at 0 or at $.
    for id in producer
        .send_batch(
            &(0..5)
                .map(|i| fields([("n", i.to_string())]))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("seed")
    {
        model.lock().expect("lock").produced.insert(id);
    }
    for g in &groups {
        let from = if rng.random_bool(0.5) { "0" } else { "$" };
        let _: () = cmd(redis, &["XGROUP", "CREATE", &key, g, from, "MKSTREAM"]).await;
        let info = streamkeeper::group::list_groups(redis, &s)
            .await
            .expect("groups");
        let start: StreamId = info
            .iter()
            .find(|i| i.name.as_str() == g.as_str())
            .expect("group")
            .last_delivered;
        model.lock().expect("lock").start.insert(g.clone(), start);
    }

    let mut tasks = Vec::new();
    // Producer.
    {
        let (producer, model, mut rng) = (
            producer.clone(),
            model.clone(),
            rand::rngs::StdRng::seed_from_u64(seed ^ 1),
        );
        tasks.push(tokio::spawn(async move {
            for _ in 0..rng.random_range(5..20) {
                let n = rng.random_range(1..5);
                let batch: Vec<_> = (0..n).map(|i| fields([("n", i.to_string())])).collect();
                for id in producer.send_batch(&batch).await.expect("produce") {
                    model.lock().expect("lock").produced.insert(id);
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    // Two consumers per group: read, ack some, steal some with XAUTOCLAIM.
    for g in &groups {
        for c in 0..2 {
            let (redis, model, key, g) = (redis.clone(), model.clone(), key.clone(), g.clone());
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(c));
            tasks.push(tokio::spawn(async move {
                let name = format!("{g}-c{c}");
                let mut mine: Vec<String> = Vec::new();
                for _ in 0..rng.random_range(10..40) {
                    match rng.random_range(0..5) {
                        0 | 1 => {
                            mine.extend(read(&redis, &key, &g, &name, rng.random_range(1..6)).await)
                        }
                        2 | 3 if !mine.is_empty() => {
                            let id = mine.swap_remove(rng.random_range(0..mine.len()));
                            let parsed: StreamId = id.parse().expect("id");
                            model
                                .lock()
                                .expect("lock")
                                .acked
                                .entry(g.clone())
                                .or_default()
                                .insert(parsed);
                            let _: u64 = cmd(&redis, &["XACK", &key, &g, &id]).await;
                        }
                        _ => {
                            let v: redis::Value = cmd(
                                &redis,
                                &["XAUTOCLAIM", &key, &g, &name, "0", "0-0", "COUNT", "3"],
                            )
                            .await;
                            if let redis::Value::Array(parts) = v {
                                if let Some(redis::Value::Array(entries)) = parts.get(1) {
                                    for e in entries {
                                        if let redis::Value::Array(p) = e {
                                            if let Some(redis::Value::BulkString(id)) = p.first() {
                                                mine.push(String::from_utf8_lossy(id).into_owned());
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    // The janitor, checking the invariant after every run.
    let janitor_task = {
        let (redis, model, s, key) = (redis.clone(), model.clone(), s.clone(), key.clone());
        tokio::spawn(async move {
            let mut checks = 0u64;
            let mut trimmed = 0u64;
            for _ in 0..8 {
                let r = janitor::run_once(&redis, &s, &JanitorOptions::default())
                    .await
                    .expect("janitor");
                trimmed += r.trimmed;
                // Snapshot the model first: every entry in it was appended
                // before this point, so it must be in the stream read next.
                let (needed, starts, acked) = {
                    let m = model.lock().expect("lock");
                    (
                        m.needed(),
                        format!("{:?}", m.start),
                        format!("{:?}", m.acked),
                    )
                };
                let present: BTreeSet<StreamId> = ids(&redis, &key).await.into_iter().collect();
                for id in needed {
                    assert!(present.contains(&id), "case {key}: {id} was trimmed while a group still needed it; trim_to {:?}; starts {starts}; acked {acked}; groups {:?}", r.trim_to, streamkeeper::group::list_groups(&redis, &s).await);
                }
                checks += 1;
                tokio::task::yield_now().await;
            }
            (checks, trimmed)
        })
    };
    for t in tasks {
        t.await.expect("task");
    }
    let (checks, mut trimmed) = janitor_task.await.expect("janitor task");
    // Finally: everyone acks everything; the janitor may then trim all that was read.
    let r = janitor::run_once(redis, &s, &JanitorOptions::default())
        .await
        .expect("final run");
    trimmed += r.trimmed;
    let present: BTreeSet<StreamId> = ids(redis, &key).await.into_iter().collect();
    for id in model.lock().expect("lock").needed() {
        assert!(
            present.contains(&id),
            "case {key}: {id} trimmed at the end while needed"
        );
    }
    let _: u64 = cmd(redis, &["DEL", &key]).await;
    (checks + 1, trimmed)
}
