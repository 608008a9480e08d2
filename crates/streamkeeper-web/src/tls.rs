//! HTTPS for `serve --tls-cert FILE --tls-key FILE`: [`load`] reads the PEM
//! files into a rustls configuration, and [`TlsListener`] is an
//! [`axum::serve::Listener`] that accepts TCP connections and runs their
//! TLS handshakes concurrently (each within [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_HANDSHAKES`] at once), so a client that connects and stays silent
//! stalls nobody. A failed handshake is logged at debug and skipped.
//!
//! Serve with connect info through `tap_io`, which gives `SocketAddr`
//! connect info to any listener:
//!
//! ```no_run
//! # async fn run(router: axum::Router) -> std::io::Result<()> {
//! use axum::serve::ListenerExt;
//! let config = streamkeeper_web::tls::load("cert.pem".as_ref(), "key.pem".as_ref())
//!     .map_err(std::io::Error::other)?;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:9187").await?;
//! let listener = streamkeeper_web::tls::TlsListener::new(tcp, config)?;
//! axum::serve(
//!     listener.tap_io(|_| {}),
//!     router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await
//! # }
//! ```

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The longest a client may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most TLS handshakes in progress at once; further connections wait
/// in the kernel's accept queue.
pub const MAX_HANDSHAKES: usize = 256;

/// A certificate or key file that cannot be used: the message names the
/// file.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The server configuration of a PEM certificate chain and its private key
/// (PKCS#8, PKCS#1 or SEC1), offering HTTP/1.1 by ALPN. Uses the ring
/// crypto provider.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let file_error = |what: &str, path: &Path, e: rustls_pki_types::pem::Error| {
        TlsError(match e {
            rustls_pki_types::pem::Error::Io(e) => {
                format!("cannot read the TLS {what} {}: {e}", path.display())
            }
            rustls_pki_types::pem::Error::NoItemsFound => {
                format!("no PEM {what} in {}", path.display())
            }
            e => format!("bad PEM in the TLS {what} {}: {e}", path.display()),
        })
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error("certificate", cert, e))?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "no PEM certificate in {}",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("key", key, e))?;
    // ring, not aws-lc (no C toolchain for it); rustls 0.23.48 deprecates
    // it for lacking post-quantum key exchange, which this page can do
    // without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            TlsError(format!(
                "the TLS certificate {} and key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener that hands out TLS connections whose handshake is done
/// (see the module documentation). Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp` (must be called within a tokio
    /// runtime: it starts the accepting task).
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it does not, but for the type):
            // no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Accepts TCP connections and runs each handshake in its own task.
async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    while !ready.is_closed() {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, addr) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Err(e)) => tracing::debug!(client = %addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(
                    client = %addr,
                    "TLS handshake not done within {HANDSHAKE_TIMEOUT:?}"
                ),
            }
        });
    }
}

/// As axum's own listener: a connection that went away is skipped, any
/// other error (e.g. too many open files) logged and waited out.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
