//! Key names as Redis holds them: bytes, not always UTF-8. The overview
//! lists them with `SCAN … TYPE stream` as raw bytes (one odd name must not
//! break the page), shows them escaped, and hides streamkeeper's own
//! derived streams (`{S}:dlq`, `{N}:history`).
//!
//! The escaped text is for people; the API addresses a name by its raw
//! bytes, base64url without padding ([`key_of`]): `key=` / `gkey=` in a
//! query, `"key"` / `"gkey"` in an action's JSON body, decoded in one place
//! ([`key_param`]).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use streamkeeper::{Connector, GroupName, Result, StreamKey};

use crate::ApiError;

/// What the API answers for a key that is not UTF-8: the library names
/// keys by text, so it cannot address it (and must not map it onto
/// another key).
pub(crate) const NOT_UTF8: &str =
    "this name is not UTF-8; streamkeeper cannot address it: rename it with redis-cli RENAME";

/// Every stream key, raw, sorted (`SCAN … TYPE stream`, never `KEYS`).
pub(crate) async fn scan_streams(redis: &Connector) -> Result<Vec<Vec<u8>>> {
    streamkeeper::inspect::list_stream_names(redis).await
}

/// Bytes as text, unambiguously: a UTF-8 name shows a backslash as `\\`
/// (so the ASCII text `a\xffb` reads `a\\xffb`), and a name that is not
/// UTF-8 has its odd bytes as `\xNN` (Rust's `escape_ascii`). Two
/// different names never show the same text.
pub(crate) fn escaped(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.replace('\\', "\\\\"),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// Entry contents (field names and values) as text: UTF-8 as it is, other
/// bytes as `\xNN`. Not for names, which need [`escaped`] to stay apart;
/// a value has its hex beside it where exactness matters.
pub(crate) fn text_of(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// The name's raw bytes in base64url without padding: how the API
/// addresses a name (`key=`, `gkey=`; `"key"`, `"gkey"`), since the
/// escaped display text is for people only.
///
/// ```
/// assert_eq!(streamkeeper_web::key_of(b"a\xffb"), "Yf9i");
/// assert_eq!(streamkeeper_web::key_of(b"orders"), "b3JkZXJz");
/// ```
pub fn key_of(raw: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(raw)
}

/// The name a request addresses: `key` (base64url of the raw bytes) when
/// given, which wins, else the plain text `text`. `what` names the
/// parameters in the error (`"stream"` → `?stream=NAME or ?key=…`). A key
/// that is not base64url, or whose bytes are not UTF-8, is a 400: never
/// mapped onto another name.
pub(crate) fn key_param(
    key: Option<&str>,
    text: Option<&str>,
    what: (&str, &str),
) -> std::result::Result<String, ApiError> {
    let (text_name, key_name) = what;
    if let Some(k) = key.filter(|k| !k.is_empty()) {
        let raw = URL_SAFE_NO_PAD
            .decode(k.trim_end_matches('='))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "{key_name}={k:?} is not base64url (the raw name bytes, no padding)"
                ))
            })?;
        if raw.is_empty() {
            return Err(ApiError::bad_request(format!("{key_name} is empty")));
        }
        return String::from_utf8(raw).map_err(|_| ApiError::bad_request(NOT_UTF8));
    }
    match text.filter(|t| !t.is_empty()) {
        Some(t) => Ok(t.to_string()),
        None => Err(ApiError::bad_request(format!(
            "missing {text_name}=NAME (or {key_name}=BASE64URL of its bytes)"
        ))),
    }
}

/// The stream a request addresses (`key` wins over `stream`).
pub(crate) fn stream_param(
    key: Option<&str>,
    text: Option<&str>,
) -> std::result::Result<StreamKey, ApiError> {
    let name = key_param(key, text, ("stream", "key"))?;
    StreamKey::new(name).map_err(ApiError::from)
}

/// The group a request addresses (`gkey` wins over `group`).
pub(crate) fn group_param(
    key: Option<&str>,
    text: Option<&str>,
) -> std::result::Result<GroupName, ApiError> {
    let name = key_param(key, text, ("group", "gkey"))?;
    GroupName::new(name).map_err(ApiError::from)
}

