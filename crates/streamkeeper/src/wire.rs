//! The JSON-lines wire format of docs/design.md §5, shared by the CLI and dumps.
//!
//! One object per entry: `{"stream":"S","id":"1-0","fields":{"k":"v"}}`.
//! A value (or name) that is not UTF-8 becomes `{"b64":"…"}`; when a field
//! name repeats, `fields` is an array of pairs so nothing is lost.

use base64::Engine;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::types::{Bytes, Entry, StreamId};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn bytes_to_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => {
            let mut m = Map::new();
            m.insert("b64".into(), Value::String(B64.encode(b)));
            Value::Object(m)
        }
    }
}

fn json_to_bytes(v: &Value, line_hint: &str) -> Result<Bytes> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(m) if m.len() == 1 && m.contains_key("b64") => match &m["b64"] {
            Value::String(s) => B64
                .decode(s)
                .map_err(|e| Error::InvalidInput(format!("{line_hint}: bad base64 in {{\"b64\":…}}: {e}"))),
            _ => Err(Error::InvalidInput(format!("{line_hint}: {{\"b64\":…}} must hold a string"))),
        },
        // Numbers and booleans are written the way JSON spells them, which
        // is what a user typing `{"qty": 2}` means.
        Value::Number(n) => Ok(n.to_string().into_bytes()),
        Value::Bool(b) => Ok(b.to_string().into_bytes()),
        other => Err(Error::InvalidInput(format!(
            "{line_hint}: field values must be strings, numbers, booleans or {{\"b64\":…}}, got {other}"
        ))),
    }
}

/// The fields of an entry as JSON: an object, or an array of pairs when a
/// name repeats or a name is not UTF-8.
pub fn fields_to_json(fields: &[(Bytes, Bytes)]) -> Value {
    let mut seen = std::collections::HashSet::new();
    let plain = fields
        .iter()
        .all(|(k, _)| std::str::from_utf8(k).is_ok() && seen.insert(k.as_slice()));
    if plain {
        let mut m = Map::with_capacity(fields.len());
        for (k, v) in fields {
            m.insert(String::from_utf8_lossy(k).into_owned(), bytes_to_json(v));
        }
        Value::Object(m)
    } else {
        Value::Array(
            fields
                .iter()
                .map(|(k, v)| Value::Array(vec![bytes_to_json(k), bytes_to_json(v)]))
                .collect(),
        )
    }
}

/// An entry as a JSON object of the wire format.
pub fn entry_to_json(stream: &str, entry: &Entry) -> Value {
    let mut m = Map::with_capacity(3);
    m.insert("stream".into(), Value::String(stream.to_owned()));
    m.insert("id".into(), Value::String(entry.id.to_string()));
    m.insert("fields".into(), fields_to_json(&entry.fields));
    Value::Object(m)
}

/// A delivery as one JSON line: [`entry_to_line`] plus `"attempt":N`, the
/// handler run this is (1 the first time; a retry keeps the entry's ID and
/// counts on), for `consume`'s output and `--pipe` workers.
///
/// ```
/// # use streamkeeper::{Entry, StreamId, wire};
/// let e = Entry { id: StreamId::new(1, 0), fields: vec![(b"k".to_vec(), b"v".to_vec())] };
/// assert_eq!(
///     wire::delivery_to_line("s", &e, 2),
///     r#"{"stream":"s","id":"1-0","fields":{"k":"v"},"attempt":2}"#
/// );
/// ```
pub fn delivery_to_line(stream: &str, entry: &Entry, attempt: u64) -> String {
    traced_delivery_to_line(stream, entry, attempt, None)
}

/// [`delivery_to_line`] plus `"traceparent":"00-…"` when the handler run
/// has a trace context ([`Delivery::trace`](crate::consumer::Delivery::trace)):
/// what a `--pipe` worker reads to continue the trace.
///
/// ```
/// # use streamkeeper::{Entry, StreamId, wire, trace::TraceParent};
/// let e = Entry { id: StreamId::new(1, 0), fields: vec![] };
/// let t: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
/// assert_eq!(
///     wire::traced_delivery_to_line("s", &e, 1, Some(t)),
///     r#"{"stream":"s","id":"1-0","fields":{},"attempt":1,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#
/// );
/// ```
pub fn traced_delivery_to_line(
    stream: &str,
    entry: &Entry,
    attempt: u64,
    trace: Option<crate::trace::TraceParent>,
) -> String {
    let mut line = entry_to_line(stream, entry);
    line.pop();
    line.push_str(",\"attempt\":");
    line.push_str(&attempt.to_string());
    if let Some(t) = trace {
        line.push_str(",\"traceparent\":\"");
        line.push_str(&t.to_string());
        line.push('"');
    }
    line.push('}');
    line
}

