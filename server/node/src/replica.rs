//! One Raft group's replica on this node: its consensus state ([`consensus::Raft`]), its
//! key-value [`StateMachine`], and the client requests waiting on them. No I/O happens here.
//!
//! The [`crate::host`] owns the replicas and does everything that touches the world: it reads
//! the clock (ticks), persists each `Ready` to the log, sends its messages and only then hands
//! the Ready back to [`Replica::apply_ready`]. What is left here is the group's own logic:
//!
//! - a write is *proposed* in [`Replica::handle_request`] (a client request becomes a
//!   [`Proposal`] and a Raft entry), *committed* by Raft once a quorum of durable logs holds it,
//!   and *applied* in [`Replica::apply_ready`], which answers the client that asked;
//! - a linearizable read waits in [`Replica::handle_request`] for Raft's ReadIndex confirmation
//!   and is answered once the state machine has applied up to that index;
//! - a snapshot is cut from the state machine when enough entries have been applied
//!   ([`Replica::snapshot_due`]); the host saves it and tells the replica
//!   ([`Replica::snapshot_saved`]).
//!
//! A node hosts one replica today (group [`ringleader_protocol::ONLY_GROUP`]); sharding gives
//! it one per group it belongs to.

use std::collections::BTreeMap;
use std::time::Duration;

use consensus::{
    Config as RaftConfig, Entry, EntryPayload, Message, MessageBody, NodeId, ProposeError, Raft,
    ReadError, ReadMode, ReadPath, Ready, Restored, Role, Snapshot, SnapshotMeta,
};
use ringleader_protocol::ring::HashRange;
use ringleader_protocol::{
    ErrorKind, GroupId, GroupStatus, ReadConsistency, Receipt, ReplicaStatus, Request, Response,
    ServedAt, WriteAck,
};
use storage::kv::{Command, Proposal, StateMachine};
use storage::{codec, RecoveredLog, SnapshotPoint, StorageError};
use tokio::sync::oneshot;

use crate::host::NodeError;
use crate::lag::LagTracker;
use crate::mapping;
use crate::planted::PlantedBug;

/// Ticks between two samples of the followers' progress (see [`crate::lag`]).
const LAG_SAMPLE_EVERY_TICKS: u64 = 20;
/// Requests a replica keeps waiting at most, per kind (session reads waiting for their index,
/// writes waiting for every replica); beyond it new ones are refused `Unavailable`.
const MAX_WAITING: usize = 10_000;

/// A node's answer to one client request: the response, and the receipt that says what
/// consistency it was served with (none for refusals and errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub response: Response,
    pub receipt: Option<Receipt>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply {
            response,
            receipt: None,
        }
    }
}

/// Where a request's answer goes.
pub type ReplyTo = oneshot::Sender<Reply>;

/// Sends an answer without a receipt (a refusal, an error, a redirect).
fn answer(reply: ReplyTo, response: Response) {
    let _ = reply.send(Reply::from(response));
}

/// What a replica needs to know about itself and its group.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub group: GroupId,
    /// This node.
    pub id: NodeId,
    /// Every voter of the group and its client address (for redirects), this node's included.
    pub peers: BTreeMap<NodeId, String>,
    /// The key hashes the group's shard holds, and the epoch of the ring that placed it.
    pub range: HashRange,
    pub epoch: u64,
    /// The replica the ring would have lead (leadership spreads evenly when each group's
    /// preferred replica leads it); `None` for no preference.
    pub preferred_leader: Option<NodeId>,
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Or after this many bytes of applied commands, whichever comes first.
    pub snapshot_every_bytes: u64,
    /// Entries a snapshot keeps behind it (Raft's `compaction_tail_entries`).
    pub log_tail_entries: u64,
    /// And at most this many bytes of commands (Raft's `compaction_tail_bytes`).
    pub log_tail_bytes: u64,
    /// Seeds Raft's election timer.
    pub seed: u64,
    /// Differs every time the node starts (see `NodeConfig::boot_id`).
    pub boot_id: u64,
    pub planted_bug: PlantedBug,
    /// The length of one tick, for the staleness bounds of receipts.
    pub tick_ms: u64,
}

/// How often (in election timeouts) a leader checks whether to hand leadership to its group's
/// preferred replica ([`Replica::hand_leadership_to_preferred`]).
const BALANCE_EVERY_TIMEOUTS: u64 = 4;

struct PendingWrite {
    term: u64,
    ack: WriteAck,
    reply: ReplyTo,
}

/// What a read reads: one key, or a prefix's keys.
enum ReadQuery {
    Get(Vec<u8>),
    Scan {
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    },
}

/// The bytes of keys and values one scan answer carries at most, so that it fits in a frame
/// with room to spare (the rest is fetched by continuing after the last key).
const SCAN_ANSWER_BYTES: usize = 4 * 1024 * 1024;

struct PendingRead {
    query: ReadQuery,
    reply: ReplyTo,
    /// What the client asked for (linearizable or lease).
    asked: ServedAt,
    /// Set once Raft confirmed the read: serve when applied reaches it.
    read_index: Option<u64>,
}

/// A session read waiting for this replica to apply the client's position.
struct WaitingRead {
    query: ReadQuery,
    reply: ReplyTo,
    min_index: u64,
    /// Given up (the client is sent to the leader) at this tick.
    deadline_tick: u64,
}

/// A write acknowledged only once every replica has applied it ([`WriteAck::All`]).
struct AwaitingAll {
    reply: ReplyTo,
    response: Response,
    receipt: Receipt,
    deadline_tick: u64,
}

