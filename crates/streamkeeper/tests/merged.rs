//! The merged reader of a sharded stream on one server: the last N across
//! shards over many backward pages, a range, and following from the end of
//! a bounded read with nothing skipped or repeated in between.

mod common;

use std::time::Duration;

use common::{key, setup};
use streamkeeper::shard::{MergedReader, ShardLayout};
use streamkeeper::{Connector, StreamId, StreamKey};

async fn xadd(redis: &Connector, shard: &StreamKey, ms: u64, seq: u64) {
    let mut conn = redis.shared();
    let _: String = redis::cmd("XADD")
        .arg(shard.as_str())
        .arg(format!("{ms}-{seq}"))
        .arg("v")
        .arg("x")
        .query_async(&mut conn)
        .await
        .expect("xadd");
}

/// Every entry a bounded reader yields, as (shard index, ID).
async fn drain(mut r: MergedReader) -> (MergedReader, Vec<(usize, StreamId)>) {
    let mut got = Vec::new();
    while let Some(e) = r.next().await.expect("next") {
        got.push((e.index, e.entry.id));
    }
    (r, got)
}

#[tokio::test]
async fn the_last_n_over_many_backward_pages_are_the_n_greatest_by_id_then_shard() {
    let (_server, redis) = setup().await;
    let layout = ShardLayout::create(&redis, &key("m"), 2)
        .await
        .expect("create");
    // Shard 0: ms 1..=1500 seq 0; shard 1: every tenth ms, each a tie
    // with shard 0 broken by shard index.
    for ms in 1..=1500u64 {
        xadd(&redis, &layout.shard(0), ms, 0).await;
        if ms % 10 == 0 {
            xadd(&redis, &layout.shard(1), ms, 0).await;
        }
    }
    // 1200 of 1650: more than one backward page (1000) from shard 0.
    let last = MergedReader::last(&redis, layout.shards(), 1200)
        .await
        .expect("last");
    let (_, got) = drain(last).await;
    let mut all: Vec<(StreamId, usize)> = (1..=1500u64)
        .flat_map(|ms| {
            let id = StreamId::new(ms, 0);
            let both = ms % 10 == 0;
            std::iter::once((id, 0)).chain(both.then_some((id, 1)))
        })
        .collect();
    all.sort();
    let expected: Vec<(usize, StreamId)> = all[all.len() - 1200..]
        .iter()
        .map(|(id, i)| (*i, *id))
        .collect();
    assert_eq!(got.len(), 1200);
    assert_eq!(got, expected);
    // By hand: up to ms 409 there are 409 + 40 = 449 entries, then the tie
    // at 410-0 (shard 0 first): the cut of 1650 - 1200 = 450 falls inside
    // it, so shard 1's 410-0 is in and shard 0's is not; shard 0 gives
    // 1090 (411..=1500).
    assert_eq!(got[0], (1, StreamId::new(410, 0)), "{:?}", &got[..3]);
    assert_eq!(got[1], (0, StreamId::new(411, 0)));
    assert_eq!(got.iter().filter(|(i, _)| *i == 0).count(), 1090);
}

#[tokio::test]
async fn following_goes_on_from_where_the_bounded_read_ended_with_no_gap_or_repeat() {
    let (_server, redis) = setup().await;
    let layout = ShardLayout::create(&redis, &key("f"), 3)
        .await
        .expect("create");
    xadd(&redis, &layout.shard(0), 1, 0).await;
    xadd(&redis, &layout.shard(2), 2, 0).await;
    // A range: shard 1 does not exist yet and reads as empty.
    let range = MergedReader::range(&redis, layout.shards(), StreamId::new(2, 0), StreamId::MAX)
        .await
        .expect("range");
    // Appended after the read began: beyond its end, so not in it…
    xadd(&redis, &layout.shard(1), 3, 0).await;
    let (range, got) = drain(range).await;
    assert_eq!(got, vec![(2, StreamId::new(2, 0))]);
    // …but the first thing following finds.
    let mut follow = range.follow(Duration::from_millis(500));
    let batch = follow.next_batch().await.expect("batch");
    let ids: Vec<(usize, StreamId)> = batch.iter().map(|e| (e.index, e.entry.id)).collect();
    assert_eq!(ids, vec![(1, StreamId::new(3, 0))]);
    assert_eq!(batch[0].shard, layout.shard(1));
    // Nothing new: an empty batch after the block time, not an error.
    assert!(follow.next_batch().await.expect("idle").is_empty());
    xadd(&redis, &layout.shard(2), 9, 0).await;
    xadd(&redis, &layout.shard(0), 8, 0).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let batch = follow.next_batch().await.expect("batch");
        ids.extend(batch.iter().map(|e| (e.index, e.entry.id)));
    }
    assert_eq!(ids.len(), 2);
    ids.sort();
    assert_eq!(
        ids,
        vec![(0, StreamId::new(8, 0)), (2, StreamId::new(9, 0))]
    );
}
