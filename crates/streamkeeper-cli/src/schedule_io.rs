//! `schedule import` and `schedule export`: schedules as JSON lines, named
//! like the flags of `schedule add`:
//! `{"name","every"|"cron","tz","to","fields","missed","jitter","paused"}`.
//!
//! Import reads its input twice, so memory stays bounded however many and
//! however long the lines are: a first pass validates every line (lines
//! over 1 MiB are refused as they stream, without being held; stdin is
//! spooled to a temp file meanwhile) and nothing is written if any is bad;
//! the second pass stores them in pipelined batches bounded in count and
//! bytes, with a progress bar on stderr. A name given on several lines is
//! stored once, from its last line.
//! Export pages through the definitions with HSCAN; import(export) gives
//! back the same schedules.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use streamkeeper::scheduler::{Missed, Schedule, Scheduler, Spec};

use crate::cli::Global;
use crate::output;

/// Schedules per pipelined write.
const BATCH: usize = 1000;
/// Batches in flight at once.
const IN_FLIGHT: usize = 8;
/// Line text per pipelined write, so what the write pass holds is bounded
/// by bytes too (150 lines of 1 MB were one batch, 600 MB of RSS).
const BATCH_BYTES: usize = 1024 * 1024;
/// Bad lines named in the error message (the count covers the rest).
const SHOWN_ERRORS: usize = 3;
/// The longest line accepted, without its line end.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One schedule from one line; the error says what is wrong (without the
/// line number, which the caller adds).
pub fn parse_line(text: &str) -> Result<Schedule, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(m) = v else {
        return Err("expected a JSON object like {\"name\":…,\"every\":\"60s\",\"to\":…}".into());
    };
    for k in m.keys() {
        if !matches!(
            k.as_str(),
            "name" | "every" | "cron" | "tz" | "to" | "fields" | "missed" | "jitter" | "paused"
        ) {
            return Err(format!(
                "unknown key {k:?} (use name, every|cron, tz, to, fields, missed, jitter, paused)"
            ));
        }
    }
    let text_of = |k: &str| -> Result<Option<&str>, String> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{k:?} must be a string, got {other}")),
        }
    };
    let name = text_of("name")?.ok_or("missing \"name\"")?;
    let to = text_of("to")?.ok_or("missing \"to\" (the target stream)")?;
    let duration = |k: &str| -> Result<Option<Duration>, String> {
        text_of(k)?
            .map(|d| {
                humantime::parse_duration(d)
                    .map_err(|e| format!("bad {k:?} duration {d:?} (e.g. \"60s\"): {e}"))
            })
            .transpose()
    };
    let mut s = match (duration("every")?, text_of("cron")?) {
        (Some(every), None) => {
            if text_of("tz")?.is_some() {
                return Err("\"tz\" goes with \"cron\", not \"every\"".into());
            }
            Schedule::every(name, every, to)
        }
        (None, Some(expr)) => Schedule::cron(name, expr, text_of("tz")?.unwrap_or("UTC"), to),
        _ => return Err("give exactly one of \"every\" or \"cron\"".into()),
    }
    .map_err(|e| e.to_string())?;
    match m.get("fields") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fields)) => {
            for (k, v) in fields {
                s = s.field(k, &field_value(k, v)?);
            }
        }
        Some(Value::Array(pairs)) => {
            for p in pairs {
                match p.as_array().map(Vec::as_slice) {
                    Some([Value::String(k), v]) => s = s.field(k, &field_value(k, v)?),
                    _ => return Err("\"fields\" pairs must be [\"name\", \"value\"]".into()),
                }
            }
        }
        Some(other) => return Err(format!("\"fields\" must be an object, got {other}")),
    }
    if let Some(missed) = text_of("missed")? {
        s = s.missed(missed.parse::<Missed>().map_err(|e| e.to_string())?);
    }
    if let Some(j) = duration("jitter")? {
        s = s.jitter(j);
    }
    match m.get("paused") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(p)) => s.paused = *p,
        Some(other) => return Err(format!("\"paused\" must be true or false, got {other}")),
    }
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