/// One group's replica: Raft, the state machine, and the requests waiting on them.
pub struct Replica {
    config: ReplicaConfig,
    pub(crate) raft: Raft,
    pub(crate) machine: StateMachine,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_reads: BTreeMap<u64, PendingRead>,
    next_read_id: u64,
    /// Session reads waiting for their index to be applied here, by request id.
    waiting_reads: BTreeMap<u64, WaitingRead>,
    /// Applied writes waiting for every replica, by log index.
    awaiting_all: BTreeMap<u64, AwaitingAll>,
    pub(crate) last_snapshot_index: u64,
    /// Snapshots received from a leader since start (for status).
    pub(crate) snapshots_installed: u64,
    was_leader: bool,
    /// A snapshot postponed for lack of space is tried again once applied reaches this.
    snapshot_retry_at: u64,
    /// Applied entries between two snapshots of this replica: `snapshot_every_entries` less
    /// up to a quarter, drawn from the node and group ids, so that the replicas of a group
    /// (which apply the same entries at the same moment) and the groups of a node do not all
    /// write their snapshots at once.
    snapshot_interval_entries: u64,
    /// Bytes of commands applied since the last snapshot (see
    /// `ReplicaConfig::snapshot_every_bytes`).
    applied_bytes_since_snapshot: u64,
    /// The host asked for a snapshot before the interval is reached (this group's old entries
    /// keep log segments every other group is done with).
    snapshot_requested: bool,
    /// The newest snapshot received from a leader, already decoded and checked: its index and
    /// state. Installed from here when Raft hands the snapshot out.
    received_snapshot: Option<(u64, StateMachine)>,
    /// The leader's record of its followers' progress, for `status`.
    lag: LagTracker,
    ticks: u64,
}

impl Replica {
    /// Rebuilds the group's state from what its log recovered: the state machine from the
    /// newest snapshot, Raft from the hard state and the entries after it.
    pub fn recover(config: ReplicaConfig, recovered: &RecoveredLog) -> Result<Replica, NodeError> {
        let voters: Vec<NodeId> = config.peers.keys().copied().collect();
        let (machine, snapshot) = match &recovered.snapshot {
            Some(loaded) => {
                let data = loaded.data().to_vec();
                let machine = StateMachine::from_snapshot(&data)?;
                let meta = SnapshotMeta {
                    last_index: loaded.point.last_index,
                    last_term: loaded.point.last_term,
                    voters: voters.clone(),
                };
                (machine, Some(Snapshot { meta, data }))
            }
            None => (StateMachine::new(), None),
        };
        // The compaction tail first: Raft keeps it to send to followers a little behind.
        let mut entries =
            Vec::with_capacity(recovered.tail_entries.len() + recovered.entries.len());
        for stored in recovered.tail_entries.iter().chain(&recovered.entries) {
            entries.push(mapping::from_stored_entry(stored)?);
        }
        let hard_state = mapping::from_stored_hard_state(&recovered.hard_state);
        let mut raft_config = RaftConfig::new(config.id, voters);
        raft_config.election_timeout_ticks = config.election_timeout_ticks;
        raft_config.heartbeat_interval_ticks = config.heartbeat_interval_ticks;
        raft_config.seed = config.seed;
        raft_config.boot_id = config.boot_id;
        raft_config.compaction_tail_entries = config.log_tail_entries;
        raft_config.compaction_tail_bytes = config.log_tail_bytes;
        raft_config.planted_bug = config.planted_bug.raft_bug();
        // Leases stay allowed (Raft's default): each read chooses its mode (`start_read`), and
        // the vote fences that make them safe are on with CheckQuorum regardless.
        let last_snapshot_index = snapshot.as_ref().map_or(0, |s| s.meta.last_index);
        let mut raft = Raft::new(
            raft_config,
            Restored {
                hard_state,
                snapshot,
                entries,
                applied_index: 0,
            },
        )?;
        if let Some(until) = recovered.repair_until {
            raft.start_repair(until);
        }
        tracing::info!(
            id = config.id,
            group = config.group,
            term = hard_state.term,
            commit = hard_state.commit,
            last_snapshot_index,
            "replica recovered"
        );
        let snapshot_interval_entries = staggered_interval(&config);
        Ok(Replica {
            config,
            raft,
            machine,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_read_id: 0,
            waiting_reads: BTreeMap::new(),
            awaiting_all: BTreeMap::new(),
            last_snapshot_index,
            snapshots_installed: 0,
            was_leader: false,
            snapshot_retry_at: 0,
            snapshot_interval_entries,
            applied_bytes_since_snapshot: 0,
            snapshot_requested: false,
            received_snapshot: None,
            lag: LagTracker::default(),
            ticks: 0,
        })
    }

    pub fn group(&self) -> GroupId {
        self.config.group
    }

    pub fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    /// Whether Raft still repairs a damaged log (see `serve --repair`).
    pub fn is_repairing(&self) -> bool {
        self.raft.is_repairing()
    }

    /// Starts an election now (a single voter need not wait out an election timeout).
    pub fn campaign(&mut self) {
        self.raft.campaign();
    }

