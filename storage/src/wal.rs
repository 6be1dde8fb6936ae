//! The segmented write-ahead log: append records in batches made durable by one `fdatasync`
//! (group commit), and recover them after a crash.
//!
//! A log is a directory of segment files named by the log sequence number (LSN) of their first
//! record, `00000000000000000001.wal`. Each segment starts with a [`SEGMENT_HEADER_BYTES`]-byte
//! header (magic, format version, first LSN, checksum) followed by records framed as described in
//! [`crate::record`]. Only the newest segment is ever written; when it reaches
//! `segment_max_bytes` it is synced and sealed, and a new one begins.
//!
//! Recovery ([`Wal::open`]) tells a torn tail from corruption:
//! - an incomplete or zero-filled record at the end of the newest segment is a write that never
//!   finished, so it was never acknowledged: it is truncated away (and reported in
//!   [`Recovered::torn_tail`]);
//! - a checksum mismatch or an impossible length anywhere else, or a gap between segments, is
//!   corruption: open fails with [`StorageError::Corrupt`] naming the file and the offset, because
//!   the damaged record may have been acknowledged and must not be silently dropped.
//!
//! After a failed write the log restores its previous length (so a full disk loses nothing and the
//! log stays valid); after a failed fsync it refuses further writes until reopened, because the
//! kernel may have dropped the dirty pages and a retried fsync would lie.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, StorageError};
use crate::fs::{join, SharedFs, StorageFile};
use crate::record::{decode_record, encode_record, Decoded, RECORD_HEADER_BYTES};

/// A log sequence number: the position of a record in the log, starting at 1.
pub type Lsn = u64;

/// Bytes of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 24;
const SEGMENT_MAGIC: &[u8; 7] = b"RLGWAL\0";
/// The segment format this code writes; a segment with another version is refused.
pub const SEGMENT_FORMAT_VERSION: u8 = 1;

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
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_max_bytes: 64 * 1024 * 1024,
            max_record_bytes: 32 * 1024 * 1024,
            sync: SyncPolicy::Always,
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

/// What [`Wal::open`] read back: every intact record, in order.
#[derive(Debug, Default)]
pub struct Recovered {
    pub records: Vec<(Lsn, Vec<u8>)>,
    pub torn_tail: Option<TornTail>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
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

/// The first LSN recorded in a segment header, or why the header is not valid.
fn decode_segment_header(bytes: &[u8]) -> std::result::Result<Lsn, String> {
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
    if header[7] != SEGMENT_FORMAT_VERSION {
        return Err(format!(
            "segment format version {} (this build reads {SEGMENT_FORMAT_VERSION})",
            header[7]
        ));
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&header[8..16]);
    Ok(u64::from_le_bytes(lsn))
}

/// Whether the undecodable record at `offset` of the newest segment is a write that never
/// finished rather than damage to a finished one.
///
/// Writes that were never synced may reach the disk partly: each keeps some prefix of its blocks,
/// and a region that did not arrive reads as zeros (the file grew but its blocks were not
/// written). A finished record is rarely like that: its header checksum reads as zero with
/// probability 2^-32, and bit rot does not write zeros over a record's end. So the
/// record is taken as unfinished when its header's checksum field reads as zero (the header
/// itself did not fully arrive), or when the header is intact but the payload's final byte is
/// zero (its last block did not arrive). The second rule can mistake bit rot in a record whose
/// payload legitimately ends in a zero byte for a torn write; docs/storage.md discusses it.
fn looks_unfinished(bytes: &[u8], offset: usize) -> bool {
    let header = &bytes[offset..(offset + RECORD_HEADER_BYTES).min(bytes.len())];
    if header.len() < RECORD_HEADER_BYTES || header[8..12] == [0, 0, 0, 0] {
        return true;
    }
    let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let header_intact = crc32fast::hash(&header[0..8]).to_le_bytes() == header[8..12];
    let record_end = offset + RECORD_HEADER_BYTES + payload_len;
    header_intact && record_end <= bytes.len() && bytes[record_end - 1] == 0
}

impl Wal {
    /// Opens (or creates) the log in `dir`, recovering every intact record.
    pub fn open(fs: SharedFs, dir: &Path, options: WalOptions) -> Result<(Wal, Recovered)> {
        fs.create_dir_all(dir)
            .map_err(|e| StorageError::io("create directory", dir, e))?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs.sync_dir(parent)
            .map_err(|e| StorageError::io("sync directory", parent, e))?;

        let names = fs
            .list_dir(dir)
            .map_err(|e| StorageError::io("list directory", dir, e))?;
        let mut segments: Vec<Segment> = names
            .iter()
            .filter_map(|name| {
                parse_segment_name(name).map(|first_lsn| Segment {
                    first_lsn,
                    path: join(dir, name),
                    sealed_bytes: 0,
                })
            })
            .collect();
        segments.sort_by_key(|segment| segment.first_lsn);

        let mut recovered = Recovered::default();
        let mut next_lsn: Option<Lsn> = None;
        let mut sealed_bytes = 0u64;
        let mut active_len = 0u64;
        let mut kept: Vec<Segment> = Vec::with_capacity(segments.len());
        let segment_count = segments.len();
        for (position, mut segment) in segments.into_iter().enumerate() {
            let is_newest = position + 1 == segment_count;
            let bytes = fs
                .read(&segment.path)
                .map_err(|e| StorageError::io("read", &segment.path, e))?;
            let corrupt = |offset: usize, reason: String| StorageError::Corrupt {
                path: segment.path.clone(),
                offset: offset as u64,
                reason,
            };
            let header_lsn = match decode_segment_header(&bytes) {
                Ok(lsn) => lsn,
                Err(_)
                    if is_newest
                        && (bytes.len() < SEGMENT_HEADER_BYTES
                            || bytes.iter().all(|&b| b == 0)) =>
                {
                    // Created but its header never became durable: it holds no record.
                    tracing::warn!(path = %segment.path.display(), "removing a segment whose header was torn");
                    fs.remove_file(&segment.path)
                        .map_err(|e| StorageError::io("remove", &segment.path, e))?;
                    fs.sync_dir(dir)
                        .map_err(|e| StorageError::io("sync directory", dir, e))?;
                    next_lsn.get_or_insert(segment.first_lsn);
                    // The previous segment, scanned as sealed, becomes the active one again.
                    if let Some(previous) = kept.last_mut() {
                        active_len = previous.sealed_bytes;
                        sealed_bytes -= previous.sealed_bytes;
                        previous.sealed_bytes = 0;
                    }
                    continue;
                }
                Err(reason) => return Err(corrupt(0, reason)),
            };
            if header_lsn != segment.first_lsn {
                return Err(corrupt(
                    0,
                    format!(
                        "header says first LSN {header_lsn}, file name says {}",
                        segment.first_lsn
                    ),
                ));
            }
            if let Some(expected) = next_lsn {
                if segment.first_lsn != expected {
                    return Err(corrupt(
                        0,
                        format!("gap in the log: expected a segment starting at LSN {expected}"),
                    ));
                }
            }
            let mut lsn = segment.first_lsn;
            let mut offset = SEGMENT_HEADER_BYTES;
            while offset < bytes.len() {
                match decode_record(&bytes, offset, options.max_record_bytes) {
                    Decoded::Record { payload, next } => {
                        recovered.records.push((lsn, payload.to_vec()));
                        lsn += 1;
                        offset = next;
                    }
                    Decoded::Incomplete | Decoded::ZeroTail if is_newest => break,
                    Decoded::Invalid { .. } if is_newest && looks_unfinished(&bytes, offset) => {
                        break
                    }
                    Decoded::Incomplete => {
                        return Err(corrupt(
                            offset,
                            "record cut short in a sealed segment".into(),
                        ))
                    }
                    Decoded::ZeroTail => {
                        return Err(corrupt(
                            offset,
                            "zero-filled bytes in a sealed segment".into(),
                        ))
                    }
                    Decoded::Invalid { reason } => return Err(corrupt(offset, reason)),
                }
            }
            if offset < bytes.len() {
                debug_assert!(is_newest);
                let discarded_bytes = (bytes.len() - offset) as u64;
                tracing::warn!(path = %segment.path.display(), offset, discarded_bytes, "truncating a torn tail");
                let mut file = fs
                    .open_append(&segment.path)
                    .map_err(|e| StorageError::io("open", &segment.path, e))?;
                file.set_len(offset as u64)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| StorageError::io("truncate torn tail of", &segment.path, e))?;
                recovered.torn_tail = Some(TornTail {
                    path: segment.path.clone(),
                    offset: offset as u64,
                    discarded_bytes,
                });
            }
            if is_newest {
                active_len = offset as u64;
            } else {
                segment.sealed_bytes = bytes.len() as u64;
                sealed_bytes += segment.sealed_bytes;
            }
            next_lsn = Some(lsn);
            kept.push(segment);
        }