fn field_value(k: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "field {k:?} must be a string, number or boolean, got {other}"
        )),
    }
}

/// A duration as the flags spell it: whole seconds as `60s`, else `250ms`.
fn duration_text(ms: u64) -> String {
    if (ms / 1000) * 1000 == ms {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A schedule as one line of the import form.
pub fn to_line(s: &Schedule) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(s.name));
    match &s.spec {
        Spec::EveryMs(ms) => {
            m.insert("every".into(), json!(duration_text(*ms)));
        }
        Spec::Cron { expr, tz } => {
            m.insert("cron".into(), json!(expr));
            m.insert("tz".into(), json!(tz));
        }
    }
    m.insert("to".into(), json!(s.target));
    let mut names = std::collections::HashSet::new();
    let fields = if s.fields.iter().all(|(k, _)| names.insert(k.as_str())) {
        Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        )
    } else {
        // A repeated name: pairs keep them all.
        json!(s.fields)
    };
    m.insert("fields".into(), fields);
    m.insert("missed".into(), json!(s.missed.to_string()));
    if s.jitter_ms > 0 {
        m.insert("jitter".into(), json!(duration_text(s.jitter_ms)));
    }
    if s.paused {
        m.insert("paused".into(), json!(true));
    }
    Value::Object(m)
}

/// A line as [`read_line`] found it.
enum Line {
    /// Its bytes are in the buffer, without the line end.
    Kept,
    /// Longer than [`MAX_LINE_BYTES`]: this many bytes, none kept.
    TooLong(u64),
}

/// Reads the next line into `buf` (cleared first), without its line end,
/// keeping at most [`MAX_LINE_BYTES`]: a longer line is read to its end
/// but not kept, so memory stays bounded whatever the input (a 10 MB line
/// used to be held whole, several times over). `None` at the end.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<Option<Line>> {
    buf.clear();
    let (mut total, mut too_long) = (0u64, false);
    loop {
        let available = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            if total == 0 {
                return Ok(None);
            }
            break;
        }
        let (n, ends) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        // + 2: room for the "\r\n" of a line of exactly the limit.
        if !too_long && buf.len() + n <= MAX_LINE_BYTES + 2 {
            buf.extend_from_slice(&available[..n]);
        } else {
            too_long = true;
            buf.clear();
        }
        r.consume(n);
        total += n as u64;
        if ends {
            break;
        }
    }
    if buf.ends_with(b"\n") {
        buf.pop();
        if buf.ends_with(b"\r") {
            buf.pop();
        }
    }
    Ok(Some(if too_long || buf.len() > MAX_LINE_BYTES {
        Line::TooLong(total)
    } else {
        Line::Kept
    }))
}

/// A name's identity in the repeated-name check: XXH3-128, 16 bytes
/// whatever the name's length (no two of a file's names meet by chance).
fn name_hash(name: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(name.as_bytes())
}

/// The start of a name, for messages (names may be 1 KiB).
fn short(name: &str) -> String {
    let mut s: String = name.chars().take(40).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    s
}

/// Bad lines seen so far.
#[derive(Default)]
struct BadLines {
    count: u64,
    shown: Vec<String>,
}

impl BadLines {
    fn add(&mut self, line_no: u64, why: impl std::fmt::Display) {
        self.count += 1;
        if self.shown.len() < SHOWN_ERRORS {
            self.shown.push(format!("line {line_no}: {why}"));
        }
    }
}

/// Names given on more than one line: the last such line is the one
/// stored (as `schedule add` run line by line would leave it).
#[derive(Default)]
struct Repeated {
    /// Name hash → lines giving it not yet passed in the write pass.
    remaining: HashMap<u128, u64>,
    /// How many names repeat.
    names: u64,
    /// A few of them for the report: name, the line stored.
    shown: Vec<(String, u64)>,
}

