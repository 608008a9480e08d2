//! The streamkeeper dashboard (docs/design.md §10): an axum [`Router`] built by
//! [`app`] over the streamkeeper library, with every asset embedded in the
//! binary. `streamkeeper serve` mounts it; tests drive it with `oneshot`.
//!
//! The page is one static HTML file and one script: the script fetches the
//! JSON API under `/api/`, listens to `/api/events` (server-sent events) and
//! draws tables and SVG charts with DOM calls only (`textContent`, never
//! `innerHTML`), so every name and value reaches the screen as text.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | `lib.rs` | [`Config`], [`AppState`], [`app`], the guard (token, read-only, CSRF) and security headers |
//! | [`auth`] | login and logout, sessions (the cookie's random id), wrong tokens throttled per address |
//! | [`tls`] | HTTPS: the certificate and key files, a listener doing TLS handshakes concurrently |
//! | [`overview`] | the overview: every stream and group, health colours, dead letters, memory sampled |
//! | `collector` | one collector for every page, the API and `/metrics`: a snapshot a second while anyone looks, with rates |
//! | [`view`] | a page of the overview: summary, filter, sort, paging on the server |
//! | `api` | the read-only JSON API: stream pages and filter, entry detail, groups, DLQ, janitor, schedules |
//! | `actions` | POST actions (DLQ replay/purge, janitor, schedules, group reset, consumer removal), logged |
//! | `live` | `/api/events`: one page as server-sent events (a page, then only what changed), and the Redis-down banner |
//! | [`history`] | the sampler writing `{N}:history` (deflated, capped in bytes) under a lease; bounded reads for charts and sparklines |
//! | [`prometheus`] | `/metrics`: gauges from a fresh inspection, the library's metrics; `recorder()`, the process's one Prometheus recorder (also served by the CLI's `--metrics ADDR`) |
//! | `names` | raw key names (non-UTF-8 included): `SCAN`, escaping for display |
//! | `assets` | the embedded HTML, CSS and JavaScript |

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use streamkeeper::Connector;

mod actions;
mod api;
mod assets;
pub mod auth;
mod collector;
pub mod history;
mod live;
mod names;
pub mod overview;
pub mod prometheus;
pub mod tls;
pub mod view;

pub use names::key_of;

/// The header every action POST carries: the CSRF token of `/api/config`.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The Content-Security-Policy of every response: scripts, styles and
/// connections only from this origin, no inline script or style, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// How the dashboard behaves (the `serve` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams to show (empty: every stream, found with `SCAN`).
    pub streams: Vec<String>,
    /// Allow actions (POSTs); read-only otherwise.
    pub allow_actions: bool,
    /// A token every request must carry (bearer header or login cookie).
    pub token: Option<String>,
    /// A group with more outstanding entries than this is shown red.
    pub max_lag: Option<u64>,
    /// A group whose oldest outstanding entry is older is shown red.
    pub max_time_lag: Option<Duration>,
    /// The scheduler namespace `N` (schedules, and history in `{N}:history`).
    pub namespace: String,
    /// A consumer idle this long while holding entries is flagged dead.
    pub dead_after: Duration,
    /// Largest number of entries one filter request scans.
    pub scan_cap: usize,
    /// How often a history sample is written (`--history-every`).
    pub history_every: Duration,
    /// Bytes of history kept in `{N}:history` (`--history-max`).
    pub history_max: u64,
    /// Cookies carry `Secure` (the dashboard is served over HTTPS).
    pub secure_cookies: bool,
    /// How long a login lasts (the session cookie's `Max-Age`).
    pub session_ttl: Duration,
    /// How wrong tokens are throttled per client address.
    pub throttling: auth::Throttling,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            streams: Vec::new(),
            allow_actions: false,
            token: None,
            max_lag: None,
            max_time_lag: None,
            namespace: "streamkeeper".into(),
            dead_after: Duration::from_secs(300),
            scan_cap: 10_000,
            history_every: history::EVERY,
            history_max: history::DEFAULT_MAX_BYTES,
            secure_cookies: false,
            session_ttl: Duration::from_secs(12 * 3600),
            throttling: Default::default(),
        }
    }
}

