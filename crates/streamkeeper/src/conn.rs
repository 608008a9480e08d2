//! The [`Connector`]: parses a connection URL and hands out connections.
//!
//! Normal commands share one auto-reconnecting multiplexed connection whose
//! every command has a deadline (`io_timeout`). Blocking reads
//! (`XREAD`/`XREADGROUP … BLOCK`) each get a *dedicated* connection whose
//! deadline is the block time plus a margin: redis-rs's default 500 ms
//! response timeout would otherwise cut every blocking read short, and a
//! blocking read on the shared connection would stall every other command
//! queued behind it.
//!
//! Sentinel: re-resolving the master only after an error is not enough —
//! a deposed master keeps accepting writes until Sentinel reconfigures it,
//! and the resync then erases them. So the connector subscribes to
//! `+switch-master` on the sentinels and moves to the new master as soon as
//! it is announced; every dedicated connection follows, because its owner
//! watches [`Connector::switches`]. It also checks `ROLE` on every
//! (re)connect and re-resolves on I/O errors, `READONLY`, `UNBLOCKED` and
//! `LOADING`.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo};
use tokio::sync::watch;

use crate::error::{Error, Result};
pub use crate::redact::redact;
use crate::replica_hold::{replica_in_sync, ReplicaHold};
use crate::types::{key_slot, StreamKey};

/// The longest writes pause between a failover's start
/// (`+failover-state-send-slaveof-noone`) and the switch: a failover that
/// announces no new master by then was aborted, and writes go on.
pub const FAILOVER_PAUSE_MAX: Duration = Duration::from_secs(10);

/// Extra time a blocking read's connection waits beyond the `BLOCK` time
/// before it declares the server unresponsive.
pub const BLOCK_MARGIN: Duration = Duration::from_secs(3);

/// What kind of deployment a URL points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: `redis://`, `rediss://`, `redis+unix://`.
    Standalone,
    /// Sentinel-managed master: `redis+sentinel://h:p,h:p/<master>`.
    Sentinel {
        /// Sentinel addresses.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
    /// Redis Cluster seed nodes: `redis+cluster://h:p,h:p` (or
    /// `rediss+cluster://` for TLS).
    Cluster {
        /// Seed node addresses.
        nodes: Vec<String>,
        /// Whether the nodes speak TLS (`rediss+cluster://`).
        tls: bool,
    },
}

/// Timeouts and retry settings of a [`Connector`].
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// The deadline of every normal (non-blocking) command: a frozen
    /// server fails it (retryably) instead of hanging the caller.
    pub io_timeout: Duration,
    /// How long an operation keeps reconnecting and retrying through a
    /// failover or outage before it gives up with the cause (`None`: never).
    pub reconnect_timeout: Option<Duration>,
    /// Opt-in (`None` by default; the CLI's `produce --hold-writes`):
    /// after following a Sentinel failover, how long writers
    /// ([`Connector::writable`]) may wait for the new master to have a
    /// replica in sync before they write anyway. Off, writes resume as soon
    /// as the switch is followed (availability first, docs/design.md §6); on,
    /// a second failover before a replica synced cannot erase them, at the
    /// price of seconds without writes (with one replica, until Sentinel
    /// has turned the old master into one: ~15 s). Writes pause from a
    /// failover's start to the switch either way.
    /// See [`writable`](Connector::writable).
    pub replica_hold: Option<Duration>,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        ConnectorOptions {
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(5),
            reconnect_timeout: Some(Duration::from_secs(60)),
            replica_hold: None,
        }
    }
}

