//! What commands print: non-UTF-8 names escaped, one naming for JSON fields
//! everywhere, one entry on one line, paging in order, `tail`'s last
//! entries and ranges.

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, json_lines, refused, sk, stderr, stdout};

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("client")
        .get_connection()
        .expect("connection")
}

#[test]
fn stat_shows_non_utf8_names_escaped() {
    let server = RedisServer::start().expect("redis");
    let mut conn = raw(&server);
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("*")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .expect("xadd");
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("s")
        .arg(&b"g\xff"[..])
        .arg("0")
        .query(&mut conn)
        .expect("group");
    let _: String = redis::cmd("XADD")
        .arg(&b"bad\xfekey"[..])
        .arg("*")
        .arg("k")
        .arg("v")
        .query(&mut conn)
        .expect("xadd");
    let o = sk(&server, &["stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("g\\xff"), "{text}");
    let o = sk(&server, &["--json", "stat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert!(rows.iter().any(|r| r["group"] == "g\\xff"), "{rows:?}");
    assert!(
        rows.iter().any(|r| r["stream"] == "bad\\xfekey") || stderr(&o).contains("bad\\xfekey"),
        "the non-UTF-8 stream is named: {rows:?} {}",
        stderr(&o)
    );
}

#[test]
fn json_output_names_things_the_same_everywhere() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "s", "1-1", "k", "v"]);
    cli(&server, &["XGROUP", "CREATE", "s", "g", "0"]);
    let o = sk(&server, &["--json", "group", "ls", "s"]);
    let rows = json_lines(&o);
    assert_eq!(rows[0]["group"], "g", "{rows:?}");
    assert!(rows[0].get("name").is_none(), "{rows:?}");
    let o = sk(
        &server,
        &[
            "--json",
            "group",
            "reset",
            "s",
            "g",
            "--to",
            "0-0",
            "--dry-run",
        ],
    );
    let rows = json_lines(&o);
    assert_eq!(rows[0]["stream"], "s", "{rows:?}");
    assert_eq!(rows[0]["group"], "g", "{rows:?}");
    let o = sk(
        &server,
        &["schedule", "add", "hb", "--every", "1s", "--to", "t"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for (args, key, value) in [
        (&["--json", "schedule", "pause", "hb"][..], "paused", true),
        (&["--json", "schedule", "resume", "hb"][..], "paused", false),
        (&["--json", "schedule", "rm", "hb"][..], "removed", true),
    ] {
        let o = sk(&server, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let rows = json_lines(&o);
        assert_eq!(rows[0]["name"], "hb", "{args:?}");
        assert_eq!(rows[0][key], value, "{args:?}");
    }
    refused(
        &sk(
            &server,
            &[
                "schedule",
                "add",
                "x",
                "--every",
                "1s",
                "--tz",
                "Europe/Berlin",
                "--to",
                "t",
            ],
        ),
        "--tz",
    );
    assert_eq!(cli(&server, &["HLEN", "{streamkeeper}:schedules"]), "0");
}

#[test]
fn human_tail_keeps_one_entry_on_one_line() {
    let server = RedisServer::start().expect("redis");
    let mut conn = raw(&server);
    let _: String = redis::cmd("XADD")
        .arg("s")
        .arg("1-1")
        .arg("text")
        .arg("two\nlines\0nul")
        .arg("bin")
        .arg(&b"\xff"[..])
        .query(&mut conn)
        .expect("xadd");
    let o = sk(&server, &["tail", "s"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(out.contains("text=two\\nlines\\x00nul"), "{out:?}");
    assert!(out.contains("bin=\\xff"), "{out:?}");
}

#[test]
fn tail_count_pages_through_more_than_one_page_in_order() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &["-q", "produce", "s", "--field", "n={i}", "--count", "2500"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = sk(&server, &["--json", "tail", "s", "--count", "2100"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = json_lines(&o);
    assert_eq!(rows.len(), 2100);
    assert_eq!(rows[0]["fields"]["n"], "400");
    assert_eq!(rows[2099]["fields"]["n"], "2499");
    let o = sk(&server, &["--json", "tail", "s", "--count", "5000"]);
    assert_eq!(json_lines(&o).len(), 2500);
    let o = sk(&server, &["--json", "tail", "empty", "--count", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn tail_prints_last_entries_and_ranges() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &["produce", "s", "--field", "n={i}", "--count", "20"],
    );
    let ids: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    let o = sk(&server, &["tail", "s", "--count", "3", "--json"]);
    let got: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(got, ids[17..].to_vec());
    let o = sk(&server, &["tail", "s", "--from", &ids[5], "--count", "2"]);
    assert_eq!(stdout(&o), format!("{}  n=5\n{}  n=6\n", ids[5], ids[6]));
}
