//! Spans through the OpenTelemetry API (feature `otel`, docs/design.md §11):
//! one `process` span per handler run, following the messaging semantic
//! conventions (kind consumer, `messaging.*` attributes), child of the
//! producer's span named by the entry's `traceparent` and linked to it;
//! and the producer's side, [`current`], the context of the caller's span
//! written into entries.
//!
//! The library only calls the API: an application installs a tracer
//! provider (the CLI's `--otlp-endpoint` does) and calls
//! [`trace::set_exporting`](crate::trace::set_exporting); until then no
//! span is started, so a build with the feature and nothing installed costs
//! one atomic load per run.

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer,
};
use opentelemetry::{global, Context, KeyValue};

use crate::trace::TraceParent;

/// A handler run's span, ended when the run is settled.
pub(crate) struct RunSpan(global::BoxedSpan);

impl std::fmt::Debug for RunSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunSpan")
    }
}

fn remote(p: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(p.trace_id),
        SpanId::from_bytes(p.span_id),
        TraceFlags::new(p.flags),
        true,
        TraceState::default(),
    )
}

fn of_context(sc: &SpanContext) -> Option<TraceParent> {
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// The context of the caller's current span (OpenTelemetry's current
/// context), if it has a valid one: what a producer writes into entries.
pub fn current() -> Option<TraceParent> {
    of_context(Context::current().span().span_context())
}

/// What a handler run's span describes: the entry read and its group.
pub(crate) struct Run<'a> {
    pub stream: &'a str,
    pub group: &'a str,
    pub id: crate::types::StreamId,
    pub attempt: u64,
    /// The producer's context, from the entry's `traceparent`.
    pub parent: Option<TraceParent>,
}

/// Starts the `process` span of a handler run, when exporting; with it the
/// context the run continues (what [`Delivery::trace`](crate::Delivery::trace)
/// then answers).
pub(crate) fn start_run(run: Run<'_>) -> Option<(RunSpan, Option<TraceParent>)> {
    use opentelemetry::trace::Span;
    if !crate::trace::exporting() {
        return None;
    }
    let tracer = global::tracer("streamkeeper");
    let cx = match &run.parent {
        Some(p) => Context::new().with_remote_span_context(remote(p)),
        None => Context::new(),
    };
    let mut builder = tracer
        .span_builder(format!("process {}", run.stream))
        .with_kind(SpanKind::Consumer);
    if let Some(p) = &run.parent {
        builder = builder.with_links(vec![Link::with_context(remote(p))]);
    }
    let mut span = builder.start_with_context(&tracer, &cx);
    // The attributes only for a span that is recorded: an unsampled run
    // (a sampler saying no, or a parent not sampled) costs no strings.
    if span.is_recording() {
        span.set_attributes([
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", run.stream.to_string()),
            KeyValue::new("messaging.consumer.group.name", run.group.to_string()),
            KeyValue::new("messaging.message.id", run.id.to_string()),
            KeyValue::new(
                "messaging.message.delivery_count",
                i64::try_from(run.attempt).unwrap_or(i64::MAX),
            ),
        ]);
    }
    let context = of_context(span.span_context());
    Some((RunSpan(span), context))
}

impl RunSpan {
    /// Ends the span: an error status when the run failed.
    pub(crate) fn end(mut self, failure: Option<String>) {
        use opentelemetry::trace::Span;
        if let Some(why) = failure {
            self.0.set_status(Status::error(why));
        }
        self.0.end();
    }
}

/// A `send` span for appending to `stream` (kind producer; a child of
/// `parent`, else of the current context), current while `f` runs, so
/// entries a producer with [`TraceSource::Current`](crate::trace::TraceSource)
/// writes inside carry its context.
pub async fn in_send_span<T, F: std::future::Future<Output = T>>(
    stream: &str,
    parent: Option<TraceParent>,
    f: F,
) -> T {
    use opentelemetry::trace::FutureExt;
    if !crate::trace::exporting() {
        return f.await;
    }
    let parent_cx = match &parent {
        Some(p) => Context::current().with_remote_span_context(remote(p)),
        None => Context::current(),
    };
    let tracer = global::tracer("streamkeeper");
    let span = tracer
        .span_builder(format!("send {stream}"))
        .with_kind(SpanKind::Producer)
        .with_attributes([
            KeyValue::new("messaging.system", "redis"),
            KeyValue::new("messaging.operation.name", "send"),
            KeyValue::new("messaging.operation.type", "send"),
            KeyValue::new("messaging.destination.name", stream.to_string()),
        ])
        .start_with_context(&tracer, &parent_cx);
    let cx = parent_cx.with_span(span);
    let out = f.with_context(cx.clone()).await;
    cx.span().end();
    out
}
