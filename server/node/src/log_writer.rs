//! The log writer: the one owner of a node's shared WAL, which does every write, fsync and
//! snapshot save of the node, in the order the host submits them.
//!
//! Why a writer of its own: an fsync takes from tens of microseconds to many milliseconds, a
//! snapshot save longer still. Done inside the host's event loop, every one of them would hold
//! back that node's heartbeats, its leader's appends to followers and its answers to reads. With
//! the writer on its own thread ([`WriterMode::Thread`], production), the host hands over one
//! round of every group's hard states and entries ([`Job::Append`]) and goes on: it keeps
//! ticking, stepping messages and sending what Raft lets a leader send before its own write
//! (`Raft::take_messages_to_send_now`), while the writer writes the round with one write and one
//! fsync. When the writer reports the round durable, the host sends the messages that waited for
//! it (votes, acknowledgements), applies, and hands over the next round, made of everything that
//! arrived meanwhile: group commit, across groups.
//!
//! Under turmoil the writer runs inline ([`WriterMode::Inline`]): each job is done at once, on
//! the host's task, so the simulation stays deterministic; its simulated disk has no latency to
//! hide anyway. Both modes run the same `run_job`.
//!
//! At most one append round is in flight (the host waits for its completion before building the
//! next), plus at most one snapshot save per group and a few small jobs: the job queue is bounded
//! by that.

use std::collections::VecDeque;

use consensus::{Entry, HardState};
use ringleader_protocol::GroupId;
use storage::kv::StateMachine;
use storage::{GroupWrite, SharedLog, SnapshotPoint, StorageError};
use tokio::sync::mpsc;

use crate::mapping;

/// Where the writer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterMode {
    /// Its own OS thread: the host's loop never waits for the disk (production).
    Thread,
    /// On the host's task, each job done when submitted (turmoil, and unit tests that drive the
    /// host step by step).
    Inline,
}

/// One group's share of an append round.
#[derive(Debug)]
pub struct GroupAppend {
    pub group: GroupId,
    pub hard_state: Option<HardState>,
    /// Moved out of the group's Ready for the write, and handed back with the completion.
    pub entries: Vec<Entry>,
    /// A snapshot received from the leader, which replaces the group's log: saved before the
    /// entries. Handed back with the completion too.
    pub received_snapshot: Option<(SnapshotPoint, Vec<u8>)>,
}

/// What the host asks the writer to do.
#[derive(Debug)]
pub enum Job {
    /// Make a round of every group's changes durable: received snapshots first, then every
    /// hard state and entry with one write and one fsync.
    Append(Vec<GroupAppend>),
    /// Encode and save a snapshot the group's replica cut, and compact the log to it.
    SaveSnapshot {
        group: GroupId,
        point: SnapshotPoint,
        state: SnapshotState,
    },
    /// A repaired group's log is whole again: remove its repair marker.
    FinishRepair { group: GroupId },
    /// Sync the log (under `SyncPolicy::Interval`).
    Sync,
    /// Name the groups whose old entries keep segments of the log alive.
    FindPinningGroups,
}

/// A snapshot's state in a [`Job::SaveSnapshot`]: the state machine as cut (a persistent map,
/// cloned in O(1) on the host's loop), then, in the completion, its encoding (which the replica
/// keeps to send to lagging followers).
#[derive(Debug)]
pub enum SnapshotState {
    Cut(Box<StateMachine>),
    Encoded(Vec<u8>),
}

/// How a job ended.
#[derive(Debug)]
pub enum Outcome {
    Done,
    /// The disk is full and the log put itself back as it was: nothing of the job is on disk;
    /// the node may go on (refusing writes) and try again later.
    DiskFull(StorageError),
    /// The disk failed in a way that leaves nothing trustworthy to write to: the node stops.
    Failed(StorageError),
}

