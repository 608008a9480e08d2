//! A Sentinel topology on loopback: one master, one replica, three
//! sentinels, and the ways a master goes away: [`SentinelTopology::failover`]
//! (manual), [`SentinelTopology::kill_master`] (SIGKILL, the replica takes
//! over after down-after) and [`SentinelTopology::freeze_master`] (SIGSTOP,
//! then SIGCONT: the deposed master comes back still believing it is one).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, server_binary, RedisServer, ServerConfig, StartError};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "sk-master";

/// A running `redis-sentinel` process; killed on drop.
#[derive(Debug)]
struct SentinelProc {
    child: Child,
    port: u16,
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Master + replica(s) + 3 sentinels, all on 127.0.0.1.
#[derive(Debug)]
pub struct SentinelTopology {
    /// The two data servers (which one is master changes with failovers).
    pub servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProc>,
    /// The sentinels' own password, if they require one.
    password: Option<String>,
    _dir: tempfile::TempDir,
}

fn cli_tcp(port: u16, args: &[&str]) -> String {
    cli_auth(port, None, args)
}

fn cli_auth(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(p) = password {
        c.args(["--no-auth-warning", "-a", p]);
    }
    c.args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<(), StartError> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return Err(StartError(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

impl SentinelTopology {
    /// Starts the topology (one replica) and waits until the sentinels know
    /// the master, the replica and each other, so a failover can happen.
    pub fn start() -> Result<Self, StartError> {
        Self::start_with_replicas(1)
    }

    /// Like [`start`](Self::start) with `replicas` replicas (at least 1):
    /// with two, a promoted replica still has one, so `WAIT 1` goes on
    /// confirming writes while a killed master is away.
    pub fn start_with_replicas(replicas: usize) -> Result<Self, StartError> {
        Self::start_inner(replicas, None)
    }

    /// One replica, and sentinels that require `password` of every client
    /// (and of each other: `sentinel sentinel-pass`).
    pub fn start_with_sentinel_password(password: &str) -> Result<Self, StartError> {
        Self::start_inner(1, Some(password))
    }

    fn start_inner(replicas: usize, password: Option<&str>) -> Result<Self, StartError> {
        let tcp = |extra: Vec<String>| ServerConfig {
            tcp_port: Some(0),
            appendonly: false,
            extra_args: extra,
            tls: false,
        };
        let master = RedisServer::start_with(tcp(vec![]))?;
        let master_port = master
            .tcp_port()
            .ok_or_else(|| StartError("master has no port".into()))?;
        let mut servers = vec![master];
        for _ in 0..replicas.max(1) {
            let replica = RedisServer::start_with(tcp(vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.to_string(),
            ]))?;
            let replica_port = replica
                .tcp_port()
                .ok_or_else(|| StartError("replica has no port".into()))?;
            wait("the replica to sync", Duration::from_secs(20), || {
                cli_tcp(replica_port, &["INFO", "replication"]).contains("master_link_status:up")
            })?;
            servers.push(replica);
        }

        let dir = tempfile::Builder::new()
            .prefix("streamkeeper-sentinel-")
            .tempdir()
            .map_err(|e| StartError(format!("temp dir: {e}")))?;
        let binary = server_binary()?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port()?;
            let conf: PathBuf = dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 2000\n\
                 sentinel failover-timeout {MASTER_NAME} 4000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
                dir = dir.path().display(),
                auth = password
                    .map(|p| format!("requirepass {p}\nsentinel sentinel-pass {p}\n"))
                    .unwrap_or_default()
            );
            std::fs::write(&conf, text).map_err(|e| StartError(format!("sentinel config: {e}")))?;
            let child = Command::new(&binary)
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| StartError(format!("cannot start redis-sentinel: {e}")))?;
            sentinels.push(SentinelProc { child, port });
        }
        let topo = SentinelTopology {
            servers,
            sentinels,
            password: password.map(str::to_string),
            _dir: dir,
        };
        topo.wait_ready(Duration::from_secs(30))?;
        Ok(topo)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<(), StartError> {
        for s in &self.sentinels {
            wait(
                "the sentinels to see the replica and each other",
                timeout,
                || {
                    let pw = self.password.as_deref();
                    let replicas = cli_auth(s.port, pw, &["SENTINEL", "replicas", MASTER_NAME]);
                    let peers = cli_auth(s.port, pw, &["SENTINEL", "sentinels", MASTER_NAME]);
                    let master = cli_auth(s.port, pw, &["SENTINEL", "master", MASTER_NAME]);
                    replicas.contains("slave")
                        && !replicas.contains("s_down")
                        && !replicas.contains("disconnected")
                        && peers.matches("name").count() >= 2
                        && !master.contains("failover_in_progress")
                },
            )?;
        }
        Ok(())
    }

    /// Waits until the sentinels agree again and the current master has
    /// a replica in sync (`state=online`).
    pub fn wait_settled(&self, timeout: Duration) -> Result<(), StartError> {
        self.wait_ready(timeout)?;
        wait("the master to have a replica in sync", timeout, || {
            self.master_port()
                .is_some_and(|p| cli_tcp(p, &["INFO", "replication"]).contains("state=online"))
        })
    }

    /// `redis+sentinel://127.0.0.1:p1,…/sk-master`.
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", addrs.join(","))
    }