/// Connects to Redis as a URL says; cheap to clone (shares one connection).
///
/// With a Sentinel URL it asks the sentinels for the master, checks the
/// master's `ROLE`, follows `+switch-master` announcements at once, and
/// after an error ([`recover`](Self::recover)) resolves the master again.
/// Sentinels that require their own password take it from the URL's query:
/// `redis+sentinel://[user:pass@]h1:p1,h2:p2/mymaster?sentinel_password=S`
/// (and optionally `sentinel_username=U`); `user:pass@` is for the master.
///
/// ```no_run
/// # async fn f() -> streamkeeper::Result<()> {
/// let redis = streamkeeper::Connector::connect("redis://127.0.0.1:6379").await?;
/// let mut conn = redis.shared();
/// let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    display_url: String,
    topology: Topology,
    /// `user:pass@` of the URL (applies to the master of a Sentinel URL).
    userinfo: Option<String>,
    /// `(username, password)` for the sentinels themselves.
    sentinel_auth: Option<(Option<String>, String)>,
    /// The URL ends in `#insecure`: TLS without certificate checks, for
    /// every node reached through it too (cluster nodes, a dedicated
    /// connection to a slot's primary).
    insecure: bool,
    options: ConnectorOptions,
    current: RwLock<Current>,
    /// Serializes recoveries so a burst of errors causes one re-resolve.
    recovering: tokio::sync::Mutex<()>,
    /// Bumped every time the connector moves to another server.
    switches: watch::Sender<u64>,
    /// The `+switch-master` listener and the failover-start watchers (one
    /// per sentinel), stopped with the last clone.
    listener: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Writes wait here after a switch until a replica is in sync.
    hold: ReplicaHold,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut l) = self.listener.lock() {
            for task in l.drain(..) {
                task.abort();
            }
        }
    }
}

/// The server in use now and the shared connection to it.
#[derive(Clone)]
struct Current {
    /// The server's client, for dedicated connections (none for a
    /// cluster: those go to the primary of the key's slot).
    client: Option<redis::Client>,
    shared: SharedConn,
    addr: String,
}

/// The connection for normal (non-blocking) commands: one
/// auto-reconnecting multiplexed connection to a server, or redis-rs's
/// cluster connection (routing by slot, following `MOVED`/`ASK`). Cheap
/// to clone; every clone shares the same connection(s).
#[derive(Clone)]
pub enum SharedConn {
    /// A single server (also the current master behind Sentinel).
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl SharedConn {
    /// `WAIT replicas timeout` on the node holding `key`: on a cluster
    /// redis-rs would send a keyless WAIT to every primary and merge the
    /// replies, so it is routed to the key's primary, over the same node
    /// connection that carried the writes. Returns how many replicas
    /// confirmed.
    pub async fn wait_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> redis::RedisResult<u32> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        match self {
            SharedConn::Single(c) => cmd.query_async(c).await,
            SharedConn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                Ok(redis::from_redis_value(v)?)
            }
        }
    }
}

impl std::fmt::Debug for SharedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SharedConn::Single(_) => "SharedConn::Single",
            SharedConn::Cluster(_) => "SharedConn::Cluster",
        })
    }
}

impl redis::aio::ConnectionLike for SharedConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            SharedConn::Single(c) => c.req_packed_command(cmd),
            SharedConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            SharedConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            SharedConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            SharedConn::Single(c) => c.get_db(),
            SharedConn::Cluster(c) => c.get_db(),
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.inner.display_url)
            .finish()
    }
}

/// Parses a URL into its topology without connecting; rejects what is
/// malformed with [`Error::InvalidUrl`].
pub fn parse_topology(url: &str) -> Result<Topology> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: redact(url),
        reason: reason.into(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("missing scheme"))?;
    let hosts = |rest: &str| -> Vec<String> {
        rest.split(',')
            .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
            .filter(|h| !h.is_empty())
            .collect()
    };
    match scheme {
        "redis" | "rediss" | "redis+unix" | "unix" => Ok(Topology::Standalone),
        "redis+sentinel" => {
            let (addrs, master) = rest
                .split_once('/')
                .ok_or_else(|| invalid("sentinel URLs end with /<master-name>"))?;
            let master = master.split('?').next().unwrap_or(master);
            let master = master.trim_end_matches('/');
            if master.is_empty() {
                return Err(invalid("sentinel URLs end with /<master-name>"));
            }
            let sentinels = hosts(addrs);
            if sentinels.is_empty() {
                return Err(invalid("no sentinel address"));
            }
            Ok(Topology::Sentinel {
                sentinels,
                master: master.to_string(),
            })
        }
        "redis+cluster" | "rediss+cluster" => {
            let nodes = hosts(rest.split(['/', '?']).next().unwrap_or(rest));
            if nodes.is_empty() {
                return Err(invalid("no cluster node address"));
            }
            if let Some(bad) = nodes.iter().find(|n| !n.contains(':')) {
                return Err(invalid(&format!(
                    "cluster node {bad:?} has no port (write host:port)"
                )));
            }
            Ok(Topology::Cluster {
                nodes,
                tls: scheme == "rediss+cluster",
            })
        }
        other => Err(invalid(&format!("unknown scheme {other:?}"))),
    }
}

