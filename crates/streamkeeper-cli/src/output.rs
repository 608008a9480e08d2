//! Printing for people and for scripts.
//!
//! `--json` output is one object per line with stable names; human output
//! is `ID  field=value …` with non-UTF-8 bytes, newlines and NULs escaped,
//! so one entry is one line. Every print returns the write error: a closed
//! stdout (`BrokenPipe`, e.g. `| head -1`) ends the command cleanly with
//! exit 0, as in ripgrep (see [`is_broken_pipe`]).

use std::io::Write;

use streamkeeper::Entry;

/// Whether an error is (caused by) writing to a closed stdout.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` panics when stdout is closed (`| head -1`): turn that one
/// panic into a quiet exit 0, as for every other write to a closed stdout;
/// any other panic is reported as usual.
pub fn exit_quietly_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Prints one JSON value as a line on stdout. For short, one-shot output:
/// a closed stdout ends the process at once with exit 0 (what SIGPIPE
/// does to a C tool); streaming output uses [`entry`] and
/// [`json_line_str`], which return the error so the command can stop.
pub fn json_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{v}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Bytes as text on one line: non-UTF-8 bytes and control characters
/// (newline, NUL, …) escaped as `\n`, `\x00`, `\xNN`.
pub fn escaped(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        Ok(s) => {
            let mut out = String::with_capacity(s.len() + 8);
            for c in s.chars() {
                if c.is_control() {
                    let mut buf = [0u8; 4];
                    out.extend(
                        c.encode_utf8(&mut buf)
                            .as_bytes()
                            .escape_ascii()
                            .map(char::from),
                    );
                } else {
                    out.push(c);
                }
            }
            out
        }
        Err(_) => b.escape_ascii().to_string(),
    }
}

/// An entry for people: `ID  k=v k=v`.
pub fn human_entry(e: &Entry) -> String {
    let mut line = e.id.to_string();
    line.push(' ');
    for (k, v) in &e.fields {
        line.push(' ');
        line.push_str(&escaped(k));
        line.push('=');
        line.push_str(&escaped(v));
    }
    line
}

/// Prints an entry as JSON (wire format) or for people.
pub fn entry(json: bool, stream: &str, e: &Entry) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", streamkeeper::wire::entry_to_line(stream, e))
    } else {
        writeln!(out, "{}", human_entry(e))
    }
}

/// Prints an entry of a merged read of a sharded stream, naming its shard:
/// as JSON the wire format with `"stream"` the shard's key (as `dump`
/// writes it); for people `{S:i}  ID  k=v …`.
pub fn shard_entry(json: bool, e: &streamkeeper::shard::ShardEntry) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(
            out,
            "{}",
            streamkeeper::wire::entry_to_line(e.shard.as_str(), &e.entry)
        )
    } else {
        writeln!(out, "{}  {}", e.shard, human_entry(&e.entry))
    }
}

/// Prints an already-encoded JSON line on stdout.
pub fn json_line_str(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
}

/// Cancels `stop` as soon as the reader of stdout goes away (`| head -1`
/// after its line), so a command that waits for new entries (`tail -f`,
/// `consume`) ends then instead of at its next write. Only when stdout is
/// a pipe or a socket; a thread waits in `poll(2)` for `POLLERR`/`POLLHUP`.
pub fn cancel_when_stdout_closes(stop: tokio_util::sync::CancellationToken) {
    let stdout = std::io::stdout();
    let piped = rustix::fs::fstat(&stdout).is_ok_and(|st| {
        let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
        matches!(
            kind,
            rustix::fs::FileType::Fifo | rustix::fs::FileType::Socket
        )
    });
    if !piped {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            use rustix::event::{poll, PollFd, PollFlags};
            let stdout = std::io::stdout();
            loop {
                // No events asked: poll still reports the reader's end.
                let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
                match poll(&mut fds, None) {
                    Ok(_) => {
                        let seen = fds[0].revents();
                        if seen.intersects(PollFlags::ERR | PollFlags::HUP) {
                            tracing::debug!("stdout closed by its reader: stopping");
                            stop.cancel();
                        }
                        // Anything else (POLLNVAL): nothing more to watch.
                        return;
                    }
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::debug!(error = %e, "cannot watch stdout");
    }
}

#[cfg(test)]
mod tests {
    use super::escaped;

    #[test]
    fn control_characters_and_bad_utf8_are_escaped_alike() {
        assert_eq!(escaped(b"plain"), "plain");
        assert_eq!(escaped("grüße".as_bytes()), "grüße");
        assert_eq!(escaped(b"a\nb\0c"), "a\\nb\\x00c");
        assert_eq!(escaped(b"a\xffb"), "a\\xffb");
        assert_eq!(escaped(b"a\xff\nb"), "a\\xff\\nb");
    }
}
