//! The public vocabulary: stream keys, group and consumer names, stream IDs
//! and entries.
//!
//! IDs are parsed once into [`StreamId`] (ordered like Redis orders them);
//! entries keep their fields as ordered byte pairs, exactly as Redis holds
//! them, so nothing is lost between streamkeeper and other clients.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name; fails on an empty one.
            pub fn new(name: impl Into<String>) -> Result<Self> {
                let name = name.into();
                if name.is_empty() {
                    return Err(Error::InvalidInput(concat!($what, " must not be empty").into()));
                }
                Ok(Self(name))
            }

            /// The name as Redis sees it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl redis::ToRedisArgs for $name {
            fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
                out.write_arg(self.0.as_bytes())
            }
        }

        impl redis::ToSingleRedisArg for $name {}

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// As its text (`Display`), so JSON shows the plain name.
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// The key of a stream, e.g. `orders`.
    ///
    /// Derived keys (dead letters, retries, leases) live in the same hash
    /// slot so multi-key scripts work on Redis Cluster:
    /// ```
    /// # use streamkeeper::StreamKey;
    /// let s = StreamKey::new("orders").unwrap();
    /// assert_eq!(s.derived("dlq"), "{orders}:dlq");
    /// let t = StreamKey::new("{tenant1}.orders").unwrap();
    /// assert_eq!(t.derived("dlq"), "{tenant1}.orders:dlq");
    /// ```
    StreamKey,
    "stream key"
);
name_type!(
    /// The name of a consumer group.
    GroupName,
    "group name"
);
name_type!(
    /// The name of a consumer inside a group.
    ConsumerName,
    "consumer name"
);

impl StreamKey {
    /// Wraps a key this crate built itself (never empty).
    pub(crate) fn from_trusted(key: String) -> Self {
        StreamKey(key)
    }

    /// The key of a derived structure (`dlq`, `retry`, `janitor`), in the
    /// same hash slot as the stream (docs/design.md §4).
    pub fn derived(&self, suffix: &str) -> String {
        if has_hash_tag(&self.0) {
            format!("{}:{suffix}", self.0)
        } else {
            format!("{{{}}}:{suffix}", self.0)
        }
    }
}

/// The Redis Cluster hash slot of a key (CRC16/XMODEM of the key, or of
/// its `{…}` hash tag, modulo 16384).
///
/// ```
/// assert_eq!(streamkeeper::types::key_slot("{user1000}.following"), streamkeeper::types::key_slot("{user1000}.followers"));
/// assert_eq!(streamkeeper::types::key_slot("123456789"), 12739);
/// ```
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    crc16_xmodem(hashed) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// True if `key` contains a non-empty `{…}` hash tag (Redis Cluster rules).
fn has_hash_tag(key: &str) -> bool {
    match key.find('{') {
        Some(open) => key[open + 1..].find('}').is_some_and(|len| len > 0),
        None => false,
    }
}

impl ConsumerName {
    /// A name unique to this process: `<hostname>-<pid>-<random>`.
    pub fn unique() -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        let tag: u32 = rand::random();
        Self(format!("{host}-{}-{tag:08x}", std::process::id()))
    }
}

/// A stream entry ID: milliseconds and sequence number, ordered as in Redis.
///
/// ```
/// # use streamkeeper::StreamId;
/// let id: StreamId = "1700000000000-5".parse().unwrap();
/// assert_eq!(id.ms, 1_700_000_000_000);
/// assert!(id < id.next());
/// assert_eq!(id.to_string(), "1700000000000-5");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StreamId {
    /// Milliseconds since the Unix epoch (for IDs that Redis generated).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// The smallest ID, `0-0`.
    pub const MIN: StreamId = StreamId { ms: 0, seq: 0 };
    /// The largest ID.
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// An ID from its parts.
    pub const fn new(ms: u64, seq: u64) -> Self {
        StreamId { ms, seq }
    }

    /// The first ID at or after the given time.
    pub fn from_time(t: SystemTime) -> Self {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis();
        StreamId::new(u64::try_from(ms).unwrap_or(u64::MAX), 0)
    }

    /// The time encoded in the ID's millisecond part.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ms)
    }

    /// The smallest ID greater than this one.
    pub fn next(&self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId::new(self.ms, seq),
            None => StreamId::new(self.ms.saturating_add(1), 0),
        }
    }

    /// The greatest ID smaller than this one (`MIN` stays `MIN`).
    pub fn prev(&self) -> Self {
        match (self.ms, self.seq) {
            (0, 0) => StreamId::MIN,
            (ms, 0) => StreamId::new(ms - 1, u64::MAX),
            (ms, seq) => StreamId::new(ms, seq - 1),
        }
    }

    /// Parses the reply bytes of a Redis ID.
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        std::str::from_utf8(b)
            .map_err(|_| Error::InvalidId {
                input: String::from_utf8_lossy(b).into_owned(),
            })?
            .parse()
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// As `<ms>-<seq>` (`Display`), so JSON output shows IDs as Redis does.
impl serde::Serialize for StreamId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for StreamId {
    type Err = Error;

