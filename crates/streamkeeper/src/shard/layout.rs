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
        let count = ShardCreate { stream, count }.invoke(redis).await?;
        Ok(ShardLayout {
            stream: stream.clone(),
            count,
        })
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

/// `lua/shard_create.lua`: its KEYS and ARGV, and its reply (the count
/// in force) or refusals (`SKPLAIN`, `SKCOUNT <n>`) as errors.
struct ShardCreate<'a> {
    stream: &'a StreamKey,
    count: u32,
}

impl ShardCreate<'_> {
    async fn invoke(&self, redis: &Connector) -> Result<u32> {
        let mut conn = redis.shared();
        let got: redis::RedisResult<u32> = crate::scripts::SHARD_CREATE
            .key(self.stream.as_str())
            .key(StreamKeys::shards(self.stream))
            .arg(self.count)
            .invoke_async(&mut conn)
            .await;
        got.map_err(|e| self.refusal(e))
    }

    /// The error a refusal stands for, by its code.
    fn refusal(&self, e: redis::RedisError) -> Error {
        let stream = self.stream;
        match crate::error::error_code(&e).as_deref() {
            // `InvalidInput`: what the caller asked for cannot be done.
            Some("SKPLAIN") => Error::InvalidInput(format!(
                "{stream} already exists as a plain stream (or another key): pick another name, or move its entries (dump, restore) after deleting it"
            )),
            Some("SKCOUNT") => match e.detail().and_then(|d| d.trim().parse().ok()) {
                Some(have) => Error::ShardCountMismatch {
                    stream: stream.clone(),
                    have,
                    wanted: self.count,
                },
                None => Error::redis(format!("creating the layout of {stream}"), e),
            },
            _ => Error::redis(format!("creating the layout of {stream}"), e),
        }
    }
}
