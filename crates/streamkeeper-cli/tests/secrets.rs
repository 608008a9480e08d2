//! Secrets in the connection URL never reach the user's screen (docs/design.md
//! §6, "Least privilege"): the real binary, real servers, a secret in every
//! place a URL can carry one, and debug logging on.

use std::process::{Command, Output};

use streamkeeper_testkit::{free_port, RedisServer};

mod common;

use common::BIN;

const SECRET: &str = "hunter2";

/// The CLI against `url` with every log level on.
fn run(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--redis")
        .arg(url)
        .args(args)
        .env_remove("STREAMKEEPER_REDIS")
        .env("STREAMKEEPER_LOG", "trace")
        .output()
        .expect("run")
}

fn assert_no_secret(o: &Output, url: &str) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!all.contains(SECRET), "{url}: the secret was shown: {all}");
}

#[test]
fn connection_errors_never_show_a_urls_secrets() {
    let port = free_port().expect("port");
    for url in [
        format!("redis+sentinel://127.0.0.1:{port}/m?sentinel_password={SECRET}"),
        format!("redis+sentinel://u:{SECRET}@127.0.0.1:{port}/m?sentinel_username=s&sentinel_password={SECRET}"),
        format!("redis://u:{SECRET}@127.0.0.1:{port}/0?auth_token={SECRET}"),
        format!("redis+cluster://:{SECRET}@127.0.0.1:{port}/?password={SECRET}"),
        format!("redis+unix:///nonexistent/sk.sock?pass={SECRET}"),
        format!("redis://u:{SECRET}@127.0.0.1:{port}/not-a-db"),
    ] {
        let o = run(&url, &["stat"]);
        assert_eq!(o.status.code(), Some(2), "{url}");
        assert_no_secret(&o, &url);
    }
}

#[test]
fn working_commands_never_show_a_urls_secrets() {
    let server = RedisServer::start().expect("redis-server");
    // redis-rs ignores query parameters it does not know: the URL works.
    let url = format!("{}?sentinel_password={SECRET}&token={SECRET}", server.url());
    let o = run(&url, &["produce", "s", "--field", "k=v"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_no_secret(&o, &url);
    for args in [&["stat"][..], &["doctor"], &["tail", "s"]] {
        let o = run(&url, args);
        assert_no_secret(&o, &url);
    }
}
