//! Who may use a dashboard started with a token (docs/design.md §10 "Auth"):
//! the login and logout handlers, the in-memory sessions the login cookie
//! names, and the throttle of wrong tokens per client address.
//!
//! - The cookie [`SESSION_COOKIE`] holds a random session id (32 random
//!   bytes, hex), never the token; sessions expire after
//!   [`Config::session_ttl`](crate::Config::session_ttl) and are bounded in
//!   number ([`MAX_SESSIONS`], the oldest go first). `POST /logout` forgets
//!   the session and clears the cookie.
//! - A wrong token (the login form or an `Authorization: Bearer` header) is
//!   a strike against the client address (from `ConnectInfo`; one shared
//!   "unknown" bucket without it; an IPv6 address counts by its /64). After
//!   [`Throttling::max_failures`] strikes within [`Throttling::window`],
//!   token attempts from that address answer 429 with `Retry-After`, for
//!   [`Throttling::first_delay`], doubled with every further wrong token up
//!   to [`Throttling::max_delay`]. Every wrong token is logged at warn with
//!   the address (never the token). At most [`Throttling::max_clients`]
//!   addresses are tracked; the oldest go first.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::{hex, names, same_secret, ApiError, AppState, Config};

/// The cookie the login form sets: a random session id (HttpOnly,
/// SameSite=Strict, `Secure` over HTTPS).
pub const SESSION_COOKIE: &str = "sk_session";

/// The shortest token `serve` accepts for a non-loopback `--listen`.
pub const MIN_TOKEN_LEN: usize = 16;

/// The most sessions kept at once; a login beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 10_000;

/// How wrong tokens are throttled per client address.
#[derive(Debug, Clone)]
pub struct Throttling {
    /// Wrong tokens from one address before it must wait.
    pub max_failures: u32,
    /// Strikes are forgotten after this long without a wrong token (counted
    /// from the end of the last wait).
    pub window: Duration,
    /// The first wait, doubled by every wrong token after it.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
    /// The most addresses tracked; beyond it the oldest are forgotten.
    pub max_clients: usize,
}

impl Default for Throttling {
    fn default() -> Self {
        Throttling {
            max_failures: 5,
            window: Duration::from_secs(300),
            first_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(15 * 60),
            max_clients: 10_000,
        }
    }
}

/// Marks a request that carried the right token or a live session (the
/// guard inserts it; `/healthz` then tells which checks failed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authorized;

/// What the guard learns from a request's credentials.
#[derive(Debug)]
pub(crate) enum Check {
    /// The right bearer token or a live session.
    Ok,
    /// None, a wrong bearer token (counted), or an unknown session.
    Denied,
    /// This address must wait before trying a token again: the answer.
    Throttled(Response),
}

/// The sessions and the throttle of one dashboard.
#[derive(Debug)]
pub(crate) struct Auth {
    sessions: Mutex<Sessions>,
    strikes: Mutex<Strikes>,
    ttl: Duration,
    secure: bool,
}

impl Auth {
    pub(crate) fn new(config: &Config) -> Self {
        Auth {
            sessions: Mutex::new(Sessions::new(MAX_SESSIONS)),
            strikes: Mutex::new(Strikes::new(config.throttling.clone())),
            ttl: config.session_ttl,
            secure: config.secure_cookies,
        }
    }

    /// Checks the bearer token (throttled, a wrong one counted) and the
    /// session cookie of a request.
    pub(crate) fn check(&self, headers: &HeaderMap, ext: &Extensions, token: &str) -> Check {
        let now = Instant::now();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(bearer) = bearer {
            let client = Client::of(ext);
            let mut strikes = lock(&self.strikes);
            if let Some(wait) = strikes.waiting(client.key(), now) {
                return Check::Throttled(too_many(wait));
            }
            if same_secret(bearer.as_bytes(), token.as_bytes()) {
                return Check::Ok;
            }
            tracing::warn!(client = %client, "wrong dashboard token (Authorization header)");
            if let Some(wait) = strikes.strike(client.key(), now) {
                return Check::Throttled(too_many(wait));
            }
            return Check::Denied;
        }
        let mut sessions = lock(&self.sessions);
        if session_ids(headers).any(|id| sessions.live(id, now)) {
            Check::Ok
        } else {
            Check::Denied
        }
    }

