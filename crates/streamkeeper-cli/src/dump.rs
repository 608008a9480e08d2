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
use streamkeeper::shard::{MergedReader, ShardLayout};
use streamkeeper::{wire, StreamId};

use crate::append::{check_is_stream, Appenders, NewEntry};
use crate::cli::{DumpArgs, Global, RestoreArgs};
use crate::Exit;

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
    let stream = args.stream.clone();
    let from = args.from.unwrap_or(StreamId::MIN);
    let to = args.to.unwrap_or(StreamId::MAX);
    // -o FILE: write a temp file next to FILE and rename it at the end, so
    // a dump that cannot run (no server, wrong key type) or stops half way
    // leaves an existing FILE as it was.
    let mut temp = match &args.output {
        Some(path) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            Some(
                tempfile::Builder::new()
                    .prefix(".streamkeeper-dump-")
                    .tempfile_in(dir)
                    .with_context(|| format!("cannot create a file in {}", dir.display()))?,
            )
        }
        None => None,
    };
    let mut out: Box<dyn Write> = match &mut temp {
        Some(t) => Box::new(BufWriter::new(t.as_file_mut())),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let redis = global.connect().await?;
    check_is_stream(&redis, &stream).await?;
    // A sharded stream: every shard, merged in ID order (the library's
    // merged reader, as `tail`); each line names its shard (`{S:i}`), so
    // `restore` puts it back where it was.
    let keys = ShardLayout::keys_of(&redis, &stream).await?;
    let mut conn = redis.shared();
    let mut len = 0u64;
    for k in &keys {
        let n: u64 = redis::cmd("XLEN")
            .arg(k.as_str())
            .query_async(&mut conn)
            .await
            .map_err(|e| streamkeeper::Error::redis(format!("XLEN {k}"), e))?;
        len += n;
    }
    let bar = progress(len, "dump");
    let mut merged = MergedReader::range(&redis, keys, from, to).await?;
    let mut n = 0u64;
    while let Some(e) = merged.next().await? {
        writeln!(out, "{}", wire::entry_to_line(e.shard.as_str(), &e.entry))?;
        n += 1;
        bar.inc(1);
    }
    out.flush()?;
    drop(out);
    if let (Some(t), Some(path)) = (temp, &args.output) {
        t.persist(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    bar.finish_and_clear();
    tracing::debug!(%stream, entries = n, "dumped");
    Ok(Exit::Ok)
}

pub async fn restore(global: &Global, args: RestoreArgs) -> anyhow::Result<Exit> {
    let stream = args.stream.clone();
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

    let redis = global.connect().await?;
    check_is_stream(&redis, &stream).await?;
    // A sharded stream: a line goes back to the shard it names (a dump of
    // a sharded stream names each entry's shard) when that shard is one
    // of the current layout's (after a resize, older shards are sealed);
    // other lines go round-robin, or are refused with --keep-ids (IDs are
    // per shard).
    let targets = match ShardLayout::open(&redis, &stream).await? {
        Some(layout) => layout.shards(),
        None => vec![stream.clone()],
    };
    let sharded = targets != [stream.clone()];
    let route = |p: &wire::ParsedLine, round_robin: &mut usize| -> Option<usize> {
        if !sharded {
            return Some(0);
        }
        let named = p
            .stream
            .as_deref()
            .and_then(|s| targets.iter().position(|k| k.as_str() == s));
        named.or_else(|| {
            (!args.keep_ids).then(|| {
                *round_robin += 1;
                *round_robin % targets.len()
            })
        })
    };

    // Pass 1: check every line; nothing is written yet.
    let mut good = 0u64;
    let mut bad = Vec::new();
    let mut last_id: Vec<Option<StreamId>> = vec![None; targets.len()];
    let mut first_id: Vec<Option<StreamId>> = vec![None; targets.len()];
    let mut round_robin = 0usize;
    let mut bad_lines = std::collections::HashSet::new();
    for (i, line) in open()?.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read {what}"))?;
        let line = match String::from_utf8(line) {
            Ok(l) => l,
            Err(_) => {
                let e = format!(
                    "{what} line {}: not UTF-8 (dump lines are JSON; bytes that are not UTF-8 go in {{\"b64\": …}} values)",
                    i + 1
                );
                if !args.skip_bad {
                    return Err(streamkeeper::Error::InvalidInput(e).into());
                }
                bad_lines.insert(i);
                bad.push(e);
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let checked = wire::parse_line(&line, &format!("{what} line {}", i + 1)).and_then(|p| {
            let t = route(&p, &mut round_robin).ok_or_else(|| {
                streamkeeper::Error::InvalidInput(format!(
                    "{what} line {}: --keep-ids into the sharded stream {stream} needs each line's \"stream\" to name one of its shards ({{{stream}:0}} …)",
                    i + 1
                ))
            })?;
            if args.keep_ids {
                let id = p.id.ok_or_else(|| {
                    streamkeeper::Error::InvalidInput(format!(
                        "{what} line {}: --keep-ids needs an \"id\" on every line",
                        i + 1
                    ))
                })?;
                if last_id[t].is_some_and(|l| id <= l) {
                    return Err(streamkeeper::Error::InvalidInput(format!(
                        "{what} line {}: ID {id} is not greater than the previous one of {}",
                        i + 1,
                        targets[t]
                    )));
                }
                first_id[t].get_or_insert(id);
                last_id[t] = Some(id);
            }
            Ok(())
        });
        match checked {
            Ok(()) => good += 1,
            Err(e) if args.skip_bad => {
                bad_lines.insert(i);
                bad.push(e.to_string());
            }
            Err(e) => return Err(e.into()),
        }
    }
    for b in &bad {
        eprintln!("streamkeeper: skipped: {b}");
    }
    for (first, key) in first_id.iter().zip(&targets) {
        let Some(first) = first else {
            continue;
        };
        // XADD refuses an ID at or below the stream's last-generated ID,
        // which may lie beyond its last entry (deleted or trimmed ones).
        if let Some(last) = last_generated_id(&redis, key).await? {
            if last >= *first {
                anyhow::bail!(
                    "--keep-ids: {key} has already used IDs up to {last}, not before the dump's first ID {first}; nothing written: restore into a new stream"
                );
            }
        }
    }

    // Pass 2: write in atomic chunks, per target stream.
    let bar = progress(good, "restore");
    let mut appenders = Appenders::open(&redis, &targets, None, None).await?;
    let mut chunks: Vec<Vec<NewEntry>> = vec![Vec::new(); targets.len()];
    let mut round_robin = 0usize;
    for (i, line) in open()?.split(b'\n').enumerate() {
        let line = line?;
        // Pass 1 skipped these (with --skip-bad): so does pass 2.
        if bad_lines.contains(&i) {
            continue;
        }
        let Ok(line) = String::from_utf8(line) else {
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(p) = wire::parse_line(&line, "") else {
            continue;
        };
        let Some(t) = route(&p, &mut round_robin) else {
            continue;
        };
        chunks[t].push((p.id.filter(|_| args.keep_ids), p.fields));
        if chunks[t].len() == PIPELINE_CHUNK {
            appenders.append(t, &chunks[t], Some(good)).await?;
            bar.inc(chunks[t].len() as u64);
            chunks[t].clear();
        }
    }
    for (t, chunk) in chunks.iter().enumerate() {
        if !chunk.is_empty() {
            appenders.append(t, chunk, Some(good)).await?;
        }
    }
    let written = appenders.written();
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

/// The stream's last-generated ID (`XINFO STREAM`), `None` if it does not
/// exist.
async fn last_generated_id(
    redis: &streamkeeper::Connector,
    stream: &streamkeeper::StreamKey,
) -> anyhow::Result<Option<StreamId>> {
    let mut conn = redis.shared();
    let r: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(&mut conn)
        .await;
    let info = match r {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => {
            return Err(streamkeeper::Error::redis(format!("XINFO STREAM {stream}"), e).into())
        }
    };
    let pairs: Vec<redis::Value> = match info {
        redis::Value::Array(a) => a,
        redis::Value::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    };
    for kv in pairs.chunks(2) {
        let key = match &kv[0] {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            _ => continue,
        };
        if key == "last-generated-id" {
            if let Some(redis::Value::BulkString(b)) = kv.get(1) {
                return Ok(Some(StreamId::from_bytes(b)?));
            }
        }
    }
    Ok(None)
}