/// What the writer reports back, one per job, in submission order.
#[derive(Debug)]
pub struct Completion {
    pub job: Job,
    pub outcome: Outcome,
    /// Answer to [`Job::FindPinningGroups`] (empty otherwise).
    pub pinning_groups: Vec<GroupId>,
    /// The log's size after the job.
    pub log_bytes: u64,
    /// How many groups an append batch that was fsynced held (0: nothing written, or written
    /// without a sync).
    pub groups_synced: usize,
}

/// The writer, seen from the host.
pub struct LogWriter {
    inner: Inner,
    /// Jobs submitted and not yet completed.
    outstanding: usize,
}

enum Inner {
    Inline {
        log: Box<SharedLog>,
        done: VecDeque<Completion>,
    },
    Thread {
        jobs: Option<std::sync::mpsc::SyncSender<Job>>,
        completions: mpsc::Receiver<Completion>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

impl LogWriter {
    /// Takes ownership of the log. `max_outstanding` bounds the job queue (the host never has
    /// more jobs than that in flight).
    pub fn new(log: SharedLog, mode: WriterMode, max_outstanding: usize) -> std::io::Result<Self> {
        let inner = match mode {
            WriterMode::Inline => Inner::Inline {
                log: Box::new(log),
                done: VecDeque::new(),
            },
            WriterMode::Thread => {
                let (jobs, job_queue) = std::sync::mpsc::sync_channel(max_outstanding);
                let (completed, completions) = mpsc::channel(max_outstanding);
                let thread = std::thread::Builder::new()
                    .name("log-writer".into())
                    .spawn(move || write_until_closed(log, job_queue, completed))?;
                Inner::Thread {
                    jobs: Some(jobs),
                    completions,
                    thread: Some(thread),
                }
            }
        };
        Ok(LogWriter {
            inner,
            outstanding: 0,
        })
    }

    /// Hands `job` to the writer. Inline, it is done before this returns.
    pub fn submit(&mut self, job: Job) {
        self.outstanding += 1;
        match &mut self.inner {
            Inner::Inline { log, done } => done.push_back(run_job(log, job)),
            Inner::Thread { jobs, .. } => {
                let sent = jobs.as_ref().map(|jobs| jobs.send(job));
                // The thread only stops when its queue closes, or panics; either way the
                // completion never comes, and `next_completion` reports it.
                debug_assert!(
                    matches!(sent, Some(Ok(()))),
                    "the log writer thread is gone"
                );
            }
        }
    }

    /// The log, when the writer runs inline (tests look at it between steps).
    pub fn inline_log(&self) -> Option<&SharedLog> {
        match &self.inner {
            Inner::Inline { log, .. } => Some(log),
            Inner::Thread { .. } => None,
        }
    }

    /// Jobs submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// A completion already reported, without waiting.
    pub fn try_completion(&mut self) -> Option<Completion> {
        let completion = match &mut self.inner {
            Inner::Inline { done, .. } => done.pop_front(),
            Inner::Thread { completions, .. } => completions.try_recv().ok(),
        }?;
        self.outstanding -= 1;
        Some(completion)
    }

    /// The next completion. `None` if the writer thread died (a bug: the node must stop).
    /// Waits forever when nothing is outstanding: call it only while `outstanding() > 0`.
    pub async fn next_completion(&mut self) -> Option<Completion> {
        let completion = match &mut self.inner {
            Inner::Inline { done, .. } => match done.pop_front() {
                Some(completion) => Some(completion),
                None => std::future::pending().await,
            },
            Inner::Thread { completions, .. } => completions.recv().await,
        };
        if completion.is_some() {
            self.outstanding -= 1;
        }
        completion
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if let Inner::Thread {
            jobs,
            thread,
            completions,
        } = &mut self.inner
        {
            // Closing both queues stops the thread once it has done the job it is on.
            jobs.take();
            completions.close();
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The writer thread: does each job in turn until the host drops its end of the queue.
fn write_until_closed(
    mut log: SharedLog,
    jobs: std::sync::mpsc::Receiver<Job>,
    completed: mpsc::Sender<Completion>,
) {
    while let Ok(job) = jobs.recv() {
        let completion = run_job(&mut log, job);
        if completed.blocking_send(completion).is_err() {
            return; // the host is gone
        }
    }
}

/// Does one job on the log: the same code inline and on the thread.
fn run_job(log: &mut SharedLog, mut job: Job) -> Completion {
    let mut pinning_groups = Vec::new();
    let mut groups_synced = 0;
    let result = match &mut job {
        Job::Append(groups) => append(log, groups).map(|synced| groups_synced = synced),
        Job::SaveSnapshot {
            group,
            point,
            state,
        } => encode_and_save(log, *group, *point, state),
        Job::FinishRepair { group } => log.finish_repair(*group),
        Job::Sync => log.sync(),
        Job::FindPinningGroups => {
            pinning_groups = log.groups_pinning_the_log();
            Ok(())
        }
    };
    let outcome = match result {
        Ok(()) => Outcome::Done,
        Err(error) if error.is_disk_full() && !log.wal().is_poisoned() => {
            let replaces_a_log = matches!(&job, Job::Append(groups)
                if groups.iter().any(|g| g.received_snapshot.is_some()));
            if replaces_a_log {
                // A received snapshot may already have replaced the log on disk: no going back.
                Outcome::Failed(error)
            } else {
                Outcome::DiskFull(error)
            }
        }
        Err(error) => Outcome::Failed(error),
    };
    Completion {
        job,
        outcome,
        pinning_groups,
        log_bytes: log.wal().size_bytes(),
        groups_synced,
    }
}

/// Encodes a cut snapshot (off the host's loop), then saves it.
fn encode_and_save(
    log: &mut SharedLog,
    group: GroupId,
    point: SnapshotPoint,
    state: &mut SnapshotState,
) -> Result<(), StorageError> {
    if let SnapshotState::Cut(machine) = state {
        *state = SnapshotState::Encoded(machine.to_snapshot()?);
    }
    match state {
        SnapshotState::Encoded(data) => log.save_snapshot(group, point, data, false),
        SnapshotState::Cut(_) => unreachable!("encoded just above"),
    }
}

/// An append round: received snapshots, then one batch (one write, one fsync) of every group's
/// hard state and entries. How many groups the batch held if it was synced (0: nothing to
/// write, or nothing that needed a sync).
fn append(log: &mut SharedLog, groups: &[GroupAppend]) -> Result<usize, StorageError> {
    for group in groups {
        if let Some((point, data)) = &group.received_snapshot {
            log.save_snapshot(group.group, *point, data, true)?;
        }
    }
    let entries: Vec<Vec<_>> = groups
        .iter()
        .map(|group| {
            group
                .entries
                .iter()
                .map(mapping::to_stored_entry_ref)
                .collect()
        })
        .collect();
    let writes: Vec<GroupWrite<'_, _>> = groups
        .iter()
        .zip(&entries)
        .map(|(group, entries)| GroupWrite {
            group: group.group,
            hard_state: group.hard_state.as_ref().map(mapping::to_stored_hard_state),
            entries,
        })
        .filter(|write| write.hard_state.is_some() || !write.entries.is_empty())
        .collect();
    if writes.is_empty() {
        return Ok(0);
    }
    // Only new entries, a received snapshot, or a new term or vote must be on disk before the
    // messages that wait for this round leave; a commit index alone rides the next fsync
    // (Raft's commit index is volatile state: after a crash the leader teaches it again).
    let must_sync = groups.iter().any(|group| {
        let written = log.hard_state(group.group);
        !group.entries.is_empty()
            || group.received_snapshot.is_some()
            || group
                .hard_state
                .is_some_and(|state| (state.term, state.vote) != (written.term, written.vote))
    });
    if must_sync {
        log.append_batch(&writes)?;
        Ok(writes.len())
    } else {
        log.append_batch_without_sync(&writes)?;
        Ok(0)
    }
}
