//! Majorities: how many votes or acknowledgements make a quorum, and the tally of an election
//! (Raft §5.2: a candidate wins with votes from a majority; §5.3: an entry is committed once a
//! majority holds it).

use std::collections::BTreeMap;

use crate::message::NodeId;

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