    /// One tick of the logical clock: Raft's timers, the leader's lag samples, and the
    /// deadlines of requests waiting on other replicas.
    pub fn tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
        self.expire_waiting();
        self.settle_awaiting_all();
        if self
            .ticks
            .is_multiple_of(u64::from(self.config.election_timeout_ticks) * BALANCE_EVERY_TIMEOUTS)
        {
            self.hand_leadership_to_preferred();
        }
        if !self.ticks.is_multiple_of(LAG_SAMPLE_EVERY_TICKS) {
            return;
        }
        if !self.is_leader() {
            self.lag.clear();
            return;
        }
        let status = self.raft.status();
        for (&peer, progress) in &status.progress {
            if peer != self.config.id {
                self.lag
                    .record(peer, progress.match_index, status.last_index);
            }
        }
    }

    /// Session reads whose index did not arrive in time go to the leader; `all` writes whose
    /// replicas did not all apply them in time get `AckTimeout`.
    fn expire_waiting(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .waiting_reads
            .iter()
            .filter(|(_, read)| read.deadline_tick <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(read) = self.waiting_reads.remove(&id) {
                let response = if self.is_leader() {
                    Response::Error {
                        kind: ErrorKind::Unavailable,
                        message: format!(
                            "this replica has not applied index {} yet (applied {})",
                            read.min_index,
                            self.machine.applied_index()
                        ),
                    }
                } else {
                    self.not_leader()
                };
                answer(read.reply, response);
            }
        }
        let timed_out: Vec<u64> = self
            .awaiting_all
            .iter()
            .filter(|(_, write)| write.deadline_tick <= now)
            .map(|(index, _)| *index)
            .collect();
        for index in timed_out {
            if let Some(write) = self.awaiting_all.remove(&index) {
                let behind = self.replicas_behind(index);
                answer(
                    write.reply,
                    Response::Error {
                        kind: ErrorKind::AckTimeout,
                        message: format!(
                            "committed at index {index} (durable on a majority, it will not be \
                             lost), but node(s) {behind:?} did not apply it within {} ticks",
                            self.all_ack_timeout_ticks()
                        ),
                    },
                );
            }
        }
    }

    /// How long a write acknowledged by every replica waits for the slowest: two election
    /// timeouts (a replica that is down or cut off for that long is not coming soon).
    fn all_ack_timeout_ticks(&self) -> u64 {
        2 * u64::from(self.config.election_timeout_ticks)
    }

    /// A Raft message from a peer. A snapshot is decoded and checked before Raft sees it: one
    /// that does not decode to the state it claims is dropped (the leader sends it again).
    pub fn step(&mut self, message: Message) {
        if let MessageBody::InstallSnapshot { snapshot } = &message.body {
            match check_snapshot(snapshot) {
                Ok(machine) => self.received_snapshot = Some((snapshot.meta.last_index, machine)),
                Err(reason) => {
                    tracing::warn!(from = message.from, index = snapshot.meta.last_index,
                        %reason, "refused a snapshot that does not decode to its state");
                    return;
                }
            }
        }
        self.raft.step(message);
        // An answer may say a peer applied more: writes waiting for every replica may be done
        // (without a Ready: the leader may have nothing to persist).
        self.settle_awaiting_all();
    }

    /// The answer that sends a client to the leader, if one is known.
    pub fn not_leader(&self) -> Response {
        let leader = self.raft.leader();
        Response::NotLeader {
            leader,
            leader_addr: leader.and_then(|id| self.config.peers.get(&id).cloned()),
        }
    }

    /// A client request for this group (already checked against the limits; `Status` is the
    /// host's). Writes are proposed to Raft and answered once applied (or, as their `ack`
    /// asks, once durable here or applied everywhere); reads are served as their consistency
    /// asks. `refuse_writes`: the host's disk is full, so a leader answers writes with it at once
    /// instead of proposing them.
    pub fn handle_request(
        &mut self,
        request: Request,
        reply: ReplyTo,
        refuse_writes: Option<Response>,
    ) {
        let (command, session, ack) = match request {
            Request::Status => {
                debug_assert!(false, "status is answered by the host");
                answer(reply, internal("status is not a group's request"));
                return;
            }
            Request::Get { key, consistency } => {
                self.start_read(ReadQuery::Get(key), consistency, reply);
                return;
            }
            Request::Scan {
                prefix,
                start_after,
                limit,
                consistency,
            } => {
                let query = ReadQuery::Scan {
                    prefix,
                    start_after,
                    limit,
                };
                self.start_read(query, consistency, reply);
                return;
            }
            Request::RegisterSession => (Command::RegisterSession, None, WriteAck::Majority),
            Request::Put {
                key,
                value,
                session,
                ack,
            } => (Command::Put { key, value }, session, ack),
            Request::Delete { key, session, ack } => {
                if ack == WriteAck::Leader {
                    answer(reply, leader_ack_refused("delete"));
                    return;
                }
                (Command::Delete { key }, session, ack)
            }
            Request::Cas {
                key,
                expect,
                new_value,
                session,
                ack,
            } => {
                if ack == WriteAck::Leader {
                    answer(reply, leader_ack_refused("compare-and-set"));
                    return;
                }
                let expect = mapping::to_expectation(expect);
                (
                    Command::Cas {
                        key,
                        expect,
                        new_value,
                    },
                    session,
                    ack,
                )
            }
        };
        if self.planted(PlantedBug::RefuseWrites) && !matches!(command, Command::RegisterSession) {
            // `Invalid`: a definite refusal the client does not retry, so each write ends at
            // once as a `fail` (an `Unavailable` would be retried until its deadline).
            answer(
                reply,
                Response::Error {
                    kind: ErrorKind::Invalid,
                    message: "planted bug: this node refuses writes".into(),
                },
            );
            return;
        }
        if self.planted(PlantedBug::LoseFirstWrite) && session.as_ref().is_some_and(|s| s.seq == 1)
        {
            drop(reply);
            return;
        }
        if let Some(refusal) = refuse_writes {
            if self.is_leader() {
                answer(reply, refusal);
                return;
            }
        }
        // A write that may open its session carries the opening in its own entry.
        let command = match session.and_then(|session| session.opened_after) {
            Some(opened_after) => Command::OpenSessionWith {
                opened_after,
                command: Box::new(command),
            },
            None => command,
        };
        let proposal = Proposal {
            session: session.map(mapping::to_session_ref),
            command,
        };
        let bytes = match codec::encode(&proposal, "proposal") {
            Ok(bytes) => bytes,
            Err(error) => {
                answer(reply, internal(error));
                return;
            }
        };
        if ack == WriteAck::All && self.awaiting_all.len() >= MAX_WAITING {
            answer(reply, busy("writes waiting for every replica"));
            return;
        }
        match self.raft.propose(bytes) {
            Ok(index) => {
                let term = self.raft.term();
                self.pending_writes
                    .insert(index, PendingWrite { term, ack, reply });
            }
            Err(ProposeError::NotLeader { .. }) => answer(reply, self.not_leader()),
            Err(error) => answer(
                reply,
                Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                },
            ),
        }
    }

    fn start_read(&mut self, query: ReadQuery, consistency: ReadConsistency, reply: ReplyTo) {
        // Planted (thesis §6.4): every read served locally, ReadIndex skipped.
        if self.planted(PlantedBug::LocalReads) {
            self.serve_read(&query, reply, ServedAt::Linearizable);
            return;
        }
        let asked = match consistency {
            ReadConsistency::Stale { max_staleness_ms } => {
                let bound = self.staleness_bound_ms();
                if let Some(max) = max_staleness_ms {
                    if bound.is_none_or(|bound| bound > max) {
                        let bound = bound.map_or("unbounded".to_string(), |b| format!("{b} ms"));
                        answer(
                            reply,
                            Response::Error {
                                kind: ErrorKind::Unavailable,
                                message: format!(
                                    "node {}'s state may be stale by {bound}, more than the \
                                     {max} ms allowed",
                                    self.config.id
                                ),
                            },
                        );
                        return;
                    }
                }
                self.serve_read(&query, reply, ServedAt::Stale);
                return;
            }
            ReadConsistency::Session { min_index } => {
                // Planted: the client's session position ignored, served from whatever is here.
                let ignore_position = self.planted(PlantedBug::SessionIndexIgnored);
                if self.machine.applied_index() >= min_index || ignore_position {
                    self.serve_read(&query, reply, ServedAt::Session);
                } else if self.waiting_reads.len() >= MAX_WAITING {
                    answer(reply, busy("session reads waiting for their index"));
                } else {
                    self.next_read_id += 1;
                    let deadline_tick = self.ticks + u64::from(self.config.election_timeout_ticks);
                    self.waiting_reads.insert(
                        self.next_read_id,
                        WaitingRead {
                            query,
                            reply,
                            min_index,
                            deadline_tick,
                        },
                    );
                }
                return;
            }
            ReadConsistency::Linearizable => ServedAt::Linearizable,
            ReadConsistency::Lease => ServedAt::Lease,
        };
        self.next_read_id += 1;
        let id = self.next_read_id;
        // `Lease` is answered from the leader lease while it holds (no round trip; assumes
        // bounded clock drift), else by a ReadIndex round; `Linearizable` always takes a round.
        let mode = match asked {
            ServedAt::Lease => ReadMode::Lease,
            _ => ReadMode::ReadIndex,
        };
        match self.raft.read_index(id, mode) {
            Ok(()) => {
                self.pending_reads.insert(
                    id,
                    PendingRead {
                        query,
                        reply,
                        asked,
                        read_index: None,
                    },
                );
            }
            Err(ReadError::NotLeader { .. }) => answer(reply, self.not_leader()),
            Err(error) => answer(
                reply,
                Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                },
            ),
        }
    }

    /// Answers a read from this replica's state, with its receipt.
    fn serve_read(&self, query: &ReadQuery, reply: ReplyTo, served_at: ServedAt) {
        let response = match query {
            ReadQuery::Get(key) => {
                Response::Value(self.machine.get(key).map(mapping::to_versioned))
            }
            ReadQuery::Scan {
                prefix,
                start_after,
                limit,
            } => {
                let mut entries = Vec::new();
                let mut bytes = 0;
                let mut more = false;
                for (key, value) in self.machine.scan(prefix, start_after.as_deref()) {
                    let size = key.len() + value.value.len();
                    if entries.len() == *limit as usize
                        || (bytes + size > SCAN_ANSWER_BYTES && !entries.is_empty())
                    {
                        more = true;
                        break;
                    }
                    bytes += size;
                    entries.push((key.to_vec(), mapping::to_versioned(value)));
                }
                Response::Entries { entries, more }
            }
        };
        let staleness_bound_ms = match served_at {
            ServedAt::Stale | ServedAt::Session => self.staleness_bound_ms(),
            _ => Some(0),
        };
        let receipt = Receipt {
            served_at,
            node: self.config.id,
            term: self.raft.term(),
            index: self.machine.applied_index(),
            staleness_bound_ms,
            forwarded_by: None,
        };
        let _ = reply.send(Reply {
            response,
            receipt: Some(receipt),
        });
    }

    /// An upper bound on how far this replica's applied state may be behind the group's
    /// committed state, in milliseconds; `None` when it cannot say (it has not heard a leader
    /// in this life, or has not applied what the leader last said was committed).
    ///
    /// Raft counts it in this node's ticks from a moment the node dated itself (see
    /// `consensus::Freshness`): never from a message's arrival, so a message held up in the
    /// network cannot make old state look fresh. The ticks of different nodes are converted as
    /// if the clocks drifted by the stated bound (`lease_margin / election_timeout`): the bound
    /// is widened by `timeout / (timeout - margin)`.
    pub fn staleness_bound_ms(&self) -> Option<u64> {
        let ticks = self
            .raft
            .staleness_bound_ticks(self.machine.applied_index())?;
        let (margin, timeout) = self.raft.config().lease_drift_bound();
        let widened = (ticks * u64::from(timeout)).div_ceil(u64::from(timeout - margin).max(1));
        Some(widened * self.config.tick_ms)
    }

    pub fn has_ready(&self) -> bool {
        self.raft.has_ready()
    }

    /// What Raft has ready: the host persists it, sends its messages, then hands it back to
    /// [`Replica::apply_ready`] (or to [`Replica::abandon_ready`] if it could not persist it).
    pub fn ready(&mut self) -> Ready {
        self.raft.ready()
    }

    /// The host saved the snapshot of a Ready (received from the leader).
    pub fn snapshot_installed(&mut self, last_index: u64) {
        self.last_snapshot_index = last_index;
        self.applied_bytes_since_snapshot = 0;
        self.snapshots_installed += 1;
    }

    /// The messages Raft lets go before this node's own write (a leader's appends and
    /// heartbeats): the host sends them at once, even while a write is in flight.
    pub fn take_messages_to_send_now(&mut self) -> Vec<consensus::Message> {
        self.raft.take_messages_to_send_now()
    }

    /// The host could not persist `ready` because the disk is full: nothing of it is on disk.
    /// Raft forgets everything not durable; the writers of dropped entries get `refusal`, and
    /// the reads it was to confirm `Unavailable` (the client retries). If the leader had already
    /// sent some of those entries to followers, it stepped down instead: they may still commit,
    /// so their writers hear `Unknown` when the host notices the lost leadership.
    pub fn abandon_ready(&mut self, ready: Ready, refusal: impl Fn() -> Response) {
        let abandoned = self.raft.abandon_ready();
        if let Some(first_dropped) = abandoned.dropped_from.filter(|_| !abandoned.stepped_down) {
            for (_, write) in self.pending_writes.split_off(&first_dropped) {
                answer(write.reply, refusal());
            }
        }
        self.note_read_states(ready.read_states);
        if self.is_leader() {
            // Raft dropped the reads whose confirming heartbeat was never sent (it was in the
            // abandoned Ready): answer them `Unavailable`; the client retries.
            let unconfirmed: Vec<u64> = self
                .pending_reads
                .iter()
                .filter(|(_, read)| read.read_index.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in unconfirmed {
                if let Some(read) = self.pending_reads.remove(&id) {
                    answer(
                        read.reply,
                        Response::Error {
                            kind: ErrorKind::Unavailable,
                            message: "the leader's disk is full; retry the read".into(),
                        },
                    );
                }
            }
        }
    }

    /// The host made `entries` durable in this node's log. Writes that asked to be acknowledged
    /// by the leader alone ([`WriteAck::Leader`]) are answered now, before any follower has
    /// them: if this leader dies before replicating them, they are lost.
    pub fn entries_durable(&mut self, entries: &[Entry]) {
        for entry in entries {
            let leader_ack = self
                .pending_writes
                .get(&entry.index)
                .is_some_and(|write| write.ack == WriteAck::Leader && write.term == entry.term);
            if !leader_ack {
                continue;
            }
            if let Some(write) = self.pending_writes.remove(&entry.index) {
                let receipt = self.write_receipt(ServedAt::Leader, entry);
                let _ = write.reply.send(Reply {
                    response: Response::Written {
                        version: entry.index,
                    },
                    receipt: Some(receipt),
                });
            }
        }
    }

    fn write_receipt(&self, served_at: ServedAt, entry: &Entry) -> Receipt {
        Receipt {
            served_at,
            node: self.config.id,
            term: entry.term,
            index: entry.index,
            staleness_bound_ms: None,
            forwarded_by: None,
        }
    }

    /// The rest of a Ready, once the host made it durable and sent its messages: install the
    /// received snapshot, apply the committed entries (answering their writers), serve the
    /// reads now confirmed, and tell Raft the Ready is done.
    pub fn apply_ready(&mut self, ready: Ready) -> Result<(), StorageError> {
        debug_assert!(
            ready.messages.is_empty(),
            "the host sends a Ready's messages before applying it"
        );
        if let Some(snapshot) = ready.snapshot {
            // Decoded once, when the snapshot arrived.
            self.machine = match self.received_snapshot.take() {
                Some((index, machine)) if index == snapshot.meta.last_index => machine,
                _ => StateMachine::from_snapshot(&snapshot.data)?,
            };
        }
        for entry in &ready.committed_entries {
            self.apply(entry)?;
        }
        // Reads confirmed by a heartbeat quorum (or the lease).
        self.note_read_states(ready.read_states);
        self.raft.advance();
        self.serve_confirmed_reads();
        self.serve_waiting_reads();
        self.settle_awaiting_all();
        Ok(())
    }

    /// Records the read index Raft confirmed for each pending read.
    fn note_read_states(&mut self, read_states: Vec<consensus::ReadState>) {
        for read in read_states {
            if let Some(pending) = self.pending_reads.get_mut(&read.request_id) {
                pending.read_index = Some(read.index);
                // The receipt says what served it: a lease read whose lease had lapsed took a
                // heartbeat round, as a linearizable one does.
                if read.served == ReadPath::Quorum {
                    pending.asked = ServedAt::Linearizable;
                }
            }
        }
    }

    fn apply(&mut self, entry: &Entry) -> Result<(), StorageError> {
        if entry.index <= self.machine.applied_index() {
            return Ok(()); // covered by an installed snapshot
        }
        let outcome = match &entry.payload {
            EntryPayload::Noop if self.diverges() => {
                let planted = Proposal {
                    session: None,
                    command: Command::Put {
                        key: b"\0planted-divergence".to_vec(),
                        value: entry.index.to_le_bytes().to_vec(),
                    },
                };
                self.machine.apply(entry.index, &planted);
                None
            }
            EntryPayload::Noop => {
                self.machine.apply_noop(entry.index);
                None
            }
            EntryPayload::Command(bytes) => {
                self.applied_bytes_since_snapshot += bytes.len() as u64;
                let proposal: Proposal = codec::decode(bytes, "proposal")?;
                let planted = self.config.planted_bug.storage_bug();
                Some(self.machine.apply_planted(entry.index, &proposal, planted))
            }
        };
        if let Some(pending) = self.pending_writes.remove(&entry.index) {
            let outcome = match outcome {
                // The entry we proposed is the one that committed here.
                Some(outcome) if pending.term == entry.term => outcome,
                // Another leader's entry took the index: ours was lost (or will be retried).
                _ => {
                    answer(
                        pending.reply,
                        Response::Error {
                            kind: ErrorKind::Unknown,
                            message: "leadership changed before the write committed".into(),
                        },
                    );
                    return Ok(());
                }
            };
            let response = mapping::to_response(outcome);
            let is_answer = !matches!(response, Response::Error { .. });
            match pending.ack {
                WriteAck::All if is_answer => {
                    let receipt = self.write_receipt(ServedAt::All, entry);
                    let deadline_tick = self.ticks + self.all_ack_timeout_ticks();
                    self.awaiting_all.insert(
                        entry.index,
                        AwaitingAll {
                            reply: pending.reply,
                            response,
                            receipt,
                            deadline_tick,
                        },
                    );
                }
                _ => {
                    let receipt = is_answer.then(|| self.write_receipt(ServedAt::Majority, entry));
                    let _ = pending.reply.send(Reply { response, receipt });
                }
            }
        }
        Ok(())
    }

    /// Whether this node carries [`PlantedBug::DivergentApply`].
    fn diverges(&self) -> bool {
        self.planted(PlantedBug::DivergentApply)
            && self.config.peers.keys().next_back() == Some(&self.config.id)
    }

    /// Whether `bug` is planted in this node: always false without the `planted-bugs` feature.
    #[inline]
    fn planted(&self, bug: PlantedBug) -> bool {
        self.config.planted_bug.is_active(bug)
    }

    fn serve_confirmed_reads(&mut self) {
        let applied = self.machine.applied_index();
        let ready: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, read)| read.read_index.is_some_and(|index| index <= applied))
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(read) = self.pending_reads.remove(&id) {
                self.serve_read(&read.query, read.reply, read.asked);
            }
        }
    }

    /// Session reads whose index this replica has now applied.
    fn serve_waiting_reads(&mut self) {
        let applied = self.machine.applied_index();
        let ready: Vec<u64> = self
            .waiting_reads
            .iter()
            .filter(|(_, read)| read.min_index <= applied)
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(read) = self.waiting_reads.remove(&id) {
                self.serve_read(&read.query, read.reply, ServedAt::Session);
            }
        }
    }

    /// Answers the `all` writes every replica has now applied.
    fn settle_awaiting_all(&mut self) {
        if self.awaiting_all.is_empty() {
            return;
        }
        // One status read for all of them: every write at or below the lowest applied index
        // of the group is done (the map is ordered by index).
        let applied_everywhere = self.applied_everywhere();
        let waiting = self.awaiting_all.split_off(&(applied_everywhere + 1));
        for (_, write) in std::mem::replace(&mut self.awaiting_all, waiting) {
            let _ = write.reply.send(Reply {
                response: write.response,
                receipt: Some(write.receipt),
            });
        }
    }

    /// The highest index every replica of the group (this one included) is known to have
    /// applied.
    fn applied_everywhere(&self) -> u64 {
        self.applied_by_replica()
            .map(|(_, applied)| applied)
            .min()
            .unwrap_or(0)
    }

    /// The replicas (this one included) not known to have applied `index`.
    fn replicas_behind(&self, index: u64) -> Vec<NodeId> {
        self.applied_by_replica()
            .filter(|(_, applied)| *applied < index)
            .map(|(node, _)| node)
            .collect()
    }

    /// Each replica of the group and the applied index it last reported (this one's own).
    fn applied_by_replica(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        let progress = self.raft.status().progress;
        self.config.peers.keys().map(move |&node| {
            let applied = if node == self.config.id {
                self.machine.applied_index()
            } else {
                progress.get(&node).map_or(0, |peer| peer.applied_index)
            };
            (node, applied)
        })
    }

    /// When this replica stops leading, answer its waiting clients: their writes' fate is
    /// unknown to it, and its reads can no longer be confirmed.
    pub fn notice_leadership_change(&mut self) {
        let is_leader = self.is_leader();
        if self.was_leader && !is_leader {
            for (_, write) in std::mem::take(&mut self.pending_writes) {
                answer(
                    write.reply,
                    Response::Error {
                        kind: ErrorKind::Unknown,
                        message: "this node lost leadership before the write committed".into(),
                    },
                );
            }
            for (_, read) in std::mem::take(&mut self.pending_reads) {
                answer(read.reply, self.not_leader());
            }
            // Committed and applied here, but this node can no longer follow the replicas.
            for (index, write) in std::mem::take(&mut self.awaiting_all) {
                answer(
                    write.reply,
                    Response::Error {
                        kind: ErrorKind::AckTimeout,
                        message: format!(
                            "committed at index {index} (it will not be lost), but this node \
                             stopped leading before every replica was seen applying it"
                        ),
                    },
                );
            }
        }
        self.was_leader = is_leader;
    }

    /// A snapshot of the state machine to save, when enough entries have been applied since
    /// the last one: the point it covers and its bytes.
    pub fn snapshot_due(&self) -> Option<(SnapshotPoint, StateMachine)> {
        let applied = self.machine.applied_index();
        let requested = (self.snapshot_requested
            || self.applied_bytes_since_snapshot >= self.config.snapshot_every_bytes)
            && applied > self.last_snapshot_index;
        if (applied < self.last_snapshot_index + self.snapshot_interval_entries && !requested)
            || applied < self.snapshot_retry_at
        {
            return None;
        }
        let term = self.raft.log().term(applied)?;
        let point = SnapshotPoint {
            last_index: applied,
            last_term: term,
        };
        // A persistent map: the copy shares the state's nodes, and the writer encodes it off
        // the host's loop while applying goes on here.
        Some((point, self.machine.clone()))
    }

    /// Asks for a snapshot at the next chance, before the interval is reached: the group's
    /// entries hold log segments that every other group sharing the log is done with.
    pub fn request_snapshot(&mut self) {
        self.snapshot_requested = true;
    }

    /// The host saved the snapshot [`Replica::snapshot_due`] cut: Raft compacts its log to it.
    pub fn snapshot_saved(&mut self, point: SnapshotPoint, data: Vec<u8>) {
        self.snapshot_requested = false;
        let meta = SnapshotMeta {
            last_index: point.last_index,
            last_term: point.last_term,
            voters: self.config.peers.keys().copied().collect(),
        };
        if let Err(error) = self.raft.compact(Snapshot { meta, data }) {
            tracing::warn!(%error, "raft refused the snapshot");
        }
        self.last_snapshot_index = point.last_index;
        // Counted again from here (what was applied while the snapshot was saved is not: an
        // undercount of at most one save's worth).
        self.applied_bytes_since_snapshot = 0;
        tracing::info!(
            group = self.config.group,
            index = point.last_index,
            "snapshot taken, log compacted"
        );
    }

    /// The host could not save the snapshot for lack of space: try again a little later.
    pub fn snapshot_postponed(&mut self, point: SnapshotPoint) {
        self.snapshot_retry_at = point.last_index + self.config.snapshot_every_entries / 10 + 1;
    }

    /// Answers everything waiting. Writes get `Unknown` whatever the cause: their entries may
    /// already sit on a quorum and commit without this node.
    pub fn fail_all_pending(&mut self, kind: ErrorKind, message: &str) {
        for (_, write) in std::mem::take(&mut self.pending_writes) {
            answer(
                write.reply,
                Response::Error {
                    kind: ErrorKind::Unknown,
                    message: message.into(),
                },
            );
        }
        for (_, write) in std::mem::take(&mut self.awaiting_all) {
            answer(
                write.reply,
                Response::Error {
                    kind: ErrorKind::AckTimeout,
                    message: format!("committed, but not seen applied everywhere: {message}"),
                },
            );
        }
        let reads = std::mem::take(&mut self.pending_reads)
            .into_values()
            .map(|read| read.reply)
            .chain(
                std::mem::take(&mut self.waiting_reads)
                    .into_values()
                    .map(|read| read.reply),
            );
        for reply in reads {
            answer(
                reply,
                Response::Error {
                    kind,
                    message: message.into(),
                },
            );
        }
    }

    /// Starts handing leadership to the most caught-up peer, if this replica leads a group of
    /// several; returns whether it did.
    pub fn transfer_leadership_away(&mut self) -> bool {
        if !self.is_leader() || self.config.peers.len() < 2 {
            return false;
        }
        let status = self.raft.status();
        let target = status
            .progress
            .iter()
            .filter(|(id, _)| **id != self.config.id)
            .max_by_key(|(id, peer)| (peer.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        let Some(target) = target else {
            return false;
        };
        let _ = self.raft.transfer_leadership(target);
        tracing::info!(
            group = self.config.group,
            to = target,
            "transferring leadership"
        );
        true
    }

    /// Leadership spreads evenly over the nodes when each group is led by its preferred
    /// replica (the ring spreads the preferences): a leader that is not its group's preferred
    /// replica hands leadership to it once it holds the whole log (so the hand-over costs no
    /// election and loses nothing). A preferred replica that is down or behind is simply not
    /// handed anything; the check repeats every few election timeouts. Returns whether a
    /// transfer began.
    pub fn hand_leadership_to_preferred(&mut self) -> bool {
        let Some(preferred) = self.config.preferred_leader else {
            return false;
        };
        if !self.is_leader() || preferred == self.config.id {
            return false;
        }
        let status = self.raft.status();
        let caught_up = status
            .progress
            .get(&preferred)
            .is_some_and(|peer| peer.match_index == status.last_index);
        if !caught_up || self.raft.transfer_leadership(preferred).is_err() {
            return false;
        }
        tracing::info!(
            group = self.config.group,
            to = preferred,
            "handing leadership to the group's preferred replica"
        );
        true
    }

    /// Sets the preferred leader, as a ring of several shards would.
    #[cfg(test)]
    pub(crate) fn set_preferred_leader(&mut self, node: NodeId) {
        self.config.preferred_leader = Some(node);
    }

    /// Client requests waiting for an answer.
    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        self.pending_writes.len()
            + self.pending_reads.len()
            + self.waiting_reads.len()
            + self.awaiting_all.len()
    }

    /// This group's part of the node's status: its Raft state, its state machine, and (on the
    /// leader) the followers' replication state.
    pub fn status(&self, tick: Duration) -> GroupStatus {
        let status = self.raft.status();
        let tick_ms = tick.as_millis() as u64;
        let mut replicas: Vec<ReplicaStatus> = status
            .progress
            .iter()
            .map(|(node, peer)| ReplicaStatus {
                node: *node,
                match_index: peer.match_index,
                last_heard_ms: (*node != self.config.id)
                    .then_some(peer.last_heard_ticks as u64 * tick_ms),
                lagging: self.lag.is_lagging(*node),
            })
            .collect();
        replicas.sort_by_key(|r| r.node);
        GroupStatus {
            group: self.config.group,
            range: self.config.range,
            epoch: self.config.epoch,
            role: format!("{:?}", status.role).to_lowercase(),
            term: status.term,
            leader: status.leader,
            commit_index: status.commit_index,
            applied_index: self.machine.applied_index(),
            last_index: status.last_index,
            snapshot_index: self.last_snapshot_index,
            snapshots_installed: self.snapshots_installed,
            keys: self.machine.len() as u64,
            digest: self.machine.digest(),
            replicas,
        }
    }
}

