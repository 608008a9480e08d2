//! Exactly-once effects against a real server: `send_once` appends at most
//! once per key, and `ack_and_produce` turns each input into one output,
//! also when its workers are SIGKILLed in a loop.

mod common;
use common::{group, key, places, setup};
use std::collections::HashMap;
use std::time::Duration;

use streamkeeper::{exactly_once, fields, Connector, GroupConsumer, Producer, StartFrom, StreamId};
use streamkeeper_testkit::RedisServer;

on_every_topology!(send_once_appends_at_most_once_per_key);
async fn send_once_appends_at_most_once_per_key(redis: Connector) {
    let s = key("payments");
    let (sent, id) = exactly_once::send_once(
        &redis,
        &s,
        "pay-42",
        Duration::from_secs(60),
        &fields([("amount", "5")]),
    )
    .await
    .expect("first");
    assert!(sent);
    let (again, same) = exactly_once::send_once(
        &redis,
        &s,
        "pay-42",
        Duration::from_secs(60),
        &fields([("amount", "5")]),
    )
    .await
    .expect("second");
    assert!(!again);
    assert_eq!(same, id);
    let (other, _) = exactly_once::send_once(
        &redis,
        &s,
        "pay-43",
        Duration::from_secs(60),
        &fields([("amount", "7")]),
    )
    .await
    .expect("other key");
    assert!(other);
    let mut conn = redis.shared();
    let len: u64 = redis::cmd("XLEN")
        .arg(&s)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(len, 2);
}

#[tokio::test]
async fn ack_and_produce_needs_one_slot_and_produces_once() {
    let (_server, redis) = setup().await;
    let input = key("{orders}.in");
    Producer::new(&redis, input.clone())
        .send(&fields([("n", "1")]))
        .await
        .expect("send");
    let mut c = GroupConsumer::new(&redis, input.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let d = c.next().await.expect("item").expect("delivery");
    let err = exactly_once::ack_and_produce(&d, &key("elsewhere"), &fields([("x", "1")]))
        .await
        .expect_err("different slots");
    assert!(err.to_string().contains("hash slot"), "{err}");
    let out = key("{orders}.out");
    let first = exactly_once::ack_and_produce(&d, &out, &fields([("x", "1")]))
        .await
        .expect("produce");
    assert!(first.is_some());
    let second = exactly_once::ack_and_produce(&d, &out, &fields([("x", "1")]))
        .await
        .expect("again");
    assert_eq!(second, None, "an input already done produces nothing");
    c.close().await.expect("close");
    assert_eq!(places(&redis, &input, "g").await, (0, 0, 0, 0));
}

#[test]
fn ack_and_produce_survives_a_sigkill_loop() {
    let server = RedisServer::start().expect("redis-server");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = rt
        .block_on(Connector::connect(&server.url()))
        .expect("connect");
    let input = key("{p}.in");
    let batch: Vec<_> = (0..2000).map(|i| fields([("n", i.to_string())])).collect();
    let ids: Vec<StreamId> = rt
        .block_on(Producer::new(&redis, input.clone()).send_batch(&batch))
        .expect("produce");
    rt.block_on(streamkeeper::group::create_group(
        &redis,
        &input,
        &group("g"),
        StartFrom::Beginning,
    ))
    .expect("group");

    // The worker: tests/bin/ack_and_produce_worker.rs.
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sk-test-ack-and-produce-worker"))
            .arg(server.url())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn worker")
    };
    let done = || {
        let (p, _, _, lag) = rt.block_on(places(&redis, &input, "g"));
        p == 0 && lag == 0
    };
    let mut kills = 0;
    let mut seed = 0x9e37_79b9_u64;
    while !done() && kills < 40 {
        let mut a = spawn();
        let mut b = spawn();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 250));
        let _ = a.kill();
        let _ = b.kill();
        let _ = a.wait();
        let _ = b.wait();
        kills += 2;
    }
    // One last worker finishes what the killed ones left pending.
    let mut last = spawn();
    assert!(
        streamkeeper_testkit::eventually_blocking(Duration::from_secs(30), done),
        "input never drained"
    );
    let _ = last.kill();
    let _ = last.wait();

    let out = rt
        .block_on(streamkeeper::reader::range(
            &redis,
            &key("{p}.out"),
            StreamId::MIN,
            StreamId::MAX,
            100_000,
        ))
        .expect("outputs");
    let mut per_input: HashMap<String, u64> = HashMap::new();
    for e in &out {
        *per_input
            .entry(e.get_str("in").expect("in").to_string())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_input.iter().filter(|(_, n)| **n > 1).collect();
    let lost: Vec<_> = ids
        .iter()
        .filter(|id| !per_input.contains_key(&id.to_string()))
        .collect();
    eprintln!(
        "{} inputs, {} outputs, {kills} kills, {} twice, {} lost",
        ids.len(),
        out.len(),
        twice.len(),
        lost.len()
    );
    assert!(
        kills >= 4,
        "the loop killed too few workers to prove anything"
    );
    assert!(twice.is_empty(), "outputs produced twice: {twice:?}");
    assert!(lost.is_empty(), "inputs without output: {}", lost.len());
    assert_eq!(out.len(), ids.len());
}
