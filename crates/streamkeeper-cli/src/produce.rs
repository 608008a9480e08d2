//! `streamkeeper produce`: append entries from `--field` or JSON lines.
//!
//! Stdin is read and checked whole before the first XADD, so a bad line
//! writes nothing (exit 2, with the line number). `--field … --count N`
//! makes its entries one chunk at a time (bounded memory). Entries go out
//! in atomic chunks ([`crate::append`]): if the server refuses part way,
//! the error says how many were written and the last ID.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use streamkeeper::producer::PIPELINE_CHUNK;
use streamkeeper::types::Bytes;
use streamkeeper::{wire, StreamId};

use streamkeeper::shard::{ShardLayout, ShardedProducer};
use streamkeeper::StreamKey;

use crate::append::{check_is_stream, Appender, Appenders, NewEntry};
use crate::cli::{Global, ProduceArgs};
use crate::Exit;

/// `--hold-writes`: the longest writes wait after a Sentinel failover for
/// the new master to have a replica in sync.
const HOLD_WRITES_MAX: Duration = Duration::from_secs(30);

type Fields = Vec<(Bytes, Bytes)>;

/// Refuses field names that streamkeeper reserves (docs/design.md §5).
fn check_reserved(fields: &Fields, hint: &str) -> anyhow::Result<()> {
    if let Some((k, _)) = fields.iter().find(|(k, _)| streamkeeper::meta::is_meta(k)) {
        anyhow::bail!(
            "{hint}: field name {:?} is reserved (names starting with sk- are streamkeeper's metadata); rename it",
            String::from_utf8_lossy(k)
        );
    }
    Ok(())
}

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
        let hint = format!("{what} line {}", i + 1);
        let parsed = wire::parse_line(line, &hint)?;
        check_reserved(&parsed.fields, &hint)?;
        out.push(parsed.fields);
    }
    Ok(out)
}

/// A `--field` value for entry `i`: `{i}` becomes the index, `{{i}}` a
/// literal `{i}`.
fn template(v: &str, i: u64) -> String {
    v.split("{{i}}")
        .map(|part| part.replace("{i}", &i.to_string()))
        .collect::<Vec<_>>()
        .join("{i}")
}

fn templated(fields: &[(String, String)], i: u64) -> Fields {
    fields
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), template(v, i).into_bytes()))
        .collect()
}

