//! The vocabulary Raft nodes speak: log entries, durable state and peer messages.
//!
//! Everything here is plain data (`Serialize + Deserialize`) so the server can frame it however it
//! likes. Nothing in this module has behaviour beyond sizes and `Display`; the rules that give these
//! messages meaning live in `raft.rs`. Every field that comes off the network is treated as
//! untrusted by the core: indexes are compared, never used to index a slice unchecked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies a voter. Zero is a legal id, but `Config::validate` refuses duplicates.
pub type NodeId = u64;
/// A Raft term (Raft §5.1). Term 0 is the empty log's term; real leaders start at term 1.
pub type Term = u64;
/// A log position. Index 0 is the empty log's sentinel; the first real entry has index 1.
pub type Index = u64;

/// Fixed per-entry overhead counted by `Entry::size_bytes` (index, term, tag).
const ENTRY_OVERHEAD_BYTES: usize = 24;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader as the first entry of its term (Raft §5.4.2, thesis §6.4): once it
    /// commits, the leader knows every entry committed by earlier terms.
    Noop,
    /// An opaque command for the application's state machine.
    Command(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Entry {
    /// The bytes of the entry's command (zero for a no-op): what the memory and
    /// backpressure budgets count.
    pub fn command_bytes(&self) -> u64 {
        match &self.payload {
            EntryPayload::Command(command) => command.len() as u64,
            EntryPayload::Noop => 0,
        }
    }
}

/// One log entry. `(index, term)` identifies it uniquely across the cluster (Log Matching).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: Index,
    pub term: Term,
    pub payload: EntryPayload,
}

impl Entry {
    /// Approximate encoded size, used to bound `AppendEntries` batches.
    pub fn size_bytes(&self) -> usize {
        ENTRY_OVERHEAD_BYTES
            + match &self.payload {
                EntryPayload::Noop => 0,
                EntryPayload::Command(bytes) => bytes.len(),
            }
    }
}

/// The state Raft must persist before answering any message (Raft Figure 2, "persistent state").
/// `commit` is persisted too so a restarted node can re-apply without waiting for a leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Describes the log prefix a snapshot replaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// The last log index the snapshot covers; the log continues at `last_index + 1`.
    pub last_index: Index,
    /// The term of the entry at `last_index`, needed for the log-matching check of the next entry.
    pub last_term: Term,
    /// The voter set in force at `last_index` (membership changes are not implemented; this is
    /// recorded so a future change does not have to alter the format).
    pub voters: Vec<NodeId>,
}

/// A state-machine checkpoint produced by the application (`Raft::compact`) or received from the
/// leader (`Ready::snapshot`). `data` is opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A message between two nodes. `term` is the sender's term, except for `PreVote` (the term the
/// sender would campaign in) and a granted `PreVoteResponse` (that same proposed term).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

/// The outcome of an `AppendEntries` or `InstallSnapshot` at a follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to and including `match_index`.
    Success { match_index: Index },
    /// The log-matching check failed at `rejected_index` (the request's `prev_index`).
    ///
    /// Fast backtracking (thesis §5.3 / etcd's `findConflictByTerm`): `(hint_index, hint_term)` is
    /// the follower's last entry at or below `min(rejected_index, follower_last_index)` whose term
    /// is at most the leader's `prev_term`. The leader skips every index above the last entry in
    /// its own log that could match that hint, so one round trip skips a whole conflicting term,
    /// or the whole gap when the follower's log is short.
    Reject {
        rejected_index: Index,
        hint_index: Index,
        hint_term: Term,
    },
}

/// What a leader's heartbeat tells a follower about how fresh the leader's state is, so that
/// the follower can bound how stale its own state may be without trusting message delays or
/// comparing clocks.
///
/// `echo_tick` is the follower's own tick count from its latest heartbeat answer the leader had
/// received: this heartbeat was produced after that moment. `quorum_age_ticks` is how many of
/// the leader's ticks before producing it a quorum last acknowledged the leader (no other
/// leader can have committed anything since). So once the follower has applied
/// `leader_commit`, its state is at most `now − echo_tick + quorum_age_ticks` ticks old
/// (assuming the two clocks tick at rates within the stated drift bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// The follower's boot id (`Config::boot_id`) its echoed tick was counted in: a tick from
    /// another life of the follower means nothing now and is ignored.
    pub echo_boot: u64,
    pub echo_tick: u64,
    pub leader_commit: Index,
    pub quorum_age_ticks: u64,
}

