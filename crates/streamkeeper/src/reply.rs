//! Parsing of raw stream replies into [`Entry`] values.
//!
//! redis-rs's typed stream replies put fields in a `HashMap`, losing their
//! order and repeats; streamkeeper promises entries exactly as Redis holds
//! them, so it reads the raw `Value`s itself.

use redis::Value;

use crate::error::{Error, Result};
use crate::types::{Entry, StreamId};

fn protocol(command: &'static str, detail: impl Into<String>) -> Error {
    Error::Protocol {
        command,
        detail: detail.into(),
    }
}

fn bytes(v: Value, command: &'static str) -> Result<Vec<u8>> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(i) => Ok(i.to_string().into_bytes()),
        other => Err(protocol(
            command,
            format!("expected a string, got {other:?}"),
        )),
    }
}

fn items(v: Value, command: &'static str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(protocol(
            command,
            format!("expected an array, got {other:?}"),
        )),
    }
}

/// An entry of an `XREAD(GROUP)`/`XRANGE` reply. `None` when the ID is
/// still pending but the entry was deleted (`[id, nil]`).
fn entry(v: Value, command: &'static str) -> Result<(StreamId, Option<Entry>)> {
    let mut parts = items(v, command)?.into_iter();
    let id = StreamId::from_bytes(&bytes(
        parts
            .next()
            .ok_or_else(|| protocol(command, "entry without id"))?,
        command,
    )?)?;
    let raw = match parts.next() {
        None | Some(Value::Nil) => return Ok((id, None)),
        Some(Value::Map(m)) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        Some(v) => items(v, command)?,
    };
    if raw.len() % 2 != 0 {
        return Err(protocol(command, "odd number of field items"));
    }
    let mut fields = Vec::with_capacity(raw.len() / 2);
    let mut it = raw.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        fields.push((bytes(k, command)?, bytes(v, command)?));
    }
    Ok((id, Some(Entry { id, fields })))
}

/// Entries of an `XRANGE`/`XREVRANGE` reply, or the entry list inside an
/// `XREAD` reply. Deleted entries are returned in `deleted`.
pub(crate) fn entries(v: Value, command: &'static str) -> Result<(Vec<Entry>, Vec<StreamId>)> {
    let list = items(v, command)?;
    let mut out = Vec::with_capacity(list.len());
    let mut deleted = Vec::new();
    for item in list {
        match entry(item, command)? {
            (_, Some(e)) => out.push(e),
            (id, None) => deleted.push(id),
        }
    }
    Ok((out, deleted))
}

/// The entries of a one-stream `XREAD`/`XREADGROUP` reply (RESP2 array or
/// RESP3 map). Nil (timeout) gives an empty list.
pub(crate) fn read_reply(v: Value, command: &'static str) -> Result<(Vec<Entry>, Vec<StreamId>)> {
    let mut all = (Vec::new(), Vec::new());
    for (_, list) in stream_lists(v, command)? {
        let (e, d) = entries(list, command)?;
        all.0.extend(e);
        all.1.extend(d);
    }
    Ok(all)
}

/// An `XREAD` reply of several streams, kept apart: each stream's name
/// (bytes) and its entries, in the order of the reply.
pub(crate) fn read_reply_by_stream(
    v: Value,
    command: &'static str,
) -> Result<Vec<(Vec<u8>, Vec<Entry>)>> {
    stream_lists(v, command)?
        .into_iter()
        .map(|(k, list)| Ok((bytes(k, command)?, entries(list, command)?.0)))
        .collect()
}

/// The `(stream name, entry list)` pairs of an `XREAD`/`XREADGROUP`
/// reply, as an array of pairs (RESP2) or a map (RESP3); nil is none.
fn stream_lists(v: Value, command: &'static str) -> Result<Vec<(Value, Value)>> {
    Ok(match v {
        Value::Nil => Vec::new(),
        Value::Map(m) => m,
        other => items(other, command)?
            .into_iter()
            .map(|s| {
                let mut kv = items(s, command)?.into_iter();
                match (kv.next(), kv.next()) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(protocol(command, "stream item without entries")),
                }
            })
            .collect::<Result<_>>()?,
    })
}

