//! Linearizable reads without writing to the log: ReadIndex and leader leases (thesis §6.4).
//!
//! **ReadIndex.** The leader notes its commit index as the read's index, then confirms it is still
//! the leader by a heartbeat round: once a quorum acknowledges a heartbeat sent *after* the read
//! was registered, no other leader can have committed anything newer at that moment, so serving
//! the read once `applied_index >= index` is linearizable. Requests get increasing contexts;
//! a peer acknowledging context `c` vouches for every request registered up to `c`, so one
//! heartbeat round releases a whole batch, in order.
//!
//! **Lease.** With CheckQuorum, followers that heard from the leader refuse votes for an election
//! timeout (leader stickiness). If a quorum acknowledged heartbeats the leader sent at most
//! `election_timeout_ticks - lease_margin_ticks` of its ticks ago, no new leader can exist yet and
//! the read is answered at once. This assumes ticks on different nodes advance at rates that differ
//! by less than `lease_margin_ticks / election_timeout_ticks` (bounded clock drift); if that can be
//! violated, leave `lease_reads` off.
//!
//! Invariant: read states are released in request order, each with the commit index at the time
//! it was requested.

use std::collections::{BTreeMap, VecDeque};

use crate::message::{Index, NodeId};

/// A read the application may serve once its applied index reaches `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: Index,
}

#[derive(Clone, Copy, Debug)]
struct PendingRead {
    request_id: u64,
    index: Index,
    ctx: u64,
}

/// Reads waiting for a heartbeat quorum on the leader. Reset whenever leadership changes: pending
/// requests are then dropped, and the application's request timeout answers the client.
#[derive(Debug, Default)]
pub(crate) struct ReadTracker {
    next_ctx: u64,
    pending: VecDeque<PendingRead>,
    /// Highest context each peer acknowledged.
    acked: BTreeMap<NodeId, u64>,
}

impl ReadTracker {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.acked.clear();
    }

    /// Registers a read at `index`; returns the context to send in the confirming heartbeat.
    pub(crate) fn register(&mut self, request_id: u64, index: Index) -> u64 {
        self.next_ctx += 1;
        let ctx = self.next_ctx;
        self.pending.push_back(PendingRead {
            request_id,
            index,
            ctx,
        });
        ctx
    }

    /// Records `from`'s acknowledgement of `ctx` and releases every read that a quorum (the leader
    /// counting itself) has now confirmed.
    pub(crate) fn acknowledge(
        &mut self,
        from: NodeId,
        ctx: u64,
        quorum: usize,
        released: &mut Vec<ReadState>,
    ) {
        if ctx > self.next_ctx {
            return; // Not a context we issued (forged or from a previous life): ignore.
        }
        let acked = self.acked.entry(from).or_insert(0);
        *acked = (*acked).max(ctx);
        while let Some(front) = self.pending.front() {
            let confirmations = 1 + self.acked.values().filter(|&&c| c >= front.ctx).count();
            if confirmations < quorum {
                break;
            }
            released.push(ReadState {
                request_id: front.request_id,
                index: front.index,
            });
            self.pending.pop_front();
        }
    }
}

/// Whether a quorum (counting the leader) acknowledged heartbeats sent within the lease.
pub(crate) fn lease_holds(
    ack_ticks: impl Iterator<Item = Option<u64>>,
    now_tick: u64,
    lease_ticks: u64,
    quorum: usize,
) -> bool {
    let fresh = ack_ticks
        .filter(|ack| ack.is_some_and(|sent| sent + lease_ticks > now_tick))
        .count();
    1 + fresh >= quorum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_a_quorum_acknowledging_a_later_context() {
        let mut reads = ReadTracker::default();
        let first = reads.register(10, 5);
        let second = reads.register(11, 6);
        let mut out = Vec::new();
        reads.acknowledge(2, first, 2, &mut out);
        assert_eq!(
            out,
            vec![ReadState {
                request_id: 10,
                index: 5
            }]
        );
        out.clear();
        reads.acknowledge(3, first, 2, &mut out);
        assert!(
            out.is_empty(),
            "an ack of an older context says nothing of the newer read"
        );
        reads.acknowledge(3, second, 2, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(reads.len(), 0);
    }

    #[test]
    fn lease_needs_fresh_acks_from_a_quorum() {
        assert!(lease_holds([Some(5), None].into_iter(), 10, 8, 2));
        assert!(!lease_holds([Some(2), None].into_iter(), 10, 8, 2));
        assert!(!lease_holds(
            [None, None, Some(9), None].into_iter(),
            10,
            8,
            3
        ));
    }
}
