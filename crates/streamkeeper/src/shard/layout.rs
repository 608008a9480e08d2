//! The layout of a sharded stream, kept in `{S}:shards` (hash: `count`,
//! `version`, and after a resize `gens`: the live generations, oldest
//! first, as `g:count` separated by spaces; the last is the current one,
//! the others are sealed and drain). Docs/design.md §6 "Resharding".

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
    generation: u32,
    /// Older generations still live (sealed, draining), oldest first.
    older: Vec<Generation>,
}

/// One generation of a sharded stream's layout: its number and how many
/// shards it has. A resize starts a new generation; the shards of older
/// ones are sealed (nothing more can be appended) and drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    /// Its number: 0 for the layout `shard create` made, one more per resize.
    pub generation: u32,
    /// Its shard count.
    pub count: u32,
}

impl Generation {
    /// Its shards' keys, in order.
    pub fn shards(&self, stream: &StreamKey) -> Vec<StreamKey> {
        (0..self.count)
            .map(|i| StreamKeys::shard_of(stream, self.generation, i))
            .collect()
    }
}

/// Parses a `gens` field: `g:count` items separated by spaces, strictly
/// growing generations.
pub(crate) fn parse_gens(text: &str) -> Option<Vec<Generation>> {
    let mut gens: Vec<Generation> = Vec::new();
    for item in text.split_whitespace() {
        let (g, n) = item.split_once(':')?;
        let generation: u32 = g.parse().ok()?;
        let count: u32 = n.parse().ok().filter(|n| (1..=MAX_SHARDS).contains(n))?;
        if gens.last().is_some_and(|l| l.generation >= generation) {
            return None;
        }
        gens.push(Generation { generation, count });
    }
    (!gens.is_empty()).then_some(gens)
}

/// The text of a `gens` field.
pub(crate) fn format_gens(gens: &[Generation]) -> String {
    gens.iter()
        .map(|g| format!("{}:{}", g.generation, g.count))
        .collect::<Vec<_>>()
        .join(" ")
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
        ShardCreate { stream, count }.invoke(redis).await?;
        match Self::open(redis, stream).await? {
            Some(layout) => Ok(layout),
            None => Err(Error::Protocol {
                command: "HSET",
                detail: format!("the layout of {stream} is gone right after creating it"),
            }),
        }
    }

    /// The stream keys that hold `stream`'s entries: the shards of every
    /// live generation when it is a sharded stream (sealed ones still
    /// draining included), else `stream` itself. For commands that act on
    /// every key alike (list, trim, dump, create a group).
    pub async fn keys_of(redis: &Connector, stream: &StreamKey) -> Result<Vec<StreamKey>> {
        Ok(match Self::open(redis, stream).await? {
            Some(layout) => layout.all_shards(),
            None => vec![stream.clone()],
        })
    }

    /// The layout of `stream` if it is a sharded stream.
    pub async fn open(redis: &Connector, stream: &StreamKey) -> Result<Option<Self>> {
        let mut conn = redis.shared();
        let layout_key = StreamKeys::shards(stream);
        let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::pipe()
            .cmd("HGET")
            .arg(&layout_key)
            .arg("count")
            .cmd("HGET")
            .arg(&layout_key)
            .arg("gens")
            .query_async(&mut conn)
            .await;
        let (count, gens) = match read {
            Ok((count, gens)) => (count, gens),
            Err(e) if crate::error::is_noperm(&e) => return unreadable_layout(redis, stream).await,
            Err(e) => return Err(Error::redis(format!("HGET {layout_key}"), e)),
        };
        let gens = match gens.as_deref().map(parse_gens) {
            None => None,
            Some(Some(gens)) => Some(gens),
            Some(None) => {
                return Err(Error::Protocol {
                    command: "HGET",
                    detail: format!("{layout_key} has a bad gens field {gens:?}"),
                })
            }
        };
        match count {
            None => Ok(None),
            Some(c) => {
                let count = c
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_SHARDS).contains(n));
                let (generation, older) = match &gens {
                    Some(gens) => {
                        let (current, older) = gens.split_last().expect("parse_gens: not empty");
                        if Some(current.count) != count {
                            return Err(Error::Protocol {
                                command: "HGET",
                                detail: format!(
                                    "{layout_key} says count {c} but its current generation has {} shards",
                                    current.count
                                ),
                            });
                        }
                        (current.generation, older.to_vec())
                    }
                    None => (0, Vec::new()),
                };
                match count {
                    Some(count) => {
                        // A count lowered by hand would hide the last
                        // shards' entries from every command: refuse.
                        // Only a layout never resized has a count that
                        // was ever meant to be set by hand; a resized
                        // one is written by scripts alone, and a resize
                        // that lost a race may leave empty shards beyond
                        // the count for a moment (it deletes them).
                        let beyond = StreamKeys::shard_of(stream, generation, count);
                        // A user not granted EXISTS skips this check.
                        let exists: bool = if gens.is_some() {
                            false
                        } else {
                            match redis::cmd("EXISTS")
                                .arg(beyond.as_str())
                                .query_async(&mut conn)
                                .await
                            {
                                Ok(exists) => exists,
                                Err(e) if crate::error::is_noperm(&e) => false,
                                Err(e) => return Err(Error::redis(format!("EXISTS {beyond}"), e)),
                            }
                        };
                        if exists {
                            return Err(Error::InvalidInput(format!(
                                "{} says {stream} has {count} shards but {beyond} exists too: the layout was changed by hand (use `streamkeeper shard resize`); set the count back with HSET {} count <N>",
                                StreamKeys::shards(stream),
                                StreamKeys::shards(stream)
                            )));
                        }
                        Ok(Some(ShardLayout {
                            stream: stream.clone(),
                            count,
                            generation,
                            older,
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

    /// How many shards the current generation has (where appends go).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The current generation's number (0 until the first resize).
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The current generation.
    pub fn current(&self) -> Generation {
        Generation {
            generation: self.generation,
            count: self.count,
        }
    }

    /// Older generations still live: sealed, their entries still being
    /// handled (or not yet retired), oldest first.
    pub fn older(&self) -> &[Generation] {
        &self.older
    }

    /// Every live generation, oldest first; the current one last.
    pub fn generations(&self) -> Vec<Generation> {
        let mut all = self.older.clone();
        all.push(self.current());
        all
    }

    /// Shard `i`'s stream key in the current generation (`{S:i}` in
    /// generation 0, `{S:i~g}` later).
    pub fn shard(&self, i: u32) -> StreamKey {
        StreamKeys::shard_of(&self.stream, self.generation, i)
    }

    /// The current generation's shard keys, in order: where appends go.
    pub fn shards(&self) -> Vec<StreamKey> {
        (0..self.count).map(|i| self.shard(i)).collect()
    }

    /// The shard keys of every live generation, oldest first: every key
    /// that may still hold entries to handle.
    pub fn all_shards(&self) -> Vec<StreamKey> {
        self.generations()
            .iter()
            .flat_map(|g| g.shards(&self.stream))
            .collect()
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
