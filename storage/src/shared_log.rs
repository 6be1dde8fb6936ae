//! One write-ahead log shared by every Raft group a node hosts ([`SharedLog`]), so that the
//! `Ready`s of many groups become one write and one `fdatasync` ([`SharedLog::append_batch`])
//! instead of one fsync per group.
//!
//! Each group's records are [`LogRecord`]s tagged with its [`GroupId`] (segment format 3) and
//! replayed exactly as [`crate::LogStore`] replays its one group; what the sharing adds is
//! bookkeeping across groups:
//! - snapshots are per group: group 0 keeps `DIR/snap` and its repair marker `DIR/repair.marker`,
//!   so a single-group data directory written by [`crate::LogStore`] opens unchanged as group 0
//!   (and the other way round while only group 0 has records); group `g > 0` keeps
//!   `DIR/snap-<g>` and `DIR/repair-<g>.marker`. Sibling directories rather than `DIR/snap/<g>`:
//!   group 0's snapshot directory then holds only group 0's files, as it always did, and a
//!   group's snapshots are one directory to remove when it leaves the node;
//! - a segment is deleted only when no group needs a record in it. A group needs its entries
//!   after its snapshot, its compaction tail, and its newest hard-state record. Hard states are
//!   cheap to write again, so compaction rewrites those that sit in segments it is about to
//!   delete (in the same batch as the snapshot's own records) rather than keep the segments;
//! - a compaction tail never pins the log on its own while another group has moved on: when the
//!   oldest segment anyone needs is needed only by tails, and some other group needs only later
//!   segments, those tail entries are given up (Raft then sends such a follower the snapshot).
//!   A lone group keeps its tail exactly as [`crate::LogStore`] does;
//! - an idle group's unsnapshotted entries would keep every later segment forever (it never
//!   reaches its snapshot threshold): [`SharedLog::groups_pinning_the_log`] names such groups so
//!   that the node asks them for a snapshot.
//!
//! Records of a group the node does not host make [`SharedLog::open`] fail
//! ([`StorageError::UnknownGroup`]) instead of being dropped or kept: dropping them would lose a
//! group's durable votes and entries if the placement given was wrong, and keeping them would pin
//! every segment from theirs on forever. The groups a node hosts only change with the ring,
//! which a later issue moves deliberately (and will remove a departing group's records then).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::codec;
use crate::error::{Result, StorageError};
use crate::fs::SharedFs;
use crate::log_store::{
    encode_borrowed_entry, encode_stored_entry, open_wal, read_repair_marker, replayed_tail,
    write_repair_marker, HardState, LogRecord, RecoveredLog, RepairMarker, StoredEntry,
    StoredEntryRef, REPAIR_MARKER,
};
use crate::record::{GroupId, GROUP_ZERO};
use crate::snapshot::{LoadedSnapshot, SnapshotPoint, SnapshotStore};
use crate::wal::{Lsn, Wal, WalOptions};

/// One group's part of a batch for [`SharedLog::append_batch`]: its new hard state and entries,
/// borrowed (each payload is encoded straight into its record, as
/// [`crate::LogStore::append_borrowed`] does).
#[derive(Debug, Clone, Copy)]
pub struct GroupWrite<'a, P> {
    pub group: GroupId,
    pub hard_state: Option<HardState>,
    pub entries: &'a [StoredEntryRef<P>],
}

/// [`GroupWrite`] with already-encoded payloads, for [`SharedLog::append_stored_batch`] (tests
/// and tools; the records are byte for byte those of [`crate::LogStore::append`]).
#[derive(Debug, Clone, Copy)]
pub struct StoredGroupWrite<'a> {
    pub group: GroupId,
    pub hard_state: Option<HardState>,
    pub entries: &'a [StoredEntry],
}

/// Whether an append syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sync {
    /// As the log's `SyncPolicy` says (`Always`: before the append returns).
    PerPolicy,
    /// With the next synced batch.
    Later,
}

/// Where `group`'s snapshots live under the data directory `dir`.
pub fn snapshot_dir(dir: &Path, group: GroupId) -> PathBuf {
    if group == GROUP_ZERO {
        dir.join("snap")
    } else {
        dir.join(format!("snap-{group}"))
    }
}

