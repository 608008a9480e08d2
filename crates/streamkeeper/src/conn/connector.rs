//! [`Connector`]: connects as a URL says and hands out the shared
//! connection, dedicated connections for blocking reads, node
//! connections on a cluster; recovers after errors and retries safe
//! operations ([`Connector::retrying`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::options::{ConnectorOptions, BLOCK_MARGIN, FAILOVER_PAUSE_MAX};
use super::sentinel::{
    check_master_role, failover_start_watch, master_client, release_when_replicated,
    resolve_master, switch_listener,
};
use super::shared::SharedConn;
use super::url::{parse_topology, sentinel_auth, Topology};
use crate::error::{Error, Result};
use crate::redact::redact;
use crate::replica_hold::ReplicaHold;
use crate::types::{key_slot, StreamKey};

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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) display_url: String,
    pub(super) topology: Topology,
    /// `user:pass@` of the URL (applies to the master of a Sentinel URL).
    pub(super) userinfo: Option<String>,
    /// `(username, password)` for the sentinels themselves.
    pub(super) sentinel_auth: Option<(Option<String>, String)>,
    /// The URL ends in `#insecure`: TLS without certificate checks, for
    /// every node reached through it too (cluster nodes, a dedicated
    /// connection to a slot's primary).
    pub(super) insecure: bool,
    pub(super) options: ConnectorOptions,
    pub(super) current: RwLock<Current>,
    /// Serializes recoveries so a burst of errors causes one re-resolve.
    pub(super) recovering: tokio::sync::Mutex<()>,
    /// Bumped every time the connector moves to another server.
    pub(super) switches: watch::Sender<u64>,
    /// The `+switch-master` listener and the failover-start watchers (one
    /// per sentinel), stopped with the last clone.
    pub(super) listener: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Writes wait here after a switch until a replica is in sync.
    pub(super) hold: ReplicaHold,
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
pub(super) struct Current {
    /// The server's client, for dedicated connections (none for a
    /// cluster: those go to the primary of the key's slot).
    pub(super) client: Option<redis::Client>,
    pub(super) shared: SharedConn,
    pub(super) addr: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("url", &self.inner.display_url)
            .finish()
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
    pub(super) async fn adopt(
        &self,
        client: redis::Client,
        addr: String,
        master: &str,
    ) -> Result<()> {
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
    pub(super) async fn follow_announcement(&self, master: &str, addr: &str) -> Result<()> {
        let _one_at_a_time = self.inner.recovering.lock().await;
        if self.current().addr == addr {
            return Ok(());
        }
        let client = master_client(addr, self.inner.userinfo.as_deref())?;
        self.adopt(client, addr.to_string(), master).await
    }

    pub(super) fn current(&self) -> Current {
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
                    let delay = backoff.after(&self.inner.topology, &e);
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

pub(super) async fn manager(
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