/// An `XAUTOCLAIM` reply: next cursor, claimed entries, IDs of entries
/// that were pending but no longer exist (Redis removes them from the PEL).
pub(crate) fn autoclaim_reply(v: Value) -> Result<(StreamId, Vec<Entry>, Vec<StreamId>)> {
    let mut parts = items(v, "XAUTOCLAIM")?.into_iter();
    let cursor = StreamId::from_bytes(&bytes(
        parts
            .next()
            .ok_or_else(|| protocol("XAUTOCLAIM", "no cursor"))?,
        "XAUTOCLAIM",
    )?)?;
    let (claimed, mut deleted) = entries(parts.next().unwrap_or(Value::Nil), "XAUTOCLAIM")?;
    if let Some(d) = parts.next() {
        for id in items(d, "XAUTOCLAIM")? {
            deleted.push(StreamId::from_bytes(&bytes(id, "XAUTOCLAIM")?)?);
        }
    }
    Ok((cursor, claimed, deleted))
}

/// One row of an extended `XPENDING` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEntry {
    /// The pending entry's ID.
    pub id: StreamId,
    /// The consumer that holds it.
    pub consumer: String,
    /// Milliseconds since it was last delivered.
    pub idle_ms: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// Parses an extended `XPENDING key group start end count [consumer]` reply.
// Kept for the pending-entry views (owner, idle time, delivery count).
#[allow(dead_code)]
pub(crate) fn pending_reply(v: Value) -> Result<Vec<PendingEntry>> {
    items(v, "XPENDING")?
        .into_iter()
        .map(|row| {
            let mut p = items(row, "XPENDING")?.into_iter();
            let mut next = || p.next().ok_or_else(|| protocol("XPENDING", "short row"));
            let id = StreamId::from_bytes(&bytes(next()?, "XPENDING")?)?;
            let consumer = String::from_utf8_lossy(&bytes(next()?, "XPENDING")?).into_owned();
            let num = |v: Value| -> Result<u64> {
                match v {
                    Value::Int(i) => Ok(u64::try_from(i).unwrap_or(0)),
                    other => String::from_utf8_lossy(&bytes(other, "XPENDING")?)
                        .parse()
                        .map_err(|_| protocol("XPENDING", "non-numeric count")),
                }
            };
            let idle_ms = num(next()?)?;
            let deliveries = num(next()?)?;
            Ok(PendingEntry {
                id,
                consumer,
                idle_ms,
                deliveries,
            })
        })
        .collect()
}

/// Parses an array of IDs (e.g. a `JUSTID` reply).
pub(crate) fn id_list(v: Value, command: &'static str) -> Result<Vec<StreamId>> {
    items(v, command)?
        .into_iter()
        .map(|i| StreamId::from_bytes(&bytes(i, command)?))
        .collect()
}

/// Parses a reply of `XADD` (an ID).
pub(crate) fn id_reply(v: Value, command: &'static str) -> Result<StreamId> {
    StreamId::from_bytes(&bytes(v, command)?)
}

/// A reply value as text (lossy for non-UTF-8 bytes); empty for nil.
pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => String::new(),
    }
}

/// A reply value as a count (an integer, or digits in a bulk string).
pub(crate) fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_reply_keeps_field_order_and_deleted_ids() {
        let v = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("b"), bulk("1"), bulk("a"), bulk("2")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let (entries, deleted) = read_reply(v, "XREADGROUP").expect("parse");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].fields, crate::fields([("b", "1"), ("a", "2")]));
        assert_eq!(deleted, vec![StreamId::new(2, 0)]);
        assert!(read_reply(Value::Nil, "XREAD").expect("nil").0.is_empty());
    }

    #[test]
    fn a_read_of_several_streams_keeps_them_apart_in_resp2_and_resp3() {
        let list = |id: &str| {
            Value::Array(vec![Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk("k"), bulk("v")]),
            ])])
        };
        let resp2 = Value::Array(vec![
            Value::Array(vec![bulk("{s:1}"), list("5-0")]),
            Value::Array(vec![bulk("{s:0}"), list("7-0")]),
        ]);
        let resp3 = Value::Map(vec![
            (bulk("{s:1}"), list("5-0")),
            (bulk("{s:0}"), list("7-0")),
        ]);
        for v in [resp2, resp3] {
            let got = read_reply_by_stream(v, "XREAD").expect("parse");
            let got: Vec<(Vec<u8>, Vec<StreamId>)> = got
                .into_iter()
                .map(|(k, es)| (k, es.iter().map(|e| e.id).collect()))
                .collect();
            assert_eq!(
                got,
                vec![
                    (b"{s:1}".to_vec(), vec![StreamId::new(5, 0)]),
                    (b"{s:0}".to_vec(), vec![StreamId::new(7, 0)]),
                ]
            );
        }
        assert!(read_reply_by_stream(Value::Nil, "XREAD")
            .expect("nil")
            .is_empty());
    }
}
