//! The dashboard at the scale of a real deployment (design §10 "Scale"):
//! 1,000 streams × 3 groups, 50 of them written all the time. The router is
//! driven with `oneshot` against a real redis-server; what is measured
//! (answer sizes, event bytes a minute, Redis commands a second with 1 and
//! 3 open pages, history bytes, memory after the largest history request)
//! is printed and bounded.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures::StreamExt;
use serde_json::Value;
use streamkeeper::{Connector, ConnectorOptions};
use streamkeeper_testkit::RedisServer;
use streamkeeper_web::{app, key_of, AppState, Config};
use tower::ServiceExt;

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

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("req");
    let r = app.clone().oneshot(req).await.expect("response");
    let status = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 64 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get_json(app: &Router, path: &str) -> Value {
    let (s, b) = get(app, path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    serde_json::from_str(&b).expect("json")
}

/// `scale-0000` … `scale-0999` (prefixed with a tenant of random-looking
/// hex when `varied`, as real names are), each with 5 entries and groups
/// billing, analytics and shipping; plus `scale-backlog` with 500.
async fn seed(redis: &Connector, varied: bool) -> Vec<String> {
    let mut conn = redis.shared();
    let mut pipe = redis::pipe();
    let mut names: Vec<String> = (0..1000u64)
        .map(|i| {
            if varied {
                let tenant = (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
                format!("tenant-{tenant:08x}-orders-{i}")
            } else {
                format!("scale-{i:04}")
            }
        })
        .collect();
    names.push("scale-backlog".into());
    for s in &names {
        let n = if s == "scale-backlog" { 500 } else { 5 };
        for j in 0..n {
            pipe.cmd("XADD").arg(s).arg("*").arg("n").arg(j).ignore();
        }
        for g in ["billing", "analytics", "shipping"] {
            pipe.cmd("XGROUP")
                .arg("CREATE")
                .arg(s)
                .arg(g)
                .arg("0")
                .ignore();
        }
    }
    pipe.query_async::<()>(&mut conn).await.expect("seed");
    names
}

/// Commands Redis ran, except the writers' XADDs.
fn commands(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]).expect("info");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_xadd:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// The history stream's bytes in Redis (`MEMORY USAGE`) and its samples.
fn history_bytes(server: &RedisServer) -> (u64, u64) {
    let history = "{streamkeeper}:history";
    let used = server
        .cli(&["MEMORY", "USAGE", history, "SAMPLES", "0"])
        .expect("memory")
        .trim()
        .parse()
        .expect("bytes");
    let kept = server
        .cli(&["XLEN", history])
        .expect("xlen")
        .trim()
        .parse()
        .expect("n");
    (used, kept)
}

/// The peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn one_page_of_1000_streams_is_a_summary_and_a_bounded_filtered_sorted_page() {
    let (_server, redis, _, app) = setup(Config {
        max_lag: Some(100),
        ..Default::default()
    })
    .await;
    seed(&redis, false).await;
    let (status, body) = get(&app, "/api/overview").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    eprintln!("the first page of 1,001 streams: {} bytes", body.len());
    assert!(body.len() < 200_000, "{} bytes", body.len());
    let o: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(o["streams"].as_array().map(Vec::len), Some(50));
    assert_eq!(
        (o["matching"].as_u64(), o["pages"].as_u64()),
        (Some(1001), Some(21))
    );
    let s = &o["summary"];
    assert_eq!(
        s["streams"]["ok"].as_u64().unwrap_or(0) + s["streams"]["bad"].as_u64().unwrap_or(0),
        1001
    );
    assert_eq!(s["groups"]["bad"], 3, "the backlog's 3 groups are red: {s}");
    assert_eq!(s["total_lag"], 1000 * 5 * 3 + 500 * 3);
    assert_eq!(s["worst"][0]["stream"], "scale-backlog");
    assert!(s["worst"].as_array().is_some_and(|w| w.len() <= 10));

    let all = get_json(&app, "/api/overview?per=100000").await;
    assert_eq!(
        all["streams"].as_array().map(Vec::len),
        Some(200),
        "a page holds at most 200"
    );
    let last = get_json(&app, "/api/overview?page=21").await;
    assert_eq!(last["streams"].as_array().map(Vec::len), Some(1));
    assert_eq!(last["streams"][0]["name"], "scale-backlog");
    let filtered = get_json(&app, "/api/overview?q=SCALE-0999").await;
    assert_eq!(filtered["matching"], 1);
    assert_eq!(filtered["streams"][0]["name"], "scale-0999");
    let by_lag = get_json(&app, "/api/overview?sort=lag").await;
    assert_eq!(by_lag["streams"][0]["name"], "scale-backlog");
    let by_name_desc = get_json(&app, "/api/overview?sort=name&dir=desc").await;
    assert_eq!(by_name_desc["streams"][1]["name"], "scale-0999");
    let red = get_json(&app, "/api/overview?health=bad").await;
    assert_eq!(red["matching"], 1);
    let one = get_json(
        &app,
        &format!("/api/overview?key={}", key_of(b"scale-0500")),
    )
    .await;
    assert_eq!(one["streams"][0]["name"], "scale-0500");
    assert_eq!(one["matching"], 1);
}

