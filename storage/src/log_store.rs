//! The durable replicated log: Raft's entries and hard state kept in the [`Wal`], plus the newest
//! snapshot in the [`SnapshotStore`].
//!
//! The WAL is append-only, so the log is recorded as a sequence of [`LogRecord`]s and rebuilt by
//! replaying them (as etcd's WAL does): an [`LogRecord::Entry`] at index `i` replaces any entry
//! already at `i` and every later one (a new leader overwrote a conflicting suffix), and the last
//! [`LogRecord::HardState`] wins.
//!
//! Compaction keeps a tail: [`LogStore::save_snapshot`] deletes only the segments wholly before
//! the last [`LogStore::set_compaction_tail_entries`] entries the snapshot covers, and replay
//! returns those still on disk as [`RecoveredLog::tail_entries`], so that Raft can send them to a
//! follower that is only a little behind instead of the whole snapshot.
//! One [`LogStore::append`] (or [`LogStore::append_borrowed`], the node's: payloads encoded
//! straight into their records) is one WAL batch: one write and one fsync for the hard state and
//! all the entries of a Raft `Ready`, which is where group commit comes from.
//!
//! This crate knows nothing of the consensus crate: an entry's payload is opaque bytes, and the
//! node maps between the two.
//!
//! A log store holds one Raft group, group 0 ([`GROUP_ZERO`]): it owns its WAL, tags every record
//! it writes with its group, and refuses to replay a record of another group (a log shared by
//! several groups is [`crate::shared_log::SharedLog`]'s, which replays the same records per group
//! and opens a log store's data directory as its group 0).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Result, StorageError};
use crate::fs::{FileSystem, SharedFs};
use crate::record::{decode_record, encode_record, Decoded, GroupId, RecordFormat, GROUP_ZERO};
use crate::snapshot::{LoadedSnapshot, SnapshotPoint, SnapshotStore};
use crate::wal::{Lsn, Wal, WalOptions};

/// A log entry as stored: the payload is opaque to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    pub index: u64,
    pub term: u64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// A log entry to append, borrowed from its owner (Raft's entry): [`LogStore::append_borrowed`]
/// encodes `payload` straight into the WAL record, with no encoded copy of it made first.
///
/// The record is byte for byte the one [`LogStore::append`] writes for the [`StoredEntry`] whose
/// payload is `codec::encode(payload)`, so replay returns exactly that, and logs written either
/// way read the same (no format change).
#[derive(Debug, Clone, Copy)]
pub struct StoredEntryRef<P> {
    pub index: u64,
    pub term: u64,
    /// Opaque to storage: whatever the owner encodes as the entry's payload (a reference, or a
    /// small value borrowing the payload's bytes).
    pub payload: P,
}

/// A [`LogRecord::Entry`] borrowing its parts: serializes exactly as
/// `LogRecord::Entry(StoredEntry { index, term, payload })` does, without owning the entry.
#[derive(Serialize)]
#[serde(rename = "LogRecord")]
enum EntryRecordRef<'a, P: Serialize> {
    /// Variant 0, as [`LogRecord::Entry`] (the enum's tags are on disk).
    Entry(EntryFieldsRef<'a, P>),
}

/// The fields of a [`StoredEntry`], borrowed.
#[derive(Serialize)]
#[serde(rename = "StoredEntry")]
struct EntryFieldsRef<'a, P: Serialize> {
    index: u64,
    term: u64,
    payload: PayloadRef<'a, P>,
}

/// A [`StoredEntry::payload`] as written: a length, then that many bytes.
enum PayloadRef<'a, P: Serialize> {
    /// Already encoded (a [`StoredEntry`]'s payload).
    Encoded(&'a [u8]),
    /// Encoded here, straight into the record: `encoded_bytes` (what
    /// [`codec::encoded_bytes`] says `value` takes) stands where a `Vec<u8>`'s length would,
    /// then the value's encoding stands where its bytes would.
    Value { value: &'a P, encoded_bytes: u64 },
}

impl<P: Serialize> Serialize for PayloadRef<'_, P> {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        match self {
            PayloadRef::Encoded(bytes) => serializer.serialize_bytes(bytes),
            // A tuple adds nothing of its own to the encoding, and a sequence's length is
            // encoded as a u64 is: together they are the `Vec<u8>` encoding of the bytes
            // `codec::encode(value)` would have produced (a test compares the two).
            PayloadRef::Value {
                value,
                encoded_bytes,
            } => {
                let mut tuple = serializer.serialize_tuple(2)?;
                tuple.serialize_element(encoded_bytes)?;
                tuple.serialize_element(*value)?;
                tuple.end()
            }
        }
    }
}

