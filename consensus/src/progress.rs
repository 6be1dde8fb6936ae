//! The leader's view of one follower: how much of the log it holds and how to send it more.
//!
//! Three states, as in etcd-io/raft's `tracker.Progress` (thesis §5.3 / §10.2.1):
//! - **Probe**: we do not know where the follower's log diverges. One `AppendEntries` at a time;
//!   the next waits for its answer (or the next heartbeat response, in case it was lost).
//! - **Replicate**: the follower matched recently. Appends are pipelined optimistically, with at
//!   most `max_inflight_appends` unacknowledged, which bounds the leader's send queue per follower.
//! - **Snapshot**: the entries it needs were compacted; an `InstallSnapshot` is on its way and
//!   nothing else is sent until it is acknowledged (or presumed lost after an election timeout).
//!
//! Invariant: `match_index < next_index`, and `match_index` only grows within a term (it is a fact
//! the follower reported, and a follower in our term never drops entries matching ours).

use std::collections::VecDeque;

use crate::message::Index;

/// Replication state of one follower, exposed through `Status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    Probe,
    Replicate,
    Snapshot { pending_index: Index },
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: Index,
    pub(crate) next_index: Index,
    pub(crate) state: ReplicationState,
    /// Probe: an append is outstanding, so wait before sending another.
    pub(crate) probe_sent: bool,
    /// Replicate: last index of each unacknowledged append, oldest first.
    inflight: VecDeque<Index>,
    /// Leader ticks since any message from this peer arrived (CheckQuorum, `Status::last_heard`).
    pub(crate) ticks_since_heard: u32,
    /// Leader ticks spent in the current state (detects a lost `InstallSnapshot`).
    pub(crate) ticks_in_state: u32,
    /// Highest commit index sent to this peer, so a peer that missed commit updates while paused
    /// gets one (and one only) when it unpauses.
    pub(crate) commit_sent: Index,
    /// Highest leader tick (`Heartbeat::sent_tick`) this peer acknowledged; dates the lease.
    pub(crate) lease_ack_tick: Option<u64>,
    /// Highest applied index this peer reported (`Status`; the node's `all` write level).
    pub(crate) applied_index: Index,
    /// The peer's boot id and own tick count in its latest heartbeat answer, echoed back in the
    /// next heartbeat's `Freshness` (its staleness bound).
    pub(crate) follower_tick: Option<(u64, u64)>,
}