/// What every handler shares: the connection, the configuration, the CSRF
/// token of this process and the caches.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    redis: Connector,
    config: Config,
    csrf: String,
    overview: overview::Cache,
    collector: collector::Collector,
    history: history::Cache,
    auth: auth::Auth,
}

impl AppState {
    /// The state of a dashboard over `redis`.
    pub fn new(redis: Connector, config: Config) -> Self {
        use rand::Rng;
        let mut bytes = [0u8; 16];
        rand::rng().fill(&mut bytes);
        AppState {
            inner: Arc::new(Inner {
                auth: auth::Auth::new(&config),
                redis,
                config,
                csrf: hex(&bytes),
                overview: Default::default(),
                collector: Default::default(),
                history: history::Cache::new(),
            }),
        }
    }

    /// The connection.
    pub fn redis(&self) -> &Connector {
        &self.inner.redis
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The CSRF token action POSTs must send in [`CSRF_HEADER`].
    pub fn csrf(&self) -> &str {
        &self.inner.csrf
    }

    pub(crate) fn auth(&self) -> &auth::Auth {
        &self.inner.auth
    }
}

/// The web application: pages, API, events, metrics, health.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .route("/login", get(assets::login).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/healthz", get(healthz))
        .route("/metrics", get(prometheus::render))
        .route("/api/config", get(api::config))
        .route("/api/overview", get(api::overview))
        .route("/api/streams", get(api::overview))
        .route("/api/stream", get(api::stream_page))
        .route("/api/entry", get(api::entry))
        .route("/api/groups", get(api::groups))
        .route("/api/dlq", get(api::dlq))
        .route("/api/janitor", get(api::janitor))
        .route("/api/schedules", get(api::schedules))
        .route("/api/history", get(api::history))
        .route("/api/events", get(live::events))
        .route("/api/actions/{action}", post(actions::dispatch))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// An error of the API: a status and one line saying what to do.
#[derive(Debug)]
pub(crate) struct ApiError(StatusCode, String);

impl ApiError {
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<streamkeeper::Error> for ApiError {
    fn from(e: streamkeeper::Error) -> Self {
        let status = match &e {
            streamkeeper::Error::InvalidInput(_) | streamkeeper::Error::InvalidId { .. } => {
                StatusCode::BAD_REQUEST
            }
            streamkeeper::Error::GroupMissing { .. } => StatusCode::NOT_FOUND,
            e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError(status, e.to_string())
    }
}

/// Lowercase hex of bytes.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header names this machine by IP or `localhost`. Without
/// a token, any other name is refused: a page of another site that rebinds
/// its DNS name to 127.0.0.1 must not read or drive the dashboard.
fn local_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // No Host at all: not a browser (HTTP/1.1 browsers always send it).
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Host (421) and token (401; 429 while the address must wait, see
/// [`auth`]) first, then read-only (403), then CSRF (403).
async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if s.config().token.is_none() && !local_host(req.headers()) {
        return ApiError(
            StatusCode::MISDIRECTED_REQUEST,
            "open the dashboard by IP address or localhost, or start serve with --token to use a host name".into(),
        )
        .into_response();
    }
    if let Some(token) = &s.config().token {
        // `/healthz` is for load balancers and orchestrators: no token (it
        // names no stream to a caller without one).
        let public = path == "/login"
            || path == "/logout"
            || path == "/healthz"
            || path.starts_with("/assets/");
        let check = s.auth().check(req.headers(), req.extensions(), token);
        let ok = match check {
            auth::Check::Ok => true,
            auth::Check::Denied => false,
            auth::Check::Throttled(answer) => return answer,
        };
        if ok {
            req.extensions_mut().insert(auth::Authorized);
        } else if !public {
            if req.method() == Method::GET && path == "/" {
                return Redirect::to("/login").into_response();
            }
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: send `Authorization: Bearer TOKEN` or log in at /login".into(),
            )
            .into_response();
        }
    }
    if req.method() == Method::POST && path.starts_with("/api/actions/") {
        if !s.config().allow_actions {
            return ApiError(
                StatusCode::FORBIDDEN,
                "read-only dashboard: start `streamkeeper serve --allow-actions` to act".into(),
            )
            .into_response();
        }
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_secret(sent, s.csrf().as_bytes()) {
            return ApiError(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Stream contents are not for shared caches or the back button.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// `/healthz` parameters: with none it only checks Redis; with a
/// threshold it is a lag probe (of one stream and group, or every one).
#[derive(Debug, serde::Deserialize)]
struct HealthQuery {
    stream: Option<String>,
    group: Option<String>,
    #[serde(rename = "max-lag")]
    max_lag: Option<u64>,
    #[serde(rename = "max-time-lag")]
    max_time_lag: Option<String>,
}

/// 200 `ok` when Redis answers `PING` (and, with `max-lag` or
/// `max-time-lag`, when no group checked exceeds them: `stream` and
/// `group` narrow the check to one service), 503 with the reasons
/// otherwise, 400 for a bad parameter. No token needed: load balancers
/// and orchestrators probe it.
async fn healthz(
    State(s): State<AppState>,
    authorized: Option<axum::Extension<auth::Authorized>>,
    axum::extract::Query(q): axum::extract::Query<HealthQuery>,
) -> Response {
    // Without the token the answer is the status alone: the reasons name
    // streams and groups.
    let open = s.config().token.is_none() || authorized.is_some();
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    let max_time_lag = match q.max_time_lag.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("max-time-lag: {e} (e.g. 30s, 5m)\n"),
            )
                .into_response()
        }
    };
    let mut conn = s.redis().shared();
    let ping = tokio::time::timeout(
        Duration::from_secs(2),
        redis::cmd("PING").query_async::<String>(&mut conn),
    )
    .await;
    match ping {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return unavailable(format!("redis unreachable: {e}\n")),
        Err(_) => return unavailable("redis unreachable: no answer within 2 s\n".into()),
    }
    if q.max_lag.is_none() && max_time_lag.is_none() {
        return (StatusCode::OK, "ok\n").into_response();
    }
    match lag_failures(s.redis(), &q, max_time_lag).await {
        Ok(failed) if failed.is_empty() => (StatusCode::OK, "ok\n").into_response(),
        Ok(failed) if open => unavailable(failed.join("\n") + "\n"),
        Ok(failed) => unavailable(format!(
            "{} lag check(s) failed (send the token to see which)\n",
            failed.len()
        )),
        Err(e) if open => unavailable(format!("could not check the lag: {e}\n")),
        Err(_) => unavailable("could not check the lag\n".into()),
    }
}

/// The groups over the probe's thresholds, one line each.
async fn lag_failures(
    redis: &Connector,
    q: &HealthQuery,
    max_time_lag: Option<Duration>,
) -> streamkeeper::Result<Vec<String>> {
    let options = streamkeeper::inspect::InspectOptions {
        memory: false,
        ..Default::default()
    };
    let streams = match &q.stream {
        Some(name) => vec![streamkeeper::StreamKey::new(name.clone())?],
        None => streamkeeper::inspect::list_streams(redis).await?,
    };
    let mut failed = Vec::new();
    for stream in streams {
        let keys = streamkeeper::shard::ShardLayout::keys_of(redis, &stream).await?;
        let stat = if keys.len() == 1 && keys[0] == stream {
            // A probe of a stream that is not there fails: a typo must
            // not pass by not looking.
            match streamkeeper::inspect::stream_stat(redis, &stream, &options).await {
                Err(streamkeeper::Error::StreamMissing { .. }) => {
                    failed.push(format!("no stream {stream}"));
                    continue;
                }
                r => r?,
            }
        } else {
            let mut shards = Vec::new();
            for key in &keys {
                shards.push(streamkeeper::inspect::shard_stat(redis, key, &options).await?);
            }
            streamkeeper::inspect::sum_shards(stream.as_str(), &shards)
        };
        if let Some(g) = &q.group {
            if !stat.groups.iter().any(|x| &x.group == g) {
                failed.push(format!("{stream} has no group {g}"));
            }
        }
        for g in stat
            .groups
            .iter()
            .filter(|g| q.group.as_ref().is_none_or(|w| &g.group == w))
        {
            let limits = streamkeeper::inspect::LagLimits {
                max_lag: q.max_lag,
                max_time_lag,
            };
            failed.extend(limits.violations(stream.as_str(), g, ""));
        }
    }
    Ok(failed)
}