/// An entry as one JSON line (no trailing newline): the same text as
/// `entry_to_json(…).to_string()`, written straight into one buffer (the
/// `consume --pipe` feed writes one per entry).
pub fn entry_to_line(stream: &str, entry: &Entry) -> String {
    let size: usize = entry
        .fields
        .iter()
        .map(|(k, v)| k.len() + v.len() + 8)
        .sum();
    let mut out = Vec::with_capacity(stream.len() + size + 64);
    out.extend_from_slice(b"{\"stream\":");
    push_str(&mut out, stream);
    out.extend_from_slice(b",\"id\":\"");
    out.extend_from_slice(entry.id.to_string().as_bytes());
    out.extend_from_slice(b"\",\"fields\":");
    if plain_names(&entry.fields) {
        out.push(b'{');
        for (i, (k, v)) in entry.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_bytes(&mut out, k);
            out.push(b':');
            push_bytes(&mut out, v);
        }
        out.push(b'}');
    } else {
        out.push(b'[');
        for (i, (k, v)) in entry.fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            push_bytes(&mut out, k);
            out.push(b',');
            push_bytes(&mut out, v);
            out.push(b']');
        }
        out.push(b']');
    }
    out.push(b'}');
    // Only JSON text was written: escaped UTF-8 strings and base64.
    String::from_utf8(out).unwrap_or_else(|_| entry_to_json(stream, entry).to_string())
}

/// Whether the fields can be a JSON object: every name UTF-8 and unique
/// (as [`fields_to_json`] decides; no allocation for a few fields).
fn plain_names(fields: &[(Bytes, Bytes)]) -> bool {
    if !fields.iter().all(|(k, _)| std::str::from_utf8(k).is_ok()) {
        return false;
    }
    if fields.len() <= 16 {
        fields
            .iter()
            .enumerate()
            .all(|(i, (k, _))| fields[..i].iter().all(|(p, _)| p != k))
    } else {
        let mut seen = std::collections::HashSet::new();
        fields.iter().all(|(k, _)| seen.insert(k.as_slice()))
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(s) => push_str(out, s),
        Err(_) => {
            out.extend_from_slice(b"{\"b64\":\"");
            out.extend_from_slice(B64.encode(b).as_bytes());
            out.extend_from_slice(b"\"}");
        }
    }
}

/// One parsed input line: the fields, and the stream and ID when the line
/// was a full entry object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine {
    /// `stream` of an entry object.
    pub stream: Option<String>,
    /// `id` of an entry object.
    pub id: Option<StreamId>,
    /// The fields, in order.
    pub fields: Vec<(Bytes, Bytes)>,
}

/// Parses the `fields` part: an object or an array of `[name, value]` pairs.
pub fn fields_from_json(v: &Value, hint: &str) -> Result<Vec<(Bytes, Bytes)>> {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| Ok((k.as_bytes().to_vec(), json_to_bytes(v, hint)?)))
            .collect(),
        Value::Array(pairs) => pairs
            .iter()
            .map(|p| match p {
                Value::Array(kv) if kv.len() == 2 => {
                    Ok((json_to_bytes(&kv[0], hint)?, json_to_bytes(&kv[1], hint)?))
                }
                _ => Err(Error::InvalidInput(format!(
                    "{hint}: `fields` as an array must hold [name, value] pairs"
                ))),
            })
            .collect(),
        _ => Err(Error::InvalidInput(format!(
            "{hint}: `fields` must be an object or an array of [name, value] pairs"
        ))),
    }
}

/// Parses one input line: either an entry object (`{"stream","id","fields"}`,
/// `stream` and `id` optional) or a plain object of fields.
/// `hint` names the place for errors, e.g. `stdin line 3`.
pub fn parse_line(line: &str, hint: &str) -> Result<ParsedLine> {
    // serde_json keeps the last of repeated keys; a repeated key is
    // refused instead (fields that repeat go as an array of pairs).
    serde_json::from_str::<NoRepeatedKeys>(line).map_err(|e| {
        Error::InvalidInput(format!(
            "{hint}: invalid JSON ({e}); expected one JSON object per line"
        ))
    })?;
    let v: Value = serde_json::from_str(line).map_err(|e| {
        Error::InvalidInput(format!(
            "{hint}: invalid JSON ({e}); expected one JSON object per line"
        ))
    })?;
    let Value::Object(m) = &v else {
        return Err(Error::InvalidInput(format!(
            "{hint}: expected a JSON object like {{\"k\":\"v\"}} or {{\"fields\":{{…}}}}"
        )));
    };
    let parsed = if let Some(f) = m.get("fields") {
        // `attempt` is what a `consume` line adds ([`delivery_to_line`]):
        // its output can be fed back; the count itself is not an entry's.
        if let Some(k) = m
            .keys()
            .find(|k| !["stream", "id", "fields", "attempt", "traceparent"].contains(&k.as_str()))
        {
            return Err(Error::InvalidInput(format!(
                "{hint}: unknown key {k:?} in an entry object (it has only stream, id and fields, and attempt and traceparent in consume's output)"
            )));
        }
        let stream = match m.get("stream") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(Error::InvalidInput(format!(
                    "{hint}: `stream` must be a string"
                )))
            }
        };
        let id = match m.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.parse::<StreamId>().map_err(|_| {
                Error::InvalidInput(format!("{hint}: invalid id {s:?}, expected <ms>-<seq>"))
            })?),
            Some(_) => {
                return Err(Error::InvalidInput(format!(
                    "{hint}: `id` must be a string"
                )))
            }
        };
        ParsedLine {
            stream,
            id,
            fields: fields_from_json(f, hint)?,
        }
    } else {
        ParsedLine {
            stream: None,
            id: None,
            fields: fields_from_json(&v, hint)?,
        }
    };
    if parsed.fields.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{hint}: an entry needs at least one field"
        )));
    }
    Ok(parsed)
}

