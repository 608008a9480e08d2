//! `--metrics ADDR` (docs/cli.md "Observability"): each long-running
//! command serves its own Prometheus `/metrics`, scraped here with a plain
//! HTTP GET over loopback while the real binary runs against a real
//! redis-server, and checked series by series.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::Duration;

use streamkeeper_testkit::{eventually_blocking, RedisServer};

mod common;

use common::{assert_one_line_error, cli, command, sk_at};

/// A spawned binary, killed when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `streamkeeper <args> --metrics 127.0.0.1:<free port>`, running; its address.
fn spawn_with_metrics(server: &RedisServer, args: &[&str]) -> (Running, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut all = args.to_vec();
    all.extend(["--metrics", &addr]);
    let child = command(server, &all)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn streamkeeper");
    (Running(child), addr)
}

/// The body of `GET /metrics`, or `None` while nothing answers with 200.
fn scrape(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The value of the series written exactly as `series` (name and labels).
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Scrapes until `done` holds for a scrape (10 s at most); that scrape.
fn scrape_until(addr: &str, done: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = eventually_blocking(Duration::from_secs(10), || match scrape(addr) {
        Some(s) => {
            let hit = done(&s);
            last = s;
            hit
        }
        None => false,
    });
    assert!(ok, "condition never held; last scrape:\n{last}");
    last
}

#[test]
fn consume_metrics_count_every_settled_run_by_outcome() {
    let server = RedisServer::start().expect("redis");
    sk_at(
        &server.url(),
        &["produce", "jobs", "--field", "n={i}", "--count", "5", "-q"],
    )
    .ok();
    // Entry n=3 fails every time: two failed runs, and the third, at the
    // limit, is dead-lettered; the other four are acked on their first run.
    let (_consumer, addr) = spawn_with_metrics(
        &server,
        &[
            "consume",
            "jobs",
            "-g",
            "g",
            "--create",
            "--from",
            "-",
            "--exec",
            r#"grep -q '"n":"3"' && exit 1; exit 0"#,
            "--max-deliveries",
            "3",
            "--retry-backoff",
            "50ms",
        ],
    );
    let handled = |o: &str| {
        format!(r#"streamkeeper_entries_handled_total{{stream="jobs",group="g",outcome="{o}"}}"#)
    };
    let s = scrape_until(&addr, |s| {
        value(s, &handled("ack")) == Some(4.0) && value(s, &handled("dead_letter")) == Some(1.0)
    });
    assert_eq!(value(&s, &handled("failed")), Some(2.0), "{s}");
    assert_eq!(value(&s, &handled("retry")), Some(0.0), "{s}");
    let labels = r#"{stream="jobs",group="g"}"#;
    assert_eq!(
        value(&s, &format!("streamkeeper_handler_seconds_count{labels}")),
        Some(7.0),
        "every run timed: {s}"
    );
    assert_eq!(
        value(
            &s,
            r#"streamkeeper_handler_seconds_bucket{stream="jobs",group="g",le="+Inf"}"#
        ),
        Some(7.0),
        "a histogram, not a summary: {s}"
    );
    assert_eq!(
        value(&s, &format!("streamkeeper_in_flight{labels}")),
        Some(0.0)
    );
    assert_eq!(
        value(&s, &format!("streamkeeper_reclaimed_total{labels}")),
        Some(0.0)
    );
    for family in [
        "streamkeeper_entries_handled_total counter",
        "streamkeeper_handler_seconds histogram",
        "streamkeeper_in_flight gauge",
        "streamkeeper_reclaimed_total counter",
    ] {
        let name = family.split(' ').next().unwrap_or_default();
        assert!(
            s.contains(&format!("# TYPE {family}\n")),
            "no TYPE of {family}: {s}"
        );
        assert!(
            s.contains(&format!("# HELP {name} ")),
            "no HELP of {name}: {s}"
        );
    }
    // One family each: no unlabelled reclaimed series beside the labelled one.
    assert!(
        !s.lines()
            .any(|l| l.starts_with("streamkeeper_reclaimed_total ")),
        "{s}"
    );
    assert_eq!(cli(&server, &["XLEN", "{jobs}:dlq"]), "1");
}

#[test]
fn schedule_run_metrics_count_the_ticks_of_each_schedule() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    sk_at(
        &url,
        &[
            "schedule", "add", "beat", "--every", "100ms", "--to", "ticks",
        ],
    )
    .ok();
    let (_instance, addr) = spawn_with_metrics(&server, &["schedule", "run"]);
    let ticks = r#"streamkeeper_ticks_emitted_total{schedule="beat"}"#;
    scrape_until(&addr, |s| value(s, ticks).is_some_and(|n| n >= 3.0));
    // Paused, the count stops where the stream is: one per tick appended.
    sk_at(&url, &["schedule", "pause", "beat"]).ok();
    let s = scrape_until(&addr, |s| {
        value(s, ticks).map(|n| n.to_string()) == Some(cli(&server, &["XLEN", "ticks"]))
    });
    assert_eq!(
        value(
            &s,
            r#"streamkeeper_tick_lateness_seconds_count{schedule="beat"}"#
        ),
        value(&s, ticks),
        "one lateness sample per tick: {s}"
    );
    assert!(
        s.contains("# TYPE streamkeeper_tick_lateness_seconds histogram\n"),
        "{s}"
    );
}

#[test]
fn janitor_metrics_report_what_it_trimmed() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    sk_at(
        &url,
        &["produce", "s", "--field", "n={i}", "--count", "10", "-q"],
    )
    .ok();
    sk_at(&url, &["group", "create", "s", "g", "--from", "-"]).ok();
    sk_at(&url, &["consume", "s", "-g", "g", "--count", "6"]).ok();
    let (_janitor, addr) = spawn_with_metrics(&server, &["janitor", "s", "--interval", "100ms"]);
    let s = scrape_until(&addr, |s| {
        value(s, r#"streamkeeper_trimmed_total{stream="s"}"#).is_some()
    });
    assert_eq!(
        value(&s, r#"streamkeeper_trimmed_total{stream="s"}"#),
        Some(6.0),
        "{s}"
    );
    assert_eq!(cli(&server, &["XLEN", "s"]), "4");
    assert!(
        !s.contains("streamkeeper_janitor_trimmed_total"),
        "the old name is gone: {s}"
    );
}

#[test]
fn a_bad_metrics_address_is_refused_in_one_line() {
    let server = RedisServer::start().expect("redis");
    let o = command(
        &server,
        &["consume", "s", "-g", "g", "--metrics", "not-an-address"],
    )
    .output()
    .expect("run");
    assert_one_line_error(&o, "--metrics");
    // An address already taken: refused before the command starts.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let o = command(&server, &["janitor", "s", "--metrics", &addr])
        .output()
        .expect("run");
    assert_one_line_error(&o, "cannot listen");
    // serve's process metrics on the dashboard's own address: one line.
    let port = streamkeeper_testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let o = command(&server, &["serve", "--listen", &addr, "--metrics", &addr])
        .output()
        .expect("run");
    assert_one_line_error(&o, "--listen");
}

/// A label value as a Prometheus text parser reads it: only `\\`, `\"`
/// and `\n` are escapes, and a raw control character is refused.
fn parse_label_value(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                _ => return None,
            },
            c if c.is_control() => return None,
            c => out.push(c),
        }
    }
    None
}

