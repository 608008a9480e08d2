//! Resharding online (docs/design.md §6 "Resharding"): a sharded stream
//! resized up and down while keyed producers and consumers run. Counted:
//! acknowledged writes never handled (0), handler runs per entry (1), and
//! per-key order in ordered mode (0 violations).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{group, key};
use streamkeeper::shard::{self, OrderedOptions, ShardLayout, ShardedConsumer, ShardedProducer};
use streamkeeper::{
    fields, Connector, ConsumerName, ConsumerOptions, Outcome, StartFrom, StreamKey,
};
use tokio_util::sync::CancellationToken;

/// Runs `async fn $name(redis: Connector)` on a single server and on a
/// 3-primary cluster (where every shard of every generation has a slot
/// of its own).
macro_rules! on_single_and_cluster {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn single() {
                let (_guard, redis) = super::common::setup_on(super::common::Topo::Single).await;
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

/// What the handlers saw: `(key, seq)` in handling order, per key.
#[derive(Default)]
struct Seen {
    runs: HashMap<(String, u64), u64>,
    order: HashMap<String, Vec<u64>>,
}

/// What the producer had acknowledged, and its longest send.
struct Produced {
    acked: Vec<(String, u64)>,
    slowest: Duration,
}

const KEYS: u64 = 16;

/// Sends one entry per key (`seq` n) every 20 ms until `stop`, in one
/// batch, recording what was acknowledged.
async fn keyed_load(producer: Arc<ShardedProducer>, stop: CancellationToken) -> Produced {
    let mut acked = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut seq = 0u64;
    while !stop.is_cancelled() {
        let batch: Vec<(Option<String>, Vec<_>)> = (0..KEYS)
            .map(|k| {
                let key = format!("key-{k}");
                let f = fields([("k", key.as_str()), ("seq", seq.to_string().as_str())]);
                (Some(key), f)
            })
            .collect();
        let started = Instant::now();
        producer.send_batch(&batch).await.expect("send_batch");
        slowest = slowest.max(started.elapsed());
        acked.extend((0..KEYS).map(|k| (format!("key-{k}"), seq)));
        seq += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Produced { acked, slowest }
}

fn record(seen: &Mutex<Seen>, d: &streamkeeper::Delivery) {
    let k = d.entry().get_str("k").unwrap_or_default().to_string();
    let seq: u64 = d
        .entry()
        .get_str("seq")
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX);
    let mut s = seen.lock().expect("lock");
    *s.runs.entry((k.clone(), seq)).or_default() += 1;
    s.order.entry(k).or_default().push(seq);
}

fn fast() -> OrderedOptions {
    OrderedOptions {
        heartbeat: Duration::from_millis(100),
        member_ttl: Duration::from_millis(800),
        lease_ttl: Duration::from_millis(800),
    }
}

/// Two members of group `g` (ordered mode or shared), a keyed producer,
/// and a resize up then down while they run; returns what was acked and
/// what was handled.
async fn resize_under_load(
    redis: &Connector,
    ordered: bool,
    wait: Option<streamkeeper::Wait>,
) -> (Produced, Seen, Vec<String>) {
    let s = key(if ordered { "orders" } else { "events" });
    let layout = ShardLayout::create(redis, &s, 3).await.expect("create");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_consumers = CancellationToken::new();
    let mut members = Vec::new();
    for m in ["m1", "m2"] {
        let mut c = ShardedConsumer::new(redis, s.clone(), group("g"))
            .consumer_name(ConsumerName::new(m).expect("name"))
            .options(ConsumerOptions {
                create: Some(StartFrom::Beginning),
                ..ConsumerOptions::default()
            });
        if ordered {
            c = c.ordered(fast());
        }
        let seen = seen.clone();
        let stop = stop_consumers.clone();
        members.push(tokio::spawn(async move {
            c.run(
                move |d| {
                    let seen = seen.clone();
                    async move {
                        // Slower than the producer: the old shards still
                        // hold a backlog when the resize seals them, so a
                        // new shard handed out early would run a key's
                        // later entries first.
                        tokio::time::sleep(Duration::from_millis(4)).await;
                        record(&seen, &d);
                        Ok::<_, std::io::Error>(Outcome::Ack)
                    }
                },
                stop,
            )
            .await
        }));
    }
    let mut producer = ShardedProducer::new(redis, layout);
    if let Some(w) = wait {
        producer = producer.with_wait(w);
    }
    let producer = Arc::new(producer);
    let stop_producing = CancellationToken::new();
    let load = tokio::spawn(keyed_load(producer.clone(), stop_producing.clone()));
    let mut lines = Vec::new();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let up = shard::resize(redis, &s, 5, &mut |l| lines.push(l.to_string()))
        .await
        .expect("resize up");
    assert_eq!((up.from.count, up.to.count, up.to.generation), (3, 5, 1));
    assert_eq!(up.sealed.len(), 3, "{lines:?}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let down = shard::resize(redis, &s, 2, &mut |l| lines.push(l.to_string()))
        .await
        .expect("resize down");
    assert_eq!((down.to.count, down.to.generation), (2, 2));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    stop_producing.cancel();
    let produced = load.await.expect("producer");
    assert!(
        produced.acked.len() as u64 > KEYS * 20,
        "the producer kept going: {} acked",
        produced.acked.len()
    );
    let want = produced.acked.len();
    common::eventually(Duration::from_secs(30), || {
        let n = seen.lock().expect("lock").runs.len();
        async move { n >= want }
    })
    .await;
    // A moment more: a late second run of an entry would show up here.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_consumers.cancel();
    for m in members {
        m.await.expect("join").expect("member");
    }
    let seen = Arc::try_unwrap(seen)
        .ok()
        .expect("handlers done")
        .into_inner()
        .expect("lock");
    (produced, seen, lines)
}

fn assert_once_each(produced: &Produced, seen: &Seen) {
    let lost: Vec<_> = produced
        .acked
        .iter()
        .filter(|e| !seen.runs.contains_key(*e))
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged, never handled: {lost:?}");
    let twice: Vec<_> = seen.runs.iter().filter(|(_, n)| **n != 1).take(5).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
}

/// Per key, in the order handled, seq only grows.
fn assert_each_key_in_order(seen: &Seen) {
    for (k, seqs) in &seen.order {
        let broken = seqs.windows(2).find(|w| w[1] <= w[0]);
        assert!(broken.is_none(), "{k} out of order at {broken:?}: {seqs:?}");
    }
}

on_single_and_cluster!(ordered_consumers_keep_each_key_in_order_through_a_resize_up_and_down);
async fn ordered_consumers_keep_each_key_in_order_through_a_resize_up_and_down(redis: Connector) {
    let (produced, seen, lines) = resize_under_load(&redis, true, None).await;
    assert_once_each(&produced, &seen);
    assert_each_key_in_order(&seen);
    eprintln!(
        "ordered: {} entries, slowest send {:?}; {lines:?}",
        produced.acked.len(),
        produced.slowest
    );
}

on_single_and_cluster!(shared_consumers_lose_nothing_and_run_nothing_twice_through_a_resize);
async fn shared_consumers_lose_nothing_and_run_nothing_twice_through_a_resize(redis: Connector) {
    let (produced, seen, _) = resize_under_load(&redis, false, None).await;
    assert_once_each(&produced, &seen);
    eprintln!(
        "shared: {} entries, slowest send {:?}",
        produced.acked.len(),
        produced.slowest
    );
}

/// The same with every batch confirmed by a replica (`WAIT 1`), on the
/// cluster (each primary has one): a chunk a seal cut short is confirmed
/// for the part written, the rest re-sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_consumers_and_waiting_producers_through_a_resize_on_a_cluster() {
    let (_guard, redis) = common::setup_on(common::Topo::Cluster).await;
    let wait = streamkeeper::Wait {
        replicas: 1,
        timeout: Duration::from_secs(2),
    };
    let (produced, seen, _) = resize_under_load(&redis, true, Some(wait)).await;
    assert_once_each(&produced, &seen);
    assert_each_key_in_order(&seen);
    eprintln!(
        "with WAIT 1: {} entries, slowest send {:?}",
        produced.acked.len(),
        produced.slowest
    );
}

/// A resize cut short after sealing one old shard (the progress callback
/// panics, as a killed process stops) leaves the others open to stale
/// producers; running it again seals them, changes nothing else, and a
/// producer routing by the old layout follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_resize_is_completed_by_running_it_again() {
    use futures::FutureExt;
    let (_server, redis) = common::setup().await;
    let s = key("jobs");
    let old = ShardLayout::create(&redis, &s, 2).await.expect("create");
    streamkeeper::group::create_group(&redis, &old.shard(0), &group("g"), StartFrom::Beginning)
        .await
        .expect("group");
    let stale = ShardedProducer::new(&redis, old.clone());
    stale
        .send(Some(b"a"), &fields([("n", "1")]))
        .await
        .expect("send");
    let cut_short = std::panic::AssertUnwindSafe(shard::resize(&redis, &s, 4, &mut |l| {
        if l.starts_with("sealed") {
            panic!("killed after {l}");
        }
    }))
    .catch_unwind()
    .await;
    assert!(cut_short.is_err(), "the resize was to be cut short");
    let now = ShardLayout::open(&redis, &s)
        .await
        .expect("open")
        .expect("sharded");
    assert_eq!((now.generation(), now.count()), (1, 4));
    let unsealed = {
        let mut n = 0;
        for k in old.shards() {
            if shard::sealed_at(&redis, &k)
                .await
                .expect("sealed")
                .is_none()
            {
                n += 1;
            }
        }
        n
    };
    assert_eq!(unsealed, 1, "one old shard sealed before the cut");
    let mut lines = Vec::new();
    let again = shard::resize(&redis, &s, 4, &mut |l| lines.push(l.to_string()))
        .await
        .expect("again");
    assert_eq!((again.from, again.to), (now.current(), now.current()));
    assert_eq!(again.sealed.len(), 2, "{lines:?}");
    for k in old.shards() {
        assert!(
            shard::sealed_at(&redis, &k)
                .await
                .expect("sealed")
                .is_some(),
            "{k}"
        );
    }
    // The group made it to every new shard; a stale producer follows.
    for k in now.shards() {
        let groups = streamkeeper::group::list_groups(&redis, &k)
            .await
            .expect("groups");
        assert_eq!(groups.len(), 1, "{k}");
    }
    let (shard_key, _) = stale
        .send(Some(b"a"), &fields([("n", "2")]))
        .await
        .expect("send after");
    assert!(now.shards().contains(&shard_key), "{shard_key}");
    // Resizing to the count in force changes nothing.
    let same = shard::resize(&redis, &s, 4, &mut |_| {})
        .await
        .expect("same");
    assert_eq!(same.to.generation, 1);
    // Bad input: nothing written.
    let e = shard::resize(&redis, &s, 0, &mut |_| {})
        .await
        .expect_err("0");
    assert!(e.to_string().contains("1 to"), "{e}");
    let e = shard::resize(&redis, &key("plain"), 2, &mut |_| {})
        .await
        .expect_err("plain");
    assert!(e.to_string().contains("shard create"), "{e}");
}

async fn now_shards(redis: &Connector, s: &StreamKey) -> Vec<StreamKey> {
    ShardLayout::open(redis, s)
        .await
        .expect("open")
        .expect("sharded")
        .shards()
}

/// The janitor's end of a resize: a generation every group drained leaves
/// the layout and its keys go, but not while one of its shards holds a
/// dead letter, nor while a group still has entries there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_generation_is_retired_unless_it_holds_dead_letters() {
    let (_server, redis) = common::setup().await;
    let s = key("jobs");
    let old = ShardLayout::create(&redis, &s, 2).await.expect("create");
    for shard in old.shards() {
        streamkeeper::group::create_group(&redis, &shard, &group("g"), StartFrom::Beginning)
            .await
            .expect("group");
    }
    let producer = ShardedProducer::new(&redis, old.clone());
    for n in 0..10 {
        let key = format!("k{n}");
        producer
            .send(Some(key.as_bytes()), &fields([("n", n.to_string())]))
            .await
            .expect("send");
    }
    shard::resize(&redis, &s, 3, &mut |_| {})
        .await
        .expect("resize");
    // Nothing handled yet: nothing to retire.
    let none = shard::retire_drained(&redis, &s, false)
        .await
        .expect("retire");
    assert!(none.is_empty(), "{none:?}");
    // Handle the ten, dead-lettering n=3.
    let run = |limit: u64| {
        ShardedConsumer::new(&redis, s.clone(), group("g"))
            .options(ConsumerOptions {
                limit: Some(limit),
                ..ConsumerOptions::default()
            })
            .run(
                |d| async move {
                    // n=3 is dead-lettered, but not its replayed copy.
                    let replayed = d.entry().get("sk-origin-id").is_some();
                    Ok::<_, std::io::Error>(match d.entry().get_str("n") {
                        Some("3") if !replayed => Outcome::DeadLetter {
                            reason: "bad".into(),
                        },
                        _ => Outcome::Ack,
                    })
                },
                CancellationToken::new(),
            )
    };
    let stats = tokio::time::timeout(Duration::from_secs(20), run(10))
        .await
        .expect("the run ends at its limit")
        .expect("run");
    assert_eq!(stats.delivered, 10);
    let dry = shard::retire_drained(&redis, &s, true).await.expect("dry");
    assert!(
        dry.is_empty(),
        "a dead letter keeps its generation: {dry:?}"
    );
    // Replayed, the dead letter goes to the current generation (its own
    // shard is sealed), and the group runs it there; now the old
    // generation can go.
    let mut replayed = 0;
    for k in old.shards() {
        for letter in streamkeeper::deadletter::list(&redis, &k, 10)
            .await
            .expect("list")
        {
            let (to, _) = shard::replay_dead_letter(&redis, &k, letter.id)
                .await
                .expect("replay")
                .expect("replayed");
            assert!(now_shards(&redis, &s).await.contains(&to), "{to}");
            replayed += 1;
        }
    }
    assert_eq!(replayed, 1);
    let again = tokio::time::timeout(Duration::from_secs(20), run(1))
        .await
        .expect("the run ends at its limit")
        .expect("run");
    assert_eq!((again.delivered, again.dead_lettered), (1, 0));
    let mut conn = redis.shared();
    let dry = shard::retire_drained(&redis, &s, true).await.expect("dry");
    assert_eq!(dry.len(), 1, "{dry:?}");
    let exists: u64 = redis::cmd("EXISTS")
        .arg(old.shard(0).as_str())
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 1, "a dry run deletes nothing");
    let gone = shard::retire_drained(&redis, &s, false)
        .await
        .expect("retire");
    assert_eq!(
        gone,
        vec![shard::Generation {
            generation: 0,
            count: 2
        }]
    );
    let now = ShardLayout::open(&redis, &s)
        .await
        .expect("open")
        .expect("sharded");
    assert!(now.older().is_empty(), "{now:?}");
    assert_eq!(now.all_shards(), now.shards());
    for k in old.shards() {
        // Emptied, its group gone, but kept sealed: a stale producer must
        // be refused, not recreate it.
        let len: u64 = redis::cmd("XLEN")
            .arg(k.as_str())
            .query_async(&mut conn)
            .await
            .expect("XLEN");
        assert_eq!(len, 0, "{k}");
        let groups = streamkeeper::group::list_groups(&redis, &k)
            .await
            .expect("groups");
        assert!(groups.is_empty(), "{k}: {groups:?}");
        assert!(
            shard::sealed_at(&redis, &k)
                .await
                .expect("sealed")
                .is_some(),
            "{k}"
        );
    }
    // The group goes on in the new generation; a producer still routing
    // by generation 0 follows.
    let (to, _) = producer
        .send(Some(b"k1"), &fields([("n", "10")]))
        .await
        .expect("send");
    assert!(now.shards().contains(&to), "{to}");
    let last = tokio::time::timeout(Duration::from_secs(20), run(1))
        .await
        .expect("the run ends at its limit")
        .expect("run");
    assert_eq!(last.delivered, 1);
}

