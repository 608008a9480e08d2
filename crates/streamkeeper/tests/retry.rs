//! Retries and dead letters against a real server: poison entries, retry
//! delays, the retry mover, and the same policy on every way of consuming.
//! (Exactly-once effects: `exactly_once.rs`.)

mod common;
use common::{group, key, places, setup};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamkeeper::{
    deadletter, fields, retry, Connector, GroupConsumer, Outcome, Producer, StartFrom,
};
use tokio_util::sync::CancellationToken;

on_every_topology!(poison_entry_is_delivered_max_times_then_dead_lettered_once);
async fn poison_entry_is_delivered_max_times_then_dead_lettered_once(redis: Connector) {
    let s = key("orders");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("order", "poison")]))
        .await
        .expect("send");
    streamkeeper::group::create_group(&redis, &s, &group("g"), StartFrom::Beginning)
        .await
        .expect("group");

    // A watcher checks, atomically and all the time, that the entry is in
    // exactly one place: pending, waiting for retry, undelivered, or dead.
    let stop_watch = CancellationToken::new();
    let watcher = {
        let (redis, s, stop) = (redis.clone(), s.clone(), stop_watch.clone());
        tokio::spawn(async move {
            let mut snapshots = 0u64;
            while !stop.is_cancelled() {
                let (p, r, d, lag) = places(&redis, &s, "g").await;
                assert_eq!(
                    p + r + d + lag,
                    1,
                    "entry in {p} pending + {r} retry + {d} dead + {lag} undelivered places"
                );
                snapshots += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            snapshots
        })
    };

    let calls = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let consumer = {
        let (redis, s, calls, stop) = (redis.clone(), s.clone(), calls.clone(), stop.clone());
        tokio::spawn(async move {
            GroupConsumer::new(&redis, s, group("g"))
                .max_deliveries(3)
                .retry_backoff(Duration::from_millis(50), Duration::from_millis(200))
                .run(
                    move |d| {
                        let calls = calls.clone();
                        async move {
                            calls.lock().expect("lock").push(d.attempt());
                            Err::<Outcome, _>("cannot parse order")
                        }
                    },
                    1,
                    stop,
                )
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while deadletter::list(&redis, &s, 10)
        .await
        .expect("list")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a buggy second dead-lettering a chance to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let stats = consumer.await.expect("join").expect("run");
    stop_watch.cancel();
    let snapshots = watcher
        .await
        .expect("watcher saw the entry in two places (or none)");
    assert!(snapshots > 10);

    assert_eq!(
        *calls.lock().expect("lock"),
        vec![1, 2, 3],
        "handler calls with their attempt numbers"
    );
    assert_eq!(stats.dead_lettered, 1);
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.get_str("order"), Some("poison"));
    assert_eq!(d.get_str("sk-origin"), Some("orders"));
    assert_eq!(d.get_str("sk-origin-id"), Some(id.to_string().as_str()));
    assert_eq!(d.get_str("sk-group"), Some("g"));
    assert_eq!(d.get_str("sk-deliveries"), Some("3"), "attempts");
    assert!(d.get_str("sk-reason").is_some_and(|r| r.contains("max 3")));
    let dead_at: u64 = d
        .get_str("sk-dead-at")
        .and_then(|t| t.parse().ok())
        .expect("sk-dead-at");
    assert!(dead_at >= id.ms);
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 1, 0));

    // Replay puts it back once, for group g only, with a fresh count.
    let back = deadletter::replay(&redis, &s, d.id)
        .await
        .expect("replay")
        .expect("replayed");
    assert!(deadletter::replay(&redis, &s, d.id)
        .await
        .expect("replay again")
        .is_none());
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 1));
    let entries = streamkeeper::reader::range(&redis, &s, back, back, 1)
        .await
        .expect("range");
    assert_eq!(entries[0].get_str("order"), Some("poison"));
    assert_eq!(
        entries[0].get_str("sk-origin-id"),
        Some(id.to_string().as_str())
    );
    assert_eq!(entries[0].get_str("sk-retry-group"), Some("g"));
    assert_eq!(entries[0].get_str("sk-reason"), None);
}

