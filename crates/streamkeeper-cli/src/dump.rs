//! `streamkeeper dump` and `restore`: JSON lines, lossless (binary values,
//! field order, IDs with `--keep-ids`), streaming in constant memory.
//!
//! `restore` reads its input twice — once to check every line, once to
//! write — so a bad line writes nothing; stdin is spooled to a temp file
//! for that.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use streamkeeper::producer::PIPELINE_CHUNK;
use streamkeeper::{wire, Reader, StartFrom, StreamId};

use crate::cli::{stream_key, DumpArgs, Global, RestoreArgs};
use crate::Exit;

fn bound(s: &str, what: &str) -> anyhow::Result<StreamId> {
    Ok(
        match s
            .parse::<StartFrom>()
            .with_context(|| format!("invalid {what}"))?
        {
            StartFrom::After(id) => id,
            StartFrom::Time(t) => StreamId::from_time(t),
            StartFrom::Beginning => StreamId::MIN,
            StartFrom::End => StreamId::MAX,
        },
    )
}

fn progress(total: u64, what: &str) -> ProgressBar {
    // A bar only for people watching, and only for work worth watching.
    if total < 10_000 || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} entries ({{per_sec}}, {{eta}} left)"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub async fn dump(global: &Global, args: DumpArgs) -> anyhow::Result<Exit> {
    let stream = stream_key(&args.stream)?;
    let from = args
        .from
        .as_deref()
        .map(|f| bound(f, "--from"))
        .transpose()?
        .unwrap_or(StreamId::MIN);
    let to = args
        .to
        .as_deref()
        .map(|t| bound(t, "--to"))
        .transpose()?
        .unwrap_or(StreamId::MAX);
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let redis = global.connect().await?;
    let mut conn = redis.shared();
    let len: u64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut conn)
        .await?;
    let bar = progress(len, "dump");
    let mut reader = Reader::new(&redis, stream.clone(), StartFrom::After(from.prev()))
        .await?
        .page_size(1000);
    let mut n = 0u64;
    'pages: loop {
        let page = reader.next_page().await?;
        if page.is_empty() {
            break;
        }
        for e in &page {
            if e.id > to {
                break 'pages;
            }
            writeln!(out, "{}", wire::entry_to_line(stream.as_str(), e))?;
            n += 1;
        }
        bar.inc(page.len() as u64);
    }
    out.flush()?;
    bar.finish_and_clear();
    tracing::debug!(%stream, entries = n, "dumped");
    Ok(Exit::Ok)
}

pub async fn restore(global: &Global, args: RestoreArgs) -> anyhow::Result<Exit> {
    let stream = stream_key(&args.stream)?;
    // Stdin is read once; spool it so it can be checked before writing.
    let (path, _spool) = match &args.input {
        Some(p) => (p.clone(), None),
        None => {
            let mut tmp =
                tempfile::NamedTempFile::new().context("cannot create a temp file for stdin")?;
            std::io::copy(&mut std::io::stdin().lock(), &mut tmp).context("cannot read stdin")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let what = args
        .input
        .as_ref()
        .map_or("stdin".to_string(), |p| p.display().to_string());
    let open = || -> anyhow::Result<BufReader<File>> {
        Ok(BufReader::new(
            File::open(&path).with_context(|| format!("cannot open {what}"))?,
        ))
    };

    // Pass 1: check every line; nothing is written yet.
    let mut good = 0u64;
    let mut bad = Vec::new();
    let mut last_id: Option<StreamId> = None;
    let mut first_id: Option<StreamId> = None;
    for (i, line) in open()?.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {what}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let checked = wire::parse_line(&line, &format!("{what} line {}", i + 1)).and_then(|p| {
            if args.keep_ids {
                let id = p.id.ok_or_else(|| {
                    streamkeeper::Error::InvalidInput(format!(
                        "{what} line {}: --keep-ids needs an \"id\" on every line",
                        i + 1
                    ))
                })?;
                if last_id.is_some_and(|l| id <= l) {
                    return Err(streamkeeper::Error::InvalidInput(format!(
                        "{what} line {}: ID {id} is not greater than the previous one",
                        i + 1
                    )));
                }
                first_id.get_or_insert(id);
                last_id = Some(id);
            }
            Ok(())
        });
        match checked {
            Ok(()) => good += 1,
            Err(e) if args.skip_bad => bad.push(e.to_string()),
            Err(e) => return Err(e.into()),
        }
    }
    for b in &bad {
        eprintln!("streamkeeper: skipped: {b}");
    }
    let redis = global.connect().await?;
    let mut conn = redis.shared();
    if let Some(first) = first_id {
        let last: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
            .arg(&stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    streamkeeper::Error::redis(format!("XREVRANGE {stream}"), e)
                )
            })?;
        if let Some((id, _)) = last.first() {
            let id: StreamId = id.parse()?;
            if id >= first {
                anyhow::bail!(
                    "--keep-ids: {stream} already ends at {id}, not before the dump's first ID {first}; restore into an empty stream"
                );
            }
        }
    }

    // Pass 2: write in pipelines.
    let bar = progress(good, "restore");
    let mut pipe = redis::pipe();
    let mut queued = 0;
    let mut written = 0u64;
    for line in open()?.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(p) = wire::parse_line(&line, "") else {
            continue;
        };
        let cmd = pipe.cmd("XADD").arg(&stream);
        match (args.keep_ids, p.id) {
            (true, Some(id)) => cmd.arg(id),
            _ => cmd.arg("*"),
        };
        for (k, v) in &p.fields {
            cmd.arg(k.as_slice()).arg(v.as_slice());
        }
        cmd.ignore();
        queued += 1;
        if queued == PIPELINE_CHUNK {
            pipe.query_async::<()>(&mut conn)
                .await
                .with_context(|| format!("writing to {stream}"))?;
            written += queued as u64;
            bar.inc(queued as u64);
            pipe = redis::pipe();
            queued = 0;
        }
    }
    if queued > 0 {
        pipe.query_async::<()>(&mut conn)
            .await
            .with_context(|| format!("writing to {stream}"))?;
        written += queued as u64;
    }
    bar.finish_and_clear();
    if global.json {
        crate::output::json_line(
            &serde_json::json!({"stream": stream.as_str(), "restored": written, "skipped": bad.len()}),
        );
    } else {
        eprintln!(
            "restored {written} entries into {stream}{}",
            if bad.is_empty() {
                String::new()
            } else {
                format!(" ({} bad lines skipped)", bad.len())
            }
        );
    }
    Ok(Exit::Ok)
}
