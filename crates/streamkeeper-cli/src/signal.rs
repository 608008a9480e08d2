//! SIGINT/SIGTERM handling: cancel a token so work stops cleanly, and
//! remember that it happened (exit code 130).
//!
//! A plain flag handler is registered by [`install_early`], the very first
//! thing in `main` (before the async runtime exists); the async handlers
//! of [`install`] follow once the runtime runs and take over what the flag
//! saw. So a signal in the first milliseconds is recorded too instead of
//! killing the process (only one that arrives before `main` runs at all —
//! while the OS loads the binary — still kills it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Set once a signal arrived.
static ARRIVED: AtomicBool = AtomicBool::new(false);

/// Set once a command took over signal handling ([`cancel_on_signal`]).
static HANDLED: AtomicBool = AtomicBool::new(false);

/// Cancelled once a signal arrived.
static TOKEN: OnceLock<CancellationToken> = OnceLock::new();

fn token() -> &'static CancellationToken {
    TOKEN.get_or_init(CancellationToken::new)
}

/// Set by the flag handlers of [`install_early`].
static EARLY: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Registers flag-setting SIGINT/SIGTERM handlers: call first thing in
/// `main`, before the runtime is built. Fails only if the OS refuses.
pub fn install_early() -> std::io::Result<()> {
    let flag = EARLY.get_or_init(|| Arc::new(AtomicBool::new(false)));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    Ok(())
}

/// Installs the SIGINT/SIGTERM handlers; call inside the runtime, once,
/// before anything else. A signal [`install_early`]'s handlers saw before
/// counts as arrived. Fails only if the OS refuses the handlers.
pub fn install() -> std::io::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let early = EARLY.get().is_some_and(|f| f.load(Ordering::SeqCst));
    tokio::spawn(async move {
        if !early {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        ARRIVED.store(true, Ordering::SeqCst);
        tracing::info!("interrupted: stopping cleanly");
        token().cancel();
    });
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived at any time since [`install`].
pub fn arrived() -> bool {
    ARRIVED.load(Ordering::SeqCst)
}

/// Set once a signal arrived.
#[derive(Clone, Default)]
pub struct Interrupted;

impl Interrupted {
    /// Whether SIGINT or SIGTERM arrived.
    pub fn get(&self) -> bool {
        arrived()
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM (also one that arrived
/// before this call).
pub fn cancel_on_signal(to_cancel: CancellationToken) -> Interrupted {
    HANDLED.store(true, Ordering::SeqCst);
    let global = token().clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = global.cancelled() => to_cancel.cancel(),
            _ = to_cancel.cancelled() => {}
        }
    });
    Interrupted
}

/// Completes when a signal arrived and no command stops cleanly on it
/// itself: `main` then ends the command at once (exit 130).
pub async fn unhandled() {
    token().cancelled().await;
    if HANDLED.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
}
