//! The measuring kit every `bench` mode shares: figures and their report,
//! rates, and the plain redis-rs loops (fill, produce, consume) that the
//! library is compared with. A leaf: the bench modes import it, it imports
//! none of them.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use serde_json::json;

use crate::output;

pub(crate) const ROUNDS: usize = 3;
pub(crate) const BATCH: usize = 1000;

pub(crate) struct Figure {
    pub(crate) mode: &'static str,
    pub(crate) messages: u64,
    pub(crate) rate: f64,
    pub(crate) baseline_rate: Option<f64>,
    pub(crate) peak_rss_bytes: Option<u64>,
}

pub(crate) fn report(json: bool, f: &Figure) {
    let ratio = f.baseline_rate.map(|b| f.rate / b);
    if json {
        output::json_line(&json!({
            "mode": f.mode,
            "messages": f.messages,
            "rate": f.rate.round(),
            "baseline_rate": f.baseline_rate.map(f64::round),
            "ratio": ratio.map(|r| (r * 1000.0).round() / 1000.0),
            "peak_rss_bytes": f.peak_rss_bytes,
        }));
    } else {
        let mut line = format!(
            "{:<8} {:>9} msgs  {:>10.0} msg/s",
            f.mode, f.messages, f.rate
        );
        if let (Some(b), Some(r)) = (f.baseline_rate, ratio) {
            line.push_str(&format!("  baseline {b:>10.0} msg/s  ratio {r:.2}x"));
        }
        if let Some(rss) = f.peak_rss_bytes {
            line.push_str(&format!(
                "  peak RSS {:.1} MiB",
                rss as f64 / (1024.0 * 1024.0)
            ));
        }
        println!("{line}");
    }
}

pub(crate) fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

pub(crate) async fn del(conn: &mut MultiplexedConnection, key: &str) -> anyhow::Result<()> {
    let _: () = redis::cmd("DEL").arg(key).query_async(conn).await?;
    Ok(())
}

/// Fills `key` with `n` entries using plain pipelines (setup, not timed).
pub(crate) async fn fill(
    conn: &mut MultiplexedConnection,
    key: &str,
    n: u64,
    payload: &str,
) -> anyhow::Result<()> {
    plain_produce(conn, key, n, payload).await
}

pub(crate) async fn plain_produce(
    conn: &mut MultiplexedConnection,
    key: &str,
    n: u64,
    payload: &str,
) -> anyhow::Result<()> {
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64);
        let mut pipe = redis::pipe();
        for _ in 0..k {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("data")
                .arg(payload)
                .ignore();
        }
        let _: () = pipe.query_async(conn).await?;
        left -= k;
    }
    Ok(())
}

/// The produce figure: the best of [`ROUNDS`] runs of `send` appending
/// `messages` in batches of [`BATCH`] and, with `baseline`, of `plain`
/// (the plain redis-rs loop); `reset` empties the target before each run
/// and after the last.
pub(crate) async fn produce_figure(
    messages: u64,
    baseline: bool,
    mut reset: impl AsyncFnMut() -> anyhow::Result<()>,
    mut send: impl AsyncFnMut(usize) -> anyhow::Result<()>,
    mut plain: impl AsyncFnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Figure> {
    let (mut best, mut best_base) = (0f64, 0f64);
    for _ in 0..ROUNDS {
        reset().await?;
        let t = Instant::now();
        let mut left = messages;
        while left > 0 {
            let k = usize::try_from(left.min(BATCH as u64))?;
            send(k).await?;
            left -= k as u64;
        }
        best = best.max(rate(messages, t.elapsed()));
        if baseline {
            reset().await?;
            let t = Instant::now();
            plain().await?;
            best_base = best_base.max(rate(messages, t.elapsed()));
        }
    }
    reset().await?;
    Ok(Figure {
        mode: "produce",
        messages,
        rate: best,
        baseline_rate: baseline.then_some(best_base),
        peak_rss_bytes: None,
    })
}
/// The best plain loop: read a batch, then pipeline its XACK with the next read.
pub(crate) async fn plain_consume(
    mut conn: MultiplexedConnection,
    key: &str,
    group: &str,
    total: u64,
) -> anyhow::Result<u64> {
    let read = || {
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP")
            .arg(group)
            .arg("bench")
            .arg("COUNT")
            .arg(BATCH)
            .arg("STREAMS")
            .arg(key)
            .arg(">");
        c
    };
    let mut ids: Vec<Vec<u8>> = Vec::new();
    let mut done = 0u64;
    loop {
        let mut pipe = redis::pipe();
        if !ids.is_empty() {
            pipe.cmd("XACK").arg(key).arg(group).arg(&ids).ignore();
        }
        pipe.add_command(read());
        let (v,): (Value,) = pipe.query_async(&mut conn).await?;
        ids = reply_ids(v);
        done += ids.len() as u64;
        if ids.is_empty() || done >= total {
            break;
        }
    }
    if !ids.is_empty() {
        let _: () = redis::cmd("XACK")
            .arg(key)
            .arg(group)
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
    }
    Ok(done)
}

/// The IDs of a one-stream XREAD/XREADGROUP reply.
pub(crate) fn reply_ids(v: Value) -> Vec<Vec<u8>> {
    let Value::Array(streams) = v else {
        return Vec::new();
    };
    let mut ids = Vec::new();
    for s in streams {
        let Value::Array(mut kv) = s else { continue };
        let Some(Value::Array(entries)) = kv.pop() else {
            continue;
        };
        for e in entries {
            if let Value::Array(mut parts) = e {
                if !parts.is_empty() {
                    if let Value::BulkString(id) = parts.swap_remove(0) {
                        ids.push(id);
                    }
                }
            }
        }
    }
    ids
}

pub(crate) async fn check_drained(
    plain: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> anyhow::Result<()> {
    let v: (u64, Value, Value, Value) = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(plain)
        .await?;
    if v.0 != 0 {
        anyhow::bail!("bench bug: group {group} left {} entries pending", v.0);
    }
    Ok(())
}

/// Resets the kernel's peak-RSS counter of this process (Linux ≥ 4.0).
pub(crate) fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak RSS (VmHWM) in bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}
