//! The [`Connector`]: parses a connection URL and hands out connections.
//!
//! Normal commands share one auto-reconnecting multiplexed connection.
//! Blocking reads (`XREAD`/`XREADGROUP … BLOCK`) each get a *dedicated*
//! connection whose response timeout is the block time plus a margin:
//! redis-rs's default 500 ms response timeout would otherwise cut every
//! blocking read short, and a blocking read on the shared connection would
//! stall every other command queued behind it.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::AsyncConnectionConfig;

use crate::error::{Error, Result};

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
    /// Redis Cluster seed nodes: `redis+cluster://h:p,h:p`.
    Cluster {
        /// Seed node addresses.
        nodes: Vec<String>,
    },
}

/// Timeouts and retry settings of a [`Connector`].
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a normal (non-blocking) command may take before it fails.
    pub response_timeout: Duration,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        ConnectorOptions {
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// Connects to Redis as a URL says; cheap to clone (shares one connection).
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
    client: redis::Client,
    shared: ConnectionManager,
    options: ConnectorOptions,
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
        "redis+cluster" => {
            let nodes = hosts(rest.trim_end_matches('/'));
            if nodes.is_empty() {
                return Err(invalid("no cluster node address"));
            }
            Ok(Topology::Cluster { nodes })
        }
        other => Err(invalid(&format!("unknown scheme {other:?}"))),
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
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
        match parse_topology(url)? {
            Topology::Standalone => {}
            Topology::Sentinel { .. } => {
                return Err(Error::Unsupported {
                    what: format!("Sentinel URLs ({display_url})"),
                })
            }
            Topology::Cluster { .. } => {
                return Err(Error::Unsupported {
                    what: format!("Cluster URLs ({display_url})"),
                })
            }
        }
        let client = redis::Client::open(url).map_err(|e| Error::InvalidUrl {
            url: display_url.clone(),
            reason: e.to_string(),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(100));
        let shared = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|source| Error::Connect {
                url: display_url.clone(),
                source,
            })?;
        Ok(Connector {
            inner: Arc::new(Inner {
                display_url,
                client,
                shared,
                options,
            }),
        })
    }

    /// The URL this connector was made from, password redacted.
    pub fn url(&self) -> &str {
        &self.inner.display_url
    }

    /// The shared connection for normal commands. It reconnects by itself
    /// after a connection error; never send a blocking command on it.
    pub fn shared(&self) -> ConnectionManager {
        self.inner.shared.clone()
    }

    /// A new connection of its own, for one blocking reader: its response
    /// timeout is `block` plus [`BLOCK_MARGIN`].
    pub async fn dedicated(&self, block: Duration) -> Result<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.inner.options.connect_timeout))
            .set_response_timeout(Some(block + BLOCK_MARGIN));
        self.inner
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|source| Error::Connect {
                url: self.inner.display_url.clone(),
                source,
            })
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
                nodes: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()]
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
