//! [`Budget`]: what is left of `ConsumerOptions::limit`, drawn from by
//! the read loop, the reclaimer and (shared mode) every shard's consumer.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// What is left of [`ConsumerOptions::limit`], shared by the read loop and
/// the reclaimer (and, in [`crate::shard::run_shared`], by every shard's
/// consumer): each reserves before it reads and settles afterwards, giving
/// back what it did not get.
#[derive(Debug, Clone, Default)]
pub(crate) struct Budget(Option<Arc<BudgetInner>>);

#[derive(Debug)]
struct BudgetInner {
    left: std::sync::atomic::AtomicU64,
    /// Reserved by reads still in progress.
    reserved: std::sync::atomic::AtomicU64,
    /// How many consumers draw from it: each reservation takes at most an
    /// even share of what is left.
    sharers: u64,
    /// Cancelled once the budget is used up for good, to wake the loops
    /// waiting for work that will never come (see [`Budget::spent`]).
    spent: CancellationToken,
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Self {
        Budget::shared(limit, 1)
    }

    /// A budget `sharers` consumers draw from (the shards of
    /// [`crate::shard::run_shared`]).
    pub(crate) fn shared(limit: Option<u64>, sharers: usize) -> Self {
        let budget = Budget(limit.map(|l| {
            Arc::new(BudgetInner {
                left: std::sync::atomic::AtomicU64::new(l),
                reserved: std::sync::atomic::AtomicU64::new(0),
                sharers: (sharers as u64).max(1),
                spent: CancellationToken::new(),
            })
        }));
        budget.mark_if_spent();
        budget
    }

    /// Reserves up to `want`; 0 means nothing is left right now.
    pub(crate) fn reserve(&self, want: usize) -> usize {
        use std::sync::atomic::Ordering;
        let Some(b) = &self.0 else { return want };
        let want = want as u64;
        let mut got = 0;
        let _ = b
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| {
                got = l.min(want).min(l.div_ceil(b.sharers));
                Some(l - got)
            });
        b.reserved.fetch_add(got, Ordering::SeqCst);
        usize::try_from(got).unwrap_or(usize::MAX)
    }

    /// Ends a reservation of `reserved` that received `got` entries.
    pub(crate) fn settle(&self, reserved: usize, got: usize) {
        use std::sync::atomic::Ordering;
        if let Some(b) = &self.0 {
            b.left
                .fetch_add(reserved.saturating_sub(got) as u64, Ordering::SeqCst);
            b.reserved.fetch_sub(reserved as u64, Ordering::SeqCst);
        }
        // Only a settle (or a zero limit) can use the budget up for good.
        self.mark_if_spent();
    }

    fn mark_if_spent(&self) {
        if let Some(b) = &self.0 {
            if self.exhausted() {
                b.spent.cancel();
            }
        }
    }

    /// True when other consumers draw from this budget too.
    /// Whether there is a limit at all.
    pub(crate) fn is_limited(&self) -> bool {
        self.0.is_some()
    }

    /// Resolves once the budget is used up for good; never without a limit.
    pub(crate) async fn spent(&self) {
        match &self.0 {
            Some(b) => b.spent.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// True when the limit is set and used up for good: nothing left and
    /// no read in progress that could give some back.
    pub(crate) fn exhausted(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0.as_ref().is_some_and(|b| {
            b.left.load(Ordering::SeqCst) == 0 && b.reserved.load(Ordering::SeqCst) == 0
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Budget;

    /// Whether `spent()` resolves within a minute of (paused) test time.
    async fn spent_within_a_minute(budget: &Budget) -> bool {
        tokio::time::timeout(Duration::from_secs(60), budget.spent())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_every_reservation_is_granted_and_never_spent() {
        let budget = Budget::new(None);
        assert_eq!(budget.reserve(500), 500);
        budget.settle(500, 0);
        assert!(!budget.exhausted());
        assert!(!budget.is_limited());
        assert!(!spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_takes_at_most_what_is_left() {
        let budget = Budget::new(Some(5));
        assert_eq!(budget.reserve(3), 3);
        assert_eq!(budget.reserve(3), 2);
        assert_eq!(budget.reserve(3), 0, "nothing is left while both reads run");
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_read_did_not_get_is_given_back() {
        let budget = Budget::new(Some(5));
        assert_eq!(budget.reserve(5), 5);
        budget.settle(5, 2);
        assert!(!budget.exhausted());
        assert_eq!(budget.reserve(10), 3, "the 3 unread come back");
    }

    #[tokio::test(start_paused = true)]
    async fn spent_resolves_only_once_the_last_reservation_is_settled() {
        let budget = Budget::new(Some(2));
        assert_eq!(budget.reserve(2), 2);
        // Nothing left, but the read in progress may give some back.
        assert!(!budget.exhausted());
        assert!(!spent_within_a_minute(&budget).await);
        budget.settle(2, 2);
        assert!(budget.exhausted());
        assert!(spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_limit_is_spent_from_the_start() {
        let budget = Budget::new(Some(0));
        assert_eq!(budget.reserve(1), 0);
        assert!(budget.exhausted());
        assert!(spent_within_a_minute(&budget).await);
    }

    #[tokio::test(start_paused = true)]
    async fn sharers_each_take_an_even_share_of_what_is_left() {
        let budget = Budget::shared(Some(10), 3);
        assert!(budget.is_limited());
        // ceil(10 / 3) = 4, then ceil(6 / 3) = 2, then ceil(4 / 3) = 2.
        assert_eq!(budget.reserve(100), 4);
        assert_eq!(budget.reserve(100), 2);
        assert_eq!(budget.reserve(100), 2);
        let clone = budget.clone();
        assert_eq!(clone.reserve(100), 1, "clones draw from the same budget");
        assert_eq!(budget.reserve(100), 1);
        assert_eq!(budget.reserve(100), 0);
        for got in [4, 2, 2, 1, 1] {
            budget.settle(got, got);
        }
        assert!(clone.exhausted());
        assert!(spent_within_a_minute(&clone).await);
    }
}
