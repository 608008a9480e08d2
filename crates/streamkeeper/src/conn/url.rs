//! Connection URLs: which deployment a URL points at ([`Topology`]:
//! one server, Sentinel, Cluster), parsed without connecting, and the
//! sentinels' own credentials from its query.

use crate::error::{Error, Result};
use crate::redact::redact;

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

/// `sentinel_password` (and `sentinel_username`) from a Sentinel URL's query.
pub(super) fn sentinel_auth(url: &str) -> Option<(Option<String>, String)> {
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

#[cfg(test)]
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
