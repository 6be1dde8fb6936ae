//! Deliberate Raft bugs, for the simulation's planted-bug catalogue (`ringleader_node::planted`).
//!
//! Each one is a rule of the Raft paper or of Ongaro's thesis broken at the one place a real
//! implementation could get it wrong; the simulation must catch every one of them. They exist
//! only in builds with the cargo feature `planted-bugs` (test builds): without it
//! [`Config::planted_bug`](crate::Config::planted_bug) is ignored, every check below is the
//! constant `false`, and the production code paths are the correct ones.

/// A deliberate bug in the consensus core. See each variant for the rule it breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftBug {
    /// Raft §5.4.2, Figure 8: a leader commits an entry of an older term once a majority holds
    /// it, instead of only entries of its own term.
    CommitOldTerm,
    /// Figure 2, AppendEntries rule 5: a follower sets its commit index to
    /// `min(leaderCommit, its last index)` instead of `min(leaderCommit, index of last new
    /// entry)`, so it may commit a stale suffix the request never vouched for.
    CommitBeyondLastNew,
    /// Figure 2, AppendEntries rule 5, on the leader's side: a heartbeat carries the leader's
    /// whole commit index instead of `min(commit, the follower's match)` (etcd's rule), so a
    /// follower whose log beyond its match is a stale suffix from an old leader commits it.
    HeartbeatCommitUnclamped,
    /// Thesis §6.4 step 1: a new leader serves ReadIndex reads before an entry of its own term
    /// has committed, with a commit index that may miss writes its predecessor acknowledged.
    ReadBeforeFirstCommit,
    /// Thesis §6.4 step 3: the leader answers a ReadIndex read at once, without the heartbeat
    /// round that confirms it still leads: a deposed leader serves stale reads.
    UnconfirmedReads,
    /// Raft §5.2, Figure 2 RequestVote rule 2: a node that already voted in this term votes
    /// again for another candidate, so two leaders can be elected in one term.
    DoubleVote,
    /// Figure 2, AppendEntries rule 3: a follower drops every entry after the request's last one
    /// even when they all match (only a *conflicting* entry and what follows may go), so a
    /// stale or duplicated AppendEntries erases entries it has already acknowledged.
    TruncateMatchingLog,
    /// Raft §7, Figure 13 rules 6–7: a follower installs a snapshot that its log already
    /// covers (a stale or duplicated InstallSnapshot), discarding the newer log after it.
    StaleSnapshot,
    /// Raft §5.3: a leader commits an entry once `voters / 2` nodes hold it, one short of a
    /// majority (with 3 nodes, on its own).
    MajorityOffByOne,
    /// Raft §7: a leader never sends InstallSnapshot, so a follower that needs entries the
    /// leader compacted away never catches up (a liveness bug: recovery stops).
    NeverSendSnapshot,
}

/// Whether `bug` is the planted one. Always false without the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
#[inline]
pub(crate) fn active(planted: Option<RaftBug>, bug: RaftBug) -> bool {
    planted == Some(bug)
}

/// Whether `bug` is the planted one. Always false without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub(crate) fn active(_planted: Option<RaftBug>, _bug: RaftBug) -> bool {
    false
}
