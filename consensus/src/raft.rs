//! The Raft core: roles, terms and the handling of every message, tick and request.
//!
//! `Raft` is a deterministic state machine. Inputs are `tick`, `step`, `propose`, `read_index`,
//! `transfer_leadership`, `campaign` and `compact`; outputs accumulate until the driver takes them
//! with `ready` and acknowledges them with `advance` (contract in `lib.rs`). The module follows the
//! Raft paper's Figure 2 and Ongaro's thesis, in the structure of etcd-io/raft's `raft.go`.
//!
//! Invariants asserted here: the term never decreases; a node votes at most once per term; at most
//! one leader per term (a leader never receives `AppendEntries` from another node in its term);
//! a leader only appends to its own log; the commit index never decreases.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::config::{Config, ConfigError};
use crate::log::RaftLog;
use crate::message::{
    AppendResult, Entry, EntryPayload, Freshness, HardState, Index, Message, MessageBody, NodeId,
    Snapshot, SnapshotMeta, Term,
};
use crate::planted::{self, RaftBug};
use crate::prng::Prng;
use crate::progress::{Progress, ReplicationState};
use crate::quorum::{quorum, VoteResult, VoteTally};
use crate::read::{lease_remaining, ReadMode, ReadPath, ReadState, ReadTracker};

/// What a node loaded from durable storage at start.
#[derive(Clone, Debug, Default)]
pub struct Restored {
    pub hard_state: HardState,
    /// The latest snapshot, with its data: a leader needs the data to bring followers up to date.
    pub snapshot: Option<Snapshot>,
    /// The log entries kept on disk, in order: the entries after the snapshot, possibly preceded
    /// by a tail at or below the snapshot index (kept if it is contiguous and matches the
    /// snapshot's term at its index; see `RaftLog::restore`).
    pub entries: Vec<Entry>,
    /// The highest index the application's state machine already reflects (for a persistent state
    /// machine). Zero means "whatever the snapshot covers": committed entries after it are re-applied.
    pub applied_index: Index,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
    #[error("too many uncommitted entries ({uncommitted}); retry later")]
    Backpressure { uncommitted: u64 },
    /// The commands proposed in this term and not yet committed already hold the byte budget
    /// ([`Config::max_uncommitted_bytes`]).
    #[error("uncommitted commands hold {uncommitted_bytes} bytes, the budget; retry later")]
    BytesBackpressure { uncommitted_bytes: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ReadError {
    /// Followers do not forward reads: the caller retries at the hinted leader.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    /// Thesis §6.4 step 1: until the leader's noop commits it may not know the latest commit index.
    #[error("the leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotReady,
    #[error("too many reads pending confirmation ({pending})")]
    Backpressure { pending: usize },
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {to} is not another voter")]
    InvalidTarget { to: NodeId },
}

#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CompactError {
    #[error("snapshot index {index} is beyond the applied index {applied_index}")]
    NotApplied { index: Index, applied_index: Index },
    #[error("snapshot term {term} does not match the log at index {index}")]
    TermMismatch { index: Index, term: Term },
}

/// Everything the driver must act on, in this order: persist `hard_state`, `snapshot` and
/// `entries` durably; send `messages`; install `snapshot` in the state machine and apply
/// `committed_entries`; serve `read_states` once applied far enough; then call `Raft::advance`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Changed term/vote/commit, to persist (`None`: unchanged since the last Ready).
    pub hard_state: Option<HardState>,
    /// Entries to append durably. An entry whose index already exists on disk replaces it and
    /// every later one (truncate the suffix first).
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader: persist it, drop the whole on-disk log (`entries`
    /// above then continue after it), and restore the state machine from it before applying.
    pub snapshot: Option<Snapshot>,
    /// Send only after the above is durable (a vote or an acknowledgement promises durability).
    pub messages: Vec<Message>,
    /// Apply in order, exactly once. May include entries from `entries` of this same Ready.
    pub committed_entries: Vec<Entry>,
    /// Linearizable reads: serve each once the state machine's applied index >= `index`. Each
    /// says which path confirmed it (a heartbeat quorum or the lease).
    pub read_states: Vec<ReadState>,
}

/// What [`Raft::abandon_ready`] dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// The first entry index dropped from the log (every later one went too); `None` if no
    /// entry was dropped.
    pub dropped_from: Option<Index>,
    /// The leader had already sent some dropped entries to followers and stepped down: those
    /// entries may still commit under another leader.
    pub stepped_down: bool,
}

/// Whether a message may leave before this node's own unpersisted state is durable: the
/// leader-only messages, which promise nothing about the sender's disk. Votes, vote requests
/// (the term and vote must be durable first) and every acknowledgement must wait.
fn needs_no_local_durability(body: &MessageBody) -> bool {
    matches!(
        body,
        MessageBody::AppendEntries { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. }
            | MessageBody::TimeoutNow
    )
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        *self == Ready::default()
    }
}

/// What a handed-out Ready contained, to apply on `advance`.
#[derive(Debug)]
struct ReadyRecord {
    first_entry: Option<Index>,
    last_entry: Option<(Index, Term)>,
    applied_to: Index,
    /// The hard state handed out before this Ready, to hand it again if this one is abandoned.
    previous_hard_state: HardState,
}

/// A leader's view of one peer, for `Status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    pub match_index: Index,
    pub next_index: Index,
    pub state: ReplicationState,
    /// Leader ticks since this peer was last heard from.
    pub last_heard_ticks: u32,
    /// The highest index this peer reported its state machine applied, in this leader's term
    /// (its last `AppendEntriesResponse` or `HeartbeatResponse`; 0 until it answers). A peer
    /// that restarts re-applies from its durable log, so an index once reported stays applied.
    pub applied_index: Index,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub leader: Option<NodeId>,
    pub first_index: Index,
    pub last_index: Index,
    pub commit_index: Index,
    pub applied_index: Index,
    pub transfer_target: Option<NodeId>,
    /// Leader ticks the lease still holds for (`None` unless this node leads and its lease
    /// holds; see `Config::lease_ticks` for the clock-drift assumption).
    pub lease_remaining_ticks: Option<u64>,
    /// Per-peer replication progress; empty unless this node is the leader.
    pub progress: BTreeMap<NodeId, PeerStatus>,
}

#[derive(Clone, Copy, Debug)]
struct Transfer {
    to: NodeId,
    elapsed_ticks: u32,
}

