//! `schedule import` and `schedule export`: schedules as JSON lines, named
//! like the flags of `schedule add`:
//! `{"name","every"|"cron","tz","to","fields","missed","jitter","paused"}`.
//!
//! Import reads its input twice, so memory stays bounded however many
//! lines there are: a first pass validates every line (stdin is spooled to
//! a temp file meanwhile) and nothing is written if any is bad; the second
//! pass stores them in pipelined batches with a progress bar on stderr.
//! Export pages through the definitions with HSCAN; import(export) gives
//! back the same schedules.

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
/// Bad lines named in the error message (the count covers the rest).
const SHOWN_ERRORS: usize = 3;

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

/// What the validation pass found.
struct Checked {
    /// Non-blank lines (all valid).
    count: u64,
    /// The input to read again for the write pass.
    source: std::fs::File,
}

/// First pass: every line must be a valid schedule. Stdin is copied to a
/// temp file as it is read, so the second pass can read it again.
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
    let (mut count, mut bad, mut shown) = (0u64, 0u64, Vec::new());
    let mut buf = String::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = lines
            .read_line(&mut buf)
            .with_context(|| format!("cannot read line {}", line_no + 1))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if let Some(w) = spool_writer.as_mut() {
            w.write_all(buf.as_bytes())
                .context("cannot spool stdin to a temp file")?;
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(_) => count += 1,
            Err(e) => {
                bad += 1;
                if shown.len() < SHOWN_ERRORS {
                    shown.push(format!("line {line_no}: {e}"));
                }
            }
        }
    }
    if bad > 0 {
        let more = if bad > shown.len() as u64 {
            format!(" (and {} more)", bad - shown.len() as u64)
        } else {
            String::new()
        };
        anyhow::bail!(
            "{bad} bad line(s), nothing written: {}{more}; fix them and import again",
            shown.join("; ")
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
    Ok(Checked { count, source })
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
    /// Schedules stored.
    pub count: u64,
    /// Time spent writing (after validation).
    pub write_time: Duration,
    /// Whole time, validation included.
    pub total_time: Duration,
}

/// Validates `input` (a file, or stdin when `None`) and stores every
/// schedule; nothing is stored when a line is bad.
pub async fn import(scheduler: &Scheduler, input: Option<&Path>) -> anyhow::Result<Imported> {
    let started = Instant::now();
    let Checked { count, source } = validate(input)?;
    let write_start = Instant::now();
    let bar = progress(count);
    let mut lines = BufReader::with_capacity(256 * 1024, source).lines();
    let mut in_flight = FuturesUnordered::new();
    let mut stored = 0u64;
    let mut done = false;
    while !done || !in_flight.is_empty() {
        while !done && in_flight.len() < IN_FLIGHT {
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                let Some(line) = lines.next() else {
                    done = true;
                    break;
                };
                let line = line.context("cannot read the input again")?;
                let text = line.trim();
                if text.is_empty() {
                    continue;
                }
                // Checked in the first pass; an error here means the
                // input changed in between.
                batch.push(
                    parse_line(text)
                        .map_err(|e| anyhow::anyhow!("the input changed while importing: {e}"))?,
                );
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
            "seconds": (r.total_time.as_secs_f64() * 1000.0).round() / 1000.0,
            "write_seconds": (r.write_time.as_secs_f64() * 1000.0).round() / 1000.0,
        }));
    } else {
        println!(
            "imported {} schedules into namespace {ns} in {:.1} s",
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
