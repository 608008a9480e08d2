//! Key names as Redis holds them: bytes, not always UTF-8. The overview
//! lists them with `SCAN … TYPE stream` as raw bytes (one odd name must not
//! break the page), shows them escaped, and hides streamkeeper's own
//! derived streams (`{S}:dlq`, `{N}:history`).

use streamkeeper::{Connector, Result};

/// Every stream key, raw, sorted (`SCAN … TYPE stream`, never `KEYS`).
pub(crate) async fn scan_streams(redis: &Connector) -> Result<Vec<Vec<u8>>> {
    streamkeeper::inspect::list_stream_names(redis).await
}

/// Bytes as text; a name that is not UTF-8 has its odd bytes as `\xNN`.
pub(crate) fn escaped(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
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
    }
}
