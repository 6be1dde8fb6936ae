//! The segmented write-ahead log: append records in batches made durable by one `fdatasync`
//! (group commit), and recover them after a crash.
//!
//! A log is a directory of segment files named by the log sequence number (LSN) of their first
//! record, `00000000000000000001.wal`. Each segment starts with a [`SEGMENT_HEADER_BYTES`]-byte
//! header (magic, format version, first LSN, checksum) followed by records framed as described in
//! [`crate::record`]. Only the newest segment is ever written; when it reaches
//! `segment_max_bytes` it is synced and sealed, and a new one begins.
//!
//! Every record carries the id of the Raft group it belongs to ([`GroupId`]); the log itself
//! gives groups no meaning (one sequence of LSNs, one fsync per batch whatever groups it holds)
//! and hands each recovered record back with its group ([`WalRecord`]).
//!
//! Segment format 3 is written; format-2 segments (written before records had a group id) are
//! still read, every record as group 0, so an upgraded node loses nothing. A log may therefore
//! hold format-2 segments followed by format-3 ones: the first write after an upgrade seals a
//! format-2 newest segment (or, when it holds no record yet, replaces its header) so that format-3
//! records never land in a format-2 segment. Format 1 is refused.
//!
//! Recovery ([`Wal::open`]) tells a torn tail from damage. Every batch is fsynced before the
//! next is written, so only the last batch of the newest segment can be torn:
//! - a record that fails to decode (cut short, zero-filled, checksum mismatch) with no valid
//!   record after it in the newest segment is a write that never finished, so it was never
//!   acknowledged: it is truncated away (and reported in [`Recovered::torn_tail`]);
//! - the same with a valid record after it, or anywhere in a sealed segment, or a gap between
//!   segments, is damage: open fails with [`StorageError::Damaged`] naming the file, the offset
//!   and the record, because the damaged record may have been acknowledged and must not be
//!   silently dropped. With [`WalOptions::repair`] the log is instead cut at the damage, for a
//!   replica that re-fetches the rest from its peers (docs/storage.md, "Repair").
//!
//! After a failed write the log restores its previous length (so a full disk loses nothing and the
//! log stays valid); after a failed fsync it refuses further writes until reopened, because the
//! kernel may have dropped the dirty pages and a retried fsync would lie.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{DamageReport, Result, StorageError};
use crate::fs::{join, FileSystem, SharedFs, StorageFile};
use crate::record::{
    decode_record, encode_record, intact_header_len, Decoded, GroupId, RecordFormat,
};

/// A log sequence number: the position of a record in the log, starting at 1.
pub type Lsn = u64;

/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 24;
const SEGMENT_MAGIC: &[u8; 7] = b"RLGWAL\0";
/// The segment format this code writes (records with a group id, [`RecordFormat::V3`]).
pub const SEGMENT_FORMAT_VERSION: u8 = 3;
/// The older segment format this code still reads (records without a group id, read as group 0,
/// [`RecordFormat::V2`]); it is never written. Any other version is refused.
pub const SEGMENT_FORMAT_VERSION_V2: u8 = 2;

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` after every [`Wal::append`]: a returned append is durable. The default.
    Always,
    /// The owner calls [`Wal::sync`] at this interval; a crash may lose that much.
    Interval(Duration),
    /// Never sync (tests and benchmarks of the write path only).
    Never,
}

/// Tuning of a [`Wal`].
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// A segment is sealed once it reaches this size (a single batch may overshoot it).
    pub segment_max_bytes: u64,
    /// The largest record accepted; a longer length read back from disk is corruption.
    pub max_record_bytes: usize,
    /// When appends are made durable.
    pub sync: SyncPolicy,
    /// On damage (not a torn tail), cut the log at the damaged record instead of refusing to
    /// open. Only for a replica that will re-fetch what it lost from its peers (`serve --repair`).
    pub repair: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_max_bytes: 64 * 1024 * 1024,
            max_record_bytes: 32 * 1024 * 1024,
            sync: SyncPolicy::Always,
            repair: false,
        }
    }
}

/// A tail that recovery truncated because a write never finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    pub discarded_bytes: u64,
}

/// One record read back by [`Wal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    pub lsn: Lsn,
    /// The group it was appended for (group 0 for a record of a format-2 segment).
    pub group: GroupId,
    pub payload: Vec<u8>,
}

