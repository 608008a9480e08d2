//! The key scheme of docs/design.md §4, in one place: every key streamkeeper
//! derives from a stream or a scheduler namespace is named here, so no
//! other module writes `format!("{{{s}}}:dlq")`.
//!
//! A derived key of stream `S` is in S's hash slot (`{S}:suffix`, or
//! `S:suffix` when S already has a hash tag), so multi-key scripts work on
//! Redis Cluster.

pub use crate::types::key_slot;
use crate::types::StreamKey;

/// The keys a stream owns (all in the stream's hash slot).
///
/// ```
/// use streamkeeper::{keys::StreamKeys, StreamKey};
/// let s = StreamKey::new("orders").unwrap();
/// assert_eq!(StreamKeys::dlq(&s), "{orders}:dlq");
/// assert_eq!(StreamKeys::once(&s, "k1"), "{orders}:once:k1");
/// let t = StreamKey::new("{tenant}.orders").unwrap();
/// assert_eq!(StreamKeys::retry(&t), "{tenant}.orders:retry");
/// ```
#[derive(Debug)]
pub struct StreamKeys;

impl StreamKeys {
    /// `{S}:dlq`: the dead-letter stream.
    pub fn dlq(stream: &StreamKey) -> String {
        stream.derived("dlq")
    }

    /// `{S}:retry`: the zset of entries waiting for a delayed retry,
    /// written by streamkeeper before 0.19 (payload copies re-appended to
    /// the stream when due). Only drained now: see [`retries`](Self::retries).
    pub fn retry(stream: &StreamKey) -> String {
        stream.derived("retry")
    }

    /// `{S}:retry:<group>`: the group's parked retries, a zset of entry IDs
    /// (score = due ms). The entries stay pending in the group, held by the
    /// reserved consumer [`meta::RETRY_CONSUMER`](crate::meta::RETRY_CONSUMER).
    ///
    /// ```
    /// use streamkeeper::{keys::StreamKeys, GroupName, StreamKey};
    /// let s = StreamKey::new("orders").unwrap();
    /// let g = GroupName::new("billing").unwrap();
    /// assert_eq!(StreamKeys::retries(&s, &g), "{orders}:retry:billing");
    /// ```
    pub fn retries(stream: &StreamKey, group: &crate::types::GroupName) -> String {
        stream.derived(&format!("retry:{group}"))
    }

    /// `{S}:retry-why:<group>`: why each parked retry of the group failed
    /// last (hash: entry ID → the handler's error), until it is taken.
    pub fn retry_reasons(stream: &StreamKey, group: &crate::types::GroupName) -> String {
        stream.derived(&format!("retry-why:{group}"))
    }

    /// `{S}:janitor`: the janitor lease (SET NX PX).
    pub fn janitor_lease(stream: &StreamKey) -> String {
        stream.derived("janitor")
    }

    /// `{S}:once:<key>`: a dedupe key of `send_once` and two-step ticks.
    pub fn once(stream: &StreamKey, key: &str) -> String {
        stream.derived(&format!("once:{key}"))
    }

    /// `{S}:attempts`: handler runs started and not settled, per group and
    /// entry (see `consumer/attempts.rs`).
    pub fn attempts(stream: &StreamKey) -> String {
        stream.derived("attempts")
    }

    /// `<group> NUL <id>`: an entry's field in [`attempts`](Self::attempts)
    /// (the Lua scripts spell it `group .. '\0' .. id`).
    pub fn attempt_field(group: &crate::types::GroupName, id: crate::types::StreamId) -> Vec<u8> {
        let mut field = group.as_str().as_bytes().to_vec();
        field.push(0);
        field.extend_from_slice(id.to_string().as_bytes());
        field
    }

    /// `{S}:retry-mover`: the lease of the one retry mover of the stream.
    pub fn retry_mover(stream: &StreamKey) -> String {
        stream.derived("retry-mover")
    }

    /// `{S}:shards`: the layout of a sharded stream.
    pub fn shards(stream: &StreamKey) -> String {
        stream.derived("shards")
    }

    /// `{S:i}`: shard `i` of the sharded logical stream S. Its hash tag is
    /// `S:i`, so each shard has a slot of its own (NOT `{S}:i`, which
    /// would put every shard in S's slot); its derived keys follow the
    /// rule above (`{S:i}:dlq`, …).
    ///
    /// ```
    /// use streamkeeper::{keys::StreamKeys, StreamKey};
    /// let s = StreamKey::new("orders").unwrap();
    /// assert_eq!(StreamKeys::shard(&s, 3).as_str(), "{orders:3}");
    /// assert_eq!(StreamKeys::dlq(&StreamKeys::shard(&s, 3)), "{orders:3}:dlq");
    /// ```
    pub fn shard(stream: &StreamKey, i: u32) -> StreamKey {
        StreamKey::from_trusted(format!("{{{}:{i}}}", stream.as_str()))
    }

