//! Redis Cluster: blocking readers and producers through a manual
//! failover and a SIGKILLed primary (real 3-primary, 3-replica clusters).

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{group, key, write_load};
use streamkeeper::{
    fields, Connector, ConsumerName, ConsumerOptions, GroupConsumer, Outcome, Producer, StartFrom,
    StreamId, StreamKey,
};
use streamkeeper_testkit::RedisCluster;
use tokio_util::sync::CancellationToken;

async fn cluster() -> RedisCluster {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("streamkeeper=info")
        .try_init();
    tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("join")
        .expect("cluster")
}

/// A consumer whose handler records every ID it handles, and when.
struct Recorder {
    handled: Arc<Mutex<Vec<(StreamId, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

fn record(redis: &Connector, s: &StreamKey, stop: CancellationToken) -> Recorder {
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let consumer = GroupConsumer::new(redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .claim_after(Duration::from_secs(2))
        .block(Duration::from_millis(500));
    let task = tokio::spawn(async move {
        let r = consumer
            .run(
                move |d| {
                    let h = h.clone();
                    async move {
                        h.lock().expect("lock").push((d.id(), Instant::now()));
                        Ok::<_, streamkeeper::Error>(Outcome::Ack)
                    }
                },
                8,
                stop,
            )
            .await;
        if let Err(e) = r {
            eprintln!("consumer ended with {e}");
        }
    });
    Recorder { handled, task }
}

impl Recorder {
    fn ids(&self) -> HashSet<StreamId> {
        self.handled
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, _)| *id)
            .collect()
    }

    /// How long after `since` the first entry was handled.
    fn first_after(&self, since: Instant) -> Option<Duration> {
        self.handled
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, t)| *t >= since)
            .map(|(_, t)| *t - since)
            .min()
    }
}