/// What [`Wal::open`] read back: every intact record, in order.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every record of every group, in LSN order.
    pub records: Vec<WalRecord>,
    pub torn_tail: Option<TornTail>,
    /// Set when the log was damaged and opened with [`WalOptions::repair`]: where it was cut.
    pub repaired: Option<Damage>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
    /// How its records are framed (from its header; new segments are always format 3).
    format: RecordFormat,
    /// Size on disk once sealed (the active segment's size is `Wal::active_len`).
    sealed_bytes: u64,
}

/// The write-ahead log. Not thread-safe by design: one writer task owns it.
pub struct Wal {
    fs: SharedFs,
    dir: PathBuf,
    options: WalOptions,
    /// Every segment on disk, oldest first; the last one is `active`.
    segments: Vec<Segment>,
    active: Box<dyn StorageFile>,
    active_len: u64,
    /// Bytes in sealed segments, for status.
    sealed_bytes: u64,
    next_lsn: Lsn,
    /// Every record below this LSN is durable.
    durable_before: Lsn,
    poisoned: bool,
    /// Reused encode buffer for a batch.
    batch_buffer: Vec<u8>,
}

fn segment_name(first_lsn: Lsn) -> String {
    format!("{first_lsn:020}.wal")
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

fn encode_segment_header(first_lsn: Lsn) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..7].copy_from_slice(SEGMENT_MAGIC);
    header[7] = SEGMENT_FORMAT_VERSION;
    header[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    // 16..20 reserved, zero.
    let crc = crc32fast::hash(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The first LSN and record framing recorded in a segment header, or why the header is not valid.
fn decode_segment_header(bytes: &[u8]) -> std::result::Result<(Lsn, RecordFormat), String> {
    let header = bytes
        .get(0..SEGMENT_HEADER_BYTES)
        .ok_or_else(|| "segment header incomplete".to_string())?;
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if crc32fast::hash(&header[0..20]) != crc {
        return Err("segment header checksum mismatch".into());
    }
    if &header[0..7] != SEGMENT_MAGIC {
        return Err("not a ringleader WAL segment (bad magic)".into());
    }
    let format = match header[7] {
        SEGMENT_FORMAT_VERSION => RecordFormat::V3,
        SEGMENT_FORMAT_VERSION_V2 => RecordFormat::V2,
        version => {
            return Err(format!(
                "segment format version {version} (this build reads versions \
                 {SEGMENT_FORMAT_VERSION_V2} and {SEGMENT_FORMAT_VERSION}; version 1 logs were \
                 written before records carried a durability stamp: start this node from an \
                 empty data directory so that it re-fetches its state from the other replicas)"
            ))
        }
    };
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[8..16]);
    Ok((u64::from_le_bytes(lsn), format))
}

/// The framing to try for the records of a segment whose header did not decode: the one its
/// version byte names if that is a version this build reads, else the current one. Only used to
/// salvage (repair) and to tell a torn header from damage, both best effort.
fn guess_format(bytes: &[u8]) -> RecordFormat {
    match bytes.get(7) {
        Some(&SEGMENT_FORMAT_VERSION_V2) => RecordFormat::V2,
        _ => RecordFormat::V3,
    }
}

/// Whether the undecodable record at `offset`, which would have had LSN `lsn`, is proven to have
/// been durable: a valid record after it carries a durability stamp above `lsn`, so it was
/// written after the bad record had been fsynced.
///
/// This is what tells a torn write from damage. Only records written after the last fsync can be
/// torn, and every record says how far the log was synced when it was written. With the default
/// sync-per-batch policy, a valid record after a bad one proves damage unless both belong to the
/// same (last, unsynced) batch. When the bad record's own header is intact its length is trusted
/// and the search starts past its end, so a value that happens to contain an encoded record
/// cannot fool it; otherwise every later offset is tried.
fn proven_durable(
    bytes: &[u8],
    offset: usize,
    lsn: Lsn,
    max_record_bytes: usize,
    format: RecordFormat,
) -> bool {
    let mut from = match intact_header_len(bytes, offset, format) {
        Some(payload_len) => offset + format.header_bytes() + payload_len,
        None => offset + 1,
    };
    while let Some(at) = first_valid_record(bytes, from, max_record_bytes, format) {
        let Decoded::Record {
            durable_before,
            next,
            ..
        } = decode_record(bytes, at, max_record_bytes, format)
        else {
            return false;
        };
        if durable_before > lsn {
            return true;
        }
        from = next;
    }
    false
}

/// The first offset at or after `from` where a whole, checksummed record starts.
fn first_valid_record(
    bytes: &[u8],
    from: usize,
    max_record_bytes: usize,
    format: RecordFormat,
) -> Option<usize> {
    (from..bytes.len().saturating_sub(format.header_bytes() - 1)).find(|&candidate| {
        matches!(
            decode_record(bytes, candidate, max_record_bytes, format),
            Decoded::Record { .. }
        )
    })
}

/// Damage in the middle of the log: a record that fails its checksum although valid records
/// follow it, so it cannot be a torn write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    /// Byte offset of the damaged record (or 0 for a damaged segment header).
    pub offset: u64,
    /// The LSN the damaged record would have had.
    pub lsn: Lsn,
    pub reason: String,
}

