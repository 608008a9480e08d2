//! W3C Trace Context carried in entries (docs/design.md §11): a producer
//! can write the `traceparent` field, and a consumer continues it — each
//! handler run is a span of the producer's trace, and its own
//! `traceparent` (same trace id, the run's span id) is what handlers pass
//! on (`TRACEPARENT` for `--exec`, a `traceparent` key for `--pipe`).
//!
//! This module is only the format; spans are exported by the `otel`
//! feature (`otel.rs`), and without it the IDs still flow, so a worker's
//! logs can be joined on the trace id.
//!
//! ```
//! use streamkeeper::trace::TraceParent;
//! let p: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap();
//! let run = p.child();
//! assert_eq!(run.trace_id, p.trace_id);
//! assert_ne!(run.span_id, p.span_id);
//! assert!(run.to_string().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! ```

use std::fmt;
use std::str::FromStr;

/// Whether handler runs are exported as spans (set by whoever installs an
/// OpenTelemetry exporter; see [`set_exporting`]).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says an OpenTelemetry tracer provider is installed (the `otel`
/// feature): every handler run then starts a `process` span, also for an
/// entry that carries no `traceparent` (a new trace). Without it, no span
/// is made and a run only passes on the entry's context with a new span id.
pub fn set_exporting(on: bool) {
    EXPORTING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`set_exporting`] said so.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// The entry field (and `--pipe` JSON key) holding the trace context.
pub const FIELD: &str = "traceparent";

/// The environment variable `--exec` handlers get.
pub const ENV: &str = "TRACEPARENT";

/// Which trace context a [`Producer`](crate::Producer) writes into the
/// `traceparent` field of each entry (an entry that has one keeps it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TraceSource {
    /// None (the default).
    #[default]
    Off,
    /// This one, e.g. the caller's own `TRACEPARENT`.
    Fixed(TraceParent),
    /// The caller's current OpenTelemetry span (feature `otel`; without
    /// it, or outside a span, nothing is written).
    Current,
}

impl TraceSource {
    /// The context to write now, if any.
    pub fn now(&self) -> Option<TraceParent> {
        match self {
            TraceSource::Off => None,
            TraceSource::Fixed(t) => Some(*t),
            #[cfg(feature = "otel")]
            TraceSource::Current => crate::otel::current(),
            #[cfg(not(feature = "otel"))]
            TraceSource::Current => None,
        }
    }
}

/// A W3C `traceparent`: `00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero: the span this one continues.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// A new trace (random IDs).
    pub fn new_root(sampled: bool) -> Self {
        TraceParent {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: u8::from(sampled),
        }
    }

    /// The same trace with a new span id: the context a span started under
    /// this one hands on.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: nonzero(),
            ..*self
        }
    }

    /// Whether the caller sampled the trace (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id in lowercase hex (32 characters).
    pub fn trace_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id in lowercase hex (16 characters).
    pub fn span_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The context of an entry: its `traceparent` field, if it holds a
    /// valid one (an invalid one is ignored, as the W3C spec says).
    pub fn of_entry(entry: &crate::Entry) -> Option<Self> {
        let raw = entry.get(FIELD)?;
        std::str::from_utf8(raw).ok()?.parse().ok()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn nonzero<const N: usize>() -> [u8; N] {
    use rand::Rng;
    let mut b = [0u8; N];
    while b.iter().all(|x| *x == 0) {
        rand::rng().fill(&mut b[..]);
    }
    b
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_hex(),
            self.span_hex(),
            self.flags
        )
    }
}

/// Why a `traceparent` was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)")]
pub struct InvalidTraceParent;

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    /// Version `00` exactly; a later version is read by its first four
    /// parts (the spec's forward compatibility); `ff` is invalid.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.split('-');
        let (Some(v), Some(t), Some(p), Some(f)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTraceParent);
        };
        let version = unhex::<1>(v).ok_or(InvalidTraceParent)?[0];
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return Err(InvalidTraceParent);
        }
        let trace_id = unhex::<16>(t).ok_or(InvalidTraceParent)?;
        let span_id = unhex::<8>(p).ok_or(InvalidTraceParent)?;
        let flags = unhex::<1>(f).ok_or(InvalidTraceParent)?[0];
        if trace_id.iter().all(|x| *x == 0) || span_id.iter().all(|x| *x == 0) {
            return Err(InvalidTraceParent);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_w3c_form() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let p: TraceParent = s.parse().expect("valid");
        assert_eq!(p.to_string(), s);
        assert!(p.sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?}");
        }
        // A later version: read by its first four parts.
        let later: TraceParent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"
            .parse()
            .expect("forward compatible");
        assert_eq!(later.trace_id, p.trace_id);
    }

    #[test]
    fn a_child_keeps_the_trace_and_flags() {
        let root = TraceParent::new_root(true);
        let c = root.child();
        assert_eq!((c.trace_id, c.flags), (root.trace_id, root.flags));
        assert_ne!(c.span_id, root.span_id);
    }
}
