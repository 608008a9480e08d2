//! Waiting in tests: poll a condition until it holds or a deadline passes,
//! never a bare `sleep` for correctness.
//!
//! One polling loop (a 20 ms step, one last check after the deadline) with
//! two doors: [`eventually`] for async tests, whose condition may await, and
//! [`eventually_blocking`] for sync tests and the testkit itself.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long to wait between two checks.
const STEP: Duration = Duration::from_millis(20);

/// Polls the async `cond` every 20 ms until it holds or `timeout` passes;
/// returns whether it held. Sleeps with `tokio::time::sleep`, so other
/// tasks of the test keep running meanwhile.
///
/// ```no_run
/// # async fn f(ready: impl Fn() -> bool) {
/// use std::time::Duration;
/// assert!(streamkeeper_testkit::eventually(Duration::from_secs(5), || async { ready() }).await);
/// # }
/// ```
pub async fn eventually<F, Fut>(timeout: Duration, cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    poll_until(timeout, cond, tokio::time::sleep).await
}

/// [`eventually`] for code without an async runtime: the same loop, with
/// the thread sleeping between checks.
pub fn eventually_blocking(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let sleep = |step| {
        std::thread::sleep(step);
        std::future::ready(())
    };
    futures::executor::block_on(poll_until(timeout, || std::future::ready(cond()), sleep))
}

/// The loop behind both doors.
async fn poll_until<F, Fut, S, SFut>(timeout: Duration, mut cond: F, mut sleep: S) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
    S: FnMut(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        sleep(STEP).await;
    }
}
