//! `streamkeeper produce`: append entries from `--field` or JSON lines.
//!
//! Stdin is read and checked whole before the first XADD, so a bad line
//! writes nothing (exit 2, with the line number).

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use streamkeeper::producer::PIPELINE_CHUNK;
use streamkeeper::types::Bytes;
use streamkeeper::{wire, Cap, Producer, StreamId};

use crate::cli::{stream_key, Global, ProduceArgs};
use crate::Exit;

type Fields = Vec<(Bytes, Bytes)>;

/// Reads and validates every line of `input`; the first bad line is an
/// error naming its number.
pub fn read_json_lines(input: impl BufRead, what: &str) -> anyhow::Result<Vec<Fields>> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {what}"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = wire::parse_line(line, &format!("{what} line {}", i + 1))?;
        out.push(parsed.fields);
    }
    Ok(out)
}

fn templated(fields: &[(String, String)], i: u64) -> Fields {
    fields
        .iter()
        .map(|(k, v)| {
            (
                k.as_bytes().to_vec(),
                v.replace("{i}", &i.to_string()).into_bytes(),
            )
        })
        .collect()
}

pub async fn run(global: &Global, args: ProduceArgs) -> anyhow::Result<Exit> {
    let stream = stream_key(&args.stream)?;
    let entries: Vec<Fields> = if args.fields.is_empty() {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("reading JSON lines from stdin (Ctrl-D to finish); use --field k=v to produce without stdin");
        }
        read_json_lines(std::io::stdin().lock(), "stdin")?
    } else {
        (0..args.count)
            .map(|i| templated(&args.fields, i))
            .collect()
    };
    if entries.is_empty() {
        anyhow::bail!("no entries to produce: give --field k=v or JSON lines on stdin");
    }
    let redis = global.connect().await?;
    let mut producer = Producer::new(&redis, stream);
    if let Some(n) = args.maxlen {
        producer = producer.with_cap(Cap::MaxLen(n));
    }
    if let Some(replicas) = args.wait {
        producer = producer.with_wait(streamkeeper::Wait {
            replicas,
            timeout: args.wait_timeout,
        });
    }
    let chunk = match args.rate {
        // Send about ten times a second at the given rate.
        Some(rate) => ((rate / 10.0).ceil() as usize).clamp(1, PIPELINE_CHUNK),
        None => PIPELINE_CHUNK,
    };
    let started = Instant::now();
    let mut sent = 0usize;
    for part in entries.chunks(chunk) {
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let ids = producer.send_batch(part).await?;
        sent += ids.len();
        if !global.quiet {
            print_ids(global.json, &ids);
        }
    }
    Ok(Exit::Ok)
}

fn print_ids(json: bool, ids: &[StreamId]) {
    let mut out = std::io::stdout().lock();
    for id in ids {
        let _ = if json {
            writeln!(out, "{}", serde_json::json!({ "id": id.to_string() }))
        } else {
            writeln!(out, "{id}")
        };
    }
}