        let next_lsn = next_lsn.unwrap_or(1);
        let (active, segments) = match kept.last() {
            Some(newest) => {
                let file = fs
                    .open_append(&newest.path)
                    .map_err(|e| StorageError::io("open", &newest.path, e))?;
                (file, kept)
            }
            None => {
                let segment = Segment {
                    first_lsn: next_lsn,
                    path: join(dir, &segment_name(next_lsn)),
                    sealed_bytes: 0,
                };
                let file = create_segment(&*fs, dir, &segment)?;
                active_len = SEGMENT_HEADER_BYTES as u64;
                (file, vec![segment])
            }
        };
        let wal = Wal {
            fs,
            dir: dir.to_path_buf(),
            options,
            segments,
            active,
            active_len,
            sealed_bytes,
            next_lsn,
            durable_before: next_lsn,
            poisoned: false,
            batch_buffer: Vec::new(),
        };
        Ok((wal, recovered))
    }

    /// Appends `payloads` as consecutive records with one write, then (under
    /// [`SyncPolicy::Always`]) one `fdatasync`. Returns their LSNs. All or nothing: on error no
    /// record of the batch is in the log.
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<RangeInclusive<Lsn>> {
        if self.poisoned {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        debug_assert!(!payloads.is_empty(), "an empty batch is a caller bug");
        for payload in payloads {
            let len = payload.as_ref().len();
            if len == 0 || len > self.options.max_record_bytes {
                return Err(StorageError::RecordTooLarge {
                    len,
                    max: self.options.max_record_bytes,
                });
            }
        }
        let mut buffer = std::mem::take(&mut self.batch_buffer);
        buffer.clear();
        for payload in payloads {
            encode_record(payload.as_ref(), &mut buffer);
        }
        let result = self.write_batch(&buffer, payloads.len() as u64);
        self.batch_buffer = buffer;
        result
    }

    fn write_batch(&mut self, buffer: &[u8], count: u64) -> Result<RangeInclusive<Lsn>> {
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
        if self.options.sync == SyncPolicy::Always {
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
            sealed_bytes: 0,
        };
        let file =
            create_segment(&*self.fs, &self.dir, &segment).inspect_err(|_| self.poisoned = true)?;
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

    /// The sync policy this log was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.options.sync
    }
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