    /// Parses `<ms>-<seq>` or `<ms>` (sequence 0), as Redis accepts them.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidId { input: s.into() };
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        match s.split_once('-') {
            Some((ms, seq)) if digits(ms) && digits(seq) => Ok(StreamId::new(
                ms.parse().map_err(|_| bad())?,
                seq.parse().map_err(|_| bad())?,
            )),
            None if digits(s) => Ok(StreamId::new(s.parse().map_err(|_| bad())?, 0)),
            _ => Err(bad()),
        }
    }
}

impl redis::ToRedisArgs for StreamId {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        out.write_arg(self.to_string().as_bytes())
    }
}

impl redis::ToSingleRedisArg for StreamId {}

/// Where a reader or a new group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first entry of the stream (`0` / `-`).
    Beginning,
    /// Only entries added from now on (`$`).
    End,
    /// Entries after this ID (exclusive, as `XREAD` and `XGROUP CREATE` do).
    After(StreamId),
    /// Entries at or after this time.
    Time(SystemTime),
}

impl StartFrom {
    /// The ID argument for `XGROUP CREATE`/`XREAD`: entries strictly after
    /// it are delivered.
    pub fn as_arg(&self) -> String {
        match self.last_before() {
            Some(id) => id.to_string(),
            None => "$".into(),
        }
    }
}

impl StartFrom {
    /// The ID after which entries start (exclusive), or `None` for
    /// [`StartFrom::End`], which depends on the stream.
    pub fn last_before(&self) -> Option<StreamId> {
        match self {
            StartFrom::Beginning => Some(StreamId::MIN),
            StartFrom::End => None,
            StartFrom::After(id) => Some(*id),
            StartFrom::Time(t) => Some(StreamId::from_time(*t).prev()),
        }
    }
}

impl FromStr for StartFrom {
    type Err = Error;

    /// `$`, `-`/`0`, an ID, an RFC 3339 time or a relative time (`10m ago`,
    /// `-10m`, `now-10m`; `now` is this instant).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        match s {
            "$" => return Ok(StartFrom::End),
            "-" | "0" | "0-0" => return Ok(StartFrom::Beginning),
            _ => {}
        }
        if let Ok(id) = s.parse::<StreamId>() {
            return Ok(StartFrom::After(id));
        }
        if s == "now" {
            return Ok(StartFrom::Time(SystemTime::now()));
        }
        if let Some(back) = s.strip_prefix("now-").or_else(|| s.strip_prefix('-')) {
            let d = humantime::parse_duration(back.trim()).map_err(|e| {
                Error::InvalidInput(format!(
                    "invalid relative time {s:?}: {e} (e.g. `-10m` or `now-1h`)"
                ))
            })?;
            return Ok(StartFrom::Time(
                SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
            ));
        }
        if let Some(ago) = s.strip_suffix("ago") {
            let d = humantime::parse_duration(ago.trim()).map_err(|e| {
                Error::InvalidInput(format!("invalid relative time {s:?}: {e} (e.g. `10m ago`)"))
            })?;
            return Ok(StartFrom::Time(
                SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH),
            ));
        }
        if let Ok(t) = humantime::parse_rfc3339_weak(s) {
            return Ok(StartFrom::Time(t));
        }
        Err(Error::InvalidInput(format!(
            "invalid start {s:?}: use $, -, an ID like 1700000000000-0, an RFC 3339 time, `10m ago` or `-10m`"
        )))
    }
}