async fn present(redis: &Connector, s: &StreamKey) -> HashSet<StreamId> {
    streamkeeper::reader::range(redis, s, StreamId::MIN, StreamId::MAX, 1_000_000)
        .await
        .expect("range")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_loses_no_acknowledged_write_and_stalls_no_consumer() {
    let cluster = cluster().await;
    let redis = Connector::connect(&cluster.url()).await.expect("connect");
    let s = key("orders");
    let stop = CancellationToken::new();
    let mut consumer = record(&redis, &s, stop.clone());
    let writer = tokio::spawn(write_load(redis.clone(), s.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let primary = cluster.primary_for_key("orders").expect("owner");
    let (cluster, done) = tokio::task::spawn_blocking(move || {
        let new = cluster.failover(primary).expect("failover");
        (cluster, (new, Instant::now()))
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (acked, _) = writer.await.expect("join");
    let stored = present(&redis, &s).await;
    let lost = acked.iter().filter(|id| !stored.contains(id)).count();
    (&mut consumer.task).await.expect("join");
    let resumed = consumer.first_after(done.1);
    eprintln!(
        "manual failover {primary} -> {}: {} acknowledged, {lost} lost; consumer handled {} of them, first entry {resumed:?} after the failover completed",
        done.0,
        acked.len(),
        consumer.ids().len()
    );
    assert!(acked.len() > 200, "too few writes went through");
    assert_eq!(lost, 0, "acknowledged writes lost to a manual failover");
    let resumed = resumed.expect("the consumer handled entries after the failover");
    assert!(
        resumed < Duration::from_secs(5),
        "the consumer stalled {resumed:?} after the failover"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_loses_nothing_with_wait_and_consumers_resume() {
    let cluster = cluster().await;
    let redis = Connector::connect(&cluster.url()).await.expect("connect");
    let (durable, fast) = (key("durable"), key("{durable}:fast"));
    let stop = CancellationToken::new();
    // The consumer reads the stream written without WAIT: its entries keep
    // coming while WAIT 1 waits for the restarted node to resync.
    let mut consumer = record(&redis, &fast, stop.clone());
    let waited = tokio::spawn(write_load(
        redis.clone(),
        durable.clone(),
        Some(streamkeeper::Wait {
            replicas: 1,
            timeout: Duration::from_millis(500),
        }),
        stop.clone(),
    ));
    let unwaited = tokio::spawn(write_load(redis.clone(), fast.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let primary = cluster.primary_for_key("durable").expect("owner");
    let killed_at = Instant::now();
    let (cluster, taken_over) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let new = cluster.kill_primary(primary).expect("kill");
        (cluster, (new, Instant::now()))
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let ((acked, _), (acked_fast, _)) =
        (waited.await.expect("join"), unwaited.await.expect("join"));
    (&mut consumer.task).await.expect("join");
    let stored = present(&redis, &durable).await;
    let lost = acked.iter().filter(|id| !stored.contains(id)).count();
    let stored_fast = present(&redis, &fast).await;
    let lost_fast = acked_fast
        .iter()
        .filter(|id| !stored_fast.contains(id))
        .count();
    let resumed = consumer.first_after(taken_over.1);
    eprintln!(
        "SIGKILLed primary {primary} -> {} after {:?}: WAIT 1: {} acknowledged, {lost} lost; no WAIT: {} acknowledged, {lost_fast} lost; consumer: first entry {resumed:?} after the takeover",
        taken_over.0,
        taken_over.1 - killed_at,
        acked.len(),
        acked_fast.len(),
    );
    assert!(acked.len() > 100, "too few writes went through");
    assert_eq!(lost, 0, "acknowledged writes lost despite WAIT 1");
    let resumed = resumed.expect("the consumer handled entries after the takeover");
    // `kill_primary` returns once the replica took over *and* the killed
    // node rejoined as its replica, so `resumed` is measured from a moment
    // after the takeover: it bounds the stall from above.
    assert!(
        resumed < Duration::from_secs(5),
        "consumers resumed {resumed:?} after the takeover"
    );
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_retry_dead_letters_and_exactly_once_work_on_a_cluster() {
    let cluster = cluster().await;
    let redis = Connector::connect(&cluster.url()).await.expect("connect");
    // Streams on different primaries; the exactly-once output shares the
    // input's hash tag (one slot, one script).
    let (jobs, out) = (key("{jobs}"), key("{jobs}:out"));
    let ids = Producer::new(&redis, jobs.clone())
        .send_batch(
            &(0..6)
                .map(|i| fields([("n", i.to_string())]))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("send");
    // A consumer takes everything and "crashes" (dropped without acks).
    let mut crashed = GroupConsumer::new(&redis, jobs.clone(), group("g"))
        .consumer_name(ConsumerName::new("crashed").expect("name"))
        .create_group(StartFrom::Beginning)
        .claim_after(Duration::from_millis(500))
        .start()
        .await
        .expect("start");
    let first = crashed.next().await.expect("item").expect("delivery");
    assert_eq!(first.id(), ids[0]);
    drop(first);
    drop(crashed);
    // A survivor reclaims them; entry n=1 fails once (retried), n=2 is
    // poison (dead-lettered), the rest produce their output exactly once.
    let mut survivor = GroupConsumer::new(&redis, jobs.clone(), group("g"))
        .consumer_name(ConsumerName::new("survivor").expect("name"))
        .claim_after(Duration::from_millis(500))
        .options(ConsumerOptions {
            claim_after: Some(Duration::from_millis(500)),
            max_deliveries: Some(2),
            retry_backoff: Duration::from_millis(50),
            ..ConsumerOptions::default()
        })
        .start()
        .await
        .expect("start");
    let mut done = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while done.len() < 6 && Instant::now() < deadline {
        let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(1), survivor.next()).await
        else {
            continue;
        };
        let n = d.entry().get_str("n").unwrap_or("?").to_string();
        match (n.as_str(), d.attempt()) {
            ("1", 1) => {
                d.retry(Some(Duration::from_millis(50)))
                    .await
                    .expect("retry");
            }
            ("2", _) => {
                d.dead_letter("poison").await.expect("dead letter");
                done.insert(n);
            }
            _ => {
                streamkeeper::exactly_once::ack_and_produce(
                    &d,
                    &out,
                    &fields([("from", n.as_str())]),
                )
                .await
                .expect("ack and produce");
                done.insert(n);
            }
        }
    }
    survivor.close().await.expect("close");
    assert_eq!(done.len(), 6, "handled: {done:?}");
    let outputs = streamkeeper::reader::range(&redis, &out, StreamId::MIN, StreamId::MAX, 100)
        .await
        .expect("range");
    assert_eq!(outputs.len(), 5, "one output per handled entry");
    let dead = streamkeeper::deadletter::list(&redis, &jobs, 10)
        .await
        .expect("dlq");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].get_str("sk-reason"), Some("poison"));
    let stat = streamkeeper::inspect::stream_stat(
        &redis,
        &jobs,
        &streamkeeper::inspect::InspectOptions::default(),
    )
    .await
    .expect("stat");
    assert_eq!(stat.groups[0].pending, 0);
    drop(cluster);
}