impl Progress {
    pub(crate) fn new(next_index: Index) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            ticks_since_heard: 0,
            ticks_in_state: 0,
            commit_sent: 0,
            lease_ack_tick: None,
            applied_index: 0,
            follower_tick: None,
        }
    }

    /// Whether the leader must hold further appends to this follower for now.
    pub(crate) fn is_paused(&self, max_inflight_appends: usize) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => self.inflight.len() >= max_inflight_appends,
            ReplicationState::Snapshot { .. } => true,
        }
    }

    pub(crate) fn inflight_full(&self, max_inflight_appends: usize) -> bool {
        self.inflight.len() >= max_inflight_appends
    }

    fn set_state(&mut self, state: ReplicationState) {
        self.state = state;
        self.probe_sent = false;
        self.inflight.clear();
        self.ticks_in_state = 0;
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot, resume right after it even if no ack arrived; the probe finds out.
        let resume_from = match self.state {
            ReplicationState::Snapshot { pending_index } => pending_index.max(self.match_index),
            _ => self.match_index,
        };
        self.set_state(ReplicationState::Probe);
        self.next_index = resume_from + 1;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.set_state(ReplicationState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub(crate) fn become_snapshot(&mut self, pending_index: Index) {
        self.set_state(ReplicationState::Snapshot { pending_index });
    }

    /// Records an append just sent, carrying entries up to `last_index` (an empty append, which
    /// only probes or carries the commit index, does not take a pipeline slot).
    pub(crate) fn sent_entries(&mut self, last_index: Index) {
        match self.state {
            ReplicationState::Replicate => {
                if last_index >= self.next_index {
                    self.next_index = last_index + 1;
                    self.inflight.push_back(last_index);
                }
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot { .. } => {
                debug_assert!(false, "no appends while a snapshot is pending")
            }
        }
    }

    /// A success reported `match_index`. Returns whether it taught us anything new.
    pub(crate) fn maybe_update(&mut self, match_index: Index) -> bool {
        let updated = match_index > self.match_index;
        if updated {
            self.match_index = match_index;
        }
        self.next_index = self.next_index.max(match_index + 1);
        while self
            .inflight
            .front()
            .is_some_and(|&last| last <= match_index)
        {
            self.inflight.pop_front();
        }
        updated
    }

    /// A rejection of the append whose `prev_index` was `rejected_index`; `probe_from` is where the
    /// leader's log could first match, from the follower's hint. Returns false for stale rejections.
    pub(crate) fn maybe_decrease(&mut self, rejected_index: Index, probe_from: Index) -> bool {
        match self.state {
            ReplicationState::Replicate => {
                if rejected_index <= self.match_index {
                    return false; // Answers an append older than what the follower since matched.
                }
                // A pipelined append was lost or reordered: fall back to probing after the match.
                self.become_probe();
                true
            }
            ReplicationState::Probe => {
                if rejected_index.saturating_add(1) != self.next_index {
                    return false; // Not the probe we are waiting for.
                }
                if probe_from <= self.match_index {
                    // The follower no longer holds entries it acknowledged. Only a replica that
                    // cut a damaged log does that (`Raft::start_repair`): what it kept is a
                    // prefix of what it acknowledged, so of our log. Lowering the match index is
                    // always safe (commitment never moves back) and makes us re-send the rest.
                    tracing::warn!(
                        match_index = self.match_index,
                        now_at_most = probe_from - 1,
                        "a follower lost acknowledged entries (repaired log): re-sending them"
                    );
                    self.match_index = probe_from - 1;
                }
                self.next_index = probe_from.min(rejected_index).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            ReplicationState::Snapshot { .. } => false,
        }
    }

    /// On a heartbeat response: unblock a probe that may have been lost, and release one pipeline
    /// slot so a fully lost window cannot stall replication forever.
    pub(crate) fn on_heartbeat_response(&mut self) {
        match self.state {
            ReplicationState::Probe => self.probe_sent = false,
            ReplicationState::Replicate => {
                self.inflight.pop_front();
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_pauses_at_the_inflight_bound_and_resumes_on_ack() {
        let mut pr = Progress::new(1);
        pr.become_replicate();
        pr.sent_entries(3);
        pr.sent_entries(5);
        assert!(pr.is_paused(2));
        assert!(pr.maybe_update(3));
        assert!(!pr.is_paused(2));
        assert_eq!(pr.next_index, 6);
    }

    #[test]
    fn probe_ignores_stale_rejections_and_follows_the_hint() {
        let mut pr = Progress::new(11);
        pr.sent_entries(10);
        assert!(!pr.maybe_decrease(7, 3), "not the outstanding probe");
        assert!(pr.maybe_decrease(10, 4));
        assert_eq!(pr.next_index, 4);
        assert!(!pr.is_paused(1));
    }

    #[test]
    fn replicate_rejection_falls_back_to_probe_after_match() {
        let mut pr = Progress::new(1);
        pr.maybe_update(5);
        pr.become_replicate();
        pr.sent_entries(9);
        assert!(!pr.maybe_decrease(4, 1), "stale");
        assert!(pr.maybe_decrease(7, 1));
        assert_eq!(pr.state, ReplicationState::Probe);
        assert_eq!(pr.next_index, 6);
    }

    #[test]
    fn a_follower_that_lost_matched_entries_is_probed_below_its_old_match() {
        // It matched 500, then cut a damaged log back to 75 and restarted.
        let mut pr = Progress::new(1);
        pr.maybe_update(500);
        pr.become_replicate();
        pr.sent_entries(510);
        assert!(
            pr.maybe_decrease(505, 76),
            "a rejection above the match: probe"
        );
        assert_eq!(pr.next_index, 501);
        assert!(
            pr.maybe_decrease(500, 76),
            "the probe at the old match is rejected too"
        );
        assert_eq!(pr.match_index, 75);
        assert_eq!(
            pr.next_index, 76,
            "the next probe starts where its log ends"
        );
    }
}