impl Connector {
    /// Parses `url`, connects and checks the server answers.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ConnectorOptions::default()).await
    }

    /// Like [`connect`](Self::connect) with explicit timeouts.
    pub async fn connect_with(url: &str, options: ConnectorOptions) -> Result<Self> {
        let display_url = redact(url);
        let topology = parse_topology(url)?;
        let userinfo = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(u, _)| u.to_string())
            .filter(|u| !u.contains('/'));
        let sentinel_auth = sentinel_auth(url);
        let insecure = url.ends_with("#insecure");
        let connect_error = |source| Error::Connect {
            url: display_url.clone(),
            source,
        };
        let (client, shared, addr) = match &topology {
            Topology::Standalone => {
                let client = redis::Client::open(url).map_err(|e| Error::InvalidUrl {
                    url: display_url.clone(),
                    reason: e.to_string(),
                })?;
                let shared = manager(&client, &options).await.map_err(connect_error)?;
                (
                    Some(client),
                    SharedConn::Single(shared),
                    display_url.clone(),
                )
            }
            Topology::Sentinel { sentinels, master } => {
                let (client, addr) = resolve_master(
                    sentinels,
                    master,
                    userinfo.as_deref(),
                    sentinel_auth.as_ref(),
                    &options,
                )
                .await?;
                let mut shared = manager(&client, &options).await.map_err(connect_error)?;
                check_master_role(&mut shared, master).await?;
                (Some(client), SharedConn::Single(shared), addr)
            }
            Topology::Cluster { nodes, tls } => {
                let conn = crate::cluster::connect(
                    nodes,
                    userinfo.as_deref(),
                    *tls,
                    insecure,
                    options.connect_timeout,
                    options.io_timeout,
                )
                .await
                .map_err(connect_error)?;
                (None, SharedConn::Cluster(conn), display_url.clone())
            }
        };
        let connector = Connector {
            inner: Arc::new(Inner {
                display_url,
                topology,
                userinfo,
                sentinel_auth,
                insecure,
                options,
                current: RwLock::new(Current {
                    client,
                    shared,
                    addr,
                }),
                recovering: tokio::sync::Mutex::new(()),
                switches: watch::channel(0).0,
                listener: std::sync::Mutex::new(Vec::new()),
                hold: ReplicaHold::new(),
            }),
        };
        if let Topology::Sentinel { sentinels, .. } = &connector.inner.topology {
            let weak = Arc::downgrade(&connector.inner);
            let mut tasks = vec![tokio::spawn(switch_listener(weak.clone()))];
            tasks.extend(
                sentinels
                    .iter()
                    .map(|s| tokio::spawn(failover_start_watch(weak.clone(), s.clone()))),
            );
            if let Ok(mut l) = connector.inner.listener.lock() {
                *l = tasks;
            }
        }
        Ok(connector)
    }

    /// Changes whenever the connector moves to another server (a Sentinel
    /// failover). Owners of [`dedicated`](Self::dedicated) connections
    /// watch it and reconnect, so no reader stays on a deposed master.
    pub fn switches(&self) -> watch::Receiver<u64> {
        self.inner.switches.subscribe()
    }

    /// Moves every later connection to `addr` after checking it is a
    /// master; the caller holds `recovering`.
    async fn adopt(&self, client: redis::Client, addr: String, master: &str) -> Result<()> {
        let shared = manager(&client, &self.inner.options)
            .await
            .map_err(|source| Error::Connect {
                url: addr.clone(),
                source,
            })?;
        check_master_role(&mut shared.clone(), master).await?;
        let from = self.current().addr;
        tracing::warn!(%from, to = %addr, "following the Sentinel failover to the new master");
        {
            let mut slot = match self.inner.current.write() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            *slot = Current {
                client: Some(client),
                shared: SharedConn::Single(shared),
                addr,
            };
        }
        // The pause from the failover's start ends here, unless the
        // opt-in replica hold keeps writes until a replica syncs.
        match self.inner.options.replica_hold {
            Some(_) => self.inner.hold.hold(),
            None => self.inner.hold.release(),
        }
        self.inner.switches.send_modify(|g| *g += 1);
        crate::metrics::reconnect();
        if let Some(max) = self.inner.options.replica_hold {
            tokio::spawn(release_when_replicated(
                Arc::downgrade(&self.inner),
                *self.inner.switches.borrow(),
                max,
            ));
        }
        Ok(())
    }

    /// Waits while writes are held around a Sentinel failover: from its
    /// start (`+failover-state-send-slaveof-noone`) until the switch is
    /// followed (at most [`FAILOVER_PAUSE_MAX`]: what the deposed master
    /// acknowledges then is erased by the resync), and, with the opt-in
    /// [`ConnectorOptions::replica_hold`], after it until the new master has
    /// a replica online and caught up (at most that long). Returns at once
    /// otherwise (always for a single server or a cluster).
    ///
    /// Why the opt-in: right after a failover the new master usually has
    /// no replica yet (Sentinel reconfigures the old master seconds
    /// later); a second failover in that time would erase every write it
    /// acknowledged. [`Producer`](crate::Producer) calls this before each
    /// batch.
    pub async fn writable(&self) {
        if self.inner.hold.is_held() {
            let max = self
                .inner
                .options
                .replica_hold
                .map_or(FAILOVER_PAUSE_MAX, |hold| hold.max(FAILOVER_PAUSE_MAX));
            self.inner.hold.wait(max).await;
        }
    }

    /// Moves to the master a sentinel announced, unless already there.
    async fn follow_announcement(&self, master: &str, addr: &str) -> Result<()> {
        let _one_at_a_time = self.inner.recovering.lock().await;
        if self.current().addr == addr {
            return Ok(());
        }
        let client = master_client(addr, self.inner.userinfo.as_deref())?;
        self.adopt(client, addr.to_string(), master).await
    }

    fn current(&self) -> Current {
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The URL this connector was made from, password redacted.
    pub fn url(&self) -> &str {
        &self.inner.display_url
    }

    /// The topology of the URL.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The options in force.
    pub fn options(&self) -> &ConnectorOptions {
        &self.inner.options
    }

    /// The address of the server in use (the current master).
    pub fn server_addr(&self) -> String {
        self.current().addr
    }

    /// The shared connection for normal commands. It reconnects by itself
    /// after a connection error; never send a blocking command on it. On a
    /// cluster it routes each command by its key's slot.
    pub fn shared(&self) -> SharedConn {
        self.current().shared
    }

    /// A new connection of its own, for one blocking reader of `key`: its
    /// response timeout is `block` plus [`BLOCK_MARGIN`]. On a cluster it
    /// goes to the primary serving `key`'s slot, from a fresh slot map:
    /// make a new one after `MOVED`, `UNBLOCKED`, `READONLY` or a lost
    /// connection and it follows a resharding or failover.
    pub async fn dedicated(
        &self,
        key: &StreamKey,
        block: Duration,
    ) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.options.connect_timeout))
            .set_response_timeout(Some(block + BLOCK_MARGIN));
        let current = self.current();
        let (client, addr) = match (current.client, current.shared) {
            (Some(client), _) => (client, current.addr),
            (None, SharedConn::Cluster(mut conn)) => {
                let addr =
                    crate::cluster::primary_for_slot(&mut conn, key_slot(key.as_str())).await?;
                (self.node_client(&addr)?, addr)
            }
            (None, SharedConn::Single(_)) => {
                return Err(Error::Protocol {
                    command: "connect",
                    detail: "no client for a dedicated connection".into(),
                })
            }
        };
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| Error::Connect { url: addr, source })
    }

    /// A connection of its own to one node (`host:port`) of the
    /// deployment — a cluster node, the Sentinel master or one of its
    /// replicas — with the URL's credentials and TLS and the connector's
    /// deadlines. For per-node reports such as `doctor`.
    pub async fn node_connection(&self, addr: &str) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.options.connect_timeout))
            .set_response_timeout(Some(self.inner.options.io_timeout));
        self.node_client(addr)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| Error::Connect {
                url: addr.to_string(),
                source,
            })
    }

    /// Every node of a cluster as `CLUSTER NODES` describes it; `None`
    /// when the URL is not a cluster's.
    pub async fn cluster_nodes(&self) -> Result<Option<Vec<crate::cluster::ClusterNode>>> {
        match self.shared() {
            SharedConn::Cluster(mut conn) => crate::cluster::nodes(&mut conn).await.map(Some),
            SharedConn::Single(_) => Ok(None),
        }
    }

    /// A client for one node (`host:port`), with the URL's credentials
    /// and TLS.
    fn node_client(&self, addr: &str) -> Result<redis::Client> {
        let tls = matches!(self.inner.topology, Topology::Cluster { tls: true, .. })
            || self.inner.display_url.starts_with("rediss://");
        let scheme = if tls { "rediss" } else { "redis" };
        let auth = self
            .inner
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let insecure = if tls && self.inner.insecure {
            "/#insecure"
        } else {
            ""
        };
        redis::Client::open(format!("{scheme}://{auth}{addr}{insecure}")).map_err(|e| {
            Error::InvalidUrl {
                url: redact(&format!("{scheme}://{auth}{addr}")),
                reason: e.to_string(),
            }
        })
    }

    /// After a retryable error: for a Sentinel URL, asks the sentinels for
    /// the master again and, if it moved (or the one in use is no longer a
    /// master), switches every later [`shared`](Self::shared) and
    /// [`dedicated`](Self::dedicated) connection to it. For a single
    /// server it only checks that the server answers (the shared
    /// connection reconnects by itself). Returns an error while no master
    /// can be reached.
    pub async fn recover(&self) -> Result<()> {
        let _one_at_a_time = self.inner.recovering.lock().await;
        crate::metrics::reconnect();
        match &self.inner.topology {
            Topology::Sentinel { sentinels, master } => {
                let current = self.current();
                let (client, addr) = resolve_master(
                    sentinels,
                    master,
                    self.inner.userinfo.as_deref(),
                    self.inner.sentinel_auth.as_ref(),
                    &self.inner.options,
                )
                .await?;
                if addr == current.addr
                    && check_master_role(&mut current.shared.clone(), master)
                        .await
                        .is_ok()
                {
                    return Ok(());
                }
                self.adopt(client, addr, master).await
            }
            Topology::Cluster { .. } => {
                // The cluster connection refreshes its slot map by itself
                // on MOVED and reconnects lost nodes; check that some node
                // answers.
                let SharedConn::Cluster(mut conn) = self.shared() else {
                    return Ok(());
                };
                crate::cluster::nodes(&mut conn).await.map(|_| ())
            }
            Topology::Standalone => {
                let mut conn = self.shared();
                redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|source| Error::Connect {
                        url: self.inner.display_url.clone(),
                        source,
                    })
            }
        }
    }

    /// Runs `op` on the shared connection; on a retryable error, recovers
    /// (see [`recover`](Self::recover)) and tries again with jittered
    /// backoff until `reconnect_timeout` has passed, then fails with
    /// [`Error::GaveUp`] naming the last cause.
    ///
    /// Use it only for operations that are safe to repeat.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut(SharedConn) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let started = std::time::Instant::now();
        let mut backoff = Backoff::default();
        let mut switches = self.switches();
        switches.mark_unchanged();
        loop {
            // A call in flight when the master changes is abandoned and sent
            // again to the new master: waiting for the deposed (perhaps
            // frozen) one would only delay it, and what it acknowledges
            // would be erased by the resync anyway.
            let attempt = tokio::select! {
                r = op(self.shared()) => r,
                _ = switches.changed() => Err(Error::NoMaster {
                    master: self.inner.display_url.clone(),
                    cause: "the master changed while the call was in flight".into(),
                }),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    if let Some(limit) = self.inner.options.reconnect_timeout {
                        if started.elapsed() >= limit {
                            return Err(Error::GaveUp {
                                what: what.to_string(),
                                after: started.elapsed(),
                                cause: Box::new(e),
                            });
                        }
                    }
                    let delay = backoff.next();
                    // A cluster slot in motion (a failover under way):
                    // asking often is cheap and finds the new primary soon.
                    let delay = match e.server_code().as_deref() {
                        Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN") => {
                            delay.min(Duration::from_millis(250))
                        }
                        _ => delay,
                    };
                    tracing::warn!(%what, error = %e, ?delay, "retryable error; reconnecting");
                    tokio::time::sleep(delay).await;
                    if let Err(e) = self.recover().await {
                        tracing::warn!(error = %e, "reconnect failed");
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The server's version as `(major, minor, patch)`.
    pub async fn server_version(&self) -> Result<(u32, u32, u32)> {
        let mut conn = self.shared();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("INFO server", e))?;
        let v = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .ok_or(Error::Protocol {
                command: "INFO",
                detail: "no redis_version".into(),
            })?;
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Ok((
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        ))
    }
}

