//! Real `redis-server` processes for tests, benches and the demo.
//!
//! [`RedisServer::start`] spawns a private server on a unix socket in a fresh
//! temp dir, waits until it answers `PING` and kills it on drop. Nothing here
//! ever connects to a server it did not start. Topologies with replicas,
//! Sentinel or Cluster get their own builders here as they land; they all
//! listen on loopback only.
//!
//! ```no_run
//! let server = streamkeeper_testkit::RedisServer::start().expect("redis-server");
//! println!("connect to {}", server.url());
//! ```

mod cluster;
mod eventually;
mod sentinel;

pub use cluster::{RedisCluster, NODE_TIMEOUT};
pub use eventually::{eventually, eventually_blocking};
pub use sentinel::{SentinelTopology, MASTER_NAME};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that points at a `redis-server` binary to use
/// instead of the one on `PATH`.
pub const SERVER_ENV: &str = "STREAMKEEPER_REDIS_SERVER";

/// The exact command that installs what the testkit needs on Debian/Ubuntu.
pub const INSTALL_HINT: &str =
    "sudo apt-get update && sudo apt-get install -y redis-server redis-tools";

/// Why a server could not be started.
#[derive(Debug)]
pub struct StartError(String);

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// How to start a server. `ServerConfig::default()` is a unix-socket-only
/// server without persistence.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    /// Also listen on `127.0.0.1:port` (0 = pick a free port).
    pub tcp_port: Option<u16>,
    /// Enable the append-only file (with `appendfsync always`).
    pub appendonly: bool,
    /// Extra `--name value` arguments passed to redis-server as is.
    pub extra_args: Vec<String>,
    /// Also listen with TLS on `127.0.0.1` (a self-signed certificate made
    /// with `openssl` in the temp dir); see [`RedisServer::tls_url`].
    pub tls: bool,
}

/// A running `redis-server` owned by this process; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    tcp_port: Option<u16>,
    tls_port: Option<u16>,
    config: ServerConfig,
}

impl RedisServer {
    /// Starts a server on a private unix socket (no TCP, no persistence).
    pub fn start() -> Result<Self, StartError> {
        Self::start_with(ServerConfig::default())
    }

    /// The URL to use: `url` when given, else a private server started now
    /// (returned so the caller keeps it alive). This is how `demo`, `bench`
    /// and the examples avoid touching a server nobody named.
    pub fn url_or_private(
        url: Option<String>,
    ) -> Result<(Option<RedisServer>, String), StartError> {
        match url {
            Some(url) => Ok((None, url)),
            None => {
                let server = RedisServer::start()?;
                let url = server.url();
                Ok((Some(server), url))
            }
        }
    }

