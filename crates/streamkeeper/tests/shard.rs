//! Sharded logical streams on a single server (shard keys `{S:i}` work on
//! one server too; `cluster_cli.rs` runs them on a real cluster).

mod common;

use common::{key, setup};
use streamkeeper::shard::{shard_for, ShardLayout, ShardedProducer};
use streamkeeper::{fields, StreamId};

#[tokio::test]
async fn a_batch_lands_on_the_routed_shards_in_send_order_per_key() {
    let (_server, redis) = setup().await;
    let s = key("events");
    let layout = ShardLayout::create(&redis, &s, 4).await.expect("create");
    assert_eq!(
        ShardLayout::open(&redis, &s).await.expect("open"),
        Some(layout.clone())
    );
    let producer = ShardedProducer::new(&redis, layout.clone());
    let batch: Vec<(Option<String>, _)> = (0..200)
        .map(|i| {
            let k = format!("k{}", i % 10);
            (Some(k.clone()), fields([("k", k), ("seq", i.to_string())]))
        })
        .collect();
    let placed = producer.send_batch(&batch).await.expect("send");
    assert_eq!(placed.len(), 200);
    for ((k, _), (shard, _)) in batch.iter().zip(&placed) {
        let k = k.as_deref().expect("key");
        assert_eq!(shard, &layout.shard(shard_for(k.as_bytes(), 4)));
    }
    // Each shard holds its keys' entries in send order.
    let mut total = 0;
    for shard in layout.shards() {
        let entries =
            streamkeeper::reader::range(&redis, &shard, StreamId::MIN, StreamId::MAX, 1000)
                .await
                .expect("range");
        total += entries.len();
        let mut last: std::collections::HashMap<String, u64> = Default::default();
        for e in entries {
            let k = e.get_str("k").expect("k").to_string();
            let seq: u64 = e.get_str("seq").expect("seq").parse().expect("n");
            assert_eq!(layout.route(k.as_bytes()), shard);
            if let Some(prev) = last.insert(k.clone(), seq) {
                assert!(seq > prev, "{k}: {seq} after {prev}");
            }
        }
    }
    assert_eq!(total, 200);
    // No key: round-robin over every shard.
    for _ in 0..8 {
        producer
            .send(None, &fields([("x", "1")]))
            .await
            .expect("send");
    }
    for shard in layout.shards() {
        let n = streamkeeper::reader::range(&redis, &shard, StreamId::MIN, StreamId::MAX, 1000)
            .await
            .expect("range")
            .iter()
            .filter(|e| e.get_str("x").is_some())
            .count();
        assert_eq!(n, 2, "{shard}");
    }
}

#[tokio::test]
async fn creating_is_refused_for_plain_streams_other_counts_and_braces() {
    let (_server, redis) = setup().await;
    streamkeeper::Producer::new(&redis, key("plain"))
        .send(&fields([("a", "1")]))
        .await
        .expect("send");
    for (name, n) in [("plain", 2), ("x", 0), ("x", 5000), ("{t}x", 2)] {
        let err = ShardLayout::create(&redis, &key(name), n)
            .await
            .expect_err(name);
        assert!(
            matches!(err, streamkeeper::Error::InvalidInput(_)),
            "{name}: {err}"
        );
    }
    ShardLayout::create(&redis, &key("y"), 3)
        .await
        .expect("create");
    let err = ShardLayout::create(&redis, &key("y"), 2)
        .await
        .expect_err("recount");
    assert!(err.to_string().contains("already sharded 3 ways"), "{err}");
    assert_eq!(
        ShardLayout::open(&redis, &key("plain"))
            .await
            .expect("open"),
        None
    );
}

#[tokio::test]
async fn shared_mode_reads_every_shard_and_acks_each_entry_on_its_shard() {
    use std::sync::{Arc, Mutex};
    use streamkeeper::{ConsumerName, ConsumerOptions, Outcome, StartFrom};
    let (_server, redis) = setup().await;
    let layout = ShardLayout::create(&redis, &key("sh"), 3)
        .await
        .expect("create");
    let g = common::group("g");
    for shard in layout.shards() {
        streamkeeper::group::create_group(&redis, &shard, &g, StartFrom::Beginning)
            .await
            .expect("group");
    }
    let batch: Vec<(Option<String>, _)> = (0..30)
        .map(|i| (None, fields([("n", i.to_string())])))
        .collect();
    ShardedProducer::new(&redis, layout.clone())
        .send_batch(&batch)
        .await
        .expect("send");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let run = {
        let (redis, layout, g, seen, stop) = (
            redis.clone(),
            layout.clone(),
            g.clone(),
            seen.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            streamkeeper::shard::ShardedConsumer::new(&redis, layout.stream().clone(), g.clone())
                .consumer_name(ConsumerName::new("c").expect("name"))
                .options(ConsumerOptions::default())
                .concurrency(4)
                .run(
                    move |d: streamkeeper::Delivery| {
                        let seen = seen.clone();
                        async move {
                            seen.lock()
                                .expect("lock")
                                .push((d.stream().to_string(), d.id()));
                            Ok::<_, String>(Outcome::Ack)
                        }
                    },
                    stop,
                )
                .await
        })
    };
    assert!(
        common::eventually(std::time::Duration::from_secs(5), || {
            let n = seen.lock().expect("lock").len();
            async move { n == 30 }
        })
        .await
    );
    stop.cancel();
    let stats = run.await.expect("join").expect("run");
    assert_eq!((stats.delivered, stats.acked), (30, 30));
    let mut conn = redis.shared();
    for shard in layout.shards() {
        let (pending, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(shard.as_str())
            .arg("g")
            .query_async(&mut conn)
            .await
            .expect("xpending");
        assert_eq!(pending, 0, "{shard}: acked on its own shard");
        let on_shard = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(s, _)| s == shard.as_str())
            .count();
        assert_eq!(on_shard, 10, "{shard}");
    }
}

#[tokio::test]
async fn shared_mode_stops_every_shard_when_one_cannot_run() {
    use streamkeeper::{ConsumerName, Outcome, StartFrom};
    let (_server, redis) = setup().await;
    let layout = ShardLayout::create(&redis, &key("half"), 2)
        .await
        .expect("create");
    let g = common::group("g");
    // The group exists on shard 0 only.
    streamkeeper::group::create_group(&redis, &layout.shard(0), &g, StartFrom::Beginning)
        .await
        .expect("group");
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        streamkeeper::shard::ShardedConsumer::new(&redis, layout.stream().clone(), g.clone())
            .consumer_name(ConsumerName::new("c").expect("name"))
            .run(
                |_d: streamkeeper::Delivery| async { Ok::<_, String>(Outcome::Ack) },
                tokio_util::sync::CancellationToken::new(),
            ),
    )
    .await
    .expect("returns instead of running shard 0 alone");
    assert!(
        matches!(r, Err(streamkeeper::Error::GroupMissingOnShard { ref shard, .. }) if shard == &layout.shard(1)),
        "{r:?}"
    );
}
