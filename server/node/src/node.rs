//! The node: one task that owns a Raft group's consensus state, its durable log and its
//! key-value state machine, and drives them with the loop the consensus crate prescribes.
//!
//! Data flows one way: requests and peer messages arrive on one bounded channel
//! ([`NodeInput`]); the task feeds them to [`consensus::Raft`]; each `Ready` is persisted to the
//! [`storage::LogStore`] with one write and one fsync (so every request that arrived while the
//! previous fsync ran shares the next one: group commit), then its messages go to the peers, its
//! committed entries are applied to the [`StateMachine`], and waiting clients get their answers.
//! A write is answered only after its entry is committed by a quorum of durable logs and applied.
//!
//! Nothing here reads a clock directly: ticks come from `tokio::time`, which turmoil simulates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use consensus::{
    Config as RaftConfig, Entry, EntryPayload, Message, MessageBody, NodeId, ProposeError, Raft,
    ReadError, Restored, Role, Snapshot, SnapshotMeta,
};
use ringleader_protocol::{
    ErrorKind, GroupStatus, Limits, NodeStatus, ReadConsistency, ReplicaStatus, Request, Response,
    ONLY_GROUP,
};
use storage::kv::{Command, Proposal, StateMachine};
use storage::{codec, LogStore, SharedFs, SnapshotPoint, SyncPolicy, WalOptions};
use tokio::sync::{mpsc, oneshot};

use crate::faults::TransportFaults;
use crate::lag::LagTracker;
use crate::mapping;
use crate::peer::PeerSenders;

/// Inputs queued for the node at most; senders wait beyond it.
pub const NODE_INPUT_QUEUE: usize = 4096;
/// Inputs handled before the node processes a Ready: the upper bound of one group commit.
const MAX_INPUTS_PER_ROUND: usize = 1024;
/// After a write failed for lack of disk space, new writes are refused at once for this long;
/// then the next one tries the disk again (so writes resume, without a restart, once space is
/// freed).
const DISK_FULL_BACKOFF: Duration = Duration::from_secs(1);
/// Ticks between two samples of the followers' progress (see [`crate::lag`]).
const LAG_SAMPLE_EVERY_TICKS: u64 = 20;

/// Everything a node needs to start.
#[derive(Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every voter's address, this node's included.
    pub peers: BTreeMap<NodeId, String>,
    pub data_dir: PathBuf,
    pub fs: SharedFs,
    pub wal: WalOptions,
    pub limits: Limits,
    /// The length of one Raft tick.
    pub tick: Duration,
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// Take a snapshot (and compact the log) after this many applied entries.
    pub snapshot_every_entries: u64,
    /// Entries a snapshot keeps behind it, in memory and on disk, so that a follower at most
    /// this far behind is sent entries instead of the whole snapshot (Raft's
    /// `compaction_tail_entries`). Default 5 000, as etcd.
    pub log_tail_entries: u64,
    /// Seeds Raft's election timer.
    pub seed: u64,
    /// A deliberate bug from the catalogue in [`crate::planted`], for proving that the
    /// jepsen-like simulation catches it. Ignored (the correct code runs) unless the crate is
    /// built with the `planted-bugs` feature; never set outside tests.
    pub planted_bug: PlantedBug,
    /// Connection budgets, timeouts and the cluster secret (see [`crate::budget`]).
    pub net: crate::budget::NetConfig,
    /// The simulation's fault seam between Raft and the peer transport (see [`crate::faults`]);
    /// `None` in production.
    pub transport_faults: Option<Arc<dyn TransportFaults>>,
}

pub use crate::planted::PlantedBug;

