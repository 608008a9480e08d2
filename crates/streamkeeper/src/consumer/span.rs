//! The span of one handler run: with the `otel` feature and an exporter
//! installed, the `process` span of `otel.rs`; otherwise nothing. `run()`
//! starts it before the handler and ends it when the run is settled.

use super::delivery::Delivery;
use super::outcome::Outcome;

/// One run's span (nothing without the `otel` feature).
#[derive(Debug)]
pub(crate) struct RunSpan(#[cfg(feature = "otel")] Option<crate::otel::RunSpan>);

impl RunSpan {
    /// Starts it for `d` read by `group` (the run's trace context is then
    /// the span's).
    pub(crate) fn start(d: &Delivery, group: &str) -> Self {
        #[cfg(feature = "otel")]
        {
            let run = crate::otel::Run {
                stream: d.stream().as_str(),
                group,
                id: d.id(),
                attempt: d.attempt(),
                parent: d.trace_parent(),
            };
            RunSpan(crate::otel::start_run(run).map(|(span, context)| {
                if let Some(t) = context {
                    d.set_trace(t);
                }
                span
            }))
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = (d, group);
            RunSpan()
        }
    }

    /// Ends it with what the handler returned (a failure sets the error
    /// status with its reason).
    pub(crate) fn end<E: std::fmt::Display>(
        self,
        outcome: &std::thread::Result<std::result::Result<Outcome, E>>,
    ) {
        #[cfg(feature = "otel")]
        if let Some(span) = self.0 {
            let failure = match outcome {
                Ok(Ok(Outcome::Ack)) => None,
                Ok(Ok(Outcome::Retry { .. })) => Some("retry later".to_string()),
                Ok(Ok(Outcome::DeadLetter { reason })) => Some(format!("dead-lettered: {reason}")),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the handler panicked".to_string()),
            };
            span.end(failure);
        }
        #[cfg(not(feature = "otel"))]
        let _ = outcome;
    }
}
