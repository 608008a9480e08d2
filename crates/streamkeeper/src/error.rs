//! The one error type of the library.
//!
//! Every variant names what failed and, where it helps, how to fix it;
//! [`Error::is_retryable`] tells transient trouble (a failover, a dropped
//! connection, a server still loading) from mistakes that retrying won't fix.

use crate::types::{GroupName, StreamKey};

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in streamkeeper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection URL could not be understood.
    #[error("invalid Redis URL {url:?}: {reason}; expected redis://host:port, rediss://…, redis+unix:///path.sock, redis+sentinel://h:p,…/master or redis+cluster://h:p,…")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A feature exists in the contract but not in this build yet.
    #[error("{what} is not supported yet")]
    Unsupported {
        /// What was asked for.
        what: String,
    },
    /// The server could not be reached.
    #[error("{}", connect_message(url, source))]
    Connect {
        /// Where we tried to connect (password removed).
        url: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// The consumer group does not exist.
    #[error("consumer group {group} does not exist on stream {stream}; create it with `streamkeeper group create {stream} {group}` or pass --create")]
    GroupMissing {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
    },
    /// The consumer group does not exist on a shard of a sharded stream
    /// (the shard's own name would suggest the wrong fix).
    #[error("consumer group {group} does not exist on shard {shard} of {stream}; create it on every shard with `streamkeeper group create {stream} {group}` (or pass --create)")]
    GroupMissingOnShard {
        /// The sharded (logical) stream.
        stream: StreamKey,
        /// The shard without the group.
        shard: StreamKey,
        /// The group.
        group: GroupName,
    },
    /// The group already exists (when creating it was required).
    #[error("consumer group {group} already exists on stream {stream}")]
    GroupExists {
        /// The stream.
        stream: StreamKey,
        /// The group.
        group: GroupName,
    },
    /// A key holds something other than a stream.
    #[error("key {key} holds a {actual}, not a stream; use another key name")]
    WrongType {
        /// The key.
        key: String,
        /// Its Redis type.
        actual: String,
    },
    /// A stream ID could not be parsed.
    #[error("invalid stream ID {input:?}: expected <ms>-<seq> or <ms> (e.g. 1700000000000-0)")]
    InvalidId {
        /// What was given.
        input: String,
    },
    /// The stream does not exist (where reading it needs it to).
    #[error(
        "stream {stream} does not exist; check the name (`streamkeeper stat` lists all streams)"
    )]
    StreamMissing {
        /// The stream.
        stream: StreamKey,
    },
    /// A file could not be opened, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done: `open`, `write`, …
        action: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The Redis user may not run a command streamkeeper needs.
    #[error("the Redis user may not run {command}, which {needed_for} needs; grant it, e.g. `ACL SETUSER <user> +{acl}`")]
    NoPermission {
        /// The command refused (`EVALSHA`, …).
        command: String,
        /// What needs it.
        needed_for: String,
        /// The ACL rule to add (without `+`).
        acl: String,
    },
    /// A cron expression could not be parsed or never fires.
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// Input data (JSON line, field, option) is malformed.
    #[error("{0}")]
    InvalidInput(String),
    /// A Redis command failed.
    #[error("{context}: {}", redis_text(source))]
    Redis {
        /// What streamkeeper was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A reply had an unexpected shape.
    #[error("unexpected reply to {command}: {detail}")]
    Protocol {
        /// The command.
        command: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A value could not be (de)serialized as JSON.
    #[error("JSON error in field `data`: {0}")]
    Json(#[from] serde_json::Error),
    /// `WAIT` saw fewer replicas acknowledge a batch than required; the
    /// entries may be on the master but could be lost in a failover. The
    /// producer sends such a batch again (retryable) until it is confirmed
    /// or `reconnect_timeout` passes.
    #[error("batch reached {got} of {wanted} required replicas before the WAIT timeout; its entries were not reported as written (check the replicas: INFO replication)")]
    NotReplicated {
        /// Replicas required.
        wanted: u32,
        /// Replicas that acknowledged.
        got: u32,
    },
    /// A batched send failed together with the rest of its pipeline.
    #[error("batch failed: {source}")]
    BatchFailed {
        /// The error of the pipeline, shared by every send in it.
        #[source]
        source: std::sync::Arc<Error>,
        /// Whether that error was retryable.
        retryable: bool,
    },
    /// An append stopped part way: the entries of `written` were written
    /// (and are not sent again), the rest were not. `cause` says why; when
    /// it is a connection error or [`Error::GaveUp`], the chunk in flight
    /// may have been written without being confirmed.
    #[error("{cause}; {} entries were written before it (the last {})", written.len(), written.last().map_or(String::new(), ToString::to_string))]
    PartlyWritten {
        /// The IDs written, in order.
        written: Vec<crate::types::StreamId>,
        /// Why the rest were not.
        cause: Box<Error>,
    },
    /// No master could be found through Sentinel.
    #[error("no master {master:?} available through Sentinel: {cause}")]
    NoMaster {
        /// The master name of the URL.
        master: String,
        /// What the sentinels said.
        cause: String,
    },
    /// Retrying through reconnects did not succeed within `reconnect_timeout`.
    #[error("{what}: gave up after {after:?} of reconnecting; last error: {cause}")]
    GaveUp {
        /// The operation.
        what: String,
        /// How long it tried.
        after: std::time::Duration,
        /// The last error.
        #[source]
        cause: Box<Error>,
    },
    /// A health check could not look at part of what it must check (a
    /// cluster primary down, slots no node serves): it fails rather than
    /// pass over what it could not read (docs/design.md §6, "Health
    /// checks never pass by not looking").
    #[error("could not look at {what}: {why}")]
    Unreadable {
        /// What could not be read.
        what: String,
        /// Why, and what to do.
        why: String,
    },
    /// A fenced (ordered-mode) consumer was refused a write: the shard's
    /// owner lease no longer holds its token (it ran out, another member
    /// took the shard). Retrying won't help: the entries are the new
    /// owner's. Produced from the fence prelude's `SKFENCED` reply.
    #[error("this consumer no longer owns the shard (lease {lease}); another member took it over")]
    Fenced {
        /// The owner lease.
        lease: String,
    },
    /// A sharded stream exists with another shard count (the layout
    /// script's `SKCOUNT` reply).
    #[error("{stream} is already sharded {have} ways, not {wanted}; change the count with `streamkeeper shard resize {stream} --shards {wanted}`")]
    ShardCountMismatch {
        /// The logical stream.
        stream: StreamKey,
        /// Shards it has.
        have: u32,
        /// Shards asked for.
        wanted: u32,
    },
    /// An append went to a shard a resize sealed (docs/design.md §6
    /// "Resharding"): the producer routed by an older layout. A
    /// [`ShardedProducer`](crate::shard::ShardedProducer) re-reads the
    /// layout and sends it again; anyone else should do the same.
    #[error(
        "{stream} was sealed by a resize: re-read the layout and append to the current shards"
    )]
    ShardSealed {
        /// The sealed shard.
        stream: StreamKey,
    },
    /// The component was shut down.
    #[error("{0} has been shut down")]
    Shutdown(&'static str),
}

impl Error {
    /// Wraps a redis error with context, turning well-known server errors
    /// into their own variants.
    pub fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Error::Redis {
            context: context.into(),
            source,
        }
    }

    /// True when the server refused a command to this user (ACL): a
    /// least-privilege user (docs/design.md §6) may run stream commands
    /// and scripts of them, nothing else.
    pub fn is_noperm(&self) -> bool {
        matches!(self, Error::Redis { source, .. } if is_noperm(source))
    }

    /// Whether an append was refused by a shard a resize sealed (also
    /// as the cause of [`Error::PartlyWritten`]): re-read the layout and
    /// send the rest again.
    pub fn is_sealed(&self) -> bool {
        match self {
            Error::ShardSealed { .. } => true,
            Error::PartlyWritten { cause, .. } => cause.is_sealed(),
            _ => false,
        }
    }

    /// True when the same operation may succeed if retried after a
    /// reconnect: I/O errors, timeouts, and the server errors a failover or
    /// restart produces (`UNBLOCKED`, `READONLY`, `LOADING`, `MASTERDOWN`,
    /// `TRYAGAIN`, `CLUSTERDOWN`, `MOVED`, `ASK`, `BUSY`, `NOSCRIPT` on a
    /// node that just became a primary), and a script
    /// refused for a "non local key" while its slot migrates.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Redis { source, .. } => {
                redis_is_retryable(source)
            }
            Error::BatchFailed { retryable, .. } => *retryable,
            // The sentinels may name a master again in a moment.
            Error::NoMaster { .. } => true,
            // A failover or a lagging replica: send the batch again.
            Error::NotReplicated { .. } => true,
            _ => false,
        }
    }

    /// `cause`, or [`Error::PartlyWritten`] when some entries were written
    /// before it.
    pub fn partly_written(written: Vec<crate::types::StreamId>, cause: Error) -> Error {
        if written.is_empty() {
            cause
        } else {
            Error::PartlyWritten {
                written,
                cause: Box::new(cause),
            }
        }
    }

    /// True when this wraps a server error saying the key's slot is moving;
    /// see [`slot_in_motion`].
    pub fn slot_in_motion(&self) -> bool {
        match self {
            Error::Connect { source, .. } | Error::Redis { source, .. } => slot_in_motion(source),
            _ => false,
        }
    }

    /// The Redis error code (`NOGROUP`, `WRONGTYPE`, …), when this wraps one.
    pub fn server_code(&self) -> Option<String> {
        match self {
            Error::Connect { source, .. } | Error::Redis { source, .. } => error_code(source),
            _ => None,
        }
    }
}

