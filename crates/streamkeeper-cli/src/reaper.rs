//! The reaper: every `--pipe` worker and `--exec` command runs under one,
//! so that no descendant outlives its consumer.
//!
//! A process group is not enough: a worker's helper that calls `setsid`
//! (Python's `start_new_session=True`, a daemonizing tool) leaves the
//! group, and a group kill misses it. The reaper is this binary started as
//! `streamkeeper __reap CMD`: it makes itself a *child subreaper*
//! (`prctl(PR_SET_CHILD_SUBREAPER)`), so every orphaned descendant of
//! `sh -c CMD` is re-parented to it instead of to init, whatever session
//! it moved to. It then waits, and kills its whole tree (every process
//! whose parent chain leads to it, found in `/proc`) when
//!
//! - `CMD` ends: it exits with `CMD`'s status (128 + signal when killed),
//!   after killing what `CMD` left behind;
//! - it gets SIGTERM, SIGINT or SIGHUP ([`terminate`]: how the consumer
//!   ends a worker or a timed-out command);
//! - its parent, the consumer, is gone (checked every 100 ms: also after a
//!   SIGKILL of the consumer, which no signal reports).
//!
//! The reaper gives its stdin and stdout to `CMD` and keeps neither open,
//! so the worker's pipes close exactly when the worker's do.

use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal, WaitOptions};

/// The hidden first argument that runs this binary as a reaper.
pub const ARG: &str = "__reap";

/// How often the reaper checks that its consumer is still there.
const PARENT_CHECK: Duration = Duration::from_millis(100);

/// `sh -c CMD` under a reaper, in a process group of its own (a Ctrl-C on
/// the terminal reaches the consumer only, which stops feeding and waits
/// for answers).
pub fn command(cmd: &str) -> tokio::process::Command {
    let exe = std::env::current_exe().unwrap_or_else(|_| "streamkeeper".into());
    let mut c = tokio::process::Command::new(exe);
    c.arg(ARG).arg(cmd).process_group(0);
    c
}

/// Asks the reaper `pid` to kill its tree and exit (SIGTERM).
pub fn terminate(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
}

/// Runs the reaper for `cmd`; returns the exit code for this process.
pub fn run(cmd: &OsStr) -> u8 {
    let parent = rustix::process::getppid();
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        eprintln!(
            "streamkeeper: warning: cannot become a child subreaper ({e}); a descendant that leaves its session may outlive the consumer"
        );
    }
    // SIGTERM/SIGINT/SIGHUP set `told`; they and SIGCHLD wake the wait.
    let told = Arc::new(AtomicBool::new(false));
    let wake = match wake_on_signals(&told) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("streamkeeper: error: cannot set up the reaper's signals: {e}");
            return 127;
        }
    };
    let child = match std::process::Command::new("sh").arg("-c").arg(cmd).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamkeeper: error: cannot run sh: {e}");
            return 127;
        }
    };
    let child = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    let _ = let_go_of_stdio();
    let mut status = None;
    let mut buf = [0u8; 64];
    loop {
        // A signal's byte, or the parent check's timeout.
        let _ = (&wake).read(&mut buf);
        reap(child, &mut status);
        if let Some(code) = status {
            kill_tree();
            return code;
        }
        if told.load(Ordering::SeqCst) || rustix::process::getppid() != parent {
            kill_tree();
            return 143;
        }
    }
}

/// A socket that gets a byte on SIGCHLD, SIGTERM, SIGINT and SIGHUP (the
/// last three also set `told`), read with the parent check's timeout.
fn wake_on_signals(told: &Arc<AtomicBool>) -> std::io::Result<UnixStream> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    let (read, write) = UnixStream::pair()?;
    write.set_nonblocking(true)?;
    read.set_read_timeout(Some(PARENT_CHECK))?;
    for sig in [SIGTERM, SIGINT, SIGHUP] {
        signal_hook::flag::register(sig, told.clone())?;
    }
    for sig in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] {
        signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
    }
    Ok(read)
}

/// Points this process's stdin and stdout at /dev/null: the child has its
/// own copies, and the consumer must see EOF when the child closes them.
fn let_go_of_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    rustix::stdio::dup2_stdin(&null)?;
    rustix::stdio::dup2_stdout(&null)?;
    Ok(())
}

/// Collects every child that ended; records `child`'s exit code (128 +
/// the signal when it was killed, as sh reports it).
fn reap(child: Option<Pid>, status: &mut Option<u8>) {
    while let Ok(Some((pid, st))) = rustix::process::waitpid(None, WaitOptions::NOHANG) {
        if Some(pid) == child {
            *status = Some(match (st.exit_status(), st.terminating_signal()) {
                (Some(code), _) => u8::try_from(code).unwrap_or(1),
                (None, Some(sig)) => 128u8.saturating_add(u8::try_from(sig).unwrap_or(0)),
                _ => 1,
            });
        }
    }
}

/// SIGKILLs every descendant until none is left (re-parented orphans
/// included), collecting them.
fn kill_tree() {
    let me = rustix::process::getpid().as_raw_nonzero().get();
    let mut ignore = None;
    for _ in 0..500 {
        let tree = descendants(me);
        if tree.is_empty() {
            break;
        }
        for pid in tree.into_iter().filter_map(Pid::from_raw) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        std::thread::sleep(Duration::from_millis(5));
        reap(None, &mut ignore);
    }
    reap(None, &mut ignore);
}

/// Every process whose parent chain leads to `root`, from `/proc`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            // A zombie is dead already (its parent collects it).
            if let Some((state, ppid)) = stat_of(pid) {
                if state != 'Z' {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, ppid)| *ppid == p)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    tree.remove(0);
    tree
}

/// The state and parent pid in `/proc/PID/stat` (the fields after the
/// `(comm)`).
fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = after.next()?.chars().next()?;
    Some((state, after.next()?.parse().ok()?))
}

/// The parent pid in `/proc/PID/stat`.
#[cfg(test)]
fn parent_pid(pid: i32) -> Option<i32> {
    stat_of(pid).map(|(_, ppid)| ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_after_a_command_name_with_spaces_and_parens() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        assert_eq!(parent_pid(me), parent);
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(descendants(me).contains(&pid));
        let _ = child.kill();
        let _ = child.wait();
    }
}
