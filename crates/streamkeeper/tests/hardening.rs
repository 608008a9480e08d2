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
