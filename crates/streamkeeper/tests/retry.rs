//! Retries and dead letters against a real server: poison entries, retry
//! delays, parked retries seen by their group only, retries stored by an
//! older version, and the same policy on every way of consuming.
//! (Exactly-once effects: `exactly_once.rs`.)

mod common;
use common::{group, key, places, setup};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamkeeper::{
    deadletter, fields, retry, Connector, GroupConsumer, Outcome, Producer, Source, StartFrom,
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

    // Replay puts it back once, for group g only, under its own ID, with
    // a fresh count: parked for a retry due now (nothing is appended).
    let back = deadletter::replay(&redis, &s, d.id)
        .await
        .expect("replay")
        .expect("replayed");
    assert_eq!(back, id, "the original entry, not a copy");
    assert!(deadletter::replay(&redis, &s, d.id)
        .await
        .expect("replay again")
        .is_none());
    assert_eq!(places(&redis, &s, "g").await, (0, 1, 0, 0));
    let mut again = GroupConsumer::new(&redis, s.clone(), group("g"))
        .start()
        .await
        .expect("start");
    let d2 = tokio::time::timeout(Duration::from_secs(5), again.next())
        .await
        .expect("handed out again")
        .expect("item")
        .expect("delivery");
    assert_eq!((d2.id(), d2.attempt(), d2.source()), (id, 1, Source::Retry));
    assert_eq!(d2.entry().get_str("order"), Some("poison"));
    d2.ack();
    drop(d2);
    again.close().await.expect("close");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

on_every_topology!(retry_redelivers_after_the_delay_not_before);
async fn retry_redelivers_after_the_delay_not_before(redis: Connector) {
    let s = key("jobs");
    Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    /// When it was handled, its attempt, its ID and where it came from.
    type Seen = Arc<Mutex<Vec<(Instant, u64, streamkeeper::StreamId, Source)>>>;
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
                            seen.push((Instant::now(), d.attempt(), d.id(), d.source()));
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
    assert_eq!((seen[0].1, seen[1].1), (1, 2), "attempts");
    assert_eq!(seen[1].2, seen[0].2, "a retry keeps the entry's ID");
    assert_eq!((seen[0].3, seen[1].3), (Source::New, Source::Retry));
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_crash_while_a_retry_is_parked_loses_nothing() {
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
    // The process dies right after parking it: nobody takes it when due.
    drop(d);
    drop(first);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (p, r, dead, lag) = places(&redis, &s, "g").await;
    assert_eq!((p, dead, lag), (0, 0, 0));
    assert_eq!(r, 1, "the retry waits in the set");

    // Any consumer of the group takes it when it is due.
    let mut second = GroupConsumer::new(&redis, s.clone(), group("g"))
        .start()
        .await
        .expect("start");
    let again = tokio::time::timeout(Duration::from_secs(5), second.next())
        .await
        .expect("redelivered")
        .expect("item")
        .expect("delivery");
    assert_eq!(again.id(), id, "the same entry, not a copy");
    assert_eq!(again.source(), Source::Retry);
    assert_eq!(again.attempt(), 2);
    again.ack();
    second.close().await.expect("close");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn other_groups_never_see_a_retry_of_one_group() {
    let (_server, redis) = setup().await;
    let s = key("events");
    for g in ["a", "b"] {
        streamkeeper::group::create_group(&redis, &s, &group(g), StartFrom::End)
            .await
            .expect("group");
    }
    let id = Producer::new(&redis, s.clone())
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
    assert_eq!((d2.id(), d2.source()), (id, Source::Retry));
    d2.ack();
    a.close().await.expect("close a");
    let mut conn = redis.shared();
    let len: u64 = redis::cmd("XLEN")
        .arg(&s)
        .query_async(&mut conn)
        .await
        .expect("XLEN");
    assert_eq!(len, 1, "a retry appends nothing to the stream");

    // Group b sees the entry once, and nothing of a's retry.
    let mut b = GroupConsumer::new(&redis, s.clone(), group("b"))
        .start()
        .await
        .expect("b");
    let first = b.next().await.expect("item").expect("delivery");
    assert_eq!((first.id(), first.source()), (id, Source::New));
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
async fn a_retry_stored_by_an_older_version_is_delivered_once_after_an_upgrade() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    streamkeeper::group::create_group(&redis, &s, &group("g"), StartFrom::End)
        .await
        .expect("group");
    // What 0.18's retry_store.lua left in {S}:retry: a msgpack member
    // {group, origin id, attempts, fields, id}, due now.
    let mut conn = redis.shared();
    let _: () = redis::cmd("EVAL")
        .arg("redis.call('ZADD', KEYS[1], 0, cmsgpack.pack({'g', '5-0', 1, {'k', 'old'}, '5-0'}))")
        .arg(1)
        .arg(streamkeeper::keys::StreamKeys::retry(&s))
        .query_async(&mut conn)
        .await
        .expect("seed an old retry");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (redis, s, seen, stop) = (redis.clone(), s.clone(), seen.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            GroupConsumer::new(&redis, s, group("g"))
                .consumer_name(streamkeeper::ConsumerName::new(format!("c{i}")).expect("n"))
                .run(
                    move |d| {
                        let seen = seen.clone();
                        async move {
                            seen.lock()
                                .expect("lock")
                                .push((retry::origin_id(d.entry()), d.attempt()));
                            Ok::<_, String>(Outcome::Ack)
                        }
                    },
                    1,
                    stop,
                )
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();
    for t in tasks {
        t.await.expect("join").expect("run");
    }
    assert_eq!(
        *seen.lock().expect("lock"),
        vec![(streamkeeper::StreamId::new(5, 0), 2)],
        "handled once, its earlier attempt counted"
    );
    let left: u64 = redis::cmd("ZCARD")
        .arg(streamkeeper::keys::StreamKeys::retry(&s))
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(left, 0);
}

/// Reads what a plain client's group (redis-py, Go) gets: `XREADGROUP >`
/// until nothing is left, acking each; returns the IDs.
async fn plain_client_reads(redis: &Connector, s: &streamkeeper::StreamKey) -> Vec<String> {
    let mut conn = redis.shared();
    let mut ids = Vec::new();
    loop {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("analytics")
            .arg("py")
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(s)
            .arg(">")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let got: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|e| e.id))
            .collect();
        if got.is_empty() {
            return ids;
        }
        for id in &got {
            let _: u64 = redis::cmd("XACK")
                .arg(s)
                .arg("analytics")
                .arg(id)
                .query_async(&mut conn)
                .await
                .expect("XACK");
        }
        ids.extend(got);
    }
}

on_every_topology!(a_plain_group_sees_each_entry_once_through_retries_and_a_group_reset);
async fn a_plain_group_sees_each_entry_once_through_retries_and_a_group_reset(redis: Connector) {
    let s = key("orders");
    for g in ["billing", "analytics"] {
        streamkeeper::group::create_group(&redis, &s, &group(g), StartFrom::End)
            .await
            .expect("group");
    }
    let producer = Producer::new(&redis, s.clone());
    let mut sent = Vec::new();
    for n in 0..10 {
        let order = if n == 3 { "poison" } else { "ok" };
        sent.push(
            producer
                .send(&fields([("order", order)]))
                .await
                .expect("send")
                .to_string(),
        );
    }
    // billing fails the poison order 3 times (2 retries), then dead-letters it.
    let runs = Arc::new(Mutex::new(Vec::new()));
    let run_billing = |runs: Arc<Mutex<Vec<(streamkeeper::StreamId, u64)>>>| {
        let (redis, s) = (redis.clone(), s.clone());
        async move {
            let stop = CancellationToken::new();
            let stopper = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                stopper.cancel();
            });
            GroupConsumer::new(&redis, s, group("billing"))
                .max_deliveries(3)
                .retry_backoff(Duration::from_millis(20), Duration::from_millis(40))
                .run(
                    move |d| {
                        let runs = runs.clone();
                        async move {
                            runs.lock().expect("lock").push((d.id(), d.attempt()));
                            if d.entry().get_str("order") == Some("poison") {
                                Err("card declined")
                            } else {
                                Ok(Outcome::Ack)
                            }
                        }
                    },
                    2,
                    stop,
                )
                .await
                .expect("run billing")
        }
    };
    let stats = run_billing(runs.clone()).await;
    assert_eq!(stats.dead_lettered, 1);
    let poison: streamkeeper::StreamId = sent[3].parse().expect("id");
    let poison_runs: Vec<u64> = runs
        .lock()
        .expect("lock")
        .iter()
        .filter(|(id, _)| *id == poison)
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(poison_runs, vec![1, 2, 3], "one ID through every attempt");
    assert_eq!(
        plain_client_reads(&redis, &s).await,
        sent,
        "analytics saw each once"
    );

    // A replay of billing from the start: each entry once more for
    // billing, one more dead letter, nothing new for analytics.
    streamkeeper::group::reset_group(
        &redis,
        &s,
        &group("billing"),
        streamkeeper::StreamId::MIN,
        false,
    )
    .await
    .expect("reset");
    let again = Arc::new(Mutex::new(Vec::new()));
    run_billing(again.clone()).await;
    let handled: Vec<String> = again
        .lock()
        .expect("lock")
        .iter()
        .map(|(id, _)| id.to_string())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = handled.iter().collect();
    assert_eq!(distinct.len(), 10, "each entry of the stream");
    assert!(distinct.iter().all(|id| sent.contains(id)), "and no copies");
    assert_eq!(
        handled.len(),
        12,
        "10 entries, 2 retries of the poison order"
    );
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    assert_eq!(dead.len(), 2, "the poison order once per pass");
    assert!(dead
        .iter()
        .all(|d| d.get_str("sk-origin-id") == Some(sent[3].as_str())));
    assert!(
        plain_client_reads(&redis, &s).await.is_empty(),
        "analytics saw nothing new"
    );
}

