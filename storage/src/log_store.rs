//! The durable replicated log: Raft's entries and hard state kept in the [`Wal`], plus the newest
//! snapshot in the [`SnapshotStore`].
//!
//! The WAL is append-only, so the log is recorded as a sequence of [`LogRecord`]s and rebuilt by
//! replaying them (as etcd's WAL does): an [`LogRecord::Entry`] at index `i` replaces any entry
//! already at `i` and every later one (a new leader overwrote a conflicting suffix), and the last
//! [`LogRecord::HardState`] wins. Entries at or below the snapshot's index are dropped on replay.
//! One [`LogStore::append`] is one WAL batch: one write and one fsync for the hard state and all
//! the entries of a Raft `Ready`, which is where group commit comes from.
//!
//! This crate knows nothing of the consensus crate: an entry's payload is opaque bytes, and the
//! node maps between the two.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Result, StorageError};
use crate::fs::SharedFs;
use crate::snapshot::{LoadedSnapshot, SnapshotPoint, SnapshotStore};
use crate::wal::{Lsn, Wal, WalOptions};

/// A log entry as stored: the payload is opaque to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    pub payload: Vec<u8>,
}

/// Raft's persistent state besides the log (Raft §5, Figure 2): must be durable before any
/// message that depends on it is sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<u64>,
    pub commit: u64,
}

/// One record of the WAL, as the log store writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogRecord {
    Entry(StoredEntry),
    HardState(HardState),
    /// Every entry after `index` is discarded (a snapshot from the leader replaced the log).
    TruncateAfter {
        index: u64,
    },
}

/// What [`LogStore::open`] recovered.
pub struct RecoveredLog {
    pub hard_state: HardState,
    pub snapshot: Option<LoadedSnapshot>,
    /// Contiguous entries after the snapshot (or from index 1).
    pub entries: Vec<StoredEntry>,
    /// Bytes truncated from a torn tail, if any.
    pub torn_tail_bytes: Option<u64>,
}

/// The durable log of one replica.
pub struct LogStore {
    wal: Wal,
    snapshots: SnapshotStore,
    hard_state: HardState,
    snapshot_point: SnapshotPoint,
    /// The WAL position of each live entry's record, to know which segments a snapshot covers.
    entry_lsns: BTreeMap<u64, Lsn>,
    last_index: u64,
}

