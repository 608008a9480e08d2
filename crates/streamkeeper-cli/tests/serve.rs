//! `streamkeeper serve` as a user runs it: a non-loopback `--listen`
//! without a token is refused before anything listens; with a token (flag
//! or `STREAMKEEPER_TOKEN`) every request needs it; a signal ends it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use streamkeeper_testkit::{eventually_blocking, free_port, RedisServer};

/// A raw HTTP/1.1 GET; returns the status code (0 when nothing answers).
fn status(port: u16, path: &str, bearer: Option<&str>) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn serve_beyond_loopback_without_a_token_is_refused() {
    let server = RedisServer::start().expect("redis");
    let port = free_port().expect("port");
    let listen = format!("0.0.0.0:{port}");
    let out = command(&server, &["serve", "--listen", &listen])
        .env_remove("STREAMKEEPER_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--token"), "{err}");
    assert_eq!(status(port, "/healthz", None), 0, "nothing listens");
}

#[test]
fn serve_with_a_token_requires_it_and_ends_on_a_signal() {
    let server = RedisServer::start().expect("redis");
    cli(&server, &["XADD", "orders", "*", "k", "v"]);
    let port = free_port().expect("port");
    let listen = format!("127.0.0.1:{port}");
    let mut child = command(
        &server,
        &[
            "serve",
            "--listen",
            &listen,
            "--streams",
            "orders",
            "missing",
        ],
    )
    .env("STREAMKEEPER_TOKEN", "t0ken")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    assert!(
        eventually_blocking(Duration::from_secs(10), || status(
            port,
            "/healthz",
            Some("t0ken")
        ) == 200),
        "serve did not come up"
    );
    assert_eq!(status(port, "/api/overview", None), 401);
    assert_eq!(status(port, "/api/overview", Some("wrong")), 401);
    assert_eq!(
        status(port, "/api/overview", Some("t0ken")),
        200,
        "a missing stream is a row, not a 502"
    );
    assert_eq!(status(port, "/metrics", Some("t0ken")), 200);
    assert!(
        eventually_blocking(Duration::from_secs(5), || cli(
            &server,
            &["XLEN", "{streamkeeper}:history"]
        ) == "1"),
        "serve writes its first history sample at start"
    );
    let pid = child.id() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let code = child.wait().expect("wait").code();
    assert_eq!(code, Some(130));
}
