//! Turning raw server errors about a key into errors that say what to do
//! (`explain`); the key names themselves live in [`crate::keys`].
//!
//! `WRONGTYPE` becomes [`Error::WrongType`] with the key's actual type and
//! `NOGROUP` becomes [`Error::GroupMissing`], so every caller reports the
//! same one-line message.

use redis::aio::ConnectionLike;

use crate::error::Error;
use crate::types::{GroupName, StreamKey};

/// Explains `err`, which `command` on `stream` returned.
pub(crate) async fn explain<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &StreamKey,
    command: &str,
    err: redis::RedisError,
) -> Error {
    if crate::error::error_code(&err).as_deref() == Some("WRONGTYPE") {
        let actual: String = redis::cmd("TYPE")
            .arg(stream)
            .query_async(conn)
            .await
            .unwrap_or_else(|_| "value of another type".into());
        return Error::WrongType {
            key: stream.to_string(),
            actual,
        };
    }
    // The last ID a shard's seal sets leaves no room for an appended one.
    if command == "XADD" && err.to_string().contains("exhausted the last possible ID") {
        return Error::ShardSealed {
            stream: stream.clone(),
        };
    }
    Error::redis(format!("{command} {stream}"), err)
}

/// Explains an error of a group command (`XREADGROUP`, `XACK`, …).
pub(crate) async fn explain_group<C: ConnectionLike + Send>(
    conn: &mut C,
    stream: &StreamKey,
    group: &GroupName,
    command: &str,
    err: redis::RedisError,
) -> Error {
    if crate::error::error_code(&err).as_deref() == Some("NOGROUP") {
        return Error::GroupMissing {
            stream: stream.clone(),
            group: group.clone(),
        };
    }
    explain(conn, stream, command, err).await
}
