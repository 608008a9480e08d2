//! The `sk-…` field names streamkeeper writes into entries (docs/design.md §5),
//! in one place: dead-letter metadata, retry bookkeeping, schedule ticks.
//! User fields never start with [`PREFIX`]; the Lua scripts spell the same
//! names (a test below checks they do).

/// Every streamkeeper field name starts with this; users may not use it.
pub const PREFIX: &str = "sk-";

/// Dead letter: the stream the entry died on.
pub const ORIGIN: &str = "sk-origin";
/// The ID an entry had when it was first appended (kept through retries
/// and dead-lettering).
pub const ORIGIN_ID: &str = "sk-origin-id";
/// Dead letter: the group that gave up on the entry.
pub const GROUP: &str = "sk-group";
/// Dead letter: handler runs the entry had.
pub const DELIVERIES: &str = "sk-deliveries";
/// Dead letter: why the entry was given up on.
pub const REASON: &str = "sk-reason";
/// Dead letter: when it died, ms since the Unix epoch.
pub const DEAD_AT: &str = "sk-dead-at";
/// A re-appended retry: the group it is meant for (others skip it).
pub const RETRY_GROUP: &str = "sk-retry-group";
/// A re-appended retry: failed attempts before this one.
pub const ATTEMPT: &str = "sk-attempt";
/// The reserved consumer of every group that holds the group's parked
/// retries (`lua/retry_store.lua`); no worker may take this name.
pub const RETRY_CONSUMER: &str = "sk-retry";
/// A schedule tick: the schedule's name.
pub const SCHEDULE: &str = "sk-schedule";
/// A schedule tick: the due time it stands for, ms since the Unix epoch.
pub const DUE: &str = "sk-due";

/// Whether a field name is streamkeeper's metadata, not a user's field.
pub fn is_meta(name: &[u8]) -> bool {
    name.starts_with(PREFIX.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_write_the_names_declared_here() {
        let dead = include_str!("lua/dead_letter.lua");
        for f in [ORIGIN, ORIGIN_ID, GROUP, DELIVERIES, REASON, DEAD_AT] {
            assert!(
                dead.contains(&format!("'{f}'")),
                "dead_letter.lua lacks {f}"
            );
        }
        let moved = include_str!("lua/retry_move.lua");
        for f in [ORIGIN_ID, RETRY_GROUP, ATTEMPT] {
            assert!(
                moved.contains(&format!("'{f}'")),
                "retry_move.lua lacks {f}"
            );
        }
        let claim = include_str!("lua/schedule_claim.lua");
        for f in [SCHEDULE, DUE] {
            assert!(
                claim.contains(&format!("'{f}'")),
                "schedule_claim.lua lacks {f}"
            );
        }
        assert!(is_meta(REASON.as_bytes()) && !is_meta(b"reason"));
    }
}
