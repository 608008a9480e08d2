//! Where the process's own lines go under `--log-format`: with `json`,
//! every line on stderr is one JSON object, including what the process
//! announces (`serve`'s address) and what `--exec` commands and `--pipe`
//! workers write to their stderr (one event per line, field `output`).

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// Notes the format chosen (set once, before the command runs).
pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// Whether stderr carries JSON objects only.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line for the operator: plain text, or an info event under JSON.
pub fn announce(line: &str) {
    if json() {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// One line a handler (`--exec` command, `--pipe` worker) wrote to its
/// stderr: copied as it is, or an info event with the line in `output`.
pub fn handler_line(line: &[u8], source: &'static str) {
    if json() {
        tracing::info!(source, output = %String::from_utf8_lossy(line), "handler stderr");
    } else {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line);
        let _ = err.write_all(b"\n");
    }
}

/// Copies a `--pipe` worker's stderr line by line, until it closes.
pub async fn forward(from: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(from).split(b'\n');
    while let Ok(Some(line)) = lines.next_segment().await {
        handler_line(&line, "pipe worker");
    }
}
