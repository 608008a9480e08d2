//! `streamkeeper serve`: the dashboard of the `streamkeeper-web` crate
//! (docs/design.md §10) with `/metrics`, `/healthz` and the JSON API, plus the
//! history sampler writing `{N}:history`. This file only turns flags into
//! a [`streamkeeper_web::Config`] and runs the server until a signal.

use std::net::SocketAddr;
use std::time::Duration;

use streamkeeper_web::{app, history, AppState, Config};

use crate::cli::{Global, ServeArgs};
use crate::Exit;

/// How long open pages (event streams) get to close after a signal.
const DRAIN: Duration = Duration::from_secs(2);

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<Exit> {
    let token = args.token.filter(|t| !t.is_empty());
    if !args.listen.ip().is_loopback() && token.is_none() {
        anyhow::bail!(
            "--listen {} is reachable beyond this machine: give --token TOKEN (or set STREAMKEEPER_TOKEN) so nobody else reads your streams",
            args.listen
        );
    }
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
    eprintln!(
        "dashboard on http://{}/ ({}; metrics at /metrics, health at /healthz)",
        args.listen,
        if allow_actions {
            "actions allowed"
        } else {
            "read-only"
        }
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let interrupted = crate::signal::cancel_on_signal(stop.clone());
    let sampler = tokio::spawn(history::run(state.clone(), history::EVERY, stop.clone()));
    let server = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown({
        let stop = stop.clone();
        async move { stop.cancelled().await }
    });
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
