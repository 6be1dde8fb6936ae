//! Static configuration of one Raft node, with every limit the core enforces.
//!
//! Time is measured in ticks: the driver calls `Raft::tick` at a fixed rate (the server, say, every
//! 100 ms), so `election_timeout_ticks = 10` means about a second. Every queue the core owns is
//! bounded here, and `validate` refuses configurations that would break a Raft rule.

use thiserror::Error;

use crate::message::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; must be one of `voters`.
    pub id: NodeId,
    /// The full, fixed voter set (membership changes are not implemented).
    pub voters: Vec<NodeId>,
    /// Followers wait a random `[election_timeout_ticks, 2 * election_timeout_ticks)` ticks without
    /// hearing from a leader before campaigning (Raft §5.2). Also the CheckQuorum period and the
    /// leadership-transfer deadline. Default 10.
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats every this many ticks; must be below the election timeout.
    /// Default 2.
    pub heartbeat_interval_ticks: u32,
    /// Unacknowledged `AppendEntries` per follower in the replicate state. Default 16.
    pub max_inflight_appends: usize,
    /// Entries per `AppendEntries` (at least one is always sent). Default 64.
    pub max_entries_per_append: usize,
    /// Approximate bytes per `AppendEntries` (a single larger entry is still sent). Default 1 MiB.
    pub max_bytes_per_append: usize,
    /// Committed entries handed out per `Ready`; the rest follow in the next one. Default 1024.
    pub max_committed_entries_per_ready: usize,
    /// Proposals are refused with `ProposeError::Backpressure` while the leader holds this many
    /// uncommitted entries. Default 10 000.
    pub max_uncommitted_entries: u64,
    /// Proposals are refused with `ProposeError::BytesBackpressure` while the commands this
    /// leader proposed and has not seen commit hold this many bytes (one is always let through
    /// when none is uncommitted). Bounds the leader's memory under overload whatever the
    /// command size. Default 64 MiB.
    pub max_uncommitted_bytes: u64,
    /// ReadIndex requests waiting for a heartbeat quorum. Default 4096.
    pub max_pending_reads: usize,
    /// Run a PreVote round before incrementing the term (thesis §9.6). Default true.
    pub pre_vote: bool,
    /// Leaders step down without a quorum's word for an election timeout, and followers that
    /// heard from a leader within it refuse to vote (thesis §6.2, §4.2.3); a node restarted with
    /// a term refuses votes for an election timeout (it may have acknowledged a leader just
    /// before going down). These are the fences that make leader leases safe, so they are on
    /// whenever `check_quorum` is, whatever `allow_lease_reads` says: a node that never serves
    /// a lease read must still not help depose a leader that may (the leader is another node,
    /// whose configuration it does not know). Default true.
    pub check_quorum: bool,
    /// Reads asking for [`ReadMode::Lease`](crate::ReadMode::Lease) may be answered from the
    /// leader lease (thesis §6.4.1) while it holds; when false, or without `check_quorum`, they
    /// take a ReadIndex round like [`ReadMode::ReadIndex`](crate::ReadMode::ReadIndex) reads.
    /// Leases assume bounded clock drift (see [`Config::lease_ticks`]); turn this off where that
    /// cannot be trusted. Default true.
    pub allow_lease_reads: bool,
    /// The lease lasts `election_timeout_ticks - lease_margin_ticks - 1` leader ticks from the
    /// send tick of the heartbeats a quorum acknowledged; the margin absorbs clock drift (see
    /// [`Config::lease_ticks`]). Default 2.
    pub lease_margin_ticks: u32,
    /// Seeds the election-timeout PRNG; give every node a different seed. Default: the id.
    pub seed: u64,
    /// Differs every time this node starts (an input, like the seed: the host draws it). Tells
    /// the node's heartbeat-answer ticks of this life from those of a previous one, for the
    /// staleness bound (`Freshness`). Default 0.
    pub boot_id: u64,
    /// Entries `Raft::compact` keeps at or below the snapshot index (etcd's
    /// `SnapshotCatchUpEntries`): a follower that fell at most this far behind the snapshot is
    /// sent entries rather than the whole snapshot. Costs that many entries of memory. Zero drops
    /// everything the snapshot covers. Default 5 000.
    pub compaction_tail_entries: u64,
    /// And at most this many bytes of commands: with large values, `compaction_tail_entries`
    /// alone would keep gigabytes in memory. Default 32 MiB.
    pub compaction_tail_bytes: u64,
    /// A deliberate bug, for the simulation's planted-bug catalogue. Ignored (the correct code
    /// runs) unless the crate is built with the `planted-bugs` feature. Default `None`.
    pub planted_bug: Option<crate::planted::RaftBug>,
}

/// The default of [`Config::compaction_tail_entries`], etcd's value.
pub const DEFAULT_COMPACTION_TAIL_ENTRIES: u64 = 5_000;