/// Reads events for `secs` and returns the bytes received, the number of
/// `page` and `changes` events, and when the first `changes` naming
/// `watch` arrived.
async fn listen(
    app: Router,
    path: String,
    secs: u64,
    watch: String,
) -> (usize, usize, usize, Option<Instant>) {
    let r = app
        .oneshot(
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("events");
    let mut events = r.into_body().into_data_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let (mut bytes, mut pages, mut changes, mut seen) = (0, 0, 0, None);
    let mut text = String::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, events.next()).await {
        bytes += chunk.len();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.starts_with("event: page") {
                pages += 1;
            } else if event.starts_with("event: changes") {
                changes += 1;
                if seen.is_none() && event.contains(&watch) {
                    seen = Some(Instant::now());
                }
            }
        }
    }
    (bytes, pages, changes, seen)
}

#[tokio::test]
async fn open_pages_share_one_collector_and_receive_only_what_changed() {
    let (server, redis, _, app) = setup(Config::default()).await;
    let names = seed(&redis, false).await;
    // 50 streams written all the time (the first page's, the worst case
    // for the page's events).
    let writing = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (redis, stop, names) = (redis.clone(), writing.clone(), names.clone());
        tokio::spawn(async move {
            let mut conn = redis.shared();
            while !stop.is_cancelled() {
                let mut pipe = redis::pipe();
                for s in &names[..50] {
                    pipe.cmd("XADD").arg(s).arg("*").arg("k").arg("v").ignore();
                }
                let _ = pipe.query_async::<()>(&mut conn).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // Warm: the collector runs, history is absent (no trends).
    get_json(&app, "/api/overview").await;

    let secs = 8;
    let before = commands(&server);
    let one = listen(app.clone(), "/api/events".into(), secs, String::new()).await;
    let one_page = commands(&server) - before;
    let before = commands(&server);
    let three = futures::future::join_all((0..3).map(|i| {
        listen(
            app.clone(),
            format!("/api/events?page={}", i + 1),
            secs,
            String::new(),
        )
    }))
    .await;
    let three_pages = commands(&server) - before;
    let ratio = three_pages as f64 / one_page.max(1) as f64;
    let per_min = |b: usize| b as f64 * 60.0 / secs as f64 / 1e6;
    eprintln!(
        "1 page: {} Redis commands/s, {:.2} MB/min of events ({} page, {} changes events); 3 pages: {} commands/s ({ratio:.2}x), {:.2} MB/min for the 3",
        one_page / secs,
        per_min(one.0),
        one.1,
        one.2,
        three_pages / secs,
        per_min(three.iter().map(|t| t.0).sum())
    );
    assert!(ratio <= 1.6, "3 pages cost Redis {ratio:.2}x one page");
    assert_eq!(one.1, 1, "one page event, then changes only");
    assert!(
        one.2 >= secs as usize / 2,
        "changes every second or so: {}",
        one.2
    );
    // Before: the whole overview (884 KB at this scale) every second, 48.6
    // MB a minute per page.
    assert!(per_min(one.0) < 5.0, "{:.2} MB/min", per_min(one.0));
    // A page of idle streams (page 3) gets nothing after its page.
    let idle = &three[2];
    assert!(idle.0 < 120_000, "an idle page received {} bytes", idle.0);

    // A change on a row in view shows within a period plus one collection.
    writing.cancel();
    let _ = writer.await;
    let target = names[120].clone();
    let path = format!("/api/events?q={target}");
    let watch = key_of(target.as_bytes());
    let listener = tokio::spawn(listen(app.clone(), path, 8, watch));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let at = Instant::now();
    server.cli(&["XADD", &target, "*", "k", "v"]).expect("xadd");
    let (_, _, _, seen) = listener.await.expect("listener");
    let took = get_json(&app, "/api/overview").await["took_ms"]
        .as_u64()
        .unwrap_or(0);
    let seen = seen.expect("the change was sent").duration_since(at);
    eprintln!("a change showed in {seen:?} (a collection takes {took} ms)");
    assert!(
        seen <= Duration::from_secs(2) + Duration::from_millis(took),
        "{seen:?}"
    );
}

#[tokio::test]
async fn history_stays_under_history_max_and_the_largest_history_request_is_bounded() {
    let max = 1 << 20;
    let (server, redis, state, app) = setup(Config {
        history_max: max,
        ..Default::default()
    })
    .await;
    let names = seed(&redis, true).await;
    // One overview taken, written as many samples (a collection of 1,000
    // streams is what takes time here, not the writing).
    let overview = streamkeeper_web::overview::collect(&state)
        .await
        .expect("overview");
    for _ in 0..120 {
        streamkeeper_web::history::append(&state, &overview)
            .await
            .expect("sample");
    }
    let (used, kept) = history_bytes(&server);
    let per_sample = used / kept.max(1);
    eprintln!(
        "history: {kept} samples in {used} bytes (--history-max {max}); one sample of 1,001 streams x 3 groups: {per_sample} bytes"
    );
    assert!(used <= max, "{used} bytes over --history-max {max}");
    assert!(kept >= 20, "only {kept} samples kept");
    assert!(per_sample <= 40_000, "a sample takes {per_sample} bytes");

    // Small samples (40 streams) cost Redis more than their bytes: still
    // under the cap.
    let small_max = 256 << 10;
    let (small, redis_small, state_small, _) = setup(Config {
        history_max: small_max,
        ..Default::default()
    })
    .await;
    let mut conn = redis_small.shared();
    for i in 0..40 {
        redis::cmd("XADD")
            .arg(format!("small-{i}"))
            .arg("*")
            .arg("k")
            .arg("v")
            .query_async::<String>(&mut conn)
            .await
            .expect("xadd");
    }
    let overview = streamkeeper_web::overview::collect(&state_small)
        .await
        .expect("overview");
    // An operator lowered --history-max under a history of big samples
    // (plain JSON, as written before): the next sample brings it under,
    // though the estimate from the new sample's size would keep them all.
    let old = vec![b'{'; 60_000];
    for _ in 0..40 {
        redis::cmd("XADD")
            .arg("{streamkeeper}:history")
            .arg("*")
            .arg("d")
            .arg(&old)
            .query_async::<String>(&mut conn)
            .await
            .expect("xadd");
    }
    streamkeeper_web::history::append(&state_small, &overview)
        .await
        .expect("sample");
    let (used, kept) = history_bytes(&small);
    eprintln!("after lowering --history-max: {kept} kept in {used} bytes");
    assert!(
        used <= small_max,
        "{used} bytes over --history-max {small_max}"
    );
    for _ in 0..600 {
        streamkeeper_web::history::append(&state_small, &overview)
            .await
            .expect("sample");
    }
    let (used, kept) = history_bytes(&small);
    eprintln!("small samples: {kept} kept in {used} bytes (--history-max {small_max})");
    assert!(
        used <= small_max,
        "{used} bytes over --history-max {small_max}"
    );
    assert!(kept >= 20, "only {kept} samples kept");

    // More samples than a chart draws, then the largest request there is.
    let (server, redis, state, app2) = setup(Config::default()).await;
    let _ = app;
    seed(&redis, true).await;
    let overview = streamkeeper_web::overview::collect(&state)
        .await
        .expect("overview");
    for _ in 0..300 {
        streamkeeper_web::history::append(&state, &overview)
            .await
            .expect("sample");
        // Sample IDs a millisecond apart at least, as real ones are 10 s.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = peak_rss();
    let path = format!(
        "/api/history?stream={}&points=100000000&count=8640",
        names[7]
    );
    let (status, body) = get(&app2, &path).await;
    let after = peak_rss();
    assert_eq!(status, StatusCode::OK, "{body}");
    let h: Value = serde_json::from_str(&body).expect("json");
    let points = h["points"].as_array().map_or(0, Vec::len);
    eprintln!(
        "the largest history request: {points} points, {} bytes, peak RSS {} -> {} MB",
        body.len(),
        before >> 20,
        after >> 20
    );
    assert!((200..=240).contains(&points), "{points} points");
    assert!(body.len() < 200_000, "{} bytes", body.len());
    assert!(
        after - before < 64 << 20,
        "serve grew by {} MB",
        (after - before) >> 20
    );
    // Spread over the whole history: the first and the last sample.
    let first = server
        .cli(&["XRANGE", "{streamkeeper}:history", "-", "+", "COUNT", "1"])
        .expect("first");
    let t0: u64 = first
        .lines()
        .next()
        .and_then(|id| id.split('-').next()?.parse().ok())
        .expect("t0");
    assert_eq!(h["points"][0]["t"], t0);
    let sum: u64 = h["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["g"]["billing"][0].as_u64().expect("lag of billing"))
        .sum();
    assert_eq!(
        sum,
        5 * points as u64,
        "each point carries the stream's lag"
    );
}

/// With no page open and no request, the collector stops after its linger
/// (15 s) even though the history sampler goes on every 10 s: an idle
/// `serve` costs Redis one overview per sample, not one a second.
#[tokio::test]
async fn with_no_page_open_the_collector_stops_and_history_costs_one_overview_a_sample() {
    let (server, redis, state, app) = setup(Config::default()).await;
    let mut conn = redis.shared();
    for s in ["idle-a", "idle-b", "idle-c"] {
        redis::cmd("XADD")
            .arg(s)
            .arg("*")
            .arg("k")
            .arg("v")
            .query_async::<String>(&mut conn)
            .await
            .expect("xadd");
    }
    // What one overview costs Redis (nothing running yet: a direct one).
    let before = commands(&server);
    streamkeeper_web::history::sample_once(&state, Duration::from_secs(10))
        .await
        .expect("sample");
    let one_sample = commands(&server) - before;
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn(streamkeeper_web::history::run(
        state.clone(),
        Duration::from_secs(10),
        stop.clone(),
    ));
    // One look at the page, then nobody.
    get_json(&app, "/api/overview").await;
    tokio::time::sleep(Duration::from_secs(17)).await;
    let before = commands(&server);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = commands(&server) - before;
    stop.cancel();
    let _ = sampler.await;
    eprintln!("idle for 6 s: {idle} Redis commands (one sample costs {one_sample})");
    // At most one sample (and its lease) in 6 s; a collector still running
    // would have taken 6 overviews.
    assert!(idle <= one_sample + 4, "{idle} commands in 6 s idle");
}
