//! What a schedule is, how it is validated, and when its ticks fall.
//!
//! Tick times are computed on the client (interval arithmetic, or croner
//! with an IANA time zone, DST included) and checked by the claim script,
//! which only accepts a due time it still holds.

use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::StreamKey;

/// The shortest interval accepted (tests use sub-second schedules).
pub const MIN_EVERY: Duration = Duration::from_millis(100);

/// The latest due time a schedule may have: 9999-12-31T23:59:59.999Z, the
/// last instant RFC 3339 (and `schedule ls`) can show. A schedule whose
/// next tick falls later never fires and is refused.
pub const MAX_DUE_MS: u64 = 253_402_300_799_999;

/// The longest schedule name accepted, in bytes. A name is a hash field
/// and a zset member read on every poll, and `sk-schedule` of every tick:
/// a 10 MB name was accepted before (issue 18).
pub const MAX_NAME_BYTES: usize = 1024;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spec {
    /// Every so many milliseconds, counted from the previous due time (no drift).
    EveryMs(u64),
    /// A cron expression (seconds field optional) in an IANA time zone.
    Cron {
        /// The expression, e.g. `0 */5 * * * *`.
        expr: String,
        /// The time zone, e.g. `Europe/Berlin` (default UTC).
        tz: String,
    },
}

/// What to do with ticks missed while no instance ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Emit none of them; go on with the current tick.
    Skip,
    /// Emit one catch-up tick (the latest missed).
    Once,
    /// Emit up to N of them (the latest N).
    CatchUp(u32),
}

impl FromStr for Missed {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(Missed::Skip),
            "once" => Ok(Missed::Once),
            _ => match s.strip_prefix("catch-up:").map(str::parse::<u32>) {
                Some(Ok(n)) if n > 0 => Ok(Missed::CatchUp(n)),
                _ => Err(Error::InvalidInput(format!(
                    "invalid missed-tick policy {s:?}: use skip, once or catch-up:N (N ≥ 1)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for Missed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missed::Skip => f.write_str("skip"),
            Missed::Once => f.write_str("once"),
            Missed::CatchUp(n) => write!(f, "catch-up:{n}"),
        }
    }
}

impl Serialize for Missed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Missed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A schedule: ticks appended to a stream at an interval or on a cron.
///
/// ```
/// use std::time::Duration;
/// use streamkeeper::scheduler::{Missed, Schedule};
/// let s = Schedule::every("health-check", Duration::from_secs(30), "checks")
///     .unwrap()
///     .field("url", "http://127.0.0.1:8080/health")
///     .missed(Missed::Skip);
/// assert_eq!(s.next_after(1_000), 31_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Unique name within the namespace.
    pub name: String,
    /// When it fires.
    pub spec: Spec,
    /// The stream ticks are appended to.
    pub target: StreamKey,
    /// Fields of every tick (before `sk-schedule` and `sk-due`).
    pub fields: Vec<(String, String)>,
    /// Missed-tick policy.
    pub missed: Missed,
    /// Spread of emit times: each tick is emitted up to this much after its
    /// due time (the same offset on every instance).
    pub jitter_ms: u64,
    /// Paused schedules keep their definition but do not fire.
    pub paused: bool,
    /// The cron expression and zone, parsed at their first use.
    #[serde(skip)]
    parsed: ParsedCron,
}

/// A cron expression parsed once per [`Schedule`] value (instances keep
/// their schedules between polls), not on every tick computation.
#[derive(Clone, Default)]
struct ParsedCron(std::sync::Arc<std::sync::OnceLock<Option<(croner::Cron, chrono_tz::Tz)>>>);

impl PartialEq for ParsedCron {
    fn eq(&self, _: &Self) -> bool {
        true // a cache: equal schedules parse the same
    }
}

impl Eq for ParsedCron {}

impl std::fmt::Debug for ParsedCron {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedCron")
    }
}