impl LogStore {
    /// Opens the log kept under `dir` (`dir/wal`, `dir/snap`) and replays it.
    pub fn open(fs: SharedFs, dir: &Path, options: WalOptions) -> Result<(LogStore, RecoveredLog)> {
        let snapshots = SnapshotStore::open(fs.clone(), &dir.join("snap"))?;
        let snapshot = snapshots.load_latest()?;
        let snapshot_point = snapshot.as_ref().map(|s| s.point).unwrap_or_default();
        let (wal, recovered) = Wal::open(fs, &dir.join("wal"), options)?;
        let mut hard_state = HardState::default();
        // Replay by index: an entry replaces the one at its index and every later one. The oldest
        // segment kept after a purge may begin with dead entries (overwritten later by a new
        // leader) whose indexes lie past the snapshot; they are replaced in turn, so contiguity
        // is checked only once replay is done.
        let mut by_index: BTreeMap<u64, StoredEntry> = BTreeMap::new();
        let mut entry_lsns = BTreeMap::new();
        for (lsn, bytes) in recovered.records {
            match codec::decode::<LogRecord>(&bytes, "log record")? {
                LogRecord::HardState(state) => hard_state = state,
                LogRecord::TruncateAfter { index } => {
                    by_index.split_off(&(index + 1));
                    entry_lsns.split_off(&(index + 1));
                }
                LogRecord::Entry(entry) => {
                    if entry.index <= snapshot_point.last_index {
                        continue;
                    }
                    by_index.split_off(&entry.index);
                    entry_lsns.split_off(&entry.index);
                    entry_lsns.insert(entry.index, lsn);
                    by_index.insert(entry.index, entry);
                }
            }
        }
        let entries: Vec<StoredEntry> = by_index.into_values().collect();
        for (position, entry) in entries.iter().enumerate() {
            let expected = snapshot_point.last_index + 1 + position as u64;
            if entry.index != expected {
                return Err(StorageError::Corrupt {
                    path: wal.dir().to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "the log is missing entry {expected} (next present: {})",
                        entry.index
                    ),
                });
            }
        }
        let last_index = entries
            .last()
            .map_or(snapshot_point.last_index, |e| e.index);
        let store = LogStore {
            wal,
            snapshots,
            hard_state,
            snapshot_point,
            entry_lsns,
            last_index,
        };
        let recovered_log = RecoveredLog {
            hard_state,
            snapshot,
            entries,
            torn_tail_bytes: recovered.torn_tail.map(|t| t.discarded_bytes),
        };
        Ok((store, recovered_log))
    }

    /// Durably records a new hard state and entries with one write and one fsync. An entry at an
    /// index the log already holds replaces it and every later one.
    pub fn append(&mut self, hard_state: Option<HardState>, entries: &[StoredEntry]) -> Result<()> {
        let mut records = Vec::with_capacity(entries.len() + 1);
        for entry in entries {
            records.push(codec::encode(
                &LogRecord::Entry(entry.clone()),
                "log record",
            )?);
        }
        if let Some(state) = hard_state {
            debug_assert!(state.term >= self.hard_state.term, "terms never decrease");
            records.push(codec::encode(&LogRecord::HardState(state), "log record")?);
        }
        if records.is_empty() {
            return Ok(());
        }
        let lsns = self.wal.append(&records)?;
        for (entry, lsn) in entries.iter().zip(*lsns.start()..) {
            debug_assert!(entry.index <= self.last_index + 1, "entries are contiguous");
            self.entry_lsns.split_off(&entry.index);
            self.entry_lsns.insert(entry.index, lsn);
            self.last_index = entry.index;
        }
        if let Some(state) = hard_state {
            self.hard_state = state;
        }
        Ok(())
    }

    /// Makes appended records durable (for `SyncPolicy::Interval` owners).
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// Saves a snapshot of the state machine at `point`, then deletes the WAL segments it covers.
    /// Used for local compaction (`replaces_log` false: entries after the point stay) and to
    /// install a snapshot received from the leader (`replaces_log` true: every entry after the
    /// point is discarded too, as Raft §7 requires when the log does not match the snapshot).
    pub fn save_snapshot(
        &mut self,
        point: SnapshotPoint,
        data: &[u8],
        replaces_log: bool,
    ) -> Result<()> {
        if point.last_index <= self.snapshot_point.last_index {
            return Ok(());
        }
        self.snapshots.save(point, data)?;
        self.snapshot_point = point;
        if replaces_log || point.last_index >= self.last_index {
            self.entry_lsns.clear();
            self.last_index = point.last_index;
        } else {
            self.entry_lsns = self.entry_lsns.split_off(&(point.last_index + 1));
        }
        // The hard state may live in a segment about to be deleted: write it again first.
        let mut records = vec![codec::encode(
            &LogRecord::HardState(self.hard_state),
            "log record",
        )?];
        if replaces_log {
            records.push(codec::encode(
                &LogRecord::TruncateAfter {
                    index: point.last_index,
                },
                "log record",
            )?);
        }
        self.wal.append(&records)?;
        self.wal.sync()?;
        let oldest_needed = self
            .entry_lsns
            .values()
            .next()
            .copied()
            .unwrap_or(self.wal.next_lsn() - 1);
        self.wal.purge_before(oldest_needed)?;
        Ok(())
    }

    /// The newest snapshot on disk.
    pub fn load_snapshot(&self) -> Result<Option<LoadedSnapshot>> {
        self.snapshots.load_latest()
    }

    /// The last durable hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Where the newest snapshot was taken.
    pub fn snapshot_point(&self) -> SnapshotPoint {
        self.snapshot_point
    }

    /// The index of the last entry in the log (or of the snapshot when the log is empty).
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The WAL underneath, for status and sync policy.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}
