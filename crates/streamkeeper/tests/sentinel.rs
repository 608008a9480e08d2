//! Failover through Sentinel: a consumer blocked in XREADGROUP follows the
//! new master and keeps going; producers follow it too.

mod common;
use common::write_load;
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

    // A plain follower (tail -f) is blocked too, on its own connection.
    let mut follower = streamkeeper::Reader::new(&redis, s.clone(), StartFrom::End)
        .await
        .expect("reader")
        .follow(Duration::from_secs(5));
    let follow = tokio::spawn(async move {
        loop {
            let page = follower
                .next_page()
                .await
                .expect("follow through the failover");
            if let Some(e) = page.into_iter().find(|e| e.get_str("n") == Some("after")) {
                return e;
            }
        }
    });

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
    tokio::time::timeout(Duration::from_secs(10), follow)
        .await
        .expect("the follower saw the entry written after the switch")
        .expect("join");

    let mut conn = redis.shared();
    let pending: (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(&s)
        .arg("g")
        .query_async(&mut conn)
        .await
        .expect("XPENDING");
    assert_eq!(pending.0, 0);
}

/// Acknowledged IDs missing from the stream on the current master.
async fn lost(redis: &Connector, s: &StreamKey, acked: &[streamkeeper::StreamId]) -> usize {
    lost_ids(redis, s, acked).await.len()
}

/// The acknowledged IDs that are not in the stream any more.
async fn lost_ids(
    redis: &Connector,
    s: &StreamKey,
    acked: &[streamkeeper::StreamId],
) -> Vec<streamkeeper::StreamId> {
    let present: std::collections::HashSet<_> = streamkeeper::reader::range(
        redis,
        s,
        streamkeeper::StreamId::MIN,
        streamkeeper::StreamId::MAX,
        1_000_000,
    )
    .await
    .expect("range")
    .into_iter()
    .map(|e| e.id)
    .collect();
    let gone: Vec<_> = acked
        .iter()
        .filter(|id| !present.contains(id))
        .copied()
        .collect();
    if let (Some(first), Some(last)) = (gone.first(), gone.last()) {
        eprintln!("lost IDs from {first} to {last} (milliseconds since the epoch)");
    }
    gone
}

/// The lost IDs as runs of writes (a gap of more than `gap_ms` starts a
/// new run): each run's span in ms and its size.
fn loss_windows(lost: &[streamkeeper::StreamId], gap_ms: u64) -> Vec<(u64, usize)> {
    let mut ids: Vec<_> = lost.to_vec();
    ids.sort();
    let mut out: Vec<(u64, u64, usize)> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some((_, end, n)) if id.ms <= *end + gap_ms => {
                *end = id.ms;
                *n += 1;
            }
            _ => out.push((id.ms, id.ms, 1)),
        }
    }
    out.into_iter().map(|(a, b, n)| (b - a, n)).collect()
}