/// The file name of `group`'s repair marker in the data directory.
pub fn repair_marker_name(group: GroupId) -> String {
    if group == GROUP_ZERO {
        REPAIR_MARKER.to_string()
    } else {
        format!("repair-{group}.marker")
    }
}

/// One hosted group's durable state and what it needs of the WAL.
struct GroupLog {
    snapshots: SnapshotStore,
    hard_state: HardState,
    /// The LSN of the group's newest hard-state record (None: none written, the state is the
    /// default one). Compaction rewrites it before deleting its segment.
    hard_state_lsn: Option<Lsn>,
    snapshot_point: SnapshotPoint,
    /// The WAL position of each live entry's record (the compaction tail, then the entries after
    /// the snapshot). Both keys and values increase: an entry replaces every later one.
    entry_lsns: BTreeMap<u64, Lsn>,
    last_index: u64,
}

impl GroupLog {
    /// The oldest entry record the group needs (tail included).
    fn first_entry_lsn(&self) -> Option<Lsn> {
        self.entry_lsns.values().next().copied()
    }

    /// The oldest record of an entry after the snapshot: what only a new snapshot releases.
    fn first_unsnapshotted_lsn(&self) -> Option<Lsn> {
        self.entry_lsns
            .range(self.snapshot_point.last_index + 1..)
            .next()
            .map(|(_, &lsn)| lsn)
    }

    /// The oldest entry record the group needs once its tail entries with LSNs below
    /// `release_below` are given up (entries after the snapshot are never given up).
    fn first_entry_lsn_releasing(&self, release_below: Lsn) -> Option<Lsn> {
        let snapshot_index = self.snapshot_point.last_index;
        self.entry_lsns
            .iter()
            .find(|(&index, &lsn)| index > snapshot_index || lsn >= release_below)
            .map(|(_, &lsn)| lsn)
    }

    /// The oldest record of any kind the group needs.
    fn oldest_needed_lsn(&self) -> Option<Lsn> {
        match (self.first_entry_lsn(), self.hard_state_lsn) {
            (Some(entry), Some(state)) => Some(entry.min(state)),
            (entry, state) => entry.or(state),
        }
    }
}

/// A group's log rebuilt record by record during [`SharedLog::open`].
#[derive(Default)]
struct Replay {
    hard_state: HardState,
    hard_state_lsn: Option<Lsn>,
    by_index: BTreeMap<u64, StoredEntry>,
    entry_lsns: BTreeMap<u64, Lsn>,
}

impl Replay {
    /// Applies one record, as [`crate::LogStore::open`] does: an entry replaces the one at its
    /// index and every later one, the last hard state wins, `TruncateAfter` forgets every entry.
    fn apply(&mut self, lsn: Lsn, record: LogRecord) {
        match record {
            LogRecord::HardState(state) => {
                self.hard_state = state;
                self.hard_state_lsn = Some(lsn);
            }
            LogRecord::TruncateAfter { .. } => {
                // A leader's snapshot replaced the whole log: what came before is another
                // history, unfit even as a tail.
                self.by_index.clear();
                self.entry_lsns.clear();
            }
            LogRecord::Entry(entry) => {
                self.by_index.split_off(&entry.index);
                self.entry_lsns.split_off(&entry.index);
                self.entry_lsns.insert(entry.index, lsn);
                self.by_index.insert(entry.index, entry);
            }
        }
    }
}

/// A group's part of a batch, encoded.
struct EncodedWrite {
    group: GroupId,
    hard_state: Option<HardState>,
    /// The index of each entry record, in order.
    indexes: Vec<u64>,
    records: Vec<Vec<u8>>,
}

impl EncodedWrite {
    /// Encodes one group's entries (each with `encode`) as the records of a batch.
    fn new<E>(
        group: GroupId,
        hard_state: Option<HardState>,
        entries: &[E],
        index_of: impl Fn(&E) -> u64,
        encode: impl Fn(&E) -> Result<Vec<u8>>,
    ) -> Result<EncodedWrite> {
        Ok(EncodedWrite {
            group,
            hard_state,
            indexes: entries.iter().map(&index_of).collect(),
            records: entries.iter().map(encode).collect::<Result<_>>()?,
        })
    }
}

