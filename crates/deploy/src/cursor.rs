//! A node's place in a shared change log.
//!
//! Sequence numbers are taken when a change is made, so a transaction that
//! took 7 may commit after the one that took 8, and one that rolls back
//! leaves 7 unused for good. A reader that remembered only "the last number
//! seen" would skip 7 when it commits late. The cursor instead keeps the
//! highest number below which everything was applied, the changes applied
//! above it, and how long the lowest gap has been open: a gap is waited for
//! ([`GAP_WAIT`]) and then given up as a rolled-back number.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long a gap in the log is waited for before it is taken for a
/// transaction that rolled back. Verge's changing transactions take
/// milliseconds; one that commits later than this is missed, which is why
/// what is derived from the log (the KV read cache) also ages out.
pub const GAP_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ChangeCursor {
    /// Every change up to this one was applied (or its number given up).
    low: u64,
    /// Changes applied above `low`.
    applied: BTreeSet<u64>,
    /// Since when the gap just above `low` has been open.
    gap: Option<(u64, Instant)>,
}

/// What [`ChangeCursor::settle`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every change up to the cursor's position was applied, or a gap is
    /// still being waited for.
    InStep,
    /// A gap was open for [`GAP_WAIT`] and is given up: a change may have
    /// been missed, so state derived from the log should be rebuilt.
    GaveUp { below: u64 },
}

impl ChangeCursor {
    /// A cursor at `position`: changes up to it are already reflected.
    pub fn new(position: u64) -> ChangeCursor {
        ChangeCursor {
            low: position,
            applied: BTreeSet::new(),
            gap: None,
        }
    }

    /// Read the log after this number.
    pub fn position(&self) -> u64 {
        self.low
    }

    /// Whether change `seq` still has to be applied.
    pub fn is_new(&self, seq: u64) -> bool {
        seq > self.low && !self.applied.contains(&seq)
    }

    /// Notes that change `seq` was applied.
    pub fn applied(&mut self, seq: u64) {
        if seq > self.low {
            self.applied.insert(seq);
        }
        while self.applied.remove(&(self.low + 1)) {
            self.low += 1;
        }
    }

    /// Called after each read of the log, at `now`.
    pub fn settle(&mut self, now: Instant) -> Settled {
        let Some(&first) = self.applied.first() else {
            self.gap = None;
            return Settled::InStep;
        };
        match self.gap {
            Some((low, since)) if low == self.low => {
                if now.duration_since(since) < GAP_WAIT {
                    return Settled::InStep;
                }
                // Give up the numbers below the first applied change and
                // move over what follows contiguously.
                let below = first;
                self.low = first - 1;
                self.gap = None;
                self.applied(first);
                Settled::GaveUp { below }
            }
            _ => {
                self.gap = Some((self.low, now));
                Settled::InStep
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_changes_move_the_position() {
        let mut cursor = ChangeCursor::new(4);
        for seq in [5, 6, 7] {
            assert!(cursor.is_new(seq));
            cursor.applied(seq);
        }
        assert_eq!(cursor.position(), 7);
        assert!(!cursor.is_new(6));
        assert_eq!(cursor.settle(Instant::now()), Settled::InStep);
    }

    #[test]
    fn a_late_commit_below_applied_changes_is_still_read() {
        let start = Instant::now();
        let mut cursor = ChangeCursor::new(4);
        // 5 is taken but not committed yet; 6 and 7 are visible.
        cursor.applied(6);
        cursor.applied(7);
        assert_eq!(cursor.position(), 4, "reading resumes after the gap");
        assert_eq!(cursor.settle(start), Settled::InStep);
        assert!(!cursor.is_new(7), "applied changes are not applied twice");
        // 5 commits a moment later.
        assert!(cursor.is_new(5));
        cursor.applied(5);
        assert_eq!(cursor.position(), 7);
        assert_eq!(
            cursor.settle(start + Duration::from_secs(1)),
            Settled::InStep
        );
    }

    #[test]
    fn a_gap_that_never_fills_is_given_up_after_the_wait() {
        let start = Instant::now();
        let mut cursor = ChangeCursor::new(4);
        cursor.applied(6);
        cursor.applied(8);
        assert_eq!(cursor.settle(start), Settled::InStep);
        assert_eq!(
            cursor.settle(start + GAP_WAIT - Duration::from_millis(1)),
            Settled::InStep
        );
        assert_eq!(cursor.position(), 4);
        assert_eq!(
            cursor.settle(start + GAP_WAIT),
            Settled::GaveUp { below: 6 }
        );
        assert_eq!(cursor.position(), 6);
        // The gap at 7 is a new one: its wait starts now.
        let later = start + GAP_WAIT;
        assert_eq!(cursor.settle(later), Settled::InStep);
        assert_eq!(
            cursor.settle(later + Duration::from_secs(5)),
            Settled::InStep
        );
        cursor.applied(7);
        assert_eq!(cursor.position(), 8);
    }
}
