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
    ReadError, ReadMode, Ready, Restored, Role, Snapshot, SnapshotMeta,
};
use ringleader_protocol::{
    ErrorKind, GroupId, GroupStatus, ReadConsistency, ReplicaStatus, Request, Response,
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

/// What a replica needs to know about itself and its group.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub group: GroupId,
    /// This node.
    pub id: NodeId,
    /// Every voter of the group and its client address (for redirects), this node's included.
    pub peers: BTreeMap<NodeId, String>,
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries a snapshot keeps behind it (Raft's `compaction_tail_entries`).
    pub log_tail_entries: u64,
    /// Seeds Raft's election timer.
    pub seed: u64,
    pub planted_bug: PlantedBug,
}

struct PendingWrite {
    term: u64,
    reply: oneshot::Sender<Response>,
}

struct PendingRead {
    key: Vec<u8>,
    reply: oneshot::Sender<Response>,
    /// Set once Raft confirmed the read: serve when applied reaches it.
    read_index: Option<u64>,
}

/// One group's replica: Raft, the state machine, and the requests waiting on them.
pub struct Replica {
    config: ReplicaConfig,
    pub(crate) raft: Raft,
    pub(crate) machine: StateMachine,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_reads: BTreeMap<u64, PendingRead>,
    next_read_id: u64,
    pub(crate) last_snapshot_index: u64,
    /// Snapshots received from a leader since start (for status).
    pub(crate) snapshots_installed: u64,
    was_leader: bool,
    /// A snapshot postponed for lack of space is tried again once applied reaches this.
    snapshot_retry_at: u64,
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
        raft_config.compaction_tail_entries = config.log_tail_entries;
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
        Ok(Replica {
            config,
            raft,
            machine,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_read_id: 0,
            last_snapshot_index,
            snapshots_installed: 0,
            was_leader: false,
            snapshot_retry_at: 0,
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

    /// One tick of the logical clock: Raft's timers, and the leader's lag samples.
    pub fn tick(&mut self) {
        self.raft.tick();
        self.ticks += 1;
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
    /// host's). Writes are proposed to Raft and answered once applied; reads wait for their
    /// confirmation. `refuse_writes`: the host's disk is full, so a leader answers writes with it
    /// at once instead of proposing them.
    pub fn handle_request(
        &mut self,
        request: Request,
        reply: oneshot::Sender<Response>,
        refuse_writes: Option<Response>,
    ) {
        let (command, session) = match request {
            Request::Status => {
                debug_assert!(false, "status is answered by the host");
                let _ = reply.send(internal("status is not a group's request"));
                return;
            }
            Request::Get { key, consistency } => {
                self.start_read(key, consistency, reply);
                return;
            }
            Request::RegisterSession => (Command::RegisterSession, None),
            Request::Put {
                key,
                value,
                session,
            } => (Command::Put { key, value }, session),
            Request::Delete { key, session } => (Command::Delete { key }, session),
            Request::Cas {
                key,
                expect,
                new_value,
                session,
            } => (
                Command::Cas {
                    key,
                    expect: mapping::to_expectation(expect),
                    new_value,
                },
                session,
            ),
        };
        if self.planted(PlantedBug::RefuseWrites) && !matches!(command, Command::RegisterSession) {
            // `Invalid`: a definite refusal the client does not retry, so each write ends at
            // once as a `fail` (an `Unavailable` would be retried until its deadline).
            let _ = reply.send(Response::Error {
                kind: ErrorKind::Invalid,
                message: "planted bug: this node refuses writes".into(),
            });
            return;
        }
        if self.planted(PlantedBug::LoseFirstWrite) && session.as_ref().is_some_and(|s| s.seq == 1)
        {
            drop(reply);
            return;
        }
        if let Some(refusal) = refuse_writes {
            if self.is_leader() {
                let _ = reply.send(refusal);
                return;
            }
        }
        let proposal = Proposal {
            session: session.map(mapping::to_session_ref),
            command,
        };
        let bytes = match codec::encode(&proposal, "proposal") {
            Ok(bytes) => bytes,
            Err(error) => {
                let _ = reply.send(internal(error));
                return;
            }
        };
        match self.raft.propose(bytes) {
            Ok(index) => {
                let term = self.raft.term();
                self.pending_writes
                    .insert(index, PendingWrite { term, reply });
            }
            Err(ProposeError::NotLeader { .. }) => {
                let _ = reply.send(self.not_leader());
            }
            Err(error) => {
                let _ = reply.send(Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                });
            }
        }
    }

    fn start_read(
        &mut self,
        key: Vec<u8>,
        consistency: ReadConsistency,
        reply: oneshot::Sender<Response>,
    ) {
        // Planted (thesis §6.4): every read served locally, ReadIndex skipped.
        if consistency == ReadConsistency::Stale || self.planted(PlantedBug::LocalReads) {
            let _ = reply.send(Response::Value(
                self.machine.get(&key).map(mapping::to_versioned),
            ));
            return;
        }
        self.next_read_id += 1;
        let id = self.next_read_id;
        // `Lease` is answered from the leader lease while it holds (no round trip; assumes
        // bounded clock drift), else by a ReadIndex round; `Linearizable` always takes a round.
        let mode = match consistency {
            ReadConsistency::Lease => ReadMode::Lease,
            ReadConsistency::Linearizable | ReadConsistency::Stale => ReadMode::ReadIndex,
        };
        match self.raft.read_index(id, mode) {
            Ok(()) => {
                self.pending_reads.insert(
                    id,
                    PendingRead {
                        key,
                        reply,
                        read_index: None,
                    },
                );
            }
            Err(ReadError::NotLeader { .. }) => {
                let _ = reply.send(self.not_leader());
            }
            Err(error) => {
                let _ = reply.send(Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                });
            }
        }
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
        self.snapshots_installed += 1;
    }

    /// The host could not persist `ready` because the disk is full: nothing of it is on disk.
    /// Raft forgets it; its writers get `refusal`, and the reads it was to confirm `Unavailable`
    /// (the client retries).
    pub fn abandon_ready(&mut self, ready: Ready, refusal: impl Fn() -> Response) {
        self.raft.abandon_ready();
        for entry in &ready.entries {
            if let Some(write) = self.pending_writes.remove(&entry.index) {
                let _ = write.reply.send(refusal());
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
                    let _ = read.reply.send(Response::Error {
                        kind: ErrorKind::Unavailable,
                        message: "the leader's disk is full; retry the read".into(),
                    });
                }
            }
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
        Ok(())
    }

    /// Records the read index Raft confirmed for each pending read.
    fn note_read_states(&mut self, read_states: Vec<consensus::ReadState>) {
        for read in read_states {
            if let Some(pending) = self.pending_reads.get_mut(&read.request_id) {
                pending.read_index = Some(read.index);
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
                let proposal: Proposal = codec::decode(bytes, "proposal")?;
                let planted = self.config.planted_bug.storage_bug();
                Some(self.machine.apply_planted(entry.index, &proposal, planted))
            }
        };
        if let Some(pending) = self.pending_writes.remove(&entry.index) {
            let response = match outcome {
                // The entry we proposed is the one that committed here.
                Some(outcome) if pending.term == entry.term => mapping::to_response(outcome),
                // Another leader's entry took the index: ours was lost (or will be retried).
                _ => Response::Error {
                    kind: ErrorKind::Unknown,
                    message: "leadership changed before the write committed".into(),
                },
            };
            let _ = pending.reply.send(response);
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
                let value = self.machine.get(&read.key).map(mapping::to_versioned);
                let _ = read.reply.send(Response::Value(value));
            }
        }
    }

    /// When this replica stops leading, answer its waiting clients: their writes' fate is
    /// unknown to it, and its reads can no longer be confirmed.
    pub fn notice_leadership_change(&mut self) {
        let is_leader = self.is_leader();
        if self.was_leader && !is_leader {
            for (_, write) in std::mem::take(&mut self.pending_writes) {
                let _ = write.reply.send(Response::Error {
                    kind: ErrorKind::Unknown,
                    message: "this node lost leadership before the write committed".into(),
                });
            }
            for (_, read) in std::mem::take(&mut self.pending_reads) {
                let _ = read.reply.send(self.not_leader());
            }
        }
        self.was_leader = is_leader;
    }

    /// A snapshot of the state machine to save, when enough entries have been applied since
    /// the last one: the point it covers and its bytes.
    pub fn snapshot_due(&self) -> Result<Option<(SnapshotPoint, Vec<u8>)>, StorageError> {
        let applied = self.machine.applied_index();
        if applied < self.last_snapshot_index + self.config.snapshot_every_entries
            || applied < self.snapshot_retry_at
        {
            return Ok(None);
        }
        let Some(term) = self.raft.log().term(applied) else {
            return Ok(None);
        };
        let data = self.machine.to_snapshot()?;
        let point = SnapshotPoint {
            last_index: applied,
            last_term: term,
        };
        Ok(Some((point, data)))
    }

    /// The host saved the snapshot [`Replica::snapshot_due`] cut: Raft compacts its log to it.
    pub fn snapshot_saved(&mut self, point: SnapshotPoint, data: Vec<u8>) {
        let meta = SnapshotMeta {
            last_index: point.last_index,
            last_term: point.last_term,
            voters: self.config.peers.keys().copied().collect(),
        };
        if let Err(error) = self.raft.compact(Snapshot { meta, data }) {
            tracing::warn!(%error, "raft refused the snapshot");
        }
        self.last_snapshot_index = point.last_index;
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
            let _ = write.reply.send(Response::Error {
                kind: ErrorKind::Unknown,
                message: message.into(),
            });
        }
        for (_, read) in std::mem::take(&mut self.pending_reads) {
            let _ = read.reply.send(Response::Error {
                kind,
                message: message.into(),
            });
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

    /// Client requests waiting for an answer.
    #[cfg(test)]
    pub(crate) fn pending_requests(&self) -> usize {
        self.pending_writes.len() + self.pending_reads.len()
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
