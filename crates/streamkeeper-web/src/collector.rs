//! One collector for every open page: a background task takes the overview
//! about once a second while someone looks (an open event stream, or an
//! API or `/metrics` request in the last [`LINGER`]), and publishes it on a
//! [`watch`] channel. Pages, the API and `/metrics` read the latest
//! snapshot instead of inspecting Redis themselves, so N open pages cost
//! Redis what one costs (design §10 "Scale").
//!
//! Each snapshot also carries rates: entries added per second to each
//! stream and read per second by each group, over the last ~10 s of
//! snapshots kept here (no history read needed).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::overview::Overview;
use crate::AppState;

/// How often the overview is taken while someone looks (start to start;
/// a slow collection is followed by a pause of a fifth of this).
pub(crate) const PERIOD: Duration = Duration::from_secs(1);

/// How long the collector keeps going after the last request without an
/// open event stream.
pub(crate) const LINGER: Duration = Duration::from_secs(15);

/// Longest wait for one collection before Redis counts as unreachable.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// The span rates are measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What the collector publishes: an overview, or why there is none.
pub(crate) type Snapshot = Result<Arc<Overview>, String>;

/// The shared collector.
#[derive(Debug)]
pub(crate) struct Collector {
    tx: watch::Sender<Option<Snapshot>>,
    running: AtomicBool,
    wanted: Mutex<Instant>,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            tx: watch::channel(None).0,
            running: AtomicBool::new(false),
            wanted: Mutex::new(Instant::now()),
        }
    }
}

/// Counters seen in one snapshot, for rates.
struct Counts {
    at: Instant,
    added: HashMap<String, u64>,
    read: HashMap<(String, String), u64>,
}

impl Collector {
    /// A receiver of every new snapshot (an event stream holds one; the
    /// collector runs while any is held).
    pub(crate) fn subscribe(state: &AppState) -> watch::Receiver<Option<Snapshot>> {
        let c = &state.inner.collector;
        let rx = c.tx.subscribe();
        ensure_running(state);
        rx
    }

    /// The latest snapshot if it is younger than `max_age`, or the next one.
    /// The request counts as someone looking: the collector runs on for
    /// [`LINGER`].
    pub(crate) async fn latest(state: &AppState, max_age: Duration) -> Snapshot {
        let c = &state.inner.collector;
        if let Ok(mut w) = c.wanted.lock() {
            *w = Instant::now();
        }
        Self::wait_fresh(state, max_age).await
    }

    /// A snapshot for the history sampler, which does not count as someone
    /// looking: the running collector's if it is younger than `max_age`,
    /// else one collection of its own (without rates). A sampler every 10 s
    /// must not keep the collector going once every page is closed.
    pub(crate) async fn for_sample(state: &AppState, max_age: Duration) -> Snapshot {
        let c = &state.inner.collector;
        if c.running.load(Ordering::Acquire) {
            return Self::wait_fresh(state, max_age).await;
        }
        collect_once(state).await.map(Arc::new)
    }

    async fn wait_fresh(state: &AppState, max_age: Duration) -> Snapshot {
        let c = &state.inner.collector;
        let mut rx = c.tx.subscribe();
        ensure_running(state);
        // A snapshot whose collection started at most `max_age` before
        // this request: with 0, nothing deleted before it is shown.
        let asked = streamkeeper::retry::now_ms();
        let oldest = asked.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX));
        let fresh = |o: &Overview| o.at_ms.saturating_sub(o.took_ms) >= oldest;
        if let Some(Ok(o)) = &*rx.borrow_and_update() {
            if fresh(o) {
                return Ok(o.clone());
            }
        }
        let deadline = tokio::time::Instant::now() + TIMEOUT * 2;
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the collector stopped".into()),
                Err(_) => {
                    return Err(format!(
                        "Redis unreachable: no answer within {} s",
                        (TIMEOUT * 2).as_secs()
                    ))
                }
            }
            match &*rx.borrow_and_update() {
                Some(Ok(o)) if fresh(o) => return Ok(o.clone()),
                // A failure that ended after this request: Redis is down now.
                Some(Err(e)) => return Err(e.clone()),
                _ => {}
            }
        }
    }
}

fn ensure_running(state: &AppState) {
    let c = &state.inner.collector;
    if c.running.swap(true, Ordering::AcqRel) {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        run(&state).await;
        let c = &state.inner.collector;
        c.running.store(false, Ordering::Release);
        // Someone subscribed while this one was stopping.
        if c.tx.receiver_count() > 0 {
            ensure_running(&state);
        }
    });
}

/// Collects while anyone looks; returns when nobody has for [`LINGER`].
async fn run(state: &AppState) {
    let c = &state.inner.collector;
    let mut past: VecDeque<Counts> = VecDeque::new();
    loop {
        if !someone_looks(c) {
            return;
        }
        let started = Instant::now();
        let snapshot = collect_once(state).await.map(|mut o| {
            add_rates(&mut o, &mut past);
            Arc::new(o)
        });
        c.tx.send_replace(Some(snapshot));
        // One collection starts every PERIOD (a change shows within about
        // PERIOD + one collection), with a breather when collecting is slow.
        let took = started.elapsed();
        tokio::time::sleep(PERIOD.saturating_sub(took).max(PERIOD / 5)).await;
    }
}

/// One overview within [`TIMEOUT`], or why Redis gave none.
async fn collect_once(state: &AppState) -> Result<Overview, String> {
    match tokio::time::timeout(TIMEOUT, crate::overview::collect(state)).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(e)) => Err(format!("Redis unreachable: {e}")),
        Err(_) => Err(format!(
            "Redis unreachable: no answer within {} s",
            TIMEOUT.as_secs()
        )),
    }
}

/// An open event stream, or a request within [`LINGER`]. The sender's own
/// receiver count includes requests waiting in [`Collector::latest`] and
/// samplers waiting on a running collector; both end within a collection.
fn someone_looks(c: &Collector) -> bool {
    let idle = c.wanted.lock().map(|w| w.elapsed()).unwrap_or_default();
    c.tx.receiver_count() > 0 || idle <= LINGER
}

/// Sets each row's `rate_in` and each group's `rate_out` from the oldest
/// snapshot kept within [`RATE_WINDOW`], and keeps this one.
fn add_rates(o: &mut Overview, past: &mut VecDeque<Counts>) {
    let now = Instant::now();
    while past.len() > 1 && past[1].at.elapsed() >= RATE_WINDOW {
        past.pop_front();
    }
    if let Some(base) = past.front() {
        let secs = now.duration_since(base.at).as_secs_f64();
        if secs >= 0.5 {
            for row in &mut o.streams {
                row.rate_in = match (row.entries_added, base.added.get(&row.key)) {
                    (Some(now), Some(then)) => Some(now.saturating_sub(*then) as f64 / secs),
                    _ => None,
                };
                for g in &mut row.groups {
                    let then = base.read.get(&(row.key.clone(), g.key.clone()));
                    g.rate_out = match (g.entries_read, then) {
                        (Some(now), Some(then)) => Some(now.saturating_sub(*then) as f64 / secs),
                        _ => None,
                    };
                }
            }
        }
    }
    let mut counts = Counts {
        at: now,
        added: HashMap::new(),
        read: HashMap::new(),
    };
    for row in &o.streams {
        if let Some(a) = row.entries_added {
            counts.added.insert(row.key.clone(), a);
        }
        for g in &row.groups {
            if let Some(r) = g.entries_read {
                counts.read.insert((row.key.clone(), g.key.clone()), r);
            }
        }
    }
    past.push_back(counts);
}
