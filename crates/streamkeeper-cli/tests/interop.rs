//! Interop with other Redis clients: entries written by redis-cli
//! (non-UTF-8 values too) are consumed as JSON lines, and entries written
//! by `streamkeeper` (binary values, repeated fields) are read back by
//! redis-cli byte for byte. The real binary against a real redis-server.

use std::io::Write;
use std::process::{Command, Stdio};

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, sk, sk_stdin, stderr, stdout, xpending};

#[test]
fn entries_written_by_redis_cli_are_consumed_as_json_lines() {
    let server = RedisServer::start().expect("redis");
    let id1 = cli(&server, &["XADD", "s", "*", "user", "ann", "qty", "2"]);
    // A non-UTF-8 value: redis-cli's line parser unescapes \xff inside
    // double quotes, so feed the command on stdin.
    let id2 = {
        let mut child = Command::new("redis-cli")
            .args(server.cli_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-cli");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"XADD s2 * blob \"\\xff\\x00ok\"\n")
            .expect("write");
        String::from_utf8_lossy(&child.wait_with_output().expect("wait").stdout)
            .trim()
            .to_string()
    };
    let o = sk(
        &server,
        &[
            "consume", "s", "--group", "g", "--create", "--from", "-", "--count", "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{{\"stream\":\"s\",\"id\":\"{id1}\",\"fields\":{{\"user\":\"ann\",\"qty\":\"2\"}},\"attempt\":1}}\n"
        )
    );
    let o = sk(
        &server,
        &[
            "consume", "s2", "--group", "g", "--create", "--from", "-", "--count", "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{{\"stream\":\"s2\",\"id\":\"{id2}\",\"fields\":{{\"blob\":{{\"b64\":\"/wBvaw==\"}}}},\"attempt\":1}}\n")
    );
    assert_eq!(xpending(&server, "s", "g"), 0);
    assert_eq!(xpending(&server, "s2", "g"), 0);
}

#[test]
fn entries_written_by_streamkeeper_are_read_by_redis_cli() {
    let server = RedisServer::start().expect("redis");
    let o = sk(
        &server,
        &["produce", "s", "--field", "user=ann", "--field", "qty=2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert_eq!(
        cli(&server, &["XRANGE", "s", "-", "+"]),
        format!("{id}\nuser\nann\nqty\n2")
    );

    let o = sk_stdin(
        &server,
        &["produce", "b", "--json"],
        "{\"fields\":[[\"k\",{\"b64\":\"/wA=\"}],[\"k\",\"again\"]]}\n{\"plain\":\"object\"}\n"
            .as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let ids: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(ids.len(), 2);
    let raw = Command::new("redis-cli")
        .args(server.cli_args())
        .args(["--no-raw", "XRANGE", "b", "-", "+"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&raw.stdout);
    assert!(
        text.contains("\"\\xff\\x00\""),
        "binary value not stored byte for byte: {text}"
    );
    assert!(
        text.contains("\"again\"") && text.contains("\"plain\""),
        "{text}"
    );
}
