//! Linearizable reads without writing to the log: ReadIndex and leader leases (thesis §6.4).
//!
//! Each read names its [`ReadMode`]; the [`ReadState`] that releases it names the [`ReadPath`]
//! that actually confirmed it, so the application can say so in its reply.
//!
//! **ReadIndex** ([`ReadMode::ReadIndex`]). The leader notes its commit index as the read's index,
//! then confirms it is still the leader by a heartbeat round: once a quorum acknowledges a
//! heartbeat sent *after* the read was registered, no other leader can have committed anything
//! newer at that moment, so serving the read once `applied_index >= index` is linearizable.
//! Requests get increasing contexts; a peer acknowledging context `c` vouches for every request
//! registered up to `c`, so one heartbeat round releases a whole batch, in order.
//!
//! Rounds are shared. Registering a read only marks a round as *wanted*; the round's heartbeat
//! (one per peer, carrying the newest context) goes out when the next `Ready` is built, so every
//! read registered in between rides the same round. The periodic heartbeat carries the newest
//! pending context too: a round whose heartbeats or answers were lost is recovered at the next
//! heartbeat interval, without the application asking again (etcd and toydb do the same).
//!
//! **Lease** ([`ReadMode::Lease`]). With CheckQuorum, followers that heard from the leader refuse
//! votes for an election timeout (leader stickiness), and a restarted node refuses them for an
//! election timeout too (it may have acknowledged a leader just before it went down). If a
//! quorum acknowledged heartbeats the leader sent less than
//! `Config::lease_ticks() = election_timeout_ticks - lease_margin_ticks - 1` of its ticks ago, no
//! new leader can exist yet and the read is answered at once. This assumes ticks on different
//! nodes advance at rates that differ by less than `lease_margin_ticks / election_timeout_ticks`
//! (bounded clock drift: with the defaults 2/10, no clock runs 20% faster than another; the
//! derivation, and the tick the `- 1` pays for, are on `Config::lease_ticks`); if that can be
//! violated, set `Config::allow_lease_reads` to false and every read takes a round. A `Lease`
//! read whose lease does not hold falls back to a ReadIndex round.
//!
//! Invariant: ReadIndex reads are released in request order, each with the commit index at the
//! time it was requested. Lease reads are released at once (they are concurrent with any read
//! still waiting for its round, so either order is linearizable).

use std::collections::{BTreeMap, VecDeque};

use crate::message::{Index, NodeId};

/// How a read may be confirmed, chosen per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Always a heartbeat quorum (ReadIndex): no clock assumption.
    ReadIndex,
    /// The leader's lease if it holds (no round trip; assumes bounded clock drift, see the
    /// module docs), else a ReadIndex round.
    Lease,
}

/// Which path confirmed a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadPath {
    /// A quorum acknowledged a heartbeat sent after the read was registered (or the cluster is a
    /// single voter, its own quorum).
    Quorum,
    /// The leader's lease held. `remaining_ticks`: how many more leader ticks it held for when
    /// the read was answered (at least 1). Safe only while clocks drift apart by less than
    /// `lease_margin_ticks / election_timeout_ticks`.
    Lease { remaining_ticks: u64 },
}

/// A read the application may serve once its applied index reaches `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: Index,
    /// The path that confirmed it, for the reply's receipt.
    pub served: ReadPath,
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
    /// A read was registered since the last heartbeat left: a round is owed.
    round_wanted: bool,
}

impl ReadTracker {
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.acked.clear();
        self.round_wanted = false;
    }

    /// Registers a read at `index` and marks a confirming round as wanted.
    pub(crate) fn register(&mut self, request_id: u64, index: Index) {
        self.next_ctx += 1;
        self.pending.push_back(PendingRead {
            request_id,
            index,
            ctx: self.next_ctx,
        });
        self.round_wanted = true;
    }

    /// Whether a read registered since the last heartbeat still waits for its round to be sent.
    pub(crate) fn round_wanted(&self) -> bool {
        self.round_wanted
    }

    /// The context a heartbeat sent now carries: the newest pending read's, if any read is
    /// pending (its acknowledgement confirms every pending read). Sending it satisfies the
    /// wanted round.
    pub(crate) fn take_round_ctx(&mut self) -> Option<u64> {
        self.round_wanted = false;
        self.pending.back().map(|read| read.ctx)
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
                served: ReadPath::Quorum,
            });
            self.pending.pop_front();
        }
    }
}

/// How many more leader ticks the lease holds at `now_tick`, if it holds: a quorum (counting the
/// leader) acknowledged heartbeats sent less than `lease_ticks` ago. The lease runs from the send
/// tick of the quorum's oldest needed acknowledgement. `None` on a single voter (it needs no
/// lease) and when the lease has run out.
pub(crate) fn lease_remaining(
    ack_ticks: impl Iterator<Item = Option<u64>>,
    now_tick: u64,
    lease_ticks: u64,
    quorum: usize,
) -> Option<u64> {
    let mut acks: Vec<u64> = ack_ticks.flatten().collect();
    acks.sort_unstable_by(|a, b| b.cmp(a));
    // The freshest `quorum - 1` peers, with the leader, make a quorum; the lease lasts as long
    // as the oldest of their acknowledgements.
    let needed = quorum.checked_sub(2)?;
    let sent = *acks.get(needed)?;
    (sent + lease_ticks)
        .checked_sub(now_tick)
        .filter(|&left| left > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_a_quorum_acknowledging_a_later_context() {
        let mut reads = ReadTracker::default();
        reads.register(10, 5);
        assert_eq!(reads.take_round_ctx(), Some(1));
        reads.register(11, 6);
        assert!(reads.round_wanted());
        let (first, second) = (1, 2);
        let mut out = Vec::new();
        reads.acknowledge(2, first, 2, &mut out);
        assert_eq!(
            out,
            vec![ReadState {
                request_id: 10,
                index: 5,
                served: ReadPath::Quorum,
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
    fn a_heartbeat_carries_the_newest_pending_context() {
        let mut reads = ReadTracker::default();
        assert_eq!(reads.take_round_ctx(), None, "nothing pending: no context");
        reads.register(1, 5);
        reads.register(2, 5);
        reads.register(3, 6);
        assert!(reads.round_wanted());
        assert_eq!(reads.take_round_ctx(), Some(3));
        assert!(!reads.round_wanted(), "the round left");
        // A later heartbeat (the periodic one) repeats the newest context while reads wait.
        assert_eq!(reads.take_round_ctx(), Some(3));
        let mut out = Vec::new();
        reads.acknowledge(2, 3, 2, &mut out);
        let ids: Vec<u64> = out.iter().map(|r| r.request_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(reads.take_round_ctx(), None);
    }

    #[test]
    fn lease_needs_fresh_acks_from_a_quorum() {
        assert_eq!(
            lease_remaining([Some(5), None].into_iter(), 10, 8, 2),
            Some(3)
        );
        assert_eq!(lease_remaining([Some(2), None].into_iter(), 10, 8, 2), None);
        assert_eq!(
            lease_remaining([Some(3), None].into_iter(), 10, 8, 2),
            Some(1)
        );
        assert_eq!(
            lease_remaining([None, None, Some(9), None].into_iter(), 10, 8, 3),
            None
        );
        // Five voters: the second freshest peer ack dates the lease.
        assert_eq!(
            lease_remaining([Some(9), Some(4), Some(7), None].into_iter(), 10, 8, 3),
            Some(5)
        );
        assert_eq!(lease_remaining(std::iter::empty(), 10, 8, 1), None);
    }
}
