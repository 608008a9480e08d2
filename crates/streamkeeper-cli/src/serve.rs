//! `streamkeeper serve`: the dashboard of the `streamkeeper-web` crate
//! (docs/design.md §10) with `/metrics`, `/healthz` and the JSON API, plus the
//! history sampler writing `{N}:history`. This file only turns flags into
//! a [`streamkeeper_web::Config`] and runs the server until a signal.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use streamkeeper_web::auth::MIN_TOKEN_LEN;
use streamkeeper_web::{app, history, tls, AppState, Config};

use crate::cli::{Global, ServeArgs};
use crate::Exit;

/// How long open pages (event streams) get to close after a signal.
const DRAIN: Duration = Duration::from_secs(2);

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<Exit> {
    let token = args.token.filter(|t| !t.is_empty());
    if !args.listen.ip().is_loopback() {
        match &token {
            None => anyhow::bail!(
                "--listen {} is reachable beyond this machine: give --token TOKEN (or set STREAMKEEPER_TOKEN) so nobody else reads your streams",
                args.listen
            ),
            // Blanks around a token are a copy-paste slip, not secret.
            Some(t) if t.trim().chars().count() < MIN_TOKEN_LEN => anyhow::bail!(
                "--listen {} is reachable beyond this machine: the token must have at least {MIN_TOKEN_LEN} characters besides spaces (it has {}; e.g. `openssl rand -hex 16`)",
                args.listen,
                t.trim().chars().count()
            ),
            Some(_) => {}
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
        _ => None,
    };
    let redis = global
        .connect_with(streamkeeper::ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        })
        .await?;
    // Installed before anything counts, so the counters start at 0.
    let _ = streamkeeper_web::prometheus::recorder();
    let allow_actions = args.allow_actions;
    let state = AppState::new(
        redis,
        Config {
            streams: args.streams.iter().map(ToString::to_string).collect(),
            allow_actions,
            token,
            max_lag: args.max_lag,
            max_time_lag: args.max_time_lag,
            history_every: args.history_every,
            history_max: args.history_max,
            secure_cookies: tls.is_some(),
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another --listen address",
                args.listen
            )
        })?;
    crate::logs::announce(&format!(
        "dashboard on {}://{}/ ({}; metrics at /metrics, health at /healthz)",
        if tls.is_some() { "https" } else { "http" },
        args.listen,
        if allow_actions {
            "actions allowed"
        } else {
            "read-only"
        }
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let interrupted = crate::signal::cancel_on_signal(stop.clone());
    let sampler = tokio::spawn(history::run(
        state.clone(),
        args.history_every,
        stop.clone(),
    ));
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = {
        let stop = stop.clone();
        async move { stop.cancelled().await }
    };
    let server: futures::future::BoxFuture<'static, std::io::Result<()>> = match tls {
        None => Box::pin(
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .into_future(),
        ),
        // `tap_io` gives any listener `SocketAddr` connect info.
        Some(config) => Box::pin(
            axum::serve(
                tls::TlsListener::new(listener, config)?.tap_io(|_| {}),
                service,
            )
            .with_graceful_shutdown(shutdown)
            .into_future(),
        ),
    };
    // Open event streams never end on their own: give them DRAIN, then go.
    let drained = {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        }
    };
    tokio::select! {
        r = server => r?,
        () = drained => {}
    }
    stop.cancel();
    let _ = sampler.await;
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}