impl Schedule {
    /// A schedule firing every `every` into `target`.
    pub fn every(name: &str, every: Duration, target: &str) -> Result<Self> {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        Self::new(name, Spec::EveryMs(ms), target)
    }

    /// A schedule firing on a cron expression in time zone `tz`.
    pub fn cron(name: &str, expr: &str, tz: &str, target: &str) -> Result<Self> {
        Self::new(
            name,
            Spec::Cron {
                expr: expr.to_string(),
                tz: tz.to_string(),
            },
            target,
        )
    }

    fn new(name: &str, spec: Spec, target: &str) -> Result<Self> {
        let target = StreamKey::new(target)
            .map_err(|_| Error::InvalidInput("a schedule needs a target stream (--to S)".into()))?;
        let s = Schedule {
            name: name.to_string(),
            spec,
            target,
            fields: Vec::new(),
            missed: Missed::Skip,
            jitter_ms: 0,
            paused: false,
            parsed: ParsedCron::default(),
        };
        s.validate()?;
        Ok(s)
    }

    /// Adds a field to every tick.
    pub fn field(mut self, k: &str, v: &str) -> Self {
        self.fields.push((k.to_string(), v.to_string()));
        self
    }

    /// Sets the missed-tick policy.
    pub fn missed(mut self, m: Missed) -> Self {
        self.missed = m;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, d: Duration) -> Self {
        self.jitter_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Checks every part; the error says what is wrong and how to fix it.
    pub fn validate(&self) -> Result<()> {
        if self.name.len() > MAX_NAME_BYTES {
            // The name itself may be megabytes: show its start only.
            let start: String = self.name.chars().take(32).collect();
            return Err(Error::InvalidInput(format!(
                "schedule name {start:?}… is {} bytes long: use at most {MAX_NAME_BYTES} bytes",
                self.name.len()
            )));
        }
        if self.name.is_empty() || self.name.contains(char::is_whitespace) {
            return Err(Error::InvalidInput(format!(
                "invalid schedule name {:?}: use a non-empty name without spaces",
                self.name
            )));
        }
        if self
            .fields
            .iter()
            .any(|(k, _)| crate::meta::is_meta(k.as_bytes()))
        {
            return Err(Error::InvalidInput(
                "field names starting with sk- are reserved".into(),
            ));
        }
        match &self.spec {
            Spec::EveryMs(ms) if *ms < MIN_EVERY.as_millis() as u64 => {
                Err(Error::InvalidInput(format!(
                    "interval {}ms is too short: the minimum is {}ms",
                    ms,
                    MIN_EVERY.as_millis()
                )))
            }
            Spec::EveryMs(ms) if crate::retry::now_ms().saturating_add(*ms) > MAX_DUE_MS => {
                Err(Error::InvalidInput(format!(
                    "interval {} is too long: the first tick would fall after the year 9999",
                    humantime::format_duration(Duration::from_millis(*ms))
                )))
            }
            Spec::EveryMs(_) => Ok(()),
            Spec::Cron { expr, tz } => {
                parse_cron(expr)?;
                parse_tz(tz)?;
                match cron_next(expr, tz, crate::retry::now_ms()) {
                    Ok(next) if next <= MAX_DUE_MS => Ok(()),
                    _ => Err(Error::InvalidCron {
                        expr: expr.clone(),
                        reason: "it never fires (no date before the year 9999 matches it): \
                                 check day and month"
                            .into(),
                    }),
                }
            }
        }
    }

    /// The parsed cron expression and zone (`None` for an interval or an
    /// invalid definition).
    fn parsed_cron(&self) -> Option<&(croner::Cron, chrono_tz::Tz)> {
        self.parsed
            .0
            .get_or_init(|| match &self.spec {
                Spec::Cron { expr, tz } => Some((parse_cron(expr).ok()?, parse_tz(tz).ok()?)),
                Spec::EveryMs(_) => None,
            })
            .as_ref()
    }

    /// The first due time of a schedule stored in bulk at `now`: interval
    /// schedules fall at a place in their interval chosen by the XXH3-64 of
    /// the name (the first `t > now` with `t mod every = hash mod every`),
    /// so schedules imported together are spread over one interval instead
    /// of all falling due at once, and storing a schedule again keeps its
    /// place (its ticks do not move). Cron schedules keep their cron times.
    ///
    /// ```
    /// use std::time::Duration;
    /// use streamkeeper::scheduler::Schedule;
    /// let s = Schedule::every("site-1", Duration::from_secs(60), "checks").unwrap();
    /// let due = s.first_due_spread(1_000_000);
    /// assert!(due > 1_000_000 && due <= 1_060_000);
    /// assert_eq!(s.first_due_spread(1_030_000) % 60_000, due % 60_000);
    /// ```
    pub fn first_due_spread(&self, now: u64) -> u64 {
        match &self.spec {
            Spec::EveryMs(every) => {
                let every = (*every).max(1);
                let place = xxhash_rust::xxh3::xxh3_64(self.name.as_bytes()) % every;
                let t = (now - now % every).saturating_add(place);
                if t > now {
                    t
                } else {
                    t.saturating_add(every)
                }
            }
            Spec::Cron { .. } => self.next_after(now),
        }
    }

    /// The first due time strictly after `ms` (`u64::MAX`: never).
    pub fn next_after(&self, ms: u64) -> u64 {
        match &self.spec {
            Spec::EveryMs(every) => ms.saturating_add(*every),
            Spec::Cron { .. } => self
                .parsed_cron()
                .and_then(|(cron, zone)| next_parsed(cron, zone, ms).ok())
                .unwrap_or(u64::MAX),
        }
    }

    /// The ticks to emit for a schedule due at `due` when it is `now`, and
    /// the next due time. The latest due tick is always emitted; older due
    /// ticks were missed and follow the [`Missed`] policy.
    pub fn plan(&self, due: u64, now: u64) -> (Vec<u64>, u64) {
        if due > now {
            return (Vec::new(), due);
        }
        let (due_ticks, next) = match &self.spec {
            Spec::EveryMs(every) => {
                let every = (*every).max(1);
                let k = (now - due) / every + 1;
                let keep = k.min(u64::from(self.max_emit()) + 1);
                let ticks = (k - keep..k).map(|i| due + i * every).collect::<Vec<_>>();
                (ticks, due + k * every)
            }
            Spec::Cron { .. } => {
                // Only the latest ticks can be emitted: walk back from now
                // (at most max_emit + 1 steps), not forward over every
                // missed tick since `due`.
                let keep = self.max_emit() as usize + 1;
                let mut latest: Vec<u64> = Vec::with_capacity(keep);
                if let Some((cron, zone)) = self.parsed_cron() {
                    let start = zone
                        .timestamp_millis_opt(i64::try_from(now).unwrap_or(i64::MAX))
                        .single();
                    if let Some(start) = start {
                        for t in cron.iter_from(start, croner::Direction::Backward) {
                            let Ok(ms) = u64::try_from(t.timestamp_millis()) else {
                                break;
                            };
                            if ms <= due || latest.len() == keep {
                                break;
                            }
                            latest.push(ms);
                        }
                    }
                }
                if latest.len() < keep {
                    latest.push(due);
                }
                latest.reverse();
                (latest, self.next_after(now))
            }
        };
        let (current, missed) = match due_ticks.split_last() {
            Some((c, m)) => (*c, m),
            None => return (Vec::new(), next),
        };
        let take = match self.missed {
            Missed::Skip => 0,
            Missed::Once => 1,
            Missed::CatchUp(n) => n as usize,
        }
        .min(missed.len());
        let mut emit = missed[missed.len() - take..].to_vec();
        emit.push(current);
        (emit, next)
    }

    fn max_emit(&self) -> u32 {
        match self.missed {
            Missed::Skip => 0,
            Missed::Once => 1,
            Missed::CatchUp(n) => n,
        }
    }

    /// The jitter offset of the tick due at `due`: the same on every instance.
    pub fn jitter_offset(&self, due: u64) -> u64 {
        if self.jitter_ms == 0 {
            return 0;
        }
        // FNV-1a of name and due time: stable across processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.name.bytes().chain(due.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h % self.jitter_ms
    }
}

fn parse_cron(expr: &str) -> Result<croner::Cron> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse(expr)
        .map_err(|e| Error::InvalidCron {
            expr: expr.to_string(),
            reason: format!("{e} (5 fields, or 6 with seconds first)"),
        })
}

