//! Group consumer behaviour against a real redis-server.

mod common;
use common::{eventually, group, key, setup};
use std::collections::HashSet;
use std::time::{Duration, Instant};

use streamkeeper::{
    fields, AckMode, Connector, Error, GroupConsumer, Outcome, Producer, Source, StartFrom,
    StreamId, StreamKey,
};
use streamkeeper_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

async fn produce(redis: &Connector, stream: &StreamKey, n: usize) -> Vec<StreamId> {
    let batch: Vec<_> = (0..n).map(|i| fields([("n", i.to_string())])).collect();
    Producer::new(redis, stream.clone())
        .send_batch(&batch)
        .await
        .expect("produce")
}

async fn pending_count(redis: &Connector, stream: &StreamKey, g: &str) -> u64 {
    let mut conn = redis.shared();
    let v: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(stream)
        .arg(g)
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    v.0
}

#[tokio::test]
async fn entries_keep_field_order_and_bytes() {
    let (_server, redis) = setup().await;
    let s = key("orders");
    let f = vec![
        (b"z".to_vec(), vec![0xff, 0x00, 0x01]),
        (b"a".to_vec(), b"1".to_vec()),
        (b"z".to_vec(), b"again".to_vec()),
    ];
    let id = Producer::new(&redis, s.clone())
        .send(&f)
        .await
        .expect("send");
    let mut d = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let got = d.next().await.expect("item").expect("delivery");
    assert_eq!(got.id(), id);
    assert_eq!(got.entry().fields, f);
    assert_eq!(got.attempt(), 1);
    assert_eq!(got.source(), Source::New);
    got.ack();
    d.close().await.expect("close");
    assert_eq!(pending_count(&redis, &s, "g").await, 0);
}

on_every_topology!(crashed_consumer_entries_are_reclaimed);
async fn crashed_consumer_entries_are_reclaimed(redis: Connector) {
    let s = key("jobs");
    let ids = produce(&redis, &s, 50).await;
    // The "crashed" consumer reads a batch and never acks it.
    let mut crashed = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .batch(20)
        .start()
        .await
        .expect("start");
    let mut taken = Vec::new();
    for _ in 0..20 {
        taken.push(crashed.next().await.expect("item").expect("delivery").id());
    }
    drop(crashed);
    assert!(pending_count(&redis, &s, "g").await >= 20);

    let survivor =
        GroupConsumer::new(&redis, s.clone(), group("g")).claim_after(Duration::from_millis(300));
    let mut d = survivor.start().await.expect("start");
    let mut seen = HashSet::new();
    let mut claimed = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < ids.len() && Instant::now() < deadline {
        let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(5), d.next()).await else {
            break;
        };
        let del = item.expect("delivery");
        if del.source() == Source::Claimed {
            // Handed to the crashed consumer's handler: that run was cut
            // off, so this is attempt 2. Only read ahead: attempt 1.
            let expected = if taken.contains(&del.id()) { 2 } else { 1 };
            assert_eq!(del.attempt(), expected, "attempt of {}", del.id());
            claimed.insert(del.id());
        }
        seen.insert(del.id());
        del.ack();
    }
    d.close().await.expect("close");
    assert_eq!(
        seen,
        ids.iter().copied().collect::<HashSet<_>>(),
        "every entry processed"
    );
    for id in &taken {
        assert!(
            claimed.contains(id),
            "{id} taken by the crashed consumer was not reclaimed"
        );
    }
    assert_eq!(pending_count(&redis, &s, "g").await, 0);
}

#[tokio::test]
async fn restart_rereads_own_pending_first() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    let ids = produce(&redis, &s, 5).await;
    let name = streamkeeper::ConsumerName::new("worker-1").expect("name");
    let mut first = GroupConsumer::new(&redis, s.clone(), group("g"))
        .consumer_name(name.clone())
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let a = first.next().await.expect("item").expect("delivery");
    assert_eq!(a.id(), ids[0]);
    drop(a);
    first.close().await.expect("close");
    produce(&redis, &s, 1).await;

    let mut again = GroupConsumer::new(&redis, s.clone(), group("g"))
        .consumer_name(name)
        .start()
        .await
        .expect("start");
    let b = again.next().await.expect("item").expect("delivery");
    assert_eq!(b.source(), Source::Pending);
    assert_eq!(b.id(), ids[0]);
    // The first run was handed out and never settled: it counts.
    assert_eq!(b.attempt(), 2);
    again.close().await.expect("close");
}

