//! The host: the one task per node that owns the node's peer transport, its clock, and the
//! replicas of the Raft groups the ring places on the node; its durable log belongs to the
//! [`LogWriter`] it feeds.
//!
//! Data flows one way: requests and peer messages arrive on one bounded channel
//! ([`NodeInput`]), already routed to a group by the [`crate::router`]; the host hands each to
//! that group's [`Replica`]. Then it does the I/O in the order Raft requires:
//!
//! 1. at once, whatever a leader may send before its own write (appends, heartbeats), so the
//!    followers write in parallel with the leader and a slow fsync holds back no heartbeat;
//! 2. when no write is in flight, every group's `Ready` goes to the writer as one round: one
//!    write and one fsync of the shared log (so everything that arrived, in any group, while the
//!    previous fsync ran shares the next one: group commit);
//! 3. when the writer reports the round durable, the messages that waited for it (votes,
//!    acknowledgements) are sent, and each replica applies its committed entries and answers
//!    the waiting clients; snapshots are saved by the writer too, off this loop.
//!
//! A write is answered only after its entry is committed by a quorum of durable logs and applied.
//! Nothing here reads a clock directly: ticks come from `tokio::time`, which turmoil simulates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use consensus::{Message, Ready};
use ringleader_protocol::{ErrorKind, GroupId, NodeStatus, Request, Response};
use storage::{SharedLog, SnapshotPoint, SyncPolicy, WalOptions};
use tokio::sync::{mpsc, oneshot};

use crate::config::NodeConfig;
use crate::log_writer::{Completion, GroupAppend, Job, LogWriter, Outcome, SnapshotState};
use crate::peer::PeerSenders;
use crate::planted::PlantedBug;
use crate::replica::{Replica, ReplyTo};
use ringleader_protocol::ring::Ring;

/// How often, in election timeouts, the host asks which groups pin the shared log.
const PINNING_CHECK_EVERY_TIMEOUTS: u64 = 20;
/// The shared log's size, in segments, beyond which groups pinning it are asked to snapshot.
const PINNED_LOG_BUDGET_SEGMENTS: u64 = 4;
/// Inputs queued for the node at most; senders wait beyond it.
pub const NODE_INPUT_QUEUE: usize = 4096;
/// Inputs handled before the node processes a Ready: the upper bound of one group commit.
const MAX_INPUTS_PER_ROUND: usize = 1024;
/// After a write failed for lack of disk space, new writes are refused at once for this long;
/// then the next one tries the disk again (so writes resume, without a restart, once space is
/// freed).
const DISK_FULL_BACKOFF: Duration = Duration::from_secs(1);

/// What the node is asked to do.
pub enum NodeInput {
    /// A client request for `group` (see [`crate::router::Router::route`]) and where to send
    /// the answer.
    Client {
        group: GroupId,
        request: Request,
        reply: ReplyTo,
        /// The request's share of the service's budget of queued request bytes, returned
        /// once the node has handled it (proposed, refused or answered).
        held: HeldBytes,
    },
    /// A Raft message from a peer, for the replica of `group`.
    Peer { group: GroupId, message: Message },
    /// Stop: hand leadership over if leading, sync the log, answer what is pending, exit.
    Shutdown { done: oneshot::Sender<()> },
}