/// Every message kind, named after the RPC in the Raft paper where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Thesis §9.6: "would you vote for me at `term`?" Does not change anyone's term.
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// Raft §5.2. `leadership_transfer` is set when campaigning because of `TimeoutNow`; voters
    /// then skip the leader-stickiness check (thesis §3.10, §4.2.3).
    RequestVote {
        last_index: Index,
        last_term: Term,
        leadership_transfer: bool,
    },
    RequestVoteResponse {
        granted: bool,
    },
    /// Raft §5.3. `commit` is the leader's commit index.
    AppendEntries {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// Answers both `AppendEntries` and `InstallSnapshot`. `applied_index` is the highest
    /// index the follower's state machine has applied (as of its last `advance`), so the leader
    /// knows when every replica applied a write.
    AppendEntriesResponse {
        result: AppendResult,
        applied_index: Index,
    },
    /// Leader liveness and commit propagation. `commit` is `min(leader commit, follower match)`, so
    /// a follower can apply it without a log check. `sent_tick` (the leader's own tick count in this
    /// term) is echoed back and dates the follower's acknowledgement for leader leases;
    /// `read_ctx` (the newest pending read's context, on every heartbeat while reads wait) is
    /// echoed back to confirm leadership for pending ReadIndex requests. The response also
    /// carries the follower's applied index, as `AppendEntriesResponse` does.
    Heartbeat {
        commit: Index,
        sent_tick: u64,
        read_ctx: Option<u64>,
        /// How fresh the leader's state is, for the follower's staleness bound (see
        /// [`Freshness`]); `None` until the follower has answered a heartbeat in this term.
        freshness: Option<Freshness>,
    },
    HeartbeatResponse {
        sent_tick: u64,
        read_ctx: Option<u64>,
        applied_index: Index,
        /// The follower's own tick count when it answered, and its boot id, echoed back in
        /// [`Freshness`].
        follower_tick: u64,
        follower_boot: u64,
    },
    /// Raft §7: the whole snapshot in one message (bounded by what the application checkpoints).
    InstallSnapshot {
        snapshot: Snapshot,
    },
    /// Thesis §3.10: the leader tells an up-to-date follower to campaign immediately.
    TimeoutNow,
}

impl fmt::Display for EntryPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryPayload::Noop => write!(f, "noop"),
            EntryPayload::Command(bytes) => write!(f, "{}", String::from_utf8_lossy(bytes)),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.index, self.term, self.payload)
    }
}

fn fmt_entries(f: &mut fmt::Formatter<'_>, entries: &[Entry]) -> fmt::Result {
    write!(f, "[")?;
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            write!(f, " ")?;
        }
        write!(f, "{entry}")?;
    }
    write!(f, "]")
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} ", self.from, self.to)?;
        match &self.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => write!(f, "PreVote term={} last={last_index}@{last_term}", self.term),
            MessageBody::PreVoteResponse { granted } => {
                write!(f, "PreVoteResponse term={} granted={granted}", self.term)
            }
            MessageBody::RequestVote {
                last_index,
                last_term,
                leadership_transfer,
            } => {
                write!(
                    f,
                    "RequestVote term={} last={last_index}@{last_term}",
                    self.term
                )?;
                if *leadership_transfer {
                    write!(f, " transfer")?;
                }
                Ok(())
            }
            MessageBody::RequestVoteResponse { granted } => {
                write!(f, "RequestVoteResponse term={} granted={granted}", self.term)
            }
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                write!(
                    f,
                    "AppendEntries term={} prev={prev_index}@{prev_term} commit={commit} entries=",
                    self.term
                )?;
                fmt_entries(f, entries)
            }
            // The applied index is left out of the text (it is in `Status`), so the golden
            // scenarios written before it existed read the same.
            MessageBody::AppendEntriesResponse { result, .. } => match result {
                AppendResult::Success { match_index } => write!(
                    f,
                    "AppendEntriesResponse term={} match={match_index}",
                    self.term
                ),
                AppendResult::Reject {
                    rejected_index,
                    hint_index,
                    hint_term,
                } => write!(
                    f,
                    "AppendEntriesResponse term={} reject={rejected_index} hint={hint_index}@{hint_term}",
                    self.term
                ),
            },
            MessageBody::Heartbeat {
                commit,
                sent_tick: _,
                read_ctx,
                freshness: _,
            } => {
                write!(f, "Heartbeat term={} commit={commit}", self.term)?;
                if let Some(ctx) = read_ctx {
                    write!(f, " read_ctx={ctx}")?;
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_ctx, .. } => {
                write!(f, "HeartbeatResponse term={}", self.term)?;
                if let Some(ctx) = read_ctx {
                    write!(f, " read_ctx={ctx}")?;
                }
                Ok(())
            }
            MessageBody::InstallSnapshot { snapshot } => write!(
                f,
                "InstallSnapshot term={} last={}@{}",
                self.term, snapshot.meta.last_index, snapshot.meta.last_term
            ),
            MessageBody::TimeoutNow => write!(f, "TimeoutNow term={}", self.term),
        }
    }
}