/// The WAL record of a [`LogRecord::Entry`] for `entry`, without cloning it.
pub(crate) fn encode_stored_entry(entry: &StoredEntry) -> Result<Vec<u8>> {
    let record = EntryRecordRef::<()>::Entry(EntryFieldsRef {
        index: entry.index,
        term: entry.term,
        payload: PayloadRef::Encoded(&entry.payload),
    });
    codec::encode(&record, "log record")
}

/// The WAL record of a borrowed entry: its payload encoded straight into the record (the same
/// bytes as [`encode_stored_entry`] of the entry whose payload is `codec::encode(payload)`).
pub(crate) fn encode_borrowed_entry<P: Serialize>(entry: &StoredEntryRef<P>) -> Result<Vec<u8>> {
    let record = EntryRecordRef::Entry(EntryFieldsRef {
        index: entry.index,
        term: entry.term,
        payload: PayloadRef::Value {
            value: &entry.payload,
            encoded_bytes: codec::encoded_bytes(&entry.payload, "entry payload")?,
        },
    });
    codec::encode(&record, "log record")
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
    /// Every entry is discarded, including those at or below `index` (a snapshot from the leader
    /// at `index` replaced the log; entries after it follow in later records).
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
    /// Entries at or below the snapshot's index still on disk (the compaction tail): the
    /// contiguous run that ends exactly at the snapshot index, kept only if its entry there has
    /// the snapshot's term (then, by Raft's Log Matching, every one of them is the snapshot's
    /// history; a log a leader's snapshot replaced fails the check and is left out). Empty
    /// without a snapshot. `tail_entries` followed by `entries` is contiguous.
    pub tail_entries: Vec<StoredEntry>,
    /// Bytes truncated from a torn tail, if any.
    pub torn_tail_bytes: Option<u64>,
    /// Set while this replica is repairing a damaged log (`serve --repair`): the highest commit
    /// index it had made durable, which its log must reach again before it may vote. Kept in a
    /// marker file until [`LogStore::finish_repair`], so a crash mid-repair cannot forget it.
    pub repair_until: Option<u64>,
}

/// The marker file of a replica repairing its log: it must outlive crashes until the repair is
/// done, and it is written before the log is cut.
pub(crate) const REPAIR_MARKER: &str = "repair.marker";

/// What a repair must never forget: the commit index to reach again, and the newest term and
/// vote found anywhere in the damaged log (a vote cut away must not be given twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RepairMarker {
    pub(crate) until: u64,
    pub(crate) term: u64,
    pub(crate) vote: Option<u64>,
}

/// The durable log of one replica.
pub struct LogStore {
    /// The Raft group whose records this store writes and replays (always [`GROUP_ZERO`] today).
    group: GroupId,
    wal: Wal,
    snapshots: SnapshotStore,
    hard_state: HardState,
    snapshot_point: SnapshotPoint,
    /// The WAL position of each live entry's record, to know which segments a snapshot covers.
    entry_lsns: BTreeMap<u64, Lsn>,
    last_index: u64,
    /// Entries a local snapshot keeps behind it (see [`LogStore::set_compaction_tail_entries`]).
    compaction_tail_entries: u64,
    fs: SharedFs,
    dir: PathBuf,
    /// A deliberate bug (see [`crate::planted`]); ignored without the `planted-bugs` feature.
    planted_bug: Option<crate::planted::StorageBug>,
}