impl Config {
    /// A configuration with the documented defaults.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            max_inflight_appends: 16,
            max_entries_per_append: 64,
            max_bytes_per_append: 1 << 20,
            max_committed_entries_per_ready: 1024,
            max_uncommitted_entries: 10_000,
            max_uncommitted_bytes: 64 << 20,
            max_pending_reads: 4096,
            pre_vote: true,
            check_quorum: true,
            allow_lease_reads: true,
            lease_margin_ticks: 2,
            seed: id,
            boot_id: 0,
            compaction_tail_entries: DEFAULT_COMPACTION_TAIL_ENTRIES,
            compaction_tail_bytes: 32 << 20,
            planted_bug: None,
        }
    }

    /// Whether reads in [`ReadMode::Lease`](crate::ReadMode::Lease) may be answered from the
    /// lease: allowed, and fenced by `check_quorum`.
    pub fn leases_usable(&self) -> bool {
        self.allow_lease_reads && self.check_quorum
    }

    /// How long a lease lasts, in leader ticks, from the send tick of the heartbeats that
    /// confirmed it: `T - m - 1` for `T = election_timeout_ticks`, `m = lease_margin_ticks`
    /// (7 with the defaults).
    ///
    /// Why it is safe: a follower that acknowledged a heartbeat refuses votes until `T` of *its*
    /// ticks have passed since it received it, which is at least `T - 1` of its tick periods
    /// (its first tick may come right after the heartbeat); the lease ends at most `T - m - 1`
    /// leader tick periods after the heartbeat left. So no quorum can elect another leader
    /// within the lease as long as a follower's tick rate is at most `(T - 1) / (T - m - 1)`
    /// times the leader's, which always exceeds `1 + m / T`: the stated bound,
    /// [`Config::lease_drift_bound`]. (The `- 1` pays for that tick quantization; without it the
    /// defaults would tolerate only 9/8.)
    pub fn lease_ticks(&self) -> u64 {
        u64::from(
            self.election_timeout_ticks
                .saturating_sub(self.lease_margin_ticks)
                .saturating_sub(1),
        )
    }

    /// The clock drift the lease tolerates, as a fraction `(lease_margin_ticks,
    /// election_timeout_ticks)`: every node's tick rate must stay below `1 + margin / timeout`
    /// times every other's (with the defaults, 2/10: no clock 20% faster than another). A
    /// receipt for a lease read can state it.
    pub fn lease_drift_bound(&self) -> (u32, u32) {
        (self.lease_margin_ticks, self.election_timeout_ticks)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(ConfigError::DuplicateVoter);
        }
        if !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter { id: self.id });
        }
        if self.heartbeat_interval_ticks == 0
            || self.heartbeat_interval_ticks >= self.election_timeout_ticks
        {
            return Err(ConfigError::Timing {
                reason: "need 0 < heartbeat_interval_ticks < election_timeout_ticks",
            });
        }
        if self.leases_usable() && self.lease_ticks() == 0 {
            return Err(ConfigError::Timing {
                reason: "allow_lease_reads needs lease_margin_ticks + 1 < election_timeout_ticks",
            });
        }
        if self.max_inflight_appends == 0
            || self.max_entries_per_append == 0
            || self.max_bytes_per_append == 0
            || self.max_committed_entries_per_ready == 0
            || self.max_uncommitted_entries == 0
            || self.max_uncommitted_bytes == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("voters contain a duplicate id")]
    DuplicateVoter,
    #[error("node {id} is not in its own voter set")]
    NotAVoter { id: NodeId },
    #[error("bad timing configuration: {reason}")]
    Timing { reason: &'static str },
    #[error("a batching or queue limit is zero")]
    ZeroLimit,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lease must end before any quorum member's vote fence can, for every clock within the
    /// stated bound: `(T - 1)` follower periods (the fence, less the tick quantization) must
    /// cover `lease_ticks` leader periods when the follower runs `1 + m / T` times as fast.
    #[test]
    fn the_lease_fits_inside_the_vote_fence_at_the_stated_drift_bound() {
        for timeout in 2..=40u32 {
            for margin in 0..timeout {
                let mut config = Config::new(1, vec![1, 2, 3]);
                config.election_timeout_ticks = timeout;
                config.heartbeat_interval_ticks = 1;
                config.lease_margin_ticks = margin;
                let lease = config.lease_ticks();
                if lease == 0 {
                    assert!(config.validate().is_err(), "T={timeout} m={margin}");
                    continue;
                }
                let (m, t) = config.lease_drift_bound();
                // lease * (1 + m/t) <= t - 1, in integers.
                assert!(
                    lease * u64::from(t + m) <= u64::from(t - 1) * u64::from(t),
                    "T={timeout} m={margin}: a {lease}-tick lease outlives the fence"
                );
            }
        }
    }
}