pub async fn run(global: &Global, args: ProduceArgs) -> anyhow::Result<Exit> {
    let stream = args.stream.clone();
    let from_stdin = args.fields.is_empty();
    let stdin_entries: Vec<Fields> = if from_stdin {
        if args.count.is_some() {
            anyhow::bail!(
                "--count only applies to --field entries; with stdin, every line is one entry"
            );
        }
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("reading JSON lines from stdin (Ctrl-D to finish); use --field k=v to produce without stdin");
        }
        let entries = read_json_lines(std::io::stdin().lock(), "stdin")?;
        if entries.is_empty() {
            anyhow::bail!("no entries to produce: give --field k=v or JSON lines on stdin");
        }
        entries
    } else {
        check_reserved(&templated(&args.fields, 0), "--field")?;
        Vec::new()
    };
    let total = if from_stdin {
        stdin_entries.len() as u64
    } else {
        args.count.unwrap_or(1)
    };
    let redis = global
        .connect_with(streamkeeper::ConnectorOptions {
            replica_hold: args.hold_writes.then_some(HOLD_WRITES_MAX),
            ..Default::default()
        })
        .await?;
    check_is_stream(&redis, &stream).await?;
    let wait = args.wait.map(|replicas| streamkeeper::Wait {
        replicas,
        timeout: args.wait_timeout,
    });
    let layout = ShardLayout::open(&redis, &stream).await?;
    let routing = args.key.is_some() || args.key_field.is_some();
    if routing && layout.is_none() {
        anyhow::bail!(
            "{stream} is not a sharded stream: --key/--key-field route entries of sharded streams (make one with `streamkeeper shard create {stream} --shards N`)"
        );
    }
    if let (Some(name), true) = (&args.key_field, from_stdin) {
        if let Some(n) = stdin_entries
            .iter()
            .position(|f| !f.iter().any(|(k, _)| k == name.as_bytes()))
        {
            anyhow::bail!(
                "stdin entry {}: no field {name:?} to route by (--key-field)",
                n + 1
            );
        }
    }
    if let (Some(name), false) = (&args.key_field, from_stdin) {
        if !args.fields.iter().any(|(k, _)| k == name) {
            anyhow::bail!("no --field {name}=… to route by (--key-field {name})");
        }
    }
    if let Some(layout) = layout {
        let router = Router::new(&redis, layout, args.maxlen, wait, &args).await?;
        return produce_sharded(global, router, args, stdin_entries, total).await;
    }
    let mut appender = Appender::new(&redis, stream, args.maxlen)
        .with_wait(wait)
        .with_trace(crate::otel::produce_source());
    let chunk = match args.rate {
        // Send about ten times a second at the given rate.
        Some(rate) => ((rate / 10.0).ceil() as usize).clamp(1, PIPELINE_CHUNK),
        None => PIPELINE_CHUNK,
    } as u64;
    let started = Instant::now();
    let mut next = 0u64;
    let mut stdin_entries = stdin_entries.into_iter();
    while next < total {
        let n = chunk.min(total - next);
        let part: Vec<NewEntry> = if from_stdin {
            stdin_entries
                .by_ref()
                .take(n as usize)
                .map(|f| (None, f))
                .collect()
        } else {
            (next..next + n)
                .map(|i| (None, templated(&args.fields, i)))
                .collect()
        };
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(next as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let ids = appender.append(&part, Some(total)).await?;
        next += n;
        if !global.quiet {
            print_ids(global.json, &ids)?;
        }
    }
    tracing::debug!(written = appender.written(), "produced");
    Ok(Exit::Ok)
}

/// The library's [`ShardedProducer`] (its routing rule, a producer per
/// shard) and what `--key`/`--key-field` route by.
struct Router {
    layout: ShardLayout,
    sharded: ShardedProducer,
    appenders: Appenders,
    key: Option<String>,
    key_field: Option<Bytes>,
}

impl Router {
    async fn new(
        redis: &streamkeeper::Connector,
        layout: ShardLayout,
        maxlen: Option<u64>,
        wait: Option<streamkeeper::Wait>,
        args: &ProduceArgs,
    ) -> anyhow::Result<Self> {
        crate::append::check_all_streams(redis, &layout.shards()).await?;
        let mut sharded = ShardedProducer::new(redis, layout.clone()).with_maxlen(maxlen);
        if let Some(w) = wait {
            sharded = sharded.with_wait(w);
        }
        let appenders = Appenders::of((0..layout.count()).map(|i| sharded.shard_producer(i)))
            .with_trace(crate::otel::produce_source());
        Ok(Router {
            layout,
            sharded,
            appenders,
            key: args.key.clone(),
            key_field: args.key_field.as_ref().map(|k| k.as_bytes().to_vec()),
        })
    }