on_every_topology!(a_parked_retry_is_not_reclaimed_before_it_is_due);
async fn a_parked_retry_is_not_reclaimed_before_it_is_due(redis: Connector) {
    let s = key("jobs");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    streamkeeper::group::create_group(&redis, &s, &group("g"), StartFrom::Beginning)
        .await
        .expect("group");
    let consumer = |name: &str| {
        GroupConsumer::new(&redis, s.clone(), group("g"))
            .consumer_name(streamkeeper::ConsumerName::new(name).expect("name"))
            .claim_after(Duration::from_millis(1000))
    };
    let mut a = consumer("a").start().await.expect("a");
    let d = a.next().await.expect("item").expect("delivery");
    let parked_at = Instant::now();
    d.retry(Some(Duration::from_secs(4))).await.expect("retry");
    drop(d);
    // b reclaims anything idle for 1 s: the parked entry is
    // idle for 4 s, and must still wait for its due time.
    let mut b = consumer("b").start().await.expect("b");
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            d = a.next() => d,
            d = b.next() => d,
        }
    })
    .await
    .expect("the retry came back")
    .expect("item")
    .expect("delivery");
    let waited = parked_at.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "ran after {waited:?}, before its due time"
    );
    assert_eq!(
        (back.id(), back.source(), back.attempt()),
        (id, Source::Retry, 2)
    );
    back.ack();
    drop(back);
    let twice = tokio::time::timeout(Duration::from_millis(1500), async {
        tokio::select! {
            d = a.next() => d,
            d = b.next() => d,
        }
    })
    .await;
    assert!(twice.is_err(), "handed out twice: {twice:?}");
    a.close().await.expect("close a");
    b.close().await.expect("close b");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_replayed_dead_letter_whose_original_was_trimmed_is_appended_for_its_group() {
    let (_server, redis) = setup().await;
    let s = key("orders");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("order", "poison")]))
        .await
        .expect("send");
    let mut c = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let d = c.next().await.expect("item").expect("delivery");
    d.dead_letter("bad").await.expect("dead letter");
    drop(d);
    c.close().await.expect("close");
    // The janitor (or anyone) trimmed the original away.
    let _: u64 = common::cmd(&redis, &["XDEL", s.as_str(), &id.to_string()]).await;
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    let back = deadletter::replay(&redis, &s, dead[0].id)
        .await
        .expect("replay")
        .expect("replayed");
    assert_ne!(back, id, "appended anew");
    let entries = streamkeeper::reader::range(&redis, &s, back, back, 1)
        .await
        .expect("range");
    assert_eq!(entries[0].get_str("order"), Some("poison"));
    assert_eq!(
        entries[0].get_str("sk-origin-id"),
        Some(id.to_string().as_str())
    );
    assert_eq!(entries[0].get_str("sk-retry-group"), Some("g"));
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 1));
}

