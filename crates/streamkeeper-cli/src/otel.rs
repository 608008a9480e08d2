//! Trace export for every command (docs/design.md §11): `--otlp-endpoint
//! URL` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) installs an OpenTelemetry tracer
//! provider exporting spans over OTLP/HTTP protobuf to `URL/v1/traces`
//! (the `otel` cargo feature, which release builds enable; without it the
//! flag is refused with a one-line error). Then `consume` exports a
//! `process` span per handler run and `produce` a `send` span whose
//! context each entry carries. Without export, `produce` still passes on a
//! caller's `TRACEPARENT`, and handlers still get the run's context.

use streamkeeper::trace::{TraceParent, TraceSource};

/// Flushes and stops the exporter when dropped (at exit).
pub struct Guard(#[cfg(feature = "otel")] Option<opentelemetry_sdk::trace::SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(p) = self.0.take() {
            if let Err(e) = p.shutdown() {
                tracing::warn!(error = %e, "spans not all exported");
            }
        }
    }
}

/// The URL spans are posted to: `ENDPOINT/v1/traces` (as the OTLP spec
/// says for the base endpoint), unless it already names that path.
pub fn traces_url(endpoint: &str) -> anyhow::Result<String> {
    let e = endpoint.trim();
    if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 10 {
        anyhow::bail!(
            "--otlp-endpoint {e:?} is not an http(s) URL: give the collector's OTLP/HTTP address, e.g. http://127.0.0.1:4318"
        );
    }
    let e = e.trim_end_matches('/');
    Ok(if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    })
}

/// Installs the exporter when an endpoint is given.
pub fn install(endpoint: Option<&str>) -> anyhow::Result<Guard> {
    let Some(endpoint) = endpoint.filter(|e| !e.trim().is_empty()) else {
        return Ok(Guard(
            #[cfg(feature = "otel")]
            None,
        ));
    };
    let url = traces_url(endpoint)?;
    #[cfg(not(feature = "otel"))]
    {
        let _ = url;
        anyhow::bail!(
            "--otlp-endpoint: this build exports no spans; build with `cargo build --release --features otel` (as `make release` does)"
        )
    }
    #[cfg(feature = "otel")]
    {
        use opentelemetry_otlp::{Protocol, WithExportConfig};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("--otlp-endpoint: cannot set up the exporter: {e}"))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("streamkeeper");
        }
        let exporter = Reported {
            inner: exporter,
            url,
            failing: std::sync::atomic::AtomicBool::new(false),
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        streamkeeper::trace::set_exporting(true);
        Ok(Guard(Some(provider)))
    }
}

/// The OTLP exporter, saying on stderr when export starts failing (a
/// wrong or unreachable `--otlp-endpoint`) and when it works again: once
/// each, not per batch.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    url: String,
    failing: std::sync::atomic::AtomicBool,
}

#[cfg(feature = "otel")]
impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reported<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        use std::sync::atomic::Ordering;
        let spans = batch.len();
        let r = self.inner.export(batch).await;
        match &r {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                url = %self.url,
                error = %e,
                spans,
                "spans not exported (said once until export works again)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(url = %self.url, "spans are exported again")
            }
            _ => {}
        }
        r
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The caller's own context, from `TRACEPARENT` (a shell step of a traced
/// job); an invalid one is ignored, as the W3C spec says.
pub fn caller() -> Option<TraceParent> {
    std::env::var(streamkeeper::trace::ENV).ok()?.parse().ok()
}

/// What `produce` writes into each entry: the `send` span's context when
/// exporting, else the caller's `TRACEPARENT`, else nothing.
pub fn produce_source() -> TraceSource {
    if streamkeeper::trace::exporting() {
        TraceSource::Current
    } else {
        caller().map_or(TraceSource::Off, TraceSource::Fixed)
    }
}

/// Runs `f` (a `produce`) inside a `send` span when exporting.
pub async fn around_produce<T>(stream: &str, f: impl std::future::Future<Output = T>) -> T {
    #[cfg(feature = "otel")]
    {
        streamkeeper::otel::in_send_span(stream, caller(), f).await
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = stream;
        f.await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318").expect("url"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://c:4318/v1/traces/").expect("url"),
            "http://c:4318/v1/traces"
        );
        assert!(traces_url("127.0.0.1:4318").is_err());
    }
}
