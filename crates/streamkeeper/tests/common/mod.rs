//! Helpers shared by the library's integration tests: a private server
//! with a connector, typed names, and the testkit's async `eventually`.

#![allow(dead_code)] // each test file uses a different subset

use std::time::{Duration, Instant};

use streamkeeper::{fields, Connector, GroupName, Producer, StreamKey};
use streamkeeper_testkit::RedisServer;

/// A private redis-server on a unix socket and a connector to it.
pub async fn setup() -> (RedisServer, Connector) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    (server, redis)
}

/// A stream key (panics on a bad name: tests only).
pub fn key(s: &str) -> StreamKey {
    StreamKey::new(s).expect("key")
}

/// A group name (panics on a bad name: tests only).
pub fn group(s: &str) -> GroupName {
    GroupName::new(s).expect("group")
}

/// The testkit's polling helper (async): use it instead of sleeping.
#[allow(unused_imports)] // not every test file waits
pub use streamkeeper_testkit::eventually;

/// Where a matrix test runs (see [`on_every_topology!`]).
#[derive(Debug, Clone, Copy)]
pub enum Topo {
    /// One redis-server on a unix socket.
    Single,
    /// A master, a replica and three sentinels (`redis+sentinel://`).
    Sentinel,
    /// Three primaries with a replica each (`redis+cluster://`).
    Cluster,
}

/// Keeps a topology's processes alive for the test.
#[derive(Debug)]
pub enum Guard {
    Single(RedisServer),
    Sentinel(streamkeeper_testkit::SentinelTopology),
    Cluster(streamkeeper_testkit::RedisCluster),
}

/// Starts `topo` and connects to it through its URL.
pub async fn setup_on(topo: Topo) -> (Guard, Connector) {
    let guard = tokio::task::spawn_blocking(move || match topo {
        Topo::Single => Guard::Single(RedisServer::start().expect("redis-server")),
        Topo::Sentinel => Guard::Sentinel(
            streamkeeper_testkit::SentinelTopology::start().expect("sentinel topology"),
        ),
        Topo::Cluster => {
            Guard::Cluster(streamkeeper_testkit::RedisCluster::start().expect("cluster"))
        }
    })
    .await
    .expect("join");
    let url = match &guard {
        Guard::Single(s) => s.url(),
        Guard::Sentinel(t) => t.url(),
        Guard::Cluster(c) => c.url(),
    };
    let redis = Connector::connect(&url).await.expect("connect");
    (guard, redis)
}

/// Runs `async fn $name(redis: Connector)` as three tests, `$name::single`,
/// `$name::sentinel` and `$name::cluster`: the guarantees that must hold
/// whatever the URL. Kept to the tests where the topology matters (slots,
/// scripts over several keys, dedicated blocking connections, a master
/// found through sentinels), so the suite does not triple.
#[macro_export]
macro_rules! on_every_topology {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn single() {
                let (_guard, redis) = super::common::setup_on(super::common::Topo::Single).await;
                super::$name(redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel() {
                let (_guard, redis) = super::common::setup_on(super::common::Topo::Sentinel).await;
                super::$name(redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let (_guard, redis) = super::common::setup_on(super::common::Topo::Cluster).await;
                super::$name(redis).await
            }
        }
    };
}

/// Appends 10 entries every 50 ms (200/s) until `stop`; returns the IDs
/// the producer reported (acknowledged writes) and the slowest send.
pub async fn write_load(
    redis: Connector,
    s: StreamKey,
    wait: Option<streamkeeper::Wait>,
    stop: tokio_util::sync::CancellationToken,
) -> (Vec<streamkeeper::StreamId>, Duration) {
    let mut producer = Producer::new(&redis, s);
    if let Some(w) = wait {
        producer = producer.with_wait(w);
    }
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    // A steady 200/s: after a stall (a held write) no burst of the missed
    // ticks, so "entries lost" measures the length of a loss window.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.is_cancelled() {
        tick.tick().await;
        let batch: Vec<_> = (0..10)
            .map(|i| fields([("n", (n + i).to_string())]))
            .collect();
        n += 10;
        let t = Instant::now();
        match producer.send_batch(&batch).await {
            Ok(ids) => acked.extend(ids),
            Err(e) => eprintln!("send failed (not acknowledged): {e}"),
        }
        slowest = slowest.max(t.elapsed());
    }
    (acked, slowest)
}

/// Where entries are, read atomically (MULTI): pending in the group and
/// running (or waiting to run), parked for a retry, dead, or appended and
/// not yet delivered (group lag). A parked entry is pending under the
/// group's `sk-retry` consumer *and* in the group's retry set; it counts
/// once, as a retry. A retry-set member that is not parked counts twice
/// (as a retry and wherever it really is), so an invariant "in exactly one
/// place" catches it.
pub async fn places(redis: &Connector, s: &StreamKey, g: &str) -> (u64, u64, u64, u64) {
    let mut conn = redis.shared();
    let gn = streamkeeper::GroupName::new(g).expect("group");
    /// XPENDING's summary: count, smallest, largest, per consumer.
    type Summary = (u64, redis::Value, redis::Value, redis::Value);
    /// XPENDING's extended form: ID, consumer, idle ms, deliveries.
    type Pending = Vec<(String, String, u64, u64)>;
    let (pending, held_parked, in_set, dead, groups): (
        Summary,
        Pending,
        Vec<String>,
        u64,
        redis::Value,
    ) = redis::pipe()
        .atomic()
        .cmd("XPENDING")
        .arg(s)
        .arg(g)
        .cmd("XPENDING")
        .arg(s)
        .arg(g)
        .arg("-")
        .arg("+")
        .arg(100_000)
        .arg(streamkeeper::meta::RETRY_CONSUMER)
        .cmd("ZRANGE")
        .arg(streamkeeper::keys::StreamKeys::retries(s, &gn))
        .arg(0)
        .arg(-1)
        .cmd("XLEN")
        .arg(streamkeeper::keys::StreamKeys::dlq(s))
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(s)
        .query_async(&mut conn)
        .await
        .expect("snapshot");
    let parked = held_parked.iter().filter(|p| in_set.contains(&p.0)).count() as u64;
    let retries = in_set.len() as u64;
    let lag = match groups {
        redis::Value::Array(gs) => gs
            .into_iter()
            .find_map(|gv| {
                let redis::Value::Array(kv) = gv else {
                    return None;
                };
                let mut it = kv.into_iter();
                let mut name = None;
                let mut lag = None;
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    match (k, v) {
                        (redis::Value::BulkString(k), redis::Value::BulkString(v))
                            if k == b"name" =>
                        {
                            name = Some(String::from_utf8_lossy(&v).into_owned())
                        }
                        (redis::Value::BulkString(k), redis::Value::Int(v)) if k == b"lag" => {
                            lag = Some(v as u64)
                        }
                        _ => {}
                    }
                }
                (name.as_deref() == Some(g)).then_some(lag.unwrap_or(0))
            })
            .unwrap_or(0),
        _ => 0,
    };
    (pending.0 - parked, retries, dead, lag)
}

/// Runs one Redis command on the shared connection (panics on an error).
pub async fn cmd<T: redis::FromRedisValue>(redis: &Connector, args: &[&str]) -> T {
    let mut conn = redis.shared();
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(&mut conn).await.expect("command")
}