/// The durable logs of every Raft group a node hosts, in one [`Wal`].
pub struct SharedLog {
    wal: Wal,
    groups: BTreeMap<GroupId, GroupLog>,
    /// Entries a local snapshot keeps behind it (see [`SharedLog::set_compaction_tail_entries`]).
    compaction_tail_entries: u64,
    fs: SharedFs,
    dir: PathBuf,
    /// A deliberate bug (see [`crate::planted`]); ignored without the `planted-bugs` feature.
    planted_bug: Option<crate::planted::StorageBug>,
}

impl SharedLog {
    /// Opens the logs kept under `dir` (`dir/wal`, snapshots per group: see [`snapshot_dir`])
    /// for the groups this node hosts, and replays every record to its group. Each hosted group
    /// gets its [`RecoveredLog`] (empty for a new group); `torn_tail_bytes` is the shared log's
    /// and is the same in each. A record of a group not in `groups` is an error
    /// ([`StorageError::UnknownGroup`], see the module documentation).
    ///
    /// With [`WalOptions::repair`] and damage in the log, every hosted group gets a repair
    /// marker: the cut may take records of any group (the damaged record's own group is
    /// unreadable), and a marker of a group that lost nothing is finished at once.
    pub fn open(
        fs: SharedFs,
        dir: &Path,
        options: WalOptions,
        groups: &[GroupId],
    ) -> Result<(SharedLog, BTreeMap<GroupId, RecoveredLog>)> {
        let hosted: BTreeSet<GroupId> = groups.iter().copied().collect();
        fs.create_dir_all(dir)
            .map_err(|e| StorageError::io("create directory", dir, e))?;
        let mut snapshot_stores = BTreeMap::new();
        let mut snapshots = BTreeMap::new();
        for &group in &hosted {
            let store = SnapshotStore::open(fs.clone(), &snapshot_dir(dir, group))?;
            snapshots.insert(group, store.load_latest()?);
            snapshot_stores.insert(group, store);
        }
        let wal_dir = dir.join("wal");
        let mut markers: BTreeMap<GroupId, RepairMarker> = BTreeMap::new();
        for &group in &hosted {
            if let Some(marker) = read_repair_marker(&*fs, dir, &repair_marker_name(group))? {
                markers.insert(group, marker);
            }
        }
        if options.repair {
            let inspection = Wal::inspect(&*fs, &wal_dir, &options)?;
            if let Some(damage) = &inspection.damage {
                // Everything that passed its checksum, on both sides of the damage, counts: the
                // markers must be durable before the log is cut.
                let mut newest: BTreeMap<GroupId, RepairMarker> = hosted
                    .iter()
                    .map(|&group| (group, markers.get(&group).copied().unwrap_or_default()))
                    .collect();
                for (group, bytes) in &inspection.checksummed {
                    let Some(marker) = newest.get_mut(group) else {
                        continue;
                    };
                    if let Ok(LogRecord::HardState(state)) =
                        codec::decode::<LogRecord>(bytes, "log record")
                    {
                        marker.until = marker.until.max(state.commit);
                        if state.term >= marker.term {
                            marker.term = state.term;
                            marker.vote = state.vote;
                        }
                    }
                }
                tracing::warn!(path = %damage.path.display(), offset = damage.offset,
                    groups = newest.len(), "repair: cutting the shared log at the damage");
                for (group, marker) in newest {
                    write_repair_marker(&*fs, dir, &repair_marker_name(group), marker)?;
                    markers.insert(group, marker);
                }
            }
        }
        let (wal, recovered) = open_wal(fs.clone(), &wal_dir, options)?;
        refuse_unhosted_records(&wal, &recovered.records, &hosted)?;

        let mut replays: BTreeMap<GroupId, Replay> = hosted
            .iter()
            .map(|&group| (group, Replay::default()))
            .collect();
        for record in recovered.records {
            // Every record's group is hosted (checked just above).
            if let Some(replay) = replays.get_mut(&record.group) {
                let decoded = codec::decode::<LogRecord>(&record.payload, "log record")?;
                replay.apply(record.lsn, decoded);
            }
        }

        let mut logs = BTreeMap::new();
        let mut recovered_logs = BTreeMap::new();
        for (group, replay) in replays {
            let snapshot = snapshots.remove(&group).flatten();
            let snapshot_point = snapshot.as_ref().map(|s| s.point).unwrap_or_default();
            let Replay {
                hard_state,
                hard_state_lsn,
                mut by_index,
                mut entry_lsns,
            } = replay;
            let after = by_index.split_off(&(snapshot_point.last_index + 1));
            let tail_entries = replayed_tail(by_index, snapshot_point);
            // Only the live tail and the entries after the snapshot keep their segments.
            let keep_from = tail_entries
                .first()
                .map_or(snapshot_point.last_index + 1, |first| first.index);
            entry_lsns = entry_lsns.split_off(&keep_from);
            let entries: Vec<StoredEntry> = after.into_values().collect();
            for (position, entry) in entries.iter().enumerate() {
                let expected = snapshot_point.last_index + 1 + position as u64;
                if entry.index != expected {
                    return Err(StorageError::Corrupt {
                        path: wal.dir().to_path_buf(),
                        offset: 0,
                        reason: format!(
                            "the log of Raft group {group} is missing entry {expected} (next \
                             present: {})",
                            entry.index
                        ),
                    });
                }
            }
            let last_index = entries
                .last()
                .map_or(snapshot_point.last_index, |e| e.index);
            let Some(snapshots) = snapshot_stores.remove(&group) else {
                continue;
            };
            logs.insert(
                group,
                GroupLog {
                    snapshots,
                    hard_state,
                    hard_state_lsn,
                    snapshot_point,
                    entry_lsns,
                    last_index,
                },
            );
            recovered_logs.insert(
                group,
                RecoveredLog {
                    hard_state,
                    snapshot,
                    entries,
                    tail_entries,
                    torn_tail_bytes: recovered.torn_tail.as_ref().map(|t| t.discarded_bytes),
                    repair_until: markers.get(&group).map(|m| m.until),
                },
            );
        }
        let mut log = SharedLog {
            wal,
            groups: logs,
            compaction_tail_entries: 0,
            fs,
            dir: dir.to_path_buf(),
            planted_bug: None,
        };
        // A term or vote that lived only in the cut-away records is restored, durably (one
        // batch for every group), before Raft can act on an older one.
        let mut repaired_states = Vec::new();
        for (&group, marker) in &markers {
            let Some(state) = log.groups.get(&group) else {
                continue;
            };
            let mut repaired = state.hard_state;
            if marker.term > repaired.term {
                repaired.term = marker.term;
                repaired.vote = marker.vote;
            } else if marker.term == repaired.term && repaired.vote.is_none() {
                repaired.vote = marker.vote;
            }
            repaired.commit = repaired.commit.min(state.last_index);
            if repaired != state.hard_state {
                repaired_states.push(StoredGroupWrite {
                    group,
                    hard_state: Some(repaired),
                    entries: &[],
                });
            }
        }
        log.append_stored_batch(&repaired_states)?;
        for write in &repaired_states {
            if let (Some(recovered), Some(state)) =
                (recovered_logs.get_mut(&write.group), write.hard_state)
            {
                recovered.hard_state = state;
            }
        }
        Ok((log, recovered_logs))
    }

