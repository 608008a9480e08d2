//! Every command takes a `redis+sentinel://…/<master>` URL.

mod common;

use streamkeeper_testkit::SentinelTopology;

#[test]
fn every_command_works_through_sentinel() {
    let topo = SentinelTopology::start().expect("sentinel topology");
    let url = topo.url();
    let ok = |args: &[&str]| common::ok_url(&url, args);
    ok(&["produce", "s", "--field", "n={i}", "--count", "5", "-q"]);
    assert_eq!(ok(&["tail", "s", "--json"]).lines().count(), 5);
    ok(&["group", "create", "s", "g", "--from", "-"]);
    assert_eq!(
        ok(&["consume", "s", "-g", "g", "--count", "5"])
            .lines()
            .count(),
        5
    );
    let stat: serde_json::Value =
        serde_json::from_str(ok(&["stat", "s", "--json"]).trim()).expect("json");
    assert_eq!(stat["outstanding"], 0);
    assert!(ok(&["janitor", "s", "--once", "--json"]).contains("\"trimmed\":5"));
    ok(&["dlq", "ls", "s"]);
    ok(&["schedule", "add", "hb", "--every", "1s", "--to", "ticks"]);
    assert!(ok(&["schedule", "ls"]).contains("hb"));
    let dump = ok(&["dump", "s"]);
    assert_eq!(
        dump.lines().count(),
        0,
        "the janitor trimmed everything acknowledged"
    );
    // Read through the URL, the master is the one the sentinels name.
    let master = topo.master().expect("master");
    assert_eq!(master.cli(&["XLEN", "s"]).expect("cli").trim(), "0");
    assert_eq!(
        master
            .cli(&["HLEN", "{streamkeeper}:schedules"])
            .expect("cli")
            .trim(),
        "1"
    );
}
