//! The planted-bug catalogue: classic consensus, storage and session bugs, each planted
//! deliberately at the one place a real implementation could get it wrong, so that a test can
//! show the jepsen-like simulation catches every one of them within a stated seed budget
//! (`jepsen-like/tests/planted_bugs.rs`; `ringleader sim --plant-bug NAME` replays one).
//!
//! Test builds only: the bugs exist in builds with the cargo feature `planted-bugs` (which
//! forwards to `consensus/planted-bugs` and `storage/planted-bugs`). Without it
//! [`NodeConfig::planted_bug`](crate::config::NodeConfig::planted_bug) is ignored: every check
//! of it on a production code path is the constant `false` ([`PlantedBug::is_active`]).
//! `cargo build --release -p ringleader` has none of them.
//!
//! The bugs themselves live where they would be written: in `consensus` ([`consensus::RaftBug`],
//! behind `Config::planted_bug`), in `storage` ([`storage::planted::StorageBug`]) and in the
//! node ([`crate::replica`], [`crate::host`]); this module names them for the command line, says which rule each
//! breaks, and maps each to its layer's switch.

use std::fmt;
use std::str::FromStr;

use consensus::RaftBug;
use storage::planted::StorageBug;

/// Whether this build carries the planted bugs (cargo feature `planted-bugs`).
pub const ENABLED: bool = cfg!(feature = "planted-bugs");

/// A deliberate bug planted in every node of a (simulated) cluster, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlantedBug {
    #[default]
    None,
    /// Every node, leader or not, answers linearizable reads from its local state at once,
    /// skipping ReadIndex: a partitioned old leader or a lagging follower serves stale values.
    LocalReads,
    /// The node with the highest id applies each no-op entry as a write of a key no client
    /// reads: its state machine silently diverges from the others' while every answer a client
    /// sees stays right. Only the replicas' digests can tell.
    DivergentApply,
    /// Every node acknowledges writes before they are fsynced (its WAL never syncs). Only a
    /// power loss of a majority at once can show it: a minority crash is hidden by the
    /// replicas that kept the entries in their page cache.
    AckBeforeFsync,
    /// [`RaftBug::CommitOldTerm`].
    CommitOldTerm,
    /// [`RaftBug::CommitBeyondLastNew`].
    CommitBeyondLastNew,
    /// [`RaftBug::HeartbeatCommitUnclamped`].
    HeartbeatCommitUnclamped,
    /// [`RaftBug::ReadBeforeFirstCommit`].
    ReadBeforeFirstCommit,
    /// [`RaftBug::UnconfirmedReads`].
    UnconfirmedReads,
    /// [`RaftBug::DoubleVote`].
    DoubleVote,
    /// [`StorageBug::VoteNotPersisted`].
    VoteNotPersisted,
    /// [`RaftBug::TruncateMatchingLog`].
    TruncateMatchingLog,
    /// [`RaftBug::StaleSnapshot`].
    StaleSnapshot,
    /// [`StorageBug::SessionOutcomeNotCached`].
    SessionOutcomeNotCached,
    /// [`RaftBug::MajorityOffByOne`].
    MajorityOffByOne,
    /// [`RaftBug::NeverSendSnapshot`].
    NeverSendSnapshot,
    /// Every replica serves a session read at once from its local state, ignoring the
    /// client's session position (`min_index`): a replica behind the client's last write or
    /// read answers with older state, breaking read-your-writes and monotonic reads.
    SessionIndexIgnored,
    /// Not a consistency bug but a floor fault: every node refuses every write (put, delete,
    /// cas) as `Invalid`, never proposing it; sessions and reads are served. The history stays
    /// linearizable (nothing was written), so only the simulation's floors of successful
    /// operations can tell.
    RefuseWrites,
    /// Not a bug but a fault the cluster must survive, placed where the network cannot place it
    /// on cue: every node swallows each session's first write (sequence number 1), as if the
    /// request were lost on the way, never proposing it (the connection answers "the node
    /// stopped before answering"; the client's retries are swallowed too, so the write ends
    /// with an unknown outcome). The client must go on writing under the same session: the bug
    /// the simulation found as seed 197 left it answered `SessionExpired` forever.
    LoseFirstWrite,
}

