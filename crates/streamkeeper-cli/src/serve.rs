//! `streamkeeper serve`: Prometheus metrics at `/metrics`, the JSON of
//! `stat` at `/api/streams`, and a small page at `/` (the full dashboard
//! comes later). The router is built by [`app`] so tests drive it without
//! a socket.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use streamkeeper::inspect::InspectOptions;
use streamkeeper::Connector;

use crate::cli::{Global, ServeArgs};
use crate::stat;
use crate::Exit;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Where Redis is.
    pub redis: Connector,
    /// Streams to show (empty: all).
    pub streams: Arc<Vec<String>>,
    /// The process's Prometheus recorder.
    pub metrics: PrometheusHandle,
}

/// The process-wide Prometheus recorder (installed once).
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // Another thread may have won the race; then use its handle.
    if metrics::set_global_recorder(recorder).is_ok() {
        let _ = HANDLE.set(handle);
    }
    HANDLE
        .get()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("a metrics recorder was installed elsewhere"))
}

/// The web application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/metrics", get(metrics_text))
        .route("/api/streams", get(api_streams))
        .with_state(state)
}

struct AppError(anyhow::Error);

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (StatusCode::BAD_GATEWAY, format!("{:#}\n", self.0)).into_response()
    }
}

impl<E: Into<anyhow::Error>> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.into())
    }
}

async fn api_streams(State(s): State<AppState>) -> Result<Json<Vec<serde_json::Value>>, AppError> {
    let stats = stat::collect(&s.redis, &s.streams, &InspectOptions::default()).await?;
    Ok(Json(stat::json_rows(&stats, &Default::default())))
}

/// Refreshes the lag gauges from a fresh `stat`, then renders everything.
async fn metrics_text(State(s): State<AppState>) -> Result<Response, AppError> {
    let stats = stat::collect(&s.redis, &s.streams, &InspectOptions::default()).await?;
    for st in &stats {
        let stream = st.stream.clone();
        metrics::gauge!("streamkeeper_stream_length", "stream" => stream.clone())
            .set(st.length as f64);
        metrics::gauge!("streamkeeper_stream_memory_bytes", "stream" => stream.clone())
            .set(st.memory_bytes as f64);
        for g in &st.groups {
            let labels = [("stream", stream.clone()), ("group", g.group.clone())];
            metrics::gauge!("streamkeeper_group_pending", &labels).set(g.pending as f64);
            metrics::gauge!("streamkeeper_group_undelivered", &labels).set(g.undelivered as f64);
            metrics::gauge!("streamkeeper_group_outstanding", &labels).set(g.outstanding as f64);
            metrics::gauge!("streamkeeper_group_time_lag_seconds", &labels)
                .set(g.time_lag_ms as f64 / 1000.0);
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response())
}

async fn index(State(s): State<AppState>) -> Result<Html<String>, AppError> {
    let stats = stat::collect(&s.redis, &s.streams, &InspectOptions::default()).await?;
    let mut rows = String::new();
    for st in &stats {
        for g in &st.groups {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>",
                esc(&st.stream), st.length, esc(&g.group), g.pending, g.undelivered, g.outstanding, g.time_lag_ms
            ));
        }
        if st.groups.is_empty() {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td colspan=5>(no group)</td></tr>",
                esc(&st.stream),
                st.length
            ));
        }
    }
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=5><title>streamkeeper</title>\
         <h1>streamkeeper</h1><p>{}</p><table border=1 cellpadding=4><tr><th>stream</th><th>length</th><th>group</th>\
         <th>pending</th><th>undelivered</th><th>outstanding</th><th>time lag</th></tr>{rows}</table>\
         <p><a href=/metrics>/metrics</a> · <a href=/api/streams>/api/streams</a></p>",
        esc(s.redis.url())
    )))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<Exit> {
    let redis = global
        .connect_with(streamkeeper::ConnectorOptions {
            reconnect_timeout: None,
            ..Default::default()
        })
        .await?;
    let state = AppState {
        redis,
        streams: Arc::new(args.streams),
        metrics: recorder()?,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another --listen address",
                args.listen
            )
        })?;
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "listening beyond loopback: anyone who can reach it sees your streams");
    }
    eprintln!(
        "serving on http://{}/ (metrics at /metrics, API at /api/streams)",
        args.listen
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let interrupted = crate::signal::cancel_on_signal(stop.clone());
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    Ok(if interrupted.get() {
        Exit::Interrupted
    } else {
        Exit::Ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_text(app: &Router, path: &str) -> (StatusCode, String) {
        let r = app
            .clone()
            .oneshot(
                Request::builder()
                    .uri(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Every line is a comment or `name{labels} value` with a float value.
    fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
        let mut out = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# TYPE ") || line.starts_with("# HELP "),
                    "bad comment: {line}"
                );
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let name_end = series.find('{').unwrap_or(series.len());
            let name = &series[..name_end];
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad name: {line}"
            );
            if name_end < series.len() {
                assert!(series.ends_with('}'), "bad labels: {line}");
            }
            out.insert(
                series.to_string(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value: {line}")),
            );
        }
        out
    }

    #[tokio::test]
    async fn metrics_parse_as_prometheus_text_and_move_when_messages_flow() {
        let server = streamkeeper_testkit::RedisServer::start().expect("redis");
        let redis = Connector::connect(&server.url()).await.expect("connect");
        let state = AppState {
            redis: redis.clone(),
            streams: Arc::new(vec!["orders".into()]),
            metrics: recorder().expect("recorder"),
        };
        let app = app(state);
        let producer = streamkeeper::Producer::new(
            &redis,
            streamkeeper::StreamKey::new("orders").expect("key"),
        );
        producer
            .send(&streamkeeper::fields([("k", "v")]))
            .await
            .expect("send");
        streamkeeper::group::create_group(
            &redis,
            &streamkeeper::StreamKey::new("orders").expect("key"),
            &streamkeeper::GroupName::new("billing").expect("group"),
            streamkeeper::StartFrom::Beginning,
        )
        .await
        .expect("group");

        let (status, before) = get_text(&app, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        let before = parse_prometheus(&before);
        let batch: Vec<_> = (0..10)
            .map(|i| streamkeeper::fields([("n", i.to_string())]))
            .collect();
        producer.send_batch(&batch).await.expect("send");
        let (_, after) = get_text(&app, "/metrics").await;
        let after = parse_prometheus(&after);

        let len = r#"streamkeeper_stream_length{stream="orders"}"#;
        let outstanding = r#"streamkeeper_group_outstanding{stream="orders",group="billing"}"#;
        assert_eq!(before[len], 1.0);
        assert_eq!(after[len], 11.0);
        assert_eq!(after[outstanding] - before[outstanding], 10.0);
        // The library's own counters are there too.
        assert!(
            after
                .keys()
                .any(|k| k.starts_with("streamkeeper_produced_total")),
            "{after:?}"
        );

        let (status, api) = get_text(&app, "/api/streams").await;
        assert_eq!(status, StatusCode::OK);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&api).expect("json");
        assert_eq!(rows[0]["stream"], "orders");
        assert_eq!(rows[0]["group"], "billing");
        assert_eq!(rows[0]["outstanding"], 11);
        let (status, page) = get_text(&app, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("billing"));
    }
}