    /// The port of the current master, as the sentinels report it.
    pub fn master_port(&self) -> Option<u16> {
        for s in &self.sentinels {
            let out = cli_auth(
                s.port,
                self.password.as_deref(),
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            );
            if let Some(port) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Some(port);
            }
        }
        None
    }

    /// The data server that is master now.
    pub fn master(&self) -> Option<&RedisServer> {
        let port = self.master_port()?;
        self.servers.iter().find(|s| s.tcp_port() == Some(port))
    }

    /// Forces a failover and waits until the replica is master, the old
    /// master is its replica and in sync, and the sentinels agree.
    /// Returns the new master's port.
    pub fn failover(&self) -> Result<u16, StartError> {
        let old = self
            .master_port()
            .ok_or_else(|| StartError("no master known".into()))?;
        self.request_failover()?;
        let mut new = 0;
        wait(
            "the sentinels to name a new master",
            Duration::from_secs(30),
            || {
                new = self.master_port().unwrap_or(old);
                new != old && cli_tcp(new, &["ROLE"]).starts_with("master")
            },
        )?;
        wait(
            "the old master to replicate the new one",
            Duration::from_secs(30),
            || {
                let info = cli_tcp(old, &["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            },
        )?;
        self.wait_ready(Duration::from_secs(30))?;
        Ok(new)
    }

    /// Forces a failover and returns as soon as the sentinels name the
    /// promoted replica master: the old master may not replicate the new
    /// one yet (Sentinel reconfigures it up to ~10 s later). Two of these
    /// in a row are the "second failover before the first settled" case.
    pub fn failover_unsettled(&self) -> Result<u16, StartError> {
        let old = self
            .master_port()
            .ok_or_else(|| StartError("no master known".into()))?;
        self.request_failover()?;
        self.wait_promoted(old)
    }

    /// `SENTINEL FAILOVER` on the first sentinel, retried for up to 30 s
    /// while a sentinel refuses (a previous failover is still settling).
    fn request_failover(&self) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = cli_auth(
                self.sentinels[0].port,
                self.password.as_deref(),
                &["SENTINEL", "FAILOVER", MASTER_NAME],
            );
            if out == "OK" {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StartError(format!("SENTINEL FAILOVER refused: {out}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn master_index(&self) -> Result<usize, StartError> {
        let port = self
            .master_port()
            .ok_or_else(|| StartError("no master known".into()))?;
        self.servers
            .iter()
            .position(|s| s.tcp_port() == Some(port))
            .ok_or_else(|| StartError(format!("master port {port} is not one of ours")))
    }

    fn wait_promoted(&self, old: u16) -> Result<u16, StartError> {
        let mut new = 0;
        wait(
            "the sentinels to promote the replica",
            Duration::from_secs(30),
            || {
                new = self.master_port().unwrap_or(old);
                new != old && cli_tcp(new, &["ROLE"]).starts_with("master")
            },
        )?;
        Ok(new)
    }

    /// SIGKILLs the master, waits until the sentinels promote the replica,
    /// then restarts the killed server (it comes back as a master with no
    /// data, and the sentinels turn it into a replica of the new one).
    /// Returns the new master's port.
    pub fn kill_master(&mut self) -> Result<u16, StartError> {
        let i = self.master_index()?;
        let old = self.servers[i]
            .tcp_port()
            .ok_or_else(|| StartError("master has no port".into()))?;
        self.servers[i].kill();
        let new = self.wait_promoted(old)?;
        self.servers[i].restart()?;
        wait(
            "the restarted server to replicate the new master",
            Duration::from_secs(30),
            || {
                let info = cli_tcp(old, &["INFO", "replication"]);
                info.contains("role:slave") && info.contains("master_link_status:up")
            },
        )?;
        self.wait_ready(Duration::from_secs(30))?;
        Ok(new)
    }

    /// Freezes the master with SIGSTOP for `how_long` (make it longer than
    /// down-after, 2 s, for a failover), then resumes it with SIGCONT: for
    /// a moment it is a second master until the sentinels demote it.
    /// Returns the port of the master the sentinels name afterwards.
    pub fn freeze_master(&self, how_long: Duration) -> Result<u16, StartError> {
        let i = self.master_index()?;
        let pid = self.servers[i]
            .pid()
            .ok_or_else(|| StartError("master not running".into()))?
            .to_string();
        let signal = |sig: &str| {
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .map_err(|e| StartError(format!("kill {sig}: {e}")))
        };
        signal("-STOP")?;
        std::thread::sleep(how_long);
        signal("-CONT")?;
        self.wait_ready(Duration::from_secs(30))?;
        self.master_port()
            .ok_or_else(|| StartError("no master known".into()))
    }
}