/// Two resizes of one stream at once: one may lose the race (and says to
/// run again), but the stream stays usable — the loser's shards beyond the
/// winner's count are removed, and nothing reads them as a layout changed
/// by hand (an independent tester locked a stream up this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_resizes_at_once_leave_a_usable_stream_and_no_stray_shards() {
    let (_server, redis) = common::setup().await;
    for n in 0..6 {
        let s = key(&format!("race{n}"));
        ShardLayout::create(&redis, &s, 4).await.expect("create");
        streamkeeper::group::create_group(
            &redis,
            &ShardLayout::open(&redis, &s)
                .await
                .expect("open")
                .expect("sharded")
                .shard(0),
            &group("g"),
            StartFrom::Beginning,
        )
        .await
        .expect("group");
        let (mut quiet_a, mut quiet_b) = (|_: &str| {}, |_: &str| {});
        let (a, b) = tokio::join!(
            shard::resize(&redis, &s, 2, &mut quiet_a),
            shard::resize(&redis, &s, 8, &mut quiet_b)
        );
        assert!(a.is_ok() || b.is_ok(), "{a:?} {b:?}");
        for e in [&a, &b].into_iter().filter_map(|r| r.as_ref().err()) {
            assert!(e.to_string().contains("run the resize again"), "{e}");
        }
        let layout = ShardLayout::open(&redis, &s)
            .await
            .expect("the layout opens")
            .expect("sharded");
        let p = ShardedProducer::new(&redis, layout.clone());
        p.send(Some(b"k"), &fields([("n", "1")]))
            .await
            .expect("send");
        let mut conn = redis.shared();
        for g in layout.generations() {
            let stray = streamkeeper::keys::StreamKeys::shard_of(&s, g.generation, g.count);
            let n: u64 = redis::cmd("EXISTS")
                .arg(stray.as_str())
                .query_async(&mut conn)
                .await
                .expect("EXISTS");
            assert_eq!(n, 0, "{stray} left behind by the loser");
        }
    }
}

