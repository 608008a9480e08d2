//! Dashboard auth against a real redis-server (docs/design.md §10 "Auth"):
//! wrong tokens throttled per client address (429 with a growing
//! `Retry-After`), the login cookie a random session id that expires and
//! ends at logout, `Secure` cookies when configured, the bearer token, and
//! HTTPS through [`streamkeeper_web::tls::TlsListener`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use streamkeeper::{Connector, ConnectorOptions};
use streamkeeper_testkit::RedisServer;
use streamkeeper_web::auth::{Throttling, SESSION_COOKIE};
use streamkeeper_web::{app, AppState, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const TOKEN: &str = "0123456789abcdef-s3cret";

async fn setup(config: Config) -> (RedisServer, Router) {
    let server = RedisServer::start().expect("redis-server");
    let redis = Connector::connect_with(
        &server.url(),
        ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let router = app(AppState::new(redis, config));
    (server, router)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HashMap<String, String>, String) {
    let r = app.clone().oneshot(req).await.expect("response");
    let status = r.status();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let bytes = axum::body::to_bytes(r.into_body(), 16 << 20)
        .await
        .expect("body");
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn with_token(throttling: Throttling) -> Config {
    Config {
        token: Some(TOKEN.into()),
        throttling,
        ..Default::default()
    }
}

/// Quick waits, so a test can sit them out.
fn quick() -> Throttling {
    Throttling {
        max_failures: 5,
        window: Duration::from_secs(60),
        first_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
        max_clients: 100,
    }
}

/// `POST /login` with `token`, from `client` (no `ConnectInfo`: the
/// "unknown" bucket).
fn login(token: &str, client: Option<&str>) -> Request<Body> {
    let mut r = Request::builder()
        .method("POST")
        .uri("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .expect("req");
    from(&mut r, client);
    r
}

fn from(r: &mut Request<Body>, client: Option<&str>) {
    if let Some(c) = client {
        let addr: SocketAddr = c.parse().expect("addr");
        r.extensions_mut().insert(ConnectInfo(addr));
    }
}

fn get(
    path: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
    client: Option<&str>,
) -> Request<Body> {
    let mut b = Request::builder().uri(path);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    if let Some(t) = bearer {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let mut r = b.body(Body::empty()).expect("req");
    from(&mut r, client);
    r
}

/// The `name=value` pair of a `Set-Cookie`.
fn pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("pair")
        .trim()
        .to_string()
}

fn retry_after(h: &HashMap<String, String>) -> u64 {
    h.get("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds")
}

#[tokio::test]
async fn wrong_logins_are_throttled_per_address_and_the_wait_grows() {
    let (_server, app) = setup(with_token(quick())).await;
    let a = Some("10.0.0.1:40000");
    for i in 1..5 {
        let (status, h, _) = send(&app, login("wrong", a)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "wrong login {i}");
        assert_eq!(h["location"], "/login?failed=1");
    }
    let (status, h, _) = send(&app, login("wrong", a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "the 5th wrong login");
    assert_eq!(retry_after(&h), 1);
    // While it waits, even the right token is refused (no free guesses).
    let (status, h, _) = send(&app, login(TOKEN, a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!h.contains_key("set-cookie"));
    // Same address, other port: the same client.
    let (status, _, _) = send(&app, login("wrong", Some("10.0.0.1:40001"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Another address is not throttled.
    let b = Some("10.0.0.2:40000");
    assert_eq!(send(&app, login("wrong", b)).await.0, StatusCode::SEE_OTHER);
    let (status, h, _) = send(&app, login(TOKEN, b)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/");
    assert!(h.contains_key("set-cookie"));

    // After the wait, another wrong token doubles it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, h, _) = send(&app, login("wrong", a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&h), 2, "the wait doubled");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The right token after the wait gets in.
    let (status, h, _) = send(&app, login(TOKEN, a)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/");
    assert!(h["set-cookie"].starts_with(&format!("{SESSION_COOKIE}=")));
}

#[tokio::test]
async fn wrong_bearer_tokens_count_as_wrong_logins() {
    let (_server, app) = setup(with_token(quick())).await;
    let a = Some("192.0.2.7:5000");
    for _ in 1..5 {
        let r = get("/api/overview", None, Some("wrong"), a);
        assert_eq!(send(&app, r).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, h, _) = send(&app, get("/api/overview", None, Some("wrong"), a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&h), 1);
    // The right token waits too; the login form as well; /healthz cannot
    // be used to try tokens meanwhile.
    let (status, _, _) = send(&app, get("/api/overview", None, Some(TOKEN), a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&app, login(TOKEN, a)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    let (status, _, _) = send(&app, get("/healthz", None, Some(TOKEN), a)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Probes without a token are not throttled.
    assert_eq!(
        send(&app, get("/healthz", None, None, a)).await.0,
        StatusCode::OK
    );
    // Another client's right token works.
    let b = Some("192.0.2.8:5000");
    let (status, _, _) = send(&app, get("/api/overview", None, Some(TOKEN), b)).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = send(&app, get("/api/overview", None, Some(TOKEN), a)).await;
    assert_eq!(status, StatusCode::OK, "after the wait");
}

#[tokio::test]
async fn the_cookie_is_a_random_session_that_logout_ends() {
    let (_server, app) = setup(with_token(Throttling::default())).await;
    let (status, h, _) = send(&app, login(TOKEN, None)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = h["set-cookie"].clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(attr), "{attr}: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let hex: String = TOKEN.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !cookie.contains(TOKEN) && !cookie.contains(&hex),
        "{cookie}"
    );
    let first = pair(&cookie);
    let id = first
        .strip_prefix(&format!("{SESSION_COOKIE}="))
        .expect("session cookie");
    assert_eq!(id.len(), 64, "32 bytes, hex: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let second = pair(&send(&app, login(TOKEN, None)).await.1["set-cookie"]);
    assert_ne!(first, second, "every login its own session");

    let (status, _, body) = send(&app, get("/", Some(&first), None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"action="/logout""#), "the logout button");
    assert_eq!(
        send(&app, get("/api/overview", Some(&first), None, None))
            .await
            .0,
        StatusCode::OK
    );
    // A made-up session id gets nothing.
    let forged = format!("{SESSION_COOKIE}={}", "ab".repeat(32));
    assert_eq!(
        send(&app, get("/api/overview", Some(&forged), None, None))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    let logout = Request::builder()
        .method("POST")
        .uri("/logout")
        .header(header::COOKIE, &first)
        .body(Body::empty())
        .expect("req");
    let (status, h, _) = send(&app, logout).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/login");
    let cleared = &h["set-cookie"];
    assert_eq!(pair(cleared), format!("{SESSION_COOKIE}="), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        send(&app, get("/api/overview", Some(&first), None, None))
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "the same cookie after logout"
    );
    let (status, h, _) = send(&app, get("/", Some(&first), None, None)).await;
    assert!(status.is_redirection());
    assert_eq!(h["location"], "/login");
    assert_eq!(
        send(&app, get("/api/overview", Some(&second), None, None))
            .await
            .0,
        StatusCode::OK,
        "the other session lives on"
    );
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let (_server, app) = setup(Config {
        session_ttl: Duration::from_millis(600),
        ..with_token(Throttling::default())
    })
    .await;
    let (_, h, _) = send(&app, login(TOKEN, None)).await;
    assert!(h["set-cookie"].contains("Max-Age=1"), "{}", h["set-cookie"]);
    let cookie = pair(&h["set-cookie"]);
    assert_eq!(
        send(&app, get("/api/overview", Some(&cookie), None, None))
            .await
            .0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        send(&app, get("/api/overview", Some(&cookie), None, None))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn cookies_are_secure_when_configured() {
    let (_server, app) = setup(Config {
        secure_cookies: true,
        ..with_token(Throttling::default())
    })
    .await;
    let (_, h, _) = send(&app, login(TOKEN, None)).await;
    let cookie = h["set-cookie"].clone();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let logout = Request::builder()
        .method("POST")
        .uri("/logout")
        .header(header::COOKIE, pair(&cookie))
        .body(Body::empty())
        .expect("req");
    let (_, h, _) = send(&app, logout).await;
    assert!(h["set-cookie"].contains("; Secure"), "{}", h["set-cookie"]);
}

#[tokio::test]
async fn the_bearer_token_works_and_healthz_needs_none() {
    let (_server, app) = setup(with_token(Throttling::default())).await;
    assert_eq!(
        send(&app, get("/api/overview", None, Some(TOKEN), None))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/api/overview", None, None, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, get("/healthz", None, None, None)).await.0,
        StatusCode::OK
    );
    // With the token, a failed lag check names the stream.
    let probe = "/healthz?stream=orders&max-lag=0";
    let (status, _, body) = send(&app, get(probe, None, Some(TOKEN), None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("orders"), "{body}");
    let (status, _, body) = send(&app, get(probe, None, None, None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains("orders"), "{body}");
}

#[tokio::test]
async fn without_a_token_the_page_has_no_logout_button() {
    let (_server, app) = setup(Config::default()).await;
    let (status, _, body) = send(&app, get("/", None, None, None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("/logout"), "{body}");
    assert!(body.contains("<header>"));
}

/// A self-signed certificate for `localhost` and its key, made by openssl.
fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args(["-subj", "/CN=localhost", "-days", "1"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (install it to run this test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// `GET path` over TLS trusting `cert`: the whole answer.
async fn https_get(port: u16, cert: &std::path::Path, path: &str) -> String {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(cert).expect("cert") {
        roots.add(c.expect("cert")).expect("root");
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn https_serves_the_dashboard_and_plain_http_gets_no_answer() {
    use axum::serve::ListenerExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let (_server, app) = setup(with_token(Throttling::default())).await;
    let config = streamkeeper_web::tls::load(&cert, &key).expect("load");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let listener = streamkeeper_web::tls::TlsListener::new(tcp, config).expect("listener");
    let server = tokio::spawn(async move {
        axum::serve(
            listener.tap_io(|_| {}),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    // A client that connects and says nothing stalls nobody.
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let answer = tokio::time::timeout(Duration::from_secs(5), https_get(port, &cert, "/healthz"))
        .await
        .expect("an answer while a silent client holds a handshake");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    let answer = https_get(port, &cert, "/api/overview").await;
    assert!(
        answer.starts_with("HTTP/1.1 401"),
        "the guard holds: {answer}"
    );

    // Plain HTTP to the TLS port: no dashboard answer, and the server
    // lives on.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("HTTP/1.1") && !text.contains("ok"), "{text}");
    let answer = https_get(port, &cert, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.abort();
}

#[test]
fn a_missing_or_bad_certificate_is_one_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.pem");
    let e = streamkeeper_web::tls::load(&missing, &missing)
        .expect_err("missing")
        .to_string();
    assert!(e.contains("nope.pem") && !e.contains('\n'), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let e = streamkeeper_web::tls::load(&junk, &junk)
        .expect_err("junk")
        .to_string();
    assert!(e.contains("junk.pem"), "{e}");
    let (cert, _) = self_signed(dir.path());
    let e = streamkeeper_web::tls::load(&cert, &junk)
        .expect_err("no key")
        .to_string();
    assert!(e.contains("junk.pem"), "{e}");
    let other = tempfile::tempdir().expect("tempdir");
    let (_, other_key) = self_signed(other.path());
    let e = streamkeeper_web::tls::load(&cert, &other_key)
        .expect_err("mismatch")
        .to_string();
    assert!(e.contains("cert.pem") && e.contains("key.pem"), "{e}");
}