    /// Durably records the hard states and entries of several groups with ONE write and ONE
    /// fsync (group commit across groups). An entry at an index its group already holds
    /// replaces it and every later one. All or nothing: on error (a full disk, say) no record of
    /// the batch is in the log and no group's state changed. A group not hosted is an error
    /// ([`StorageError::UnknownGroup`]) before anything is written.
    pub fn append_batch<P: Serialize>(&mut self, batch: &[GroupWrite<'_, P>]) -> Result<()> {
        self.append_batch_with(batch, Sync::PerPolicy)
    }

    /// [`SharedLog::append_batch`] without an fsync: the records become durable with the next
    /// synced batch (or segment roll, compaction, [`SharedLog::sync`]). For batches that hold
    /// nothing a crash may not lose: hard states whose term and vote are unchanged (only the
    /// commit index moved, which Raft relearns from the leader). etcd skips the sync in the same
    /// case (`raft.MustSync`).
    pub fn append_batch_without_sync<P: Serialize>(
        &mut self,
        batch: &[GroupWrite<'_, P>],
    ) -> Result<()> {
        debug_assert!(
            batch.iter().all(|write| write.entries.is_empty()
                && write.hard_state.is_none_or(|state| {
                    self.groups.get(&write.group).is_none_or(|log| {
                        (log.hard_state.term, log.hard_state.vote) == (state.term, state.vote)
                    })
                })),
            "only a commit index may go unsynced"
        );
        self.append_batch_with(batch, Sync::Later)
    }

    fn append_batch_with<P: Serialize>(
        &mut self,
        batch: &[GroupWrite<'_, P>],
        sync: Sync,
    ) -> Result<()> {
        let encoded = batch
            .iter()
            .map(|write| {
                EncodedWrite::new(
                    write.group,
                    write.hard_state,
                    write.entries,
                    |entry| entry.index,
                    encode_borrowed_entry,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.append_encoded(encoded, sync)
    }

    /// [`SharedLog::append_batch`] for entries whose payloads are already encoded.
    pub fn append_stored_batch(&mut self, batch: &[StoredGroupWrite<'_>]) -> Result<()> {
        let encoded = batch
            .iter()
            .map(|write| {
                EncodedWrite::new(
                    write.group,
                    write.hard_state,
                    write.entries,
                    |entry| entry.index,
                    encode_stored_entry,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.append_encoded(encoded, Sync::PerPolicy)
    }

    /// One group's [`SharedLog::append_stored_batch`], as [`crate::LogStore::append`].
    pub fn append(
        &mut self,
        group: GroupId,
        hard_state: Option<HardState>,
        entries: &[StoredEntry],
    ) -> Result<()> {
        self.append_stored_batch(&[StoredGroupWrite {
            group,
            hard_state,
            entries,
        }])
    }

    /// Appends the encoded writes as one WAL batch; the in-memory state changes only once the
    /// batch is in the log.
    fn append_encoded(&mut self, mut writes: Vec<EncodedWrite>, sync: Sync) -> Result<()> {
        for write in &writes {
            self.group_log(write.group)?;
        }
        let mut mixed: Vec<(GroupId, Vec<u8>)> = Vec::new();
        let mut hard_state_written = Vec::with_capacity(writes.len());
        for write in &mut writes {
            debug_assert_eq!(
                write.indexes.len(),
                write.records.len(),
                "one record per entry"
            );
            // Planted (Raft Figure 2, persistent state): a hard state alone is not written.
            let vote_alone_skipped = write.indexes.is_empty()
                && crate::planted::active(
                    self.planted_bug,
                    crate::planted::StorageBug::VoteNotPersisted,
                );
            mixed.extend(write.records.drain(..).map(|record| (write.group, record)));
            match write.hard_state.filter(|_| !vote_alone_skipped) {
                Some(state) => {
                    debug_assert!(
                        self.groups
                            .get(&write.group)
                            .is_none_or(|log| state.term >= log.hard_state.term),
                        "terms never decrease"
                    );
                    mixed.push((
                        write.group,
                        codec::encode(&LogRecord::HardState(state), "log record")?,
                    ));
                    hard_state_written.push(true);
                }
                None => hard_state_written.push(false),
            }
        }
        let mut lsn = match mixed.is_empty() {
            true => self.wal.next_lsn(),
            false => match sync {
                Sync::PerPolicy => *self.wal.append_mixed(&mixed)?.start(),
                Sync::Later => *self.wal.append_mixed_without_sync(&mixed)?.start(),
            },
        };
        for (write, written) in writes.iter().zip(hard_state_written) {
            let Some(log) = self.groups.get_mut(&write.group) else {
                continue;
            };
            for &index in &write.indexes {
                debug_assert!(index <= log.last_index + 1, "entries are contiguous");
                log.entry_lsns.split_off(&index);
                log.entry_lsns.insert(index, lsn);
                log.last_index = index;
                lsn += 1;
            }
            if written {
                log.hard_state_lsn = Some(lsn);
                lsn += 1;
            }
            if let Some(state) = write.hard_state {
                log.hard_state = state;
            }
        }
        debug_assert_eq!(
            lsn,
            self.wal.next_lsn(),
            "every record of the batch accounted"
        );
        Ok(())
    }

    /// Saves `group`'s snapshot at `point`, then deletes the WAL segments no group needs any
    /// more, as [`crate::LogStore::save_snapshot`] does for its one group (`replaces_log`: a
    /// snapshot from the leader replaced every entry). Hard states of any group whose record
    /// sits in a segment about to go are written again first, in one batch with this
    /// snapshot's records, and synced before anything is deleted.
    pub fn save_snapshot(
        &mut self,
        group: GroupId,
        point: SnapshotPoint,
        data: &[u8],
        replaces_log: bool,
    ) -> Result<()> {
        let poisoned = self.wal.is_poisoned();
        let wal_dir = self.wal.dir().to_path_buf();
        let tail_entries = self.compaction_tail_entries;
        let log = self.group_log_mut(group)?;
        if point.last_index <= log.snapshot_point.last_index {
            return Ok(());
        }
        if poisoned {
            // Fail first: after a failed fsync nothing more is written, not even a snapshot.
            return Err(StorageError::Poisoned { dir: wal_dir });
        }
        log.snapshots.save(point, data)?;
        log.snapshot_point = point;
        let mut records = Vec::new();
        if replaces_log {
            log.entry_lsns.clear();
            log.last_index = point.last_index;
            records.push((
                group,
                codec::encode(
                    &LogRecord::TruncateAfter {
                        index: point.last_index,
                    },
                    "log record",
                )?,
            ));
        } else {
            let keep_from = (point.last_index + 1).saturating_sub(tail_entries);
            log.entry_lsns = log.entry_lsns.split_off(&keep_from);
            log.last_index = log.last_index.max(point.last_index);
        }
        self.compact_with(records)?;
        Ok(())
    }

    /// Deletes the WAL segments no group needs, first writing again (one batch, synced) the hard
    /// states that sit in them. Returns how many segments were deleted. [`SharedLog::save_snapshot`]
    /// does this itself; call it when the log grew without a snapshot (hard states only).
    pub fn compact(&mut self) -> Result<usize> {
        if self.wal.is_poisoned() {
            return Err(StorageError::Poisoned {
                dir: self.wal.dir().to_path_buf(),
            });
        }
        self.compact_with(Vec::new())
    }

    /// [`SharedLog::compact`], with `records` (a snapshot's own) written in the same batch.
    fn compact_with(&mut self, mut records: Vec<(GroupId, Vec<u8>)>) -> Result<usize> {
        for (group, release_below) in self.tail_releases() {
            if let Some(log) = self.groups.get_mut(&group) {
                let snapshot_index = log.snapshot_point.last_index;
                log.entry_lsns
                    .retain(|&index, &mut lsn| index > snapshot_index || lsn >= release_below);
            }
        }
        // What entries keep: the oldest segment to survive at best. Hard states below it are
        // written again rather than keep their segments.
        let entry_floor = self
            .groups
            .values()
            .filter_map(GroupLog::first_entry_lsn)
            .min()
            .unwrap_or(self.wal.next_lsn());
        let kept_from = self.wal.segment_start_of(entry_floor);
        let mut rewritten: Vec<(usize, GroupId)> = Vec::new();
        for (&group, log) in &self.groups {
            if log.hard_state_lsn.is_some_and(|lsn| lsn < kept_from) {
                rewritten.push((records.len(), group));
                records.push((
                    group,
                    codec::encode(&LogRecord::HardState(log.hard_state), "log record")?,
                ));
            }
        }
        if !records.is_empty() {
            let first = *self.wal.append_mixed(&records)?.start();
            // Durable before any segment holding an older copy goes.
            self.wal.sync()?;
            for (position, group) in rewritten {
                if let Some(log) = self.groups.get_mut(&group) {
                    log.hard_state_lsn = Some(first + position as u64);
                }
            }
        }
        let oldest_needed = self
            .groups
            .values()
            .filter_map(GroupLog::oldest_needed_lsn)
            .min()
            .unwrap_or(self.wal.next_lsn());
        self.wal.purge_before(oldest_needed)
    }

    /// Which groups give up which tail entries (those with LSNs below the value) so that tails
    /// never hold a segment that every other group is done with. Repeatedly: if the oldest
    /// sealed segment anyone needs is needed only by compaction tails, and some other group
    /// needs a later segment, the tails' entries below that later segment are released.
    fn tail_releases(&self) -> BTreeMap<GroupId, Lsn> {
        let mut first_needed: BTreeMap<GroupId, Lsn> = self
            .groups
            .iter()
            .filter_map(|(&group, log)| log.first_entry_lsn().map(|lsn| (group, lsn)))
            .collect();
        let mut releases = BTreeMap::new();
        // Each round releases at least one segment's worth or stops: bounded by the segments.
        for _ in 0..=self.wal.segment_count() {
            let Some(oldest) = first_needed.values().min().copied() else {
                break;
            };
            let oldest_segment = self.wal.segment_start_of(oldest);
            if oldest_segment >= self.wal.active_segment_start() {
                break;
            }
            let holders: Vec<GroupId> = first_needed
                .iter()
                .filter(|(_, &lsn)| self.wal.segment_start_of(lsn) == oldest_segment)
                .map(|(&group, _)| group)
                .collect();
            let pinned_by_entries = holders.iter().any(|group| {
                self.groups
                    .get(group)
                    .and_then(GroupLog::first_unsnapshotted_lsn)
                    .is_some_and(|lsn| self.wal.segment_start_of(lsn) == oldest_segment)
            });
            if pinned_by_entries {
                break;
            }
            let Some(next) = first_needed
                .iter()
                .filter(|(group, _)| !holders.contains(group))
                .map(|(_, &lsn)| lsn)
                .min()
            else {
                // A lone group keeps its tail, as the single-group log does.
                break;
            };
            let boundary = self.wal.segment_start_of(next);
            debug_assert!(
                boundary > oldest_segment,
                "the next need is in a later segment"
            );
            for group in holders {
                let Some(log) = self.groups.get(&group) else {
                    continue;
                };
                releases.insert(group, boundary);
                match log.first_entry_lsn_releasing(boundary) {
                    Some(lsn) => first_needed.insert(group, lsn),
                    None => first_needed.remove(&group),
                };
            }
        }
        releases
    }

    /// Groups whose entries after their snapshot hold the oldest WAL segment anyone needs while
    /// some other group no longer needs it: an idle group that never reaches its snapshot
    /// threshold would otherwise keep every later segment forever. Snapshotting all of them
    /// lets the next compaction delete at least that segment; the node asks them for a snapshot
    /// (hard states and compaction tails never pin: compaction rewrites or releases them).
    /// Empty when nothing sealed is pinned, or when every group needs the oldest segment. A busy
    /// group below its threshold is named too once every other group is done with the oldest
    /// segment, so the node should ask only while the WAL is over its size budget.
    pub fn groups_pinning_the_log(&self) -> Vec<GroupId> {
        let releases = self.tail_releases();
        let first_needed: BTreeMap<GroupId, Lsn> = self
            .groups
            .iter()
            .filter_map(|(&group, log)| {
                let below = releases.get(&group).copied().unwrap_or(0);
                log.first_entry_lsn_releasing(below).map(|lsn| (group, lsn))
            })
            .collect();
        let Some(oldest) = first_needed.values().min().copied() else {
            return Vec::new();
        };
        let oldest_segment = self.wal.segment_start_of(oldest);
        if oldest_segment >= self.wal.active_segment_start() {
            return Vec::new();
        }
        let holders: Vec<GroupId> = first_needed
            .iter()
            .filter(|(_, &lsn)| self.wal.segment_start_of(lsn) == oldest_segment)
            .map(|(&group, _)| group)
            .collect();
        if holders.len() == self.groups.len() {
            return Vec::new();
        }
        holders
            .into_iter()
            .filter(|group| {
                self.groups
                    .get(group)
                    .and_then(GroupLog::first_unsnapshotted_lsn)
                    .is_some_and(|lsn| self.wal.segment_start_of(lsn) == oldest_segment)
            })
            .collect()
    }

    /// `group`'s newest snapshot on disk.
    pub fn load_snapshot(&self, group: GroupId) -> Result<Option<LoadedSnapshot>> {
        self.group_log(group)?.snapshots.load_latest()
    }

    /// `group`'s last durable hard state (the default one for a group not hosted).
    pub fn hard_state(&self, group: GroupId) -> HardState {
        self.groups
            .get(&group)
            .map(|log| log.hard_state)
            .unwrap_or_default()
    }

    /// Where `group`'s newest snapshot was taken (the default point for a group not hosted).
    pub fn snapshot_point(&self, group: GroupId) -> SnapshotPoint {
        self.groups
            .get(&group)
            .map(|log| log.snapshot_point)
            .unwrap_or_default()
    }

    /// The index of `group`'s last entry (or of its snapshot when its log is empty; 0 for a
    /// group not hosted).
    pub fn last_index(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |log| log.last_index)
    }

    /// The groups this log holds, in order.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// Makes appended records durable (for `SyncPolicy::Interval` owners).
    pub fn sync(&mut self) -> Result<()> {
        self.wal.sync()
    }

    /// The WAL underneath, for status and sync policy.
    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// How many entries a local snapshot keeps behind it, for every group (see
    /// [`crate::LogStore::set_compaction_tail_entries`]). With more than one group a tail is
    /// kept only while it holds no segment alone (see the module documentation).
    pub fn set_compaction_tail_entries(&mut self, entries: u64) {
        self.compaction_tail_entries = entries;
    }

    /// Plants a deliberate bug (see [`crate::planted`]); ignored without the `planted-bugs`
    /// feature.
    pub fn set_planted_bug(&mut self, bug: Option<crate::planted::StorageBug>) {
        self.planted_bug = bug;
    }

    /// Ends `group`'s repair (see [`RecoveredLog::repair_until`]): its log is durable up to
    /// the marker's index again. Removes its marker.
    pub fn finish_repair(&mut self, group: GroupId) -> Result<()> {
        self.group_log(group)?;
        let path = self.dir.join(repair_marker_name(group));
        self.fs
            .remove_file(&path)
            .map_err(|e| StorageError::io("remove", &path, e))?;
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("sync directory", &self.dir, e))
    }

    fn group_log(&self, group: GroupId) -> Result<&GroupLog> {
        self.groups
            .get(&group)
            .ok_or_else(|| self.unknown_group(group))
    }

    fn group_log_mut(&mut self, group: GroupId) -> Result<&mut GroupLog> {
        let error = self.unknown_group(group);
        self.groups.get_mut(&group).ok_or(error)
    }

    fn unknown_group(&self, group: GroupId) -> StorageError {
        StorageError::UnknownGroup {
            group,
            dir: self.wal.dir().to_path_buf(),
            reason: format!(
                "the log was opened for groups {:?} only",
                self.groups.keys().collect::<Vec<_>>()
            ),
        }
    }
}

/// Fails if any record belongs to a group not in `hosted`, naming every such group.
fn refuse_unhosted_records(
    wal: &Wal,
    records: &[crate::wal::WalRecord],
    hosted: &BTreeSet<GroupId>,
) -> Result<()> {
    let mut unhosted: BTreeMap<GroupId, (u64, Lsn)> = BTreeMap::new();
    for record in records.iter().filter(|r| !hosted.contains(&r.group)) {
        unhosted.entry(record.group).or_insert((0, record.lsn)).0 += 1;
    }
    let Some(&first_group) = unhosted.keys().next() else {
        return Ok(());
    };
    let found: Vec<String> = unhosted
        .iter()
        .map(|(group, (count, first_lsn))| {
            format!("group {group} ({count} records from #{first_lsn})")
        })
        .collect();
    Err(StorageError::UnknownGroup {
        group: first_group,
        dir: wal.dir().to_path_buf(),
        reason: format!(
            "the log holds records of {} that this node does not host (it hosts {:?}): the \
             groups placed on this node changed under its data directory. Start it with the \
             placement its data was written under, or move the data directory aside so that it \
             rejoins its groups as a new, empty replica",
            found.join(", "),
            hosted
        ),
    })
}
