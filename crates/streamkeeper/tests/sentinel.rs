//! Failover through Sentinel: a consumer blocked in XREADGROUP follows the
//! new master and keeps going; producers follow it too.

use std::time::{Duration, Instant};

use streamkeeper::{fields, Connector, GroupConsumer, GroupName, Producer, StartFrom, StreamKey};
use streamkeeper_testkit::SentinelTopology;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_during_blocking_read_resumes_on_the_new_master() {
    let topo = tokio::task::spawn_blocking(SentinelTopology::start)
        .await
        .expect("join")
        .expect("sentinel topology");
    let redis = Connector::connect(&topo.url())
        .await
        .expect("connect through sentinel");
    let first_master = redis.server_addr();
    let s = StreamKey::new("jobs").expect("key");
    let producer = Producer::new(&redis, s.clone());
    producer
        .send(&fields([("n", "before")]))
        .await
        .expect("send before");

    let mut consumer = GroupConsumer::new(&redis, s.clone(), GroupName::new("g").expect("g"))
        .create_group(StartFrom::Beginning)
        .block(Duration::from_secs(5))
        .start()
        .await
        .expect("start");
    let d = consumer.next().await.expect("item").expect("delivery");
    assert_eq!(d.entry().get_str("n"), Some("before"));
    d.ack();
    consumer.flush_acks().await.expect("flush");

    // The consumer is now blocked in a 5 s read when the master changes.
    let reader = tokio::spawn(async move {
        let got = consumer.next().await;
        (got, consumer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let topo = std::sync::Arc::new(topo);
    let t = topo.clone();
    let new_port = tokio::task::spawn_blocking(move || t.failover())
        .await
        .expect("join")
        .expect("failover");
    let switched = Instant::now();

    // The producer follows the failover by itself (READONLY → re-resolve).
    producer
        .send(&fields([("n", "after")]))
        .await
        .expect("send after the failover");
    assert_eq!(redis.server_addr(), format!("127.0.0.1:{new_port}"));
    assert_ne!(redis.server_addr(), first_master);

    let (got, consumer) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the read resumed within 10 s of the switch")
        .expect("join");
    let d = got.expect("an item").expect("a delivery, not an error");
    assert_eq!(d.entry().get_str("n"), Some("after"));
    eprintln!("resumed {:?} after the switch", switched.elapsed());
    d.ack();
    consumer.close().await.expect("close");

    let mut conn = redis.shared();
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&s)
        .arg("g")
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    assert_eq!(pending.0, 0);
}