    /// `Set-Cookie` for a new session, or for clearing it (`None`).
    fn cookie(&self, id: Option<&str>) -> Option<HeaderValue> {
        let secure = if self.secure { "; Secure" } else { "" };
        let (value, age) = match id {
            Some(id) => (
                id,
                self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0),
            ),
            None => ("", 0),
        };
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={age}{secure}"
        ))
        .ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The session ids among a request's cookies.
fn session_ids(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
}

/// 429 with `Retry-After` (whole seconds, at least 1).
fn too_many(wait: Duration) -> Response {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut r = ApiError(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many wrong tokens from your address: try again in {secs} s"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// `POST /login` (the login form): the right token starts a session and
/// sets its cookie; a wrong one is a strike against the address.
pub(crate) async fn login(State(s): State<AppState>, ext: Extensions, body: Bytes) -> Response {
    let Some(token) = &s.config().token else {
        return Redirect::to("/").into_response();
    };
    let auth = s.auth();
    let client = Client::of(&ext);
    let now = Instant::now();
    {
        let mut strikes = lock(&auth.strikes);
        if let Some(wait) = strikes.waiting(client.key(), now) {
            return too_many(wait);
        }
        let sent = names::form_value(&body, "token").unwrap_or_default();
        if !same_secret(sent.as_bytes(), token.as_bytes()) {
            tracing::warn!(client = %client, "wrong dashboard token at /login");
            if let Some(wait) = strikes.strike(client.key(), now) {
                return too_many(wait);
            }
            return Redirect::to("/login?failed=1").into_response();
        }
        strikes.forget(client.key());
    }
    let id = lock(&auth.sessions).start(now, auth.ttl);
    let mut r = Redirect::to("/").into_response();
    if let Some(v) = auth.cookie(Some(&id)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `POST /logout`: forgets the session, clears the cookie, back to the
/// login form.
pub(crate) async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let auth = s.auth();
    {
        let mut sessions = lock(&auth.sessions);
        for id in session_ids(&headers) {
            sessions.end(id);
        }
    }
    let mut r = Redirect::to("/login").into_response();
    if let Some(v) = auth.cookie(None) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// A client as the throttle sees it: its address if known.
#[derive(Debug, Clone, Copy)]
struct Client(Option<IpAddr>);

impl Client {
    fn of(ext: &Extensions) -> Self {
        Client(ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
    }

    /// The throttle's bucket: IPv4 as is, IPv6 by its /64 (one host
    /// usually owns a whole /64), one bucket for unknown addresses.
    fn key(self) -> Option<IpAddr> {
        self.0.map(|ip| match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
            },
            v4 => v4,
        })
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// Live sessions: id → expiry.
#[derive(Debug)]
struct Sessions {
    by_id: HashMap<String, Instant>,
    cap: usize,
}

impl Sessions {
    fn new(cap: usize) -> Self {
        Sessions {
            by_id: HashMap::new(),
            cap,
        }
    }

    /// A new session id (32 random bytes, hex) valid for `ttl`.
    fn start(&mut self, now: Instant, ttl: Duration) -> String {
        use rand::Rng;
        if self.by_id.len() >= self.cap {
            self.by_id.retain(|_, until| *until > now);
        }
        while self.by_id.len() >= self.cap.max(1) {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.by_id.remove(&id),
                None => break,
            };
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        let id = hex(&bytes);
        self.by_id.insert(id.clone(), now + ttl);
        id
    }

    /// Whether `id` names a session that has not expired (an expired one
    /// is forgotten).
    fn live(&mut self, id: &str, now: Instant) -> bool {
        match self.by_id.get(id) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.by_id.remove(id);
                false
            }
            None => false,
        }
    }

    fn end(&mut self, id: &str) {
        self.by_id.remove(id);
    }
}

/// Wrong tokens of one address.
#[derive(Debug)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// Wrong tokens per address, bounded.
#[derive(Debug)]
struct Strikes {
    by_client: HashMap<Option<IpAddr>, Record>,
    rules: Throttling,
}

impl Strikes {
    fn new(rules: Throttling) -> Self {
        Strikes {
            by_client: HashMap::new(),
            rules,
        }
    }

    /// Whether a record is old enough to forget: a whole window passed
    /// since its last wrong token and the end of its wait.
    fn stale(&self, r: &Record, now: Instant) -> bool {
        now >= r.blocked_until.unwrap_or(r.last).max(r.last) + self.rules.window
    }

    /// How long `key` must still wait before trying a token, if at all.
    fn waiting(&mut self, key: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let r = self.by_client.get(&key)?;
        if self.stale(r, now) {
            self.by_client.remove(&key);
            return None;
        }
        r.blocked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Counts a wrong token of `key`: the wait it starts, if any.
    fn strike(&mut self, key: Option<IpAddr>, now: Instant) -> Option<Duration> {
        if !self.by_client.contains_key(&key) {
            self.make_room(now);
        }
        let stale = self.by_client.get(&key).is_some_and(|r| self.stale(r, now));
        let r = self.by_client.entry(key).or_insert(Record {
            failures: 0,
            last: now,
            blocked_until: None,
        });
        if stale {
            r.failures = 0;
            r.blocked_until = None;
        }
        r.failures = r.failures.saturating_add(1);
        r.last = now;
        let over = r.failures.checked_sub(self.rules.max_failures)?;
        let delay = self
            .rules
            .first_delay
            .saturating_mul(1u32 << over.min(20))
            .min(self.rules.max_delay);
        r.blocked_until = Some(now + delay);
        Some(delay)
    }

    /// Forgets `key` (it gave the right token at the login form).
    fn forget(&mut self, key: Option<IpAddr>) {
        self.by_client.remove(&key);
    }

    /// Below the cap before a new address: stale records go, then the
    /// oldest.
    fn make_room(&mut self, now: Instant) {
        if self.by_client.len() < self.rules.max_clients {
            return;
        }
        let window = self.rules.window;
        self.by_client
            .retain(|_, r| now < r.blocked_until.unwrap_or(r.last).max(r.last) + window);
        while !self.by_client.is_empty() && self.by_client.len() >= self.rules.max_clients {
            let oldest = self
                .by_client
                .iter()
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.by_client.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Throttling {
        Throttling {
            max_failures: 3,
            window: Duration::from_secs(60),
            first_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(35),
            max_clients: 2,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn waits_start_after_the_limit_and_double_up_to_the_cap() {
        let mut s = Strikes::new(rules());
        let t = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(s.strike(a, t), None);
        assert_eq!(s.strike(a, t), None);
        assert_eq!(s.strike(a, t), Some(Duration::from_secs(10)));
        assert_eq!(s.waiting(a, t), Some(Duration::from_secs(10)));
        assert_eq!(s.waiting(ip("10.0.0.2"), t), None);
        let t = t + Duration::from_secs(10);
        assert_eq!(s.waiting(a, t), None);
        assert_eq!(s.strike(a, t), Some(Duration::from_secs(20)));
        let t = t + Duration::from_secs(20);
        assert_eq!(s.strike(a, t), Some(Duration::from_secs(35)), "capped");
        // A whole quiet window after the wait: forgotten.
        let t = t + Duration::from_secs(35 + 60);
        assert_eq!(s.waiting(a, t), None);
        assert_eq!(s.strike(a, t), None);
    }

    #[test]
    fn tracked_addresses_are_bounded_and_the_oldest_go() {
        let mut s = Strikes::new(rules());
        let t = Instant::now();
        for (i, a) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            for _ in 0..3 {
                s.strike(ip(a), t + Duration::from_secs(i as u64));
            }
        }
        assert_eq!(s.by_client.len(), 2);
        assert!(
            !s.by_client.contains_key(&ip("10.0.0.1")),
            "the oldest went"
        );
        assert!(s.waiting(ip("10.0.0.3"), t).is_some());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let a = Client(ip("2001:db8:1:2:aaaa::1")).key();
        let b = Client(ip("2001:db8:1:2:bbbb::2")).key();
        let c = Client(ip("2001:db8:1:3::1")).key();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(Client(ip("::ffff:10.0.0.1")).key(), ip("10.0.0.1"));
        assert_eq!(Client(None).to_string(), "unknown");
    }

    #[test]
    fn sessions_expire_end_and_are_bounded() {
        let mut s = Sessions::new(2);
        let t = Instant::now();
        let ttl = Duration::from_secs(10);
        let a = s.start(t, ttl);
        assert_eq!(a.len(), 64);
        assert!(s.live(&a, t));
        assert!(!s.live(&a, t + ttl), "expired");
        assert!(!s.live("00", t));
        let b = s.start(t, ttl);
        let c = s.start(t + Duration::from_secs(1), ttl);
        let d = s.start(t + Duration::from_secs(2), ttl);
        assert_eq!(s.by_id.len(), 2);
        assert!(!s.live(&b, t), "the oldest went");
        assert!(s.live(&c, t) && s.live(&d, t));
        s.end(&c);
        assert!(!s.live(&c, t));
    }
}
