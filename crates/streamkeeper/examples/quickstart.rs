//! The README's library tour, runnable:
//! `cargo run -p streamkeeper --example quickstart -- redis://127.0.0.1:6379`
//! (without an argument it starts a private redis-server).
//!
//! Produces three orders, then consumes them as group `billing` and stops
//! once all three are acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use streamkeeper::{
    fields, Connector, GroupConsumer, GroupName, Outcome, Producer, StartFrom, StreamKey,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, url) =
        streamkeeper_testkit::RedisServer::url_or_private(std::env::args().nth(1))?;
    let redis = Connector::connect(&url).await?;
    let orders = StreamKey::new("orders")?;

    let producer = Producer::new(&redis, orders.clone());
    for (sku, qty) in [("a-1", "2"), ("b-7", "1"), ("c-3", "5")] {
        producer.send(&fields([("sku", sku), ("qty", qty)])).await?;
    }

    let shutdown = CancellationToken::new();
    let done = Arc::new(AtomicU64::new(0));
    let stats = GroupConsumer::new(&redis, orders, GroupName::new("billing")?)
        .create_group(StartFrom::Beginning)
        .claim_after(Duration::from_secs(30))
        .max_deliveries(5)
        .run(
            |d| {
                let (done, shutdown) = (done.clone(), shutdown.clone());
                async move {
                    println!(
                        "{} sku={:?} (attempt #{})",
                        d.id(),
                        d.entry().get_str("sku"),
                        d.attempt()
                    );
                    if done.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                        shutdown.cancel();
                    }
                    Ok::<_, std::io::Error>(Outcome::Ack)
                }
            },
            8,
            shutdown.clone(),
        )
        .await?;
    println!("{stats:?}");
    Ok(())
}