/// Deserializes any JSON and fails on an object with a repeated key.
struct NoRepeatedKeys;

impl<'de> serde::Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoRepeatedKeysVisitor)
    }
}

struct NoRepeatedKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoRepeatedKeysVisitor {
    type Value = NoRepeatedKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "key {k:?} appears twice; write repeated fields as [[\"k\",\"v\"],…]"
                )));
            }
            map.next_value::<NoRepeatedKeys>()?;
        }
        Ok(NoRepeatedKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(NoRepeatedKeys)
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_consume_line_with_its_attempt_reads_back_as_the_entry() {
        let e = Entry {
            id: StreamId::new(5, 1),
            fields: vec![(b"k".to_vec(), b"v".to_vec())],
        };
        let line = delivery_to_line("s", &e, 3);
        let back = parse_line(&line, "line 1").expect("a consume line is an entry line");
        assert_eq!(
            back,
            parse_line(&entry_to_line("s", &e), "line 1").expect("entry line")
        );
    }

    #[test]
    fn repeated_keys_and_unknown_entry_keys_are_refused() {
        let err = |l: &str| parse_line(l, "line 1").expect_err(l).to_string();
        assert!(err(r#"{"a":"1","a":"2"}"#).contains("appears twice"));
        assert!(err(r#"{"fields":{"a":"1","a":"2"}}"#).contains("appears twice"));
        assert!(err(r#"{"fields":{"a":"1"},"extra":1}"#).contains("unknown key \"extra\""));
        let ok = parse_line(r#"{"fields":[["a","1"],["a","2"]]}"#, "x").expect("pairs");
        assert_eq!(ok.fields.len(), 2);
    }

    #[test]
    fn plain_entry_matches_the_design_example() {
        let e = Entry {
            id: StreamId::new(1_700_000_000_000, 0),
            fields: crate::fields([("k", "v")]),
        };
        assert_eq!(
            entry_to_line("S", &e),
            r#"{"stream":"S","id":"1700000000000-0","fields":{"k":"v"}}"#
        );
    }

    #[test]
    fn binary_and_repeated_fields_survive() {
        let e = Entry {
            id: StreamId::new(1, 2),
            fields: vec![
                (b"a".to_vec(), vec![0xff, 0x00]),
                (b"a".to_vec(), b"x".to_vec()),
            ],
        };
        let line = entry_to_line("S", &e);
        assert_eq!(
            line,
            r#"{"stream":"S","id":"1-2","fields":[["a",{"b64":"/wA="}],["a","x"]]}"#
        );
        let back = parse_line(&line, "t").expect("parse");
        assert_eq!(back.fields, e.fields);
        assert_eq!(back.id, Some(e.id));
    }

    #[test]
    fn plain_object_of_fields_is_accepted() {
        let p = parse_line(r#"{"user":"ann","qty":2,"ok":true}"#, "t").expect("parse");
        assert_eq!(
            p.fields,
            crate::fields([("user", "ann"), ("qty", "2"), ("ok", "true")])
        );
        assert_eq!(p.stream, None);
    }

    #[test]
    fn bad_lines_name_the_problem() {
        for bad in [
            "{",
            "[1]",
            "{}",
            r#"{"k":[1]}"#,
            r#"{"fields":{"k":"v"},"id":"x"}"#,
            r#"{"k":{"b64":"%%"}}"#,
        ] {
            let err = parse_line(bad, "stdin line 7").expect_err(bad).to_string();
            assert!(err.starts_with("stdin line 7"), "{err}");
        }
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(
            ms in any::<u64>(), seq in any::<u64>(),
            fields in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..8), proptest::collection::vec(any::<u8>(), 0..16)),
                1..6)
        ) {
            let e = Entry { id: StreamId::new(ms, seq), fields };
            // The direct writer spells exactly what the JSON value does.
            prop_assert_eq!(entry_to_line("s\"\\\n", &e), entry_to_json("s\"\\\n", &e).to_string());
            let back = parse_line(&entry_to_line("s", &e), "p").expect("parse");
            prop_assert_eq!(back.fields, e.fields);
            prop_assert_eq!(back.id, Some(e.id));
        }

        #[test]
        fn text_entries_are_written_like_the_json_value(
            fields in proptest::collection::vec(("\\PC{0,6}", "\\PC{0,12}"), 1..20)
        ) {
            let e = Entry {
                id: StreamId::new(7, 9),
                fields: fields.into_iter().map(|(k, v)| (k.into_bytes(), v.into_bytes())).collect(),
            };
            prop_assert_eq!(entry_to_line("s", &e), entry_to_json("s", &e).to_string());
        }
    }
}
