//! Deliberate storage bugs, for the simulation's planted-bug catalogue
//! (`ringleader_node::planted`).
//!
//! They exist only in builds with the cargo feature `planted-bugs` (test builds): without it
//! every check below is the constant `false` and the production code paths are the correct
//! ones, whatever a caller plants.

/// A deliberate bug in the storage engine or the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageBug {
    /// Raft Figure 2 ("persistent state on all servers: updated on stable storage before
    /// responding to RPCs"): [`crate::LogStore::append`] writes the hard state (term, vote)
    /// only together with entries, so a vote alone is never made durable and a node that
    /// restarts may vote again in the same term.
    VoteNotPersisted,
    /// Thesis §6.3: the state machine executes a session's write but does not record its
    /// outcome, so a retry of a write that was applied (its answer lost) is applied again.
    SessionOutcomeNotCached,
}

/// Whether `bug` is the planted one. Always false without the `planted-bugs` feature.
#[cfg(feature = "planted-bugs")]
#[inline]
pub(crate) fn active(planted: Option<StorageBug>, bug: StorageBug) -> bool {
    planted == Some(bug)
}

/// Whether `bug` is the planted one. Always false without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub(crate) fn active(_planted: Option<StorageBug>, _bug: StorageBug) -> bool {
    false
}
