//! Actions: `POST /api/actions/{action}` with a JSON body. The guard in
//! `lib.rs` has already refused them on a read-only dashboard (403) and
//! checked the CSRF header; each one calls the library function the CLI
//! uses and is logged to stderr (who, what, when) before it runs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde_json::{json, Value};
use streamkeeper::deadletter;
use streamkeeper::inspect::{self, InspectOptions};
use streamkeeper::janitor::{self, JanitorOptions};
use streamkeeper::scheduler::Scheduler;

use crate::api::stream_id;
use crate::names::{group_param, stream_param};
use crate::{ApiError, AppState};

/// Most dead letters one "replay all" moves.
const REPLAY_ALL_MAX: usize = 100_000;

/// A consumer idle this long (or `dead_after`, if shorter) may be removed.
pub(crate) const REMOVABLE_AFTER_MS: u64 = 10_000;

/// The stream an action addresses: `"key"` (base64url of the raw name)
/// wins over `"stream"`.
fn stream_of(body: &Value) -> Result<streamkeeper::StreamKey, ApiError> {
    stream_param(
        body.get("key").and_then(Value::as_str),
        body.get("stream").and_then(Value::as_str),
    )
}

/// The group an action addresses: `"gkey"` wins over `"group"`.
fn group_of(body: &Value) -> Result<streamkeeper::GroupName, ApiError> {
    group_param(
        body.get("gkey").and_then(Value::as_str),
        body.get("group").and_then(Value::as_str),
    )
}

fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request(format!("missing \"{name}\" in the JSON body")))
}

/// Runs one action.
pub(crate) async fn dispatch(
    State(s): State<AppState>,
    Path(action): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let who = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "local".to_string(), |c| c.0.to_string());
    let json_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions take a JSON body (Content-Type: application/json)".into(),
        ));
    }
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|_| ApiError::bad_request("body too large"))?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    eprintln!(
        "audit: {} {who} {action} {body}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    let redis = s.redis();
    match action.as_str() {
        "dlq-replay" => {
            let stream = stream_of(&body)?;
            let mut replayed = Vec::new();
            let mut missing = Vec::new();
            if body.get("all").and_then(Value::as_bool) == Some(true) {
                while replayed.len() < REPLAY_ALL_MAX {
                    let page = deadletter::list(redis, &stream, 500).await?;
                    if page.is_empty() {
                        break;
                    }
                    for e in page {
                        match streamkeeper::shard::replay_dead_letter(redis, &stream, e.id).await?.map(|(_, id)| id) {
                            Some(id) => replayed.push(id.to_string()),
                            None => missing.push(e.id.to_string()),
                        }
                    }
                }
            } else {
                let ids = body
                    .get("ids")
                    .and_then(Value::as_array)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| ApiError::bad_request("give \"ids\": [..] or \"all\": true"))?;
                let ids = ids
                    .iter()
                    .map(|v| stream_id(v.as_str().unwrap_or_default()))
                    .collect::<Result<Vec<_>, _>>()?;
                for id in ids {
                    match streamkeeper::shard::replay_dead_letter(redis, &stream, id).await?.map(|(_, id)| id) {
                        Some(new) => replayed.push(new.to_string()),
                        None => missing.push(id.to_string()),
                    }
                }
            }
            Ok(Json(json!({ "replayed": replayed.len(), "new_ids": replayed, "missing": missing })))
        }
        "dlq-purge" => {
            let stream = stream_of(&body)?;
            let n = deadletter::purge(redis, &stream, None).await?;
            Ok(Json(json!({ "purged": n })))
        }
        "janitor" => {
            let stream = stream_of(&body)?;
            let r = janitor::run_once(redis, &stream, &JanitorOptions::default()).await?;
            Ok(Json(json!({ "trimmed": r.trimmed, "trim_to": r.trim_to })))
        }
        "schedule-pause" | "schedule-resume" => {
            let name = str_field(&body, "name")?;
            let paused = action == "schedule-pause";
            let found = Scheduler::new(redis, &s.config().namespace)
                .set_paused(name, paused)
                .await?;
            if !found {
                return Err(ApiError(
                    StatusCode::NOT_FOUND,
                    format!("no schedule named {name:?}"),
                ));
            }
            Ok(Json(json!({ "name": name, "paused": paused })))
        }
        "group-reset" => {
            let stream = stream_of(&body)?;
            let group = group_of(&body)?;
            let to = stream_id(str_field(&body, "to")?)?;
            let dry_run = body.get("dry_run").and_then(Value::as_bool) != Some(false);
            let p = streamkeeper::group::reset_group(redis, &stream, &group, to, dry_run).await?;
            Ok(Json(json!({
                "dry_run": dry_run, "from": p.from, "to": p.to,
                "redelivered": p.redelivered, "skipped": p.skipped,
            })))
        }
        "consumer-remove" => {
            let stream = stream_of(&body)?;
            let group = group_of(&body)?;
            let consumer = str_field(&body, "consumer")?;
            let st = inspect::stream_stat(
                redis,
                &stream,
                &InspectOptions {
                    memory: false,
                    ..Default::default()
                },
            )
            .await?;
            let g = st
                .groups
                .iter()
                .find(|g| g.group == group.as_str())
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no group {group} on {stream}")))?;
            let c = g
                .consumers
                .iter()
                .find(|c| c.name == consumer)
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no consumer {consumer:?} in {group}")))?;
            if consumer == streamkeeper::meta::RETRY_CONSUMER {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("{consumer} holds the group's parked retries; it is never removed"),
                ));
            }
            let removable_after = REMOVABLE_AFTER_MS
                .min(u64::try_from(s.config().dead_after.as_millis()).unwrap_or(u64::MAX));
            if c.idle_ms < removable_after {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!("{consumer} was active {} ms ago: only idle consumers are removed", c.idle_ms),
                ));
            }
            // Its entries go to the most recently active other consumer.
            let heir = g
                .consumers
                .iter()
                .filter(|o| o.name != consumer && o.name != streamkeeper::meta::RETRY_CONSUMER)
                .min_by_key(|o| o.idle_ms);
            let heir = match (heir, c.pending) {
                (Some(h), _) => h.name.clone(),
                // Nothing to hand over: the handoff only deletes it.
                (None, 0) => consumer.to_string(),
                (None, _) => {
                    return Err(ApiError(
                        StatusCode::CONFLICT,
                        format!("{consumer} holds {} entries and is the only consumer: nobody to hand them to", c.pending),
                    ))
                }
            };
            if heir == consumer {
                let mut conn = redis.shared();
                redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&stream)
                    .arg(&group)
                    .arg(consumer)
                    .query_async::<u64>(&mut conn)
                    .await
                    .map_err(|e| streamkeeper::Error::redis("XGROUP DELCONSUMER", e))?;
                return Ok(Json(json!({ "removed": consumer, "moved": 0, "to": Value::Null })));
            }
            let from = streamkeeper::ConsumerName::new(consumer)?;
            let to = streamkeeper::ConsumerName::new(heir.clone())?;
            let moved = streamkeeper::group::remove_consumer(redis, &stream, &group, &from, &to).await?;
            Ok(Json(json!({ "removed": consumer, "moved": moved, "to": heir })))
        }
        other => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no action {other:?}: dlq-replay, dlq-purge, janitor, schedule-pause, schedule-resume, group-reset, consumer-remove"),
        )),
    }
}
