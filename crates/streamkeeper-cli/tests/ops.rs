//! Operations commands against a real server: stat, janitor, group
//! create/ls/destroy, reset and consumers, dlq ls/replay/purge,
//! dump/restore, doctor.

use std::io::Write;
use std::process::{Command, Stdio};

use streamkeeper_testkit::{RedisServer, ServerConfig};

mod common;

use common::{assert_one_line_error, cli, json_lines, sk, sk_stdin, stderr, stdout};

/// XPENDING count and the number of entries after the group's
/// last-delivered ID, counted by hand with XRANGE.
fn independent_count(server: &RedisServer, stream: &str, group: &str) -> (u64, u64) {
    let pending: u64 = cli(server, &["XPENDING", stream, group])
        .lines()
        .next()
        .expect("count")
        .parse()
        .expect("n");
    let info = cli(server, &["XINFO", "GROUPS", stream]);
    let lines: Vec<&str> = info.lines().collect();
    // The last-delivered ID of this group.
    let mut current = "";
    let mut delivered = String::new();
    let mut i = 0;
    while i + 1 < lines.len() {
        if lines[i] == "name" {
            current = lines[i + 1];
        }
        if lines[i] == "last-delivered-id" && current == group {
            delivered = lines[i + 1].to_string();
        }
        i += 1;
    }
    let after = cli(server, &["XRANGE", stream, &format!("({delivered}"), "+"]);
    let undelivered = after
        .lines()
        .filter(|l| l.contains('-') && l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .count() as u64;
    (pending, undelivered)
}

#[test]
fn stat_json_matches_an_independent_count_also_when_lag_is_unknown() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "n={i}", "--count", "50", "-q"]
    )
    .status
    .success());
    assert!(sk(&server, &["group", "create", "s", "g", "--from", "-"])
        .status
        .success());
    assert!(sk(
        &server,
        &["consume", "s", "-g", "g", "--count", "20", "--ack", "manual"]
    )
    .status
    .success());
    let check = |label: &str| {
        let o = sk(&server, &["stat", "s", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let row = &json_lines(&o)[0];
        let (pending, undelivered) = independent_count(&server, "s", "g");
        assert_eq!(row["pending"], pending, "{label}: {row}");
        assert_eq!(row["undelivered"], undelivered, "{label}: {row}");
        assert_eq!(row["outstanding"], pending + undelivered, "{label}: {row}");
        assert_eq!(
            row["length"],
            cli(&server, &["XLEN", "s"]).parse::<u64>().expect("len"),
            "{label}"
        );
        for key in [
            "stream",
            "length",
            "first_id",
            "last_id",
            "memory_bytes",
            "group",
            "pending",
            "undelivered",
            "outstanding",
            "time_lag_ms",
            "oldest_pending_ms",
            "consumers",
        ] {
            assert!(
                row.get(key).is_some(),
                "{label}: field {key} missing in {row}"
            );
        }
        row.clone()
    };
    let first = check("plain");
    assert_eq!(
        (first["pending"].as_u64(), first["undelivered"].as_u64()),
        (Some(20), Some(30))
    );
    // XDEL of an undelivered entry makes XINFO's lag unknown (NULL).
    let last = cli(&server, &["XREVRANGE", "s", "+", "-", "COUNT", "1"])
        .lines()
        .next()
        .expect("id")
        .to_string();
    assert_eq!(cli(&server, &["XDEL", "s", &last]), "1");
    let info = cli(&server, &["XINFO", "GROUPS", "s"]);
    let lag_line = info
        .lines()
        .skip_while(|l| *l != "lag")
        .nth(1)
        .unwrap_or("");
    assert_eq!(
        lag_line, "",
        "expected a NULL lag after XDEL, got {lag_line:?}"
    );
    let after = check("after XDEL");
    assert_eq!(after["undelivered"].as_u64(), Some(29));
    // Thresholds make it a health check.
    assert_eq!(
        sk(&server, &["stat", "s", "--max-lag", "100"])
            .status
            .code(),
        Some(0)
    );
    let o = sk(&server, &["stat", "s", "--max-lag", "10"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--max-lag 10"));
    assert_eq!(
        sk(&server, &["stat", "s", "--max-time-lag", "1h"])
            .status
            .code(),
        Some(0)
    );
}

#[test]
fn janitor_command_trims_only_what_every_group_acked() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "n={i}", "--count", "100", "-q"]
    )
    .status
    .success());
    for g in ["fast", "slow"] {
        assert!(sk(&server, &["group", "create", "s", g, "--from", "-"])
            .status
            .success());
    }
    assert!(
        sk(&server, &["consume", "s", "-g", "fast", "--count", "100"])
            .status
            .success()
    );
    assert!(
        sk(&server, &["consume", "s", "-g", "slow", "--count", "40"])
            .status
            .success()
    );
    // --dry-run alone is one run: it reports and exits.
    let dry = json_lines(&sk(&server, &["janitor", "s", "--dry-run", "--json"]));
    assert_eq!(dry[0]["trimmed"], 40);
    // It says who holds the trim point, and how: slow has not read on.
    assert_eq!(dry[0]["held_by"], "slow");
    assert_eq!(dry[0]["held_by_pending"], false);
    assert_eq!(dry[0]["dry_run"], true);
    assert_eq!(cli(&server, &["XLEN", "s"]), "100");
    let run = json_lines(&sk(&server, &["janitor", "s", "--once", "--json"]));
    assert_eq!(run[0]["trimmed"], 40);
    assert_eq!(run[0]["dropped_unacked"], 0);
    assert_eq!(cli(&server, &["XLEN", "s"]), "60");
    // A cap without an archive is refused, and nothing is trimmed.
    let o = sk(&server, &["janitor", "s", "--once", "--max-len", "10"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["XLEN", "s"]), "60");
    let dir = tempfile::tempdir().expect("tmp");
    let archive = dir.path().join("a.jsonl");
    let capped = json_lines(&sk(
        &server,
        &[
            "janitor",
            "s",
            "--once",
            "--max-len",
            "10",
            "--archive",
            archive.to_str().expect("path"),
            "--json",
        ],
    ));
    assert_eq!(capped[0]["dropped_unacked"], 50);
    assert_eq!(
        std::fs::read_to_string(&archive)
            .expect("archive")
            .lines()
            .count(),
        50
    );
    assert_eq!(cli(&server, &["XLEN", "s"]), "10");
}