on_every_topology!(retry_redelivers_after_the_delay_not_before);
async fn retry_redelivers_after_the_delay_not_before(redis: Connector) {
    let s = key("jobs");
    Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    /// When it was handled, its delivery count, its `sk-attempt`.
    type Seen = Arc<Mutex<Vec<(Instant, u64, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let stop = CancellationToken::new();
    let task = {
        let (redis, s, seen, stop2) = (redis.clone(), s.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            GroupConsumer::new(&redis, s, group("g"))
                .create_group(StartFrom::Beginning)
                .run(
                    move |d| {
                        let (seen, stop) = (seen.clone(), stop2.clone());
                        async move {
                            let mut seen = seen.lock().expect("lock");
                            seen.push((
                                Instant::now(),
                                d.attempt(),
                                d.entry().get_str("sk-attempt").map(str::to_string),
                            ));
                            if seen.len() == 1 {
                                Ok::<_, String>(Outcome::Retry {
                                    after: Some(Duration::from_secs(2)),
                                })
                            } else {
                                stop.cancel();
                                Ok(Outcome::Ack)
                            }
                        }
                    },
                    1,
                    stop,
                )
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("finished")
        .expect("join")
        .expect("run");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2);
    let gap = seen[1].0 - seen[0].0;
    assert!(gap >= Duration::from_secs(2), "redelivered after {gap:?}");
    assert_eq!((seen[0].1, seen[1].1), (1, 2), "delivery counts");
    assert_eq!(
        seen[1].2.as_deref(),
        Some("1"),
        "attempt counter on the retried entry"
    );
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn crash_between_retry_store_and_reappend_loses_nothing() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let mut first = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let d = first.next().await.expect("item").expect("delivery");
    assert_eq!(
        d.retry(Some(Duration::from_millis(300)))
            .await
            .expect("retry"),
        streamkeeper::Settled::RetryScheduled
    );
    // The process dies right after storing: nothing runs its mover.
    drop(d);
    drop(first);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (p, r, dead, lag) = places(&redis, &s, "g").await;
    assert_eq!((p, dead, lag), (0, 0, 0));
    assert_eq!(r, 1, "the retry waits in the set");

    // Any consumer of the stream moves it back when it is due.
    let mut second = GroupConsumer::new(&redis, s.clone(), group("g"))
        .start()
        .await
        .expect("start");
    let again = tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("redelivered")
        .expect("item")
        .expect("delivery");
    assert_eq!(retry::origin_id(again.entry()), id);
    assert_eq!(again.attempt(), 2);
    again.ack();
    second.close().await.expect("close");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn other_groups_skip_a_retry_meant_for_one_group() {
    let (_server, redis) = setup().await;
    let s = key("events");
    for g in ["a", "b"] {
        streamkeeper::group::create_group(&redis, &s, &group(g), StartFrom::End)
            .await
            .expect("group");
    }
    Producer::new(&redis, s.clone())
        .send(&fields([("n", "1")]))
        .await
        .expect("send");
    let mut a = GroupConsumer::new(&redis, s.clone(), group("a"))
        .start()
        .await
        .expect("a");
    let d = a.next().await.expect("item").expect("delivery");
    d.retry(Some(Duration::ZERO)).await.expect("retry");
    let d2 = tokio::time::timeout(Duration::from_secs(5), a.next())
        .await
        .expect("retry back")
        .expect("item")
        .expect("delivery");
    assert_eq!(d2.entry().get_str("sk-retry-group"), Some("a"));
    d2.ack();
    a.close().await.expect("close a");

    // Group b sees the original once, and never the retry meant for a.
    let mut b = GroupConsumer::new(&redis, s.clone(), group("b"))
        .start()
        .await
        .expect("b");
    let first = b.next().await.expect("item").expect("delivery");
    assert_eq!(first.entry().get_str("sk-retry-group"), None);
    first.ack();
    let more = tokio::time::timeout(Duration::from_millis(700), b.next()).await;
    assert!(more.is_err(), "group b got the retry of group a: {more:?}");
    b.close().await.expect("close b");
    assert_eq!(places(&redis, &s, "b").await, (0, 0, 0, 0));
}

on_every_topology!(the_deliveries_stream_meets_the_same_poison_policy_as_run);
async fn the_deliveries_stream_meets_the_same_poison_policy_as_run(redis: Connector) {
    let s = key("jobs");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let consumer = |name: &str| {
        GroupConsumer::new(&redis, s.clone(), group("g"))
            .consumer_name(streamkeeper::ConsumerName::new(name).expect("name"))
            .create_group(StartFrom::Beginning)
            .max_deliveries(3)
    };
    // Attempt 1 fails through the stream API: a retry, with the backoff.
    let mut a = consumer("a").start().await.expect("start");
    let d = a.next().await.expect("item").expect("delivery");
    assert_eq!(d.attempt(), 1);
    assert_eq!(
        d.retry(Some(Duration::ZERO)).await.expect("retry"),
        streamkeeper::Settled::RetryScheduled
    );
    // Attempt 2 is handed out and cut off (its holder goes away without
    // settling), as is attempt 3 after the restart.
    let d = tokio::time::timeout(Duration::from_secs(5), a.next())
        .await
        .expect("retry came back")
        .expect("item")
        .expect("delivery");
    assert_eq!(d.attempt(), 2);
    drop(d);
    a.close().await.expect("close");
    let mut a = consumer("a").start().await.expect("restart");
    let d = a.next().await.expect("item").expect("delivery");
    assert_eq!(d.attempt(), 3, "the cut-off run counted");
    drop(d);
    a.close().await.expect("close");
    // Out of attempts: the next start dead-letters it instead of handing it out.
    let mut a = consumer("a").start().await.expect("restart");
    let next = tokio::time::timeout(Duration::from_millis(800), a.next()).await;
    assert!(next.is_err(), "handed out a fourth time: {next:?}");
    assert_eq!(a.dead_lettered_before_run(), 1);
    a.close().await.expect("close");
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].get_str("sk-origin-id"),
        Some(id.to_string().as_str())
    );
    assert_eq!(dead[0].get_str("sk-deliveries"), Some("3"));
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 1, 0));
    // Nothing is left behind in the attempt marks.
    let mut conn = redis.shared();
    let marks: u64 = redis::cmd("HLEN")
        .arg(streamkeeper::keys::StreamKeys::attempts(&s))
        .query_async(&mut conn)
        .await
        .expect("HLEN");
    assert_eq!(marks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_retry_mover_per_stream() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    streamkeeper::group::create_group(&redis, &s, &group("g"), StartFrom::Beginning)
        .await
        .expect("group");
    let mut consumers = Vec::new();
    for i in 0..3 {
        consumers.push(
            GroupConsumer::new(&redis, s.clone(), group("g"))
                .consumer_name(streamkeeper::ConsumerName::new(format!("c{i}")).expect("n"))
                .start()
                .await
                .expect("start"),
        );
    }
    let mut conn = redis.shared();
    let holder = |conn: &mut streamkeeper::SharedConn| {
        let mut conn = conn.clone();
        let lease = streamkeeper::keys::StreamKeys::retry_mover(&s);
        async move {
            redis::cmd("GET")
                .arg(lease)
                .query_async::<Option<String>>(&mut conn)
                .await
                .expect("GET")
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = holder(&mut conn)
        .await
        .expect("a consumer holds the mover lease");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        holder(&mut conn).await.as_deref(),
        Some(first.as_str()),
        "one mover, steadily"
    );
    // Its holder stops: another takes over.
    let i = consumers
        .iter()
        .position(|c| c.consumer().as_str() == first)
        .expect("holder is one of ours");
    consumers.remove(i).close().await.expect("close");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = holder(&mut conn).await.expect("taken over");
    assert_ne!(second, first);
    for c in consumers {
        c.close().await.expect("close");
    }
}
