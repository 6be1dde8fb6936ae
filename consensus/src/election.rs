//! Election helpers: the seeded randomness behind election timeouts, and vote counting.
//!
//! Raft §5.2 breaks split votes with randomized timeouts. Determinism matters more to us than
//! entropy: the same `Config::seed` and the same inputs give the same elections, so a failing
//! simulation seed replays exactly. Seeds must differ between nodes (the harness and the server
//! derive them from the node id), otherwise identical nodes would keep splitting the vote.

use std::collections::BTreeMap;

use crate::message::NodeId;

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to spread timeouts.
#[derive(Clone, Debug)]
pub(crate) struct Prng {
    state: u64,
}

impl Prng {
    pub(crate) fn new(seed: u64) -> Prng {
        Prng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `[low, high)`; `low` when the range is empty.
    pub(crate) fn in_range(&mut self, low: u32, high: u32) -> u32 {
        if high <= low {
            return low;
        }
        low + (self.next_u64() % u64::from(high - low)) as u32
    }
}

/// The number of votes (or acknowledgements) that makes a majority of `voters`.
pub(crate) fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Votes received in the current (pre-)election; the first answer from each voter counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct VoteTally {
    votes: BTreeMap<NodeId, bool>,
}

impl VoteTally {
    pub(crate) fn reset(&mut self) {
        self.votes.clear();
    }

    pub(crate) fn record(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
    }

    pub(crate) fn result(&self, voters: &[NodeId]) -> VoteResult {
        let granted = voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&true))
            .count();
        let rejected = voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        let needed = quorum(voters.len());
        if granted >= needed {
            VoteResult::Won
        } else if voters.len() - rejected < needed {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_and_stays_in_range() {
        let mut a = Prng::new(7);
        let mut b = Prng::new(7);
        for _ in 0..1000 {
            let x = a.in_range(10, 20);
            assert_eq!(x, b.in_range(10, 20));
            assert!((10..20).contains(&x));
        }
    }

    #[test]
    fn tally_decides_as_soon_as_the_outcome_is_certain() {
        let voters = [1, 2, 3, 4, 5];
        let mut tally = VoteTally::default();
        tally.record(1, true);
        tally.record(2, true);
        assert_eq!(tally.result(&voters), VoteResult::Pending);
        tally.record(3, false);
        tally.record(4, false);
        assert_eq!(tally.result(&voters), VoteResult::Pending);
        tally.record(5, false);
        assert_eq!(tally.result(&voters), VoteResult::Lost);
        tally.record(5, true);
        assert_eq!(
            tally.result(&voters),
            VoteResult::Lost,
            "first answer counts"
        );
    }
}