#[tokio::test]
async fn a_group_reset_while_an_entry_is_parked_runs_it_once_not_twice() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let consumer = |name: &str| {
        GroupConsumer::new(&redis, s.clone(), group("g"))
            .consumer_name(streamkeeper::ConsumerName::new(name).expect("name"))
            .create_group(StartFrom::Beginning)
    };
    let mut a = consumer("a").start().await.expect("a");
    let d = a.next().await.expect("item").expect("delivery");
    d.retry(Some(Duration::from_secs(2))).await.expect("retry");
    drop(d);
    a.close().await.expect("close a");
    // The operator replays the group from the start while it is parked.
    streamkeeper::group::reset_group(&redis, &s, &group("g"), streamkeeper::StreamId::MIN, false)
        .await
        .expect("reset");
    let mut b = consumer("b").start().await.expect("b");
    let again = tokio::time::timeout(Duration::from_secs(5), b.next())
        .await
        .expect("replayed")
        .expect("item")
        .expect("delivery");
    assert_eq!(again.id(), id);
    // Its retry falls due while this run goes on: it is being run, and is
    // not handed out a second time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    again.ack();
    drop(again);
    let twice = tokio::time::timeout(Duration::from_secs(3), b.next()).await;
    assert!(twice.is_err(), "run a second time: {twice:?}");
    b.close().await.expect("close b");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}