    /// Appends `part` (entries `first`, `first + 1`, … of the command):
    /// each shard's entries in one step, in order; the entries a shard
    /// sealed by a resize refused are sent again, in order, by the new
    /// layout. Returns each entry's shard and ID in input order.
    async fn append(
        &mut self,
        first: u64,
        part: Vec<Fields>,
        total: u64,
    ) -> anyhow::Result<Vec<(StreamKey, StreamId)>> {
        let mut out: Vec<Option<(StreamKey, StreamId)>> = vec![None; part.len()];
        let mut part: Vec<Option<Fields>> = part.into_iter().map(Some).collect();
        let mut left: Vec<usize> = (0..part.len()).collect();
        while !left.is_empty() {
            let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); self.layout.count() as usize];
            for &j in &left {
                let fields = part[j].as_ref().expect("not written yet");
                per_shard[self.shard(first + j as u64, fields) as usize].push(j);
            }
            let mut still = Vec::new();
            for (s, idx) in per_shard.iter().enumerate() {
                if idx.is_empty() {
                    continue;
                }
                let entries: Vec<NewEntry> = idx
                    .iter()
                    .map(|&j| (None, part[j].take().expect("not written yet")))
                    .collect();
                let (ids, sealed) = self
                    .appenders
                    .append_or_sealed(s, &entries, Some(total))
                    .await?;
                let key = self.layout.shard(s as u32);
                for (&j, id) in idx.iter().zip(&ids) {
                    out[j] = Some((key.clone(), *id));
                }
                if sealed {
                    // Back in line for the new layout, in their order.
                    for (&j, (_, fields)) in idx.iter().zip(entries).skip(ids.len()) {
                        part[j] = Some(fields);
                        still.push(j);
                    }
                }
            }
            if !still.is_empty() {
                self.follow().await?;
            }
            still.sort_unstable();
            left = still;
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Re-reads the layout after a resize sealed a shard written to.
    async fn follow(&mut self) -> anyhow::Result<()> {
        self.sharded.follow(&self.layout).await?;
        self.layout = self.sharded.layout();
        let layout = &self.layout;
        let written = self.appenders.written();
        self.appenders = Appenders::of((0..layout.count()).map(|i| self.sharded.shard_producer(i)))
            .with_trace(crate::otel::produce_source())
            .after(written);
        // The library logs the move (info, on stderr).
        Ok(())
    }

    /// The shard of entry `i` with `fields`.
    fn shard(&self, i: u64, fields: &Fields) -> u32 {
        if let Some(key) = &self.key {
            return self.sharded.route(Some(template(key, i).as_bytes()));
        }
        if let Some(name) = &self.key_field {
            if let Some((_, v)) = fields.iter().find(|(k, _)| k == name) {
                return self.sharded.route(Some(v));
            }
        }
        self.sharded.route(None)
    }
}

/// `produce` on a sharded stream: each chunk is split by shard and each
/// part appended to its shard (atomically per part, in order per shard).
async fn produce_sharded(
    global: &Global,
    mut router: Router,
    args: ProduceArgs,
    stdin_entries: Vec<Fields>,
    total: u64,
) -> anyhow::Result<Exit> {
    let chunk = match args.rate {
        Some(rate) => ((rate / 10.0).ceil() as usize).clamp(1, PIPELINE_CHUNK),
        None => PIPELINE_CHUNK,
    } as u64;
    let from_stdin = args.fields.is_empty();
    let started = Instant::now();
    let mut next = 0u64;
    let mut stdin_entries = stdin_entries.into_iter();
    while next < total {
        let n = chunk.min(total - next);
        let part: Vec<Fields> = if from_stdin {
            stdin_entries.by_ref().take(n as usize).collect()
        } else {
            (next..next + n)
                .map(|i| templated(&args.fields, i))
                .collect()
        };
        if let Some(rate) = args.rate {
            let due = started + Duration::from_secs_f64(next as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let out = router.append(next, part, total).await?;
        next += n;
        if !global.quiet {
            let mut w = std::io::BufWriter::new(std::io::stdout().lock());
            for (key, id) in out {
                if global.json {
                    writeln!(
                        w,
                        "{}",
                        serde_json::json!({ "stream": key.as_str(), "id": id.to_string() })
                    )?;
                } else {
                    writeln!(w, "{key} {id}")?;
                }
            }
            w.flush()?;
        }
    }
    Ok(Exit::Ok)
}

fn print_ids(json: bool, ids: &[StreamId]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for id in ids {
        if json {
            writeln!(out, "{}", serde_json::json!({ "id": id.to_string() }))?;
        } else {
            writeln!(out, "{id}")?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::template;

    #[test]
    fn index_template_and_its_escape() {
        assert_eq!(template("n-{i}", 7), "n-7");
        assert_eq!(template("{{i}} is {i}", 3), "{i} is 3");
        assert_eq!(template("plain", 1), "plain");
    }
}