async fn manager(
    client: &redis::Client,
    options: &ConnectorOptions,
) -> redis::RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.io_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(100));
    client.get_connection_manager_with_config(config).await
}

/// Asks each sentinel in turn for the master's address; the first answer
/// wins. Returns a client for the master and its `host:port`.
async fn resolve_master(
    sentinels: &[String],
    master: &str,
    userinfo: Option<&str>,
    sentinel_auth: Option<&(Option<String>, String)>,
    options: &ConnectorOptions,
) -> Result<(redis::Client, String)> {
    let mut last_error = String::from("no sentinel answered");
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.connect_timeout));
    for sentinel in sentinels {
        let client = match sentinel_client(sentinel, sentinel_auth) {
            Ok(c) => c,
            Err(e) => {
                last_error = format!("{sentinel}: {e}");
                continue;
            }
        };
        let answer: redis::RedisResult<Option<(String, u16)>> = async {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut conn)
                .await
        }
        .await;
        match answer {
            Ok(Some((host, port))) => {
                let addr = format!("{host}:{port}");
                return Ok((master_client(&addr, userinfo)?, addr));
            }
            Ok(None) => {
                last_error = format!("sentinel {sentinel} does not know a master named {master:?}")
            }
            Err(e) => last_error = format!("sentinel {sentinel}: {e}"),
        }
    }
    Err(Error::NoMaster {
        master: master.to_string(),
        cause: last_error,
    })
}

