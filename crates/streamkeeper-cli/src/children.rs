//! Child processes that live and die with the consumer.
//!
//! Every `--exec` child joins one process group whose leader is a tiny
//! "anchor" shell reading a pipe from this process. When this process ends
//! for any reason (a clean exit, a panic, SIGKILL) the kernel closes the
//! pipe, the anchor's `read` returns and it kills the whole group — the
//! child shells *and* whatever they started — so no handler outlives its
//! consumer to work on an entry that is being handed to someone else.
//! No `unsafe` (`prctl(PR_SET_PDEATHSIG)` would only reach the direct
//! child, not the grandchildren of `sh -c`).

use std::process::Stdio;

use anyhow::Context;

/// The anchor of the children's process group.
pub struct ChildGroup {
    anchor: tokio::process::Child,
    pgid: i32,
    /// The write end of the anchor's pipe: closing it (drop, or this
    /// process ending) makes the anchor kill the group.
    _lifeline: Option<tokio::process::ChildStdin>,
}

impl ChildGroup {
    /// Starts the anchor; every command made by [`command`](Self::command)
    /// joins its group.
    pub fn start() -> anyhow::Result<Self> {
        let mut anchor = tokio::process::Command::new("sh")
            .arg("-c")
            // `read` returns at EOF, i.e. when the consumer is gone; then
            // the anchor kills its own process group (itself included).
            .arg("read _ ; kill -KILL 0")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .context("cannot start sh (needed for --exec)")?;
        let pid = anchor.id().context("the anchor shell exited at once")?;
        let lifeline = anchor.stdin.take();
        Ok(ChildGroup {
            pgid: i32::try_from(pid).context("pid out of range")?,
            anchor,
            _lifeline: lifeline,
        })
    }

    /// `sh -c CMD` in the group.
    pub fn command(&self, cmd: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(cmd).process_group(self.pgid);
        c
    }

    /// Kills every child still running (on a clean stop, after the
    /// handlers finished, this finds nothing but the anchor).
    pub fn kill_all(&mut self) {
        // SIGKILL to the group: `kill -KILL -PGID`.
        let _ = std::process::Command::new("kill")
            .arg("-KILL")
            .arg("--")
            .arg(format!("-{}", self.pgid))
            .stderr(Stdio::null())
            .status();
        let _ = self.anchor.start_kill();
    }
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        self.kill_all();
    }
}