/// `snapshot_every_entries` less a stagger in `[0, every/4]` drawn from the node and group ids
/// (splitmix64: the same on every run, different across replicas).
fn staggered_interval(config: &ReplicaConfig) -> u64 {
    let mut mixed = config
        .id
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(config.group.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    mixed ^= mixed >> 31;
    mixed = mixed.wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 29;
    let every = config.snapshot_every_entries.max(1);
    let stagger = mixed % (every / 4 + 1);
    debug_assert!(
        stagger < every || every == 1,
        "an interval stays at least 1"
    );
    (every - stagger).max(1)
}

fn leader_ack_refused(what: &str) -> Response {
    Response::Error {
        kind: ErrorKind::Invalid,
        message: format!(
            "--ack leader applies to puts only: a {what}'s outcome is not known before it is applied"
        ),
    }
}

fn busy(what: &str) -> Response {
    Response::Error {
        kind: ErrorKind::Unavailable,
        message: format!("too many {what} ({MAX_WAITING}); retry later"),
    }
}

fn internal(error: impl std::fmt::Display) -> Response {
    Response::Error {
        kind: ErrorKind::Internal,
        message: error.to_string(),
    }
}

/// Decodes a snapshot received from a peer and checks that it is the state it claims to be
/// (applied exactly up to its last index), before any of it is saved or installed.
fn check_snapshot(snapshot: &Snapshot) -> Result<StateMachine, String> {
    let machine = StateMachine::from_snapshot(&snapshot.data).map_err(|e| e.to_string())?;
    if machine.applied_index() != snapshot.meta.last_index {
        return Err(format!(
            "the state is applied to index {}, the snapshot claims {}",
            machine.applied_index(),
            snapshot.meta.last_index
        ));
    }
    Ok(machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(id: NodeId, group: GroupId, every: u64) -> ReplicaConfig {
        ReplicaConfig {
            group,
            id,
            peers: BTreeMap::new(),
            range: HashRange {
                start: 0,
                end_inclusive: u64::MAX,
            },
            epoch: 1,
            preferred_leader: None,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            snapshot_every_entries: every,
            snapshot_every_bytes: u64::MAX,
            log_tail_entries: 0,
            log_tail_bytes: u64::MAX,
            seed: id,
            boot_id: 0,
            planted_bug: PlantedBug::None,
            tick_ms: 50,
        }
    }

    #[test]
    fn replicas_and_groups_snapshot_at_staggered_intervals_within_a_quarter_of_the_setting() {
        let every = 10_000;
        let mut intervals = std::collections::BTreeSet::new();
        for group in 0..8 {
            let of_group: std::collections::BTreeSet<u64> = (1..=3)
                .map(|id| staggered_interval(&config(id, group, every)))
                .collect();
            assert_eq!(of_group.len(), 3, "group {group}: its replicas differ");
            intervals.extend(of_group);
        }
        assert!(intervals.len() >= 20, "spread over the node's groups too");
        assert!(intervals
            .iter()
            .all(|i| (every * 3 / 4..=every).contains(i)));
        // Tiny settings stay usable.
        for every in [1, 2, 3] {
            assert!((1..=every).contains(&staggered_interval(&config(2, 0, every))));
        }
    }
}