/// Where a planted bug lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The consensus core (`consensus`).
    Consensus,
    /// The write-ahead log and its durability (`storage`, and the node's WAL options).
    Storage,
    /// The node that drives Raft, the log and the state machine (`ringleader-node`).
    Node,
    /// Client sessions: exactly-once writes in the state machine (`storage::kv`).
    Sessions,
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Consensus => "consensus",
            Layer::Storage => "storage",
            Layer::Node => "node",
            Layer::Sessions => "sessions",
        })
    }
}

/// What a planted fault is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A safety or liveness bug: the simulation must end with a verdict other than
    /// `Linearizable` within [`Entry::seed_budget`] seeds.
    Bug,
    /// A cluster that serves too little: the history stays linearizable, and only the
    /// simulation's floors of successful operations can tell.
    FloorFault,
    /// A fault the real code must survive (a regression test injects it on cue).
    Regression,
    /// A real bug the simulation does not catch within 200 seeds yet (the figures are in its
    /// ignored test in `jepsen-like/tests/planted_bugs.rs`); kept to measure a stronger
    /// simulation against. Not counted in the catalogue's bugs.
    NotCaught,
}

/// One catalogue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub bug: PlantedBug,
    /// The name on the command line (`ringleader sim --plant-bug NAME`), kebab-case.
    pub name: &'static str,
    pub layer: Layer,
    pub kind: Kind,
    /// The rule broken, with its source (Raft paper section or figure, Ongaro's thesis).
    pub rule: &'static str,
    /// One line: what the planted code does wrong.
    pub description: &'static str,
    /// The nemeses the catalogue test runs it with (`ringleader sim --nemesis`; "all" is
    /// every nemesis): the mix that catches it in the fewest seeds among those tried.
    pub nemeses: &'static str,
    /// Whether each seed draws its own mix of `nemeses` (swarm testing, the default), or runs
    /// them all (`ringleader sim --no-swarm`).
    pub swarm: bool,
    /// The consistency levels the workload uses (`ringleader sim --consistency`): the level
    /// whose promise the bug breaks.
    pub consistency: &'static str,
    /// Seeds, from 0, within which the simulation must catch it (about 2–3 times the seeds it
    /// needed when measured; at most 200). Zero for what is not caught by seeds
    /// ([`Kind::Regression`], [`Kind::NotCaught`]).
    pub seed_budget: u64,
}

