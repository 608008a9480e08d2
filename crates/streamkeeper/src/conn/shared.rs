//! [`SharedConn`]: the connection for normal (non-blocking) commands, one
//! server's auto-reconnecting multiplexed connection or redis-rs's
//! cluster connection, with `WAIT` routed to the key's node.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

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