impl Repeated {
    /// From the hash of every line's name: repeats are equal neighbours
    /// once sorted. Sorting a vector takes 16 bytes a line; a hash set
    /// took 36 to 54 (1M lines: 74 MB of RSS).
    fn from_hashes(mut hashes: Vec<u128>) -> (u64, Repeated) {
        hashes.sort_unstable();
        let mut repeated = Repeated::default();
        let mut distinct = 0u64;
        for run in hashes.chunk_by(|a, b| a == b) {
            distinct += 1;
            if run.len() > 1 {
                repeated.remaining.insert(run[0], run.len() as u64);
            }
        }
        repeated.names = repeated.remaining.len() as u64;
        (distinct, repeated)
    }

    /// Whether the schedule `name` on `line_no` is replaced by a later
    /// line (lines come in order).
    fn is_replaced(&mut self, name: &str, line_no: u64) -> bool {
        if self.remaining.is_empty() {
            return false;
        }
        let Some(left) = self.remaining.get_mut(&name_hash(name)) else {
            return false;
        };
        *left -= 1;
        if *left > 0 {
            return true;
        }
        if self.shown.len() < SHOWN_ERRORS {
            self.shown.push((short(name), line_no));
        }
        false
    }
}

/// What the validation pass found.
struct Checked {
    /// Schedules to store: distinct names (all lines valid).
    count: u64,
    repeated: Repeated,
    /// The input to read again for the write pass.
    source: std::fs::File,
}

/// First pass: every line must be a valid schedule of at most
/// [`MAX_LINE_BYTES`]. Stdin is copied to a temp file as it is read, so
/// the second pass can read it again. Only 16 bytes a line are kept (the
/// name's hash, for the repeated-name check), never the schedules.
fn validate(input: Option<&Path>) -> anyhow::Result<Checked> {
    let (reader, spool): (Box<dyn Read>, Option<std::fs::File>) = match input {
        Some(p) => (
            Box::new(
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            None,
        ),
        None => (
            Box::new(std::io::stdin().lock()),
            Some(tempfile::tempfile().context("cannot create a temp file for stdin")?),
        ),
    };
    let mut lines = BufReader::with_capacity(256 * 1024, reader);
    let mut spool_writer = match &spool {
        Some(f) => Some(BufWriter::with_capacity(
            256 * 1024,
            f.try_clone().context("cannot spool stdin to a temp file")?,
        )),
        None => None,
    };
    let mut bad = BadLines::default();
    let mut hashes = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    while let Some(line) = read_line(&mut lines, &mut buf)
        .with_context(|| format!("cannot read line {}", line_no + 1))?
    {
        line_no += 1;
        if let Some(w) = spool_writer.as_mut() {
            // A line too long is spooled empty: the import fails anyway,
            // and line numbers stay the same.
            if matches!(line, Line::Kept) {
                w.write_all(&buf)
            } else {
                Ok(())
            }
            .and_then(|()| w.write_all(b"\n"))
            .context("cannot spool stdin to a temp file")?;
        }
        let text = match line {
            Line::TooLong(n) => {
                bad.add(
                    line_no,
                    format_args!("{n} bytes, longer than 1 MiB (the longest line accepted)"),
                );
                continue;
            }
            Line::Kept => match std::str::from_utf8(&buf) {
                Ok(t) => t.trim(),
                Err(e) => {
                    bad.add(line_no, format_args!("not UTF-8: {e}"));
                    continue;
                }
            },
        };
        if text.is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(s) => {
                if bad.count == 0 {
                    hashes.push(name_hash(&s.name));
                }
            }
            Err(e) => bad.add(line_no, e),
        }
    }
    if bad.count > 0 {
        let more = if bad.count > bad.shown.len() as u64 {
            format!(" (and {} more)", bad.count - bad.shown.len() as u64)
        } else {
            String::new()
        };
        anyhow::bail!(
            "{} bad line(s), nothing written: {}{more}; fix them and import again",
            bad.count,
            bad.shown.join("; ")
        );
    }
    if let Some(w) = spool_writer {
        w.into_inner()
            .map_err(|e| anyhow::anyhow!("cannot spool stdin: {e}"))?;
    }
    let mut source = match (spool, input) {
        (Some(f), _) => f,
        (None, Some(p)) => {
            std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?
        }
        (None, None) => anyhow::bail!("no input"),
    };
    source.rewind().context("cannot rewind the input")?;
    let (count, repeated) = Repeated::from_hashes(hashes);
    Ok(Checked {
        count,
        repeated,
        source,
    })
}