/// Every planted bug and fault, in a fixed order.
pub const CATALOGUE: &[Entry] = &[
    Entry {
        bug: PlantedBug::LocalReads,
        name: "local-reads",
        layer: Layer::Node,
        kind: Kind::Bug,
        rule: "thesis §6.4: linearizable reads go through the leader's ReadIndex",
        description: "every node answers linearizable reads from its local state at once",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 3,
    },
    Entry {
        bug: PlantedBug::DivergentApply,
        name: "divergent-apply",
        layer: Layer::Node,
        kind: Kind::Bug,
        rule: "Raft §5.3, State Machine Safety: every replica applies the same log",
        description: "the highest-id node applies each no-op as a write of a hidden key",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 3,
    },
    Entry {
        bug: PlantedBug::AckBeforeFsync,
        name: "ack-before-fsync",
        layer: Layer::Storage,
        kind: Kind::Bug,
        rule: "Raft Figure 2: persistent state is on stable storage before responding",
        description: "every node's WAL never fsyncs, so writes are acknowledged before they are durable",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 5,
    },
    Entry {
        bug: PlantedBug::CommitOldTerm,
        name: "commit-old-term",
        layer: Layer::Consensus,
        kind: Kind::NotCaught,
        rule: "Raft §5.4.2, Figure 8: a leader commits by counting replicas only entries of its term",
        description: "the leader commits an older term's entry once a majority holds it",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 0,
    },
    Entry {
        bug: PlantedBug::CommitBeyondLastNew,
        name: "commit-beyond-last-new",
        layer: Layer::Consensus,
        kind: Kind::NotCaught,
        rule: "Raft Figure 2, AppendEntries rule 5: commit = min(leaderCommit, index of last new entry)",
        description: "a follower clamps the leader's commit index to its own last index, committing a stale suffix",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 0,
    },
    Entry {
        bug: PlantedBug::HeartbeatCommitUnclamped,
        name: "heartbeat-commit-unclamped",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft Figure 2, AppendEntries rule 5: a follower learns a commit index only up to entries the leader matched",
        description: "the leader's heartbeats carry its whole commit index, not min(commit, the follower's match)",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 65,
    },
    Entry {
        bug: PlantedBug::ReadBeforeFirstCommit,
        name: "read-before-first-commit",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "thesis §6.4 step 1: a new leader serves reads only after an entry of its term commits",
        description: "a new leader answers ReadIndex with a commit index from before its first commit",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 200,
    },
    Entry {
        bug: PlantedBug::UnconfirmedReads,
        name: "unconfirmed-reads",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "thesis §6.4 step 3: a leader confirms it still leads (a heartbeat quorum) before serving a read",
        description: "the leader answers ReadIndex at once, so a deposed leader serves stale reads",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 200,
    },
    Entry {
        bug: PlantedBug::DoubleVote,
        name: "double-vote",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft §5.2, Figure 2 RequestVote: at most one vote per term",
        description: "a node that already voted in this term votes again for another candidate",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 35,
    },
    Entry {
        bug: PlantedBug::VoteNotPersisted,
        name: "vote-not-persisted",
        layer: Layer::Storage,
        kind: Kind::Bug,
        rule: "Raft Figure 2: currentTerm and votedFor are on stable storage before responding",
        description: "the log store writes the hard state only together with entries, so a vote alone is lost on restart",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 70,
    },
    Entry {
        bug: PlantedBug::TruncateMatchingLog,
        name: "truncate-matching-log",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft Figure 2, AppendEntries rule 3: only a conflicting entry and those after it are deleted",
        description: "a follower drops its entries after a (stale or duplicated) AppendEntries even when they match",
        nemeses: "messages,crash,partition",
        swarm: false,
        consistency: "linearizable",
        seed_budget: 85,
    },
    Entry {
        bug: PlantedBug::StaleSnapshot,
        name: "stale-snapshot",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft §7, Figure 13 rules 6-7: a snapshot the log already covers keeps the log after it",
        description: "a follower installs any snapshot it receives, discarding a newer log",
        nemeses: "messages,crash,bounce,pause",
        swarm: false,
        consistency: "linearizable",
        seed_budget: 200,
    },
    Entry {
        bug: PlantedBug::SessionOutcomeNotCached,
        name: "session-outcome-not-cached",
        layer: Layer::Sessions,
        kind: Kind::Bug,
        rule: "thesis §6.3: a session's write is applied once; a retry gets the cached outcome",
        description: "the state machine does not cache a session write's outcome, so a retried write applies twice",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 55,
    },
    Entry {
        bug: PlantedBug::MajorityOffByOne,
        name: "majority-off-by-one",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft §5.3: an entry commits once a majority (n/2 + 1) holds it",
        description: "the leader commits once n/2 nodes hold an entry, one short of a majority",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 20,
    },
    Entry {
        bug: PlantedBug::NeverSendSnapshot,
        name: "never-send-snapshot",
        layer: Layer::Consensus,
        kind: Kind::Bug,
        rule: "Raft §7: a follower that needs compacted entries is sent InstallSnapshot (liveness)",
        description: "the leader never sends a snapshot, so a follower behind its compacted log never catches up",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 3,
    },
    Entry {
        bug: PlantedBug::SessionIndexIgnored,
        name: "session-index-ignored",
        layer: Layer::Node,
        kind: Kind::Bug,
        rule: "issue 15, session reads: served only by a replica that applied the client's session position",
        description: "every replica answers session reads at once, whatever it has applied",
        nemeses: "all",
        swarm: true,
        consistency: "session",
        seed_budget: 3,
    },
    Entry {
        bug: PlantedBug::RefuseWrites,
        name: "refuse-writes",
        layer: Layer::Node,
        kind: Kind::FloorFault,
        rule: "availability: a healthy majority serves writes",
        description: "every node refuses every write as invalid (caught by the floors of successful operations)",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 3,
    },
    Entry {
        bug: PlantedBug::LoseFirstWrite,
        name: "lose-first-write",
        layer: Layer::Node,
        kind: Kind::Regression,
        rule: "a fault to survive, not a bug: a session's first write is lost on the way",
        description: "every node swallows each session's first write (the cluster must keep serving the client)",
        nemeses: "all",
        swarm: true,
        consistency: "linearizable",
        seed_budget: 0,
    },
];

