//! `--metrics ADDR` (docs/design.md §11): the process's own Prometheus
//! `/metrics` for `consume`, `schedule run`, `janitor`, `serve` and
//! `bench`. The recorder is the one `streamkeeper_web::prometheus`
//! installs (so `serve`'s dashboard `/metrics` and this address show the
//! same counters); the library records into it through the `metrics`
//! facade. Served by a small axum router: the exporter's own listener would
//! need a second recorder and hyper's HTTP/2 stack for one GET.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::cli::{Command, ScheduleAction};

/// How often histogram samples are folded into their buckets when nobody
/// scrapes, so memory stays flat between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// The `--metrics` address of a command, if it has one.
fn address(command: &Command) -> Option<SocketAddr> {
    match command {
        Command::Consume(a) => a.metrics,
        Command::Janitor(a) => a.metrics,
        Command::Serve(a) => a.metrics,
        Command::Bench(a) => a.metrics,
        Command::Schedule(a) => match &a.action {
            ScheduleAction::Run { metrics, .. } => *metrics,
            _ => None,
        },
        _ => None,
    }
}

/// Serving `/metrics` until dropped.
#[derive(Debug)]
pub struct Server(Option<tokio::task::JoinHandle<()>>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Installs the recorder and serves it when the command has `--metrics`;
/// a bind failure is an error (exit 2) before the command starts.
pub async fn start(command: &Command) -> anyhow::Result<Server> {
    let Some(addr) = address(command) else {
        return Ok(Server(None));
    };
    if let Command::Serve(a) = command {
        if a.listen == addr {
            anyhow::bail!(
                "--metrics {addr} is also the dashboard's --listen: give the process metrics an address of their own (the dashboard keeps its /metrics of stream state)"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("--metrics: cannot listen on {addr}: {e}; pick another address")
    })?;
    let handle = streamkeeper_web::prometheus::recorder().ok_or_else(|| {
        anyhow::anyhow!("--metrics: another metrics recorder is installed in this process")
    })?;
    tracing::info!(%addr, "serving this process's metrics at /metrics");
    Ok(Server(Some(tokio::spawn(serve(listener, handle)))))
}

async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle) {
    let upkeep = handle.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    );
    tokio::select! {
        r = std::future::IntoFuture::into_future(axum::serve(listener, app)) => if let Err(e) = r {
            tracing::error!(error = %e, "--metrics: the server stopped");
        },
        () = async {
            loop {
                tokio::time::sleep(UPKEEP).await;
                upkeep.run_upkeep();
            }
        } => {}
    }
}