fn progress(total: u64) -> ProgressBar {
    if total < 10_000 || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "import {bar:40} {pos}/{len} schedules ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// What an import did.
pub struct Imported {
    /// Schedules stored (a name given on several lines counts once).
    pub count: u64,
    /// Names given on more than one line (the last line's schedule is stored).
    pub repeated: u64,
    /// A few of them: name and the line stored.
    pub repeated_shown: Vec<(String, u64)>,
    /// Time spent writing (after validation).
    pub write_time: Duration,
    /// Whole time, validation included.
    pub total_time: Duration,
}

/// Validates `input` (a file, or stdin when `None`) and stores every
/// schedule; nothing is stored when a line is bad. Of a name given on
/// several lines, the last line is stored. Interval schedules' first due
/// times are spread over one interval ([`Scheduler::add_batch`]).
pub async fn import(scheduler: &Scheduler, input: Option<&Path>) -> anyhow::Result<Imported> {
    let started = Instant::now();
    let Checked {
        count,
        mut repeated,
        source,
    } = validate(input)?;
    let write_start = Instant::now();
    let bar = progress(count);
    let mut lines = BufReader::with_capacity(256 * 1024, source);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let mut stored = 0u64;
    let mut done = false;
    while !done || !in_flight.is_empty() {
        while !done && in_flight.len() < IN_FLIGHT {
            let mut batch = Vec::with_capacity(BATCH);
            let mut batch_bytes = 0;
            while batch.len() < BATCH && batch_bytes < BATCH_BYTES {
                let Some(line) =
                    read_line(&mut lines, &mut buf).context("cannot read the input again")?
                else {
                    done = true;
                    break;
                };
                line_no += 1;
                // Checked in the first pass; an error here means the
                // input changed in between.
                let changed = |e: &dyn std::fmt::Display| {
                    anyhow::anyhow!("the input changed while importing: line {line_no}: {e}")
                };
                let text = match line {
                    Line::Kept => std::str::from_utf8(&buf).map_err(|e| changed(&e))?.trim(),
                    Line::TooLong(_) => return Err(changed(&"longer than 1 MiB")),
                };
                if text.is_empty() {
                    continue;
                }
                let s = parse_line(text).map_err(|e| changed(&e))?;
                if repeated.is_replaced(&s.name, line_no) {
                    continue;
                }
                batch_bytes += text.len();
                batch.push(s);
            }
            if batch.is_empty() {
                break;
            }
            in_flight.push(async move {
                let n = batch.len() as u64;
                scheduler.add_batch(&batch).await.map(|()| n)
            });
        }
        if let Some(r) = in_flight.next().await {
            let n = r?;
            stored += n;
            bar.inc(n);
        }
    }
    bar.finish_and_clear();
    Ok(Imported {
        count: stored,
        repeated: repeated.names,
        repeated_shown: repeated.shown,
        write_time: write_start.elapsed(),
        total_time: started.elapsed(),
    })
}

/// `schedule import`.
pub async fn run_import(global: &Global, ns: &str, input: Option<&Path>) -> anyhow::Result<()> {
    let redis = global.connect().await?;
    let scheduler = Scheduler::new(&redis, ns);
    let r = import(&scheduler, input).await?;
    if global.json {
        output::json_line(&json!({
            "imported": r.count,
            "repeated": r.repeated,
            "seconds": (r.total_time.as_secs_f64() * 1000.0).round() / 1000.0,
            "write_seconds": (r.write_time.as_secs_f64() * 1000.0).round() / 1000.0,
        }));
    } else {
        let repeated = if r.repeated == 0 {
            String::new()
        } else {
            let shown: Vec<String> = r
                .repeated_shown
                .iter()
                .map(|(name, line)| format!("{name:?} line {line}"))
                .collect();
            format!(
                " ({} repeated name{}: the last line wins, e.g. {})",
                r.repeated,
                if r.repeated == 1 { "" } else { "s" },
                shown.join(", ")
            )
        };
        println!(
            "imported {} schedules into namespace {ns} in {:.1} s{repeated}",
            r.count,
            r.total_time.as_secs_f64()
        );
    }
    Ok(())
}

/// `schedule export`: every definition as one line, in HSCAN order.
pub async fn run_export(global: &Global, ns: &str) -> anyhow::Result<()> {
    let redis = global.connect().await?;
    let scheduler = Scheduler::new(&redis, ns);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut cursor = 0;
    loop {
        let (next, page) = scheduler.scan(cursor, BATCH).await?;
        for s in &page {
            if let Err(e) = writeln!(out, "{}", to_line(s)) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e).context("cannot write to stdout");
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_like_the_flags_and_export_round_trips() {
        for line in [
            r#"{"name":"a","every":"60s","to":"checks"}"#,
            r#"{"name":"b","every":"250ms","to":"t","fields":{"url":"http://x","n":"1"},"missed":"catch-up:3","jitter":"2s"}"#,
            r#"{"name":"c","cron":"0 */5 * * * *","tz":"Europe/Berlin","to":"t","missed":"once","paused":true}"#,
            r#"{"name":"d","every":"1h","to":"t","fields":[["k","1"],["k","2"]]}"#,
        ] {
            let s = parse_line(line).expect(line);
            let again = parse_line(&to_line(&s).to_string()).expect("export parses");
            assert_eq!(again, s, "{line}");
        }
        let s = parse_line(r#"{"name":"n","every":"60s","to":"t","fields":{"qty":2}}"#)
            .expect("number field");
        assert_eq!(s.fields, vec![("qty".to_string(), "2".to_string())]);
    }

    #[test]
    fn lines_are_read_up_to_the_limit_and_no_further() {
        let exact = "x".repeat(MAX_LINE_BYTES);
        let over = "y".repeat(MAX_LINE_BYTES + 1);
        let input = format!("a\r\n{exact}\n{over}\r\n\n{over}{over}\nlast");
        // A small buffer: lines arrive in many pieces.
        let mut r = BufReader::with_capacity(1000, input.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(line) = read_line(&mut r, &mut buf).expect("read") {
            got.push(match line {
                Line::Kept => format!("kept {}", buf.len()),
                Line::TooLong(n) => format!("too long {n}"),
            });
            assert!(
                buf.capacity() <= 2 * (MAX_LINE_BYTES + 2),
                "{}",
                buf.capacity()
            );
        }
        assert_eq!(
            got,
            [
                "kept 1".to_string(),
                format!("kept {MAX_LINE_BYTES}"),
                format!("too long {}", MAX_LINE_BYTES + 3),
                "kept 0".to_string(),
                format!("too long {}", 2 * MAX_LINE_BYTES + 3),
                "kept 4".to_string(),
            ]
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, needle) in [
            ("nope", "not json"),
            ("[1]", "json object"),
            (r#"{"every":"60s","to":"t"}"#, "name"),
            (r#"{"name":"a","to":"t"}"#, "exactly one"),
            (
                r#"{"name":"a","every":"60s","cron":"* * * * *","to":"t"}"#,
                "exactly one",
            ),
            (r#"{"name":"a","every":"soon","to":"t"}"#, "duration"),
            (r#"{"name":"a","every":"60s"}"#, "to"),
            (r#"{"name":"a","every":"10ms","to":"t"}"#, "too short"),
            (r#"{"name":"a","cron":"nope","to":"t"}"#, "cron"),
            (
                r#"{"name":"a","every":"1s","to":"t","missed":"all"}"#,
                "missed",
            ),
            (
                r#"{"name":"a","every":"1s","to":"t","evry":"1s"}"#,
                "unknown key",
            ),
            (
                r#"{"name":"a","every":"1s","to":"t","fields":{"sk-x":"1"}}"#,
                "reserved",
            ),
            (r#"{"name":"a","every":"1s","tz":"UTC","to":"t"}"#, "tz"),
        ] {
            let e = parse_line(line).expect_err(line);
            assert!(e.to_lowercase().contains(needle), "{line}: {e}");
        }
    }
}
