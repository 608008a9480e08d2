//! SIGINT/SIGTERM handling: cancel a token so work stops cleanly, and
//! remember that it happened (exit code 130).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Set once a signal arrived.
#[derive(Clone, Default)]
pub struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    /// Whether SIGINT or SIGTERM arrived.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn cancel_on_signal(token: CancellationToken) -> Interrupted {
    let flag = Interrupted::default();
    let set = flag.clone();
    tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = token.cancelled() => return,
        }
        set.0.store(true, Ordering::SeqCst);
        tracing::info!("interrupted: stopping cleanly");
        token.cancel();
    });
    flag
}