/// One Raft node's consensus state. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Raft {
    config: Config,
    id: NodeId,
    /// Sorted voter ids, this node included.
    voters: Vec<NodeId>,
    term: Term,
    vote: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    log: RaftLog,
    /// Leader only: every other voter's replication progress.
    progress: BTreeMap<NodeId, Progress>,
    votes: VoteTally,
    /// Ticks since the last election-timer reset (followers and candidates) or the last
    /// CheckQuorum round (leader).
    election_elapsed: u32,
    heartbeat_elapsed: u32,
    randomized_election_timeout: u32,
    /// Leader ticks since becoming leader in this term; dates heartbeats for the lease.
    leader_ticks: u64,
    /// Ticks since this node started, in every role: dates heartbeat answers, which the leader
    /// echoes back so that a follower can bound its staleness (`Freshness`).
    ticks: u64,
    /// The freshest `Freshness` heard from a leader (kept across terms: it states a fact about
    /// real time that stays true, only older).
    freshness: Option<Freshness>,
    transfer: Option<Transfer>,
    /// Set once this leader sent `TimeoutNow` in its term: a transfer lets voters ignore
    /// stickiness, so the lease no longer protects reads.
    lease_revoked: bool,
    /// After a restart, the node may not know it recently acknowledged a leader whose lease is
    /// still running, so it refuses votes for one election timeout (with CheckQuorum, like
    /// stickiness). Not set on a node restored without a term: it never acknowledged anyone.
    startup_vote_fence: bool,
    reads: ReadTracker,
    read_states: Vec<ReadState>,
    messages: Vec<Message>,
    /// The highest entry index this leader sent (in `take_messages_to_send_now`) before its own
    /// log held it durably: entries up to here may sit on followers even if the local write
    /// fails, so they must never be replaced in this term (see `abandon_ready`).
    sent_before_persisted: Index,
    /// Proposals were appended since the last appends went out: the next
    /// `take_messages_to_send_now` or `ready` sends each follower ONE append carrying all of
    /// them, instead of one append per proposal.
    appends_pending: bool,
    /// Bytes of the commands this leader proposed and has not yet seen commit (etcd's
    /// `uncommittedSize`), bounded by [`Config::max_uncommitted_bytes`]. Zero when not leading.
    uncommitted_bytes: u64,
    rng: Prng,
    /// The hard state last handed out in a Ready.
    handed_hard_state: HardState,
    in_flight_ready: Option<ReadyRecord>,
    /// Protocol-Aware Recovery (Alagappan et al., FAST 2018): this node cut its damaged log and
    /// lost entries it had acknowledged, up to at most this commit index. Until its durable log
    /// reaches the index again it must not vote (it could elect a leader missing a committed
    /// entry it helped commit) nor campaign. See `start_repair`.
    repair_until: Option<Index>,
}

impl Raft {
    /// Creates a node from its configuration and what it restored from disk. It starts as a
    /// follower without a known leader.
    pub fn new(config: Config, restored: Restored) -> Result<Raft, ConfigError> {
        config.validate()?;
        let mut voters = config.voters.clone();
        voters.sort_unstable();
        let hard_state = restored.hard_state;
        let log = RaftLog::restore(
            restored.snapshot,
            restored.entries,
            hard_state.commit,
            restored.applied_index,
        );
        let mut raft = Raft {
            id: config.id,
            voters,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            progress: BTreeMap::new(),
            votes: VoteTally::default(),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: config.election_timeout_ticks,
            leader_ticks: 0,
            ticks: 0,
            freshness: None,
            transfer: None,
            lease_revoked: false,
            // An acknowledgement is only sent after the term it answers is durable, so a node
            // with no durable term has never vouched for a lease.
            startup_vote_fence: hard_state.term > 0,
            reads: ReadTracker::default(),
            read_states: Vec::new(),
            messages: Vec::new(),
            sent_before_persisted: 0,
            appends_pending: false,
            uncommitted_bytes: 0,
            rng: Prng::new(config.seed),
            handed_hard_state: HardState::default(),
            in_flight_ready: None,
            repair_until: None,
            config,
        };
        // What we restored is already durable: only changes to it need persisting.
        raft.handed_hard_state = raft.hard_state();
        raft.reset_election_timer();
        Ok(raft)
    }

    // ----- Inputs -------------------------------------------------------------------------------