fn parse_tz(tz: &str) -> Result<chrono_tz::Tz> {
    tz.parse::<chrono_tz::Tz>().map_err(|_| {
        Error::InvalidInput(format!(
            "unknown time zone {tz:?}: use an IANA name like Europe/Berlin or UTC"
        ))
    })
}

/// The next cron occurrence strictly after `ms`, in ms.
pub fn cron_next(expr: &str, tz: &str, ms: u64) -> Result<u64> {
    next_parsed(&parse_cron(expr)?, &parse_tz(tz)?, ms)
}

fn next_parsed(cron: &croner::Cron, zone: &chrono_tz::Tz, ms: u64) -> Result<u64> {
    let expr = cron.as_str();
    let start = zone
        .timestamp_millis_opt(i64::try_from(ms).unwrap_or(i64::MAX))
        .single()
        .ok_or_else(|| Error::InvalidInput(format!("time {ms} out of range")))?;
    let next = cron
        .find_next_occurrence(&start, false)
        .map_err(|e| Error::InvalidInput(format!("cron {expr:?} has no next occurrence: {e}")))?;
    u64::try_from(next.timestamp_millis())
        .map_err(|_| Error::InvalidInput("time before 1970".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(ms: u64, missed: Missed) -> Schedule {
        Schedule::every("s", Duration::from_millis(ms), "t")
            .expect("valid")
            .missed(missed)
    }

    #[test]
    fn on_time_ticks_are_emitted_one_by_one() {
        let s = every(1000, Missed::Skip);
        assert_eq!(s.plan(10_000, 10_050), (vec![10_000], 11_000));
        assert_eq!(s.plan(10_000, 9_999), (vec![], 10_000));
    }

    #[test]
    fn missed_ticks_follow_the_policy() {
        // Due at 10 s, instance back at 13.5 s: 10, 11, 12, 13 are due; 13 is current.
        assert_eq!(
            every(1000, Missed::Skip).plan(10_000, 13_500),
            (vec![13_000], 14_000)
        );
        assert_eq!(
            every(1000, Missed::Once).plan(10_000, 13_500),
            (vec![12_000, 13_000], 14_000)
        );
        assert_eq!(
            every(1000, Missed::CatchUp(2)).plan(10_000, 13_500),
            (vec![11_000, 12_000, 13_000], 14_000)
        );
        assert_eq!(
            every(1000, Missed::CatchUp(10)).plan(10_000, 13_500),
            (vec![10_000, 11_000, 12_000, 13_000], 14_000)
        );
    }

    #[test]
    fn cron_in_a_time_zone_follows_dst() {
        // Europe/Berlin springs forward on 2025-03-30 at 02:00 CET → 03:00 CEST.
        // "Every day at 01:30 local" is 00:30 UTC before and 23:30 UTC after.
        let start = 1_743_208_200_000; // 2025-03-29T00:30:00Z = 01:30 CET
        let a = cron_next("0 30 1 * * *", "Europe/Berlin", start).expect("next");
        assert_eq!(
            a, 1_743_294_600_000,
            "2025-03-30T00:30:00Z = 01:30 CET, just before the change"
        );
        let b = cron_next("0 30 1 * * *", "Europe/Berlin", a).expect("next");
        assert_eq!(
            b, 1_743_377_400_000,
            "2025-03-30T23:30:00Z = 2025-03-31 01:30 CEST"
        );
        assert_eq!(b - a, 23 * 3_600_000, "the day of the change has 23 hours");
        // 02:30 does not exist that night: croner fires it once, at the
        // first instant after the gap (03:00 CEST), so the day's job still runs.
        let c = cron_next("0 30 2 * * *", "Europe/Berlin", 1_743_292_800_000).expect("02:30");
        let berlin = |ms: u64| {
            chrono_tz::Europe::Berlin
                .timestamp_millis_opt(ms as i64)
                .single()
                .expect("time")
        };
        assert_eq!(
            berlin(c).format("%Y-%m-%d %H:%M %Z").to_string(),
            "2025-03-30 03:00 CEST"
        );
        let d = cron_next("0 30 2 * * *", "Europe/Berlin", c).expect("next day");
        assert_eq!(
            berlin(d).format("%Y-%m-%d %H:%M %Z").to_string(),
            "2025-03-31 02:30 CEST"
        );
        // Autumn (2025-10-26, 03:00 CEST → 02:00 CET): an hourly schedule
        // never waits more than an hour of real time.
        let mut t = 1_761_436_800_000 - 3_600_000; // 2025-10-25T23:00:00Z
        for _ in 0..5 {
            let n = cron_next("0 0 * * * *", "Europe/Berlin", t).expect("hourly");
            assert!(n > t && n - t <= 3_600_000, "gap of {} ms after {t}", n - t);
            t = n;
        }
    }

    #[test]
    fn bad_definitions_are_rejected_with_the_reason() {
        let err = |r: Result<Schedule>| r.expect_err("invalid").to_string();
        assert!(err(Schedule::cron("c", "61 * * * *", "UTC", "t")).contains("invalid cron"));
        assert!(err(Schedule::cron("c", "* * * * *", "Mars/Olympus", "t"))
            .contains("unknown time zone"));
        assert!(err(Schedule::every("e", Duration::ZERO, "t")).contains("too short"));
        assert!(err(Schedule::cron("c", "0 0 30 2 *", "UTC", "t")).contains("never fires"));
        assert!(err(Schedule::every(
            "e",
            Duration::from_secs(100_000 * 365 * 86_400),
            "t"
        ))
        .contains("too long"));
        assert!(err(Schedule::every("e", Duration::from_secs(1), "")).contains("target"));
        assert!("catch-up:0".parse::<Missed>().is_err());
        assert_eq!(
            "catch-up:3".parse::<Missed>().expect("policy"),
            Missed::CatchUp(3)
        );
    }

    #[test]
    fn cron_missed_ticks_walk_back_from_now_not_forward_from_due() {
        let s = Schedule::cron("c", "* * * * * *", "UTC", "t")
            .expect("every second")
            .missed(Missed::CatchUp(2));
        // Due at 10 s, back at 13.5 s: 10, 11, 12, 13 due; latest 3 emitted.
        assert_eq!(
            s.plan(10_000, 13_500),
            (vec![11_000, 12_000, 13_000], 14_000)
        );
        assert_eq!(s.plan(10_000, 10_500), (vec![10_000], 11_000));
        // A year of missed every-second ticks: still only the latest few,
        // computed at once (no loop over 31 million ticks, none capped).
        let year = 365 * 86_400_000;
        let t = std::time::Instant::now();
        let (ticks, next) = s.plan(10_000, 10_000 + year);
        assert_eq!(ticks, vec![year + 8_000, year + 9_000, year + 10_000]);
        assert_eq!(next, year + 11_000);
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn jitter_is_stable_and_bounded() {
        let s = every(1000, Missed::Skip).jitter(Duration::from_millis(250));
        let a = s.jitter_offset(5_000);
        assert_eq!(a, s.jitter_offset(5_000));
        assert!(a < 250);
    }
}
