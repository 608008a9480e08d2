//! Chaos: consumers SIGKILLed and restarted, two Sentinel failovers, a
//! producer using WAIT 1 — and every acknowledged entry is processed by
//! each group, nothing stays pending, no consumer is left stopped. It
//! counts what matters: acknowledged writes lost, entries dead-lettered
//! without ever being handled (both must be 0) and handler runs per entry.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamkeeper::{fields, Connector, Producer, StreamKey, Wait};
use streamkeeper_testkit::SentinelTopology;

const BIN: &str = env!("CARGO_BIN_EXE_streamkeeper");
const STREAM: &str = "chaos";
/// How long consumers are killed and the master failed over.
const CHAOS_FOR: Duration = Duration::from_secs(25);

struct Member {
    name: &'static str,
    group: &'static str,
    child: Child,
    incarnation: u32,
}

fn spawn(
    url: &str,
    dir: &Path,
    name: &'static str,
    group: &'static str,
    incarnation: u32,
) -> Child {
    let out = File::create(dir.join(format!("{name}.{incarnation}.out"))).expect("out file");
    let err = File::create(dir.join(format!("{name}.{incarnation}.err"))).expect("err file");
    Command::new(BIN)
        .args([
            "--redis",
            url,
            "consume",
            STREAM,
            "-g",
            group,
            "-c",
            name,
            "--claim-after",
            "1s",
            "--batch",
            "20",
            "--max-deliveries",
            "3",
        ])
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn consumer")
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn processed(dir: &Path, prefix: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for f in files(dir, ".out") {
        if !f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        {
            continue;
        }
        for line in std::fs::read_to_string(&f).unwrap_or_default().lines() {
            // A SIGKILL may cut the last line short; it was not acked then.
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                if let Some(id) = v["id"].as_str() {
                    ids.push(id.to_string());
                }
            }
        }
    }
    ids
}

/// (pending, entries after the group's last-delivered ID). Counted from
/// IDs, not from XINFO's `lag`, which a failover can leave stale.
fn group_state(rt: &tokio::runtime::Runtime, redis: &Connector, group: &str) -> (u64, u64) {
    rt.block_on(async {
        let key = StreamKey::new(STREAM).expect("key");
        let Ok(groups) = streamkeeper::group::list_groups(redis, &key).await else {
            return (u64::MAX, u64::MAX);
        };
        let Some(g) = groups.iter().find(|g| g.name == group) else {
            return (u64::MAX, u64::MAX);
        };
        let after: streamkeeper::StreamId = g.last_delivered;
        let undelivered = streamkeeper::reader::range(
            redis,
            &key,
            after.next(),
            streamkeeper::StreamId::MAX,
            100_000,
        )
        .await
        .map_or(u64::MAX, |e| e.len() as u64);
        (g.pending, undelivered)
    })
}

