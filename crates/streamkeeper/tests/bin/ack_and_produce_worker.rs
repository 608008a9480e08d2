//! The worker half of `exactly_once.rs`'s `ack_and_produce_survives_a_sigkill_loop`:
//! a consumer of `{p}.in` that turns each entry into one `{p}.out` entry with
//! `exactly_once::ack_and_produce`. The test starts it (path from
//! `CARGO_BIN_EXE_sk-test-ack-and-produce-worker`) and SIGKILLs it mid-batch.
//!
//! Usage: `sk-test-ack-and-produce-worker <redis-url>`. Not installed: a
//! test helper, built with the tests.

use std::time::Duration;

use streamkeeper::{exactly_once, fields, Connector, GroupConsumer, GroupName, Outcome, StreamKey};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .ok_or("usage: sk-test-ack-and-produce-worker <redis-url>")?;
    tokio::runtime::Runtime::new()?.block_on(work(&url))
}

async fn work(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let redis = Connector::connect(url).await?;
    let out = StreamKey::new("{p}.out")?;
    let stats = GroupConsumer::new(&redis, StreamKey::new("{p}.in")?, GroupName::new("g")?)
        .claim_after(Duration::from_millis(300))
        .batch(10)
        .run(
            move |d| {
                let out = out.clone();
                async move {
                    let id = d.id().to_string();
                    // Work takes a while, so kills land mid-batch.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    exactly_once::ack_and_produce(&d, &out, &fields([("in", id.as_str())])).await?;
                    // Manual: the script acked it already.
                    Ok::<_, streamkeeper::Error>(Outcome::Ack)
                }
            },
            4,
            CancellationToken::new(),
        )
        .await;
    eprintln!("{stats:?}");
    Ok(())
}
