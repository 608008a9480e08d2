//! Value parsers for clap: every typed flag is parsed here once, so a bad
//! value is a one-line usage error (exit 2) that says what to give instead.
//! A leaf: the flag files import it, it imports none of them.

use std::time::Duration;

use streamkeeper::janitor::Archive;
use streamkeeper::scheduler::Missed;
use streamkeeper::{ConsumerName, GroupName, StartFrom, StreamId, StreamKey};

/// Parses a stream key (`S`, `--to S`, `--streams`): any name but the
/// empty one. Names are UTF-8, as clap reads them.
pub fn parse_stream_key(s: &str) -> Result<StreamKey, String> {
    StreamKey::new(s).map_err(|_| "a stream key must not be empty: name the stream".into())
}

/// Parses a consumer group name (`-g G`, `G`).
pub fn parse_group(s: &str) -> Result<GroupName, String> {
    GroupName::new(s).map_err(|_| "a group name must not be empty: name the group".into())
}

/// Parses a consumer name (`consume -c C`).
pub fn parse_consumer(s: &str) -> Result<ConsumerName, String> {
    ConsumerName::new(s).map_err(|_| {
        "a consumer name must not be empty: name the consumer, or drop -c for a unique one".into()
    })
}

/// Parses a stream ID: `<ms>-<seq>` or `<ms>` (sequence 0), as Redis
/// accepts them.
pub fn parse_stream_id(s: &str) -> Result<StreamId, String> {
    s.parse().map_err(|e: streamkeeper::Error| e.to_string())
}

/// Parses where reading starts: `$` (new entries), `-` or `0` (the
/// beginning), an ID, an RFC 3339 time or a relative time (`10m ago`).
pub fn parse_start(s: &str) -> Result<StartFrom, String> {
    s.parse().map_err(|e: streamkeeper::Error| e.to_string())
}

/// Parses an inclusive bound of a range (`dump --from/--to`, `dlq purge
/// --before`): an ID, a time (the first ID of that millisecond), `-` or
/// `0` (the first ID there can be) or `$` (the last).
pub fn parse_bound(s: &str) -> Result<StreamId, String> {
    Ok(match parse_start(s)? {
        StartFrom::After(id) => id,
        StartFrom::Time(t) => StreamId::from_time(t),
        StartFrom::Beginning => StreamId::MIN,
        StartFrom::End => StreamId::MAX,
    })
}

/// Parses `schedule add --missed`: `skip`, `once` or `catch-up:N`.
pub fn parse_missed(s: &str) -> Result<Missed, String> {
    s.parse().map_err(|e: streamkeeper::Error| e.to_string())
}

/// Parses `janitor --archive`: `stream:KEY` or a file path.
pub fn parse_archive(s: &str) -> Result<Archive, String> {
    s.parse()
        .map_err(|e: streamkeeper::Error| format!("{e}: give a JSON-lines FILE or stream:KEY"))
}

/// Parses `k=v`.
pub fn parse_field(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// Parses a humantime duration (`500ms`, `1s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 500ms, 1s, 2m)"))
}

/// Parses a size in bytes: `500000`, `64MB`, `64MiB`, `1GB` (decimal and
/// binary units alike are powers of 1024, as Redis's own config reads them).
/// A listening address: `IP:PORT`, or `localhost:PORT` for the loopback
/// address (other host names are refused: which address they resolve to
/// is the DNS's choice, not the operator's).
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?}: the port must be a number from 0 to 65535"))?;
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "{s:?} is not an address to listen on: give IP:PORT (127.0.0.1:9187, [::1]:9187, 0.0.0.0:9187) or localhost:PORT"
    ))
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size: use e.g. 500000, 64MB, 1GB"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use B, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses a duration that must be longer than zero (intervals, timeouts):
/// `0s` would busy-loop.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{s:?} is zero: give a duration above 0 (e.g. 500ms, 1s)"
        ));
    }
    Ok(d)
}

/// Parses `--claim-after`: at least [`streamkeeper::consumer::MIN_CLAIM_AFTER`].
pub fn parse_claim_after(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let min = streamkeeper::consumer::MIN_CLAIM_AFTER;
    if d < min {
        return Err(format!(
            "{s:?} is below {}: --claim-after is the time to detect a crashed consumer, and live consumers refresh their entries every third of it",
            humantime::format_duration(min)
        ));
    }
    Ok(d)
}

/// Parses `consume --lease`: at least 500 ms (heartbeats every fifth of
/// it must get through scheduling delays).
pub fn parse_lease(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(500) {
        return Err(format!(
            "{s:?} is below 500ms: members heartbeat every fifth of the lease, and a missed heartbeat moves shards"
        ));
    }
    Ok(d)
}

/// Parses a count that must be at least 1.
pub fn parse_positive(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("expected a whole number ≥ 1, got {s:?}")),
    }
}

/// `--max-deliveries`: a limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxDeliveries(pub Option<u64>);

/// `N` (at least 1) or `unlimited`.
pub fn parse_max_deliveries(s: &str) -> Result<MaxDeliveries, String> {
    match s {
        "unlimited" => Ok(MaxDeliveries(None)),
        n => parse_positive(n)
            .map(|n| MaxDeliveries(Some(n)))
            .map_err(|e| format!("{e} (or `unlimited`)")),
    }
}

/// [`parse_positive`] for sizes.
pub fn parse_positive_usize(s: &str) -> Result<usize, String> {
    parse_positive(s).and_then(|n| usize::try_from(n).map_err(|_| format!("{s} is too large")))
}

/// Parses a rate: `100`, `100/s`, `6000/m`.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (n, per) = match s.split_once('/') {
        Some((n, unit)) => {
            let per = match unit {
                "s" | "sec" => 1.0,
                "m" | "min" => 60.0,
                "h" => 3600.0,
                _ => return Err(format!("unknown rate unit {unit:?}: use /s, /m or /h")),
            };
            (n, per)
        }
        None => (s, 1.0),
    };
    let n: f64 = n
        .parse()
        .map_err(|_| format!("expected a rate like 100/s, got {s:?}"))?;
    if !(n > 0.0 && n.is_finite()) {
        return Err(format!("rate must be positive, got {s:?}"));
    }
    Ok(n / per)
}
