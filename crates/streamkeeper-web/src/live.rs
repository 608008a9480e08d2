//! `/api/events`: live updates as server-sent events. Every second the
//! (shared) overview is taken; when it changed it is sent as an `overview`
//! event, and while Redis cannot be reached a `down` event carries the
//! reason, so the page shows a banner and clears it by itself on the next
//! `overview`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use crate::AppState;

/// How often the overview is taken for the events.
const PERIOD: Duration = Duration::from_secs(1);

/// Longest wait for one overview before Redis counts as unreachable.
const TIMEOUT: Duration = Duration::from_secs(3);

struct Feed {
    state: AppState,
    last: Option<String>,
    first: bool,
}

/// The event stream of one page.
pub(crate) async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let feed = Feed {
        state,
        last: None,
        first: true,
    };
    let stream = futures::stream::unfold(feed, |mut f| async move {
        if !f.first {
            tokio::time::sleep(PERIOD).await;
        }
        f.first = false;
        let taken = tokio::time::timeout(TIMEOUT, crate::overview::get(&f.state)).await;
        let event = match taken {
            Ok(Ok(o)) => {
                let data = serde_json::to_string(&*o).unwrap_or_default();
                if f.last.as_deref() == Some(data.as_str()) {
                    Event::default().comment("unchanged")
                } else {
                    f.last = Some(data.clone());
                    Event::default().event("overview").data(data)
                }
            }
            Ok(Err(e)) => {
                f.last = None;
                Event::default()
                    .event("down")
                    .data(format!("Redis unreachable: {e}"))
            }
            Err(_) => {
                f.last = None;
                Event::default()
                    .event("down")
                    .data("Redis unreachable: no answer within 3 s")
            }
        };
        Some((Ok(event), f))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