/// The raw names of a stream's groups (`XINFO GROUPS`), in its order;
/// empty when the stream is missing or has none. The library gives group
/// names as text, lossy for odd bytes; these tell them apart.
pub(crate) async fn raw_groups(redis: &Connector, stream: &StreamKey) -> Vec<Vec<u8>> {
    let mut conn = redis.shared();
    let Ok(redis::Value::Array(groups)) = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async::<redis::Value>(&mut conn)
        .await
    else {
        return Vec::new();
    };
    groups
        .into_iter()
        .filter_map(|g| {
            let pairs: Vec<redis::Value> = match g {
                redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
                redis::Value::Array(a) => a,
                _ => return None,
            };
            pairs.chunks(2).find_map(|kv| match kv {
                [redis::Value::BulkString(k), redis::Value::BulkString(v)] if k == b"name" => {
                    Some(v.clone())
                }
                [redis::Value::SimpleString(k), redis::Value::BulkString(v)] if k == "name" => {
                    Some(v.clone())
                }
                _ => None,
            })
        })
        .collect()
}

/// A group name the library gave as lossy text, shown escaped with its
/// `gkey`, when exactly one raw name reads as that text; else the text as
/// it is and no key (two odd names that read alike).
pub(crate) fn group_shown(lossy: &str, raws: &[Vec<u8>]) -> (String, Option<String>) {
    let mut it = raws.iter().filter(|r| String::from_utf8_lossy(r) == lossy);
    match (it.next(), it.next()) {
        (Some(r), None) => (escaped(r), Some(key_of(r))),
        _ => (lossy.to_string(), None),
    }
}

/// A key streamkeeper derives from another (`{S}:dlq`, `{S}:retry`, …) or
/// keeps for itself (`{N}:history`): not a row of its own. The library
/// names them (`keys.rs`).
pub(crate) fn is_derived(name: &str) -> bool {
    streamkeeper::keys::is_derived_stream(name)
}

/// The value of `name` in an `application/x-www-form-urlencoded` body.
pub(crate) fn form_value(body: &[u8], name: &str) -> Option<String> {
    body.split(|&b| b == b'&').find_map(|pair| {
        let mut it = pair.splitn(2, |&b| b == b'=');
        let k = percent_decode(it.next()?);
        (k == name).then(|| percent_decode(it.next().unwrap_or_default()))
    })
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let h = std::str::from_utf8(&s[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_value(b"a=1&token=s%20e+c%2Fr", "token").as_deref(),
            Some("s e c/r")
        );
        assert_eq!(
            form_value(b"token=%zz%4", "token").as_deref(),
            Some("%zz%4")
        );
        assert_eq!(form_value(b"a=1", "token"), None);
    }

    #[test]
    fn derived_keys_are_recognised() {
        assert!(is_derived("{orders}:dlq"));
        assert!(is_derived("{streamkeeper}:history"));
        assert!(!is_derived("orders"));
        assert!(!is_derived("orders:dlq"));
    }

    #[test]
    fn odd_bytes_are_escaped() {
        assert_eq!(escaped(b"ok"), "ok");
        assert_eq!(escaped(b"a\xffb"), "a\\xffb");
        // The ASCII text `a\xffb` is not shown like the bytes a, 0xff, b.
        assert_eq!(escaped(br"a\xffb"), r"a\\xffb");
        assert_eq!(escaped(br"back\slash"), r"back\\slash");
        assert_ne!(escaped(br"a\xffb"), escaped(b"a\xffb"));
    }

    #[test]
    fn keys_are_raw_bytes_in_base64url() {
        assert_eq!(key_of(b"a\xffb"), "Yf9i");
        assert_eq!(key_of(b"\xfb\xff"), "-_8");
        let k = key_of(br"a\xffb");
        assert_eq!(
            key_param(Some(&k), Some("other"), ("stream", "key"))
                .ok()
                .as_deref(),
            Some(r"a\xffb")
        );
        assert_eq!(
            key_param(None, Some("plain"), ("stream", "key"))
                .ok()
                .as_deref(),
            Some("plain")
        );
        let not_utf8 = key_param(Some("Yf9i"), Some("a"), ("stream", "key"));
        assert!(matches!(not_utf8, Err(ApiError(_, m)) if m == NOT_UTF8));
        assert!(key_param(Some("%%"), None, ("stream", "key")).is_err());
        assert!(key_param(None, None, ("stream", "key")).is_err());
    }
}