    /// Shard `i` of layout generation `generation` (docs/design.md §6
    /// "Resharding"): generation 0 is [`shard`](Self::shard)'s `{S:i}`,
    /// a later one `{S:i~g}` — a slot of its own again, and never the
    /// name of another stream's shard (those end in `:digits}`).
    ///
    /// ```
    /// use streamkeeper::{keys::StreamKeys, StreamKey};
    /// let s = StreamKey::new("orders").unwrap();
    /// assert_eq!(StreamKeys::shard_of(&s, 0, 3).as_str(), "{orders:3}");
    /// assert_eq!(StreamKeys::shard_of(&s, 2, 3).as_str(), "{orders:3~2}");
    /// assert_eq!(StreamKeys::parse_shard("{orders:3~2}"), Some(("orders", 3)));
    /// ```
    pub fn shard_of(stream: &StreamKey, generation: u32, i: u32) -> StreamKey {
        match generation {
            0 => Self::shard(stream, i),
            g => StreamKey::from_trusted(format!("{{{}:{i}~{g}}}", stream.as_str())),
        }
    }

    /// `{S:i~g}:sealed`: the cut ID of a shard sealed by a resize (no
    /// entry can be appended after it), in the shard's own slot.
    pub fn sealed(shard: &StreamKey) -> String {
        shard.derived("sealed")
    }

    /// The reverse of [`shard`](Self::shard): `{S:i}` → `(S, i)`, for a
    /// name that has a shard's shape (whether `S` is sharded, and has that
    /// many shards, only its layout says).
    pub fn parse_shard(name: &str) -> Option<(&str, u32)> {
        Self::parse_shard_of(name).map(|(s, _, i)| (s, i))
    }

    /// The reverse of [`shard_of`](Self::shard_of): `{S:i~g}` → `(S, g, i)`
    /// (`{S:i}` → `(S, 0, i)`).
    pub fn parse_shard_of(name: &str) -> Option<(&str, u32, u32)> {
        let inner = name.strip_prefix('{')?.strip_suffix('}')?;
        let (stream, place) = inner.rsplit_once(':')?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let (i, g) = match place.split_once('~') {
            Some((i, g)) if digits(g) && !g.starts_with('0') => (i, g.parse().ok()?),
            Some(_) => return None,
            None => (place, 0),
        };
        if stream.is_empty() || !digits(i) {
            return None;
        }
        Some((stream, g, i.parse().ok()?))
    }

    /// `{S}:members:<group>`: ordered mode's live members of a group on
    /// the sharded stream S (zset: member → heartbeat ms).
    pub fn members(stream: &StreamKey, group: &str) -> String {
        stream.derived(&format!("members:{group}"))
    }

    /// `{S:i}:owner:<group>`: the owner lease of shard `shard` for a group
    /// in ordered mode (value `<member>:<epoch>`, the fencing token).
    pub fn owner(shard: &StreamKey, group: &str) -> String {
        shard.derived(&format!("owner:{group}"))
    }

    /// `{S:i}:epoch:<group>`: the fencing epoch counter of a shard's lease.
    pub fn epoch(shard: &StreamKey, group: &str) -> String {
        shard.derived(&format!("epoch:{group}"))
    }
}

/// What [`StreamKeys`] and [`SchedulerKeys`] name as streams of their own
/// (`{S}:dlq`, `{N}:history`, an archive `{S}:archive`): a listing of a
/// user's streams leaves them out.
const DERIVED_STREAMS: [&str; 3] = ["dlq", "history", "archive"];

/// Whether `name` is a stream streamkeeper derives from another or keeps
/// for itself (`{orders}:dlq`, `{streamkeeper}:history`), not a user's.
///
/// ```
/// use streamkeeper::keys::is_derived_stream;
/// assert!(is_derived_stream("{orders}:dlq"));
/// assert!(is_derived_stream("{streamkeeper}:history"));
/// assert!(!is_derived_stream("orders:dlq"));
/// ```
pub fn is_derived_stream(name: &str) -> bool {
    name.starts_with('{')
        && DERIVED_STREAMS.iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|rest| rest.ends_with("}:"))
        })
}

/// The scheduler's keys in namespace `N` (all in `{N}`'s hash slot).
///
/// ```
/// let k = streamkeeper::keys::SchedulerKeys::new("streamkeeper");
/// assert_eq!(k.due, "{streamkeeper}:due");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerKeys {
    /// `{N}:schedules`: hash name → definition JSON.
    pub schedules: String,
    /// `{N}:due`: zset name → next due ms.
    pub due: String,
    /// `{N}:state`: hash name → last tick.
    pub state: String,
    /// `{N}:outbox`: ticks of the two-step emit.
    pub outbox: String,
    /// `{N}:history`: the dashboard's samples.
    pub history: String,
    /// `{N}:history-writer`: the lease of the one dashboard that writes
    /// the samples (plain, see [`crate::lease`]).
    pub history_writer: String,
}

impl SchedulerKeys {
    /// The keys of namespace `ns`.
    pub fn new(ns: &str) -> Self {
        let key = |suffix: &str| format!("{{{ns}}}:{suffix}");
        SchedulerKeys {
            schedules: key("schedules"),
            due: key("due"),
            state: key("state"),
            outbox: key("outbox"),
            history: key("history"),
            history_writer: key("history-writer"),
        }
    }
}