async fn topology(replicas: usize) -> SentinelTopology {
    // The connector's warnings (switches, holds) go with a failure's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("streamkeeper=info")
        .try_init();
    tokio::task::spawn_blocking(move || SentinelTopology::start_with_replicas(replicas))
        .await
        .expect("join")
        .expect("sentinel topology")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_wait_no_acknowledged_write_is_lost_to_failovers_or_a_killed_master() {
    // One replica, so WAIT 1 means every replica. (With two replicas and
    // WAIT 1, Sentinel may promote the one that had not confirmed yet: a
    // run measured 370 of 11,280 acknowledged writes lost. Durability
    // needs WAIT = the number of replicas that could be promoted.) After
    // the SIGKILL the promoted replica has no replica of its own until the
    // killed server is back, so writes stall, unreported, meanwhile.
    let topo = topology(1).await;
    let redis = Connector::connect(&topo.url()).await.expect("connect");
    let s = StreamKey::new("durable").expect("key");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_load(
        redis.clone(),
        s.clone(),
        Some(streamkeeper::Wait {
            replicas: 1,
            timeout: Duration::from_millis(500),
        }),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let topo = tokio::task::spawn_blocking(move || {
        let mut topo = topo;
        topo.failover().expect("failover 1");
        std::thread::sleep(Duration::from_millis(700));
        topo.failover().expect("failover 2");
        std::thread::sleep(Duration::from_millis(700));
        topo.kill_master().expect("kill the master");
        topo
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (acked, slowest) = writer.await.expect("join");
    let lost = lost(&redis, &s, &acked).await;
    eprintln!(
        "WAIT 1: {} acknowledged, {lost} lost across 2 failovers and a SIGKILLed master; slowest send {slowest:?}; now on {}",
        acked.len(),
        redis.server_addr()
    );
    assert!(acked.len() > 200, "too few writes went through");
    assert_eq!(lost, 0, "acknowledged writes lost despite WAIT 1");
    drop(topo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_losses_stay_within_the_switch_window() {
    let topo = topology(1).await;
    let redis = Connector::connect(&topo.url()).await.expect("connect");
    let s = StreamKey::new("fast").expect("key");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_load(redis.clone(), s.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let topo = tokio::task::spawn_blocking(move || {
        topo.failover().expect("failover 1");
        std::thread::sleep(Duration::from_millis(700));
        topo.failover().expect("failover 2");
        topo
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let (acked, slowest) = writer.await.expect("join");
    let gone = lost_ids(&redis, &s, &acked).await;
    let windows = loss_windows(&gone, 1_000);
    eprintln!(
        "no WAIT: {} acknowledged, {} lost across 2 failovers in windows (span ms, writes) {windows:?}; slowest send {slowest:?}",
        acked.len(),
        gone.len()
    );
    // The contract (docs/design.md §6): without WAIT, what is lost is
    // bounded by the promotion → +switch-master window, about 1 s per
    // failover. So: at most one run of lost writes per failover, each
    // within that window (1.5 s with scheduling slack on a loaded
    // machine). Writes are held from the leader's
    // `+failover-state-send-slaveof-noone` on, so usually only a batch or
    // two is lost (measured: 0 of 670 on a quiet machine, 180 in 850 ms
    // under a full CI run).
    assert!(
        windows.len() <= 2,
        "losses outside the two failovers: {windows:?}"
    );
    for (span_ms, n) in &windows {
        assert!(
            *span_ms <= 1_500,
            "a loss window of {span_ms} ms ({n} writes): {windows:?}"
        );
    }
    drop(topo);
}

/// Availability first (docs/design.md §6): without `--wait` and without the
/// opt-in replica hold, writes pause only from the failover's start to
/// the switch, and resume within about 2 s of `+switch-master` although
/// the new master has no replica yet (with one replica, Sentinel turns the
/// old master into one ~10 s later). The bound is generous for a loaded
/// 2-core machine; before, the longest write waited 12–20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_replica_hold_writes_resume_soon_after_a_failover() {
    let topo = topology(1).await;
    let redis = Connector::connect(&topo.url()).await.expect("connect");
    let s = StreamKey::new("available").expect("key");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_load(redis.clone(), s.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = redis.server_addr();
    let topo = tokio::task::spawn_blocking(move || {
        topo.failover_unsettled().expect("failover");
        topo
    })
    .await
    .expect("join");
    let promoted = Instant::now();
    // Long enough for a replica hold to show (the old master needs ~10 s
    // to replicate the new one), short of its sync.
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    let (acked, slowest) = writer.await.expect("join");
    let lost = lost(&redis, &s, &acked).await;
    eprintln!(
        "no WAIT, no hold: {} acknowledged, {lost} lost through SENTINEL FAILOVER with one replica; longest write gap {slowest:?}; writes stopped {:?} after the promotion",
        acked.len(),
        promoted.elapsed()
    );
    assert_ne!(redis.server_addr(), first, "did not follow the failover");
    assert!(
        slowest < Duration::from_secs(6),
        "writes waited {slowest:?} after the failover"
    );
    assert!(lost <= 50, "{lost} acknowledged writes lost");
    drop(topo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replica_hold_a_second_failover_before_the_first_settled_loses_nothing_more() {
    // Right after a failover the new master has no replica: Sentinel turns
    // the old master into one only seconds later. A second failover in
    // that time promotes a server that never saw the new master's writes;
    // a client that kept writing there would see every one of them erased
    // (measured before the write hold: 1,220 of 3,000). With the opt-in
    // replica hold (`produce --hold-writes`) the connector holds writes
    // after a switch until a replica of the new master is in sync, so the
    // loss stays within the switch windows.
    let topo = topology(1).await;
    let redis = Connector::connect_with(
        &topo.url(),
        streamkeeper::ConnectorOptions {
            replica_hold: Some(Duration::from_secs(30)),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let s = StreamKey::new("twice").expect("key");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_load(redis.clone(), s.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let topo = tokio::task::spawn_blocking(move || {
        topo.failover_unsettled().expect("failover 1");
        std::thread::sleep(Duration::from_secs(4));
        topo.failover_unsettled().expect("failover 2");
        topo
    })
    .await
    .expect("join");
    // Until the last master has a replica in sync and writes flow again.
    let topo = tokio::task::spawn_blocking(move || {
        topo.wait_settled(Duration::from_secs(40)).expect("settled");
        topo
    })
    .await
    .expect("join");
    let settled = redis.server_addr();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (acked, slowest) = writer.await.expect("join");
    let lost = lost(&redis, &s, &acked).await;
    eprintln!(
        "no WAIT, failovers 4 s apart: {} acknowledged, {lost} lost; slowest send {slowest:?}; now on {settled}",
        acked.len()
    );
    assert!(acked.len() > 200, "too few writes went through");
    // At most the two promotion → +switch-master windows (~1.5 s each at
    // 200/s), not the seconds between the failovers.
    assert!(lost <= 600, "{lost} acknowledged writes lost");
    drop(topo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_hangs_nobody_and_loses_at_most_a_handful() {
    let topo = topology(1).await;
    // Deadlines alone: the default (no replica hold).
    let redis = Connector::connect(&topo.url()).await.expect("connect");
    let first = redis.server_addr();
    let s = StreamKey::new("frozen").expect("key");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(write_load(redis.clone(), s.clone(), None, stop.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Past down-after (2 s): the sentinels promote the replica while the
    // master sleeps; SIGCONT brings back a second master for a moment.
    let topo = tokio::task::spawn_blocking(move || {
        topo.freeze_master(Duration::from_secs(6)).expect("freeze");
        topo
    })
    .await
    .expect("join");
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let (acked, slowest) = writer.await.expect("join");
    let lost = lost(&redis, &s, &acked).await;
    eprintln!(
        "frozen master: {} acknowledged, {lost} lost, slowest send {slowest:?}, {first} -> {}",
        acked.len(),
        redis.server_addr()
    );
    assert_ne!(redis.server_addr(), first, "still on the deposed master");
    assert!(
        slowest < Duration::from_secs(6),
        "a send hung for {slowest:?} (the freeze lasted 6 s)"
    );
    assert!(lost <= 5, "{lost} acknowledged writes lost");
    drop(topo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_with_their_own_password_are_followed() {
    let topo =
        tokio::task::spawn_blocking(|| SentinelTopology::start_with_sentinel_password("s3nt"))
            .await
            .expect("join")
            .expect("sentinel topology with a password");
    // Without the sentinels' password: a clear error naming the cause.
    let refused = Connector::connect(&topo.url()).await;
    let err = refused.expect_err("connected without the sentinel password");
    assert!(err.to_string().contains("sk-master"), "{err}");
    // With it in the URL's query: connects, writes, follows a failover.
    let url = format!("{}?sentinel_password=s3nt", topo.url());
    let redis = Connector::connect(&url).await.expect("connect");
    let s = StreamKey::new("guarded").expect("key");
    let producer = Producer::new(&redis, s.clone());
    producer.send(&fields([("n", "1")])).await.expect("send");
    let first = redis.server_addr();
    let topo = tokio::task::spawn_blocking(move || {
        topo.failover().expect("failover");
        topo
    })
    .await
    .expect("join");
    // The +switch-master subscription (authenticated) moved us already.
    assert!(
        common::eventually(Duration::from_secs(5), || {
            let moved = redis.server_addr() != first;
            async move { moved }
        })
        .await,
        "did not follow the failover"
    );
    producer
        .send(&fields([("n", "2")]))
        .await
        .expect("send after");
    drop(topo);
}