/// Bytes of a budget held while an input waits for the node (see
/// `NetConfig::queued_request_budget_bytes`); returned when dropped. Inputs that no budget
/// covers (tests, the simulation's clients) hold [`HeldBytes::none`].
#[derive(Debug, Default)]
pub struct HeldBytes {
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl HeldBytes {
    pub fn none() -> Self {
        HeldBytes { _permit: None }
    }

    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        HeldBytes {
            _permit: Some(permit),
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("raft configuration: {0}")]
    Config(#[from] consensus::ConfigError),
    #[error("ring: {0}")]
    Ring(#[from] ringleader_protocol::ring::RingError),
    #[error("{0}")]
    RingFile(#[from] crate::ring_file::RingFileError),
    #[error("could not start the log writer thread: {0}")]
    WriterThread(std::io::Error),
    #[error("the log store recovered no state for group {group}, which this node hosts")]
    MissingGroup { group: GroupId },
}

/// A running node's state, owned by its task.
pub struct Host {
    config: NodeConfig,
    ring: Ring,
    io: Io,
    replicas: BTreeMap<GroupId, Replica>,
    /// Ticks not yet delivered to the replicas (the simulation has paused this node).
    missed_ticks: u64,
    /// Ticks of the host's own timer (for its periodic checks).
    ticks: u64,
}

/// What the host does I/O with, apart from the replicas it does it for.
struct Io {
    /// The owner of the durable log of every hosted group (one WAL for all of them).
    writer: LogWriter,
    /// Where that log lives (for errors).
    data_dir: std::path::PathBuf,
    /// The round the writer is making durable: each group's Ready, whose entries and received
    /// snapshot it holds until the completion hands them back. At most one at a time.
    writing: Option<Vec<(GroupId, Ready)>>,
    /// Groups whose own snapshot the writer is saving.
    snapshotting: BTreeSet<GroupId>,
    /// A `Job::Sync` or `Job::FindPinningGroups` is outstanding.
    syncing: bool,
    finding_pinning_groups: bool,
    /// The log's size, as of the writer's last report.
    log_bytes: u64,
    writes_per_fsync: WritesPerFsync,
    peers: PeerSenders,
    /// The groups repairing a damaged log (`serve --repair`) until Raft says it is whole again.
    repairing: BTreeSet<GroupId>,
    /// Set when the disk was found full: writes are refused with `DiskFull` until then.
    disk_full_until: Option<tokio::time::Instant>,
}

impl Host {
    /// Opens the node's storage, recovers each replica's state and prepares Raft. Does not
    /// start the loop.
    pub fn open(config: NodeConfig, peers: PeerSenders) -> Result<Host, NodeError> {
        let ring = config.build_ring()?;
        crate::ring_file::check_or_store(&*config.fs, &config.data_dir, &config.ring, config.id)?;
        let groups = ring.groups_on(config.id);
        let (mut log, mut recovered) = SharedLog::open(
            config.fs.clone(),
            &config.data_dir,
            wal_options(&config),
            &groups,
        )?;
        log.set_compaction_tail_entries(config.log_tail_entries);
        log.set_planted_bug(config.planted_bug.storage_bug());
        let mut replicas = BTreeMap::new();
        let mut repairing = BTreeSet::new();
        for group in groups {
            let Some(recovered) = recovered.remove(&group) else {
                return Err(NodeError::MissingGroup { group });
            };
            if let Some(bytes) = recovered.torn_tail_bytes.filter(|_| replicas.is_empty()) {
                tracing::warn!(bytes, "recovered the log after truncating a torn tail");
            }
            if recovered.repair_until.is_some() {
                repairing.insert(group);
            }
            let replica = Replica::recover(config.replica(&ring, group), &recovered)?;
            replicas.insert(group, replica);
        }
        let log_bytes = log.wal().size_bytes();
        // One append round, one snapshot and one repair per group, a sync and a pinning query.
        let max_outstanding_jobs = 4 + 2 * replicas.len();
        let writer = LogWriter::new(log, config.log_writer, max_outstanding_jobs)
            .map_err(NodeError::WriterThread)?;
        let data_dir = config.data_dir.clone();
        Ok(Host {
            config,
            ring,
            io: Io {
                writer,
                data_dir,
                writing: None,
                snapshotting: BTreeSet::new(),
                syncing: false,
                finding_pinning_groups: false,
                log_bytes,
                writes_per_fsync: WritesPerFsync::default(),
                peers,
                repairing,
                disk_full_until: None,
            },
            replicas,
            missed_ticks: 0,
            ticks: 0,
        })
    }

    /// The ring the node was opened with.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Runs the node until a [`NodeInput::Shutdown`] arrives or every sender is gone.
    pub async fn run(mut self, mut inputs: mpsc::Receiver<NodeInput>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        // Ticks missed while the process could not run (a pause, a stalled disk) are all
        // delivered when it runs again, before any input (the select below is biased to the
        // ticker): Raft's clock must never lose time, or a leader's lease and a replica's
        // staleness bound would outlive their guarantee after a pause.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        // Under `SyncPolicy::Interval` the log is synced on this timer instead of per Ready.
        let sync_every = match self.config.wal.sync {
            SyncPolicy::Interval(every) => Some(every),
            SyncPolicy::Always | SyncPolicy::Never => None,
        };
        let mut sync_timer = tokio::time::interval(sync_every.unwrap_or(Duration::from_secs(3600)));
        if self.config.peers.len() == 1 {
            // A single voter need not wait out an election timeout.
            self.replicas.values_mut().for_each(Replica::campaign);
        }
        loop {
            if let Err(error) = self.process_ready() {
                // The disk failed: nothing more can be made durable. Stop rather than lie.
                self.stop_on_storage_failure(&error);
                return;
            }
            tokio::select! {
                biased;
                _ = ticker.tick() => self.tick(),
                _ = sync_timer.tick(), if sync_every.is_some() => self.io.submit_sync(),
                completion = self.io.writer.next_completion(), if self.io.writer.outstanding() > 0 => {
                    if let Err(error) = self.io.complete(&mut self.replicas, completion) {
                        self.stop_on_storage_failure(&error);
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

    fn stop_on_storage_failure(&mut self, error: &storage::StorageError) {
        tracing::error!(%error, "storage failure: the node stops");
        self.fail_all_pending(ErrorKind::Internal, &format!("storage failure: {error}"));
    }

    /// One tick of the logical clock, for every replica. While the simulation holds this node's
    /// clock stopped, its ticks are counted, not delivered; when it runs again they are all
    /// delivered (a process pause: the monotonic clock ran on) or dropped (a clock stall), as
    /// the seam says (`TransportFaults::paused_clock_catches_up`).
    fn tick(&mut self) {
        self.missed_ticks += 1;
        self.catch_up_ticks();
        self.ticks += 1;
        let every = u64::from(self.config.election_timeout_ticks) * PINNING_CHECK_EVERY_TIMEOUTS;
        // A group that writes little keeps its old entries (it never reaches its snapshot
        // interval), and with them every later segment of the log all groups share. Only once
        // the log is over a few segments: a busy group below its interval is named too.
        let log_budget_bytes = self.config.wal.segment_max_bytes * PINNED_LOG_BUDGET_SEGMENTS;
        if self.replicas.len() > 1
            && self.ticks.is_multiple_of(every)
            && self.io.log_bytes > log_budget_bytes
            && !self.io.finding_pinning_groups
        {
            // The writer answers; `Io::complete` asks the groups it names to snapshot.
            self.io.finding_pinning_groups = true;
            self.io.writer.submit(Job::FindPinningGroups);
        }
    }

    /// Delivers the ticks counted while the node was paused, unless it still is.
    fn catch_up_ticks(&mut self) {
        if self.missed_ticks == 0 {
            return;
        }
        if let Some(faults) = &self.config.transport_faults {
            if faults.clock_stopped(self.config.id) {
                return;
            }
            if !faults.paused_clock_catches_up() {
                // A stalled clock: the ticks it slept through are gone.
                self.missed_ticks = self.missed_ticks.min(1);
            }
        }
        for _ in 0..std::mem::take(&mut self.missed_ticks) {
            self.replicas.values_mut().for_each(Replica::tick);
        }
    }

    /// Handles one input; returns the shutdown acknowledgement if it was a shutdown.
    fn handle(&mut self, input: NodeInput) -> Option<oneshot::Sender<()>> {
        // Time first: an input that arrives as a pause ends must not see the clock of before.
        self.catch_up_ticks();
        match input {
            NodeInput::Peer { group, message } => match self.replicas.get_mut(&group) {
                Some(replica) => replica.step(message),
                None => tracing::warn!(group, "a peer message for a group not hosted: dropped"),
            },
            NodeInput::Client {
                group,
                request,
                reply,
                held,
            } => {
                self.handle_request(group, request, reply);
                drop(held);
            }
            NodeInput::Shutdown { done } => return Some(done),
        }
        None
    }

    fn handle_request(&mut self, group: GroupId, request: Request, reply: ReplyTo) {
        if let Err(message) = request.check(&self.config.limits) {
            let _ = reply.send(
                Response::Error {
                    kind: ErrorKind::Invalid,
                    message,
                }
                .into(),
            );
            return;
        }
        if matches!(request, Request::Status) {
            let _ = reply.send(Response::Status(Box::new(self.status())).into());
            return;
        }
        let refuse_writes = self
            .io
            .disk_full_until
            .is_some_and(|until| tokio::time::Instant::now() < until)
            .then(disk_full_response);
        match self.replicas.get_mut(&group) {
            Some(replica) => replica.handle_request(request, reply, refuse_writes),
            None => {
                let _ = reply.send(
                    Response::Error {
                        kind: ErrorKind::Invalid,
                        message: format!("unknown group {group}: not hosted on this node"),
                    }
                    .into(),
                );
            }
        }
    }

    /// Persists, sends, applies and answers everything the replicas have ready.
    fn process_ready(&mut self) -> Result<(), storage::StorageError> {
        self.io.process_ready(&mut self.replicas)
    }

    fn fail_all_pending(&mut self, kind: ErrorKind, message: &str) {
        for replica in self.replicas.values_mut() {
            replica.fail_all_pending(kind, message);
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
        let mut transferring = false;
        for replica in self.replicas.values_mut() {
            transferring |= replica.transfer_leadership_away();
        }
        if transferring {
            let deadline = tokio::time::Instant::now()
                + self.config.tick * self.config.election_timeout_ticks * 2;
            while self.replicas.values().any(Replica::is_leader)
                && tokio::time::Instant::now() < deadline
            {
                if self.process_ready().is_err() {
                    break;
                }
                tokio::select! {
                    biased;
                    _ = ticker.tick() => self.replicas.values_mut().for_each(Replica::tick),
                    completion = self.io.writer.next_completion(), if self.io.writer.outstanding() > 0 => {
                        if self.io.complete(&mut self.replicas, completion).is_err() {
                            break;
                        }
                    }
                    Some(input) = inputs.recv() => match input {
                        NodeInput::Peer { group, message } => {
                            if let Some(replica) = self.replicas.get_mut(&group) {
                                replica.step(message);
                            }
                        }
                        NodeInput::Client { reply, .. } => {
                            let _ = reply.send(
                                Response::Error {
                                    kind: ErrorKind::ShuttingDown,
                                    message: "the node is shutting down".into(),
                                }
                                .into(),
                            );
                        }
                        NodeInput::Shutdown { .. } => {}
                    },
                }
            }
        }
        if let Err(error) = self.finish_writing().await {
            tracing::error!(%error, "final log sync failed");
        }
        self.fail_all_pending(ErrorKind::ShuttingDown, "the node is shutting down");
        tracing::info!(id = self.config.id, "node stopped");
    }

    /// Lets the writer finish what it holds (and what that releases), then syncs the log.
    async fn finish_writing(&mut self) -> Result<(), storage::StorageError> {
        // Each pass either completes a job or ends; a few rounds drain what completions release.
        for _ in 0..16 {
            self.process_ready()?;
            if self.io.writer.outstanding() == 0 {
                break;
            }
            while self.io.writer.outstanding() > 0 {
                let completion = self.io.writer.next_completion().await;
                self.io.complete(&mut self.replicas, completion)?;
            }
        }
        self.io.submit_sync();
        while self.io.writer.outstanding() > 0 {
            let completion = self.io.writer.next_completion().await;
            self.io.complete(&mut self.replicas, completion)?;
        }
        Ok(())
    }

    /// The node's status: its own, and each hosted group's.
    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.config.id,
            addr: self.config.addr(),
            ring: self.ring.spec().clone(),
            log_bytes: self.io.log_bytes,
            log_batches: self.io.writes_per_fsync.batches,
            log_group_writes: self.io.writes_per_fsync.group_writes,
            groups: self
                .replicas
                .values()
                .map(|replica| replica.status(self.config.tick))
                .collect(),
        }
    }
}

impl Io {
    /// Does what can be done now: handles the writer's completions already in, sends what
    /// leaders may send before their own write, and hands the writer the next round of every
    /// group's Ready if none is being written. Inline (turmoil, unit tests), the writer does each
    /// round at once, so this persists, sends, applies and answers everything ready.
    fn process_ready(
        &mut self,
        replicas: &mut BTreeMap<GroupId, Replica>,
    ) -> Result<(), storage::StorageError> {
        loop {
            let mut disk_full = false;
            while let Some(completion) = self.writer.try_completion() {
                disk_full |= self.complete(replicas, Some(completion))? == Written::DiskFull;
            }
            for (group, replica) in replicas.iter_mut() {
                for message in replica.take_messages_to_send_now() {
                    self.peers.send(*group, message);
                }
            }
            // After a full disk, the next round waits for the next input or tick.
            if self.writing.is_some() || disk_full {
                break;
            }
            let readies: Vec<(GroupId, Ready)> = replicas
                .iter_mut()
                .filter(|(_, replica)| replica.has_ready())
                .map(|(group, replica)| (*group, replica.ready()))
                .collect();
            if readies.is_empty() {
                break;
            }
            let nothing_to_write = readies.iter().all(|(_, ready)| {
                ready.hard_state.is_none() && ready.entries.is_empty() && ready.snapshot.is_none()
            });
            if nothing_to_write {
                // Messages and applies only (a follower's heartbeat answers, say): nothing to
                // wait for, so no trip through the writer and back.
                self.writing = Some(readies);
                self.round_written(replicas, Vec::new(), Outcome::Done, 0)?;
                continue;
            }
            self.submit_round(readies);
        }
        replicas
            .values_mut()
            .for_each(Replica::notice_leadership_change);
        Ok(())
    }

    /// Hands the writer one round: each group's hard state, entries and received snapshot,
    /// lent from its Ready until the completion.
    fn submit_round(&mut self, mut readies: Vec<(GroupId, Ready)>) {
        debug_assert!(self.writing.is_none(), "one round in flight at a time");
        let appends = readies
            .iter_mut()
            .map(|(group, ready)| GroupAppend {
                group: *group,
                hard_state: ready.hard_state,
                entries: std::mem::take(&mut ready.entries),
                received_snapshot: ready.snapshot.as_mut().map(|snapshot| {
                    let point = SnapshotPoint {
                        last_index: snapshot.meta.last_index,
                        last_term: snapshot.meta.last_term,
                    };
                    (point, std::mem::take(&mut snapshot.data))
                }),
            })
            .collect();
        self.writing = Some(readies);
        self.writer.submit(Job::Append(appends));
    }

    /// Acts on one of the writer's completions (`None`: the writer thread is gone).
    fn complete(
        &mut self,
        replicas: &mut BTreeMap<GroupId, Replica>,
        completion: Option<Completion>,
    ) -> Result<Written, storage::StorageError> {
        let Some(Completion {
            job,
            outcome,
            pinning_groups,
            log_bytes,
            groups_synced,
        }) = completion
        else {
            return Err(writer_gone(&self.data_dir));
        };
        self.log_bytes = log_bytes;
        match job {
            Job::Append(appends) => {
                return self.round_written(replicas, appends, outcome, groups_synced);
            }
            Job::SaveSnapshot {
                group,
                point,
                state,
            } => {
                self.snapshotting.remove(&group);
                let replica = replicas.get_mut(&group);
                match (outcome, replica, state) {
                    (Outcome::Done, Some(replica), SnapshotState::Encoded(data)) => {
                        replica.snapshot_saved(point, data)
                    }
                    // Compaction can wait for space; the log stays whole meanwhile.
                    (Outcome::DiskFull(error), Some(replica), _) => {
                        tracing::warn!(%error, group, "disk full: snapshot postponed");
                        replica.snapshot_postponed(point);
                    }
                    (Outcome::Failed(error), _, _) => return Err(error),
                    _ => debug_assert!(false, "a saved snapshot of a hosted group is encoded"),
                }
            }
            Job::FinishRepair { group } => match outcome {
                Outcome::Done => tracing::info!(
                    group,
                    "repair complete: the log is whole again; voting resumes"
                ),
                // The marker stays; the next round tries again.
                Outcome::DiskFull(_) => {
                    self.repairing.insert(group);
                }
                Outcome::Failed(error) => return Err(error),
            },
            Job::Sync => {
                self.syncing = false;
                if let Outcome::DiskFull(error) | Outcome::Failed(error) = outcome {
                    return Err(error);
                }
            }
            Job::FindPinningGroups => {
                self.finding_pinning_groups = false;
                for group in pinning_groups {
                    if let Some(replica) = replicas.get_mut(&group) {
                        tracing::debug!(
                            group,
                            "its entries pin the shared log: snapshot requested"
                        );
                        replica.request_snapshot();
                    }
                }
            }
        }
        Ok(Written::Done)
    }

    /// A round came back from the writer: on success, in Raft's order, the messages that waited
    /// for it leave, then each replica applies and answers; on a full disk, each replica forgets
    /// its part of the round.
    fn round_written(
        &mut self,
        replicas: &mut BTreeMap<GroupId, Replica>,
        appends: Vec<GroupAppend>,
        outcome: Outcome,
        groups_synced: usize,
    ) -> Result<Written, storage::StorageError> {
        let Some(mut readies) = self.writing.take() else {
            debug_assert!(false, "a round completed that was not in flight");
            return Ok(Written::Done);
        };
        // Take back what was lent to the writer.
        for ((_, ready), append) in readies.iter_mut().zip(appends) {
            ready.entries = append.entries;
            if let (Some(snapshot), Some((_, data))) =
                (&mut ready.snapshot, append.received_snapshot)
            {
                snapshot.data = data;
            }
        }
        match outcome {
            Outcome::Done => {}
            Outcome::Failed(error) => return Err(error),
            Outcome::DiskFull(error) => {
                // The WAL put itself back as it was: nothing of this round is on disk. Forget
                // it, tell its writers, and try the disk again on the next input or tick.
                tracing::warn!(%error, "disk full: refusing writes, serving reads");
                for (group, ready) in readies {
                    if let Some(replica) = replicas.get_mut(&group) {
                        replica.abandon_ready(ready, disk_full_response);
                    }
                }
                self.disk_full_until = Some(tokio::time::Instant::now() + DISK_FULL_BACKOFF);
                return Ok(Written::DiskFull);
            }
        }
        if groups_synced > 0 {
            self.writes_per_fsync.record(groups_synced);
            if self.disk_full_until.take().is_some() {
                tracing::info!("the disk accepts writes again");
            }
        }
        for (group, mut ready) in readies {
            let Some(replica) = replicas.get_mut(&group) else {
                debug_assert!(false, "a Ready comes from a hosted replica");
                continue;
            };
            if let Some(snapshot) = &ready.snapshot {
                replica.snapshot_installed(snapshot.meta.last_index);
            }
            replica.entries_durable(&ready.entries);
            for message in std::mem::take(&mut ready.messages) {
                self.peers.send(group, message);
            }
            replica.apply_ready(ready)?;
            self.maybe_snapshot(replica);
            if self.repairing.contains(&group) && !replica.is_repairing() {
                // Everything up to the old commit index is durable here again.
                self.repairing.remove(&group);
                self.writer.submit(Job::FinishRepair { group });
            }
        }
        Ok(Written::Done)
    }

    /// Hands the writer the snapshot a replica cut, if one is due and none of its group is being
    /// saved: the writer encodes and saves it off this loop; Raft compacts its log to it once
    /// saved.
    fn maybe_snapshot(&mut self, replica: &mut Replica) {
        if self.snapshotting.contains(&replica.group()) {
            return;
        }
        let Some((point, machine)) = replica.snapshot_due() else {
            return;
        };
        self.snapshotting.insert(replica.group());
        self.writer.submit(Job::SaveSnapshot {
            group: replica.group(),
            point,
            state: SnapshotState::Cut(Box::new(machine)),
        });
    }

    /// Asks the writer to sync the log (under `SyncPolicy::Interval`), unless it already is.
    fn submit_sync(&mut self) {
        if !self.syncing {
            self.syncing = true;
            self.writer.submit(Job::Sync);
        }
    }
}

/// Whether a completion found the disk full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    Done,
    DiskFull,
}

/// The writer thread ended (it only does when it panics): nothing more can be made durable.
fn writer_gone(data_dir: &std::path::Path) -> storage::StorageError {
    storage::StorageError::Io {
        action: "hand a write to the log writer thread of",
        path: data_dir.to_path_buf(),
        source: std::io::Error::other("the log writer thread stopped"),
    }
}

/// How many groups' writes shared each write and fsync of the node's one log: what sharing
/// the log buys (reported in `status`).
#[derive(Debug, Default, Clone, Copy)]
struct WritesPerFsync {
    batches: u64,
    group_writes: u64,
}

impl WritesPerFsync {
    fn record(&mut self, groups: usize) {
        self.batches += 1;
        self.group_writes += groups as u64;
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

fn disk_full_response() -> Response {
    Response::Error {
        kind: ErrorKind::DiskFull,
        message: "no space left on the node's disk: the write was not applied; reads still work"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use consensus::{MessageBody, NodeId, Role, Snapshot, SnapshotMeta};
    use storage::kv::StateMachine;
    use storage::SharedFs;

    use ringleader_protocol::{WriteAck, ONLY_GROUP};

    use super::*;
    use crate::log_writer::WriterMode;
    use crate::replica::Reply;

    /// The node's log (its writer runs inline in these tests).
    fn log_of(node: &Host) -> &SharedLog {
        node.io.writer.inline_log().expect("an inline writer")
    }

    impl Host {
        /// The replica of group 0.
        fn group0(&mut self) -> &mut Replica {
            self.replicas.get_mut(&ONLY_GROUP).expect("group 0")
        }
    }

    fn follower(dir: &std::path::Path) -> Host {
        let peers: BTreeMap<NodeId, String> = (1..=3)
            .map(|id| (id, format!("127.0.0.1:{}", 1 + id)))
            .collect();
        let mut config = NodeConfig::new(2, peers, dir.to_path_buf(), storage::StdFs::shared());
        config.log_writer = WriterMode::Inline;
        Host::open(config, PeerSenders::default()).expect("open")
    }

    fn install_snapshot(last_index: u64, data: Vec<u8>) -> NodeInput {
        NodeInput::Peer {
            group: ONLY_GROUP,
            message: Message {
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
            },
        }
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
            assert_eq!(node.group0().snapshots_installed, 0);
            assert_eq!(node.group0().machine.applied_index(), 0);
            assert_eq!(
                log_of(&node).snapshot_point(ONLY_GROUP).last_index,
                0,
                "nothing saved"
            );
        }
        // A sound one is installed, and the node stays a follower of the sender.
        node.handle(install_snapshot(7, state_at(7)));
        node.process_ready().expect("install");
        assert_eq!(node.group0().snapshots_installed, 1);
        assert_eq!(node.group0().machine.applied_index(), 7);
        assert_eq!(log_of(&node).snapshot_point(ONLY_GROUP).last_index, 7);
        assert_eq!(node.group0().raft.leader(), Some(1));
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
    ) -> Host {
        let peers: BTreeMap<NodeId, String> = (1..=voters)
            .map(|id| (id, format!("127.0.0.1:{}", 7000 + id)))
            .collect();
        let mut config = NodeConfig::new(1, peers, dir.to_path_buf(), fs);
        config.log_writer = WriterMode::Inline;
        adjust(&mut config);
        Host::open(config, PeerSenders::default()).expect("open")
    }

    /// A single node that has elected itself.
    fn single_leader(dir: &std::path::Path, fs: SharedFs) -> Host {
        let mut node = node_1(dir, 1, fs, |_| {});
        node.group0().raft.campaign();
        node.process_ready().expect("persist the election");
        assert_eq!(node.group0().raft.role(), Role::Leader);
        node
    }

    fn from_peer(from: NodeId, term: u64, body: MessageBody) -> NodeInput {
        NodeInput::Peer {
            group: ONLY_GROUP,
            message: Message {
                from,
                to: 1,
                term,
                body,
            },
        }
    }

    /// Node 1 of three, elected with node 2's vote, its no-op committed by node 2: a leader
    /// that can serve reads but commits nothing more without an answer from a peer (their
    /// messages go nowhere: `PeerSenders::default()`).
    fn leader_of_three(dir: &std::path::Path) -> Host {
        let mut node = node_1(dir, 3, StdFs::shared(), |_| {});
        node.group0().raft.campaign();
        node.process_ready().expect("persist");
        if node.group0().raft.role() == Role::PreCandidate {
            let term = node.group0().raft.term() + 1;
            node.handle(from_peer(
                2,
                term,
                MessageBody::PreVoteResponse { granted: true },
            ));
            node.process_ready().expect("persist");
        }
        assert_eq!(node.group0().raft.role(), Role::Candidate);
        let term = node.group0().raft.term();
        node.handle(from_peer(
            2,
            term,
            MessageBody::RequestVoteResponse { granted: true },
        ));
        node.process_ready().expect("persist");
        assert_eq!(node.group0().raft.role(), Role::Leader);
        let match_index = node.group0().raft.status().last_index;
        node.handle(from_peer(
            2,
            term,
            MessageBody::AppendEntriesResponse {
                result: consensus::AppendResult::Success { match_index },
                applied_index: 0,
            },
        ));
        node.process_ready().expect("persist");
        assert_eq!(
            node.group0().raft.status().commit_index,
            match_index,
            "no-op committed"
        );
        node
    }

    fn request(node: &mut Host, request: Request) -> oneshot::Receiver<Reply> {
        let (reply, answer) = oneshot::channel();
        assert!(node
            .handle(NodeInput::Client {
                group: ONLY_GROUP,
                request,
                reply,
                held: HeldBytes::none(),
            })
            .is_none());
        answer
    }

    fn put(node: &mut Host, key: &str, value: &str) -> oneshot::Receiver<Reply> {
        request(
            node,
            Request::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                session: None,
                ack: WriteAck::Majority,
            },
        )
    }

    fn get(node: &mut Host, key: &str) -> oneshot::Receiver<Reply> {
        request(
            node,
            Request::Get {
                key: key.as_bytes().to_vec(),
                consistency: ReadConsistency::Linearizable,
            },
        )
    }

    /// The answer already sent on `answer`; panics if there is none yet.
    fn answered(answer: &mut oneshot::Receiver<Reply>) -> Response {
        answer.try_recv().expect("answered").response
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
    fn a_write_costs_one_fsync_and_the_commit_index_rides_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fs, disk) = counting_fs();
        let before_election = disk.file_syncs();
        let mut node = single_leader(dir.path(), fs);
        assert!(
            disk.file_syncs() > before_election,
            "the new term and the vote were synced before anything depended on them"
        );
        for i in 0..3 {
            let before = disk.file_syncs();
            let mut answer = put(&mut node, &format!("k{i}"), "v");
            node.process_ready().expect("persist");
            assert!(matches!(answered(&mut answer), Response::Written { .. }));
            assert_eq!(
                disk.file_syncs() - before,
                1,
                "the entry's fsync only: its commit index alone is written unsynced"
            );
        }
        // Written all the same (a power loss could take it until the next fsync; a process
        // exit does not): a restart finds it.
        let commit = node.group0().raft.status().commit_index;
        drop(node);
        let (fs, _disk) = counting_fs();
        let restarted = node_1(dir.path(), 1, fs, |_| {});
        assert_eq!(log_of(&restarted).hard_state(ONLY_GROUP).commit, commit);
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
        assert_eq!(node.group0().machine.len(), 101);
    }

    /// A single node hosting `shards` single-replica groups, each elected.
    fn sharded_single_leader(dir: &std::path::Path, fs: SharedFs, shards: u32) -> Host {
        let peers: BTreeMap<NodeId, String> = BTreeMap::from([(1, "127.0.0.1:7001".into())]);
        let mut config = NodeConfig::new(1, peers, dir.to_path_buf(), fs).with_shards(shards, 1);
        config.log_writer = WriterMode::Inline;
        let mut node = Host::open(config, PeerSenders::default()).expect("open");
        node.replicas.values_mut().for_each(Replica::campaign);
        node.process_ready().expect("persist the elections");
        assert!(node.replicas.values().all(Replica::is_leader));
        node
    }

    /// A key of `group` on `node`'s ring.
    fn key_of(node: &Host, group: GroupId) -> String {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|key| node.ring.shard_for_key(key.as_bytes()) == group)
            .expect("some key hashes into every group")
    }

    fn put_in(node: &mut Host, group: GroupId, key: &str) -> oneshot::Receiver<Reply> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            session: None,
            ack: WriteAck::Majority,
        };
        node.handle(NodeInput::Client {
            group,
            request,
            reply,
            held: HeldBytes::none(),
        });
        answer
    }

    #[test]
    fn the_writes_of_every_group_share_one_fsync_of_the_one_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (fs, disk) = counting_fs();
        let mut node = sharded_single_leader(dir.path(), fs.clone(), 4);
        assert_eq!(node.replicas.len(), 4);
        // What one group's write costs on its own.
        let before = disk.file_syncs();
        let batches_before = node.io.writes_per_fsync.batches;
        let key = key_of(&node, 0);
        let mut alone = put_in(&mut node, 0, &key);
        node.process_ready().expect("persist");
        assert!(matches!(answered(&mut alone), Response::Written { .. }));
        let syncs_for_one = disk.file_syncs() - before;
        let batches_for_one = node.io.writes_per_fsync.batches - batches_before;
        assert!(syncs_for_one >= 1, "an acknowledged write was fsynced");
        // One write in each of the four groups, queued together: the fsyncs of one.
        let before = disk.file_syncs();
        let batches_before = node.io.writes_per_fsync.batches;
        let mut answers: Vec<_> = (0..4)
            .map(|group| {
                let key = key_of(&node, group);
                put_in(&mut node, group, &key)
            })
            .collect();
        node.process_ready().expect("persist");
        for answer in &mut answers {
            assert!(matches!(answered(answer), Response::Written { .. }));
        }
        assert_eq!(disk.file_syncs() - before, syncs_for_one);
        assert_eq!(
            node.io.writes_per_fsync.batches - batches_before,
            batches_for_one,
            "four groups' writes cost the log batches of one"
        );
        assert_eq!(
            node.status().log_group_writes,
            node.io.writes_per_fsync.group_writes
        );
        // Reopened, every group has its own write back, from the one log.
        drop(node);
        let node = sharded_single_leader(dir.path(), fs, 4);
        for (group, replica) in &node.replicas {
            let key = key_of(&node, *group);
            assert!(
                replica.machine.get(key.as_bytes()).is_some(),
                "group {group}"
            );
            assert_eq!(replica.machine.len(), 1, "group {group}: its key only");
        }
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
        let term = node.group0().raft.term() + 1;
        node.handle(from_peer(
            3,
            term,
            MessageBody::Heartbeat {
                commit: 0,
                sent_tick: 0,
                read_ctx: None,
                freshness: None,
            },
        ));
        node.process_ready().expect("persist");
        assert_eq!(node.group0().raft.role(), Role::Follower);
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
        assert_eq!(node.group0().pending_requests(), 0);
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
        node.group0().raft.campaign();
        node.process_ready().expect("persist");
        for i in 0..25 {
            let mut answer = put(&mut node, &format!("k{i}"), &format!("v{i}"));
            node.process_ready().expect("persist");
            assert!(matches!(answered(&mut answer), Response::Written { .. }));
        }
        let saved = log_of(&node).snapshot_point(ONLY_GROUP).last_index;
        // 26 entries (a no-op, then the puts): the last snapshot is less than one interval
        // (at most 10, staggered down to 8) behind.
        assert!(saved > 26 - 10, "snapshots taken: the last at {saved}");
        assert_eq!(node.group0().last_snapshot_index, saved);
        drop(node);

        // Reopened: the state up to the snapshot comes from it (the log before it is gone)...
        let mut node = node_1(dir.path(), 1, StdFs::shared(), small_snapshots);
        assert_eq!(node.group0().machine.applied_index(), saved);
        assert_eq!(
            node.group0().machine.len() as u64,
            saved - 1,
            "every key the snapshot covers restored from it"
        );
        // ...and the rest from the log, once the node leads again.
        node.group0().raft.campaign();
        node.process_ready().expect("persist");
        assert_eq!(node.group0().raft.role(), Role::Leader);
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
        assert_eq!(node.group0().machine.len(), 25);
    }

    #[test]
    fn large_values_bring_a_snapshot_before_the_entry_count_and_the_log_in_memory_stays_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        let by_bytes = |config: &mut NodeConfig| {
            config.snapshot_every_entries = 1_000_000;
            config.snapshot_every_bytes = 64 * 1024;
            config.log_tail_entries = 1_000;
            config.log_tail_bytes = 32 * 1024;
        };
        let mut node = node_1(dir.path(), 1, StdFs::shared(), by_bytes);
        node.group0().raft.campaign();
        node.process_ready().expect("persist");
        let value = "v".repeat(10 * 1024);
        for i in 0..40 {
            let mut answer = put(&mut node, &format!("k{i}"), &value);
            node.process_ready().expect("persist");
            assert!(matches!(answered(&mut answer), Response::Written { .. }));
        }
        // 400 KiB applied: snapshots every 64 KiB, though the entry count is far off.
        let saved = node.group0().last_snapshot_index;
        assert!(saved > 41 - 8, "the last snapshot is at {saved}");
        let held: u64 = node
            .group0()
            .raft
            .log()
            .entries()
            .iter()
            .map(Entry::command_bytes)
            .sum();
        assert!(
            held <= 64 * 1024 + 32 * 1024 + 11 * 1024,
            "Raft holds {held} bytes of commands in memory"
        );
    }

    // --- Consistency levels and receipts. ---

    use consensus::{Entry, EntryPayload};
    use ringleader_protocol::{Receipt, ServedAt};
    use storage::kv::{Command, Proposal};

    fn put_entry(index: u64, term: u64, key: &str, value: &str) -> Entry {
        let proposal = Proposal {
            session: None,
            command: Command::Put {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
            },
        };
        Entry {
            index,
            term,
            payload: EntryPayload::Command(storage::codec::encode(&proposal, "test").unwrap()),
        }
    }

    /// Node 1 of three, following node 2 (term 1), which sent it `entries` and `commit`.
    fn follower_of_2(dir: &std::path::Path, entries: Vec<Entry>, commit: u64) -> Host {
        let mut node = node_1(dir, 3, StdFs::shared(), |_| {});
        node.handle(from_peer(
            2,
            1,
            MessageBody::AppendEntries {
                prev_index: 0,
                prev_term: 0,
                entries,
                commit,
            },
        ));
        node.process_ready().expect("persist");
        assert_eq!(node.group0().raft.leader(), Some(2));
        node
    }

    fn read(node: &mut Host, key: &str, consistency: ReadConsistency) -> oneshot::Receiver<Reply> {
        request(
            node,
            Request::Get {
                key: key.as_bytes().to_vec(),
                consistency,
            },
        )
    }

    fn receipt_of(answer: &mut oneshot::Receiver<Reply>) -> (Response, Receipt) {
        let reply = answer.try_recv().expect("answered");
        let receipt = reply.receipt.expect("a receipt");
        (reply.response, receipt)
    }

    fn value_of(response: &Response) -> Option<Vec<u8>> {
        match response {
            Response::Value(found) => found.as_ref().map(|v| v.value.clone()),
            other => panic!("expected a value, got {other:?}"),
        }
    }

    #[test]
    fn a_follower_answers_stale_reads_from_its_own_state_and_says_how_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![put_entry(1, 1, "k", "v1")];
        let mut node = follower_of_2(dir.path(), entries, 1);
        // No heartbeat has said how fresh the leader is: the state is served, unbounded...
        let mut stale = read(
            &mut node,
            "k",
            ReadConsistency::Stale {
                max_staleness_ms: None,
            },
        );
        let (response, receipt) = receipt_of(&mut stale);
        assert_eq!(value_of(&response), Some(b"v1".to_vec()));
        assert_eq!(receipt.served_at, ServedAt::Stale);
        assert_eq!((receipt.node, receipt.term, receipt.index), (1, 1, 1));
        assert_eq!(receipt.staleness_bound_ms, None);
        // ...and refused to a client that bounds staleness.
        let mut bounded = read(
            &mut node,
            "k",
            ReadConsistency::Stale {
                max_staleness_ms: Some(1000),
            },
        );
        assert_error(answered(&mut bounded), ErrorKind::Unavailable);
        // A linearizable read is the leader's.
        let mut linearizable = read(&mut node, "k", ReadConsistency::Linearizable);
        assert!(matches!(
            answered(&mut linearizable),
            Response::NotLeader {
                leader: Some(2),
                ..
            }
        ));
        // The leader's heartbeat echoes this node's tick 0 and vouches for commit 1.
        node.handle(from_peer(
            2,
            1,
            MessageBody::Heartbeat {
                commit: 1,
                sent_tick: 3,
                read_ctx: None,
                freshness: Some(consensus::Freshness {
                    echo_boot: 0,
                    echo_tick: 0,
                    leader_commit: 1,
                    quorum_age_ticks: 0,
                }),
            },
        ));
        node.process_ready().expect("answer");
        let mut fresh = read(
            &mut node,
            "k",
            ReadConsistency::Stale {
                max_staleness_ms: Some(1000),
            },
        );
        assert_eq!(receipt_of(&mut fresh).1.staleness_bound_ms, Some(0));
        // Five ticks (50 ms each) later, widened by the drift bound (10/8): 7 ticks, 350 ms.
        for _ in 0..5 {
            node.tick();
        }
        let mut later = read(
            &mut node,
            "k",
            ReadConsistency::Stale {
                max_staleness_ms: Some(1000),
            },
        );
        assert_eq!(receipt_of(&mut later).1.staleness_bound_ms, Some(350));
        let mut too_old = read(
            &mut node,
            "k",
            ReadConsistency::Stale {
                max_staleness_ms: Some(100),
            },
        );
        assert_error(answered(&mut too_old), ErrorKind::Unavailable);
    }

    #[test]
    fn a_session_read_waits_until_the_replica_has_applied_the_clients_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let entries = vec![put_entry(1, 1, "k", "v1")];
        let mut node = follower_of_2(dir.path(), entries, 1);
        // Applied 1 >= 1: served at once.
        let mut now = read(&mut node, "k", ReadConsistency::Session { min_index: 1 });
        let (response, receipt) = receipt_of(&mut now);
        assert_eq!(value_of(&response), Some(b"v1".to_vec()));
        assert_eq!((receipt.served_at, receipt.index), (ServedAt::Session, 1));
        // The client saw index 2 elsewhere: this replica waits for it...
        let mut later = read(&mut node, "k", ReadConsistency::Session { min_index: 2 });
        node.process_ready().expect("nothing to do");
        assert!(later.try_recv().is_err(), "waits for index 2");
        node.handle(from_peer(
            2,
            1,
            MessageBody::AppendEntries {
                prev_index: 1,
                prev_term: 1,
                entries: vec![put_entry(2, 1, "k", "v2")],
                commit: 2,
            },
        ));
        node.process_ready().expect("persist and apply");
        // ...and answers once applied: never older than what the client saw.
        let (response, receipt) = receipt_of(&mut later);
        assert_eq!(value_of(&response), Some(b"v2".to_vec()));
        assert_eq!(receipt.index, 2);
        // A position this replica does not reach in time: the client is sent to the leader.
        let mut never = read(&mut node, "k", ReadConsistency::Session { min_index: 9 });
        for _ in 0..node.config.election_timeout_ticks {
            node.handle(from_peer(
                2,
                1,
                MessageBody::Heartbeat {
                    commit: 2,
                    sent_tick: 0,
                    read_ctx: None,
                    freshness: None,
                },
            ));
            node.tick();
        }
        assert!(matches!(
            answered(&mut never),
            Response::NotLeader {
                leader: Some(2),
                ..
            }
        ));
    }