#[tokio::test]
async fn a_retry_keeps_its_last_error_for_the_next_run_retry_ls_and_the_dead_letter() {
    let (_server, redis) = setup().await;
    let s = key("payments");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("n", "1")]))
        .await
        .expect("send");
    let consumer = |max: u64| {
        GroupConsumer::new(&redis, s.clone(), group("g"))
            .create_group(StartFrom::Beginning)
            .max_deliveries(max)
            .retry_backoff(Duration::from_millis(300), Duration::from_millis(300))
    };
    let mut c = consumer(5).start().await.expect("start");
    let d = c.next().await.expect("item").expect("delivery");
    assert_eq!(d.last_error(), None);
    d.fail("card declined").await.expect("fail");
    drop(d);
    let parked = retry::parked(&redis, &s, &group("g"), 10)
        .await
        .expect("parked");
    assert_eq!(parked.len(), 1);
    assert_eq!((parked[0].id, parked[0].attempts), (id, 1));
    assert_eq!(parked[0].last_error.as_deref(), Some("card declined"));
    let d = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("due")
        .expect("item")
        .expect("delivery");
    assert_eq!(
        d.last_error(),
        Some("card declined"),
        "the next run knows why"
    );
    d.fail("card expired").await.expect("fail again");
    drop(d);
    c.close().await.expect("close");
    // A consumer allowing 2 attempts dead-letters it before a third run,
    // saying why the last one failed.
    let mut strict = consumer(2).start().await.expect("start");
    let next = tokio::time::timeout(Duration::from_secs(2), strict.next()).await;
    assert!(next.is_err(), "handed out a third time: {next:?}");
    strict.close().await.expect("close");
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    assert_eq!(dead.len(), 1);
    let reason = dead[0].get_str("sk-reason").unwrap_or("");
    assert!(reason.contains("last error: card expired"), "{reason}");
    assert!(retry::parked(&redis, &s, &group("g"), 10)
        .await
        .expect("parked")
        .is_empty());
}

#[tokio::test]
async fn a_dead_letter_of_a_destroyed_group_is_not_replayed() {
    let (_server, redis) = setup().await;
    let s = key("orders");
    Producer::new(&redis, s.clone())
        .send(&fields([("order", "poison")]))
        .await
        .expect("send");
    let mut c = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let d = c.next().await.expect("item").expect("delivery");
    d.dead_letter("bad").await.expect("dead letter");
    drop(d);
    c.close().await.expect("close");
    streamkeeper::group::destroy_group(&redis, &s, &group("g"))
        .await
        .expect("destroy");
    let dead = deadletter::list(&redis, &s, 10).await.expect("list");
    let r = deadletter::replay(&redis, &s, dead[0].id).await;
    assert!(
        matches!(r, Err(streamkeeper::Error::GroupMissing { .. })),
        "{r:?}"
    );
    assert_eq!(
        deadletter::list(&redis, &s, 10).await.expect("list").len(),
        1,
        "kept"
    );
}

#[tokio::test]
async fn a_due_retry_of_an_entry_this_consumer_runs_is_not_handed_out_after_its_ack() {
    let (_server, redis) = setup().await;
    let s = key("jobs");
    let id = Producer::new(&redis, s.clone())
        .send(&fields([("k", "v")]))
        .await
        .expect("send");
    let mut a = GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .start()
        .await
        .expect("start");
    let d = a.next().await.expect("item").expect("delivery");
    // While this run goes on, the entry also shows up parked and due (as
    // after a peer parked it and a reset handed it here): the taker
    // claims it back to this consumer, which already runs it.
    let sk = streamkeeper::meta::RETRY_CONSUMER;
    let _: Vec<String> = common::cmd(
        &redis,
        &[
            "XCLAIM",
            s.as_str(),
            "g",
            sk,
            "0",
            &id.to_string(),
            "JUSTID",
        ],
    )
    .await;
    let set = streamkeeper::keys::StreamKeys::retries(&s, &group("g"));
    let _: u64 = common::cmd(&redis, &["ZADD", &set, "0", &id.to_string()]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    d.ack();
    drop(d);
    let again = tokio::time::timeout(Duration::from_secs(2), a.next()).await;
    assert!(again.is_err(), "run again after its ack: {again:?}");
    a.close().await.expect("close");
    assert_eq!(places(&redis, &s, "g").await, (0, 0, 0, 0));
}