#[tokio::test]
async fn blocking_read_neither_times_out_nor_stalls_other_commands() {
    let (_server, redis) = setup().await;
    let s = key("quiet");
    let mut d = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::End)
        .block(Duration::from_secs(5))
        .start()
        .await
        .expect("start");
    let reading = tokio::spawn(async move {
        let item = d.next().await;
        (item.map(|r| r.map(|del| del.id())), d)
    });
    // While the consumer blocks, the shared connection keeps answering.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut conn = redis.shared();
    for _ in 0..50 {
        let pong: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("PING");
        assert_eq!(pong, "PONG");
    }
    assert!(
        !reading.is_finished(),
        "the read returned before any entry was added"
    );
    // Past one whole BLOCK period (5 s, far beyond redis-rs's 500 ms
    // default response timeout) the read is still alive and gets the entry.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let (item, d) = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("read finished")
        .expect("join");
    assert_eq!(item.expect("an entry").expect("no error"), id);
    d.close().await.expect("close");
}

#[tokio::test]
async fn close_flushes_queued_acks() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    produce(&redis, &s, 300).await;
    let opts = streamkeeper::ConsumerOptions {
        ack_interval: Duration::from_secs(3600), // only a flush sends them
        ack_batch: 100_000,
        create: Some(StartFrom::Beginning),
        ..Default::default()
    };
    let mut d = GroupConsumer::new(&redis, s.clone(), group("g"))
        .options(opts)
        .start()
        .await
        .expect("start");
    for _ in 0..300 {
        d.next().await.expect("item").expect("delivery").ack();
    }
    assert_eq!(
        pending_count(&redis, &s, "g").await,
        300,
        "acks were not batched"
    );
    d.close().await.expect("close");
    assert_eq!(pending_count(&redis, &s, "g").await, 0);
}

on_every_topology!(run_acks_successes_and_stores_failures_for_retry);
async fn run_acks_successes_and_stores_failures_for_retry(redis: Connector) {
    let s = key("jobs");
    produce(&redis, &s, 100).await;
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen2 = seen.clone();
    let stats = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .run(
            move |d| {
                let seen = seen2.clone();
                let stopper = stopper.clone();
                async move {
                    let n: u64 = d
                        .entry()
                        .get_str("n")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 100 {
                        stopper.cancel();
                    }
                    match n % 10 {
                        0 => Err("boom"),
                        1 => panic!("handler panic on {n}"),
                        _ => Ok(Outcome::Ack),
                    }
                }
            },
            4,
            stop,
        )
        .await
        .expect("run");
    assert_eq!(stats.delivered, 100);
    assert_eq!(stats.acked, 80);
    assert_eq!(stats.retried, 20);
    // Failures stay pending, parked for their retry (backoff 1 s).
    assert_eq!(pending_count(&redis, &s, "g").await, 20);
    assert_eq!(
        streamkeeper::retry::waiting(&redis, &s, &group("g"))
            .await
            .expect("ZCARD"),
        20
    );
}

#[tokio::test]
async fn noack_mode_leaves_nothing_pending() {
    let (_server, redis) = setup().await;
    let s = key("events");
    produce(&redis, &s, 10).await;
    let mut d = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .ack_mode(AckMode::None)
        .start()
        .await
        .expect("start");
    for _ in 0..10 {
        d.next().await.expect("item").expect("delivery");
    }
    d.close().await.expect("close");
    assert_eq!(pending_count(&redis, &s, "g").await, 0);
}

#[tokio::test]
async fn missing_group_and_wrong_type_are_named() {
    let (_server, redis) = setup().await;
    produce(&redis, &key("s"), 1).await;
    let err = GroupConsumer::new(&redis, key("s"), group("nope"))
        .start()
        .await
        .expect_err("missing group");
    assert!(matches!(err, Error::GroupMissing { .. }), "{err}");
    assert!(err.to_string().contains("--create"), "{err}");

    let mut conn = redis.shared();
    let _: () = redis::cmd("SET")
        .arg("plain")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("SET");
    let err = GroupConsumer::new(&redis, key("plain"), group("g"))
        .start()
        .await
        .expect_err("wrong type");
    assert!(
        matches!(err, Error::WrongType { ref actual, .. } if actual == "string"),
        "{err}"
    );
    let err = Producer::new(&redis, key("plain"))
        .send(&fields([("k", "v")]))
        .await
        .expect_err("wrong type");
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
}

