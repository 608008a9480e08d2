//! Printing for people and for scripts.
//!
//! `--json` output is one object per line with stable names; human output
//! is `ID  field=value …` with non-UTF-8 bytes escaped.

use std::io::Write;

use streamkeeper::Entry;

/// Prints one JSON value as a line on stdout.
pub fn json_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
}

/// Bytes as text, with non-UTF-8 bytes escaped as `\xNN`.
pub fn escaped(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// An entry for people: `ID  k=v k=v`.
pub fn human_entry(e: &Entry) -> String {
    let mut line = e.id.to_string();
    line.push(' ');
    for (k, v) in &e.fields {
        line.push(' ');
        line.push_str(&escaped(k));
        line.push('=');
        line.push_str(&escaped(v));
    }
    line
}

/// Prints an entry as JSON (wire format) or for people.
pub fn entry(json: bool, stream: &str, e: &Entry) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{}", streamkeeper::wire::entry_to_line(stream, e));
    } else {
        let _ = writeln!(out, "{}", human_entry(e));
    }
}

/// Prints an already-encoded JSON line on stdout.
pub fn json_line_str(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}