impl LogStore {
    /// Opens the log kept under `dir` (`dir/wal`, `dir/snap`) and replays it.
    pub fn open(fs: SharedFs, dir: &Path, options: WalOptions) -> Result<(LogStore, RecoveredLog)> {
        let group = GROUP_ZERO;
        let snapshots = SnapshotStore::open(fs.clone(), &dir.join("snap"))?;
        let snapshot = snapshots.load_latest()?;
        let snapshot_point = snapshot.as_ref().map(|s| s.point).unwrap_or_default();
        let wal_dir = dir.join("wal");
        let mut marker = read_repair_marker(&*fs, dir, REPAIR_MARKER)?;
        if options.repair {
            let inspection = Wal::inspect(&*fs, &wal_dir, &options)?;
            if let Some(damage) = &inspection.damage {
                // Everything that passed its checksum, on both sides of the damage, counts: the
                // marker must be durable before the log is cut.
                let mut newest = marker.unwrap_or_default();
                let ours = inspection
                    .checksummed
                    .iter()
                    .filter(|(of, _)| *of == group)
                    .map(|(_, bytes)| bytes);
                for bytes in ours {
                    if let Ok(LogRecord::HardState(state)) =
                        codec::decode::<LogRecord>(bytes, "log record")
                    {
                        newest.until = newest.until.max(state.commit);
                        if state.term >= newest.term {
                            newest.term = state.term;
                            newest.vote = state.vote;
                        }
                    }
                }
                tracing::warn!(path = %damage.path.display(), offset = damage.offset,
                    until = newest.until, term = newest.term, "repair: cutting the log at the damage");
                write_repair_marker(&*fs, dir, REPAIR_MARKER, newest)?;
                marker = Some(newest);
            }
        }
        let (wal, recovered) = open_wal(fs.clone(), &wal_dir, options)?;
        let mut hard_state = HardState::default();
        // Replay by index: an entry replaces the one at its index and every later one. The oldest
        // segment kept after a purge may begin with dead entries (overwritten later by a new
        // leader); they are replaced in turn, so contiguity is checked only once replay is done.
        // Replaying a suffix of the WAL is sound: an entry survives it only if no later record
        // replaced it, just as in the whole history; entries whose records were purged leave
        // gaps, which only the tail (at or below the snapshot) may have.
        let mut by_index: BTreeMap<u64, StoredEntry> = BTreeMap::new();
        let mut entry_lsns = BTreeMap::new();
        for record in recovered.records {
            let lsn = record.lsn;
            if record.group != group {
                return Err(StorageError::Corrupt {
                    path: wal.dir().to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "record #{lsn} belongs to Raft group {}, but this log holds only group \
                         {group}: it was written by a build that shares the log among groups",
                        record.group
                    ),
                });
            }
            match codec::decode::<LogRecord>(&record.payload, "log record")? {
                LogRecord::HardState(state) => hard_state = state,
                LogRecord::TruncateAfter { .. } => {
                    // A leader's snapshot replaced the whole log: the entries before this record
                    // are another history, unfit even as a tail below a later snapshot (whose
                    // tail could otherwise run on into them).
                    by_index.clear();
                    entry_lsns.clear();
                }
                LogRecord::Entry(entry) => {
                    by_index.split_off(&entry.index);
                    entry_lsns.split_off(&entry.index);
                    entry_lsns.insert(entry.index, lsn);
                    by_index.insert(entry.index, entry);
                }
            }
        }
        let after = by_index.split_off(&(snapshot_point.last_index + 1));
        let tail_entries = replayed_tail(by_index, snapshot_point);
        if let Some(first) = tail_entries.first() {
            // Only the live tail and the entries after the snapshot keep their segments.
            entry_lsns = entry_lsns.split_off(&first.index);
        } else {
            entry_lsns = entry_lsns.split_off(&(snapshot_point.last_index + 1));
        }
        let entries: Vec<StoredEntry> = after.into_values().collect();
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
        let mut store = LogStore {
            group,
            wal,
            snapshots,
            hard_state,
            snapshot_point,
            entry_lsns,
            last_index,
            compaction_tail_entries: 0,
            fs,
            dir: dir.to_path_buf(),
            planted_bug: None,
        };
        if let Some(marker) = marker {
            // A term or vote that lived only in the cut-away records is restored, durably,
            // before Raft can act on an older one.
            let mut repaired = store.hard_state;
            if marker.term > repaired.term {
                repaired.term = marker.term;
                repaired.vote = marker.vote;
            } else if marker.term == repaired.term && repaired.vote.is_none() {
                repaired.vote = marker.vote;
            }
            repaired.commit = repaired.commit.min(store.last_index);
            if repaired != store.hard_state {
                store.append(Some(repaired), &[])?;
            }
        }
        let recovered_log = RecoveredLog {
            hard_state: store.hard_state,
            snapshot,
            entries,
            tail_entries,
            torn_tail_bytes: recovered.torn_tail.map(|t| t.discarded_bytes),
            repair_until: marker.map(|m| m.until),
        };
        Ok((store, recovered_log))
    }

    /// Durably records a new hard state and entries with one write and one fsync. An entry at an
    /// index the log already holds replaces it and every later one.
    pub fn append(&mut self, hard_state: Option<HardState>, entries: &[StoredEntry]) -> Result<()> {
        let mut records = Vec::with_capacity(entries.len() + 1);
        let mut indexes = Vec::with_capacity(entries.len());
        for entry in entries {
            records.push(encode_stored_entry(entry)?);
            indexes.push(entry.index);
        }
        self.append_records(hard_state, &indexes, records)
    }

    /// [`LogStore::append`] for borrowed entries: each payload is encoded once, straight into
    /// its record (the node passes Raft's entries this way, see [`StoredEntryRef`]).
    pub fn append_borrowed<P: Serialize>(
        &mut self,
        hard_state: Option<HardState>,
        entries: &[StoredEntryRef<P>],
    ) -> Result<()> {
        let mut records = Vec::with_capacity(entries.len() + 1);
        let mut indexes = Vec::with_capacity(entries.len());
        for entry in entries {
            records.push(encode_borrowed_entry(entry)?);
            indexes.push(entry.index);
        }
        self.append_records(hard_state, &indexes, records)
    }

    /// Appends `records`, the encoded entries at `indexes` (one each, in order), and the hard
    /// state, as one WAL batch.
    fn append_records(
        &mut self,
        hard_state: Option<HardState>,
        indexes: &[u64],
        mut records: Vec<Vec<u8>>,
    ) -> Result<()> {
        debug_assert_eq!(indexes.len(), records.len(), "one record per entry");
        // Planted (Raft Figure 2, persistent state): a hard state alone is not written.
        let vote_alone_skipped = indexes.is_empty()
            && crate::planted::active(
                self.planted_bug,
                crate::planted::StorageBug::VoteNotPersisted,
            );
        if let Some(state) = hard_state.filter(|_| !vote_alone_skipped) {
            debug_assert!(state.term >= self.hard_state.term, "terms never decrease");
            records.push(codec::encode(&LogRecord::HardState(state), "log record")?);
        }
        if records.is_empty() {
            if let Some(state) = hard_state {
                self.hard_state = state;
            }
            return Ok(());
        }
        let lsns = self.wal.append(self.group, &records)?;
        for (&index, lsn) in indexes.iter().zip(*lsns.start()..) {
            debug_assert!(index <= self.last_index + 1, "entries are contiguous");
            self.entry_lsns.split_off(&index);
            self.entry_lsns.insert(index, lsn);
            self.last_index = index;
        }
        if let Some(state) = hard_state {
            self.hard_state = state;
        }
        Ok(())
    }

    /// Plants a deliberate bug (see [`crate::planted`]); ignored without the `planted-bugs`
    /// feature.
    pub fn set_planted_bug(&mut self, bug: Option<crate::planted::StorageBug>) {
        self.planted_bug = bug;
    }

    /// Makes appended records durable (for `SyncPolicy::Interval` owners).
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// How many entries a local snapshot keeps behind it (default 0: none). The next
    /// [`LogStore::save_snapshot`] without `replaces_log` keeps the last `entries` entries at or
    /// below `point.last_index` and deletes only the segments wholly before them (whole segments
    /// go, so usually more stay). Set it to Raft's `compaction_tail_entries`; Raft may use the
    /// first restored tail entry as its offset only, so at least `entries - 1` come back.
    pub fn set_compaction_tail_entries(&mut self, entries: u64) {
        self.compaction_tail_entries = entries;
    }

    /// Saves a snapshot of the state machine at `point`, then deletes the WAL segments it covers.
    /// Used for local compaction (`replaces_log` false: entries after the point stay, and so does
    /// the compaction tail before it) and to install a snapshot received from the leader
    /// (`replaces_log` true: every entry is discarded, as Raft §7 requires when the log does not
    /// match the snapshot; replay leaves out what is still on disk of it, see
    /// [`RecoveredLog::tail_entries`]).
    pub fn save_snapshot(
        &mut self,
        point: SnapshotPoint,
        data: &[u8],
        replaces_log: bool,
    ) -> Result<()> {
        if point.last_index <= self.snapshot_point.last_index {
            return Ok(());
        }
        if self.wal.is_poisoned() {
            // Fail first: after a failed fsync nothing more is written, not even a snapshot.
            return Err(StorageError::Poisoned {
                dir: self.wal.dir().to_path_buf(),
            });
        }
        self.snapshots.save(point, data)?;
        self.snapshot_point = point;
        if replaces_log {
            self.entry_lsns.clear();
            self.last_index = point.last_index;
        } else {
            let keep_from = (point.last_index + 1).saturating_sub(self.compaction_tail_entries);
            self.entry_lsns = self.entry_lsns.split_off(&keep_from);
            self.last_index = self.last_index.max(point.last_index);
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
        self.wal.append(self.group, &records)?;
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

    /// Ends a repair (see [`RecoveredLog::repair_until`]): the caller made the log durable up to
    /// the marker's index again. Removes the marker.
    pub fn finish_repair(&mut self) -> Result<()> {
        let path = self.dir.join(REPAIR_MARKER);
        self.fs
            .remove_file(&path)
            .map_err(|e| StorageError::io("remove", &path, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("sync directory", &self.dir, e))
    }

    /// The Raft group this store holds.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The WAL underneath, for status and sync policy.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }
}

/// The compaction tail among the replayed entries at or below the snapshot (`below`): the
/// contiguous run ending at the snapshot index, if the entry there has the snapshot's term.
pub(crate) fn replayed_tail(
    below: BTreeMap<u64, StoredEntry>,
    snapshot: SnapshotPoint,
) -> Vec<StoredEntry> {
    let matches_snapshot = below
        .get(&snapshot.last_index)
        .is_some_and(|e| e.term == snapshot.last_term);
    if snapshot.last_index == 0 || !matches_snapshot {
        return Vec::new();
    }
    let mut tail: Vec<StoredEntry> = Vec::new();
    for (index, entry) in below.into_iter().rev() {
        if tail.last().is_some_and(|next| next.index != index + 1) {
            break;
        }
        tail.push(entry);
    }
    tail.reverse();
    tail
}

/// Reads the repair marker `name` in `dir`, if a repair is under way.
pub(crate) fn read_repair_marker(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
) -> Result<Option<RepairMarker>> {
    let path = dir.join(name);
    let present = fs
        .list_dir(dir)
        .map_err(|e| StorageError::io("list directory", dir, e))?
        .iter()
        .any(|listed| listed == name);
    if !present {
        return Ok(None);
    }
    let bytes = fs
        .read(&path)
        .map_err(|e| StorageError::io("read", &path, e))?;
    // Written in the current record framing; one written before an upgrade uses format 2.
    let decoded = [RecordFormat::V3, RecordFormat::V2]
        .into_iter()
        .map(|format| decode_record(&bytes, 0, 4096, format))
        .find(|decoded| matches!(decoded, Decoded::Record { .. }));
    match decoded {
        Some(Decoded::Record { payload, .. }) => Ok(Some(codec::decode(payload, "repair marker")?)),
        _ => Err(StorageError::Corrupt {
            path,
            offset: 0,
            reason: "the repair marker is damaged; keep the node stopped and restore its data \
                     directory, or wipe it so that it rejoins as a new, empty replica"
                .into(),
        }),
    }
}

/// Writes the repair marker `name` durably: temporary file, fsync, rename, directory fsync.
pub(crate) fn write_repair_marker(
    fs: &dyn FileSystem,
    dir: &Path,
    name: &str,
    marker: RepairMarker,
) -> Result<()> {
    fs.create_dir_all(dir)
        .map_err(|e| StorageError::io("create directory", dir, e))?;
    let mut bytes = Vec::new();
    encode_record(
        GROUP_ZERO,
        &codec::encode(&marker, "repair marker")?,
        0,
        &mut bytes,
    );
    let temp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = fs
        .create(&temp)
        .map_err(|e| StorageError::io("create", &temp, e))?;
    file.append(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io("write", &temp, e))?;
    fs.rename(&temp, &path)
        .map_err(|e| StorageError::io("rename", &temp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("sync directory", dir, e))
}

/// Opens the WAL of a log; damage is reported with the index of the entry before it, so the
/// operator knows where the log breaks.
pub(crate) fn open_wal(
    fs: SharedFs,
    wal_dir: &Path,
    options: WalOptions,
) -> Result<(Wal, crate::wal::Recovered)> {
    match Wal::open(fs, wal_dir, options) {
        Err(StorageError::Damaged(mut report)) => {
            report.after_entry = report
                .previous_record
                .as_deref()
                .and_then(|bytes| codec::decode::<LogRecord>(bytes, "log record").ok())
                .and_then(|record| match record {
                    LogRecord::Entry(entry) => Some(entry.index),
                    _ => None,
                });
            Err(StorageError::Damaged(report))
        }
        other => other,
    }
}