/// A client for the master at `addr` with the URL's credentials.
fn master_client(addr: &str, userinfo: Option<&str>) -> Result<redis::Client> {
    let url = match userinfo {
        Some(u) => format!("redis://{u}@{addr}"),
        None => format!("redis://{addr}"),
    };
    redis::Client::open(url).map_err(|e| Error::InvalidUrl {
        url: redact(addr),
        reason: e.to_string(),
    })
}

/// A client for one sentinel, with the sentinels' own credentials.
fn sentinel_client(
    addr: &str,
    auth: Option<&(Option<String>, String)>,
) -> redis::RedisResult<redis::Client> {
    let info = format!("redis://{addr}").into_connection_info()?;
    let info = match auth {
        Some((user, pass)) => {
            let mut settings = info.redis_settings().clone().set_password(pass);
            if let Some(u) = user {
                settings = settings.set_username(u);
            }
            info.set_redis_settings(settings)
        }
        None => info,
    };
    redis::Client::open(info)
}

/// `sentinel_password` (and `sentinel_username`) from a Sentinel URL's query.
fn sentinel_auth(url: &str) -> Option<(Option<String>, String)> {
    let (_, query) = url.split_once('?')?;
    let mut user = None;
    let mut pass = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sentinel_password", v)) => pass = Some(v.to_string()),
            Some(("sentinel_username", v)) => user = Some(v.to_string()),
            _ => {}
        }
    }
    pass.map(|p| (user, p))
}