/// One field name or value: raw bytes, as Redis stores them.
pub type Bytes = Vec<u8>;

/// A stream entry: its ID and its ordered field/value pairs.
///
/// ```
/// # use streamkeeper::{Entry, StreamId};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Order { sku: String, qty: u32 }
/// let fields = Entry::data_fields(&Order { sku: "a".into(), qty: 2 }).unwrap();
/// let e = Entry { id: StreamId::new(1, 0), fields };
/// assert_eq!(e.data::<Order>().unwrap(), Order { sku: "a".into(), qty: 2 });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's ID.
    pub id: StreamId,
    /// Field/value pairs in stream order (names may repeat).
    pub fields: Vec<(Bytes, Bytes)>,
}

/// The field that typed helpers put JSON into.
pub const DATA_FIELD: &str = "data";

impl Entry {
    /// The first value of the field `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of the field `name` as UTF-8 text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Deserializes the JSON in the `data` field.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        let raw = self.get(DATA_FIELD).ok_or_else(|| {
            Error::InvalidInput(format!("entry {} has no `{DATA_FIELD}` field", self.id))
        })?;
        Ok(serde_json::from_slice(raw)?)
    }

    /// The fields for a typed value: one `data` field holding its JSON.
    pub fn data_fields<T: Serialize>(value: &T) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(vec![(
            DATA_FIELD.as_bytes().to_vec(),
            serde_json::to_vec(value)?,
        )])
    }
}

/// Builds a field list from string pairs.
///
/// ```
/// let f = streamkeeper::fields([("k", "v")]);
/// assert_eq!(f, vec![(b"k".to_vec(), b"v".to_vec())]);
/// ```
pub fn fields<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<(Bytes, Bytes)> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_print_and_order_like_redis() {
        let a: StreamId = "5-10".parse().expect("id");
        let b: StreamId = "6".parse().expect("id");
        assert_eq!(b, StreamId::new(6, 0));
        assert!(a < b);
        assert!(StreamId::new(5, 9) < a);
        assert_eq!(a.to_string(), "5-10");
        for bad in ["", "-", "5-", "-5", "a-1", "1-b", "1-2-3", " 1-2", "+"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(StreamId::new(1, u64::MAX).next(), StreamId::new(2, 0));
    }

    #[test]
    fn derived_keys_share_the_slot() {
        let s = StreamKey::new("a").expect("key");
        assert_eq!(s.derived("retry"), "{a}:retry");
        let tagged = StreamKey::new("x{t}y").expect("key");
        assert_eq!(tagged.derived("dlq"), "x{t}y:dlq");
        // `{}` is not a hash tag: the whole key hashes.
        let empty = StreamKey::new("{}x").expect("key");
        assert_eq!(empty.derived("dlq"), "{{}x}:dlq");
    }

    #[test]
    fn start_from_parses_every_form() {
        assert_eq!("$".parse::<StartFrom>().expect("$"), StartFrom::End);
        assert_eq!("-".parse::<StartFrom>().expect("-"), StartFrom::Beginning);
        assert_eq!(
            "7-1".parse::<StartFrom>().expect("id"),
            StartFrom::After(StreamId::new(7, 1))
        );
        let t = "2024-01-01T00:00:00Z".parse::<StartFrom>().expect("time");
        assert_eq!(t.as_arg(), "1704067199999-18446744073709551615");
        assert!(matches!(
            "10m ago".parse::<StartFrom>().expect("ago"),
            StartFrom::Time(_)
        ));
        assert!("yesterday".parse::<StartFrom>().is_err());
        // `-10m`, `now-10m` and `10m ago` are the same instant, give or
        // take the time between the parses.
        let at = |s: &str| match s.parse::<StartFrom>().expect(s) {
            StartFrom::Time(t) => t,
            other => panic!("{s}: {other:?}"),
        };
        let ago = at("10m ago");
        for s in ["-10m", "now-10m", "- 10m"] {
            let d = at(s).duration_since(ago).unwrap_or_default();
            assert!(d < std::time::Duration::from_secs(5), "{s}: {d:?}");
        }
        assert!(at("now") > ago);
        assert!("-soon".parse::<StartFrom>().is_err());
        assert!("now-".parse::<StartFrom>().is_err());
    }
}
