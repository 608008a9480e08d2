//! `tail S` and `tail S --follow` of a sharded stream: the shards merged in
//! ID order (equal IDs by shard index), each line naming its shard; a
//! deleted shard and an odd stream name; one cluster test with the shards
//! on three primaries. Entries are written with explicit IDs so every
//! expected line is known exactly.

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, sk_at};
use streamkeeper_testkit::{RedisCluster, RedisServer};

/// 14 entries over the 4 shards of `t`, written shard by shard (not in ID
/// order); ID `9-0` is on shards 0, 1 and 3. The value names shard and ID.
const WRITES: [(u32, u64); 14] = [
    (3, 4),
    (3, 8),
    (3, 9),
    (3, 10),
    (0, 1),
    (0, 5),
    (0, 9),
    (0, 12),
    (2, 3),
    (2, 7),
    (2, 11),
    (1, 2),
    (1, 6),
    (1, 9),
];

fn four_shards(server: &RedisServer) -> String {
    let url = server.url();
    sk_at(&url, &["shard", "create", "t", "--shards", "4"]).ok();
    for (shard, ms) in WRITES {
        let key = format!("{{t:{shard}}}");
        let id = format!("{ms}-0");
        let v = format!("s{shard}m{ms}");
        assert_eq!(cli(server, &["XADD", &key, &id, "v", &v]), id);
    }
    url
}

/// `(shard, id)` of each `--json` line.
fn shard_ids(out: &str) -> Vec<(String, String)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let s = v["stream"].as_str().expect("stream").to_string();
            (s, v["id"].as_str().expect("id").to_string())
        })
        .collect()
}

fn pairs(expected: &[(u32, u64)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(s, ms)| (format!("{{t:{s}}}"), format!("{ms}-0")))
        .collect()
}

#[test]
fn tail_n_prints_the_last_n_across_the_shards_in_id_order() {
    let server = RedisServer::start().expect("redis");
    let url = four_shards(&server);
    let out = sk_at(&url, &["--json", "tail", "t", "-n", "5"]).ok();
    assert_eq!(
        shard_ids(&out),
        pairs(&[(1, 9), (3, 9), (3, 10), (2, 11), (0, 12)])
    );
    // All of them: ties at 9-0 by shard index, nothing twice.
    let all = sk_at(&url, &["--json", "tail", "t", "-n", "100"]).ok();
    assert_eq!(
        shard_ids(&all),
        pairs(&[
            (0, 1),
            (1, 2),
            (2, 3),
            (3, 4),
            (0, 5),
            (1, 6),
            (2, 7),
            (3, 8),
            (0, 9),
            (1, 9),
            (3, 9),
            (3, 10),
            (2, 11),
            (0, 12)
        ])
    );
    // For people: the shard, then the line plain tail prints.
    let human = sk_at(&url, &["tail", "t", "-n", "2"]).ok();
    assert_eq!(human, "{t:2}  11-0  v=s2m11\n{t:0}  12-0  v=s0m12\n");
    // --from (inclusive) with --count, and dump: the same merged reader.
    let from = sk_at(&url, &["--json", "tail", "t", "--from", "9-0", "-n", "3"]).ok();
    assert_eq!(shard_ids(&from), pairs(&[(0, 9), (1, 9), (3, 9)]));
    let dump = sk_at(&url, &["dump", "t", "--from", "8-0", "--to", "10-0"]).ok();
    assert_eq!(
        shard_ids(&dump),
        pairs(&[(3, 8), (0, 9), (1, 9), (3, 9), (3, 10)])
    );
}

#[test]
fn a_deleted_shard_is_read_as_empty() {
    let server = RedisServer::start().expect("redis");
    let url = four_shards(&server);
    assert_eq!(cli(&server, &["DEL", "{t:3}"]), "1");
    let out = sk_at(&url, &["--json", "tail", "t", "-n", "4"]).ok();
    assert_eq!(shard_ids(&out), pairs(&[(0, 9), (1, 9), (2, 11), (0, 12)]));
    let all = sk_at(&url, &["--json", "tail", "t", "-n", "100"]).ok();
    assert_eq!(shard_ids(&all).len(), 10);
    // A shard of another type is named, exit 2.
    cli(&server, &["SET", "{t:3}", "x"]);
    sk_at(&url, &["tail", "t"])
        .fails(2)
        .stderr_contains("{t:3}");
}

#[test]
fn an_odd_stream_name_tails_by_its_shard_keys() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let name = "ordres é:2 x";
    sk_at(&url, &["shard", "create", name, "--shards", "2"]).ok();
    let k0 = format!("{{{name}:0}}");
    let k1 = format!("{{{name}:1}}");
    cli(&server, &["XADD", &k1, "1-0", "v", "a\nb"]);
    cli(&server, &["XADD", &k0, "2-0", "v", "c"]);
    let out = sk_at(&url, &["--json", "tail", name]).ok();
    assert_eq!(
        shard_ids(&out),
        vec![
            (k1.clone(), "1-0".to_string()),
            (k0.clone(), "2-0".to_string())
        ]
    );
    let human = sk_at(&url, &["tail", name]).ok();
    assert_eq!(human, format!("{k1}  1-0  v=a\\nb\n{k0}  2-0  v=c\n"));
}