/// What [`Wal::inspect`] found: the damage a repair would cut at, and every record that passed
/// its checksum, before and after the damage, in log order. Those after it are not trusted to be
/// contiguous, but each is what was written: the caller may salvage from them facts that must
/// never go backwards (a term, a vote, a commit index).
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub damage: Option<Damage>,
    /// Each checksummed record's group and payload.
    pub checksummed: Vec<(GroupId, Vec<u8>)>,
}

/// The outcome of reading every segment without changing anything.
struct Scan {
    /// Segments kept, oldest first, with their scanned lengths.
    kept: Vec<Segment>,
    records: Vec<WalRecord>,
    next_lsn: Option<Lsn>,
    /// The newest segment's valid length (its records end there).
    active_len: u64,
    sealed_bytes: u64,
    /// A torn tail in the newest segment: (path, offset, file length).
    torn_tail: Option<(PathBuf, usize, usize)>,
    /// A torn header of the newest segment: the file to remove.
    torn_header: Option<PathBuf>,
    damage: Option<Damage>,
    /// Segments after the damaged one (removed by a repair).
    after_damage: Vec<PathBuf>,
    salvaged: Vec<(GroupId, Vec<u8>)>,
}

/// Collects every checksummed record in `bytes` from `offset` on, skipping over damage.
fn salvage(
    bytes: &[u8],
    mut offset: usize,
    max_record_bytes: usize,
    format: RecordFormat,
    out: &mut Vec<(GroupId, Vec<u8>)>,
) {
    while offset < bytes.len() {
        match decode_record(bytes, offset, max_record_bytes, format) {
            Decoded::Record {
                group,
                payload,
                next,
                ..
            } => {
                out.push((group, payload.to_vec()));
                offset = next;
            }
            _ => match first_valid_record(bytes, offset + 1, max_record_bytes, format) {
                Some(next) => offset = next,
                None => return,
            },
        }
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering every intact record.
    ///
    /// A torn tail (the last batch, partly written) is truncated. Damage anywhere else fails with
    /// [`StorageError::Damaged`], unless [`WalOptions::repair`] is set: then the log is cut at the
    /// damage (everything from the damaged record on is removed) and [`Recovered::repaired`] says
    /// what was cut. Use [`Wal::inspect`] first to learn what a repair would discard.
    pub fn open(fs: SharedFs, dir: &Path, options: WalOptions) -> Result<(Wal, Recovered)> {
        fs.create_dir_all(dir)
            .map_err(|e| StorageError::io("create directory", dir, e))?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs.sync_dir(parent)
            .map_err(|e| StorageError::io("sync directory", parent, e))?;

        let scan = scan(&*fs, dir, &options)?;
        if let Some(damage) = &scan.damage {
            if !options.repair {
                return Err(StorageError::Damaged(Box::new(DamageReport {
                    damage: damage.clone(),
                    previous_record: scan.records.last().map(|record| record.payload.clone()),
                    after_entry: None,
                })));
            }
        }
        let mut recovered = Recovered {
            records: scan.records,
            torn_tail: None,
            repaired: None,
        };
        if let Some(path) = &scan.torn_header {
            // Created but its header never became durable: it holds no record.
            tracing::warn!(path = %path.display(), "removing a segment whose header was torn");
            fs.remove_file(path)
                .map_err(|e| StorageError::io("remove", path, e))?;
            fs.sync_dir(dir)
                .map_err(|e| StorageError::io("sync directory", dir, e))?;
        }
        if let Some((path, offset, file_len)) = &scan.torn_tail {
            let discarded_bytes = (file_len - offset) as u64;
            tracing::warn!(path = %path.display(), offset, discarded_bytes, "truncating a torn tail");
            truncate(&*fs, path, *offset as u64, "truncate torn tail of")?;
            recovered.torn_tail = Some(TornTail {
                path: path.clone(),
                offset: *offset as u64,
                discarded_bytes,
            });
        }
        if let Some(damage) = scan.damage {
            tracing::warn!(path = %damage.path.display(), offset = damage.offset, lsn = damage.lsn,
                reason = %damage.reason, "repair: cutting the log at the damage");
            if damage.offset == 0 {
                fs.remove_file(&damage.path)
                    .map_err(|e| StorageError::io("remove", &damage.path, e))?;
            } else {
                truncate(&*fs, &damage.path, damage.offset, "truncate damaged")?;
            }
            for later in &scan.after_damage {
                fs.remove_file(later)
                    .map_err(|e| StorageError::io("remove", later, e))?;
            }
            fs.sync_dir(dir)
                .map_err(|e| StorageError::io("sync directory", dir, e))?;
            recovered.repaired = Some(damage);
        }

        let next_lsn = scan.next_lsn.unwrap_or(1);
        let mut active_len = scan.active_len;
        let (active, segments) = match scan.kept.last() {
            Some(newest) => {
                let mut file = fs
                    .open_append(&newest.path)
                    .map_err(|e| StorageError::io("open", &newest.path, e))?;
                // What recovery read may still sit in the page cache (the process, not the
                // machine, crashed): make it durable before new records claim it is.
                file.sync_data()
                    .map_err(|e| StorageError::io("fdatasync", &newest.path, e))?;
                (file, scan.kept)
            }
            None => {
                let segment = Segment {
                    first_lsn: next_lsn,
                    path: join(dir, &segment_name(next_lsn)),
                    format: RecordFormat::V3,
                    sealed_bytes: 0,
                };
                let file = create_segment(&*fs, dir, &segment)?;
                active_len = SEGMENT_HEADER_BYTES as u64;
                (file, vec![segment])
            }
        };
        debug_assert_eq!(
            recovered
                .records
                .last()
                .map_or(next_lsn, |record| record.lsn + 1),
            next_lsn,
            "records end just before the next LSN"
        );
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            active_len,
            sealed_bytes: scan.sealed_bytes,
            next_lsn,
            durable_before: next_lsn,
            poisoned: false,
            batch_buffer: Vec::new(),
        };
        Ok((wal, recovered))
    }

    /// Reads the log in `dir` without changing it and reports the damage a repair would cut
    /// away, with every record that passed its checksum.
    pub fn inspect(fs: &dyn FileSystem, dir: &Path, options: &WalOptions) -> Result<Inspection> {
        if !fs.list_dir(dir).is_ok_and(|names| !names.is_empty()) {
            return Ok(Inspection::default());
        }
        let scan = scan(fs, dir, options)?;
        let mut checksummed: Vec<(GroupId, Vec<u8>)> = scan
            .records
            .into_iter()
            .map(|record| (record.group, record.payload))
            .collect();
        checksummed.extend(scan.salvaged);
        Ok(Inspection {
            damage: scan.damage,
            checksummed,
        })
    }

    /// Appends `payloads` as consecutive records of `group` with one write, then (under
    /// [`SyncPolicy::Always`]) one `fdatasync`. Returns their LSNs. All or nothing: on error no
    /// record of the batch is in the log.
    pub fn append<P: AsRef<[u8]>>(
        &mut self,
        group: GroupId,
        payloads: &[P],
    ) -> Result<RangeInclusive<Lsn>> {
        let sync = self.options.sync == SyncPolicy::Always;
        self.append_batch(
            payloads.iter().map(|payload| (group, payload.as_ref())),
            sync,
        )
    }

    /// Like [`Wal::append`], for a batch whose records belong to different groups (one write and
    /// one `fdatasync` for all of them: group commit across groups sharing the log).
    pub fn append_mixed<P: AsRef<[u8]>>(
        &mut self,
        records: &[(GroupId, P)],
    ) -> Result<RangeInclusive<Lsn>> {
        let sync = self.options.sync == SyncPolicy::Always;
        self.append_batch(
            records
                .iter()
                .map(|(group, payload)| (*group, payload.as_ref())),
            sync,
        )
    }

    /// Like [`Wal::append_mixed`], but never syncs: the records become durable with the next
    /// sync (of a later batch, a segment roll, or [`Wal::sync`]). For what may be lost in a
    /// crash without harm, such as a Raft hard state whose only change is the commit index.
    pub fn append_mixed_without_sync<P: AsRef<[u8]>>(
        &mut self,
        records: &[(GroupId, P)],
    ) -> Result<RangeInclusive<Lsn>> {
        self.append_batch(
            records
                .iter()
                .map(|(group, payload)| (*group, payload.as_ref())),
            false,
        )
    }

    fn append_batch<'a>(
        &mut self,
        records: impl Iterator<Item = (GroupId, &'a [u8])> + Clone,
        sync: bool,
    ) -> Result<RangeInclusive<Lsn>> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        let mut count: u64 = 0;
        for (_, payload) in records.clone() {
            let len = payload.len();
            if len == 0 || len > self.options.max_record_bytes {
                return Err(StorageError::RecordTooLarge {
                    len,
                    max: self.options.max_record_bytes,
                });
            }
            count += 1;
        }
        debug_assert!(count > 0, "an empty batch is a caller bug");
        let mut buffer = std::mem::take(&mut self.batch_buffer);
        buffer.clear();
        for (group, payload) in records {
            encode_record(group, payload, self.durable_before, &mut buffer);
        }
        let result = self.write_batch(&buffer, count, sync);
        self.batch_buffer = buffer;
        result
    }

    fn write_batch(
        &mut self,
        buffer: &[u8],
        count: u64,
        sync: bool,
    ) -> Result<RangeInclusive<Lsn>> {
        if self.active_format() != RecordFormat::V3 {
            self.upgrade_active_segment()?;
        }
        let holds_records = self.active_len > SEGMENT_HEADER_BYTES as u64;
        if holds_records && self.active_len + buffer.len() as u64 > self.options.segment_max_bytes {
            self.roll_segment()?;
        }
        let path = self.active_path().to_path_buf();
        if let Err(write_error) = self.active.append(buffer) {
            // Put the file back as it was, so that the log stays valid (full disk loses nothing).
            let restored = self.active.set_len(self.active_len);
            if restored.is_err() {
                self.poisoned = true;
            }
            return Err(StorageError::io("append to", path, write_error));
        }
        self.active_len += buffer.len() as u64;
        let first = self.next_lsn;
        self.next_lsn += count;
        if sync {
            self.sync()?;
        }
        Ok(first..=self.next_lsn - 1)
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        if self.durable_before == self.next_lsn {
            return Ok(());
        }
        if let Err(error) = self.active.sync_data() {
            self.poisoned = true;
            return Err(StorageError::io("fdatasync", self.active_path(), error));
        }
        self.durable_before = self.next_lsn;
        Ok(())
    }

    /// Seals the active segment (synced) and starts a new one.
    fn roll_segment(&mut self) -> Result<()> {
        self.sync()?;
        let segment = Segment {
            first_lsn: self.next_lsn,
            path: join(&self.dir, &segment_name(self.next_lsn)),
            format: RecordFormat::V3,
            sealed_bytes: 0,
        };
        let file = match create_segment(&*self.fs, &self.dir, &segment) {
            Ok(file) => file,
            Err(error) if error.is_disk_full() => {
                // No room for the next segment: the sealed one is synced and still active, so
                // the log is intact. Remove the partial file (recovery would drop it anyway as a
                // torn header) and let the caller retry once space is freed.
                let _ = self.fs.remove_file(&segment.path);
                return Err(error);
            }
            Err(error) => {
                self.poisoned = true;
                return Err(error);
            }
        };
        if let Some(sealed) = self.segments.last_mut() {
            sealed.sealed_bytes = self.active_len;
        }
        self.sealed_bytes += self.active_len;
        self.active = file;
        self.active_len = SEGMENT_HEADER_BYTES as u64;
        self.segments.push(segment);
        Ok(())
    }

    /// Deletes every sealed segment whose records all have LSNs below `lsn` (they are covered by a
    /// snapshot). Returns how many segments were removed. The active segment is never removed.
    pub fn purge_before(&mut self, lsn: Lsn) -> Result<usize> {
        let mut removed = 0;
        // Segment i holds LSNs [first(i), first(i+1)); it can go when first(i+1) <= lsn.
        while self.segments.len() > 1 && self.segments[1].first_lsn <= lsn {
            let segment = self.segments.remove(0);
            self.fs
                .remove_file(&segment.path)
                .map_err(|e| StorageError::io("remove", &segment.path, e))?;
            self.sealed_bytes -= segment.sealed_bytes;
            removed += 1;
        }
        if removed > 0 {
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| StorageError::io("sync directory", &self.dir, e))?;
        }
        Ok(removed)
    }

    /// The first LSN of the segment that holds `lsn` (the active segment's for an LSN not yet
    /// written): two LSNs share a segment exactly when this is the same for both, and
    /// [`Wal::purge_before`]`(lsn)` keeps every record from this LSN on. For a caller that
    /// decides what a purge would free (the shared log's compaction across groups).
    pub fn segment_start_of(&self, lsn: Lsn) -> Lsn {
        self.segments
            .iter()
            .rev()
            .find(|segment| segment.first_lsn <= lsn)
            .or(self.segments.first())
            .map_or(lsn, |segment| segment.first_lsn)
    }

    /// The first LSN of the active (newest, unsealed) segment: [`Wal::purge_before`] never
    /// removes it.
    pub fn active_segment_start(&self) -> Lsn {
        self.segments
            .last()
            .expect("a WAL always has an active segment")
            .first_lsn
    }

    /// Before the first write after an upgrade: a format-2 newest segment must not receive
    /// format-3 records. One holding records is sealed (a new format-3 segment begins); one
    /// holding none gets a format-3 header instead, atomically (temporary file, fsync, rename,
    /// directory fsync), because a new segment would need its file name. On failure nothing
    /// changed unless the log is poisoned (only after the rename, when the old handle is stale).
    fn upgrade_active_segment(&mut self) -> Result<()> {
        if self.active_len > SEGMENT_HEADER_BYTES as u64 {
            return self.roll_segment();
        }
        let path = self.active_path().to_path_buf();
        let first_lsn = self
            .segments
            .last()
            .expect("a WAL always has an active segment")
            .first_lsn;
        let temp = path.with_extension("wal.tmp");
        let written = self.fs.create(&temp).and_then(|mut file| {
            file.append(&encode_segment_header(first_lsn))
                .and_then(|()| file.sync_data())
        });
        if let Err(error) = written {
            let _ = self.fs.remove_file(&temp);
            return Err(StorageError::io("write upgraded header of", &temp, error));
        }
        if let Err(error) = self.fs.rename(&temp, &path) {
            let _ = self.fs.remove_file(&temp);
            return Err(StorageError::io("rename", &temp, error));
        }
        let reopened = self
            .fs
            .sync_dir(&self.dir)
            .map_err(|e| StorageError::io("sync directory", &self.dir, e))
            .and_then(|()| {
                self.fs
                    .open_append(&path)
                    .map_err(|e| StorageError::io("open", &path, e))
            });
        match reopened {
            Ok(file) => {
                self.active = file;
                if let Some(active) = self.segments.last_mut() {
                    active.format = RecordFormat::V3;
                }
                Ok(())
            }
            Err(error) => {
                self.poisoned = true;
                Err(error)
            }
        }
    }

    fn active_format(&self) -> RecordFormat {
        self.segments
            .last()
            .expect("a WAL always has an active segment")
            .format
    }

    fn active_path(&self) -> &Path {
        &self
            .segments
            .last()
            .expect("a WAL always has an active segment")
            .path
    }

    /// The LSN the next appended record will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Whether records have been appended since the last sync.
    pub fn has_unsynced(&self) -> bool {
        self.durable_before < self.next_lsn
    }

    /// Total bytes of the log on disk.
    pub fn size_bytes(&self) -> u64 {
        self.sealed_bytes + self.active_len
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether an earlier I/O failure stopped the log from accepting writes (see
    /// [`StorageError::Poisoned`]). A write refused for lack of space does not poison it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The sync policy this log was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.options.sync
    }
}

