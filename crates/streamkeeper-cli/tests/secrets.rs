//! Secrets in the connection URL never reach the user's screen (DESIGN.md
//! §6, least privilege): the real binary, real servers, a secret in every
//! place a URL can carry one, and debug logging on.

use streamkeeper_testkit::{free_port, RedisServer};

mod common;

use common::{sk_at, Run};

const SECRET: &str = "hunter2";

/// The CLI against `url` with every log level on.
fn run(url: &str, args: &[&str]) -> Run {
    sk_at(url, args).env("STREAMKEEPER_LOG", "trace").run()
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
        run(&url, &["stat"]).fails(2).never_shows(SECRET);
    }
}

#[test]
fn working_commands_never_show_a_urls_secrets() {
    let server = RedisServer::start().expect("redis-server");
    // redis-rs ignores query parameters it does not know: the URL works.
    let url = format!("{}?sentinel_password={SECRET}&token={SECRET}", server.url());
    let produced = run(&url, &["produce", "s", "--field", "k=v"]);
    produced.ok();
    produced.never_shows(SECRET);
    for args in [&["stat"][..], &["doctor"], &["tail", "s"]] {
        run(&url, args).never_shows(SECRET);
    }
}
