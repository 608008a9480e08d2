//! The router driven with `oneshot` (no socket) against a real
//! redis-server: API shapes, `/metrics` (HELP/TYPE, no series of deleted
//! streams, the counters), odd names and missing streams answered without
//! 502, the guard (token, read-only, CSRF), actions changing Redis, events,
//! and Redis going away and coming back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use streamkeeper::{Connector, ConnectorOptions};
use streamkeeper_testkit::RedisServer;
use streamkeeper_web::{app, AppState, Config, CSRF_HEADER};
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

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HashMap<String, String>, String) {
    let r = app.clone().oneshot(req).await.expect("response");
    let status = r.status();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("req");
    let (s, _, b) = send(app, req).await;
    (s, b)
}

async fn get_json(app: &Router, path: &str) -> Value {
    let (s, b) = get(app, path).await;
    assert_eq!(s, StatusCode::OK, "{path}: {b}");
    serde_json::from_str(&b).expect("json")
}

fn post(path: &str, csrf: Option<&str>, body: Value) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(c) = csrf {
        r = r.header(CSRF_HEADER, c);
    }
    r.body(Body::from(body.to_string())).expect("req")
}

/// Every line is a comment (HELP or TYPE) or `name{labels} value`; every
/// family has both HELP and TYPE.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let (mut help, mut kind) = (Vec::new(), Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap_or_default().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            kind.push(rest.split(' ').next().unwrap_or_default().to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("value");
        let name = &series[..series.find('{').unwrap_or(series.len())];
        assert!(help.iter().any(|h| h == name), "no HELP for {name}");
        assert!(kind.iter().any(|h| h == name), "no TYPE for {name}");
        out.insert(series.to_string(), value.parse::<f64>().expect("float"));
    }
    out
}

