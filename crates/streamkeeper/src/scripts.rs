//! The server-side Lua scripts, loaded once from `src/lua/*.lua`.
//!
//! Each script's header says its KEYS, ARGV and reply. `redis::Script`
//! sends `EVALSHA` and falls back to `EVAL` when the server does not have
//! the script cached (after a restart or failover).

use std::sync::LazyLock;

use redis::Script;

/// `dead_letter.lua`: move a pending entry to `{S}:dlq` and ack it.
pub(crate) static DEAD_LETTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/dead_letter.lua")));
