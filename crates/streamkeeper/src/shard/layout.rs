//! The layout of a sharded stream, kept in `{S}:shards` (hash: `count`,
//! `version`).

use crate::conn::Connector;
use crate::error::{Error, Result};
use crate::keys::StreamKeys;
use crate::types::StreamKey;

/// The most shards a stream may have.
pub const MAX_SHARDS: u32 = 1024;

/// A sharded logical stream: its name and its shards.
///
/// ```no_run
/// # async fn f() -> streamkeeper::Result<()> {
/// use streamkeeper::{shard::ShardLayout, Connector, StreamKey};
/// let redis = Connector::connect("redis+cluster://127.0.0.1:7101").await?;
/// let orders = ShardLayout::create(&redis, &StreamKey::new("orders")?, 6).await?;
/// assert_eq!(orders.shard(2).as_str(), "{orders:2}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    stream: StreamKey,
    count: u32,
}

/// [`ShardLayout::open`] for a user not granted `HGET` (a user with only
/// stream commands, docs/design.md §6 "Least privilege"): a stream whose shard 0 exists is
/// sharded and is refused with what to grant, rather than written as a
/// plain stream no sharded consumer reads; otherwise it is a plain stream.
async fn unreadable_layout(redis: &Connector, stream: &StreamKey) -> Result<Option<ShardLayout>> {
    let shard0 = StreamKeys::shard(stream, 0);
    let mut conn = redis.shared();
    let info: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(shard0.as_str())
        .query_async(&mut conn)
        .await;
    match info {
        Err(e) if e.to_string().contains("no such key") => Ok(None),
        Err(e) if e.to_string().contains("WRONGTYPE") => Ok(None),
        _ => Err(Error::InvalidInput(format!(
            "{stream} looks sharded ({shard0} exists) but this user may not read its layout {}: grant +hget on it",
            StreamKeys::shards(stream)
        ))),
    }
}

impl ShardLayout {
    /// Makes `stream` a sharded stream of `count` shards. Idempotent for
    /// the same count; refuses when `stream` is a plain stream (or any
    /// key), when it already has another count, when `count` is 0 or over
    /// [`MAX_SHARDS`], and when the name has `{`/`}` (the shards' own hash
    /// tags would collide).
    pub async fn create(redis: &Connector, stream: &StreamKey, count: u32) -> Result<Self> {
        if count == 0 || count > MAX_SHARDS {
            return Err(Error::InvalidInput(format!(
                "a sharded stream has 1 to {MAX_SHARDS} shards, not {count}"
            )));
        }
        if stream.as_str().contains(['{', '}']) {
            return Err(Error::InvalidInput(format!(
                "{stream}: a sharded stream's name must not contain {{ or }} (its shards are {{{stream}:i}})"
            )));
        }
        let mut conn = redis.shared();
        let got: redis::RedisResult<u32> = crate::scripts::SHARD_CREATE
            .key(stream.as_str())
            .key(StreamKeys::shards(stream))
            .arg(count)
            .invoke_async(&mut conn)
            .await;
        match got {
            Ok(count) => Ok(ShardLayout {
                stream: stream.clone(),
                count,
            }),
            Err(e) if e.to_string().contains("SKPLAIN") => Err(Error::InvalidInput(format!(
                "{stream} already exists as a plain stream (or another key): pick another name, or move its entries (dump, restore) after deleting it"
            ))),
            Err(e) if e.to_string().contains("SKCOUNT") => {
                let text = e.to_string();
                let after = text.split("SKCOUNT").nth(1).unwrap_or("");
                let have: String = after
                    .chars()
                    .skip_while(|c| !c.is_ascii_digit())
                    .take_while(char::is_ascii_digit)
                    .collect();
                Err(Error::InvalidInput(format!(
                    "{stream} is already sharded {have} ways, not {count}; resharding is not supported (create a new stream)"
                )))
            }
            Err(e) => Err(Error::redis(format!("creating the layout of {stream}"), e)),
        }
    }

    /// The stream keys that hold `stream`'s entries: its shards when it is
    /// a sharded stream, else `stream` itself. For commands that act on
    /// every key alike (list, trim, dump, create a group).
    pub async fn keys_of(redis: &Connector, stream: &StreamKey) -> Result<Vec<StreamKey>> {
        Ok(match Self::open(redis, stream).await? {
            Some(layout) => layout.shards(),
            None => vec![stream.clone()],
        })
    }

    /// The layout of `stream` if it is a sharded stream.
    pub async fn open(redis: &Connector, stream: &StreamKey) -> Result<Option<Self>> {
        let mut conn = redis.shared();
        let count: Option<String> = match redis::cmd("HGET")
            .arg(StreamKeys::shards(stream))
            .arg("count")
            .query_async(&mut conn)
            .await
        {
            Ok(count) => count,
            Err(e) if crate::error::is_noperm(&e) => return unreadable_layout(redis, stream).await,
            Err(e) => {
                return Err(Error::redis(
                    format!("HGET {}", StreamKeys::shards(stream)),
                    e,
                ))
            }
        };
        match count {
            None => Ok(None),
            Some(c) => {
                let count = c
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_SHARDS).contains(n));
                match count {
                    Some(count) => {
                        // A count lowered by hand would hide the last
                        // shards' entries from every command: refuse.
                        let beyond = StreamKeys::shard(stream, count);
                        // A user not granted EXISTS skips this check.
                        let exists: bool = match redis::cmd("EXISTS")
                            .arg(beyond.as_str())
                            .query_async(&mut conn)
                            .await
                        {
                            Ok(exists) => exists,
                            Err(e) if crate::error::is_noperm(&e) => false,
                            Err(e) => return Err(Error::redis(format!("EXISTS {beyond}"), e)),
                        };
                        if exists {
                            return Err(Error::InvalidInput(format!(
                                "{} says {stream} has {count} shards but {beyond} exists too: the layout was changed by hand (streamkeeper never reshards); set the count back with HSET {} count <N>",
                                StreamKeys::shards(stream),
                                StreamKeys::shards(stream)
                            )));
                        }
                        Ok(Some(ShardLayout {
                            stream: stream.clone(),
                            count,
                        }))
                    }
                    None => Err(Error::Protocol {
                        command: "HGET",
                        detail: format!("{} has a bad count {c:?}", StreamKeys::shards(stream)),
                    }),
                }
            }
        }
    }

    /// The logical stream's name.
    pub fn stream(&self) -> &StreamKey {
        &self.stream
    }

    /// How many shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Shard `i`'s stream key `{S:i}`.
    pub fn shard(&self, i: u32) -> StreamKey {
        StreamKeys::shard(&self.stream, i)
    }

    /// Every shard's key, in order.
    pub fn shards(&self) -> Vec<StreamKey> {
        (0..self.count).map(|i| self.shard(i)).collect()
    }

    /// The shard partition key `key` routes to.
    pub fn route(&self, key: &[u8]) -> StreamKey {
        self.shard(super::route::shard_for(key, self.count))
    }
}