    fn put_acked(key: &str, ack: WriteAck) -> Request {
        Request::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            session: None,
            ack,
        }
    }

    #[test]
    fn a_leader_ack_answers_once_durable_on_the_leader_before_any_follower_has_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_of_three(dir.path());
        let mut majority = request(&mut node, put_acked("a", WriteAck::Majority));
        let mut leader = request(&mut node, put_acked("b", WriteAck::Leader));
        node.process_ready().expect("persist");
        // Nothing committed (no follower answered), yet the leader-acked put is answered.
        assert!(majority.try_recv().is_err(), "a majority write waits");
        let (response, receipt) = receipt_of(&mut leader);
        let Response::Written { version } = response else {
            panic!("expected Written, got {response:?}");
        };
        assert_eq!(receipt.served_at, ServedAt::Leader);
        assert_eq!(receipt.index, version);
        assert!(
            node.group0().raft.status().commit_index < version,
            "not committed"
        );
        // Deletes and compare-and-sets have no outcome before they apply: refused.
        let mut delete = request(
            &mut node,
            Request::Delete {
                key: b"a".to_vec(),
                session: None,
                ack: WriteAck::Leader,
            },
        );
        assert_error(answered(&mut delete), ErrorKind::Invalid);
    }

    #[test]
    fn reads_and_majority_writes_carry_receipts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = single_leader(dir.path(), StdFs::shared());
        let mut put = request(&mut node, put_acked("k", WriteAck::Majority));
        node.process_ready().expect("persist");
        let (response, receipt) = receipt_of(&mut put);
        let Response::Written { version } = response else {
            panic!("expected Written, got {response:?}");
        };
        assert_eq!(
            (receipt.served_at, receipt.index),
            (ServedAt::Majority, version)
        );
        let mut get = read(&mut node, "k", ReadConsistency::Linearizable);
        node.process_ready().expect("serve");
        let (_, receipt) = receipt_of(&mut get);
        assert_eq!(receipt.served_at, ServedAt::Linearizable);
        assert!(receipt.index >= version);
    }

    /// Node `from` tells the leader (node 1) it holds and has applied everything up to `index`.
    fn caught_up(node: &mut Host, from: NodeId, index: u64) {
        let term = node.group0().raft.term();
        node.handle(from_peer(
            from,
            term,
            MessageBody::AppendEntriesResponse {
                result: consensus::AppendResult::Success { match_index: index },
                applied_index: index,
            },
        ));
        node.process_ready().expect("persist");
    }

    #[test]
    fn a_leader_hands_leadership_to_its_preferred_replica_once_it_has_the_whole_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_of_three(dir.path());
        node.group0().set_preferred_leader(1);
        assert!(
            !node.group0().hand_leadership_to_preferred(),
            "it is the preferred one"
        );
        node.group0().set_preferred_leader(3);
        assert!(
            !node.group0().hand_leadership_to_preferred(),
            "node 3 has not acknowledged the log yet"
        );
        let last = node.group0().raft.status().last_index;
        caught_up(&mut node, 3, last);
        assert!(node.group0().hand_leadership_to_preferred());
        // While the hand-over runs, the leader takes no new writes (they would delay it).
        let mut answer = put(&mut node, "k", "v");
        node.process_ready().expect("persist");
        assert!(
            matches!(
                answered(&mut answer),
                Response::Error { .. } | Response::NotLeader { .. }
            ),
            "writes wait for the new leader"
        );
    }

    #[test]
    fn an_all_ack_answers_once_every_replica_has_applied_the_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_of_three(dir.path());
        let mut all = request(&mut node, put_acked("k", WriteAck::All));
        node.process_ready().expect("persist");
        let index = node.group0().raft.status().last_index;
        // Node 2 makes a quorum: committed and applied on the leader, but node 3 lacks it.
        caught_up(&mut node, 2, index);
        assert!(node.group0().machine.applied_index() >= index, "committed");
        assert!(all.try_recv().is_err(), "waits for node 3");
        caught_up(&mut node, 3, index);
        let (response, receipt) = receipt_of(&mut all);
        assert!(matches!(response, Response::Written { version } if version == index));
        assert_eq!((receipt.served_at, receipt.index), (ServedAt::All, index));
    }

    #[test]
    fn an_all_ack_times_out_with_a_clear_error_while_a_replica_is_down_and_the_write_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = leader_of_three(dir.path());
        let mut all = request(&mut node, put_acked("k", WriteAck::All));
        node.process_ready().expect("persist");
        let index = node.group0().raft.status().last_index;
        caught_up(&mut node, 2, index);
        // Node 3 is down: two election timeouts pass, node 2 keeping the leader in office.
        for _ in 0..2 * node.config.election_timeout_ticks {
            node.tick();
            caught_up(&mut node, 2, index);
        }
        assert!(node.group0().is_leader());
        let response = answered(&mut all);
        assert_error(response.clone(), ErrorKind::AckTimeout);
        let Response::Error { message, .. } = response else {
            unreachable!()
        };
        assert!(
            message.contains("will not be lost") && message.contains('3'),
            "{message}"
        );
        // The write took effect all the same.
        let mut read = get(&mut node, "k");
        node.process_ready().expect("serve");
        node.tick();
        caught_up(&mut node, 2, index);
        let _ = read.try_recv();
        assert!(
            node.group0().machine.get(b"k").is_some(),
            "committed and applied"
        );
    }
}