#[test]
fn group_reset_previews_and_moves_and_consumers_hand_off_pending() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "n={i}", "--count", "30", "-q"]
    )
    .status
    .success());
    assert!(sk(&server, &["group", "create", "s", "g", "--from", "-"])
        .status
        .success());
    assert!(sk(
        &server,
        &["consume", "s", "-g", "g", "-c", "old", "--count", "10", "--ack", "manual"]
    )
    .status
    .success());
    let preview = json_lines(&sk(
        &server,
        &[
            "group",
            "reset",
            "s",
            "g",
            "--to",
            "0",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(preview[0]["redelivered"], 10);
    // A relative time, as people type it; the answer says when that is.
    let o = sk(
        &server,
        &["group", "reset", "s", "g", "--to", "-1h", "--dry-run"],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        said.contains("10 entries will be delivered again"),
        "{said}"
    );
    assert!(said.contains("Z)"), "the target is shown as a time: {said}");
    assert!(
        cli(&server, &["XINFO", "GROUPS", "s"]).contains("entries-read\n10"),
        "a dry run changed nothing"
    );
    let ids: Vec<String> = cli(&server, &["XRANGE", "s", "-", "+"])
        .lines()
        .filter(|l| l.contains('-'))
        .map(str::to_string)
        .collect();
    let forward = json_lines(&sk(
        &server,
        &["group", "reset", "s", "g", "--to", &ids[19], "--json"],
    ));
    assert_eq!(forward[0]["skipped"], 10);
    // "old" goes quiet; "new" is active.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = sk(
        &server,
        &["consume", "s", "-g", "g", "-c", "new", "--count", "1"],
    );
    let got: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("json");
    assert_eq!(
        got["id"].as_str(),
        Some(ids[20].as_str()),
        "delivery resumes after the new ID"
    );

    // "old" holds 10 pending entries; removing it hands them to "new".
    let o = sk(
        &server,
        &[
            "group",
            "consumers",
            "s",
            "g",
            "--remove-idle",
            "200ms",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = json_lines(&o);
    assert_eq!(rows[0]["removed"], "old");
    assert_eq!(rows[0]["moved"], 10);
    assert_eq!(
        cli(&server, &["XPENDING", "s", "g"]).lines().next(),
        Some("10"),
        "no pending entry was dropped"
    );
    let pending_owner = cli(&server, &["XPENDING", "s", "g", "-", "+", "100"]);
    assert!(!pending_owner.contains("old") && pending_owner.contains("new"));
}

#[test]
fn dump_and_restore_round_trip_byte_for_byte() {
    let server = RedisServer::start().expect("redis");
    // Binary values and a repeated field name, written by redis-cli.
    let mut child = Command::new("redis-cli")
        .args(server.cli_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"XADD src * a \"\\xff\\x00\\x01\" a again\nXADD src * utf8 \"h\\xc3\\xa9\"\nXADD src * k v\n")
        .expect("write");
    child.wait().expect("wait");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("dump.jsonl");
    let o = sk(
        &server,
        &["dump", "src", "-o", file.to_str().expect("path")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = sk(
        &server,
        &[
            "restore",
            "dst",
            "-i",
            file.to_str().expect("path"),
            "--keep-ids",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raw = |key: &str| {
        Command::new("redis-cli")
            .args(server.cli_args())
            .args(["--no-raw", "XRANGE", key, "-", "+"])
            .output()
            .expect("redis-cli")
            .stdout
    };
    assert_eq!(raw("src"), raw("dst"), "restored stream differs");
    assert!(String::from_utf8_lossy(&raw("dst")).contains("\\xff\\x00\\x01"));
    // Restoring with IDs again onto the same stream is refused, nothing written.
    let o = sk(
        &server,
        &[
            "restore",
            "dst",
            "-i",
            file.to_str().expect("path"),
            "--keep-ids",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["XLEN", "dst"]), "3");
}

#[test]
fn restore_of_a_corrupt_file_writes_nothing() {
    let server = RedisServer::start().expect("redis");
    let input = b"{\"stream\":\"x\",\"id\":\"1-0\",\"fields\":{\"k\":\"v\"}}\n{\"fields\":{\"k\":{\"b64\":\"%%%\"}}}\n{\"k\":\"v\"}\n";
    let o = sk_stdin(&server, &["restore", "dst"], input);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(cli(&server, &["EXISTS", "dst"]), "0");
    let o = sk_stdin(&server, &["restore", "dst", "--skip-bad"], input);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("skipped"));
    assert_eq!(cli(&server, &["XLEN", "dst"]), "2");
}

#[test]
fn doctor_warns_about_a_server_without_aof_and_fails_on_a_replica() {
    let plain = RedisServer::start().expect("redis");
    // A warning: worth fixing, but a probe does not fail for ever on it.
    let o = sk(&plain, &["doctor", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let rows = json_lines(&o);
    let persistence = rows
        .iter()
        .find(|r| r["check"] == "persistence")
        .expect("persistence");
    assert_eq!(persistence["ok"], false);
    assert_eq!(persistence["level"], "warn");
    assert!(String::from_utf8_lossy(&sk(&plain, &["doctor"]).stdout).contains("WARN"));
    // A replica cannot take writes: a failure.
    let replica = RedisServer::start().expect("redis");
    let port = cli(&plain, &["CONFIG", "GET", "port"]);
    let port = port.lines().nth(1).unwrap_or("0").to_string();
    if port != "0" {
        cli(&replica, &["REPLICAOF", "127.0.0.1", &port]);
    } else {
        // A unix-socket-only server: any unreachable master makes a replica.
        cli(&replica, &["REPLICAOF", "127.0.0.1", "1"]);
    }
    let o = sk(&replica, &["doctor", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let role = json_lines(&o)
        .into_iter()
        .find(|r| r["check"] == "role")
        .expect("role");
    assert_eq!(role["level"], "fail", "{role}");
    let aof = RedisServer::start_with(ServerConfig {
        appendonly: true,
        ..Default::default()
    })
    .expect("redis");
    let o = sk(&aof, &["doctor"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn group_commands_create_list_and_destroy() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &["group", "create", "s", "g", "--from", "-", "--json"],
    );
    assert_eq!(
        stdout(&o).trim(),
        r#"{"stream":"s","group":"g","created":true}"#
    );
    let o = sk(&server, &["group", "create", "s", "g", "--json"]);
    assert_eq!(
        stdout(&o).trim(),
        r#"{"stream":"s","group":"g","created":false}"#
    );
    let o = sk(&server, &["group", "ls", "s", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["group"], "g");
    assert_eq!(v["pending"], 0);
    let o = sk(&server, &["group", "destroy", "s", "g"]);
    assert!(o.status.success());
    assert_eq!(cli(&server, &["XINFO", "GROUPS", "s"]), "");
}

#[test]
fn dlq_commands_list_replay_and_purge() {
    let server = RedisServer::start().expect("redis");
    assert!(sk(
        &server,
        &["produce", "s", "--field", "k={i}", "--count", "3", "-q"]
    )
    .status
    .success());
    let o = sk(
        &server,
        &[
            "consume",
            "s",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            "exit 3",
            "--max-deliveries",
            "1",
            "--retry-backoff",
            "100ms",
            "--idle-exit",
            "2s",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sk(&server, &["dlq", "ls", "s", "--json"]);
    let dead: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(dead.len(), 3);
    assert_eq!(dead[0]["stream"], "{s}:dlq");
    assert_eq!(dead[0]["fields"]["sk-group"], "g");
    // One failed attempt, the most --max-deliveries 1 allows.
    assert_eq!(dead[0]["fields"]["sk-deliveries"], "1");

    let first = dead[0]["id"].as_str().expect("id").to_string();
    let first_origin = dead[0]["fields"]["sk-origin-id"]
        .as_str()
        .expect("origin")
        .to_string();
    let o = sk(&server, &["dlq", "replay", "s", "--id", &first, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(v["dead_id"], first.as_str());
    assert_eq!(cli(&server, &["XLEN", "{s}:dlq"]), "2");
    // Replaying it again is an error: it is not there any more.
    assert_one_line_error(
        &sk(&server, &["dlq", "replay", "s", "--id", &first]),
        "no dead letter",
    );
    // The replayed entry is processed by the group that gave up on it,
    // under its own ID (it went back into the group's pending list).
    assert_eq!(v["id"], first_origin.as_str());
    let o = sk(&server, &["consume", "s", "-g", "g", "--count", "1"]);
    let got: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("json");
    assert_eq!(got["fields"]["k"], "0");
    assert_eq!(got["id"], first_origin.as_str());
    assert_eq!(got["fields"]["sk-retry-group"], serde_json::Value::Null);

    let o = sk(&server, &["dlq", "purge", "s", "--json"]);
    assert_eq!(stdout(&o).trim(), r#"{"stream":"s","purged":2}"#);
    assert_eq!(cli(&server, &["EXISTS", "{s}:dlq"]), "0");
}

#[test]
fn an_entry_waiting_for_a_retry_counts_as_outstanding_and_retry_ls_shows_it() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    let id = ok(&["produce", "jobs", "--field", "n=1"])
        .trim()
        .to_string();
    // Exit 75: retry later (the backoff: one hour).
    ok(&[
        "consume",
        "jobs",
        "-g",
        "g",
        "--create",
        "--from",
        "-",
        "--exec",
        "exit 75",
        "--retry-backoff",
        "1h",
        "--count",
        "1",
    ]);
    let stat = json_lines(&sk(&server, &["--json", "stat", "jobs"]));
    assert_eq!(stat[0]["outstanding"], 1, "{stat:?}");
    assert_eq!(stat[0]["undelivered"], 0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let stat = json_lines(&sk(&server, &["--json", "stat", "jobs"]));
    assert!(
        stat[0]["time_lag_ms"].as_u64().unwrap_or(0) >= 50,
        "{stat:?}"
    );
    // The lag check sees it: work is stuck, not done.
    let o = sk(&server, &["stat", "jobs", "--max-lag", "0"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // A probe of another service is not failed by g's stuck work; a probe
    // of a group the stream lacks fails; -q prints nothing.
    ok(&["group", "create", "jobs", "billing", "--from", "$"]);
    let o = sk(
        &server,
        &["-q", "stat", "jobs", "-g", "billing", "--max-lag", "0"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "-q silences the table");
    let o = sk(
        &server,
        &["stat", "jobs", "-g", "billing", "-g", "g", "--max-lag", "0"],
    );
    assert_eq!(o.status.code(), Some(1));
    let rows = json_lines(&sk(&server, &["--json", "stat", "jobs", "--max-lag", "0"]));
    let verdict = |g: &str| {
        rows.iter()
            .find(|r| r["group"] == g)
            .map(|r| r["check"].clone())
    };
    assert_eq!(verdict("g"), Some("fail".into()), "{rows:?}");
    assert_eq!(verdict("billing"), Some("pass".into()), "{rows:?}");
    let rows = json_lines(&sk(
        &server,
        &["--json", "stat", "jobs", "-g", "nope", "--max-lag", "5"],
    ));
    assert!(
        rows.iter().all(|r| r["check"] == "fail"),
        "a missing group passes nothing: {rows:?}"
    );
    // retry ls of what is not there is an error, not "nothing waits".
    assert_eq!(
        sk(&server, &["retry", "ls", "nothing"]).status.code(),
        Some(2)
    );
    assert_eq!(
        sk(&server, &["retry", "ls", "jobs", "-g", "nope"])
            .status
            .code(),
        Some(2)
    );
    // Removing idle consumers spares sk-retry (idle by design) and succeeds.
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(&["group", "consumers", "jobs", "g", "--remove-idle", "10ms"]);
    assert!(cli(&server, &["XINFO", "CONSUMERS", "jobs", "g"]).contains("sk-retry"));
    let o = sk(&server, &["stat", "jobs", "-g", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("has no group nope"));
    let parked = json_lines(&sk(&server, &["--json", "retry", "ls", "jobs"]));
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0]["id"], id.as_str());
    assert_eq!(parked[0]["group"], "g");
    assert_eq!(parked[0]["attempts"], 1);
    assert!(
        parked[0]["due_ms"].as_u64().unwrap_or(0)
            > id.split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .unwrap_or(u64::MAX)
    );
    // Looking took nothing; the reserved consumer name is refused.
    assert_eq!(
        json_lines(&sk(&server, &["--json", "retry", "ls", "jobs"])).len(),
        1
    );
    let o = sk(
        &server,
        &[
            "consume", "jobs", "-g", "g", "-c", "sk-retry", "--count", "1",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("reserved"));
}

#[test]
fn janitor_all_cleans_every_stream_with_a_group_and_refuses_caps() {
    let server = RedisServer::start().expect("redis");
    for s in ["a", "b", "loose"] {
        assert!(sk(
            &server,
            &["produce", s, "--field", "n={i}", "--count", "4", "-q"]
        )
        .status
        .success());
    }
    for s in ["a", "b"] {
        assert!(sk(
            &server,
            &["consume", s, "-g", "g", "--create", "--from", "-", "--count", "4"]
        )
        .status
        .success());
    }
    let rows = json_lines(&sk(&server, &["--json", "janitor", "--all", "--once"]));
    let mut cleaned: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["stream"].as_str().unwrap_or("").to_string(),
                r["trimmed"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    cleaned.sort();
    assert_eq!(cleaned, vec![("a".into(), 4), ("b".into(), 4)], "{rows:?}");
    assert_eq!(
        cli(&server, &["XLEN", "loose"]),
        "4",
        "a stream without a group is left alone"
    );
    let o = sk(
        &server,
        &["janitor", "--all", "--max-len", "1", "--archive", "/tmp/x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(cli(&server, &["XLEN", "loose"]), "4");
}

#[test]
fn janitor_lines_escape_control_characters_in_names() {
    let server = RedisServer::start().expect("redis");
    // A stream and a group whose names carry a CR and a newline.
    cli(&server, &["XADD", "odd\r\nname", "*", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "odd\r\nname", "g\rx", "0"]);
    let o = sk(&server, &["janitor", "--all", "--once"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!out.contains('\r'), "a raw CR in {out:?}");
    assert_eq!(out.trim_end().lines().count(), 1, "{out:?}");
    assert!(out.contains(r"odd\r\nname"), "{out:?}");
    assert!(out.contains(r"g\rx"), "{out:?}");
}
