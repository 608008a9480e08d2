//! What a consumer run records through the `metrics` facade, read back
//! from a real Prometheus recorder installed by the test (as a library
//! user would install theirs), against a real redis-server.

mod common;
use common::{group, key, setup};

use streamkeeper::{fields, GroupConsumer, Outcome, Producer, StartFrom};
use tokio_util::sync::CancellationToken;

/// The value of the series written exactly as `series`.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

#[tokio::test]
async fn a_consumer_run_counts_each_outcome_once_per_run() {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder of this test binary");
    streamkeeper::metrics::describe();
    let (_server, redis) = setup().await;
    let s = key("jobs");
    let batch: Vec<_> = (0..20).map(|i| fields([("n", i.to_string())])).collect();
    Producer::new(&redis, s.clone())
        .send_batch(&batch)
        .await
        .expect("produce");
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    GroupConsumer::new(&redis, s.clone(), group("g"))
        .create_group(StartFrom::Beginning)
        .run(
            move |d| {
                let (seen, stopper) = (seen.clone(), stopper.clone());
                async move {
                    let n: u64 = d
                        .entry()
                        .get_str("n")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 20 {
                        stopper.cancel();
                    }
                    match n % 5 {
                        0 => Err("boom"),
                        1 => Ok(Outcome::Retry {
                            after: Some(std::time::Duration::from_secs(3600)),
                        }),
                        2 => Ok(Outcome::DeadLetter {
                            reason: "bad".into(),
                        }),
                        3 => panic!("handler panic on {n}"),
                        _ => Ok(Outcome::Ack),
                    }
                }
            },
            4,
            stop,
        )
        .await
        .expect("run");
    let scrape = handle.render();
    let handled = |o: &str| {
        value(
            &scrape,
            &format!(
                r#"streamkeeper_entries_handled_total{{stream="jobs",group="g",outcome="{o}"}}"#
            ),
        )
    };
    assert_eq!(handled("ack"), Some(4.0), "{scrape}");
    assert_eq!(handled("retry"), Some(4.0), "{scrape}");
    assert_eq!(handled("failed"), Some(8.0), "errors and panics: {scrape}");
    assert_eq!(handled("dead_letter"), Some(4.0), "{scrape}");
    assert_eq!(
        value(
            &scrape,
            r#"streamkeeper_in_flight{stream="jobs",group="g"}"#
        ),
        Some(0.0),
        "panicked runs left the gauge too: {scrape}"
    );
    assert!(
        scrape.contains("# TYPE streamkeeper_entries_handled_total counter"),
        "{scrape}"
    );
}
