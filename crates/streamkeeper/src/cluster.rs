//! Redis Cluster: the cluster client behind a `redis+cluster://` URL, the
//! slot map, and commands addressed to one node.
//!
//! Normal commands go through redis-rs's cluster connection, which routes
//! each by its key's hash slot and follows `MOVED`/`ASK`. Blocking reads
//! never do: a blocking read stalls every command behind it on that
//! node's multiplexed connection, so each reader gets a dedicated
//! connection to the primary that serves its stream's slot
//! ([`Connector::dedicated`](crate::Connector::dedicated)), made anew
//! (slot map asked again) after `MOVED`, `UNBLOCKED`, `READONLY`,
//! `CLUSTERDOWN` or a lost connection. Scripts and pipelines stay within
//! one slot (derived keys share the stream's hash tag, see [`keys`](crate::keys)).

use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use crate::error::{Error, Result};
use crate::reply;

/// One node of a cluster as `CLUSTER NODES` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node's 40-character id.
    pub id: String,
    /// `host:port` clients connect to.
    pub addr: String,
    /// Primary (`master`) or replica.
    pub primary: bool,
    /// For a replica, the id of its primary.
    pub primary_id: Option<String>,
    /// Flags such as `fail`, `fail?`, `handshake`, `myself`.
    pub flags: Vec<String>,
    /// `connected` or `disconnected` (the cluster bus link).
    pub link: String,
    /// Slot ranges served (primaries), e.g. `0-5460`.
    pub slots: Vec<String>,
}

impl ClusterNode {
    /// Whether the cluster considers the node failed (`fail` or `fail?`).
    pub fn failed(&self) -> bool {
        self.flags.iter().any(|f| f.starts_with("fail"))
    }

    /// Whether this node serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| {
            let mut ends = r.split('-');
            let lo = ends.next().and_then(|s| s.parse::<u16>().ok());
            let hi = ends.next().and_then(|s| s.parse::<u16>().ok()).or(lo);
            matches!((lo, hi), (Some(lo), Some(hi)) if lo <= slot && slot <= hi)
        })
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 8 {
                return None;
            }
            // "host:port@cport[,hostname]"
            let addr = f[1].split(['@', ',']).next()?.to_string();
            let flags: Vec<String> = f[2].split(',').map(str::to_string).collect();
            Some(ClusterNode {
                id: f[0].to_string(),
                addr,
                primary: flags.iter().any(|x| x == "master"),
                primary_id: (f[3] != "-").then(|| f[3].to_string()),
                flags,
                link: f[7].to_string(),
                slots: f[8..]
                    .iter()
                    .filter(|r| !r.starts_with('['))
                    .map(|r| r.to_string())
                    .collect(),
            })
        })
        .collect()
}

/// Connects to a cluster from its seed nodes (`host:port`), with the
/// connector's deadlines. With `tls` the nodes' certificates are checked
/// against the system's trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR`
/// name others) unless `insecure` (the URL's `#insecure`).
pub(crate) async fn connect(
    seeds: &[String],
    userinfo: Option<&str>,
    tls: bool,
    insecure: bool,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> redis::RedisResult<ClusterConnection> {
    let scheme = if tls { "rediss" } else { "redis" };
    let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let insecure = if tls && insecure { "/#insecure" } else { "" };
    let urls: Vec<String> = seeds
        .iter()
        .map(|s| format!("{scheme}://{auth}{s}{insecure}"))
        .collect();
    let client = redis::cluster::ClusterClientBuilder::new(urls)
        .connection_timeout(connect_timeout)
        .response_timeout(io_timeout)
        .retries(3)
        .build()?;
    tokio::time::timeout(connect_timeout + io_timeout, client.get_async_connection())
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

/// `CLUSTER NODES` as seen by some node.
pub(crate) async fn nodes(conn: &mut ClusterConnection) -> Result<Vec<ClusterNode>> {
    let v = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await
        .map_err(|e| Error::redis("CLUSTER NODES", e))?;
    Ok(parse_nodes(&reply::text(&v)))
}

/// The address of the primary serving `slot`, from a fresh slot map.
pub(crate) async fn primary_for_slot(conn: &mut ClusterConnection, slot: u16) -> Result<String> {
    nodes(conn)
        .await?
        .into_iter()
        .find(|n| n.primary && !n.failed() && n.serves(slot))
        .map(|n| n.addr)
        .ok_or_else(|| Error::Protocol {
            command: "CLUSTER NODES",
            detail: format!("no primary serves slot {slot} (is the cluster down?)"),
        })
}

/// Sends `cmd` to the node at `addr` (`host:port`).
pub(crate) async fn on_node(
    conn: &mut ClusterConnection,
    addr: &str,
    cmd: &redis::Cmd,
) -> redis::RedisResult<Value> {
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Client, "node address without a port"))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        redis::RedisError::from((redis::ErrorKind::Client, "node address with a bad port"))
    })?;
    conn.route_command(
        cmd.clone(),
        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.to_string(),
            port,
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_lines_parse() {
        let text = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-a slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
            e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000\n\
            824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 master,fail - 1426238316232 1426238313223 6 disconnected\n";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].addr, "127.0.0.1:30004");
        assert!(!nodes[0].primary);
        assert_eq!(
            nodes[0].primary_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(
            nodes[1].primary
                && nodes[1].serves(0)
                && nodes[1].serves(5460)
                && nodes[1].serves(7000)
        );
        assert!(!nodes[1].serves(5461));
        assert!(nodes[2].failed() && nodes[2].slots.is_empty());
    }
}
