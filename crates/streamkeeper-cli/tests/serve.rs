//! `streamkeeper serve` as a user runs it: a non-loopback `--listen`
//! without a token is refused before anything listens; with a token (flag
//! or `STREAMKEEPER_TOKEN`) every request needs it; a signal ends it.
//! Beyond loopback the token has at least 16 characters; `--tls-cert` and
//! `--tls-key` serve HTTPS with `Secure` cookies, a bad file is named.

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
    // `localhost:PORT` is the loopback address, as users write it.
    let listen = format!("localhost:{port}");
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

#[test]
fn serve_beyond_loopback_needs_a_token_of_16_characters() {
    let server = RedisServer::start().expect("redis");
    let port = free_port().expect("port");
    let listen = format!("0.0.0.0:{port}");
    // Short, and 16 spaces (long only by its blanks).
    for token in ["short", "                ", "  short-with-pad  "] {
        let out = command(&server, &["serve", "--listen", &listen, "--token", token])
            .env_remove("STREAMKEEPER_TOKEN")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{token:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("16"), "{err}");
        assert!(!err.contains("short"), "the token is not echoed: {err}");
        assert_eq!(status(port, "/healthz", None), 0, "nothing listens");
    }
    // A host name other than localhost is refused at parse time.
    let out = command(&server, &["serve", "--listen", "example.com:80"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("IP:PORT"), "{err}");
}

#[test]
fn serve_with_a_bad_certificate_or_key_names_the_file() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem\n").expect("write");
    let missing = dir.path().join("missing-cert.pem");
    let (missing, junk) = (
        missing.to_str().expect("utf-8"),
        junk.to_str().expect("utf-8"),
    );
    for (cert, key, named) in [(missing, junk, missing), (junk, junk, junk)] {
        let out = command(
            &server,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls-cert",
                cert,
                "--tls-key",
                key,
            ],
        )
        .output()
        .expect("run");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(named), "{err}");
    }
    let out = command(&server, &["serve", "--tls-cert", junk])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "--tls-cert needs --tls-key");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn serve_over_https_sets_secure_session_cookies() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success());
    let port = free_port().expect("port");
    let listen = format!("0.0.0.0:{port}");
    let token = "0123456789abcdef";
    let mut child = command(
        &server,
        &[
            "serve",
            "--listen",
            &listen,
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    )
    .env("STREAMKEEPER_TOKEN", token)
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("spawn");
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-ksS", "-i", "--max-time", "5"])
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let url = format!("https://127.0.0.1:{port}");
    assert!(
        eventually_blocking(Duration::from_secs(10), || curl(&[&format!(
            "{url}/healthz"
        )])
        .starts_with("HTTP/1.1 200")),
        "serve did not come up over HTTPS"
    );
    let login = curl(&["-d", &format!("token={token}"), &format!("{url}/login")]);
    let cookie = login
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("a cookie: {login}"));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(!cookie.contains(token), "{cookie}");
    assert_eq!(status(port, "/healthz", None), 0, "no plain HTTP answer");
    let _ = child.kill();
    let _ = child.wait();
}
