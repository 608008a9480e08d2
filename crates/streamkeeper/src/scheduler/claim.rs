//! The claim script's arguments and reply as types (`lua/schedule_claim.lua`):
//! a [`ClaimBatch`] of [`ClaimItem`]s writes the script's KEYS and ARGV,
//! and [`ClaimReply`] parses what it returns. Nobody else encodes ARGV.

use std::collections::HashSet;

use redis::Value;

use crate::error::{Error, Result};
use crate::reply::text;
use crate::scripts;
use crate::types::StreamKey;

/// One due schedule to claim: the due time this instance saw, the next
/// due time, the ticks to emit and where.
#[derive(Debug, Clone)]
pub(super) struct ClaimItem {
    /// The schedule's name.
    pub name: String,
    /// The due time this instance read; the claim fails if it moved.
    pub expected_due: u64,
    /// The due time after the claim.
    pub next_due: u64,
    /// The target stream; `None` for the two-step path (outbox).
    pub target: Option<StreamKey>,
    /// The ticks' due times.
    pub ticks: Vec<u64>,
    /// Fields of every tick.
    pub fields: Vec<(String, String)>,
}

/// The items of one script call and the distinct target streams (KEYS).
#[derive(Debug, Default)]
pub(super) struct ClaimBatch {
    items: Vec<ClaimItem>,
    targets: Vec<StreamKey>,
}

/// KEYS before the targets: due, state, outbox.
const FIXED_KEYS: usize = 3;

impl ClaimBatch {
    /// Adds an item (its target becomes a KEY once).
    pub fn push(&mut self, item: ClaimItem) {
        if let Some(t) = &item.target {
            if !self.targets.contains(t) {
                self.targets.push(t.clone());
            }
        }
        self.items.push(item);
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// The items, in the order they were added.
    pub fn items(&self) -> &[ClaimItem] {
        &self.items
    }

    /// Runs the script (KEYS: due, state, outbox, targets…).
    pub async fn invoke<C: redis::aio::ConnectionLike + Send>(
        &self,
        conn: &mut C,
        due: &str,
        state: &str,
        outbox: &str,
        now: u64,
    ) -> Result<ClaimReply> {
        let mut invocation = scripts::SCHEDULE_CLAIM.key(due);
        invocation.key(state).key(outbox);
        for t in &self.targets {
            invocation.key(t);
        }
        invocation.arg(now).arg(self.items.len());
        for item in &self.items {
            // 1-based KEYS index of the target, 0 = two-step.
            let target_index = item.target.as_ref().map_or(0, |t| {
                self.targets.iter().position(|k| k == t).unwrap_or(0) + FIXED_KEYS + 1
            });
            invocation
                .arg(&item.name)
                .arg(item.expected_due)
                .arg(item.next_due)
                .arg(target_index)
                .arg(item.ticks.len());
            for t in &item.ticks {
                invocation.arg(t);
            }
            invocation.arg(item.fields.len());
            for (k, v) in &item.fields {
                invocation.arg(k).arg(v);
            }
        }
        let v: Value = invocation
            .invoke_async(conn)
            .await
            .map_err(|e| Error::redis("schedule claim script", e))?;
        ClaimReply::parse(v)
    }
}

/// What the claim script did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ClaimReply {
    /// Ticks appended or queued.
    pub emitted: u64,
    /// Schedules whose due time this call moved.
    pub claimed: u64,
    /// Outbox fields `"<name> <due>"` this call queued.
    pub queued: HashSet<String>,
    /// Schedules skipped because their target is not a stream: (name, type).
    pub skipped: Vec<(String, String)>,
    /// Positions in the batch of the items this call claimed (their ticks
    /// emitted or queued).
    pub claimed_items: Vec<usize>,
}

impl ClaimReply {
    /// Parses `{emitted, claimed, queued…, skipped name/type pairs…,
    /// positions of the claimed items…}`.
    pub fn parse(v: Value) -> Result<Self> {
        let Value::Array(v) = v else {
            return Err(Error::Protocol {
                command: "schedule claim script",
                detail: format!("{v:?}"),
            });
        };
        let num = |i: usize| match v.get(i) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let list = |i: usize| match v.get(i) {
            Some(Value::Array(items)) => items.iter().map(text).collect::<Vec<_>>(),
            _ => Vec::new(),
        };
        let skipped = list(3);
        Ok(ClaimReply {
            emitted: num(0),
            claimed: num(1),
            queued: list(2).into_iter().collect(),
            skipped: skipped
                .chunks(2)
                .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
                .collect(),
            claimed_items: match v.get(4) {
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Int(n) => usize::try_from(*n).ok(),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_parses_counts_queued_ticks_and_skipped_schedules() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            Value::Int(3),
            Value::Int(2),
            Value::Array(vec![bulk("a 1000")]),
            Value::Array(vec![bulk("bad"), bulk("string")]),
            Value::Array(vec![Value::Int(0), Value::Int(2)]),
        ]);
        let r = ClaimReply::parse(v).expect("reply");
        assert_eq!((r.emitted, r.claimed), (3, 2));
        assert!(r.queued.contains("a 1000"));
        assert_eq!(r.skipped, vec![("bad".to_string(), "string".to_string())]);
        assert_eq!(r.claimed_items, vec![0, 2]);
        assert!(ClaimReply::parse(Value::Nil).is_err());
    }
}
