//! `streamkeeper schedule`: several real instances, one SIGKILLed and one
//! joining mid-run, emit every tick exactly once; bad definitions store nothing.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamkeeper_testkit::RedisServer;

mod common;

use common::{sk, BIN};

fn instance(server: &RedisServer, name: &str) -> Child {
    Command::new(BIN)
        .args([
            "--redis",
            &server.url(),
            "-q",
            "schedule",
            "run",
            "--instance",
            name,
        ])
        .env_remove("STREAMKEEPER_REDIS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn instance")
}

#[test]
fn three_instances_emit_every_tick_exactly_once_through_a_kill_and_a_join() {
    let server = RedisServer::start().expect("redis");
    let mut intervals = BTreeMap::new();
    for i in 0..20u64 {
        let ms = 200 + i * 40; // 200 ms … 960 ms
        let name = format!("s{i:02}");
        let o = sk(
            &server,
            &[
                "schedule",
                "add",
                &name,
                "--every",
                &format!("{ms}ms"),
                "--to",
                "ticks",
                "--field",
                "site=example",
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        intervals.insert(name, ms);
    }
    let t0 = Instant::now();
    let mut running = vec![
        instance(&server, "a"),
        instance(&server, "b"),
        instance(&server, "c"),
    ];
    std::thread::sleep(Duration::from_secs(5));
    let _ = running[0].kill(); // SIGKILL, mid-whatever it was doing
    let _ = running[0].wait();
    std::thread::sleep(Duration::from_secs(3));
    running.push(instance(&server, "d"));
    std::thread::sleep(Duration::from_secs(15) - t0.elapsed());
    for c in running.iter_mut().skip(1) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let status = c.wait().expect("wait");
        assert_eq!(
            status.code(),
            Some(130),
            "a scheduler instance stopped by SIGTERM exits 130"
        );
    }

    let raw = server.cli(&["XRANGE", "ticks", "-", "+"]).expect("XRANGE");
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let lines: Vec<&str> = raw.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        // id, then field/value lines until the next id: site, example, sk-schedule, N, sk-due, T
        let fields = &lines[i + 1..i + 7];
        assert_eq!(fields[0], "site");
        assert_eq!(fields[2], "sk-schedule");
        assert_eq!(fields[4], "sk-due");
        per.entry(fields[3].to_string())
            .or_default()
            .push(fields[5].parse().expect("due"));
        i += 7;
    }
    let mut total = 0;
    for (name, ms) in &intervals {
        let dues = per.get(name).cloned().unwrap_or_default();
        let mut sorted = dues.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), dues.len(), "{name}: duplicate ticks");
        let gaps: Vec<_> = sorted.windows(2).filter(|w| w[1] - w[0] != *ms).collect();
        assert!(gaps.is_empty(), "{name} (every {ms} ms): gaps {gaps:?}");
        // ~14 s of ticks at most, at least 10 s worth.
        assert!(
            sorted.len() as u64 >= 10_000 / ms,
            "{name}: only {} ticks",
            sorted.len()
        );
        total += sorted.len();
    }
    eprintln!("{total} ticks for 20 schedules: 0 duplicates, 0 gaps");
}

#[test]
fn bad_schedules_are_rejected_and_nothing_is_stored() {
    let server = RedisServer::start().expect("redis");
    let cases: &[(&[&str], &str)] = &[
        (
            &["schedule", "add", "c", "--cron", "61 * * * *", "--to", "t"],
            "invalid cron expression",
        ),
        (
            &[
                "schedule",
                "add",
                "c",
                "--cron",
                "* * * * *",
                "--tz",
                "Mars/Base",
                "--to",
                "t",
            ],
            "unknown time zone",
        ),
        (
            &["schedule", "add", "e", "--every", "0s", "--to", "t"],
            "too short",
        ),
        (&["schedule", "add", "e", "--every", "1s"], "--to"),
        (
            &[
                "schedule",
                "add",
                "e",
                "--every",
                "1s",
                "--to",
                "t",
                "--missed",
                "sometimes",
            ],
            "missed",
        ),
        (&["schedule", "add", "e", "--to", "t"], "--every"),
    ];
    for (args, needle) in cases {
        let o = sk(&server, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
    }
    assert_eq!(
        server
            .cli(&["EXISTS", "{streamkeeper}:schedules", "{streamkeeper}:due"])
            .expect("cli")
            .trim(),
        "0"
    );
    let o = sk(&server, &["schedule", "rm", "nope"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn ls_shows_next_due_last_fired_and_lateness() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["schedule", "add", "hb", "--every", "200ms", "--to", "t"]
    )
    .status
    .success());
    assert!(sk(
        &server,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--tz",
            "Europe/Berlin",
            "--to",
            "t"
        ]
    )
    .status
    .success());
    let mut inst = instance(&server, "x");
    std::thread::sleep(Duration::from_millis(900));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(inst.id().to_string())
        .status();
    let _ = inst.wait();
    let o = sk(&server, &["schedule", "ls", "--json"]);
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2);
    let hb = &rows[0];
    assert_eq!(hb["schedule"]["name"], "hb");
    assert!(hb["last_fired_ms"].as_u64().is_some(), "{hb}");
    assert!(hb["lateness_ms"].as_u64().is_some_and(|l| l < 1000), "{hb}");
    let nightly = &rows[1];
    assert!(nightly["last_fired_ms"].is_null());
    assert!(nightly["next_due_ms"].as_u64().is_some());
    let o = sk(&server, &["schedule", "pause", "nightly"]);
    assert!(o.status.success());
    let o = sk(&server, &["schedule", "ls"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("paused"));
}
