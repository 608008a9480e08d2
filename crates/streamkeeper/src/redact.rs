//! Masking the secrets a connection URL can carry before it is shown.
//!
//! A URL may hold a password in its userinfo (`redis://user:pw@h`), the
//! sentinels' own password in its query (`?sentinel_password=`), a unix
//! socket's password (`?pass=`), and whatever `*password*` or `*token*`
//! parameter a user adds. Every message, log, page and API answer shows
//! the URL through [`redact`] only.

/// What a masked secret reads as.
const MASK: &str = "***";

/// The URL with every secret it carries replaced by `***`: the password of
/// its userinfo, and the value of every query parameter whose name is
/// `pass` or contains `password`, `token` or `secret` (case-insensitive,
/// percent-decoded). Never fails: text that is not a URL comes back with
/// what looks like a secret masked all the same.
///
/// ```
/// use streamkeeper::conn::redact;
/// assert_eq!(
///     redact("redis+sentinel://u:pw@h:26379/m?sentinel_password=s3nt"),
///     "redis+sentinel://u:***@h:26379/m?sentinel_password=***"
/// );
/// ```
pub fn redact(url: &str) -> String {
    let (head, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The userinfo ends at the last `@` that is not inside a query value:
    // a password may hold an unencoded `/`, `?` or `#`, a query value an `@`.
    let at = rest
        .char_indices()
        .filter(|&(i, c)| c == '@' && !in_query_value(&rest[..i]))
        .map(|(i, _)| i)
        .next_back();
    let (userinfo, after) = match at {
        Some(at) => {
            let userinfo = &rest[..at];
            let masked = match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:{MASK}@"),
                None => format!("{userinfo}@"),
            };
            (masked, &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    let (before_fragment, fragment) = match after.find('#') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    let query = match before_fragment.split_once('?') {
        Some((path, query)) => format!("{path}?{}", mask_query(query)),
        None => before_fragment.to_string(),
    };
    format!("{head}{userinfo}{query}{fragment}")
}

/// Whether the text up to here ends inside a query parameter's value: a `?`
/// was seen and, after it, an `=`.
fn in_query_value(before: &str) -> bool {
    before
        .split_once('?')
        .is_some_and(|(_, query)| query.contains('='))
}

/// `a=1&sentinel_password=x` → `a=1&sentinel_password=***`.
fn mask_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(name) => format!("{name}={MASK}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A query parameter that carries a secret: redis-rs's `pass` (unix
/// sockets), and any name containing `password`, `token` or `secret`.
fn is_secret_name(name: &str) -> bool {
    let name = percent_decode(name).to_ascii_lowercase();
    name == "pass"
        || ["password", "token", "secret"]
            .iter()
            .any(|s| name.contains(s))
}

/// `%5F` → `_`; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::redact;

    /// Every URL form, with and without a user, with query parameters; the
    /// secret is always `hunter2`.
    #[test]
    fn every_secret_of_every_url_form_is_masked() {
        let cases = [
            ("redis://h:1", "redis://h:1"),
            ("redis://h:1/0", "redis://h:1/0"),
            ("redis://:hunter2@h:1/0", "redis://:***@h:1/0"),
            ("redis://user:hunter2@h:1/0", "redis://user:***@h:1/0"),
            ("redis://user@h:1", "redis://user@h:1"),
            ("redis://user:hunter2@h:1/0?protocol=3", "redis://user:***@h:1/0?protocol=3"),
            ("redis://h:1/0?password=hunter2", "redis://h:1/0?password=***"),
            ("redis://h:1/?auth_token=hunter2&db=2", "redis://h:1/?auth_token=***&db=2"),
            ("redis://h:1/?Access%5FToken=hunter2", "redis://h:1/?Access%5FToken=***"),
            ("redis://h:1/?PASSWORD=hunter2", "redis://h:1/?PASSWORD=***"),
            ("redis://h:1/?client_secret=hunter2", "redis://h:1/?client_secret=***"),
            ("redis://u:p?a/s#s@h:1/0", "redis://u:***@h:1/0"),
            ("redis://h:1/0?password=a@hunter2", "redis://h:1/0?password=***"),
            ("rediss://:hunter2@h:1", "rediss://:***@h:1"),
            ("rediss://user:hunter2@h:1/#insecure", "rediss://user:***@h:1/#insecure"),
            (
                "rediss://user:hunter2@h:1/?token=hunter2#insecure",
                "rediss://user:***@h:1/?token=***#insecure",
            ),
            ("redis+sentinel://h:1,h:2/m", "redis+sentinel://h:1,h:2/m"),
            (
                "redis+sentinel://h:1,h:2/m?sentinel_password=hunter2",
                "redis+sentinel://h:1,h:2/m?sentinel_password=***",
            ),
            (
                "redis+sentinel://u:hunter2@h:1,h:2/m?sentinel_username=s&sentinel_password=hunter2",
                "redis+sentinel://u:***@h:1,h:2/m?sentinel_username=s&sentinel_password=***",
            ),
            (
                "redis+cluster://u:hunter2@h:1,h:2",
                "redis+cluster://u:***@h:1,h:2",
            ),
            (
                "redis+cluster://h:1,h:2/?password=hunter2",
                "redis+cluster://h:1,h:2/?password=***",
            ),
            (
                "rediss+cluster://:hunter2@h:1,h:2/#insecure",
                "rediss+cluster://:***@h:1,h:2/#insecure",
            ),
            ("redis+unix:///tmp/r.sock", "redis+unix:///tmp/r.sock"),
            (
                "redis+unix:///tmp/r.sock?db=1&user=u&pass=hunter2",
                "redis+unix:///tmp/r.sock?db=1&user=u&pass=***",
            ),
            (
                "unix:///tmp/r.sock?pass=hunter2&token=hunter2",
                "unix:///tmp/r.sock?pass=***&token=***",
            ),
            ("not a url :hunter2@x", "not a url :***@x"),
            ("", ""),
        ];
        for (url, want) in cases {
            let got = redact(url);
            assert_eq!(got, want, "redact({url:?})");
            assert!(!got.contains("hunter2"), "{got}");
        }
    }

    #[test]
    fn odd_input_never_panics() {
        for url in [
            "@",
            "://@",
            "a://:@?=&=#",
            "redis://%",
            "redis://h/?%zz=1",
            "é://é:é@é?é=é",
        ] {
            let _ = redact(url);
        }
    }
}