/// A running `tail --follow --json`, its stdout lines collected by a thread.
struct Following {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Following {
    fn start(url: &str, stream: &str) -> Self {
        let mut child = Command::new(common::BIN)
            .args(["--redis", url, "--json", "tail", stream, "--follow"])
            .env_remove("STREAMKEEPER_REDIS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().expect("lock").push(line);
            }
        });
        Following { child, lines }
    }

    /// Waits until `n` lines were printed; returns them as (shard, id).
    fn wait_lines(&self, n: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.lines.lock().expect("lock").clone();
            if got.len() >= n || Instant::now() > deadline {
                return shard_ids(&got.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Following {
    /// SIGINT, then its exit code (10 s at most).
    fn interrupt(&mut self) -> Option<i32> {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "tail --follow ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// XADDs in one MULTI/EXEC: a blocked XREAD is served after EXEC, so it
/// sees all of them in one reply.
fn xadd_atomically(server: &RedisServer, adds: &[(u32, u64)]) {
    let mut script = String::from("MULTI\n");
    for (shard, ms) in adds {
        script.push_str(&format!("XADD {{t:{shard}}} {ms}-0 v s{shard}m{ms}\n"));
    }
    script.push_str("EXEC\n");
    let mut c = Command::new("redis-cli")
        .args(server.cli_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write");
    assert!(c.wait().expect("wait").success());
}

#[test]
fn tail_follow_prints_new_entries_of_every_shard_once_in_id_order_per_write() {
    let server = RedisServer::start().expect("redis");
    let url = four_shards(&server);
    let mut tail = Following::start(&url, "t");
    // The last 10 first (from 5-0 on).
    assert_eq!(tail.wait_lines(10)[0], ("{t:0}".into(), "5-0".into()));
    // Two writes, each to several shards in one go, not in ID order.
    xadd_atomically(&server, &[(3, 20), (0, 21), (2, 22), (1, 20), (0, 23)]);
    xadd_atomically(&server, &[(1, 30), (2, 25)]);
    let got = tail.wait_lines(17);
    assert_eq!(
        got[10..],
        pairs(&[
            (1, 20),
            (3, 20),
            (0, 21),
            (2, 22),
            (0, 23),
            (2, 25),
            (1, 30)
        ])
    );
    // A last write as a barrier: nothing was printed twice before it.
    xadd_atomically(&server, &[(3, 40)]);
    let got = tail.wait_lines(18);
    assert_eq!(got.len(), 18, "{got:?}");
    assert_eq!(got[17], ("{t:3}".into(), "40-0".into()));
    // Ctrl-C: a clean stop, exit 130 as for one stream.
    assert_eq!(tail.interrupt(), Some(130));
}

#[test]
fn tail_n_and_follow_merge_shards_on_three_primaries_of_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.url();
    sk_at(&url, &["shard", "create", "t", "--shards", "4"]).ok();
    let primary = |s: u32| {
        cluster
            .primary_for_key(&format!("{{t:{s}}}"))
            .expect("owner")
    };
    let primaries: std::collections::HashSet<u16> = (0..4).map(primary).collect();
    assert_eq!(primaries.len(), 3, "the shards span every primary");
    let xadd = |s: u32, ms: u64| {
        let id = format!("{ms}-0");
        let key = format!("{{t:{s}}}");
        let port = primary(s);
        assert_eq!(cluster.cli(port, &["XADD", &key, &id, "v", "x"]).trim(), id);
    };
    for (s, ms) in WRITES {
        xadd(s, ms);
    }
    let out = sk_at(&url, &["--json", "tail", "t", "-n", "5"]).ok();
    assert_eq!(
        shard_ids(&out),
        pairs(&[(1, 9), (3, 9), (3, 10), (2, 11), (0, 12)])
    );
    // Following: one read per shard; each shard's entries once, in order.
    let tail = Following::start(&url, "t");
    assert_eq!(tail.wait_lines(10).len(), 10);
    for (s, ms) in [(0, 50), (1, 51), (2, 52), (3, 53), (0, 54)] {
        xadd(s, ms);
    }
    // A last entry on every shard as a barrier: once all four are printed,
    // everything before them on their shard was (each shard in order).
    for s in 0..4 {
        xadd(s, 60);
    }
    let mut got = tail.wait_lines(19)[10..].to_vec();
    got.sort_by_key(|(s, id)| (s.clone(), id.clone()));
    assert_eq!(
        got,
        pairs(&[
            (0, 50),
            (0, 54),
            (0, 60),
            (1, 51),
            (1, 60),
            (2, 52),
            (2, 60),
            (3, 53),
            (3, 60)
        ])
    );
}

#[test]
fn tail_follow_follows_a_resize_to_the_new_generation() {
    let server = RedisServer::start().expect("redis");
    let url = four_shards(&server);
    let tail = Following::start(&url, "t");
    assert_eq!(tail.wait_lines(10).len(), 10);
    let resized = common::sk(&server, &["shard", "resize", "t", "--shards", "2"]);
    assert!(resized.status.success(), "{resized:?}");
    // Written after the resize: to the new shards, which tail was not
    // following when it started.
    for n in 0..6 {
        let o = common::sk(
            &server,
            &[
                "produce",
                "t",
                "--key",
                &format!("k{n}"),
                "--field",
                "n={i}",
                "-q",
            ],
        );
        assert!(o.status.success(), "{o:?}");
    }
    let got = tail.wait_lines(16);
    assert_eq!(got.len(), 16, "{got:?}");
    assert!(
        got[10..].iter().all(|(shard, _)| shard.ends_with("~1}")),
        "{got:?}"
    );
    // Nothing twice.
    let distinct: std::collections::HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len(), 16);
}
