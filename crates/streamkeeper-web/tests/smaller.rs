//! Odd names, odd schedules and orphaned dead letters against a real
//! redis-server: `/metrics` parses line by line whatever the names hold,
//! names are addressed by their raw bytes (`key=`, `"key"`) and a name
//! that is not UTF-8 is refused instead of mapped onto another, one broken
//! group or schedule does not fail a whole tab, and dead letters outlive
//! their stream.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use streamkeeper::{Connector, ConnectorOptions};
use streamkeeper_testkit::RedisServer;
use streamkeeper_web::{app, key_of, AppState, Config, CSRF_HEADER};
use tower::ServiceExt;

const NOT_UTF8: &str =
    "this name is not UTF-8; streamkeeper cannot address it: rename it with redis-cli RENAME";

async fn setup(config: Config) -> (RedisServer, Connector, AppState, Router) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect_with(
        &server.url(),
        ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let state = AppState::new(redis.clone(), config);
    let router = app(state.clone());
    (server, redis, state, router)
}

fn actions() -> Config {
    Config {
        allow_actions: true,
        ..Default::default()
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let r = app.clone().oneshot(req).await.expect("response");
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("req");
    send(app, req).await
}

async fn get_json(app: &Router, path: &str) -> Value {
    let (s, b) = get(app, path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    serde_json::from_str(&b).expect("json")
}

async fn act(app: &Router, state: &AppState, action: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method("POST")
        .uri(format!("/api/actions/{action}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(CSRF_HEADER, state.csrf())
        .body(Body::from(body.to_string()))
        .expect("req");
    let (s, b) = send(app, req).await;
    (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
}

async fn conn(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn")
}

/// `XADD key * k v` with a raw key; the new ID.
async fn xadd(c: &mut redis::aio::MultiplexedConnection, key: &[u8]) -> String {
    redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("k")
        .arg("v")
        .query_async(c)
        .await
        .expect("xadd")
}

/// `XGROUP CREATE key group $` with raw names.
async fn group_at_end(c: &mut redis::aio::MultiplexedConnection, key: &[u8], group: &[u8]) {
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("$")
        .query_async::<()>(c)
        .await
        .expect("group");
}

/// The last-delivered ID of `group` on `key` (`XINFO GROUPS`).
async fn last_delivered(
    c: &mut redis::aio::MultiplexedConnection,
    key: &[u8],
    group: &str,
) -> String {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(c)
        .await
        .expect("xinfo");
    let g = groups
        .iter()
        .find(
            |g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()),
        )
        .expect("group");
    redis::from_redis_value(g["last-delivered-id"].clone()).expect("id")
}

/// A parsed scrape: (metric name, decoded labels) → value.
type Scrape = HashMap<(String, Vec<(String, String)>), f64>;

/// A label value as the text format allows it: `\\`, `\"`, `\n` escapes,
/// no raw control character; returns the rest after the closing quote.
fn label_value(s: &str) -> (String, &str) {
    let mut out = String::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return (out, &s[i + 1..]),
            '\\' => match it.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => panic!("invalid escape {other:?} in {s:?}"),
            },
            c if c.is_control() => panic!("raw control character {c:?} in a label: {s:?}"),
            c => out.push(c),
        }
    }
    panic!("unterminated label value: {s:?}")
}

/// Parses a scrape strictly, line by line: comments are HELP or TYPE, a
/// series is `name{label="value",…} number` with a HELP and TYPE for its
/// family, and no series appears twice. Keys: name and decoded labels.
fn parse_scrape(text: &str) -> Scrape {
    let mut out = HashMap::new();
    let (mut help, mut kind) = (Vec::new(), Vec::new());
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap_or_default().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind.push(rest.split(' ').next().unwrap_or_default().to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment: {line:?}");
        let end = line.find(['{', ' ']).expect("name");
        let name = &line[..end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        assert!(help.iter().any(|h| h == name), "no HELP for {name}");
        assert!(kind.iter().any(|h| h == name), "no TYPE for {name}");
        let mut rest = &line[end..];
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            rest = r;
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let (l, r) = rest.split_once("=\"").expect("label");
                let (v, r) = label_value(r);
                labels.push((l.to_string(), v));
                rest = r.strip_prefix(',').unwrap_or(r);
            }
        }
        let value = rest.strip_prefix(' ').expect("space before the value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let key = (name.to_string(), labels);
        assert!(out.insert(key, value).is_none(), "a series twice: {line:?}");
    }
    out
}

fn series<'a>(scrape: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    scrape.get(&(name.to_string(), labels))
}

