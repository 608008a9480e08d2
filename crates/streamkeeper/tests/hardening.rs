//! Library behaviour under odd settings (issue 10), against a real server.

use std::time::{Duration, Instant};

use streamkeeper::{Connector, Reader, StartFrom, StreamKey};
use streamkeeper_testkit::RedisServer;

#[tokio::test]
async fn a_reader_following_with_a_long_block_waits_the_whole_block() {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    let s = StreamKey::new("s").expect("key");
    // A block longer than the default 5 s + margin: the connection's
    // response timeout must follow the block set by the builder.
    let mut reader = Reader::new(&redis, s.clone(), StartFrom::End)
        .await
        .expect("reader")
        .follow(Duration::from_secs(12));
    let writer = redis.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(8_500)).await;
        let mut conn = writer.shared();
        let _: String = redis::cmd("XADD")
            .arg("s")
            .arg("*")
            .arg("k")
            .arg("v")
            .query_async(&mut conn)
            .await
            .expect("xadd");
    });
    let t = Instant::now();
    let page = reader.next_page().await.expect("no timeout while blocking");
    assert_eq!(page.len(), 1, "after {:?}", t.elapsed());
}

async fn cmd<T: redis::FromRedisValue>(redis: &Connector, args: &[&str]) -> T {
    let mut conn = redis.shared();
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(&mut conn).await.expect("command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_tick_to_a_non_stream_waits_in_the_outbox_and_the_instance_runs_on() {
    use streamkeeper::scheduler::{Schedule, Scheduler};
    use tokio_util::sync::CancellationToken;
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    let scheduler = Scheduler::new(&redis, "ns").two_step(true);
    for (name, to) in [("bad", "strkey"), ("good", "ticks")] {
        let s = Schedule::every(name, Duration::from_millis(200), to).expect("schedule");
        scheduler.add(&s).await.expect("add");
    }
    let _: () = cmd(&redis, &["SET", "strkey", "x"]).await;
    let stop = CancellationToken::new();
    let instance = {
        let (s, token) = (scheduler.clone(), stop.clone());
        tokio::spawn(async move { s.run("i1", token).await })
    };
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!instance.is_finished(), "the instance keeps running");
    let good: u64 = cmd(&redis, &["XLEN", "ticks"]).await;
    assert!(good >= 3, "the good schedule fires: {good}");
    let waiting: u64 = cmd(&redis, &["HLEN", "{ns}:outbox"]).await;
    assert!(waiting >= 1, "the bad schedule's ticks wait in the outbox");
    // Fixed: the outbox recovery emits what waited.
    let _: () = cmd(&redis, &["DEL", "strkey"]).await;
    let t = Instant::now();
    loop {
        let n: u64 = cmd(&redis, &["XLEN", "strkey"]).await;
        if n >= waiting {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "only {n} of {waiting}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    instance.await.expect("join").expect("run");
}

#[tokio::test]
async fn redis_errors_read_as_the_servers_own_one_line() {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    let _: () = cmd(&redis, &["SET", "k", "v"]).await;
    let mut conn = redis.shared();
    for atomic in [false, true] {
        let mut pipe = redis::pipe();
        if atomic {
            pipe.atomic();
        }
        pipe.cmd("XLEN").arg("k").cmd("XLEN").arg("k");
        let e = pipe
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .expect_err("wrong type");
        let text = streamkeeper::error::redis_text(&e);
        assert!(text.starts_with("WRONGTYPE"), "{text}");
        assert!(
            !text.contains("Pipeline") && !text.contains("Index"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        let wrapped = streamkeeper::Error::redis("XLEN k", e).to_string();
        assert!(!wrapped.contains("18446744073709551615"), "{wrapped}");
    }
}

/// `Connector::url()`, its `Debug` and every connection error show a URL's
/// secrets as `***` (docs/design.md §6), whatever the URL form.
#[tokio::test]
async fn a_urls_secrets_never_reach_url_debug_or_errors() {
    let server = RedisServer::start().expect("redis-server");
    let url = format!(
        "{}?sentinel_password=hunter2&auth_token=hunter2",
        server.url()
    );
    let redis = Connector::connect(&url).await.expect("connect");
    for shown in [redis.url().to_string(), format!("{redis:?}")] {
        assert!(!shown.contains("hunter2"), "{shown}");
    }
    let port = streamkeeper_testkit::free_port().expect("port");
    for url in [
        format!("redis+sentinel://127.0.0.1:{port}/m?sentinel_password=hunter2"),
        format!("redis://u:hunter2@127.0.0.1:{port}/0?token=hunter2"),
        format!("redis+cluster://u:hunter2@127.0.0.1:{port}/?password=hunter2"),
        "redis+unix:///nonexistent/sk.sock?pass=hunter2".to_string(),
    ] {
        let options = streamkeeper::ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        };
        let err = Connector::connect_with(&url, options)
            .await
            .expect_err("nothing listens there");
        assert!(!err.to_string().contains("hunter2"), "{url}: {err}");
        assert!(!format!("{err:?}").contains("hunter2"), "{url}: {err:?}");
    }
}