impl PlantedBug {
    /// This bug's catalogue entry; `None` for [`PlantedBug::None`].
    pub fn entry(self) -> Option<&'static Entry> {
        CATALOGUE.iter().find(|entry| entry.bug == self)
    }

    /// The command-line name, `none` for [`PlantedBug::None`].
    pub fn name(self) -> &'static str {
        self.entry().map_or("none", |entry| entry.name)
    }

    /// Whether `self` is planted and this build can plant bugs at all (feature
    /// `planted-bugs`): the check every production code path makes. Always false without the
    /// feature, so the compiler drops the planted branches.
    #[cfg(feature = "planted-bugs")]
    #[inline]
    pub fn is_active(self, bug: PlantedBug) -> bool {
        self == bug && bug != PlantedBug::None
    }

    /// Whether `self` is planted and this build can plant bugs at all (feature
    /// `planted-bugs`): the check every production code path makes. Always false without the
    /// feature, so the compiler drops the planted branches.
    #[cfg(not(feature = "planted-bugs"))]
    #[inline(always)]
    pub fn is_active(self, _bug: PlantedBug) -> bool {
        false
    }

    /// The consensus core's switch for this bug, if it lives there.
    pub fn raft_bug(self) -> Option<RaftBug> {
        Some(match self {
            PlantedBug::CommitOldTerm => RaftBug::CommitOldTerm,
            PlantedBug::CommitBeyondLastNew => RaftBug::CommitBeyondLastNew,
            PlantedBug::HeartbeatCommitUnclamped => RaftBug::HeartbeatCommitUnclamped,
            PlantedBug::ReadBeforeFirstCommit => RaftBug::ReadBeforeFirstCommit,
            PlantedBug::UnconfirmedReads => RaftBug::UnconfirmedReads,
            PlantedBug::DoubleVote => RaftBug::DoubleVote,
            PlantedBug::TruncateMatchingLog => RaftBug::TruncateMatchingLog,
            PlantedBug::StaleSnapshot => RaftBug::StaleSnapshot,
            PlantedBug::MajorityOffByOne => RaftBug::MajorityOffByOne,
            PlantedBug::NeverSendSnapshot => RaftBug::NeverSendSnapshot,
            _ => return None,
        })
    }

    /// The storage engine's switch for this bug, if it lives there.
    pub fn storage_bug(self) -> Option<StorageBug> {
        Some(match self {
            PlantedBug::VoteNotPersisted => StorageBug::VoteNotPersisted,
            PlantedBug::SessionOutcomeNotCached => StorageBug::SessionOutcomeNotCached,
            _ => return None,
        })
    }
}

impl fmt::Display for PlantedBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PlantedBug {
    type Err = String;

    fn from_str(name: &str) -> Result<PlantedBug, String> {
        if name == "none" {
            return Ok(PlantedBug::None);
        }
        CATALOGUE
            .iter()
            .find(|entry| entry.name == name)
            .map(|entry| entry.bug)
            .ok_or_else(|| {
                let names: Vec<&str> = CATALOGUE.iter().map(|entry| entry.name).collect();
                format!(
                    "unknown planted bug {name:?} (the catalogue: {})",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_has_one_entry_and_a_kebab_case_name_that_parses_back() {
        for entry in CATALOGUE {
            assert_eq!(entry.bug.entry(), Some(entry), "{}", entry.name);
            assert!(
                entry
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-'),
                "{}",
                entry.name
            );
            assert_eq!(entry.name.parse::<PlantedBug>(), Ok(entry.bug));
            assert!(entry.seed_budget <= 200, "{}", entry.name);
        }
        let counted = CATALOGUE.iter().filter(|e| e.kind == Kind::Bug).count();
        assert!(counted >= 12, "{counted} bugs catalogued");
        assert!("no-such-bug".parse::<PlantedBug>().is_err());
    }

    #[test]
    fn each_bug_is_switched_on_in_at_most_one_layer() {
        for entry in CATALOGUE {
            let switches = usize::from(entry.bug.raft_bug().is_some())
                + usize::from(entry.bug.storage_bug().is_some());
            assert!(switches <= 1, "{}", entry.name);
        }
    }
}