    /// Advances the logical clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        match self.role {
            Role::Leader => self.tick_leader(),
            Role::Follower | Role::PreCandidate | Role::Candidate => {
                self.election_elapsed = self.election_elapsed.saturating_add(1);
                if self.election_elapsed >= self.config.election_timeout_ticks {
                    self.startup_vote_fence = false;
                }
                if self.election_elapsed >= self.randomized_election_timeout {
                    self.campaign();
                }
            }
        }
    }

    /// Marks this node as repairing: its log was cut at damage and may lack entries up to
    /// `until` (the highest commit index it had made durable) that it once acknowledged. Until
    /// its durable log reaches `until` again (re-sent by the leader, entry by entry or as a
    /// snapshot) it grants no vote or pre-vote and never campaigns, so it cannot help elect a
    /// leader that lacks one of those entries.
    ///
    /// It needs no exclusion from commit quorums: an acknowledgement below `until` can only
    /// vouch for entries already committed (every later leader's log holds `until`, and its own
    /// first entry lies beyond it), and one at or above `until` proves, by Log Matching, that the
    /// node holds everything up to it again.
    pub fn start_repair(&mut self, until: Index) {
        if until > self.log.persisted_index() {
            tracing::warn!(
                id = self.id,
                until,
                "repairing: not voting until the log is re-sent"
            );
            self.repair_until = Some(until);
        }
    }

    /// Whether this node is still repairing (see [`Raft::start_repair`]).
    pub fn is_repairing(&self) -> bool {
        self.repair_until
            .is_some_and(|until| self.log.persisted_index() < until)
    }

    /// Starts an election now (a PreVote round first if configured). No-op on a leader, and on a
    /// node that is repairing its log.
    pub fn campaign(&mut self) {
        if self.role == Role::Leader || self.is_repairing() {
            return;
        }
        if self.config.pre_vote {
            self.start_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// Handles a message from a peer. Messages from unknown nodes or for another node are dropped.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.id || msg.from == self.id || !self.voters.contains(&msg.from) {
            tracing::debug!(id = self.id, %msg, "dropping misaddressed message");
            return;
        }
        if !self.step_term(&msg) {
            return;
        }
        let from = msg.from;
        let term = msg.term;
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(from, term, last_index, last_term, true),
            MessageBody::RequestVote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(from, term, last_index, last_term, false),
            MessageBody::PreVoteResponse { granted } => {
                // A grant carries the proposed term (ours + 1); a rejection carries the voter's.
                let for_us = if granted {
                    term == self.term + 1
                } else {
                    term == self.term
                };
                if self.role == Role::PreCandidate && for_us {
                    self.votes.record(from, granted);
                    self.tally_votes();
                }
            }
            MessageBody::RequestVoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.votes.record(from, granted);
                    self.tally_votes();
                }
            }
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                if self.follow(from) {
                    self.handle_append(from, prev_index, prev_term, entries, commit);
                }
            }
            MessageBody::Heartbeat {
                commit,
                sent_tick,
                read_ctx,
                freshness,
            } => {
                if self.follow(from) {
                    self.note_freshness(freshness);
                    self.handle_heartbeat(from, commit, sent_tick, read_ctx);
                }
            }
            MessageBody::InstallSnapshot { snapshot } => {
                if self.follow(from) {
                    self.handle_snapshot(from, snapshot);
                }
            }
            MessageBody::AppendEntriesResponse {
                result,
                applied_index,
            } => {
                if self.role == Role::Leader {
                    self.note_applied(from, applied_index);
                    self.handle_append_response(from, result);
                }
            }
            MessageBody::HeartbeatResponse {
                sent_tick,
                read_ctx,
                applied_index,
                follower_tick,
                follower_boot,
            } => {
                if self.role == Role::Leader {
                    self.note_applied(from, applied_index);
                    if let Some(pr) = self.progress.get_mut(&from) {
                        // The newest tick of the peer's current life (a new boot id replaces).
                        let newer = pr.follower_tick.is_none_or(|(boot, tick)| {
                            boot != follower_boot || tick < follower_tick
                        });
                        if newer {
                            pr.follower_tick = Some((follower_boot, follower_tick));
                        }
                    }
                    self.handle_heartbeat_response(from, sent_tick, read_ctx);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.leader == Some(from) && !self.is_repairing()
                {
                    tracing::info!(id = self.id, term = self.term, "TimeoutNow: campaigning");
                    self.start_election(true);
                }
            }
        }
    }

    /// Appends a command to the leader's log; returns the index it will commit at, if it commits.
    pub fn propose(&mut self, command: Vec<u8>) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let uncommitted = self.log.last_index() - self.log.commit_index();
        if uncommitted >= self.config.max_uncommitted_entries {
            return Err(ProposeError::Backpressure { uncommitted });
        }
        // One command is always let through when nothing is uncommitted, however large, so a
        // command within the size limits can always make progress (as etcd).
        let command_bytes = command.len() as u64;
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + command_bytes > self.config.max_uncommitted_bytes
        {
            return Err(ProposeError::BytesBackpressure {
                uncommitted_bytes: self.uncommitted_bytes,
            });
        }
        self.uncommitted_bytes += command_bytes;
        let index = self.append_entry(EntryPayload::Command(command));
        // Sent with the next batch of messages, together with every proposal until then.
        self.appends_pending = true;
        Ok(index)
    }

    /// Requests a linearizable read (thesis §6.4). On success the answer arrives later as a
    /// `ReadState` with this `request_id` in `Ready::read_states`. In [`ReadMode::Lease`], while
    /// the lease holds, it is in the very next Ready (served by the lease); otherwise the read
    /// waits for a heartbeat round, shared by every read registered before the next Ready is
    /// built, and repeated by every periodic heartbeat until a quorum answers. A single voter
    /// answers at once. Followers refuse with `NotLeader` rather than forwarding.
    pub fn read_index(&mut self, request_id: u64, mode: ReadMode) -> Result<(), ReadError> {
        if self.role != Role::Leader {
            return Err(ReadError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let commit_index = self.log.commit_index();
        // Planted (thesis §6.4 step 1): serving before our term's first commit.
        if self.log.term(commit_index) != Some(self.term)
            && !self.planted(RaftBug::ReadBeforeFirstCommit)
        {
            return Err(ReadError::LeaderNotReady);
        }
        // Planted (thesis §6.4 step 3): answering without confirming leadership.
        if self.voters.len() == 1 || self.planted(RaftBug::UnconfirmedReads) {
            self.read_states.push(ReadState {
                request_id,
                index: commit_index,
                served: ReadPath::Quorum,
            });
            return Ok(());
        }
        if mode == ReadMode::Lease {
            if let Some(remaining_ticks) = self.lease_remaining_ticks() {
                self.read_states.push(ReadState {
                    request_id,
                    index: commit_index,
                    served: ReadPath::Lease { remaining_ticks },
                });
                return Ok(());
            }
        }
        if self.reads.len() >= self.config.max_pending_reads {
            return Err(ReadError::Backpressure {
                pending: self.reads.len(),
            });
        }
        // The round goes out when the next Ready is built (see `ready`), once for all the reads
        // registered until then.
        self.reads.register(request_id, commit_index);
        Ok(())
    }

    /// Hands leadership to `to` (thesis §3.10): bring it up to date, then send `TimeoutNow`.
    /// Proposals are refused meanwhile; the attempt is abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id || !self.progress.contains_key(&to) {
            return Err(TransferError::InvalidTarget { to });
        }
        if self.transfer.is_some_and(|t| t.to == to) {
            return Ok(());
        }
        tracing::info!(
            id = self.id,
            term = self.term,
            to,
            "transferring leadership"
        );
        self.transfer = Some(Transfer {
            to,
            elapsed_ticks: 0,
        });
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if caught_up {
            self.maybe_send_timeout_now(to);
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// The application checkpointed its state machine at `snapshot.meta.last_index` (which it has
    /// applied): drop the log up to there, except the last `Config::compaction_tail_entries`
    /// entries, and keep the snapshot to send to followers that lag further behind.
    /// A snapshot not newer than the current one is ignored.
    pub fn compact(&mut self, snapshot: Snapshot) -> Result<(), CompactError> {
        let index = snapshot.meta.last_index;
        if index <= self.log.snapshot_index() {
            return Ok(());
        }
        if index > self.log.applied_index() {
            return Err(CompactError::NotApplied {
                index,
                applied_index: self.log.applied_index(),
            });
        }
        if self.log.term(index) != Some(snapshot.meta.last_term) {
            return Err(CompactError::TermMismatch {
                index,
                term: snapshot.meta.last_term,
            });
        }
        self.log.compact(
            snapshot,
            self.config.compaction_tail_entries,
            self.config.compaction_tail_bytes,
        );
        Ok(())
    }

    // ----- Outputs ------------------------------------------------------------------------------

    /// Whether `ready` would return anything. False while a Ready awaits `advance`.
    pub fn has_ready(&self) -> bool {
        self.in_flight_ready.is_none()
            && (self.hard_state() != self.handed_hard_state
                || self.log.has_unstable()
                || self.log.has_pending_snapshot()
                || self.log.has_next_committed()
                || !self.messages.is_empty()
                || !self.read_states.is_empty()
                || self.read_round_wanted())
    }

    /// Takes everything pending. Call `advance` once it is handled, before the next `ready`.
    /// `step`, `tick` and the other inputs may be called in between.
    pub fn ready(&mut self) -> Ready {
        debug_assert!(
            self.in_flight_ready.is_none(),
            "ready() called again before advance()"
        );
        self.send_pending_appends();
        if self.read_round_wanted() {
            // One heartbeat per peer confirms every read registered since the last one left.
            self.broadcast_heartbeat();
        }
        let previous_hard_state = self.handed_hard_state;
        let hard_state = self.hard_state();
        let hard_state = (hard_state != self.handed_hard_state).then(|| {
            self.handed_hard_state = hard_state;
            hard_state
        });
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.take_unstable();
        if let (Some(snapshot), Some(first)) = (&snapshot, entries.first()) {
            debug_assert!(first.index > snapshot.meta.last_index);
        }
        let committed_entries = self
            .log
            .take_committed(self.config.max_committed_entries_per_ready);
        self.in_flight_ready = Some(ReadyRecord {
            first_entry: entries.first().map(|e| e.index),
            last_entry: entries.last().map(|e| (e.index, e.term)),
            applied_to: self.log.applying_index(),
            previous_hard_state,
        });
        Ready {
            hard_state,
            entries,
            snapshot,
            messages: std::mem::take(&mut self.messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Acknowledges the last `Ready`: its state is durable, its messages sent and its committed
    /// entries applied. A leader may now count its own log toward commitment.
    pub fn advance(&mut self) {
        let Some(record) = self.in_flight_ready.take() else {
            debug_assert!(false, "advance() without a ready()");
            return;
        };
        if let Some((index, term)) = record.last_entry {
            self.log.persisted_to(index, term);
        }
        self.log.applied_to(record.applied_to);
        if self.role == Role::Leader && self.maybe_commit() {
            self.broadcast_append(true);
        }
    }

    /// The messages that need not wait for this node's disk: a leader's appends, heartbeats,
    /// snapshots and `TimeoutNow`. None of them promises anything about the local log (the
    /// leader's term became durable before any vote for it was asked, and it counts its own log
    /// toward a quorum only once `advance` says it is durable), so the driver may send them at
    /// once, while its write of the same entries is still running, even while a `Ready` is in
    /// flight: the followers write in parallel with the leader (Raft thesis §10.2.1), and a slow
    /// fsync does not hold back heartbeats. Whatever the driver does not take here comes out,
    /// in order, in the next `Ready`'s `messages`.
    pub fn take_messages_to_send_now(&mut self) -> Vec<Message> {
        self.send_pending_appends();
        if self.role == Role::Leader && self.read_round_wanted() {
            // One heartbeat per peer confirms every read registered since the last one left.
            self.broadcast_heartbeat();
        }
        if self.messages.is_empty() {
            // The common case for most of a node's many groups, most of the time.
            return Vec::new();
        }
        let mut now = Vec::new();
        let mut later = Vec::with_capacity(self.messages.len());
        for message in std::mem::take(&mut self.messages) {
            if needs_no_local_durability(&message.body) {
                now.push(message);
            } else {
                later.push(message);
            }
        }
        self.messages = later;
        let persisted = self.log.persisted_index();
        for message in &now {
            if let MessageBody::AppendEntries { entries, .. } = &message.body {
                if let Some(last) = entries.last().filter(|last| last.index > persisted) {
                    self.sent_before_persisted = self.sent_before_persisted.max(last.index);
                }
            }
        }
        now
    }

    /// The application could not persist the last `Ready` (its disk is full) and acted on none
    /// of it: no message of its `messages` sent, nothing applied. Forgets everything not yet
    /// durable so that nothing unpersisted is ever counted durable: those entries leave the log
    /// (a follower's are re-sent by the leader), its committed entries will be handed out again,
    /// and so will its hard state.
    ///
    /// A leader whose dropped entries never left the node keeps leading: it re-probes every
    /// follower, since the appends it meant to send never left, and drops its pending reads,
    /// whose confirming heartbeats never left either; its clients' proposals are certainly lost.
    /// A leader that already sent some of them early (`take_messages_to_send_now`) steps down
    /// instead, staying in its term: followers may hold those entries durably and commit them
    /// under the next leader, and a leader that wrote other entries at the same indexes in the
    /// same term would break Log Matching. Its clients' outcome is then unknown.
    ///
    /// Not for a Ready that carried a snapshot: an installed snapshot replaced the log in memory
    /// and cannot be undone here.
    pub fn abandon_ready(&mut self) -> Abandoned {
        let Some(record) = self.in_flight_ready.take() else {
            debug_assert!(false, "abandon_ready() without a ready()");
            return Abandoned::default();
        };
        self.handed_hard_state = record.previous_hard_state;
        let dropped_from = self.log.abandon_unpersisted(record.first_entry);
        let sent_early = dropped_from.is_some_and(|first| self.sent_before_persisted >= first);
        self.sent_before_persisted = self.sent_before_persisted.min(self.log.last_index());
        if self.role == Role::Leader && sent_early {
            tracing::warn!(
                id = self.id,
                term = self.term,
                "could not persist entries already sent to followers: stepping down"
            );
            self.become_follower(self.term, None);
            return Abandoned {
                dropped_from,
                stepped_down: true,
            };
        }
        if self.role == Role::Leader {
            for pr in self.progress.values_mut() {
                pr.become_probe();
            }
            self.reads.reset();
            // The dropped commands will never commit: count only those still in the log.
            let term = self.term;
            self.uncommitted_bytes = (self.log.commit_index() + 1..=self.log.last_index())
                .filter_map(|index| self.log.entry(index))
                .filter(|entry| entry.term == term)
                .map(Entry::command_bytes)
                .sum();
            if self.log.last_term() < self.term {
                // Its first entry of the term was abandoned: without one it can neither commit
                // nor confirm reads (Raft §5.4.2, §8), so it appends another.
                self.append_entry(EntryPayload::Noop);
                self.broadcast_append(true);
            }
        }
        debug_assert!(self.log.commit_index() <= self.log.last_index());
        Abandoned {
            dropped_from,
            stepped_down: false,
        }
    }

    pub fn status(&self) -> Status {
        let progress = self
            .progress
            .iter()
            .map(|(&id, pr)| {
                let status = PeerStatus {
                    match_index: pr.match_index,
                    next_index: pr.next_index,
                    state: pr.state,
                    last_heard_ticks: pr.ticks_since_heard,
                    applied_index: pr.applied_index,
                };
                (id, status)
            })
            .collect();
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            commit_index: self.log.commit_index(),
            applied_index: self.log.applied_index(),
            transfer_target: self.transfer.map(|t| t.to),
            lease_remaining_ticks: self.lease_remaining_ticks(),
            progress,
        }
    }

    /// Read-only access to the log, for inspection and tests.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// A follower's ticks since it last heard from its leader (the election timer's count);
    /// `None` when it is not a follower of a known leader.
    pub fn ticks_since_leader_contact(&self) -> Option<u32> {
        (self.role == Role::Follower && self.leader.is_some()).then_some(self.election_elapsed)
    }

    /// How many more of its ticks this leader's lease holds for: `Some` only on a leader with
    /// a quorum's heartbeat acknowledgements younger than `Config::lease_ticks`, leases usable
    /// (`Config::leases_usable`) and no leadership transfer under way. A receipt can state it
    /// together with `Config::lease_drift_bound`.
    pub fn lease_remaining_ticks(&self) -> Option<u64> {
        if self.role != Role::Leader
            || !self.config.leases_usable()
            || self.lease_revoked
            || self.transfer.is_some()
        {
            return None;
        }
        lease_remaining(
            self.progress.values().map(|pr| pr.lease_ack_tick),
            self.leader_ticks,
            self.config.lease_ticks(),
            quorum(self.voters.len()),
        )
    }

    /// An upper bound, in this node's ticks, on how far a state machine applied up to
    /// `applied` may be behind the group's committed state; `None` when this node cannot say.
    ///
    /// A leader's state is fresh as of the last heartbeat a quorum acknowledged (no other leader
    /// can have committed anything before it was sent), if it has applied its commit index. A
    /// follower's is fresh as of the `Freshness` its leader last sent (see there), once it has
    /// applied that heartbeat's `leader_commit`. Neither trusts a message's delay: both count
    /// from a moment the node itself dated. Ticks of different nodes are compared as if they ran
    /// at one rate; the caller widens the bound by the clock-drift bound.
    pub fn staleness_bound_ticks(&self, applied: Index) -> Option<u64> {
        if self.role == Role::Leader {
            return (applied >= self.log.commit_index())
                .then(|| self.quorum_ack_age_ticks())
                .flatten();
        }
        let freshness = self.freshness?;
        (applied >= freshness.leader_commit)
            .then(|| self.ticks.saturating_sub(freshness.echo_tick) + freshness.quorum_age_ticks)
    }

    /// Leader only: its ticks since the heartbeat that a quorum (itself included) has most
    /// recently all acknowledged was sent. `None` until the leader has committed an entry of its
    /// own term: before that its commit index may trail what earlier leaders committed (the
    /// rule ReadIndex follows too, thesis §6.4), so it cannot vouch for any state.
    fn quorum_ack_age_ticks(&self) -> Option<u64> {
        if self.role != Role::Leader || self.log.term(self.log.commit_index()) != Some(self.term) {
            return None;
        }
        let mut acks: Vec<u64> = self
            .progress
            .values()
            .filter_map(|pr| pr.lease_ack_tick)
            .collect();
        acks.push(self.leader_ticks); // the leader acknowledges itself now
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let oldest_of_quorum = *acks.get(quorum(self.voters.len()) - 1)?;
        Some(self.leader_ticks - oldest_of_quorum)
    }

    /// Keeps the freshest statement of freshness a leader made (the one dating the oldest
    /// state it vouches for latest).
    fn note_freshness(&mut self, freshness: Option<Freshness>) {
        let Some(new) = freshness else { return };
        if new.echo_boot != self.config.boot_id || new.echo_tick > self.ticks {
            return; // not a tick of this life of ours
        }
        let fresh_as_of = |f: &Freshness| f.echo_tick as i128 - f.quorum_age_ticks as i128;
        if self
            .freshness
            .is_none_or(|old| fresh_as_of(&new) >= fresh_as_of(&old))
        {
            self.freshness = Some(new);
        }
    }

    /// The configuration this node runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether `bug` is planted in this node (always false without the `planted-bugs` feature).
    #[inline]
    fn planted(&self, bug: RaftBug) -> bool {
        planted::active(self.config.planted_bug, bug)
    }

    // ----- Terms and roles ----------------------------------------------------------------------

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit_index(),
        }
    }

    /// Raft §5.1 term rules, with PreVote and CheckQuorum refinements. Returns whether the
    /// message should be handled further.
    fn step_term(&mut self, msg: &Message) -> bool {
        if msg.term > self.term {
            let is_vote_request = matches!(
                msg.body,
                MessageBody::PreVote { .. } | MessageBody::RequestVote { .. }
            );
            let transfer = matches!(
                msg.body,
                MessageBody::RequestVote {
                    leadership_transfer: true,
                    ..
                }
            );
            if is_vote_request && !transfer && self.in_leader_lease() {
                // Leader stickiness (thesis §4.2.3): we heard from a live leader recently, so this
                // candidate is likely partitioned or flaky. Do not even adopt its term.
                tracing::debug!(id = self.id, %msg, "ignoring vote request within leader lease");
                return false;
            }
            match msg.body {
                // A pre-vote changes nobody's term; a granted pre-vote response carries the
                // proposed term, not the voter's.
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::AppendEntries { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from))
                }
                _ => self.become_follower(msg.term, None),
            }
            true
        } else if msg.term < self.term {
            match msg.body {
                MessageBody::AppendEntries { .. } | MessageBody::Heartbeat { .. }
                    if self.config.check_quorum || self.config.pre_vote =>
                {
                    // A stale leader cannot learn our term from votes (we may be refusing to
                    // campaign under PreVote/stickiness), so tell it, and let it step down.
                    self.send(
                        msg.from,
                        MessageBody::HeartbeatResponse {
                            sent_tick: 0,
                            read_ctx: None,
                            applied_index: self.log.applied_index(),
                            follower_tick: self.ticks,
                            follower_boot: self.config.boot_id,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(msg.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            false
        } else {
            true
        }
    }

    /// Whether this node heard from a leader within the election timeout (and so must not help
    /// depose it). Only enforced with CheckQuorum, which makes a leader step down on its own.
    fn in_leader_lease(&self) -> bool {
        self.config.check_quorum
            && ((self.leader.is_some()
                && self.election_elapsed < self.config.election_timeout_ticks)
                || self.startup_vote_fence)
    }

    /// A leader's message at our term: follow it. Returns false if that is impossible.
    fn follow(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => {
                // Election Safety (Raft §5.2): two leaders in one term is a protocol violation.
                debug_assert!(
                    false,
                    "two leaders in term {}: {} and {from}",
                    self.term, self.id
                );
                tracing::error!(
                    id = self.id,
                    from,
                    term = self.term,
                    "two leaders in one term"
                );
                false
            }
            Role::PreCandidate | Role::Candidate => {
                self.become_follower(self.term, Some(from));
                true
            }
            Role::Follower => {
                self.leader = Some(from);
                self.election_elapsed = 0;
                true
            }
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        debug_assert!(term >= self.term, "term went backwards");
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role != Role::Follower {
            tracing::info!(id = self.id, term, ?leader, "became follower");
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.reset_role_state();
    }

    fn start_pre_vote(&mut self) {
        tracing::info!(id = self.id, term = self.term, "starting pre-vote");
        self.role = Role::PreCandidate;
        self.leader = None;
        self.reset_role_state();
        self.votes.record(self.id, true);
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term + 1;
        for to in self.peers() {
            self.send_at(
                to,
                term,
                MessageBody::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
        self.tally_votes();
    }

    fn start_election(&mut self, leadership_transfer: bool) {
        self.term += 1;
        self.vote = Some(self.id);
        self.role = Role::Candidate;
        self.leader = None;
        tracing::info!(id = self.id, term = self.term, "starting election");
        self.reset_role_state();
        self.votes.record(self.id, true);
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.peers() {
            self.send(
                to,
                MessageBody::RequestVote {
                    last_index,
                    last_term,
                    leadership_transfer,
                },
            );
        }
        self.tally_votes();
    }

    fn tally_votes(&mut self) {
        match (self.role, self.votes.result(&self.voters)) {
            (Role::PreCandidate, VoteResult::Won) => self.start_election(false),
            (Role::Candidate, VoteResult::Won) => self.become_leader(),
            (Role::PreCandidate | Role::Candidate, VoteResult::Lost) => {
                self.become_follower(self.term, None)
            }
            _ => {}
        }
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        tracing::info!(id = self.id, term = self.term, "became leader");
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.reset_role_state();
        let next_index = self.log.last_index() + 1;
        self.progress = self
            .peers()
            .into_iter()
            .map(|id| (id, Progress::new(next_index)))
            .collect();
        // Raft §5.4.2 / thesis §6.4: commit an entry of our own term to learn the commit index.
        self.append_entry(EntryPayload::Noop);
        self.broadcast_append(true);
    }

    /// Clears everything that belongs to one role in one term.
    fn reset_role_state(&mut self) {
        self.votes.reset();
        self.progress.clear();
        self.transfer = None;
        self.lease_revoked = false;
        self.leader_ticks = 0;
        self.heartbeat_elapsed = 0;
        self.reads.reset();
        self.uncommitted_bytes = 0;
        self.reset_election_timer();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let timeout = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.in_range(timeout, 2 * timeout);
    }

    fn peers(&self) -> Vec<NodeId> {
        self.voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    // ----- Voting -------------------------------------------------------------------------------

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
    ) {
        // Raft §5.2 (one vote per term, first come first served) and §5.4.1 (up-to-date log). A
        // pre-vote for a future term is not a vote, so it may be granted freely.
        // Planted (Raft §5.2): forgetting that we already voted in this term.
        let not_voted = self.vote.is_none() || self.planted(RaftBug::DoubleVote);
        let can_vote = self.vote == Some(from)
            || (not_voted && self.leader.is_none())
            || (pre_vote && term > self.term);
        let granted =
            can_vote && !self.is_repairing() && self.log.is_up_to_date(last_index, last_term);
        if granted && !pre_vote {
            debug_assert_eq!(term, self.term);
            self.vote = Some(from);
            self.election_elapsed = 0;
        }
        let reply_term = if granted { term } else { self.term };
        let body = if pre_vote {
            MessageBody::PreVoteResponse { granted }
        } else {
            MessageBody::RequestVoteResponse { granted }
        };
        self.send_at(from, reply_term, body);
    }

    // ----- Replication: follower side -----------------------------------------------------------

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) {
        let commit_index = self.log.commit_index();
        let (prev_index, prev_term, entries) = if prev_index < commit_index {
            // Our prefix up to the commit index matches every leader's (Leader Completeness); skip
            // the part of the request it covers and check the rest from there.
            let skip = (commit_index - prev_index) as usize;
            if entries.len() > skip && entries[skip - 1].index != commit_index {
                tracing::error!(
                    id = self.id,
                    from,
                    "AppendEntries with non-contiguous entries"
                );
                return;
            }
            if entries.len() <= skip {
                self.reply_append(
                    from,
                    AppendResult::Success {
                        match_index: commit_index,
                    },
                );
                return;
            }
            let prev_term = entries[skip - 1].term;
            (commit_index, prev_term, entries[skip..].to_vec())
        } else {
            (prev_index, prev_term, entries)
        };
        match self.log.maybe_append(prev_index, prev_term, entries) {
            Some(last_new) => {
                if self.planted(RaftBug::TruncateMatchingLog) {
                    // Planted (Figure 2, AppendEntries rule 3): drops a matching suffix too.
                    self.log.truncate_after(last_new);
                }
                // Planted (Figure 2, AppendEntries rule 5): clamps to our last index instead.
                let vouched = if self.planted(RaftBug::CommitBeyondLastNew) {
                    self.log.last_index()
                } else {
                    last_new
                };
                self.log.commit_to(leader_commit.min(vouched));
                self.reply_append(
                    from,
                    AppendResult::Success {
                        match_index: last_new,
                    },
                );
            }
            None => {
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                self.reply_append(
                    from,
                    AppendResult::Reject {
                        rejected_index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    fn handle_heartbeat(
        &mut self,
        from: NodeId,
        commit: Index,
        sent_tick: u64,
        read_ctx: Option<u64>,
    ) {
        // The leader sends min(its commit, our match), so this prefix of our log is its log.
        self.log.commit_to(commit.min(self.log.last_index()));
        self.send(
            from,
            MessageBody::HeartbeatResponse {
                sent_tick,
                read_ctx,
                applied_index: self.log.applied_index(),
                follower_tick: self.ticks,
                follower_boot: self.config.boot_id,
            },
        );
    }

    fn handle_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let SnapshotMeta {
            last_index,
            last_term,
            ..
        } = snapshot.meta;
        // Planted (Raft §7, Figure 13 rules 6-7): installs whatever arrives, stale or not.
        let stale_too = self.planted(RaftBug::StaleSnapshot);
        let match_index = if last_index <= self.log.commit_index() && !stale_too {
            self.log.commit_index()
        } else if self.log.term(last_index) == Some(last_term) && !stale_too {
            // We already hold the snapshot's last entry, so the log up to it matches: just commit.
            self.log.commit_to(last_index);
            last_index
        } else {
            tracing::info!(id = self.id, last_index, last_term, "installing snapshot");
            self.log.install_snapshot(snapshot);
            last_index
        };
        self.reply_append(from, AppendResult::Success { match_index });
    }

    fn reply_append(&mut self, to: NodeId, result: AppendResult) {
        let applied_index = self.log.applied_index();
        self.send(
            to,
            MessageBody::AppendEntriesResponse {
                result,
                applied_index,
            },
        );
    }

    // ----- Replication: leader side -------------------------------------------------------------

    fn append_entry(&mut self, payload: EntryPayload) -> Index {
        debug_assert_eq!(self.role, Role::Leader);
        let index = self.log.last_index() + 1;
        self.log.append_new(Entry {
            index,
            term: self.term,
            payload,
        });
        // A single voter commits as soon as the entry is durable; see `advance`.
        index
    }

    fn tick_leader(&mut self) {
        self.leader_ticks += 1;
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        for pr in self.progress.values_mut() {
            pr.ticks_since_heard = pr.ticks_since_heard.saturating_add(1);
            pr.ticks_in_state = pr.ticks_in_state.saturating_add(1);
        }
        if let Some(transfer) = &mut self.transfer {
            transfer.elapsed_ticks += 1;
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                tracing::info!(
                    id = self.id,
                    to = transfer.to,
                    "leadership transfer timed out"
                );
                self.transfer = None;
            }
        }
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_heard() {
                tracing::info!(
                    id = self.id,
                    term = self.term,
                    "lost quorum contact: stepping down"
                );
                self.become_follower(self.term, None);
                return;
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
    }

    /// CheckQuorum (thesis §6.2): did a quorum, counting ourselves, speak within a timeout?
    fn quorum_recently_heard(&self) -> bool {
        let heard = self
            .progress
            .values()
            .filter(|pr| pr.ticks_since_heard < self.config.election_timeout_ticks)
            .count();
        1 + heard >= quorum(self.voters.len())
    }

    /// Whether reads registered since the last heartbeat still wait for their round.
    fn read_round_wanted(&self) -> bool {
        self.role == Role::Leader && self.reads.round_wanted()
    }

    /// Sends every peer a heartbeat. While reads wait for confirmation it carries the newest
    /// one's context, whether this is the round they asked for or the periodic heartbeat (which
    /// recovers a round that was lost).
    fn broadcast_heartbeat(&mut self) {
        let read_ctx = self.reads.take_round_ctx();
        let commit_index = self.log.commit_index();
        let sent_tick = self.leader_ticks;
        let unclamped = self.planted(RaftBug::HeartbeatCommitUnclamped);
        let quorum_age_ticks = self.quorum_ack_age_ticks();
        let peers: Vec<(NodeId, Index, Option<Freshness>)> =
            self.progress
                .iter_mut()
                .map(|(&id, pr)| {
                    let freshness = pr.follower_tick.zip(quorum_age_ticks).map(
                        |((echo_boot, echo_tick), age)| Freshness {
                            echo_boot,
                            echo_tick,
                            leader_commit: commit_index,
                            quorum_age_ticks: age,
                        },
                    );
                    // Planted (Figure 2, AppendEntries rule 5; etcd's `min(match, committed)`): a
                    // follower's log beyond its match may be a stale suffix the leader never checked.
                    let commit = if unclamped {
                        commit_index
                    } else {
                        pr.match_index.min(commit_index)
                    };
                    pr.commit_sent = pr.commit_sent.max(commit);
                    (id, commit, freshness)
                })
                .collect();
        for (to, commit, freshness) in peers {
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    sent_tick,
                    read_ctx,
                    freshness,
                },
            );
        }
    }

    /// Sends the proposals appended since the last batch of messages: one append per follower.
    fn send_pending_appends(&mut self) {
        if std::mem::take(&mut self.appends_pending) && self.role == Role::Leader {
            self.broadcast_append(false);
        }
    }

    fn broadcast_append(&mut self, allow_empty: bool) {
        for to in self.peers() {
            self.send_append(to, allow_empty);
        }
    }

    /// Sends `to` the next batch it needs, or a snapshot if that batch was compacted away.
    /// Empty appends (probes, commit updates) only when `allow_empty`. Returns whether it sent.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused(self.config.max_inflight_appends) {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term(prev_index) else {
            return self.send_snapshot(to);
        };
        let entries = self.log.entries_from(
            pr.next_index,
            self.config.max_entries_per_append,
            self.config.max_bytes_per_append,
        );
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last_index = entries.last().map_or(prev_index, |e| e.index);
        let commit = self.log.commit_index();
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.sent_entries(last_index);
            pr.commit_sent = pr.commit_sent.max(commit);
        }
        self.send(
            to,
            MessageBody::AppendEntries {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        if self.planted(RaftBug::NeverSendSnapshot) {
            // Planted (Raft §7): the follower is left waiting for entries we no longer hold.
            return false;
        }
        let Some(snapshot) = self.log.snapshot().cloned() else {
            tracing::error!(
                id = self.id,
                to,
                "follower needs compacted entries but no snapshot is held"
            );
            return false;
        };
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.become_snapshot(snapshot.meta.last_index);
        }
        self.send(to, MessageBody::InstallSnapshot { snapshot });
        true
    }

    fn handle_append_response(&mut self, from: NodeId, result: AppendResult) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.ticks_since_heard = 0;
        match result {
            AppendResult::Success { match_index } => {
                if match_index > last_index {
                    tracing::error!(
                        id = self.id,
                        from,
                        match_index,
                        "follower claims entries we lack"
                    );
                    return;
                }
                let was_paused = pr.is_paused(self.config.max_inflight_appends);
                let updated = pr.maybe_update(match_index);
                match pr.state {
                    ReplicationState::Probe => pr.become_replicate(),
                    ReplicationState::Snapshot { pending_index }
                        if pr.match_index >= pending_index =>
                    {
                        pr.become_probe();
                        pr.become_replicate();
                    }
                    _ => {}
                }
                if updated && self.maybe_commit() {
                    self.broadcast_append(true);
                } else if was_paused && self.commit_unknown_to(from) {
                    // It was waiting on this answer and may have missed commit updates meanwhile.
                    self.send_append(from, true);
                }
                // Keep the pipeline full.
                while self.send_append(from, false) {}
                if updated {
                    self.maybe_send_timeout_now(from);
                }
            }
            AppendResult::Reject {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                // Skip every entry that cannot match: the follower has nothing at or below
                // hint_index with a term above hint_term, so our last entry that could match is
                // the last one at or below hint_index with a term <= hint_term.
                let (probe_after, _) = self.log.find_conflict_by_term(hint_index, hint_term);
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                if pr.maybe_decrease(rejected_index, probe_after + 1) {
                    tracing::debug!(
                        id = self.id,
                        from,
                        next = pr.next_index,
                        "append rejected; probing"
                    );
                    self.send_append(from, true);
                }
            }
        }
    }

    /// Records a peer's reported applied index. A follower cannot have applied an entry we
    /// lack (every committed entry is in our log), so a higher claim is refused as bogus.
    fn note_applied(&mut self, from: NodeId, applied_index: Index) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if applied_index > last_index {
            tracing::error!(
                id = self.id,
                from,
                applied_index,
                "follower claims to have applied entries we lack"
            );
            return;
        }
        pr.applied_index = pr.applied_index.max(applied_index);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, sent_tick: u64, read_ctx: Option<u64>) {
        let last_index = self.log.last_index();
        let election_timeout = self.config.election_timeout_ticks;
        let max_inflight = self.config.max_inflight_appends;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.ticks_since_heard = 0;
        if sent_tick <= self.leader_ticks {
            pr.lease_ack_tick = Some(pr.lease_ack_tick.map_or(sent_tick, |t| t.max(sent_tick)));
        }
        if pr.inflight_full(max_inflight) || pr.state == ReplicationState::Probe {
            pr.on_heartbeat_response();
        }
        if matches!(pr.state, ReplicationState::Snapshot { .. })
            && pr.ticks_in_state >= election_timeout
        {
            // The InstallSnapshot or its answer was probably lost: start over with a probe.
            pr.become_probe();
        }
        if pr.match_index < last_index {
            self.send_append(from, true);
        }
        if let Some(ctx) = read_ctx {
            let quorum = quorum(self.voters.len());
            self.reads
                .acknowledge(from, ctx, quorum, &mut self.read_states);
        }
    }

    /// Raft §5.3/§5.4.2: the highest index a quorum holds commits, but only if it is from our
    /// term (Figure 8: counting replicas of an older term's entry is not enough).
    fn maybe_commit(&mut self) -> bool {
        let mut matched: Vec<Index> = self
            .voters
            .iter()
            .map(|id| {
                if *id == self.id {
                    self.log.persisted_index()
                } else {
                    self.progress.get(id).map_or(0, |pr| pr.match_index)
                }
            })
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let needed = if self.planted(RaftBug::MajorityOffByOne) {
            // Planted (Raft §5.3): `n / 2` is one short of a majority.
            (self.voters.len() / 2).max(1)
        } else {
            quorum(self.voters.len())
        };
        let quorum_index = matched[needed - 1];
        // Planted (Raft §5.4.2, Figure 8): counting replicas of an older term's entry.
        let of_our_term =
            self.log.term(quorum_index) == Some(self.term) || self.planted(RaftBug::CommitOldTerm);
        if quorum_index > self.log.commit_index() && of_our_term {
            let before = self.log.commit_index();
            self.log.commit_to(quorum_index);
            debug_assert!(self.log.commit_index() > before);
            self.release_uncommitted_bytes(before + 1..=quorum_index);
            true
        } else {
            false
        }
    }

    /// Returns the byte budget of newly committed commands. Only this term's count: commands
    /// of earlier terms were never counted (the count starts at zero with leadership), and
    /// subtracting them would let the leader hold more than its budget.
    fn release_uncommitted_bytes(&mut self, committed: std::ops::RangeInclusive<Index>) {
        let term = self.term;
        let released: u64 = committed
            .filter_map(|index| self.log.entry(index))
            .filter(|entry| entry.term == term)
            .map(Entry::command_bytes)
            .sum();
        debug_assert!(
            released <= self.uncommitted_bytes,
            "released {released} of {} uncommitted bytes",
            self.uncommitted_bytes
        );
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(released);
    }

    fn commit_unknown_to(&self, peer: NodeId) -> bool {
        self.progress
            .get(&peer)
            .is_some_and(|pr| pr.commit_sent < self.log.commit_index())
    }

    fn maybe_send_timeout_now(&mut self, to: NodeId) {
        let Some(transfer) = self.transfer else {
            return;
        };
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if transfer.to == to && caught_up {
            tracing::info!(id = self.id, to, "target caught up: sending TimeoutNow");
            self.lease_revoked = true;
            self.send(to, MessageBody::TimeoutNow);
        }
    }

    // ----- Messages -----------------------------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = self.term;
        self.send_at(to, term, body);
    }

    fn send_at(&mut self, to: NodeId, term: Term, body: MessageBody) {
        debug_assert!(
            !needs_no_local_durability(&body) || (self.role == Role::Leader && term == self.term),
            "only a leader sends messages that need no local durability, in its own term"
        );
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }
}
