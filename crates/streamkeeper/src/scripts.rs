//! The server-side Lua scripts, loaded once from `src/lua/*.lua`.
//!
//! Each script's header says its KEYS, ARGV and reply. `redis::Script`
//! sends `EVALSHA` and falls back to `EVAL` when the server does not have
//! the script cached (after a restart or failover).

use std::sync::LazyLock;

use redis::Script;

/// A settling script behind the fence prelude (`lua/fence.lua`): the last
/// key and argument are the owner lease and token of ordered mode.
macro_rules! fenced_script {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(concat!(include_str!("lua/fence.lua"), include_str!(concat!("lua/", $file))))
        });
    };
}

macro_rules! script {
    ($(#[$doc:meta])* $name:ident, $file:literal) => {
        $(#[$doc])*
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("lua/", $file))));
    };
}

script!(
    /// Move a pending entry to `{S}:dlq` and ack it.
    DEAD_LETTER,
    "dead_letter.lua"
);
script!(
    /// Park a pending entry of a group until its retry is due.
    RETRY_STORE,
    "retry_store.lua"
);
script!(
    /// Hand a group's due parked retries to one consumer.
    RETRY_TAKE,
    "retry_take.lua"
);
script!(
    /// `XAUTOCLAIM` that leaves parked retries alone.
    RECLAIM,
    "reclaim.lua"
);
script!(
    /// Re-append due retries to `S`.
    RETRY_MOVE,
    "retry_move.lua"
);
script!(
    /// Acknowledge entries and keep the attempt marks in step.
    ACK,
    "ack.lua"
);
script!(
    /// Mark handler runs of entries that came back; return runs so far.
    ATTEMPT_START,
    "attempt_start.lua"
);
script!(
    /// Reset the idle time of entries a live consumer holds.
    TOUCH,
    "touch.lua"
);
script!(
    /// Move a dead letter back to `S`.
    DLQ_REPLAY,
    "dlq_replay.lua"
);
script!(
    /// Ack an input and append an output in one step.
    ACK_AND_PRODUCE,
    "ack_and_produce.lua"
);
script!(
    /// Take a fenced lease (ordered mode's shard owners) with a new token.
    LEASE_ACQUIRE,
    "lease_acquire.lua"
);
script!(
    /// Renew or release a lease (plain or fenced) if still ours.
    LEASE_KEEP,
    "lease_keep.lua"
);
script!(
    /// Create the layout of a sharded stream.
    SHARD_CREATE,
    "shard_create.lua"
);
script!(
    /// Seal a shard of an older layout generation at its cut.
    SHARD_SEAL,
    "shard_seal.lua"
);
script!(
    /// Change the live generations of a sharded stream's layout.
    SHARD_FLIP,
    "shard_flip.lua"
);
script!(
    /// Append at most once per dedupe key.
    SEND_ONCE,
    "send_once.lua"
);
script!(
    /// Claim due schedule ticks and emit them.
    SCHEDULE_CLAIM,
    "schedule_claim.lua"
);
script!(
    /// Compute the ack-based trim point and trim below it.
    TRIM_POINT,
    "trim_point.lua"
);
script!(
    /// Take or renew a plain lease.
    LEASE,
    "lease.lua"
);
script!(
    /// Hand a consumer's pending entries to another and delete it.
    HANDOFF,
    "handoff.lua"
);
script!(
    /// Delete a consumer that holds nothing.
    FORGET_CONSUMER,
    "forget_consumer.lua"
);

fenced_script!(
    /// `ACK` for a fenced (ordered-mode) consumer.
    ACK_FENCED,
    "ack.lua"
);
fenced_script!(
    /// `DEAD_LETTER` for a fenced (ordered-mode) consumer.
    DEAD_LETTER_FENCED,
    "dead_letter.lua"
);
fenced_script!(
    /// `XREADGROUP … >` for a fenced (ordered-mode) consumer.
    READ_NEW_FENCED,
    "read_new.lua"
);
fenced_script!(
    /// `RETRY_STORE` for a fenced (ordered-mode) consumer.
    RETRY_STORE_FENCED,
    "retry_store.lua"
);

/// `plain`, or `fenced` (its `*_FENCED` form) when a fence is given.
pub(crate) fn pick<'a>(
    fence: Option<&crate::lease::Fence>,
    plain: &'a Script,
    fenced: &'a Script,
) -> &'a Script {
    if fence.is_some() {
        fenced
    } else {
        plain
    }
}

/// The error of a settling script: a fence refusal (`SKFENCED`) is
/// [`Error::Fenced`](crate::Error::Fenced), anything else is explained as
/// an error of `command` by the group.
pub(crate) async fn settle_error<C: redis::aio::ConnectionLike + Send>(
    conn: &mut C,
    stream: &crate::types::StreamKey,
    group: &crate::types::GroupName,
    command: &str,
    e: redis::RedisError,
) -> crate::Error {
    match crate::lease::Fence::refusal(&e) {
        Some(refused) => refused,
        None => crate::explain::explain_group(conn, stream, group, command, e).await,
    }
}

/// Appends the fence's lease key and token last, where the fence prelude
/// (`lua/fence.lua`) pops them; nothing without a fence.
pub(crate) fn add_fence(
    invocation: &mut redis::ScriptInvocation<'_>,
    fence: Option<&crate::lease::Fence>,
) {
    if let Some(f) = fence {
        invocation.key(&f.key).arg(&f.token);
    }
}
