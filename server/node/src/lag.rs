//! Which followers are falling behind for good, as the leader sees them: the `lagging` flag of
//! `status`, so that a cluster silently running on a bare majority is reported degraded.
//!
//! A follower that is merely slow still advances; one whose snapshots are refused, whose disk is
//! full, or that is down does not. Once per sampling period the leader records each follower's
//! match index and how far it trails the leader's log. A follower is lagging when, over the whole
//! window, it trailed and its match index never moved, or it trailed by more than
//! [`LAG_ENTRIES_THRESHOLD`] and the gap grew at every sample. Time comes from the node's ticks,
//! so the simulation sees the same verdicts as production.

use std::collections::{BTreeMap, VecDeque};

use consensus::NodeId;

/// Samples in one window.
pub const WINDOW_SAMPLES: usize = 5;
/// A follower whose gap grows at every sample is lagging once the gap exceeds this many entries.
pub const LAG_ENTRIES_THRESHOLD: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    match_index: u64,
    behind_entries: u64,
}

/// The leader's recent samples of every follower.
#[derive(Debug, Default)]
pub struct LagTracker {
    samples: BTreeMap<NodeId, VecDeque<Sample>>,
}

impl LagTracker {
    /// Records one sample of `follower`: its match index, and the leader's last index.
    pub fn record(&mut self, follower: NodeId, match_index: u64, leader_last_index: u64) {
        let samples = self.samples.entry(follower).or_default();
        if samples.len() == WINDOW_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample {
            match_index,
            behind_entries: leader_last_index.saturating_sub(match_index),
        });
        debug_assert!(samples.len() <= WINDOW_SAMPLES);
    }

    /// Forgets everything (this node stopped leading).
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// Whether `follower` is falling behind for good (see the module comment).
    pub fn is_lagging(&self, follower: NodeId) -> bool {
        let Some(samples) = self.samples.get(&follower) else {
            return false;
        };
        if samples.len() < WINDOW_SAMPLES {
            return false;
        }
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return false;
        };
        let stuck = last.behind_entries > 0 && first.match_index == last.match_index;
        let growing = last.behind_entries > LAG_ENTRIES_THRESHOLD
            && samples
                .iter()
                .zip(samples.iter().skip(1))
                .all(|(earlier, later)| later.behind_entries > earlier.behind_entries);
        stuck || growing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(samples: &[(u64, u64)]) -> LagTracker {
        let mut tracker = LagTracker::default();
        for &(match_index, last_index) in samples {
            tracker.record(2, match_index, last_index);
        }
        tracker
    }

    #[test]
    fn a_follower_that_keeps_up_or_catches_up_is_not_lagging() {
        assert!(!tracker(&[(10, 10); 5]).is_lagging(2), "in step");
        assert!(!tracker(&[(10, 12), (14, 16), (18, 20), (22, 24), (26, 28)]).is_lagging(2));
        let catching_up = [
            (0, 90_000),
            (20_000, 91_000),
            (40_000, 92_000),
            (60_000, 93_000),
            (80_000, 94_000),
        ];
        assert!(!tracker(&catching_up).is_lagging(2));
        assert!(
            !tracker(&[(10, 20); 4]).is_lagging(2),
            "not a whole window yet"
        );
        assert!(!LagTracker::default().is_lagging(2));
    }

    #[test]
    fn a_stuck_or_ever_further_behind_follower_is_lagging() {
        assert!(
            tracker(&[(69_672, 100_201); 5]).is_lagging(2),
            "stuck, cluster idle"
        );
        assert!(
            tracker(&[(5, 10), (5, 20), (5, 30), (5, 40), (5, 50)]).is_lagging(2),
            "stuck"
        );
        let falling = [
            (1_000, 2_500),
            (2_000, 4_000),
            (3_000, 5_500),
            (4_000, 7_000),
            (5_000, 8_500),
        ];
        assert!(
            tracker(&falling).is_lagging(2),
            "advancing, but ever further behind"
        );
        let mut recovered = tracker(&[(5, 50); 5]);
        recovered.record(2, 50, 50);
        assert!(!recovered.is_lagging(2), "it moved again");
    }
}