/// After the switch numbered `switch`: polls the new master's
/// `INFO replication` until a replica is in sync, then releases held
/// writes; after `max`, releases them anyway with a warning. Ends early
/// if the connector switched again (that switch runs its own).
async fn release_when_replicated(inner: Weak<Inner>, switch: u64, max: Duration) {
    let started = tokio::time::Instant::now();
    let mut said = false;
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        if *connector.inner.switches.borrow() != switch {
            return;
        }
        let mut conn = connector.shared();
        let info: redis::RedisResult<String> = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut conn)
            .await;
        if info.as_deref().is_ok_and(replica_in_sync) {
            if said {
                tracing::info!(master = %connector.server_addr(), waited = ?started.elapsed(),
                    "a replica of the new master is in sync: writes go on");
            }
            connector.inner.hold.release();
            return;
        }
        if started.elapsed() >= max {
            tracing::warn!(master = %connector.server_addr(),
                "the new master still has no replica in sync: writing anyway; writes acknowledged now are lost if it fails over before one syncs (use WAIT / produce --wait to be sure)");
            connector.inner.hold.release();
            return;
        }
        if !said {
            tracing::warn!(master = %connector.server_addr(), ?max,
                "holding writes until a replica of the new master is in sync");
            said = true;
        }
        drop(connector);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribes to `channel` on one sentinel, within `connect_timeout`.