/// Creates groups A and B on the chaos stream, from its start.
fn create_groups(url: &str) {
    for g in ["A", "B"] {
        let o = Command::new(BIN)
            .args(["--redis", url, "group", "create", STREAM, g, "--from", "-"])
            .output()
            .expect("group create");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Three consumers in group A, one in group B, each logging to `dir`.
fn start_members(url: &str, dir: &Path) -> Vec<Member> {
    [("A1", "A"), ("A2", "A"), ("A3", "A"), ("B1", "B")]
        .into_iter()
        .map(|(name, group)| Member {
            name,
            group,
            child: spawn(url, dir, name, group, 0),
            incarnation: 0,
        })
        .collect()
}

/// The producer: WAIT 1 per entry until stopped. Only entries whose send
/// returned an ID (replicated to one replica) must survive.
struct WaitOneProducer {
    task: tokio::task::JoinHandle<()>,
    producing: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    unconfirmed: Arc<Mutex<u64>>,
}

impl WaitOneProducer {
    fn start(rt: &tokio::runtime::Runtime, redis: &Connector) -> Self {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let unconfirmed = Arc::new(Mutex::new(0u64));
        let producing = Arc::new(AtomicBool::new(true));
        let (redis, task_acked, task_unconfirmed, task_producing) = (
            redis.clone(),
            acked.clone(),
            unconfirmed.clone(),
            producing.clone(),
        );
        let task = rt.spawn(async move {
            let p = Producer::new(&redis, StreamKey::new(STREAM).expect("key")).with_wait(Wait {
                replicas: 1,
                timeout: Duration::from_secs(2),
            });
            let mut n = 0u64;
            while task_producing.load(Ordering::SeqCst) {
                n += 1;
                match p.send(&fields([("n", n.to_string())])).await {
                    Ok(id) => task_acked.lock().expect("lock").push(id.to_string()),
                    Err(_) => *task_unconfirmed.lock().expect("lock") += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Self {
            task,
            producing,
            acked,
            unconfirmed,
        }
    }

    /// Stops it; returns the acknowledged IDs and how many sends got no ID.
    fn stop(self, rt: &tokio::runtime::Runtime) -> (Vec<String>, u64) {
        self.producing.store(false, Ordering::SeqCst);
        rt.block_on(self.task).expect("producer");
        let acked = self.acked.lock().expect("lock").clone();
        let unconfirmed = *self.unconfirmed.lock().expect("lock");
        (acked, unconfirmed)
    }
}

/// For `run_for`: every 1–2 s SIGKILLs a random member and restarts it;
/// fails the master over at 6 s and at 15 s. Returns (kills, failovers).
fn kill_and_fail_over(
    topo: &SentinelTopology,
    url: &str,
    dir: &Path,
    members: &mut [Member],
    run_for: Duration,
) -> (u32, usize) {
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = Instant::now();
    let mut failovers = 0;
    let mut kills = 0;
    while t0.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(1000 + next() % 1000));
        let i = usize::try_from(next() % members.len() as u64).expect("index");
        let m = &mut members[i];
        let _ = m.child.kill(); // SIGKILL
        let _ = m.child.wait();
        m.incarnation += 1;
        m.child = spawn(url, dir, m.name, m.group, m.incarnation);
        kills += 1;
        let due = [Duration::from_secs(6), Duration::from_secs(15)];
        if failovers < 2 && t0.elapsed() >= due[failovers] {
            topo.failover().expect("failover");
            failovers += 1;
        }
    }
    (kills, failovers)
}

/// Asserts no member stopped by itself, then stops each with SIGTERM.
fn stop_members(members: &mut [Member], dir: &Path) {
    for m in members {
        assert!(
            m.child.try_wait().expect("try_wait").is_none(),
            "consumer {} stopped by itself; its log: {}",
            m.name,
            std::fs::read_to_string(dir.join(format!("{}.{}.err", m.name, m.incarnation)))
                .unwrap_or_default()
        );
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(m.child.id().to_string())
            .status();
        let _ = m.child.wait();
    }
}

/// Drain: both groups end with nothing pending and nothing undelivered
/// (within 60 s). Every member must still be running; then each is stopped.
fn drain_then_stop_members(
    rt: &tokio::runtime::Runtime,
    redis: &Connector,
    members: &mut [Member],
    dir: &Path,
) {
    let drained = streamkeeper_testkit::eventually_blocking(Duration::from_secs(60), || {
        group_state(rt, redis, "A") == (0, 0) && group_state(rt, redis, "B") == (0, 0)
    });
    stop_members(members, dir);
    assert!(
        drained,
        "groups did not drain: A {:?}, B {:?}",
        group_state(rt, redis, "A"),
        group_state(rt, redis, "B")
    );
}

/// Acknowledged writes no longer in the stream on the final master.
fn acknowledged_writes_lost(
    rt: &tokio::runtime::Runtime,
    redis: &Connector,
    acked: &[String],
) -> usize {
    let in_stream: HashSet<String> = rt
        .block_on(streamkeeper::reader::range(
            redis,
            &StreamKey::new(STREAM).expect("key"),
            streamkeeper::StreamId::MIN,
            streamkeeper::StreamId::MAX,
            1_000_000,
        ))
        .expect("range")
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    acked.iter().filter(|id| !in_stream.contains(*id)).count()
}

/// (dead letters, dead letters never handled (printed) by their group).
fn dead_letters_never_handled(
    rt: &tokio::runtime::Runtime,
    redis: &Connector,
    dir: &Path,
) -> (usize, usize) {
    let dead = rt
        .block_on(streamkeeper::deadletter::list(
            redis,
            &StreamKey::new(STREAM).expect("key"),
            100_000,
        ))
        .expect("dlq");
    let handled: HashMap<&str, HashSet<String>> = ["A", "B"]
        .into_iter()
        .map(|g| (g, processed(dir, g).into_iter().collect()))
        .collect();
    let never_handled = dead
        .iter()
        .filter(|d| {
            let (Some(g), Some(id)) = (d.get_str("sk-group"), d.get_str("sk-origin-id")) else {
                return true;
            };
            !handled.get(g).is_some_and(|h| h.contains(id))
        })
        .count();
    (dead.len(), never_handled)
}

/// How often a consumer followed a +switch-master announcement or, if it
/// missed it, reconnected after an error: both are logged.
fn reconnects(dir: &Path) -> usize {
    files(dir, ".err")
        .iter()
        .map(|f| {
            let log = std::fs::read_to_string(f).unwrap_or_default();
            log.matches("reconnecting").count()
                + log.matches("following the Sentinel failover").count()
        })
        .sum()
}

/// Group `g`'s consumers processed every acknowledged entry; prints its
/// handler runs per entry.
fn assert_group_processed_every_acknowledged_entry(dir: &Path, g: &str, acked: &[String]) {
    let ids = processed(dir, g);
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for id in &ids {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let dup = counts.values().filter(|n| **n > 1).count();
    let most_runs = counts.values().copied().max().unwrap_or(0);
    let set: HashSet<&str> = counts.keys().copied().collect();
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !set.contains(id.as_str()))
        .collect();
    eprintln!(
        "group {g}: {} acknowledged entries, {} handler runs, {} distinct, {dup} handled more than once (at most {most_runs} runs), {} missing",
        acked.len(),
        ids.len(),
        set.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "group {g} never processed {} acknowledged entries, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn chaos_kills_and_failovers_lose_no_acknowledged_entry() {
    let started = Instant::now();
    let topo = SentinelTopology::start().expect("sentinel topology");
    let url = topo.url();
    let dir = tempfile::tempdir().expect("tmp");
    create_groups(&url);
    let mut members = start_members(&url, dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = rt.block_on(Connector::connect(&url)).expect("connect");
    // About 25 s of producing with WAIT 1 while consumers are killed and
    // the master fails over twice.
    let producer = WaitOneProducer::start(&rt, &redis);
    let (kills, failovers) = kill_and_fail_over(&topo, &url, dir.path(), &mut members, CHAOS_FOR);
    let (acked, unconfirmed) = producer.stop(&rt);
    assert_eq!(failovers, 2);

    drain_then_stop_members(&rt, &redis, &mut members, dir.path());

    let writes_lost = acknowledged_writes_lost(&rt, &redis, &acked);
    let (dead, dead_never_handled) = dead_letters_never_handled(&rt, &redis, dir.path());
    let reconnects = reconnects(dir.path());
    for g in ["A", "B"] {
        assert_group_processed_every_acknowledged_entry(dir.path(), g, &acked);
    }
    eprintln!(
        "entries {} (+{unconfirmed} unconfirmed sends), kills {kills}, failovers {failovers}, reconnects {reconnects}, took {:?}",
        acked.len(),
        started.elapsed()
    );
    eprintln!(
        "acknowledged writes lost: {writes_lost}; dead letters: {dead}, never handled: {dead_never_handled}"
    );
    assert_eq!(writes_lost, 0, "acknowledged writes lost despite WAIT 1");
    assert_eq!(
        dead_never_handled, 0,
        "entries dead-lettered without a handler run"
    );
    // WAIT 1 stalls the producer while the old master resyncs after each
    // failover, so the count varies with the machine's load.
    assert!(acked.len() > 500, "too few entries to prove anything");
    assert!(
        reconnects > 0,
        "no consumer ever reconnected: the failovers did not reach them"
    );
}
