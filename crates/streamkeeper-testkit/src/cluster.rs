//! A real Redis Cluster on loopback: 3 primaries with 1 replica each.
//!
//! [`RedisCluster::start`] spawns six `redis-server --cluster-enabled yes`
//! processes on free `127.0.0.1` ports (`cluster-node-timeout` 2 s), joins
//! them with `redis-cli --cluster create … --cluster-replicas 1` and waits
//! until every node reports `cluster_state:ok` and every replica's link is
//! up. Helpers fail a primary over (`CLUSTER FAILOVER` on its replica) or
//! SIGKILL it; every process dies with the value.
//!
//! ```no_run
//! let cluster = streamkeeper_testkit::RedisCluster::start().expect("cluster");
//! println!("connect to {}", cluster.url());
//! ```

use std::process::Command;
use std::time::Duration;

use crate::{RedisServer, ServerConfig, StartError, INSTALL_HINT};

/// How long a node may be unreachable before the cluster fails it over.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Three primaries and three replicas, killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// With [`RedisCluster::start_tls`]: the shared certificate and each
    /// node's TLS port (in the order of `nodes`).
    tls: Option<ClusterTls>,
}

#[derive(Debug)]
struct ClusterTls {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

fn cli_port(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), StartError> {
    if crate::eventually_blocking(timeout, &mut cond) {
        Ok(())
    } else {
        Err(StartError(format!(
            "timed out after {timeout:?} waiting for {what}"
        )))
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    primary: bool,
    master_id: String,
    failed: bool,
}

fn cluster_nodes(port: u16) -> Vec<NodeLine> {
    cli_port(port, &["CLUSTER", "NODES"])
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 8 {
                return None;
            }
            // "127.0.0.1:7000@17000" (the bus port after '@')
            let addr = f[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            Some(NodeLine {
                id: f[0].to_string(),
                port,
                primary: f[2].contains("master"),
                master_id: f[3].to_string(),
                failed: f[2].contains("fail"),
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts 3 primaries with 1 replica each and waits until the cluster
    /// is ok everywhere (a few seconds).
    pub fn start() -> Result<Self, StartError> {
        Self::start_nodes(None)
    }

    /// Like [`start`](Self::start), with TLS too: every node also listens
    /// on a TLS port with one shared self-signed certificate for
    /// `127.0.0.1` ([`ca_file`](Self::ca_file)), the cluster bus and
    /// replication run over TLS, and [`tls_url`](Self::tls_url) is the
    /// `rediss+cluster://` URL. (Redis answers `CLUSTER SLOTS` with TLS
    /// ports to TLS clients and plain ports to plain ones, so the helpers
    /// here keep using the plain ports.)
    pub fn start_tls() -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("streamkeeper-cluster-tls-")
            .tempdir()
            .map_err(|e| StartError(format!("cannot create a temp dir: {e}")))?;
        crate::make_certificate(dir.path())?;
        let ports = (0..6)
            .map(|_| crate::free_port())
            .collect::<Result<Vec<_>, _>>()?;
        Self::start_nodes(Some(ClusterTls { dir, ports }))
    }

    fn start_nodes(tls: Option<ClusterTls>) -> Result<Self, StartError> {
        let mut nodes = Vec::new();
        for i in 0..6 {
            let tls_args: Vec<String> = match &tls {
                Some(t) => {
                    let cert = t.dir.path().join("server.crt").display().to_string();
                    let key = t.dir.path().join("server.key").display().to_string();
                    [
                        "--tls-port",
                        &t.ports[i].to_string(),
                        "--tls-cert-file",
                        &cert,
                        "--tls-key-file",
                        &key,
                        "--tls-ca-cert-file",
                        &cert,
                        "--tls-auth-clients",
                        "no",
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                    ]
                    .map(String::from)
                    .to_vec()
                }
                None => Vec::new(),
            };
            nodes.push(RedisServer::start_with(ServerConfig {
                tcp_port: Some(0),
                extra_args: tls_args
                    .into_iter()
                    .chain([
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-node-timeout".into(),
                        NODE_TIMEOUT.as_millis().to_string(),
                        "--cluster-replica-validity-factor".into(),
                        "0".into(),
                        "--appendonly".into(),
                        "no".into(),
                    ])
                    .collect(),
                ..ServerConfig::default()
            })?);
        }
        let cluster = RedisCluster { nodes, tls };
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .map_err(|e| {
                StartError(format!(
                    "cannot run redis-cli: {e}; install: {INSTALL_HINT}"
                ))
            })?;
        if !out.status.success() {
            return Err(StartError(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        cluster.wait_ok(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter_map(RedisServer::tcp_port)
            .collect()
    }

    /// Waits until every running node says `cluster_state:ok`, knows 3
    /// primaries that are not failed, and every replica's link is up.
    pub fn wait_ok(&self, timeout: Duration) -> Result<(), StartError> {
        let running: Vec<u16> = self
            .nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter_map(RedisServer::tcp_port)
            .collect();
        wait("the cluster to be ok on every node", timeout, || {
            running.iter().all(|&p| {
                let info = cli_port(p, &["CLUSTER", "INFO"]);
                let nodes = cluster_nodes(p);
                let primaries = nodes.iter().filter(|n| n.primary && !n.failed).count();
                let repl = cli_port(p, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && primaries == 3
                    && (repl.contains("role:master") || repl.contains("master_link_status:up"))
            })
        })
    }

    /// `redis+cluster://127.0.0.1:p1,…` (every node as a seed).
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// `rediss+cluster://127.0.0.1:t1,…` (every node's TLS port) for a
    /// cluster from [`start_tls`](Self::start_tls); add `/#insecure` or
    /// trust [`ca_file`](Self::ca_file) (`SSL_CERT_FILE`).
    pub fn tls_url(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        let addrs: Vec<String> = tls.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        Some(format!("rediss+cluster://{}", addrs.join(",")))
    }

    /// The certificate every node of a TLS cluster presents (its own CA).
    pub fn ca_file(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(|t| t.dir.path().join("server.crt"))
    }

    /// A node still running, to ask about the cluster.
    fn any_port(&self) -> Result<u16, StartError> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .find_map(RedisServer::tcp_port)
            .ok_or_else(|| StartError("no cluster node is running".into()))
    }

    /// Ports of the current primaries (as the cluster sees them now).
    pub fn primary_ports(&self) -> Result<Vec<u16>, StartError> {
        let mut ports: Vec<u16> = cluster_nodes(self.any_port()?)
            .into_iter()
            .filter(|n| n.primary && !n.failed)
            .map(|n| n.port)
            .collect();
        ports.sort_unstable();
        Ok(ports)
    }

    /// The port of the primary serving `key`'s hash slot.
    pub fn primary_for_key(&self, key: &str) -> Result<u16, StartError> {
        let port = self.any_port()?;
        let slot = cli_port(port, &["CLUSTER", "KEYSLOT", key]);
        let slot: u16 = slot
            .trim()
            .parse()
            .map_err(|_| StartError(format!("CLUSTER KEYSLOT {key}: {slot:?}")))?;
        // CLUSTER NODES: the slot ranges are the 9th and later fields.
        for line in cli_port(port, &["CLUSTER", "NODES"]).lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let owns = f[8..].iter().any(|r| {
                let mut ends = r.split('-');
                let lo = ends.next().and_then(|s| s.parse::<u16>().ok());
                let hi = ends.next().and_then(|s| s.parse::<u16>().ok()).or(lo);
                matches!((lo, hi), (Some(lo), Some(hi)) if lo <= slot && slot <= hi)
            });
            if owns {
                let addr = f[1].split('@').next().unwrap_or("");
                if let Some(p) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return Ok(p);
                }
            }
        }
        Err(StartError(format!("no primary owns slot {slot}")))
    }

    /// The replica of the primary on `port`.
    fn replica_of(&self, port: u16) -> Result<u16, StartError> {
        let nodes = cluster_nodes(self.any_port()?);
        let primary = nodes
            .iter()
            .find(|n| n.port == port && n.primary)
            .ok_or_else(|| StartError(format!("127.0.0.1:{port} is not a primary")))?;
        nodes
            .iter()
            .find(|n| !n.primary && n.master_id == primary.id && !n.failed)
            .map(|n| n.port)
            .ok_or_else(|| StartError(format!("the primary on {port} has no replica")))
    }

    /// `CLUSTER FAILOVER` on the replica of the primary on `port`; waits
    /// until the replica is primary, the old one its replica, and the
    /// cluster ok. Returns the new primary's port.
    pub fn failover(&self, port: u16) -> Result<u16, StartError> {
        let replica = self.replica_of(port)?;
        let out = cli_port(replica, &["CLUSTER", "FAILOVER"]);
        if !out.trim().eq_ignore_ascii_case("OK") {
            return Err(StartError(format!("CLUSTER FAILOVER on {replica}: {out}")));
        }
        wait(
            "the replica to become primary",
            Duration::from_secs(30),
            || {
                cli_port(replica, &["ROLE"]).starts_with("master")
                    && cli_port(port, &["ROLE"]).starts_with("slave")
            },
        )?;
        self.wait_ok(Duration::from_secs(30))?;
        Ok(replica)
    }

    /// SIGKILLs the primary on `port` and waits until its replica took
    /// over (after [`NODE_TIMEOUT`]); returns the new primary's port.
    /// Then the killed node restarts (it rejoins as the new primary's
    /// replica, with no data) and this waits until the cluster is ok with
    /// every replica in sync again — so `WAIT 1` can succeed again.
    pub fn kill_primary(&mut self, port: u16) -> Result<u16, StartError> {
        let replica = self.replica_of(port)?;
        let i = self
            .nodes
            .iter()
            .position(|n| n.tcp_port() == Some(port))
            .ok_or_else(|| StartError(format!("no node on {port}")))?;
        self.nodes[i].kill();
        wait(
            "the replica of the killed primary to take over",
            Duration::from_secs(30),
            || cli_port(replica, &["ROLE"]).starts_with("master"),
        )?;
        self.nodes[i].restart()?;
        wait(
            "the killed primary to rejoin as a replica",
            Duration::from_secs(30),
            || cli_port(port, &["INFO", "replication"]).contains("master_link_status:up"),
        )?;
        self.wait_ok(Duration::from_secs(30))?;
        Ok(replica)
    }

    /// Moves the hash slot of `key` to the primary on `to` by hand, the
    /// way `redis-cli --cluster reshard` does, but slowly: `IMPORTING` on
    /// `to`, `MIGRATING` on the owner, then one `MIGRATE` per key with
    /// `pause` before each, and `pause` again before `SETSLOT … NODE` on
    /// every primary. While it runs, the slot's keys are split between
    /// the two nodes: clients get `ASK`, `TRYAGAIN` and, at the end,
    /// `MOVED`. Returns the keys moved.
    pub fn migrate_slowly(&self, key: &str, to: u16, pause: Duration) -> Result<usize, StartError> {
        let from = self.primary_for_key(key)?;
        if from == to {
            return Err(StartError(format!("{key} is on {to} already")));
        }
        let slot = cli_port(from, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let id = |port| cli_port(port, &["CLUSTER", "MYID"]).trim().to_string();
        let (from_id, to_id) = (id(from), id(to));
        let ok = |port, args: &[&str]| {
            let out = cli_port(port, args);
            if out.trim().eq_ignore_ascii_case("OK") || out.trim() == "NOKEY" {
                Ok(())
            } else {
                Err(StartError(format!("{args:?} on {port}: {out}")))
            }
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id])?;
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id])?;
        let mut moved = 0;
        loop {
            let keys = cli_port(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "1"]);
            let Some(k) = keys.lines().next().filter(|k| !k.is_empty()) else {
                break;
            };
            std::thread::sleep(pause);
            let port = to.to_string();
            ok(
                from,
                &["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", k],
            )?;
            moved += 1;
        }
        std::thread::sleep(pause);
        ok(to, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
        ok(from, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
        for p in self.primary_ports()? {
            if p != to && p != from {
                ok(p, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id])?;
            }
        }
        self.wait_ok(Duration::from_secs(30))?;
        Ok(moved)
    }

    /// SIGKILLs the node on `port` and returns at once: nothing waits for
    /// a replica to take over and the node stays down (until the cluster is
    /// dropped), as after a crash nobody has noticed yet.
    pub fn kill_node(&mut self, port: u16) -> Result<(), StartError> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.tcp_port() == Some(port))
            .ok_or_else(|| StartError(format!("no node on {port}")))?;
        node.kill();
        Ok(())
    }

    /// Runs `redis-cli` against the node on `port`; returns its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli_port(port, args)
    }
}