async fn subscribe(
    sentinel: &str,
    auth: Option<&(Option<String>, String)>,
    connect_timeout: Duration,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = sentinel_client(sentinel, auth)?;
    let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Listens on one sentinel for the start of a failover of our master
/// (`+failover-state-send-slaveof-noone`: the leader is promoting a
/// replica) and holds writes from then on: the master in use is about to
/// be deposed, and what it acknowledges from now until the switch would
/// be erased. The switch releases them (or, with the opt-in
/// `replica_hold`, keeps them until the new master has a replica in sync);
/// a failover that never switches (aborted) releases them after
/// [`FAILOVER_PAUSE_MAX`]. Only the leading sentinel publishes that event,
/// hence one watcher per sentinel.
async fn failover_start_watch(inner: Weak<Inner>, sentinel: String) {
    const STARTED: &str = "+failover-state-send-slaveof-noone";
    let mut backoff = Backoff::default();
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        let Topology::Sentinel { master, .. } = connector.inner.topology.clone() else {
            return;
        };
        let auth = connector.inner.sentinel_auth.clone();
        let connect_timeout = connector.inner.options.connect_timeout;
        drop(connector);
        let subscribed = subscribe(&sentinel, auth.as_ref(), connect_timeout, STARTED).await;
        let mut pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%sentinel, error = %e, "cannot watch this sentinel for failovers");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            // "slave <name> <ip> <port> @ <master-name> <ip> <port>"
            let mut at = payload.split(" @ ");
            let ours = at
                .nth(1)
                .and_then(|m| m.split(' ').next())
                .is_some_and(|name| name == master);
            if !ours {
                continue;
            }
            let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
                return;
            };
            let max = FAILOVER_PAUSE_MAX;
            tracing::warn!(%sentinel, "a failover started: holding writes until the new master is followed");
            connector.inner.hold.hold();
            let switch = *connector.inner.switches.borrow();
            let weak = inner.clone();
            tokio::spawn(async move {
                tokio::time::sleep(max).await;
                if let Some(inner) = weak.upgrade() {
                    // Still no switch: the failover was aborted.
                    if *inner.switches.borrow() == switch && inner.hold.is_held() {
                        tracing::warn!("no new master after the failover started: writes go on");
                        inner.hold.release();
                    }
                }
            });
        }
        tracing::debug!(%sentinel, "lost the failover watch; resubscribing");
    }
}