    /// Starts a server with the given configuration.
    pub fn start_with(config: ServerConfig) -> Result<Self, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("streamkeeper-redis-")
            .tempdir()
            .map_err(|e| StartError(format!("cannot create a temp dir for redis-server: {e}")))?;
        let socket = dir.path().join("redis.sock");
        let tcp_port = match config.tcp_port {
            Some(0) => Some(free_port()?),
            other => other,
        };
        let tls_port = if config.tls {
            make_certificate(dir.path())?;
            Some(free_port()?)
        } else {
            None
        };
        let mut server = RedisServer {
            child: None,
            dir,
            socket,
            tcp_port,
            tls_port,
            config,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), StartError> {
        let binary = server_binary()?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--unixsocket")
            .arg(&self.socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--save")
            .arg("")
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .arg("--daemonize")
            .arg("no");
        match self.tcp_port {
            Some(port) => cmd
                .arg("--port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1"),
            None => cmd.arg("--port").arg("0"),
        };
        if let Some(port) = self.tls_port {
            let d = self.dir.path();
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("server.crt"))
                .args(["--tls-auth-clients", "no"]);
        }
        if self.config.appendonly {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        }
        cmd.args(&self.config.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            StartError(format!(
                "cannot run {}: {e}; install it with: {INSTALL_HINT}",
                binary.display()
            ))
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(10))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        loop {
            if ping(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(self.dir.path().join("redis.log"))
                        .unwrap_or_default();
                    return Err(StartError(format!(
                        "redis-server exited with {status} before answering PING; its log:\n{log}"
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(StartError(format!(
                    "redis-server did not answer PING on {} within {timeout:?}",
                    self.socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The URL that streamkeeper (and redis-rs) use to connect:
    /// `redis+unix:///…/redis.sock`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The loopback TCP URL, when the server was started with a TCP port.
    pub fn tcp_url(&self) -> Option<String> {
        self.tcp_port.map(|p| format!("redis://127.0.0.1:{p}"))
    }

    /// `rediss://127.0.0.1:<port>/#insecure` when started with `tls`
    /// (`#insecure`: the test certificate is self-signed).
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("rediss://127.0.0.1:{p}/#insecure"))
    }

    /// The loopback TCP port, when the server was started with one.
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The unix socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Arguments for `redis-cli` to talk to this server (`-s <socket>`).
    pub fn cli_args(&self) -> Vec<String> {
        vec!["-s".into(), self.socket.display().to_string()]
    }

    /// Runs `redis-cli` against this server and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String, StartError> {
        let out = Command::new("redis-cli")
            .args(self.cli_args())
            .args(args)
            .output()
            .map_err(|e| {
                StartError(format!(
                    "cannot run redis-cli: {e}; install: {INSTALL_HINT}"
                ))
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Kills the server with SIGKILL (no shutdown save) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again after [`kill`](Self::kill), on the same
    /// socket, port and data directory.
    pub fn restart(&mut self) -> Result<(), StartError> {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        self.spawn()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds the `redis-server` binary: `$STREAMKEEPER_REDIS_SERVER`, else `PATH`.
pub fn server_binary() -> Result<PathBuf, StartError> {
    if let Some(path) = std::env::var_os(SERVER_ENV) {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("redis-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    for fixed in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if Path::new(fixed).is_file() {
            return Ok(PathBuf::from(fixed));
        }
    }
    Err(StartError(format!(
        "redis-server not found on PATH (or set {SERVER_ENV}); install it with: {INSTALL_HINT}"
    )))
}

/// A self-signed certificate for 127.0.0.1 (`server.crt`, `server.key`).
/// A self-signed certificate for `127.0.0.1` (`server.crt`, `server.key`
/// in `dir`), its own CA: clients that trust it (`SSL_CERT_FILE`) verify
/// the server without `#insecure`.
pub(crate) fn make_certificate(dir: &Path) -> Result<(), StartError> {
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("server.key"))
        .arg("-out")
        .arg(dir.join("server.crt"))
        .output()
        .map_err(|e| {
            StartError(format!(
                "cannot run openssl to make a test certificate: {e}; install openssl"
            ))
        })?;
    if !out.status.success() {
        return Err(StartError(format!(
            "openssl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Asks the OS for a free loopback port.
pub fn free_port() -> Result<u16, StartError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| StartError(format!("cannot find a free loopback port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| StartError(format!("cannot find a free loopback port: {e}")))
}

fn ping(socket: &Path) -> std::io::Result<()> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        // LOADING and friends: not ready yet.
        Err(std::io::Error::other("not ready"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_starts_fails_over_and_survives_a_killed_primary() {
        let mut cluster = RedisCluster::start().expect("cluster");
        let primaries = cluster.primary_ports().expect("primaries");
        assert_eq!(primaries.len(), 3);
        let p = cluster.primary_for_key("k").expect("owner");
        assert!(primaries.contains(&p));
        let q = cluster.failover(p).expect("failover");
        assert_ne!(p, q);
        assert_eq!(cluster.primary_for_key("k").expect("owner"), q);
        let r = cluster.kill_primary(q).expect("kill");
        assert_eq!(cluster.primary_for_key("k").expect("owner"), r);
        assert!(
            cluster.cli(q, &["ROLE"]).starts_with("slave"),
            "rejoined as a replica"
        );
        assert!(cluster.url().starts_with("redis+cluster://127.0.0.1:"));
    }

    #[test]
    fn server_answers_and_dies_on_drop() {
        let server = RedisServer::start().expect("start redis-server");
        assert_eq!(server.cli(&["PING"]).expect("redis-cli").trim(), "PONG");
        let socket = server.socket().to_path_buf();
        drop(server);
        assert!(ping(&socket).is_err(), "server still answers after drop");
    }

    #[test]
    fn tcp_server_listens_on_loopback() {
        let server = RedisServer::start_with(ServerConfig {
            tcp_port: Some(0),
            ..Default::default()
        })
        .expect("start redis-server");
        let port = server.tcp_port().expect("port");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"PING\r\n").expect("write");
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"+PONG\r\n");
    }

    #[test]
    fn restart_after_kill_serves_again() {
        let mut server = RedisServer::start().expect("start");
        server.kill();
        assert!(ping(server.socket()).is_err());
        server.restart().expect("restart");
        assert!(ping(server.socket()).is_ok());
    }
}

#[cfg(test)]
mod sentinel_tests {
    use super::*;

    #[test]
    fn sentinel_failover_switches_the_master() {
        let topo = SentinelTopology::start().expect("topology");
        let before = topo.master_port().expect("master");
        let after = topo.failover().expect("failover");
        assert_ne!(before, after);
        assert_eq!(topo.master_port(), Some(after));
    }
}
