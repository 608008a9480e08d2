//! How a consumer's end affects its entries: SIGKILLed, what it held is
//! claimed by another consumer and nothing is lost; stopped with SIGINT,
//! it flushes its acks (exit 130), so nothing it processed is delivered
//! again. (How commands end when stdout closes: `endings.rs`.)

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{cli, command, sk, stderr, stdout, xpending};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn ids_in(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            v["id"].as_str().expect("id").to_string()
        })
        .collect()
}

fn sigint(child: &Child) {
    let pid = i32::try_from(child.id()).expect("pid");
    // SAFETY-free: `kill` from the shell keeps this test free of unsafe.
    let ok = Command::new("kill")
        .arg("-INT")
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn sigkilled_consumer_loses_nothing() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (a_log, b_log) = (dir.path().join("a"), dir.path().join("b"));
    let produced = sk(
        &server,
        &["produce", "jobs", "--field", "n={i}", "--count", "200"],
    );
    assert!(produced.status.success());
    let all: HashSet<String> = stdout(&produced).lines().map(str::to_string).collect();
    assert_eq!(all.len(), 200);

    let exec_a = format!("cat >> {}; sleep 0.02", a_log.display());
    let mut a = command(
        &server,
        &[
            "consume", "jobs", "-g", "g", "--create", "--from", "-", "-c", "a", "--exec", &exec_a,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn a");
    assert!(
        eventually_blocking(Duration::from_secs(20), || lines(&a_log).len() >= 20),
        "consumer a never got going"
    );
    a.kill().expect("SIGKILL"); // Child::kill sends SIGKILL
    a.wait().expect("reap");
    let pending_at_kill = xpending(&server, "jobs", "g");
    assert!(
        pending_at_kill > 0,
        "the killed consumer held nothing: the test proves nothing"
    );

    let exec_b = format!("cat >> {}", b_log.display());
    let b = sk(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "-c",
            "b",
            "--claim-after",
            "1s",
            "--idle-exit",
            "3s",
            "--exec",
            &exec_b,
        ],
    );
    assert!(b.status.success(), "{}", stderr(&b));

    let processed: HashSet<String> = ids_in(&a_log).into_iter().chain(ids_in(&b_log)).collect();
    let missing: Vec<_> = all.difference(&processed).collect();
    assert!(missing.is_empty(), "lost entries: {missing:?}");
    assert_eq!(xpending(&server, "jobs", "g"), 0);
    eprintln!(
        "a processed {}, b processed {}, pending at kill {pending_at_kill}",
        lines(&a_log).len(),
        lines(&b_log).len()
    );
}

#[test]
fn sigint_flushes_acks_so_nothing_processed_is_redelivered() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tmp");
    let (a_log, b_log) = (dir.path().join("a"), dir.path().join("b"));
    assert!(sk(
        &server,
        &["produce", "jobs", "--field", "n={i}", "--count", "300", "--quiet"]
    )
    .status
    .success());
    let exec_a = format!("cat >> {}; sleep 0.005", a_log.display());
    let a = command(
        &server,
        &[
            "consume", "jobs", "-g", "g", "--create", "--from", "-", "-c", "a", "--exec", &exec_a,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(eventually_blocking(Duration::from_secs(20), || lines(
        &a_log
    )
    .len()
        >= 50));
    sigint(&a);
    let out = a.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let processed: HashSet<String> = ids_in(&a_log).into_iter().collect();
    assert!(
        processed.len() < 300,
        "finished before the signal: the test proves nothing"
    );

    // Every entry `a` processed is acknowledged: none is pending, and a
    // consumer that reclaims everything idle never sees one again.
    let pending = cli(&server, &["XPENDING", "jobs", "g", "-", "+", "1000"]);
    let pending: HashSet<&str> = pending.lines().collect();
    for id in &processed {
        assert!(
            !pending.contains(id.as_str()),
            "{id} was processed but is still pending"
        );
    }
    let exec_b = format!("cat >> {}", b_log.display());
    let b = sk(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "-c",
            "b",
            "--claim-after",
            "1s",
            "--idle-exit",
            "3s",
            "--exec",
            &exec_b,
        ],
    );
    assert!(b.status.success(), "{}", stderr(&b));
    let again: Vec<_> = ids_in(&b_log)
        .into_iter()
        .filter(|id| processed.contains(id))
        .collect();
    assert!(
        again.is_empty(),
        "redelivered after a graceful stop: {again:?}"
    );
    assert_eq!(processed.len() + lines(&b_log).len(), 300);
}