/// A least-privilege user (stream commands, scripts and `HGET` for the
/// layout; no `GET`) tells a sealed shard by the shard's own last ID (the
/// seal record's `GET` used to fail, so its consumers never saw a shard
/// drained), and its producer and shared-mode consumer follow a resize.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_privilege_user_follows_a_resize() {
    let (server, admin) = common::setup().await;
    let mut conn = admin.shared();
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER",
            "worker",
            "on",
            ">pw",
            "~*",
            "resetchannels",
            "-@all",
            "+@stream",
        ])
        .arg(&[
            "+@connection",
            "+ping",
            "+info",
            "+evalsha",
            "+eval",
            "+script|load",
            "+hget",
        ])
        .query_async(&mut conn)
        .await
        .expect("ACL");
    let worker = Connector::connect(&format!("{}?user=worker&pass=pw", server.url()))
        .await
        .expect("connect as worker");
    let s = key("limited");
    let old = ShardLayout::create(&admin, &s, 2).await.expect("create");
    for shard in old.shards() {
        streamkeeper::group::create_group(&admin, &shard, &group("g"), StartFrom::Beginning)
            .await
            .expect("group");
    }
    let producer = ShardedProducer::new(&worker, old);
    for n in 0..4 {
        let k = format!("k{n}");
        producer
            .send(Some(k.as_bytes()), &fields([("n", n.to_string())]))
            .await
            .expect("send");
    }
    shard::resize(&admin, &s, 3, &mut |_| {})
        .await
        .expect("resize");
    for n in 4..6 {
        let k = format!("k{n}");
        producer
            .send(Some(k.as_bytes()), &fields([("n", n.to_string())]))
            .await
            .expect("send after");
    }
    assert!(shard::sealed_at(
        &worker,
        &ShardLayout::open(&admin, &s)
            .await
            .expect("open")
            .expect("sharded")
            .older()[0]
            .shards(&s)[0]
    )
    .await
    .expect("sealed_at as the worker")
    .is_some());
    let run = ShardedConsumer::new(&worker, s.clone(), group("g"))
        .options(ConsumerOptions {
            limit: Some(6),
            ..ConsumerOptions::default()
        })
        .run(
            |_d| async move { Ok::<_, std::io::Error>(Outcome::Ack) },
            CancellationToken::new(),
        );
    let stats = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the new generation was handed out")
        .expect("run");
    assert_eq!(stats.delivered, 6);
}