#[tokio::test]
async fn metrics_have_help_and_type_drop_deleted_streams_and_export_counters() {
    let _ = streamkeeper_web::prometheus::recorder();
    let (server, redis, _, app) = setup(Config::default()).await;
    server
        .cli(&["XADD", "orders", "*", "k", "v"])
        .expect("xadd");
    server.cli(&["XADD", "gone", "*", "k", "v"]).expect("xadd");
    server
        .cli(&["XGROUP", "CREATE", "orders", "billing", "0"])
        .expect("group");
    let (status, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let before = parse_prometheus(&text);
    assert_eq!(
        before[r#"streamkeeper_stream_length{stream="orders"}"#],
        1.0
    );
    assert_eq!(before[r#"streamkeeper_stream_length{stream="gone"}"#], 1.0);
    // The unlabelled process totals; `reclaimed` is per stream and group
    // now, so it appears once a consumer runs in the process.
    for c in [
        "produced",
        "delivered",
        "acked",
        "retried",
        "dead_lettered",
        "reconnects",
    ] {
        assert!(
            before.contains_key(&format!("streamkeeper_{c}_total")),
            "counter {c} missing:\n{text}"
        );
    }

    // Messages flow through the library in this process: gauges and counters move.
    let producer =
        streamkeeper::Producer::new(&redis, streamkeeper::StreamKey::new("orders").expect("key"));
    let batch: Vec<_> = (0..10)
        .map(|i| streamkeeper::fields([("n", i.to_string())]))
        .collect();
    producer.send_batch(&batch).await.expect("send");
    server.cli(&["DEL", "gone"]).expect("del");
    let (_, text) = get(&app, "/metrics").await;
    let after = parse_prometheus(&text);
    assert_eq!(
        after[r#"streamkeeper_stream_length{stream="orders"}"#],
        11.0
    );
    let outstanding = r#"streamkeeper_group_outstanding{stream="orders",group="billing"}"#;
    assert_eq!(after[outstanding], 11.0);
    assert!(after["streamkeeper_produced_total"] >= before["streamkeeper_produced_total"] + 10.0);
    assert!(
        !text.contains(r#"stream="gone""#),
        "a deleted stream keeps series:\n{text}"
    );
}

#[tokio::test]
async fn odd_names_and_missing_streams_make_rows_not_errors() {
    let (server, _, _, app) = setup(Config::default()).await;
    server
        .cli(&["XADD", "orders", "*", "k", "v"])
        .expect("xadd");
    // A key and a group name that are not UTF-8.
    let mut conn = redis::Client::open(server.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    redis::cmd("XADD")
        .arg(b"odd\xffkey".as_slice())
        .arg("*")
        .arg("k")
        .arg("v")
        .query_async::<String>(&mut conn)
        .await
        .expect("xadd");
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orders")
        .arg(b"grp\xfe".as_slice())
        .arg("0")
        .query_async::<()>(&mut conn)
        .await
        .expect("group");
    for path in ["/api/overview", "/metrics", "/healthz", "/"] {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let o = get_json(&app, "/api/overview").await;
    let names: Vec<&str> = o["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["name"].as_str().expect("name"))
        .collect();
    assert!(names.contains(&"odd\\xffkey"), "{names:?}");
    assert!(names.contains(&"orders"), "{names:?}");
    // The odd group is shown escaped, next to nothing broken.
    let orders = o["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["name"] == "orders")
        .expect("orders");
    assert_eq!(orders["error"], Value::Null, "{orders}");
    assert_eq!(orders["groups"][0]["name"], "grp\\xfe", "{orders}");
    assert_eq!(orders["groups"][0]["undelivered"], 1, "{orders}");

    let (server, _, _, app) = setup(Config {
        streams: vec!["orders".into(), "missing".into()],
        ..Default::default()
    })
    .await;
    server
        .cli(&["XADD", "orders", "*", "k", "v"])
        .expect("xadd");
    let (status, body) = get(&app, "/api/overview").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let o: Value = serde_json::from_str(&body).expect("json");
    // Rows are sorted by name: "missing" before "orders".
    assert_eq!(o["streams"][1]["name"], "orders");
    assert_eq!(o["streams"][1]["length"], 1);
    let missing = &o["streams"][0];
    assert_eq!(missing["name"], "missing");
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{missing}"
    );
    assert_eq!(get(&app, "/metrics").await.0, StatusCode::OK);
}

#[tokio::test]
async fn read_only_refuses_actions_and_csrf_is_checked() {
    let (server, _, state, app) = setup(Config::default()).await;
    server
        .cli(&["XADD", "{orders}:dlq", "*", "sk-group", "g", "k", "v"])
        .expect("xadd");
    let (status, _, body) = send(
        &app,
        post(
            "/api/actions/dlq-purge",
            Some(state.csrf()),
            json!({"stream": "orders"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(get_json(&app, "/api/config").await["allow_actions"], false);
    assert_eq!(
        server.cli(&["XLEN", "{orders}:dlq"]).expect("xlen").trim(),
        "1"
    );

    let (server, _, state, app) = setup(Config {
        allow_actions: true,
        ..Default::default()
    })
    .await;
    server
        .cli(&["XADD", "{orders}:dlq", "*", "sk-group", "g", "k", "v"])
        .expect("xadd");
    for csrf in [None, Some("wrong")] {
        let (status, _, _) = send(
            &app,
            post("/api/actions/dlq-purge", csrf, json!({"stream": "orders"})),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(
        server.cli(&["XLEN", "{orders}:dlq"]).expect("xlen").trim(),
        "1"
    );
    let config = get_json(&app, "/api/config").await;
    assert_eq!(config["csrf"], state.csrf());
    let (status, _, body) = send(
        &app,
        post(
            "/api/actions/dlq-purge",
            Some(state.csrf()),
            json!({"stream": "orders"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.cli(&["XLEN", "{orders}:dlq"]).expect("xlen").trim(),
        "0"
    );
}

#[tokio::test]
async fn a_token_is_required_for_every_request() {
    let (_server, _, _, app) = setup(Config {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    for path in ["/api/overview", "/metrics", "/api/events"] {
        assert_eq!(get(&app, path).await.0, StatusCode::UNAUTHORIZED, "{path}");
    }
    // Load balancers probe /healthz without the token; a failed lag check
    // then says how many failed, not which stream.
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
    let (status, body) = get(&app, "/healthz?stream=secret-orders&max-lag=0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(!body.contains("secret-orders"), "{body}");
    // The page sends people to the login form, which stays reachable.
    let (status, headers, _) = send(
        &app,
        Request::builder()
            .uri("/")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert!(status.is_redirection());
    assert_eq!(headers["location"], "/login");
    assert_eq!(get(&app, "/login").await.0, StatusCode::OK);
    let bearer = Request::builder()
        .uri("/api/overview")
        .header(header::AUTHORIZATION, "Bearer s3cret")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, bearer).await.0, StatusCode::OK);
    let wrong = Request::builder()
        .uri("/api/overview")
        .header(header::AUTHORIZATION, "Bearer s3cre")
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, wrong).await.0, StatusCode::UNAUTHORIZED);

    // The login form sets an HttpOnly SameSite cookie that then works.
    let login = Request::builder()
        .method("POST")
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("token=s3cret"))
        .expect("req");
    let (status, headers, _) = send(&app, login).await;
    assert!(status.is_redirection());
    let cookie = &headers["set-cookie"];
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("s3cret"),
        "the cookie holds a session id, not the token"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let with_cookie = Request::builder()
        .uri("/api/overview")
        .header(header::COOKIE, pair)
        .body(Body::empty())
        .expect("req");
    assert_eq!(send(&app, with_cookie).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_strict_csp_and_values_stay_text() {
    let (server, _, _, app) = setup(Config::default()).await;
    server
        .cli(&[
            "XADD",
            "s",
            "*",
            "<img src=x onerror=alert(1)>",
            "<script>alert(1)</script>",
        ])
        .expect("xadd");
    let (status, headers, body) = send(
        &app,
        Request::builder()
            .uri("/")
            .body(Body::empty())
            .expect("req"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csp = &headers["content-security-policy"];
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(!body.contains("<script>") || !body.contains("</script>\n<script>"));
    assert!(!body.contains("style="), "no inline style in the page");
    let js = get(&app, "/assets/app.js").await.1;
    assert!(!js.contains("innerHTML"), "the script never parses HTML");
    let api = Request::builder()
        .uri("/api/overview")
        .body(Body::empty())
        .expect("req");
    let (_, headers, _) = send(&app, api).await;
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers.contains_key("content-security-policy"));
    let page = get_json(&app, "/api/stream?stream=s").await;
    assert_eq!(
        page["entries"][0]["fields"][0],
        json!(["<img src=x onerror=alert(1)>", "<script>alert(1)</script>"])
    );
}

#[tokio::test]
async fn stream_pages_filter_with_a_cap_and_entries_show_their_owner() {
    let (server, _, _, app) = setup(Config {
        scan_cap: 100,
        ..Default::default()
    })
    .await;
    for i in 0..250 {
        let user = if i % 50 == 0 { "alice" } else { "bob" };
        server
            .cli(&[
                "XADD",
                "s",
                &format!("{}-0", i + 1),
                "user",
                user,
                "n",
                &i.to_string(),
            ])
            .expect("xadd");
    }
    let page = get_json(&app, "/api/stream?stream=s&count=10").await;
    assert_eq!(page["length"], 250);
    assert_eq!(page["entries"].as_array().expect("entries").len(), 10);
    assert_eq!(page["entries"][0]["id"], "250-0");
    assert_eq!(page["next_before"], "241-0");
    let older = get_json(&app, "/api/stream?stream=s&count=10&before=241-0").await;
    assert_eq!(older["entries"][0]["id"], "240-0");
    // The filter scans at most the cap and says so.
    let f = get_json(&app, "/api/stream?stream=s&q=user%3Dalice&count=50").await;
    assert_eq!(f["scanned"], 100);
    assert_eq!(f["cap"], 100);
    let ids: Vec<&str> = f["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["201-0", "151-0"]);
    let more = get_json(
        &app,
        &format!(
            "/api/stream?stream=s&q=alice&before={}",
            f["next_before"].as_str().expect("next")
        ),
    )
    .await;
    assert_eq!(more["entries"][0]["id"], "101-0");

    server
        .cli(&["XGROUP", "CREATE", "s", "g", "0"])
        .expect("group");
    server
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "worker",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ])
        .expect("read");
    let e = get_json(&app, "/api/entry?stream=s&id=1-0").await;
    assert_eq!(e["groups"][0]["state"], "pending");
    assert_eq!(e["groups"][0]["consumer"], "worker");
    assert_eq!(e["groups"][0]["deliveries"], 1);
    assert_eq!(e["fields"][0]["name"], "user");
    assert_eq!(e["fields"][0]["hex"], "616c696365");
    let e = get_json(&app, "/api/entry?stream=s&id=2-0").await;
    assert_eq!(e["groups"][0]["state"], "undelivered");
    assert_eq!(
        get(&app, "/api/entry?stream=s&id=999-0").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        get(&app, "/api/entry?stream=s&id=nope").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn janitor_preview_names_the_group_holding_the_trim_point() {
    let (server, _, state, app) = setup(Config {
        allow_actions: true,
        ..Default::default()
    })
    .await;
    for i in 1..=10 {
        server
            .cli(&["XADD", "s", &format!("{i}-0"), "k", "v"])
            .expect("xadd");
    }
    server
        .cli(&["XGROUP", "CREATE", "s", "fast", "0"])
        .expect("group");
    server
        .cli(&["XGROUP", "CREATE", "s", "slow", "0"])
        .expect("group");
    server
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "fast",
            "c",
            "COUNT",
            "8",
            "STREAMS",
            "s",
            ">",
        ])
        .expect("read");
    for i in 1..=8 {
        server
            .cli(&["XACK", "s", "fast", &format!("{i}-0")])
            .expect("ack");
    }
    server
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "slow",
            "c",
            "COUNT",
            "5",
            "STREAMS",
            "s",
            ">",
        ])
        .expect("read");
    for i in 1..=3 {
        server
            .cli(&["XACK", "s", "slow", &format!("{i}-0")])
            .expect("ack");
    }
    let j = get_json(&app, "/api/janitor?stream=s").await;
    assert_eq!(j["trim_to"], "4-0");
    assert_eq!(j["would_trim"], 3);
    let holder: Vec<&Value> = j["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter(|g| g["holds"] == true)
        .collect();
    assert_eq!(holder.len(), 1);
    assert_eq!(holder[0]["group"], "slow");
    assert_eq!(
        server.cli(&["XLEN", "s"]).expect("xlen").trim(),
        "10",
        "a preview trims nothing"
    );
    let (status, _, body) = send(
        &app,
        post(
            "/api/actions/janitor",
            Some(state.csrf()),
            json!({"stream": "s"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(server.cli(&["XLEN", "s"]).expect("xlen").trim(), "7");
}

#[tokio::test]
async fn schedules_pause_and_resume_through_actions() {
    let (_server, redis, state, app) = setup(Config {
        allow_actions: true,
        ..Default::default()
    })
    .await;
    let scheduler = streamkeeper::scheduler::Scheduler::new(&redis, "streamkeeper");
    scheduler
        .add(
            &streamkeeper::scheduler::Schedule::every("tick", Duration::from_secs(60), "t")
                .expect("s"),
        )
        .await
        .expect("add");
    let list = get_json(&app, "/api/schedules").await;
    assert_eq!(list["schedules"][0]["paused"], false);
    assert!(list["schedules"][0]["next_due_ms"].is_u64());
    let (status, _, _) = send(
        &app,
        post(
            "/api/actions/schedule-pause",
            Some(state.csrf()),
            json!({"name": "tick"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let list = get_json(&app, "/api/schedules").await;
    assert_eq!(list["schedules"][0]["paused"], true);
    assert!(list["schedules"][0]["next_due_ms"].is_null());
    let (status, _, _) = send(
        &app,
        post(
            "/api/actions/schedule-resume",
            Some(state.csrf()),
            json!({"name": "tick"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get_json(&app, "/api/schedules").await["schedules"][0]["paused"],
        false
    );
    let (status, _, _) = send(
        &app,
        post(
            "/api/actions/schedule-pause",
            Some(state.csrf()),
            json!({"name": "nope"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn group_reset_previews_first_and_idle_consumers_hand_over() {
    let (server, _, state, app) = setup(Config {
        allow_actions: true,
        dead_after: Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    for i in 1..=5 {
        server
            .cli(&["XADD", "s", &format!("{i}-0"), "k", "v"])
            .expect("xadd");
    }
    server
        .cli(&["XGROUP", "CREATE", "s", "g", "$"])
        .expect("group");
    let reset = |dry: bool| {
        post(
            "/api/actions/group-reset",
            Some(state.csrf()),
            json!({"stream": "s", "group": "g", "to": "0", "dry_run": dry}),
        )
    };
    let (status, _, body) = send(&app, reset(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let preview: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(preview["redelivered"], 5);
    let groups = get_json(&app, "/api/groups?stream=s").await;
    assert_eq!(
        groups["groups"][0]["last_delivered"], "5-0",
        "a preview moves nothing"
    );
    let (status, _, _) = send(&app, reset(false)).await;
    assert_eq!(status, StatusCode::OK);
    let groups = get_json(&app, "/api/groups?stream=s").await;
    assert_eq!(groups["groups"][0]["last_delivered"], "0-0");

    // An idle consumer's entries go to the active one.
    server
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "old",
            "COUNT",
            "2",
            "STREAMS",
            "s",
            ">",
        ])
        .expect("read");
    server
        .cli(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "new",
            "COUNT",
            "1",
            "STREAMS",
            "s",
            ">",
        ])
        .expect("read");
    let remove = post(
        "/api/actions/consumer-remove",
        Some(state.csrf()),
        json!({"stream": "s", "group": "g", "consumer": "old"}),
    );
    let (status, _, _) = send(&app, remove).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "an active consumer is not removed"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let remove = post(
        "/api/actions/consumer-remove",
        Some(state.csrf()),
        json!({"stream": "s", "group": "g", "consumer": "old"}),
    );
    let (status, _, body) = send(&app, remove).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(out["moved"], 2);
    assert_eq!(out["to"], "new");
    let groups = get_json(&app, "/api/groups?stream=s").await;
    let consumers = groups["groups"][0]["consumers"]
        .as_array()
        .expect("consumers");
    assert_eq!(consumers.len(), 1);
    assert_eq!(consumers[0]["name"], "new");
    assert_eq!(consumers[0]["pending"], 3);
}

#[tokio::test]
async fn events_stream_the_overview_and_report_redis_down_then_recover() {
    let (mut server, _, _, app) = setup(Config::default()).await;
    server.cli(&["XADD", "s", "*", "k", "v"]).expect("xadd");
    let r = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/api/events")
                .body(Body::empty())
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ct")
        .starts_with("text/event-stream"));
    let mut events = r.into_body().into_data_stream();
    use futures::StreamExt;
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains("event: page") && Instant::now() < deadline {
        let chunk = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event")
            .expect("chunk")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: page") && seen.contains("\"name\":\"s\""),
        "{seen}"
    );

    server.kill();
    let (status, _) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The shared overview lives 750 ms; then the API says Redis is down.
    let mut status = StatusCode::OK;
    let deadline = Instant::now() + Duration::from_secs(5);
    while status == StatusCode::OK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = get(&app, "/api/overview").await.0;
    }
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.contains("event: down") && Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), events.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("event: down"), "{seen}");

    server.restart().expect("restart");
    server.cli(&["XADD", "s2", "*", "k", "v"]).expect("xadd");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.contains("\"name\":\"s2\"") && Instant::now() < deadline {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_secs(5), events.next()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(
        seen.contains("\"name\":\"s2\""),
        "recovered by itself: {seen}"
    );
    assert_eq!(get(&app, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn history_is_sampled_once_per_period_by_one_writer() {
    let (server, _, state, app) = setup(Config::default()).await;
    server.cli(&["XADD", "s", "*", "k", "v"]).expect("xadd");
    server
        .cli(&["XGROUP", "CREATE", "s", "g", "0"])
        .expect("group");
    let other = AppState::new(state.redis().clone(), Config::default());
    let every = Duration::from_secs(10);
    assert!(streamkeeper_web::history::sample_once(&state, every)
        .await
        .expect("sample"));
    // A second instance (or the same one too soon) does not double the points.
    assert!(!streamkeeper_web::history::sample_once(&other, every)
        .await
        .expect("sample"));
    assert_eq!(
        server
            .cli(&["XLEN", "{streamkeeper}:history"])
            .expect("xlen")
            .trim(),
        "1"
    );
    let h = get_json(&app, "/api/history?stream=s").await;
    assert_eq!(h["points"][0]["g"]["g"][0], 1, "outstanding of g");
    assert_eq!(get(&app, "/api/history").await.0, StatusCode::BAD_REQUEST);

    // The sampler loop writes under the lease; two loops, one writer.
    let stop = tokio_util::sync::CancellationToken::new();
    server.cli(&["DEL", "{streamkeeper}:history"]).expect("del");
    let a = tokio::spawn(streamkeeper_web::history::run(
        state.clone(),
        Duration::from_millis(300),
        stop.clone(),
    ));
    let b = tokio::spawn(streamkeeper_web::history::run(
        other.clone(),
        Duration::from_millis(300),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    stop.cancel();
    let _ = (a.await, b.await);
    let n: u64 = server
        .cli(&["XLEN", "{streamkeeper}:history"])
        .expect("xlen")
        .trim()
        .parse()
        .expect("n");
    assert!((3..=7).contains(&n), "about one sample per 300 ms, got {n}");
}

#[tokio::test]
async fn overview_of_1000_streams_with_2_groups_is_fast() {
    let (server, redis, state, _) = setup(Config::default()).await;
    let mut conn = redis.shared();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        let s = format!("s{i:04}");
        for j in 0..5 {
            pipe.cmd("XADD").arg(&s).arg("*").arg("n").arg(j).ignore();
        }
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&s)
            .arg("a")
            .arg("0")
            .ignore();
        pipe.cmd("XGROUP")
            .arg("CREATE")
            .arg(&s)
            .arg("b")
            .arg("$")
            .ignore();
    }
    pipe.query_async::<()>(&mut conn).await.expect("seed");
    let _ = server;
    // Warm-up (memory samples are taken at most once a minute).
    let o = streamkeeper_web::overview::collect(&state)
        .await
        .expect("overview");
    assert_eq!(o.streams.len(), 1000);
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let o = streamkeeper_web::overview::collect(&state)
            .await
            .expect("overview");
        best = best.min(t.elapsed());
        assert_eq!(o.streams[999].groups.len(), 2);
    }
    eprintln!("overview of 1000 streams x 2 groups: {best:?} (best of 3)");
    let limit = if cfg!(debug_assertions) { 3_000 } else { 300 };
    assert!(best < Duration::from_millis(limit), "{best:?}");
}

#[tokio::test]
async fn a_user_without_memory_client_or_config_sees_n_a_not_errors() {
    let port = streamkeeper_testkit::free_port().expect("port");
    let server = RedisServer::start_with(streamkeeper_testkit::ServerConfig {
        tcp_port: Some(port),
        ..Default::default()
    })
    .expect("redis-server");
    server
        .cli(&["XADD", "orders", "*", "k", "v"])
        .expect("xadd");
    server
        .cli(&["XGROUP", "CREATE", "orders", "g", "0"])
        .expect("group");
    let acl = server
        .cli(&[
            "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-memory", "-client",
            "-config",
        ])
        .expect("acl");
    assert_eq!(acl.trim(), "OK");
    let redis = Connector::connect(&format!("redis://limited:pw@127.0.0.1:{port}"))
        .await
        .expect("connect as limited");
    let app = app(AppState::new(redis, Config::default()));
    let o = get_json(&app, "/api/overview").await;
    assert_eq!(o["streams"][0]["name"], "orders");
    assert_eq!(o["streams"][0]["error"], Value::Null);
    assert_eq!(
        o["streams"][0]["memory_bytes"],
        Value::Null,
        "memory is n/a"
    );
    assert_eq!(o["streams"][0]["groups"][0]["outstanding"], 1);
    for path in [
        "/metrics",
        "/api/groups?stream=orders",
        "/api/stream?stream=orders",
        "/api/janitor?stream=orders",
        "/api/schedules",
        "/healthz",
    ] {
        let (status, body) = get(&app, path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (_, config) = get(&app, "/api/config").await;
    assert!(
        !config.contains(":pw@"),
        "the password is never shown: {config}"
    );
}

#[tokio::test]
async fn without_a_token_only_ip_or_localhost_hosts_are_served() {
    let (_server, _, _, app) = setup(Config::default()).await;
    let with_host = |h: &str| {
        Request::builder()
            .uri("/api/config")
            .header(header::HOST, h)
            .body(Body::empty())
            .expect("req")
    };
    for ok in [
        "127.0.0.1:9187",
        "localhost:9187",
        "[::1]:9187",
        "10.1.2.3",
        "LOCALHOST",
    ] {
        assert_eq!(send(&app, with_host(ok)).await.0, StatusCode::OK, "{ok}");
    }
    // A rebound DNS name pointing at 127.0.0.1 is refused.
    for bad in [
        "evil.example:9187",
        "evil.example",
        "localhost.evil.example",
    ] {
        assert_eq!(
            send(&app, with_host(bad)).await.0,
            StatusCode::MISDIRECTED_REQUEST,
            "{bad}"
        );
    }
    let (_server, _, _, app) = setup(Config {
        token: Some("t".into()),
        ..Default::default()
    })
    .await;
    let named = Request::builder()
        .uri("/api/config")
        .header(header::HOST, "dash.example:9187")
        .header(header::AUTHORIZATION, "Bearer t")
        .body(Body::empty())
        .expect("req");
    assert_eq!(
        send(&app, named).await.0,
        StatusCode::OK,
        "with a token, names are fine"
    );
}

/// Calls of `command` so far, from `INFO commandstats`.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]).expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn refreshes_never_use_keys_and_sample_memory_once_a_minute() {
    let (server, _, _, app) = setup(Config::default()).await;
    for s in ["a", "b", "c"] {
        server.cli(&["XADD", s, "*", "k", "v"]).expect("xadd");
    }
    let memory_before = calls(&server, "memory|usage");
    for _ in 0..5 {
        assert_eq!(get(&app, "/api/overview").await.0, StatusCode::OK);
        assert_eq!(get(&app, "/metrics").await.0, StatusCode::OK);
        // Past the 750 ms the overview is shared.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert_eq!(calls(&server, "keys"), 0, "KEYS is never used");
    assert!(calls(&server, "scan") >= 5, "streams are found with SCAN");
    assert_eq!(
        calls(&server, "memory|usage") - memory_before,
        3,
        "one memory sample per stream in this minute"
    );
}

#[tokio::test]
async fn a_sharded_stream_is_one_summed_row_followed_by_its_shards() {
    use streamkeeper::shard::ShardLayout;
    let (server, redis, _, app) = setup(Config::default()).await;
    let cli = |args: &[&str]| server.cli(args).expect("redis-cli");
    let clicks = streamkeeper::StreamKey::new("clicks").expect("key");
    ShardLayout::create(&redis, &clicks, 3)
        .await
        .expect("shard create");
    // 3, 5 and 0 entries; group g read 2 of shard 0's, 4 of shard 1's.
    for (i, n) in [(0, 3), (1, 5), (2, 0)] {
        let shard = format!("{{clicks:{i}}}");
        for _ in 0..n {
            cli(&["XADD", &shard, "*", "k", "v"]);
        }
        cli(&["XGROUP", "CREATE", &shard, "g", "0", "MKSTREAM"]);
    }
    for (shard, count) in [("{clicks:0}", "2"), ("{clicks:1}", "4")] {
        cli(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            count,
            "STREAMS",
            shard,
            ">",
        ]);
    }
    // A key that only looks like a shard stays a plain row.
    cli(&["XADD", "{lookalike:0}", "*", "k", "v"]);
    // A sharded stream with one shard written: the others show, empty.
    let views = streamkeeper::StreamKey::new("views").expect("key");
    ShardLayout::create(&redis, &views, 3)
        .await
        .expect("shard create");
    cli(&["XADD", "{views:1}", "*", "k", "v"]);
    // The overview collapses a sharded stream into its summed row.
    let o = get_json(&app, "/api/overview").await;
    let top: Vec<&str> = o["streams"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(top, ["clicks", "views", "{lookalike:0}"], "{o}");
    assert_eq!(
        o["summary"]["streams"]["ok"], 3,
        "a sharded stream counts once"
    );
    let rows_of = |o: &Value| o["streams"].as_array().expect("rows").clone();
    let clicks_key = streamkeeper_web::key_of(b"clicks");
    let views_key = streamkeeper_web::key_of(b"views");
    // Opened, it is the sum followed by its shards.
    let mut rows = rows_of(&get_json(&app, &format!("/api/overview?shards_of={clicks_key}")).await);
    rows.extend(rows_of(
        &get_json(&app, &format!("/api/overview?shards_of={views_key}")).await,
    ));
    rows.extend(rows_of(&get_json(&app, "/api/overview?q=lookalike").await));
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    let at = names
        .iter()
        .position(|n| *n == "clicks")
        .expect("a summed row");
    assert_eq!(
        &names[at + 1..at + 4],
        ["{clicks:0}", "{clicks:1}", "{clicks:2}"],
        "{names:?}"
    );
    let sum = &rows[at];
    assert_eq!(sum["shards"], 3);
    assert_eq!(sum["length"], 8);
    let g = &sum["groups"][0];
    assert_eq!(
        (g["name"].as_str(), g["pending"].as_u64()),
        (Some("g"), Some(6))
    );
    assert_eq!(g["undelivered"], 2);
    assert_eq!(g["consumers"], 1, "one consumer reading two shards is one");
    for r in &rows[at + 1..at + 4] {
        assert_eq!(r["shard_of"], "clicks");
    }
    let v = names.iter().position(|n| *n == "views").expect("views");
    assert_eq!(
        &names[v + 1..v + 4],
        ["{views:0}", "{views:1}", "{views:2}"],
        "{names:?}"
    );
    assert_eq!(rows[v]["length"], 1);
    assert_eq!(rows[v + 1]["length"], 0);
    let look = rows
        .iter()
        .find(|r| r["name"] == "{lookalike:0}")
        .expect("row");
    assert!(look["shard_of"].is_null() && look["shards"].is_null());
    // /metrics counts each entry once: the shards, not the sum.
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains("streamkeeper_stream_length{stream=\"{clicks:1}\"} 5"),
        "{metrics}"
    );
    assert!(!metrics.contains("stream=\"clicks\""), "{metrics}");
}

#[tokio::test]
async fn the_config_api_never_shows_a_urls_secrets() {
    let server = RedisServer::start().expect("redis-server");
    // redis-rs ignores query parameters it does not know: the URL works.
    let url = format!(
        "{}?sentinel_password=hunter2&access_token=hunter2",
        server.url()
    );
    let redis = Connector::connect(&url).await.expect("connect");
    let app = app(AppState::new(redis, Config::default()));
    let (status, config) = get(&app, "/api/config").await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert!(!config.contains("hunter2"), "a secret was shown: {config}");
    assert!(config.contains("sentinel_password=***"), "{config}");
}

#[tokio::test]
async fn healthz_applies_lag_thresholds_to_one_service_or_all() {
    let (_server, redis, _state, app) = setup(Config::default()).await;
    let mut conn = redis.shared();
    for n in 0..3 {
        redis::cmd("XADD")
            .arg("orders")
            .arg("*")
            .arg("n")
            .arg(n)
            .query_async::<String>(&mut conn)
            .await
            .expect("xadd");
    }
    // billing has read nothing (3 outstanding); analytics is caught up.
    for (group, from) in [("billing", "0"), ("analytics", "$")] {
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg("orders")
            .arg(group)
            .arg(from)
            .query_async::<()>(&mut conn)
            .await
            .expect("group");
    }
    let probe = |q: &str| {
        let app = app.clone();
        let path = format!("/healthz?{q}");
        async move { get(&app, &path).await }
    };
    assert_eq!(
        probe("").await.0,
        StatusCode::OK,
        "no threshold: Redis only"
    );
    let (status, body) = probe("max-lag=2").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("orders group billing: 3 outstanding > max-lag 2"),
        "{body}"
    );
    assert_eq!(
        probe("stream=orders&group=analytics&max-lag=0").await.0,
        StatusCode::OK
    );
    assert_eq!(
        probe("stream=orders&group=billing&max-lag=3").await.0,
        StatusCode::OK
    );
    let (status, body) = probe("stream=orders&group=nope&max-lag=0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("has no group nope"), "{body}");
    let (status, body) = probe("stream=orders&group=billing&max-time-lag=1h").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = probe("stream=ordres&max-lag=5").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a typo must not pass: {body}"
    );
    assert!(body.contains("no stream ordres"), "{body}");
    let (status, body) = probe("max-time-lag=soon").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn dead_letters_of_a_deleted_stream_are_a_row_of_their_own() {
    let (server, _, _, app) = setup(Config::default()).await;
    server.cli(&["XADD", "kept", "*", "k", "v"]).expect("xadd");
    server
        .cli(&["XADD", "{kept}:dlq", "*", "sk-group", "g", "k", "v"])
        .expect("xadd");
    for _ in 0..2 {
        server
            .cli(&["XADD", "{gone}:dlq", "*", "sk-group", "g", "k", "v"])
            .expect("xadd");
    }
    let o = get_json(&app, "/api/overview").await;
    let rows = o["streams"].as_array().expect("rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["gone", "kept"], "{o}");
    let gone = &rows[0];
    assert_eq!(gone["dead_letters"], 2, "{gone}");
    assert!(
        gone["error"].as_str().is_some_and(|e| e.contains("gone")),
        "{gone}"
    );
    assert_eq!(rows[1]["dead_letters"], 1);
    assert_eq!(o["summary"]["total_dead_letters"], 3);
    // Its page lists them.
    let dlq = get_json(
        &app,
        &format!("/api/dlq?key={}", gone["key"].as_str().expect("key")),
    )
    .await;
    assert_eq!(dlq["total"], 2, "{dlq}");
}

#[tokio::test]
async fn a_resharded_stream_is_one_row_with_the_shards_of_every_live_generation() {
    use streamkeeper::shard::ShardLayout;
    let (server, redis, _, app) = setup(Config::default()).await;
    let cli = |args: &[&str]| server.cli(args).expect("redis-cli");
    let clicks = streamkeeper::StreamKey::new("clicks").expect("key");
    ShardLayout::create(&redis, &clicks, 3)
        .await
        .expect("shard create");
    for i in 0..3 {
        let shard = format!("{{clicks:{i}}}");
        cli(&["XADD", &shard, "*", "k", "v"]);
        cli(&["XGROUP", "CREATE", &shard, "g", "0"]);
    }
    // Down to 2 shards: the 3 sealed ones still count until retired.
    streamkeeper::shard::resize(&redis, &clicks, 2, &mut |_| {})
        .await
        .expect("resize");
    cli(&["XADD", "{clicks:1~1}", "*", "k", "v"]);
    let o = get_json(&app, "/api/overview").await;
    let top: Vec<&str> = o["streams"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(top, ["clicks"], "one row, no stray shard rows: {o}");
    let key = streamkeeper_web::key_of(b"clicks");
    let rows = get_json(&app, &format!("/api/overview?shards_of={key}")).await;
    let rows = rows["streams"].as_array().expect("rows");
    // The sum first, then the shards (in the table's sort: by name).
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "clicks",
            "{clicks:0}",
            "{clicks:0~1}",
            "{clicks:1}",
            "{clicks:1~1}",
            "{clicks:2}"
        ],
        "{rows:?}"
    );
    assert_eq!(rows[0]["shards"], 2, "the current generation's count");
    assert_eq!(rows[0]["length"], 4, "every live generation's entries");
    assert_eq!(rows[0]["groups"][0]["undelivered"], 4);
}