#[tokio::test]
async fn metrics_escape_control_characters_quotes_and_backslashes_in_names() {
    let (server, _, _, app) = setup(Config::default()).await;
    let mut c = conn(&server).await;
    let names: [&[u8]; 4] = [b"a\rb", b"x\"y\\z\n", br"a\rb", b"t\tu\x1bv"];
    for n in names {
        xadd(&mut c, n).await;
        group_at_end(&mut c, n, b"g\r1").await;
        group_at_end(&mut c, n, b"plain").await;
        xadd(&mut c, n).await;
    }
    let (status, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let scrape = parse_scrape(&text);
    // Each stream has its series once, under a label of its own (the
    // display text with backslashes doubled, control characters spelled).
    let labels = [r"a\rb", "x\"y\\\\z\n", r"a\\rb", r"t\tu\u{1b}v"];
    for l in labels {
        assert_eq!(
            series(&scrape, "streamkeeper_stream_length", &[("stream", l)]),
            Some(&2.0),
            "{l:?} in\n{text}"
        );
        for g in [r"g\r1", "plain"] {
            assert_eq!(
                series(
                    &scrape,
                    "streamkeeper_group_undelivered",
                    &[("stream", l), ("group", g)]
                ),
                Some(&1.0),
                "{l:?}/{g:?} in\n{text}"
            );
        }
    }
    let lengths = scrape
        .keys()
        .filter(|(n, _)| n == "streamkeeper_stream_length")
        .count();
    assert_eq!(lengths, names.len(), "{text}");
}

#[tokio::test]
async fn a_key_addresses_raw_bytes_and_a_name_that_is_not_utf8_is_refused() {
    let (server, _, state, app) = setup(actions()).await;
    let mut c = conn(&server).await;
    // The ASCII text `a\xffb` and the bytes a, 0xff, b: two streams.
    let ascii: &[u8] = br"a\xffb";
    let odd: &[u8] = b"a\xffb";
    for key in [ascii, odd] {
        xadd(&mut c, key).await;
        group_at_end(&mut c, key, b"g").await;
    }
    let before = last_delivered(&mut c, ascii, "g").await;
    assert_ne!(before, "0-0");

    // By the key of the one that is not UTF-8: refused, nothing changed.
    let (status, body) = act(
        &app,
        &state,
        "group-reset",
        json!({"key": key_of(odd), "group": "g", "to": "0", "dry_run": false}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], NOT_UTF8);
    assert_eq!(last_delivered(&mut c, ascii, "g").await, before);
    for path in ["/api/groups", "/api/stream", "/api/dlq", "/api/janitor"] {
        let (status, body) = get(&app, &format!("{path}?key={}&stream=x", key_of(odd))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body.contains("not UTF-8"), "{path}: {body}");
    }
    let (status, _) = get(&app, "/api/groups?key=%25%25").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // A purge by the odd key, with the ASCII name as "stream": refused,
    // and the ASCII stream's dead letters are still there.
    for n in 0..2 {
        redis::cmd("XADD")
            .arg(br"{a\xffb}:dlq")
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async::<String>(&mut c)
            .await
            .expect("xadd");
    }
    for action in ["dlq-purge", "dlq-replay"] {
        let (status, body) = act(
            &app,
            &state,
            action,
            json!({"stream": r"a\xffb", "key": key_of(odd), "all": true}),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action}: {body}");
    }
    let letters: u64 = redis::cmd("XLEN")
        .arg(br"{a\xffb}:dlq")
        .query_async(&mut c)
        .await
        .expect("xlen");
    assert_eq!(letters, 2, "the other stream's dead letters were touched");

    // By the ASCII one's key (which wins over a "stream" field): done.
    let (status, body) = act(
        &app,
        &state,
        "group-reset",
        json!({"key": key_of(ascii), "stream": "elsewhere", "gkey": key_of(b"g"), "to": "0", "dry_run": false}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(last_delivered(&mut c, ascii, "g").await, "0-0");
    let groups = get_json(&app, &format!("/api/groups?key={}", key_of(ascii))).await;
    assert_eq!(groups["stream"], r"a\xffb", "{groups}");
    assert_eq!(groups["groups"][0]["last_delivered"], "0-0", "{groups}");
    let page = get_json(&app, &format!("/api/stream?key={}", key_of(ascii))).await;
    assert_eq!(page["key"], key_of(ascii), "{page}");
    assert_eq!(page["length"], 1, "{page}");

    // The two streams are two rows and two series, never one.
    let o = get_json(&app, "/api/overview").await;
    let mut shown: Vec<&str> = o["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    shown.sort();
    assert_eq!(shown, [r"a\\xffb", r"a\xffb"], "{o}");
    let (status, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let scrape = parse_scrape(&text);
    let up: Vec<_> = scrape
        .iter()
        .filter(|((n, _), _)| n == "streamkeeper_stream_up")
        .collect();
    assert_eq!(up.len(), 2, "{text}");
    assert_eq!(
        series(&scrape, "streamkeeper_stream_up", &[("stream", r"a\\xffb")]),
        Some(&1.0),
        "{text}"
    );
    assert_eq!(
        series(&scrape, "streamkeeper_stream_up", &[("stream", r"a\xffb")]),
        Some(&0.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_group_name_that_is_not_utf8_is_a_row_not_a_failed_tab() {
    let (server, _, _, app) = setup(Config::default()).await;
    let mut c = conn(&server).await;
    xadd(&mut c, b"orders").await;
    group_at_end(&mut c, b"orders", b"billing").await;
    xadd(&mut c, b"orders").await;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orders")
        .arg(b"grp\xfe".as_slice())
        .arg("0")
        .query_async::<()>(&mut c)
        .await
        .expect("group");
    // It holds one entry pending (delivered, not acknowledged).
    redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(b"grp\xfe".as_slice())
        .arg("c1")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg("orders")
        .arg(">")
        .query_async::<redis::Value>(&mut c)
        .await
        .expect("read");
    redis::cmd("XADD")
        .arg("{orders}:dlq")
        .arg("*")
        .arg("sk-group")
        .arg(b"grp\xfe".as_slice())
        .arg("k")
        .arg("v")
        .query_async::<String>(&mut c)
        .await
        .expect("xadd");

    let j = get_json(&app, "/api/janitor?stream=orders").await;
    let groups = j["groups"].as_array().expect("groups");
    assert!(
        groups.iter().any(|g| g["group"] == "billing"),
        "billing missing: {j}"
    );
    assert!(
        groups
            .iter()
            .any(|g| g["group"] == r"grp\xfe" && g["gkey"] == key_of(b"grp\xfe")),
        "the odd group is neither a row nor a note: {j}"
    );
    let g = get_json(&app, "/api/groups?stream=orders").await;
    assert_eq!(g["groups"].as_array().map(Vec::len), Some(2), "{g}");
    let d = get_json(&app, "/api/dlq?stream=orders").await;
    assert_eq!(d["total"], 1, "{d}");
}

#[tokio::test]
async fn dead_letters_of_a_deleted_stream_are_listed_replayed_and_purged() {
    let (server, _, state, app) = setup(actions()).await;
    let mut c = conn(&server).await;
    for _ in 0..2 {
        redis::cmd("XADD")
            .arg("{gone}:dlq")
            .arg("*")
            .arg("sk-group")
            .arg("billing")
            .arg("sk-origin-id")
            .arg("1-0")
            .arg("k")
            .arg("v")
            .query_async::<String>(&mut c)
            .await
            .expect("xadd");
    }
    let d = get_json(&app, "/api/dlq?stream=gone").await;
    assert_eq!(d["total"], 2, "{d}");
    assert_eq!(d["letters"].as_array().map(Vec::len), Some(2), "{d}");
    let by_key = get_json(&app, &format!("/api/dlq?key={}", key_of(b"gone"))).await;
    assert_eq!(by_key["total"], 2, "{by_key}");
    let id = d["letters"][0]["id"].as_str().expect("id").to_string();

    // Replaying into a stream that is gone reaches nobody: refused, kept.
    let (status, body) = act(
        &app,
        &state,
        "dlq-replay",
        json!({"key": key_of(b"gone"), "ids": [id]}),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    let len: u64 = redis::cmd("XLEN")
        .arg("{gone}:dlq")
        .query_async(&mut c)
        .await
        .expect("xlen");
    assert_eq!(len, 2);
    let exists: u64 = redis::cmd("EXISTS")
        .arg("gone")
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(exists, 0, "a replay must not create the deleted stream");

    let (status, body) = act(&app, &state, "dlq-purge", json!({"stream": "gone"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["purged"], 2, "{body}");
    let len: u64 = redis::cmd("XLEN")
        .arg("{gone}:dlq")
        .query_async(&mut c)
        .await
        .expect("xlen");
    assert_eq!(len, 0);
}

#[tokio::test]
async fn a_bad_schedule_is_a_row_with_an_error_and_an_overdue_one_says_by_how_much() {
    use streamkeeper::scheduler::{Schedule, Scheduler};
    let (server, redis, _, app) = setup(Config::default()).await;
    let scheduler = Scheduler::new(&redis, "streamkeeper");
    let good =
        Schedule::every("good", std::time::Duration::from_secs(60), "ticks").expect("schedule");
    scheduler.add(&good).await.expect("add");
    let later =
        Schedule::every("later", std::time::Duration::from_secs(60), "ticks").expect("schedule");
    scheduler.add(&later).await.expect("add");
    let keys = streamkeeper::keys::SchedulerKeys::new("streamkeeper");
    let mut c = conn(&server).await;
    // "good" fell due 5 s ago and nothing ran it.
    let now = streamkeeper::retry::now_ms();
    redis::cmd("ZADD")
        .arg(&keys.due)
        .arg(now - 5_000)
        .arg("good")
        .query_async::<()>(&mut c)
        .await
        .expect("zadd");
    // Three definitions written by hand, each wrong in its own way.
    let mut cron = serde_json::to_value(&good).expect("json");
    cron["name"] = json!("badcron");
    cron["spec"] = json!({"cron": {"expr": "every tuesday-ish", "tz": "UTC"}});
    let mut negative = serde_json::to_value(&good).expect("json");
    negative["name"] = json!("negative");
    negative["spec"] = json!({"every_ms": -5});
    redis::cmd("HSET")
        .arg(&keys.schedules)
        .arg(b"odd\xffname".as_slice())
        .arg("not json")
        .query_async::<()>(&mut c)
        .await
        .expect("hset");
    for (name, def) in [
        ("badcron", cron.to_string()),
        ("notjson", "{oops".to_string()),
        ("missing", json!({"name": "missing"}).to_string()),
        ("negative", negative.to_string()),
    ] {
        redis::cmd("HSET")
            .arg(&keys.schedules)
            .arg(name)
            .arg(def)
            .query_async::<()>(&mut c)
            .await
            .expect("hset");
    }

    let j = get_json(&app, "/api/schedules").await;
    let rows = j["schedules"].as_array().expect("schedules");
    let row = |n: &str| {
        rows.iter()
            .find(|r| r["name"] == n)
            .unwrap_or_else(|| panic!("no row {n}: {j}"))
    };
    assert_eq!(rows.len(), 7, "{j}");
    for bad in ["badcron", "notjson", "missing", "negative", r"odd\xffname"] {
        let e = row(bad)["error"].as_str().unwrap_or_default();
        assert!(!e.is_empty(), "{bad} has no error: {j}");
    }
    assert!(
        row("badcron")["error"]
            .as_str()
            .is_some_and(|e| e.contains("every tuesday-ish")),
        "{j}"
    );
    assert!(
        row("missing")["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing field")),
        "{j}"
    );
    assert_eq!(row("good")["error"], Value::Null, "{j}");
    assert_eq!(row("good")["every_ms"], 60_000, "{j}");
    let overdue = row("good")["overdue_ms"].as_u64().expect("overdue_ms");
    assert!((5_000..60_000).contains(&overdue), "{j}");
    assert_eq!(row("later")["overdue_ms"], Value::Null, "{j}");
    assert!(
        row("later")["next_due_ms"].as_u64() > j["now_ms"].as_u64(),
        "{j}"
    );
}

/// 1 MB entries: a stream page, the dead letters and an entry's detail
/// read and send a bounded number of bytes, and say what they cut.
#[tokio::test]
async fn lists_and_the_entry_detail_are_bounded_in_bytes() {
    let (server, _, _, app) = setup(Config::default()).await;
    let mut c = conn(&server).await;
    let big = vec![b'x'; 1 << 20];
    let mut last = String::new();
    for _ in 0..30 {
        last = redis::cmd("XADD")
            .arg("big")
            .arg("*")
            .arg("blob")
            .arg(&big)
            .query_async(&mut c)
            .await
            .expect("xadd");
        redis::cmd("XADD")
            .arg("{big}:dlq")
            .arg("*")
            .arg("sk-reason")
            .arg(&big)
            .arg("blob")
            .arg(&big)
            .query_async::<String>(&mut c)
            .await
            .expect("xadd dlq");
    }
    let (status, body) = get(&app, "/api/stream?stream=big&count=500").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.len() < 1 << 20,
        "a page of 1 MB entries is {} bytes",
        body.len()
    );
    let page: Value = serde_json::from_str(&body).expect("json");
    let shown = page["entries"].as_array().map_or(0, Vec::len);
    assert!((1..30).contains(&shown), "{shown} entries read of 30");
    assert!(
        page["bytes_read"].as_u64() <= Some(12 << 20),
        "{}",
        page["bytes_read"]
    );
    assert!(
        page["next_before"].is_string(),
        "the rest is one click away"
    );

    let (status, body) = get(&app, "/api/dlq?stream=big&count=1000").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.len() < 1 << 20,
        "the dead letters are {} bytes",
        body.len()
    );
    let d: Value = serde_json::from_str(&body).expect("json");
    let letters = d["letters"].as_array().map_or(0, Vec::len);
    assert!((1..30).contains(&letters), "{letters} letters read of 30");
    assert_eq!(d["total"], 30);
    assert_eq!(d["cut_by_bytes"], true);
    let reason = d["letters"][0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.len() < 1000,
        "a reason of {} bytes in a list",
        reason.len()
    );

    let (status, body) = get(&app, &format!("/api/entry?stream=big&id={last}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.len() < 1 << 20,
        "one entry's detail is {} bytes",
        body.len()
    );
    let e: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(e["bytes"], (1 << 20) + 4);
    assert_eq!(e["fields"][0]["bytes"], 1 << 20);
    assert_eq!(e["fields"][0]["truncated"], true);
    assert_eq!(e["wire"], Value::Null);

    // Many large fields: the detail is bounded in all, not per field.
    let mut wide = redis::cmd("XADD");
    wide.arg("wide").arg("*");
    for i in 0..30 {
        wide.arg(format!("f{i:02}")).arg(&big[..512 << 10]);
    }
    let id: String = wide.query_async(&mut c).await.expect("xadd wide");
    let (status, body) = get(&app, &format!("/api/entry?stream=wide&id={id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.len() < 2 << 20,
        "a 30-field entry's detail is {} bytes",
        body.len()
    );
    let e: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(e["fields"].as_array().map(Vec::len), Some(30));
    assert_eq!(e["fields"][29]["bytes"], 512 << 10);

    // The newest entry small, the rest 1 MB: the page still stops near
    // the budget instead of reading a full batch of large ones.
    let mut skew = redis::pipe();
    for _ in 0..40 {
        skew.cmd("XADD")
            .arg("skew")
            .arg("*")
            .arg("blob")
            .arg(&big)
            .ignore();
    }
    skew.cmd("XADD")
        .arg("skew")
        .arg("*")
        .arg("k")
        .arg("v")
        .ignore();
    skew.query_async::<()>(&mut c).await.expect("skew");
    let page = get_json(&app, "/api/stream?stream=skew&count=500").await;
    let read = page["bytes_read"].as_u64().unwrap_or(u64::MAX);
    assert!(read <= 9 << 20, "read {read} bytes for one page");
}

/// A history key of another type is an empty chart that says why; the
/// shards of a stream that is not sharded are no rows, not every row.
#[tokio::test]
async fn a_wrong_type_history_key_and_shards_of_a_plain_stream_are_answered() {
    let (server, _, _, app) = setup(Config::default()).await;
    let mut c = conn(&server).await;
    xadd(&mut c, b"plain").await;
    xadd(&mut c, b"other").await;
    server
        .cli(&["SET", "{streamkeeper}:history", "oops"])
        .expect("set");
    let h = get_json(&app, "/api/history?stream=plain").await;
    assert_eq!(h["points"], json!([]), "{h}");
    assert!(
        h["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a stream")),
        "{h}"
    );
    let o = get_json(
        &app,
        &format!("/api/overview?shards_of={}", key_of(b"plain")),
    )
    .await;
    assert_eq!(o["streams"], json!([]), "{o}");
    assert_eq!(o["matching"], 0, "{o}");
    let o = get_json(&app, "/api/overview").await;
    assert_eq!(o["matching"], 2, "{o}");
}