/// A redis-rs error as one readable line: the server's own `CODE message`
/// (also out of a pipeline reply, without redis-rs's `Pipeline failures:
/// [(Index …)]` wrapping), else redis-rs's text.
pub fn redis_text(e: &redis::RedisError) -> String {
    if let Some(items) = e.clone().into_server_errors() {
        if let Some((_, first)) = items.first() {
            let code = first.code();
            return match first.details() {
                Some(d) => format!("{code} {d}"),
                None => code.to_string(),
            };
        }
    }
    match (e.code(), e.detail()) {
        (Some(code), Some(d)) => format!("{code} {d}"),
        _ => e.to_string(),
    }
    .replace('\n', " ")
}

/// Why a connection failed, and the fix that fits the cause: wrong
/// credentials are not a server that is down.
fn connect_message(url: &str, e: &redis::RedisError) -> String {
    let code = error_code(e);
    let auth = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(code.as_deref(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if auth {
        format!(
            "cannot connect to Redis at {url}: authentication failed ({}); check the user \
             and password in the URL (redis://user:password@host:port)",
            redis_text(e)
        )
    } else {
        format!(
            "cannot connect to Redis at {url}: {}; is redis-server running there? (set \
             --redis or STREAMKEEPER_REDIS)",
            redis_text(e)
        )
    }
}

/// Server error codes that a failover, a restart or resharding produce.
/// `NOSCRIPT` too: redis-rs loads a missing script and calls it again, but
/// on a cluster right after a failover its `SCRIPT LOAD` can reach other
/// nodes than the new primary, which then still lacks the script (a
/// consumer's retry taker stopped on it in a CI run); the next call loads
/// it again.
const RETRYABLE_CODES: &[&str] = &[
    "NOSCRIPT",
    "UNBLOCKED",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
    "BUSY",
    "NOREPLICAS",
];

/// Classifies a raw redis-rs error; see [`Error::is_retryable`].
pub fn redis_is_retryable(e: &redis::RedisError) -> bool {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    if error_code(e).is_some_and(|c| RETRYABLE_CODES.contains(&c.as_str())) {
        return true;
    }
    slot_in_motion(e)
}

/// True when `e` says the key's slot is moving between nodes: a redirect
/// (`MOVED`, `ASK`), `TRYAGAIN` (a multi-key command while the keys are
/// split between two nodes), `CLUSTERDOWN`, or a script that reached a
/// node while its slot was moving ("non local key"). The same command
/// succeeds once the slot has settled; asking again is cheap.
pub fn slot_in_motion(e: &redis::RedisError) -> bool {
    error_code(e)
        .is_some_and(|c| matches!(c.as_str(), "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN"))
        || redis_text(e).contains("non local key")
}

/// The server error code (`WRONGTYPE`, `NOGROUP`, …) of an error, also when
/// it came back inside a pipeline reply.
/// Where a `MOVED` or `ASK` error (also one that aborted a transaction)
/// points: `host:port` of the node that serves the slot now.
pub fn redirected_to(e: &redis::RedisError) -> Option<String> {
    let detail = match e.code() {
        Some("MOVED" | "ASK") => e.detail().map(str::to_string),
        _ => {
            let items = e.clone().into_server_errors()?;
            let first = &items.first()?.1;
            matches!(first.code(), "MOVED" | "ASK")
                .then(|| first.details().map(str::to_string))
                .flatten()
        }
    }?;
    // "<slot> <host>:<port>"
    detail.split_whitespace().nth(1).map(str::to_string)
}

/// The user is not granted the command or key (`NOPERM`): checks beyond
/// the work itself degrade to "unknown" on it (docs/design.md §6,
/// "Least privilege").
/// Inside a script the server says it as `ERR The user executing the
/// script can't run this command…` (or `…can't access … keys`).
pub fn is_noperm(e: &redis::RedisError) -> bool {
    error_code(e).as_deref() == Some("NOPERM")
        || e.to_string()
            .contains("The user executing the script can't")
}

/// An aborted transaction (`EXECABORT`) is named by the error that aborted
/// it (a `MOVED` after a failover, a `WRONGTYPE`, an `OOM`).
pub fn error_code(e: &redis::RedisError) -> Option<String> {
    let inner = || {
        let items = e.clone().into_server_errors()?;
        let first = items.first()?;
        Some(first.1.code().to_string())
    };
    match e.code() {
        Some("EXECABORT") => inner().or_else(|| Some("EXECABORT".into())),
        Some(c) => Some(c.to_string()),
        None => inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(text: &str) -> redis::RedisError {
        // Parse a real RESP error line the way redis-rs does for a reply.
        let mut bytes = b"-".to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        match redis::parse_redis_value(&bytes) {
            Ok(redis::Value::ServerError(e)) => e.into(),
            other => panic!("expected a server error, got {other:?}"),
        }
    }

    #[test]
    fn failover_errors_are_retryable() {
        for text in [
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
            "MASTERDOWN Link with MASTER is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
            "NOSCRIPT No matching script. Please use EVAL.",
        ] {
            let e = Error::redis("read", server_error(text));
            assert!(e.is_retryable(), "{text} should be retryable");
        }
    }

    #[test]
    fn mistakes_are_not_retryable() {
        for text in [
            "NOGROUP No such key 's' or consumer group 'g'",
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "ERR Invalid stream ID specified as stream command argument",
        ] {
            let e = Error::redis("read", server_error(text));
            assert!(!e.is_retryable(), "{text} should not be retryable");
        }
        assert!(!Error::InvalidId { input: "x".into() }.is_retryable());
    }

    #[test]
    fn script_refusals_are_not_retryable() {
        let fenced = Error::Fenced {
            lease: "{s:0}:owner:g".into(),
        };
        assert!(!fenced.is_retryable());
        assert!(fenced.to_string().contains("no longer owns"));
        let recount = Error::ShardCountMismatch {
            stream: StreamKey::new("s").expect("key"),
            have: 3,
            wanted: 2,
        };
        assert!(!recount.is_retryable());
    }

    #[test]
    fn io_errors_are_retryable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::redis("read", redis::RedisError::from(io));
        assert!(e.is_retryable());
    }
}
