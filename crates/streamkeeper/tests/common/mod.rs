//! Helpers shared by the library's integration tests: a private server
//! with a connector, typed names, and an async `eventually`.

#![allow(dead_code)] // each test file uses a different subset

use std::future::Future;
use std::time::{Duration, Instant};

use streamkeeper::{Connector, GroupName, StreamKey};
use streamkeeper_testkit::RedisServer;

/// A private redis-server on a unix socket and a connector to it.
pub async fn setup() -> (RedisServer, Connector) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect(&server.url()).await.expect("connect");
    (server, redis)
}

/// A stream key (panics on a bad name: tests only).
pub fn key(s: &str) -> StreamKey {
    StreamKey::new(s).expect("key")
}

/// A group name (panics on a bad name: tests only).
pub fn group(s: &str) -> GroupName {
    GroupName::new(s).expect("group")
}

/// Polls the async `cond` every 20 ms until it holds or `timeout` passes;
/// returns whether it held. Use it instead of sleeping.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