#[tokio::test]
async fn batched_producer_keeps_order_under_concurrency() {
    let (_server, redis) = setup().await;
    let s = key("b");
    let p = Producer::new(&redis, s.clone()).batched(streamkeeper::BatchOptions {
        max_in_flight: 64,
        ..Default::default()
    });
    let p = std::sync::Arc::new(p);
    let mut tasks = Vec::new();
    for t in 0..8 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..250 {
                ids.push(
                    p.send(fields([("t", t.to_string()), ("i", i.to_string())]))
                        .await
                        .expect("send"),
                );
            }
            ids
        }));
    }
    for t in tasks {
        let ids = t.await.expect("join");
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one task's IDs are in send order"
        );
    }
    let mut conn = redis.shared();
    let len: u64 = redis::cmd("XLEN")
        .arg(&s)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(len, 2000);
}

#[tokio::test]
async fn maxlen_cap_bounds_the_stream() {
    let (_server, redis) = setup().await;
    let s = key("capped");
    let p = Producer::new(&redis, s.clone()).with_cap(streamkeeper::Cap::MaxLen(1000));
    let batch: Vec<_> = (0..5000).map(|i| fields([("i", i.to_string())])).collect();
    p.send_batch(&batch).await.expect("send");
    let mut conn = redis.shared();
    let len: u64 = redis::cmd("XLEN")
        .arg(&s)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    // `~` trims whole macro nodes (100 entries by default): about 1000 remain.
    assert!((1000..1200).contains(&len), "len {len}");
}

#[tokio::test]
async fn tls_connections_produce_and_consume() {
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        tls: true,
        ..Default::default()
    })
    .expect("redis-server with TLS");
    let url = server.tls_url().expect("tls url");
    let redis = Connector::connect(&url).await.expect("connect over TLS");
    let s = key("secure");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send over TLS");
    let mut d = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start over TLS");
    let got = d.next().await.expect("item").expect("delivery");
    assert_eq!(got.id(), id);
    got.ack();
    d.close().await.expect("close");
    // The same server's plain unix socket sees the TLS client's writes.
    assert_eq!(server.cli(&["XLEN", "secure"]).expect("cli").trim(), "1");
    // Plain TCP to the TLS port fails with a one-line connect error.
    let plain = url
        .replace("rediss://", "redis://")
        .replace("/#insecure", "");
    let err = Connector::connect_with(
        &plain,
        streamkeeper::ConnectorOptions {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .expect_err("plain TCP to a TLS port");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

on_every_topology!(a_graceful_stop_hands_read_ahead_to_a_live_peer_at_once);
async fn a_graceful_stop_hands_read_ahead_to_a_live_peer_at_once(redis: Connector) {
    // A rolling restart or scale-down: consumer a reads ahead 20 entries,
    // handles 1 and stops. Its peer b must get the other 19 on its next
    // reclaim pass, not claim_after (20 s here) later, and no attempt is
    // counted for entries never handed to a handler.
    let s = key("handback");
    produce(&redis, &s, 20).await;
    let claim_after = Duration::from_secs(20);
    let mut a = GroupConsumer::new(&redis, s.clone(), group("g"))
        .consumer_name(streamkeeper::ConsumerName::new("a").expect("name"))
        .create_group(StartFrom::Beginning)
        .claim_after(claim_after)
        .start()
        .await
        .expect("start a");
    let first = a.next().await.expect("item").expect("delivery");
    first.ack();
    let pending = |who: &'static str| {
        let redis = redis.clone();
        let s = s.clone();
        async move {
            let mut conn = redis.shared();
            let rows: Vec<(String, String)> = redis::cmd("XPENDING")
                .arg(s.as_str())
                .arg("g")
                .query_async::<redis::Value>(&mut conn)
                .await
                .ok()
                .and_then(|v| match v {
                    redis::Value::Array(mut parts) if parts.len() == 4 => {
                        redis::from_redis_value(parts.remove(3)).ok()
                    }
                    _ => None,
                })
                .unwrap_or_default();
            rows.iter()
                .find(|(c, _)| c == who)
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .unwrap_or(0)
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || {
            let n = pending("a");
            async move { n.await >= 19 }
        })
        .await,
        "a holds read-ahead"
    );
    let mut b = GroupConsumer::new(&redis, s.clone(), group("g"))
        .consumer_name(streamkeeper::ConsumerName::new("b").expect("name"))
        .claim_after(claim_after)
        .start()
        .await
        .expect("start b");
    a.close().await.expect("close a");
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + claim_after / 2;
    while got.len() < 19 && std::time::Instant::now() < deadline {
        if let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_millis(500), b.next()).await {
            got.push((d.id(), d.attempt()));
            d.ack();
        }
    }
    assert_eq!(
        got.len(),
        19,
        "b got {} of the 19 entries a read ahead, within half of claim_after",
        got.len()
    );
    assert!(
        got.iter().all(|(_, attempt)| *attempt == 1),
        "read-ahead counted as attempts: {got:?}"
    );
    b.close().await.expect("close b");
}
