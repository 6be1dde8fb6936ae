//! A seam for fault injection between a node's Raft and its peer transport, used by the
//! jepsen-like simulation and by an operator's rules on a node started with `--allow-faults`
//! ([`crate::injected`]); otherwise there is no [`TransportFaults`] and the seam costs one
//! `Option` check per message.
//!
//! Why a seam and not the network: peer messages travel on TCP, which never drops, duplicates or
//! reorders a message and delivers late only in order. Raft is specified for a network that does
//! all of these (the paper's model), and several classic bugs only show under them: a stale
//! AppendEntries from an old term arriving after newer ones, a duplicated RequestVote, a one-way
//! link where the leader still hears its followers but cannot reach them. The simulation
//! decides each outbound message's fate here, seeded and per message, before it reaches the
//! (still ordered) connection.
//!
//! The same seam carries one clock fault: a node whose clock is stopped gets no ticks while it
//! is stopped. What happens to them when it runs again is the fault's second half: a paused
//! process's monotonic clock runs on, so its missed ticks are delivered at once on resume
//! (`paused_clock_catches_up`, what production does: the node's ticker bursts missed ticks);
//! a clock that really stalled loses them — unbounded drift, which Raft's safety does not care
//! about but a lease or a staleness bound does.

use std::time::Duration;

use consensus::{Message, NodeId};

/// Decides, per outbound Raft message, whether and when it is handed to the peer connection;
/// and whether a node's clock is stopped. Implemented by the simulation; called from the node's
/// task, so it must be quick and must not block.
pub trait TransportFaults: Send + Sync + 'static {
    /// The fate of `message` (from this node to `message.to`): one delay per copy to hand to the
    /// connection (`Duration::ZERO` for at once). Empty drops the message; two or more
    /// duplicate it; different delays for different messages reorder them.
    fn fate(&self, message: &Message) -> Vec<Duration>;

    /// Whether `node`'s clock is stopped right now: its Raft ticks are held until it runs again.
    fn clock_stopped(&self, node: NodeId) -> bool {
        let _ = node;
        false
    }

    /// Whether the ticks held while a clock was stopped are delivered when it runs again (a
    /// process pause: the default) or lost (a clock stall, beyond any drift bound).
    fn paused_clock_catches_up(&self) -> bool {
        true
    }
}

/// Delayed copies of messages in flight at most, per node; beyond it a delayed copy is dropped
/// (which Raft tolerates), so a fault plan that delays everything cannot grow memory unbounded.
pub const MAX_DELAYED_MESSAGES: usize = 4096;
