//! The connection under odd settings, against a real server: a blocking
//! read longer than the I/O timeout, Redis errors as one line, and URL
//! secrets that never reach `Debug` output or errors.

use std::time::{Duration, Instant};

use streamkeeper::{Connector, Reader, StartFrom, StreamKey};
use streamkeeper_testkit::RedisServer;

mod common;
use common::cmd;

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