#[test]
fn odd_stream_names_still_give_a_scrape_that_parses() {
    let server = RedisServer::start().expect("redis");
    let name = "we\"ird\\na\rme";
    sk_at(&server.url(), &["produce", name, "--field", "k=v", "-q"]).ok();
    let (_consumer, addr) = spawn_with_metrics(
        &server,
        &[
            "consume", name, "-g", "g", "--create", "--from", "-", "--exec", "true",
        ],
    );
    let s = scrape_until(&addr, |s| {
        s.lines()
            .any(|l| l.starts_with("streamkeeper_entries_handled_total{") && l.ends_with(" 1"))
    });
    let mut streams = Vec::new();
    for line in s.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let Some((_, mut rest)) = line.split_once('{') else {
            continue;
        };
        loop {
            let (key, after) = rest.split_once("=\"").expect("a label");
            let (v, after) =
                parse_label_value(after).unwrap_or_else(|| panic!("bad label in {line:?}"));
            if key == "stream" {
                streams.push(v);
            }
            match after.strip_prefix(',') {
                Some(more) => rest = more,
                None => {
                    assert!(after.starts_with("} "), "{line:?}");
                    break;
                }
            }
        }
    }
    assert!(!streams.is_empty(), "{s}");
    // The label is the name's escaped display: quote as is, a backslash
    // shown doubled (the exporter passes `\\` through), CR as `\r`.
    for v in streams {
        assert_eq!(v, "we\"ird\\na\\rme", "{s}");
    }
}

#[test]
fn serve_metrics_are_the_process_own_beside_the_dashboard_metrics() {
    let server = RedisServer::start().expect("redis");
    sk_at(&server.url(), &["produce", "s", "--field", "k=v", "-q"]).ok();
    let dashboard = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let (_serve, addr) = spawn_with_metrics(&server, &["serve", "--listen", &dashboard]);
    // The process's own: the library's described counters, no stream state.
    let own = scrape_until(&addr, |s| {
        s.contains("# TYPE streamkeeper_reconnects_total counter")
    });
    assert!(!own.contains("streamkeeper_stream_length"), "{own}");
    // The dashboard's `/metrics` still reads the streams from Redis.
    let state = scrape_until(&dashboard, |s| {
        s.contains(r#"streamkeeper_stream_length{stream="s"} 1"#)
    });
    assert!(
        state.contains("# TYPE streamkeeper_reconnects_total counter"),
        "{state}"
    );
}