/// Cuts `path` to `len` bytes, durably.
fn truncate(fs: &dyn FileSystem, path: &Path, len: u64, action: &'static str) -> Result<()> {
    let mut file = fs
        .open_append(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    file.set_len(len)
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io(action, path, e))
}

/// Reads every segment in `dir`, oldest first, and classifies what it finds without changing
/// anything: intact records, a torn tail or torn header in the newest segment, or damage.
fn scan(fs: &dyn FileSystem, dir: &Path, options: &WalOptions) -> Result<Scan> {
    let names = fs
        .list_dir(dir)
        .map_err(|e| StorageError::io("list directory", dir, e))?;
    let mut segments: Vec<Segment> = names
        .iter()
        .filter_map(|name| {
            parse_segment_name(name).map(|first_lsn| Segment {
                first_lsn,
                path: join(dir, name),
                // Set from the header when the segment is scanned.
                format: RecordFormat::V3,
                sealed_bytes: 0,
            })
        })
        .collect();
    segments.sort_by_key(|segment| segment.first_lsn);

    let mut scan = Scan {
        kept: Vec::with_capacity(segments.len()),
        records: Vec::new(),
        next_lsn: None,
        active_len: 0,
        sealed_bytes: 0,
        torn_tail: None,
        torn_header: None,
        damage: None,
        after_damage: Vec::new(),
        salvaged: Vec::new(),
    };
    // The previous segment, scanned as sealed, becomes the active one again when the segment
    // after it goes away (a torn header, or a repair that removes it).
    let reactivate_previous = |scan: &mut Scan| {
        if let Some(previous) = scan.kept.last_mut() {
            scan.active_len = previous.sealed_bytes;
            scan.sealed_bytes -= previous.sealed_bytes;
            previous.sealed_bytes = 0;
        }
    };
    let segment_count = segments.len();
    let mut remaining = segments.into_iter().enumerate();
    while let Some((position, mut segment)) = remaining.next() {
        let is_newest = position + 1 == segment_count;
        let bytes = fs
            .read(&segment.path)
            .map_err(|e| StorageError::io("read", &segment.path, e))?;
        let expected_lsn = scan.next_lsn.unwrap_or(segment.first_lsn);
        let header = decode_segment_header(&bytes);
        if let Ok((_, format)) = header {
            segment.format = format;
        }
        let header_problem = match header {
            Ok((lsn, _)) if lsn != segment.first_lsn => Some(format!(
                "header says first LSN {lsn}, file name says {}",
                segment.first_lsn
            )),
            // The missing records belong either to a segment that is gone or to the end of the
            // previous one (cut short exactly at a record boundary): name both files.
            Ok(_) if segment.first_lsn != expected_lsn => Some(match scan.kept.last() {
                Some(previous) => format!(
                    "gap in the log: expected a segment starting at LSN {expected_lsn}; the \
                     previous segment {} ends at LSN {}, so it was cut short or a segment \
                     between the two is missing",
                    previous.path.display(),
                    expected_lsn - 1
                ),
                None => {
                    format!("gap in the log: expected a segment starting at LSN {expected_lsn}")
                }
            }),
            Ok(_) => None,
            // A header that never fully arrived, in a segment holding no valid record: a crash
            // while the segment was being created (no record in it was ever acknowledged).
            // Either framing counts as a record here: a header cannot say which one it meant.
            Err(_)
                if is_newest
                    && [RecordFormat::V2, RecordFormat::V3].iter().all(|&format| {
                        first_valid_record(
                            &bytes,
                            SEGMENT_HEADER_BYTES,
                            options.max_record_bytes,
                            format,
                        )
                        .is_none()
                    }) =>
            {
                scan.torn_header = Some(segment.path.clone());
                scan.next_lsn = Some(expected_lsn);
                reactivate_previous(&mut scan);
                continue;
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = header_problem {
            scan.damage = Some(Damage {
                path: segment.path.clone(),
                offset: 0,
                lsn: expected_lsn,
                reason,
            });
            scan.next_lsn = Some(expected_lsn);
            reactivate_previous(&mut scan);
            salvage(
                &bytes,
                SEGMENT_HEADER_BYTES,
                options.max_record_bytes,
                guess_format(&bytes),
                &mut scan.salvaged,
            );
            salvage_rest(fs, &mut remaining, options, &mut scan)?;
            break;
        }
        let mut lsn = segment.first_lsn;
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut damaged = false;
        let format = segment.format;
        while offset < bytes.len() {
            let problem = match decode_record(&bytes, offset, options.max_record_bytes, format) {
                Decoded::Record {
                    group,
                    payload,
                    next,
                    ..
                } => {
                    scan.records.push(WalRecord {
                        lsn,
                        group,
                        payload: payload.to_vec(),
                    });
                    lsn += 1;
                    offset = next;
                    continue;
                }
                Decoded::Incomplete => "record cut short".to_string(),
                Decoded::ZeroTail => "zero-filled bytes where a record should be".to_string(),
                Decoded::Invalid { reason } => reason,
            };
            // Only the newest segment holds records written after the last fsync.
            if is_newest && !proven_durable(&bytes, offset, lsn, options.max_record_bytes, format) {
                scan.torn_tail = Some((segment.path.clone(), offset, bytes.len()));
                break;
            }
            let why = if is_newest {
                "a later record was written after it had been synced, so it is not a torn write"
            } else {
                "in a sealed segment, which was synced whole"
            };
            scan.damage = Some(Damage {
                path: segment.path.clone(),
                offset: offset as u64,
                lsn,
                reason: format!("{problem} ({why})"),
            });
            salvage(
                &bytes,
                offset,
                options.max_record_bytes,
                format,
                &mut scan.salvaged,
            );
            salvage_rest(fs, &mut remaining, options, &mut scan)?;
            damaged = true;
            break;
        }
        scan.next_lsn = Some(lsn);
        if is_newest || damaged {
            // The active segment: what a repair keeps of a damaged one ends at the damage.
            scan.active_len = offset as u64;
        } else {
            segment.sealed_bytes = bytes.len() as u64;
            scan.sealed_bytes += segment.sealed_bytes;
        }
        scan.kept.push(segment);
        if damaged {
            break;
        }
    }
    Ok(scan)
}

/// After damage: notes every later segment for removal and salvages its valid records.
fn salvage_rest(
    fs: &dyn FileSystem,
    remaining: &mut impl Iterator<Item = (usize, Segment)>,
    options: &WalOptions,
    scan: &mut Scan,
) -> Result<()> {
    for (_, later) in remaining {
        let bytes = fs
            .read(&later.path)
            .map_err(|e| StorageError::io("read", &later.path, e))?;
        let format = decode_segment_header(&bytes).map_or_else(|_| guess_format(&bytes), |h| h.1);
        salvage(
            &bytes,
            SEGMENT_HEADER_BYTES,
            options.max_record_bytes,
            format,
            &mut scan.salvaged,
        );
        scan.after_damage.push(later.path);
    }
    Ok(())
}

/// Creates a segment file with its header, durable together with its directory entry.
fn create_segment(
    fs: &dyn crate::fs::FileSystem,
    dir: &Path,
    segment: &Segment,
) -> Result<Box<dyn StorageFile>> {
    let mut file = fs
        .create(&segment.path)
        .map_err(|e| StorageError::io("create", &segment.path, e))?;
    file.append(&encode_segment_header(segment.first_lsn))
        .and_then(|()| file.sync_data())
        .map_err(|e| StorageError::io("write header of", &segment.path, e))?;
    fs.sync_dir(dir)
        .map_err(|e| StorageError::io("sync directory", dir, e))?;
    Ok(file)
}