/// Listens for `+switch-master` on the sentinels (one at a time, moving
/// on when one goes away) and moves the connector as soon as its master
/// is announced elsewhere. After each (re)subscription it re-resolves, in
/// case an announcement was missed while no sentinel was listened to.
async fn switch_listener(inner: Weak<Inner>) {
    let mut backoff = Backoff::default();
    let mut next = 0usize;
    loop {
        let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
            return;
        };
        let Topology::Sentinel { sentinels, master } = connector.inner.topology.clone() else {
            return;
        };
        let sentinel = sentinels[next % sentinels.len()].clone();
        next += 1;
        let auth = connector.inner.sentinel_auth.clone();
        let connect_timeout = connector.inner.options.connect_timeout;
        drop(connector);
        let subscribed =
            subscribe(&sentinel, auth.as_ref(), connect_timeout, "+switch-master").await;
        let mut pubsub = match subscribed {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%sentinel, error = %e, "cannot listen to this sentinel; trying the next");
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        backoff.reset();
        if let Some(inner) = inner.upgrade() {
            let _ = Connector { inner }.recover().await;
        }
        let mut messages = pubsub.on_message();
        while let Some(msg) = messages.next().await {
            let Ok(payload) = msg.get_payload::<String>() else {
                continue;
            };
            // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
            let parts: Vec<&str> = payload.split(' ').collect();
            if parts.len() != 5 || parts[0] != master {
                continue;
            }
            let addr = format!("{}:{}", parts[3], parts[4]);
            let Some(connector) = inner.upgrade().map(|inner| Connector { inner }) else {
                return;
            };
            tracing::info!(%sentinel, %addr, "sentinel announced a new master");
            // The new master may need a moment to report role master.
            for _ in 0..20 {
                match connector.follow_announcement(&master, &addr).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot switch to the announced master yet");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
        tracing::debug!(%sentinel, "lost the sentinel subscription; resubscribing");
    }
}

/// Fails unless the server behind `conn` says it is a master (during a
/// failover a sentinel may still name the demoted one).
async fn check_master_role(conn: &mut impl redis::aio::ConnectionLike, master: &str) -> Result<()> {
    let role: redis::Value = redis::cmd("ROLE")
        .query_async(conn)
        .await
        .map_err(|e| Error::redis("ROLE", e))?;
    let first = match &role {
        redis::Value::Array(items) => items.first().map(crate::reply::text),
        _ => None,
    };
    if first.as_deref() == Some("master") {
        Ok(())
    } else {
        Err(Error::NoMaster {
            master: master.to_string(),
            cause: format!(
                "the server the sentinels named reports role {first:?}; a failover is in progress"
            ),
        })
    }
}

/// Jittered exponential backoff between reconnect attempts (100 ms → 5 s).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    pub(crate) fn next(&mut self) -> Duration {
        let base = 100u64.saturating_mul(1 << self.attempt.min(6)).min(5_000);
        self.attempt += 1;
        let jitter = rand::random::<u64>() % (base / 2 + 1);
        Duration::from_millis(base / 2 + jitter)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_url_form_parses() {
        assert_eq!(
            parse_topology("redis://127.0.0.1:6379/0").expect("tcp"),
            Topology::Standalone
        );
        assert_eq!(
            parse_topology("rediss://u:p@h:6380").expect("tls"),
            Topology::Standalone
        );
        assert_eq!(
            parse_topology("redis+unix:///tmp/r.sock").expect("unix"),
            Topology::Standalone
        );
        assert_eq!(
            parse_topology("redis+sentinel://u:p@127.0.0.1:26379,127.0.0.1:26380/mymaster")
                .expect("sentinel"),
            Topology::Sentinel {
                sentinels: vec!["127.0.0.1:26379".into(), "127.0.0.1:26380".into()],
                master: "mymaster".into()
            }
        );
        assert_eq!(
            parse_topology("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").expect("cluster"),
            Topology::Cluster {
                nodes: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()],
                tls: false,
            }
        );
        assert_eq!(
            parse_topology("rediss+cluster://u:p@h1:7000,h2:7001").expect("tls cluster"),
            Topology::Cluster {
                nodes: vec!["h1:7000".into(), "h2:7001".into()],
                tls: true,
            }
        );
    }

    #[test]
    fn malformed_urls_are_rejected() {
        for bad in [
            "127.0.0.1:6379",
            "http://h:1",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+cluster://",
            "redis+cluster://h1:7000,h2",
        ] {
            assert!(
                matches!(parse_topology(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@h:1/0"),
            "redis://user:***@h:1/0"
        );
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