impl NodeConfig {
    /// A single-node or static-cluster configuration with the default timings: 50 ms ticks,
    /// elections after 0.5–1 s of silence, heartbeats every 100 ms.
    pub fn new(
        id: NodeId,
        peers: BTreeMap<NodeId, String>,
        data_dir: PathBuf,
        fs: SharedFs,
    ) -> Self {
        NodeConfig {
            id,
            peers,
            data_dir,
            fs,
            wal: WalOptions::default(),
            limits: Limits::default(),
            tick: Duration::from_millis(50),
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            snapshot_every_entries: 10_000,
            log_tail_entries: consensus::DEFAULT_COMPACTION_TAIL_ENTRIES,
            seed: id,
            planted_bug: PlantedBug::None,
            net: crate::budget::NetConfig::default(),
            transport_faults: None,
        }
    }

    /// This node's own address.
    pub fn addr(&self) -> String {
        self.peers.get(&self.id).cloned().unwrap_or_default()
    }
}

/// What the node is asked to do.
pub enum NodeInput {
    /// A client request and where to send the answer.
    Client {
        request: Request,
        reply: oneshot::Sender<Response>,
    },
    /// A Raft message from a peer.
    Peer(Message),
    /// Stop: hand leadership over if leading, sync the log, answer what is pending, exit.
    Shutdown { done: oneshot::Sender<()> },
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("raft configuration: {0}")]
    Config(#[from] consensus::ConfigError),
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

/// A running node's state, owned by its task.
pub struct Node {
    config: NodeConfig,
    raft: Raft,
    log: LogStore,
    machine: StateMachine,
    peers: PeerSenders,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_reads: BTreeMap<u64, PendingRead>,
    next_read_id: u64,
    last_snapshot_index: u64,
    /// Snapshots received from a leader since start (for status).
    snapshots_installed: u64,
    was_leader: bool,
    /// Repairing a damaged log (`serve --repair`) until Raft says the log is whole again.
    repairing: bool,
    /// Set when the disk was found full: writes are refused with `DiskFull` until then.
    disk_full_until: Option<tokio::time::Instant>,
    /// A snapshot postponed for lack of space is tried again once applied reaches this.
    snapshot_retry_at: u64,
    /// The newest snapshot received from a leader, already decoded and checked: its index and
    /// state. Installed from here when Raft hands the snapshot out.
    received_snapshot: Option<(u64, StateMachine)>,
    /// The leader's record of its followers' progress, for `status`.
    lag: LagTracker,
    ticks: u64,
}

impl Node {
    /// Opens the node's storage, recovers its state and prepares Raft. Does not start the loop.
    pub fn open(config: NodeConfig, peers: PeerSenders) -> Result<Node, NodeError> {
        let (mut log, recovered) =
            LogStore::open(config.fs.clone(), &config.data_dir, wal_options(&config))?;
        log.set_compaction_tail_entries(config.log_tail_entries);
        log.set_planted_bug(config.planted_bug.storage_bug());
        if let Some(bytes) = recovered.torn_tail_bytes {
            tracing::warn!(bytes, "recovered the log after truncating a torn tail");
        }
        let repair_until = recovered.repair_until;
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
        // Linearizable reads use ReadIndex (no clock assumption). `ReadConsistency::Lease` is
        // served by ReadIndex too until per-request consistency levels arrive.
        raft_config.lease_reads = false;
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
        if let Some(until) = repair_until {
            raft.start_repair(until);
        }
        tracing::info!(
            id = config.id,
            term = hard_state.term,
            commit = hard_state.commit,
            last_snapshot_index,
            "node recovered"
        );
        Ok(Node {
            config,
            raft,
            log,
            machine,
            peers,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            next_read_id: 0,
            last_snapshot_index,
            snapshots_installed: 0,
            was_leader: false,
            repairing: repair_until.is_some(),
            disk_full_until: None,
            snapshot_retry_at: 0,
            received_snapshot: None,
            lag: LagTracker::default(),
            ticks: 0,
        })
    }

    /// Runs the node until a [`NodeInput::Shutdown`] arrives or every sender is gone.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<NodeInput>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Under `SyncPolicy::Interval` the log is synced on this timer instead of per Ready.
        let sync_every = match self.config.wal.sync {
            SyncPolicy::Interval(every) => Some(every),
            SyncPolicy::Always | SyncPolicy::Never => None,
        };
        let mut sync_timer = tokio::time::interval(sync_every.unwrap_or(Duration::from_secs(3600)));
        if self.config.peers.len() == 1 {
            // A single voter need not wait out an election timeout.
            self.raft.campaign();
        }
        loop {
            if let Err(error) = self.process_ready() {
                // The disk failed: nothing more can be made durable. Stop rather than lie.
                tracing::error!(%error, "storage failure: the node stops");
                self.fail_all_pending(ErrorKind::Internal, &format!("storage failure: {error}"));
                return;
            }
            tokio::select! {
                biased;
                _ = ticker.tick() => self.tick(),
                _ = sync_timer.tick(), if sync_every.is_some() => {
                    if let Err(error) = self.log.sync() {
                        tracing::error!(%error, "storage failure: the node stops");
                        self.fail_all_pending(ErrorKind::Internal, &format!("storage failure: {error}"));
                        return;
                    }
                }
                input = inputs.recv() => {
                    let Some(input) = input else { return };
                    if let Some(done) = self.handle(input) {
                        self.shut_down(&mut inputs, &mut ticker).await;
                        let _ = done.send(());
                        return;
                    }
                    // Take whatever else is already queued: it all shares the next fsync.
                    for _ in 0..MAX_INPUTS_PER_ROUND {
                        let Ok(input) = inputs.try_recv() else { break };
                        if let Some(done) = self.handle(input) {
                            self.shut_down(&mut inputs, &mut ticker).await;
                            let _ = done.send(());
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One tick of the logical clock: Raft's timers, and the leader's lag samples.
    fn tick(&mut self) {
        if let Some(faults) = &self.config.transport_faults {
            if faults.clock_stopped(self.config.id) {
                return;
            }
        }
        self.raft.tick();
        self.ticks += 1;
        if !self.ticks.is_multiple_of(LAG_SAMPLE_EVERY_TICKS) {
            return;
        }
        if self.raft.role() != Role::Leader {
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

    /// Handles one input; returns the shutdown acknowledgement if it was a shutdown.
    fn handle(&mut self, input: NodeInput) -> Option<oneshot::Sender<()>> {
        match input {
            NodeInput::Peer(message) => {
                if let MessageBody::InstallSnapshot { snapshot } = &message.body {
                    match check_snapshot(snapshot) {
                        Ok(machine) => {
                            self.received_snapshot = Some((snapshot.meta.last_index, machine))
                        }
                        Err(reason) => {
                            // Never saved, never installed: the leader will send it again.
                            tracing::warn!(from = message.from, index = snapshot.meta.last_index,
                                %reason, "refused a snapshot that does not decode to its state");
                            return None;
                        }
                    }
                }
                self.raft.step(message)
            }
            NodeInput::Client { request, reply } => self.handle_request(request, reply),
            NodeInput::Shutdown { done } => return Some(done),
        }
        None
    }

    fn not_leader(&self) -> Response {
        let leader = self.raft.leader();
        Response::NotLeader {
            leader,
            leader_addr: leader.and_then(|id| self.config.peers.get(&id).cloned()),
        }
    }

    fn handle_request(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        if let Err(message) = request.check(&self.config.limits) {
            let _ = reply.send(Response::Error {
                kind: ErrorKind::Invalid,
                message,
            });
            return;
        }
        let (command, session) = match request {
            Request::Status => {
                let _ = reply.send(Response::Status(Box::new(self.status())));
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
        if let Some(until) = self.disk_full_until {
            if tokio::time::Instant::now() < until && self.raft.role() == Role::Leader {
                let _ = reply.send(disk_full_response());
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
        match self.raft.read_index(id) {
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

    /// Persists, sends, applies and answers everything Raft has ready.
    fn process_ready(&mut self) -> Result<(), storage::StorageError> {
        while self.raft.has_ready() {
            let ready = self.raft.ready();
            // 1. Durability first: a message may promise that this state is on disk.
            if let Some(snapshot) = &ready.snapshot {
                let point = SnapshotPoint {
                    last_index: snapshot.meta.last_index,
                    last_term: snapshot.meta.last_term,
                };
                self.log.save_snapshot(point, &snapshot.data, true)?;
                self.last_snapshot_index = point.last_index;
                self.snapshots_installed += 1;
            }
            let entries: Vec<_> = ready
                .entries
                .iter()
                .map(mapping::to_stored_entry_ref)
                .collect();
            let hard_state = ready.hard_state.as_ref().map(mapping::to_stored_hard_state);
            if let Err(error) = self.log.append_borrowed(hard_state, &entries) {
                let recoverable = error.is_disk_full()
                    && !self.log.wal().is_poisoned()
                    && ready.snapshot.is_none();
                if !recoverable {
                    return Err(error);
                }
                // The WAL put itself back as it was: nothing of this Ready is on disk. Forget
                // it, tell its writers, and try the disk again on the next input or tick.
                tracing::warn!(%error, "disk full: refusing writes, serving reads");
                self.raft.abandon_ready();
                for entry in &ready.entries {
                    if let Some(write) = self.pending_writes.remove(&entry.index) {
                        let _ = write.reply.send(disk_full_response());
                    }
                }
                self.note_read_states(ready.read_states);
                if self.raft.role() == Role::Leader {
                    // Raft dropped the reads whose confirming heartbeat was never sent (it was
                    // in the abandoned Ready): answer them `Unavailable`; the client retries.
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
                self.disk_full_until = Some(tokio::time::Instant::now() + DISK_FULL_BACKOFF);
                break;
            }
            let wrote = hard_state.is_some() || !entries.is_empty();
            if wrote && self.disk_full_until.take().is_some() {
                tracing::info!("the disk accepts writes again");
            }
            // 2. Then the messages.
            for message in ready.messages {
                self.peers.send(message);
            }
            // 3. Then the state machine (decoded once, when the snapshot arrived).
            if let Some(snapshot) = ready.snapshot {
                self.machine = match self.received_snapshot.take() {
                    Some((index, machine)) if index == snapshot.meta.last_index => machine,
                    _ => StateMachine::from_snapshot(&snapshot.data)?,
                };
            }
            for entry in &ready.committed_entries {
                self.apply(entry)?;
            }
            // 4. Reads confirmed by a heartbeat quorum (or the lease).
            self.note_read_states(ready.read_states);
            self.raft.advance();
            self.serve_confirmed_reads();
            self.maybe_snapshot()?;
            if self.repairing && !self.raft.is_repairing() {
                // Everything up to the old commit index is durable here again.
                self.log.finish_repair()?;
                self.repairing = false;
                tracing::info!(
                    last_index = self.log.last_index(),
                    "repair complete: the log is whole again; voting resumes"
                );
            }
        }
        self.notice_leadership_change();
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

    fn apply(&mut self, entry: &Entry) -> Result<(), storage::StorageError> {
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

    /// When this node stops leading, answer its waiting clients: their writes' fate is unknown
    /// to it, and its reads can no longer be confirmed.
    fn notice_leadership_change(&mut self) {
        let is_leader = self.raft.role() == Role::Leader;
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

    fn maybe_snapshot(&mut self) -> Result<(), storage::StorageError> {
        let applied = self.machine.applied_index();
        if applied < self.last_snapshot_index + self.config.snapshot_every_entries
            || applied < self.snapshot_retry_at
        {
            return Ok(());
        }
        let Some(term) = self.raft.log().term(applied) else {
            return Ok(());
        };
        let data = self.machine.to_snapshot()?;
        let saved = self.log.save_snapshot(
            SnapshotPoint {
                last_index: applied,
                last_term: term,
            },
            &data,
            false,
        );
        match saved {
            Ok(()) => {}
            // Compaction can wait for space; the log stays whole meanwhile.
            Err(error) if error.is_disk_full() && !self.log.wal().is_poisoned() => {
                tracing::warn!(%error, "disk full: snapshot postponed");
                self.snapshot_retry_at = applied + self.config.snapshot_every_entries / 10 + 1;
                return Ok(());
            }
            Err(error) => return Err(error),
        }
        let meta = SnapshotMeta {
            last_index: applied,
            last_term: term,
            voters: self.config.peers.keys().copied().collect(),
        };
        if let Err(error) = self.raft.compact(Snapshot { meta, data }) {
            tracing::warn!(%error, "raft refused the snapshot");
        }
        self.last_snapshot_index = applied;
        tracing::info!(index = applied, "snapshot taken, log compacted");
        Ok(())
    }

    /// Answers everything waiting. Writes get `Unknown` whatever the cause: their entries may
    /// already sit on a quorum and commit without this node.
    fn fail_all_pending(&mut self, kind: ErrorKind, message: &str) {
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

    /// Graceful stop: hand leadership to the most caught-up peer (so the cluster does not wait
    /// out an election timeout), keep serving for up to two election timeouts while it happens,
    /// then sync the log and answer what is left.
    async fn shut_down(
        &mut self,
        inputs: &mut mpsc::Receiver<NodeInput>,
        ticker: &mut tokio::time::Interval,
    ) {
        if self.raft.role() == Role::Leader && self.config.peers.len() > 1 {
            let status = self.raft.status();
            let target = status
                .progress
                .iter()
                .filter(|(id, _)| **id != self.config.id)
                .max_by_key(|(id, peer)| (peer.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
            if let Some(target) = target {
                let _ = self.raft.transfer_leadership(target);
                tracing::info!(to = target, "transferring leadership before shutdown");
                let deadline = tokio::time::Instant::now()
                    + self.config.tick * self.config.election_timeout_ticks * 2;
                while self.raft.role() == Role::Leader && tokio::time::Instant::now() < deadline {
                    if self.process_ready().is_err() {
                        break;
                    }
                    tokio::select! {
                        biased;
                        _ = ticker.tick() => self.raft.tick(),
                        Some(input) = inputs.recv() => {
                            if let NodeInput::Peer(message) = input {
                                self.raft.step(message);
                            } else if let NodeInput::Client { reply, .. } = input {
                                let _ = reply.send(Response::Error { kind: ErrorKind::ShuttingDown, message: "the node is shutting down".into() });
                            }
                        }
                    }
                }
            }
        }
        let _ = self.process_ready();
        if let Err(error) = self.log.sync() {
            tracing::error!(%error, "final log sync failed");
        }
        self.fail_all_pending(ErrorKind::ShuttingDown, "the node is shutting down");
        tracing::info!(id = self.config.id, "node stopped");
    }

    fn status(&self) -> NodeStatus {
        let status = self.raft.status();
        let tick_ms = self.config.tick.as_millis() as u64;
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
        // One entry: this node hosts group 0 only (issue 14); the host will list every group.
        let group = GroupStatus {
            group: ONLY_GROUP,
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
        };
        NodeStatus {
            id: self.config.id,
            addr: self.config.addr(),
            log_bytes: self.log.wal().size_bytes(),
            groups: vec![group],
        }
    }
}

fn internal(error: impl std::fmt::Display) -> Response {
    Response::Error {
        kind: ErrorKind::Internal,
        message: error.to_string(),
    }
}

/// The WAL options the node runs with (a planted bug may turn fsync off).
fn wal_options(config: &NodeConfig) -> WalOptions {
    let mut options = config.wal.clone();
    // Planted (Raft Figure 2: durable before responding): the WAL never syncs.
    if config.planted_bug.is_active(PlantedBug::AckBeforeFsync) {
        options.sync = SyncPolicy::Never;
    }
    options
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

fn disk_full_response() -> Response {
    Response::Error {
        kind: ErrorKind::DiskFull,
        message: "no space left on the node's disk: the write was not applied; reads still work"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower(dir: &std::path::Path) -> Node {
        let peers: BTreeMap<NodeId, String> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", 1 + id)))
            .collect();
        let config = NodeConfig::new(2, peers, dir.to_path_buf(), storage::StdFs::shared());
        Node::open(config, PeerSenders::default()).expect("open")
    }

    fn install_snapshot(last_index: u64, data: Vec<u8>) -> NodeInput {
        NodeInput::Peer(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index,
                        last_term: 1,
                        voters: vec![1, 2, 3],
                    },
                    data,
                },
            },
        })
    }

    fn state_at(index: u64) -> Vec<u8> {
        let mut machine = StateMachine::new();
        machine.apply_noop(index);
        machine.to_snapshot().expect("encode")
    }

    #[test]
    fn a_snapshot_that_does_not_decode_to_its_state_is_refused_before_it_is_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = follower(dir.path());
        let mut garbage = state_at(7);
        garbage.truncate(garbage.len() / 2);
        for bad in [b"not a state machine".to_vec(), garbage, state_at(5)] {
            assert!(node.handle(install_snapshot(7, bad)).is_none());
            node.process_ready().expect("the node stays up");
            assert_eq!(node.snapshots_installed, 0);
            assert_eq!(node.machine.applied_index(), 0);
            assert_eq!(node.log.snapshot_point().last_index, 0, "nothing saved");
        }
        // A sound one is installed, and the node stays a follower of the sender.
        node.handle(install_snapshot(7, state_at(7)));
        node.process_ready().expect("install");
        assert_eq!(node.snapshots_installed, 1);
        assert_eq!(node.machine.applied_index(), 7);
        assert_eq!(node.log.snapshot_point().last_index, 7);
        assert_eq!(node.raft.leader(), Some(1));
    }

    // --- The node driven by hand: `handle` and `process_ready`, no sockets, no run loop. ---

    use ringleader_protocol::ReadConsistency;
    use storage::fault::{DiskFault, FaultyFs};
    use storage::StdFs;

    /// A node of a `voters`-node cluster (node 1) on `fs`, with `adjust` applied to its config.
    fn node_1(
        dir: &std::path::Path,
        voters: u64,
        fs: SharedFs,
        adjust: impl FnOnce(&mut NodeConfig),
    ) -> Node {
        let peers: BTreeMap<NodeId, String> = (1..=voters)
            .map(|id| (id, format!("127.0.0.1:{}", 7000 + id)))
            .collect();
        let mut config = NodeConfig::new(1, peers, dir.to_path_buf(), fs);
        adjust(&mut config);
        Node::open(config, PeerSenders::default()).expect("open")
    }

    /// A single node that has elected itself.
    fn single_leader(dir: &std::path::Path, fs: SharedFs) -> Node {
        let mut node = node_1(dir, 1, fs, |_| {});
        node.raft.campaign();
        node.process_ready().expect("persist the election");
        assert_eq!(node.raft.role(), Role::Leader);
        node
    }

    fn from_peer(from: NodeId, term: u64, body: MessageBody) -> NodeInput {
        NodeInput::Peer(Message {
            from,
            to: 1,
            term,
            body,
        })
    }

    /// Node 1 of three, elected with node 2's vote, its no-op committed by node 2: a leader
    /// that can serve reads but commits nothing more without an answer from a peer (their
    /// messages go nowhere: `PeerSenders::default()`).
    fn leader_of_three(dir: &std::path::Path) -> Node {
        let mut node = node_1(dir, 3, StdFs::shared(), |_| {});
        node.raft.campaign();
        node.process_ready().expect("persist");
        if node.raft.role() == Role::PreCandidate {
            let term = node.raft.term() + 1;
            node.handle(from_peer(
                2,
                term,
                MessageBody::PreVoteResponse { granted: true },
            ));
            node.process_ready().expect("persist");
        }
        assert_eq!(node.raft.role(), Role::Candidate);
        let term = node.raft.term();
        node.handle(from_peer(
            2,
            term,
            MessageBody::RequestVoteResponse { granted: true },
        ));
        node.process_ready().expect("persist");
        assert_eq!(node.raft.role(), Role::Leader);
        let match_index = node.raft.status().last_index;
        node.handle(from_peer(
            2,
            term,
            MessageBody::AppendEntriesResponse {
                result: consensus::AppendResult::Success { match_index },
            },
        ));
        node.process_ready().expect("persist");
        assert_eq!(
            node.raft.status().commit_index,
            match_index,
            "no-op committed"
        );
        node
    }

    fn request(node: &mut Node, request: Request) -> oneshot::Receiver<Response> {
        let (reply, answer) = oneshot::channel();
        assert!(node.handle(NodeInput::Client { request, reply }).is_none());
        answer
    }

    fn put(node: &mut Node, key: &str, value: &str) -> oneshot::Receiver<Response> {
        request(
            node,
            Request::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                session: None,
            },
        )
    }

    fn get(node: &mut Node, key: &str) -> oneshot::Receiver<Response> {
        request(
            node,
            Request::Get {
                key: key.as_bytes().to_vec(),
                consistency: ReadConsistency::Linearizable,
            },
        )
    }

    /// The answer already sent on `answer`; panics if there is none yet.
    fn answered(answer: &mut oneshot::Receiver<Response>) -> Response {
        answer.try_recv().expect("answered")
    }

    fn assert_error(response: Response, expected: ErrorKind) {
        assert!(
            matches!(&response, Response::Error { kind, .. } if *kind == expected),
            "expected a {expected:?} error, got {response:?}"
        );
    }

    fn counting_fs() -> (SharedFs, std::sync::Arc<DiskFault>) {
        FaultyFs::wrap(StdFs::shared())
    }

    #[test]
    fn writes_queued_while_the_disk_was_busy_share_one_fsync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fs, disk) = counting_fs();
        let mut node = single_leader(dir.path(), fs);
        // What one write costs on its own.
        let before = disk.file_syncs();
        let mut alone = put(&mut node, "alone", "1");
        node.process_ready().expect("persist");
        assert!(matches!(answered(&mut alone), Response::Written { .. }));
        let syncs_for_one = disk.file_syncs() - before;
        assert!(syncs_for_one >= 1, "an acknowledged write was fsynced");
        // A hundred queued before the node processes its Ready: one group commit.
        let before = disk.file_syncs();
        let mut answers: Vec<_> = (0..100)
            .map(|i| put(&mut node, &format!("k{i}"), &i.to_string()))
            .collect();
        node.process_ready().expect("persist");
        assert_eq!(
            disk.file_syncs() - before,
            syncs_for_one,
            "100 queued writes cost the fsyncs of one"
        );
        // Each in its own entry, in the order queued (a version is the entry's log index).
        let versions: Vec<u64> = answers
            .iter_mut()
            .map(|answer| match answered(answer) {
                Response::Written { version } => version,
                other => panic!("expected Written, got {other:?}"),
            })
            .collect();
        assert!(versions.windows(2).all(|pair| pair[1] == pair[0] + 1));
        assert_eq!(node.machine.len(), 101);
    }

    #[test]
    fn a_leader_that_sees_a_higher_term_answers_its_pending_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_of_three(dir.path());
        let mut writes: Vec<_> = (0..3)
            .map(|i| put(&mut node, &format!("k{i}"), "v"))
            .collect();
        let mut read = get(&mut node, "k0");
        node.process_ready().expect("persist");
        // Nothing commits or confirms without a peer's answer: all of it is pending.
        for write in &mut writes {
            assert!(write.try_recv().is_err(), "pending");
        }
        assert!(read.try_recv().is_err(), "pending");
        // Node 3 leads a later term.
        let term = node.raft.term() + 1;
        node.handle(from_peer(
            3,
            term,
            MessageBody::Heartbeat {
                commit: 0,
                sent_tick: 0,
                read_ctx: None,
            },
        ));
        node.process_ready().expect("persist");
        assert_eq!(node.raft.role(), Role::Follower);
        // Its writes' fate is unknown to it (they may still commit under node 3)...
        for write in &mut writes {
            assert_error(answered(write), ErrorKind::Unknown);
        }
        // ...and its read can no longer be confirmed: the client is sent to the new leader.
        match answered(&mut read) {
            Response::NotLeader {
                leader,
                leader_addr,
            } => {
                assert_eq!(leader, Some(3));
                assert_eq!(leader_addr.as_deref(), Some("127.0.0.1:7003"));
            }
            other => panic!("expected NotLeader, got {other:?}"),
        }
        assert!(node.pending_writes.is_empty() && node.pending_reads.is_empty());
    }

    /// A shutdown answers everything still waiting, even when the disk stopped acknowledging
    /// (so the writes could not commit): writes `Unknown`, reads `ShuttingDown`.
    #[tokio::test]
    async fn shutdown_answers_every_pending_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fs, disk) = counting_fs();
        let mut node = single_leader(dir.path(), fs);
        let mut written = put(&mut node, "before", "1");
        node.process_ready().expect("persist");
        assert!(matches!(answered(&mut written), Response::Written { .. }));
        // The disk fails every fsync from now on: nothing more can be acknowledged.
        disk.set_failing_sync(true);
        let mut writes: Vec<_> = (0..3)
            .map(|i| put(&mut node, &format!("k{i}"), "v"))
            .collect();
        let mut read = get(&mut node, "before");
        assert!(node.process_ready().is_err(), "the fsync failed");
        for write in &mut writes {
            assert!(write.try_recv().is_err(), "pending");
        }
        assert!(read.try_recv().is_err(), "pending");

        let (_inputs, mut receiver) = mpsc::channel(4);
        let mut ticker = tokio::time::interval(node.config.tick);
        node.shut_down(&mut receiver, &mut ticker).await;
        for write in &mut writes {
            assert_error(answered(write), ErrorKind::Unknown);
        }
        assert_error(answered(&mut read), ErrorKind::ShuttingDown);
    }

    #[test]
    fn a_snapshot_is_saved_and_the_state_is_restored_from_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let small_snapshots = |config: &mut NodeConfig| {
            config.snapshot_every_entries = 10;
            config.log_tail_entries = 1;
        };
        let mut node = node_1(dir.path(), 1, StdFs::shared(), small_snapshots);
        node.raft.campaign();
        node.process_ready().expect("persist");
        for i in 0..25 {
            let mut answer = put(&mut node, &format!("k{i}"), &format!("v{i}"));
            node.process_ready().expect("persist");
            assert!(matches!(answered(&mut answer), Response::Written { .. }));
        }
        let saved = node.log.snapshot_point().last_index;
        assert!(saved >= 20, "snapshots taken: the last at {saved}");
        assert_eq!(node.last_snapshot_index, saved);
        drop(node);

        // Reopened: the state up to the snapshot comes from it (the log before it is gone)...
        let mut node = node_1(dir.path(), 1, StdFs::shared(), small_snapshots);
        assert_eq!(node.machine.applied_index(), saved);
        assert!(node.machine.len() >= 18, "keys restored from the snapshot");
        // ...and the rest from the log, once the node leads again.
        node.raft.campaign();
        node.process_ready().expect("persist");
        assert_eq!(node.raft.role(), Role::Leader);
        for i in 0..25 {
            let mut answer = get(&mut node, &format!("k{i}"));
            node.process_ready().expect("serve");
            match answered(&mut answer) {
                Response::Value(Some(found)) => {
                    assert_eq!(found.value, format!("v{i}").into_bytes(), "k{i}")
                }
                other => panic!("k{i}: {other:?}"),
            }
        }
        assert_eq!(node.machine.len(), 25);
    }
}
