//! The torn-tail rule, exhaustively on a small log: only the last batch (written after the last
//! fsync) can be torn, so a damaged record is truncated away only when no valid record written
//! after it had been synced follows it. Every byte of every record is flipped in turn, and every
//! truncation offset and zero-filled tail is tried: reopening either fails naming the damage, or
//! keeps every record before it and drops only records of the last batch. Payloads end in zero
//! bytes and embed encoded records on purpose: both once fooled recovery into truncating
//! acknowledged records as a "torn tail". Records belong to different Raft groups (some batches
//! mix them), with group ids using all eight bytes: a flipped group-id byte must be damage or a
//! torn write exactly like any other byte, and every kept record must come back with its group.

use std::path::{Path, PathBuf};

use storage::record::{encode_record, RECORD_HEADER_BYTES};
use storage::wal::{Lsn, WalRecord, SEGMENT_HEADER_BYTES};
use storage::{GroupId, StdFs, StorageError, SyncPolicy, Wal, WalOptions};

const SEGMENT_MAX_BYTES: u64 = 120;

fn options() -> WalOptions {
    WalOptions {
        segment_max_bytes: SEGMENT_MAX_BYTES,
        max_record_bytes: 1 << 16,
        sync: SyncPolicy::Always,
        repair: false,
    }
}

/// A scratch directory on tmpfs when there is one (thousands of reopens, each with fsyncs).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

/// Payloads that look like unfinished writes to a naive check: trailing zeros, zero runs, and
/// one that carries a whole encoded record inside it.
fn payloads() -> Vec<Vec<Vec<u8>>> {
    let mut embedded = b"prefix".to_vec();
    encode_record(3, b"a record inside a value", 1_000_000, &mut embedded);
    vec![
        vec![vec![1, 2, 3, 0], b"plain".to_vec()],
        vec![vec![0, 0, 0, 7, 0]],
        vec![embedded, vec![9; 40], vec![5, 0, 0, 0]],
        vec![b"hard state ending in zero\x00".to_vec()],
        vec![vec![0xFF; 30], vec![0; 3]],
        vec![
            b"second to last".to_vec(),
            b"last, ends in zero\x00".to_vec(),
        ],
    ]
}

/// The group of record `record` of batch `batch`: different within a batch, and with every byte
/// of the id in use somewhere.
fn group_of(batch: usize, record: usize) -> GroupId {
    match (batch + record) % 3 {
        0 => 0,
        1 => 0x0102_0304_0506_0708 + batch as u64,
        _ => u64::MAX - record as u64,
    }
}

/// Where a record's group id sits within it (record.rs, format 3).
const GROUP_ID_BYTES: std::ops::Range<usize> = 16..24;

/// One record's place on disk.
#[derive(Debug, Clone)]
struct Placed {
    lsn: Lsn,
    /// Which `append` wrote it.
    batch: usize,
    segment: usize,
    start: usize,
    end: usize,
    group: GroupId,
    payload: Vec<u8>,
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

/// Writes the template log and works out where each record landed.
fn template() -> (tempfile::TempDir, Vec<PathBuf>, Vec<Placed>) {
    let dir = scratch();
    let (mut wal, _) = Wal::open(StdFs::shared(), dir.path(), options()).expect("open");
    for (batch, records) in payloads().into_iter().enumerate() {
        let grouped: Vec<(GroupId, Vec<u8>)> = records
            .into_iter()
            .enumerate()
            .map(|(record, payload)| (group_of(batch, record), payload))
            .collect();
        wal.append_mixed(&grouped).expect("append");
    }
    drop(wal);
    let paths = segments(dir.path());
    assert!(
        paths.len() >= 3,
        "the log spans sealed segments and a newest one"
    );
    let mut placed = Vec::new();
    let mut all = payloads()
        .into_iter()
        .enumerate()
        .flat_map(|(batch, records)| {
            records
                .into_iter()
                .enumerate()
                .map(move |(record, r)| (batch, group_of(batch, record), r))
        });
    let mut lsn = 1;
    for (segment, path) in paths.iter().enumerate() {
        let len = std::fs::metadata(path).expect("stat").len() as usize;
        let mut offset = SEGMENT_HEADER_BYTES;
        while offset < len {
            let (batch, group, payload) = all.next().expect("as many records as appended");
            let end = offset + RECORD_HEADER_BYTES + payload.len();
            placed.push(Placed {
                lsn,
                batch,
                segment,
                start: offset,
                end,
                group,
                payload,
            });
            lsn += 1;
            offset = end;
        }
        assert_eq!(offset, len, "records tile segment {segment}");
    }
    assert!(all.next().is_none());
    (dir, paths, placed)
}

/// What reopening a damaged copy gave: the records, or why it refused.
type Reopened = Result<Vec<WalRecord>, StorageError>;

/// Copies the template into a fresh directory, lets `damage` edit one segment, and reopens.
fn reopen_damaged(
    paths: &[PathBuf],
    segment: usize,
    damage: impl FnOnce(&mut Vec<u8>),
) -> (tempfile::TempDir, PathBuf, Reopened) {
    let dir = scratch();
    for path in paths {
        std::fs::copy(path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let target = dir.path().join(paths[segment].file_name().expect("name"));
    let mut bytes = std::fs::read(&target).expect("read");
    damage(&mut bytes);
    std::fs::write(&target, &bytes).expect("write");
    let result = Wal::open(StdFs::shared(), dir.path(), options()).map(|(_, r)| r.records);
    (dir, target, result)
}

fn expected_prefix(placed: &[Placed], count: usize) -> Vec<WalRecord> {
    placed[..count]
        .iter()
        .map(|p| WalRecord {
            lsn: p.lsn,
            group: p.group,
            payload: p.payload.clone(),
        })
        .collect()
}

#[test]
fn every_flipped_byte_is_damage_unless_it_is_in_the_last_batch() {
    let (_template, paths, placed) = template();
    let newest = paths.len() - 1;
    let last_batch = placed[placed.len() - 1].batch;
    assert!(placed.iter().filter(|p| p.batch == last_batch).count() > 1);
    assert!(
        placed.iter().any(|p| p.group == 0) && placed.iter().any(|p| p.group > u32::MAX as u64)
    );
    let mut refused = 0;
    let mut group_byte_flips = 0;
    for (position, record) in placed.iter().enumerate() {
        for byte in record.start..record.end {
            if GROUP_ID_BYTES.contains(&(byte - record.start)) {
                group_byte_flips += 1;
            }
            for mask in [0x01u8, 0x80] {
                let (_dir, target, result) =
                    reopen_damaged(&paths, record.segment, |bytes| bytes[byte] ^= mask);
                let at = format!(
                    "record {position} (lsn {}) byte {byte} mask {mask:#x}",
                    record.lsn
                );
                match result {
                    Err(StorageError::Damaged(report)) => {
                        assert_eq!(report.damage.path, target, "{at}");
                        assert_eq!(report.damage.offset as usize, record.start, "{at}");
                        assert_eq!(report.damage.lsn, record.lsn, "{at}");
                        let message = report.to_string();
                        assert!(
                            message.contains("--repair"),
                            "{at}: says what to do: {message}"
                        );
                        refused += 1;
                    }
                    Err(other) => panic!("{at}: unexpected error {other}"),
                    Ok(records) => {
                        // Only the last batch may have been unsynced at a crash, so only a flip
                        // there may pass as a torn write; all of it from the flip on goes.
                        assert!(
                            record.batch == last_batch && record.segment == newest,
                            "{at}: a damaged record with valid ones after it was truncated away \
                             ({} of {} records kept)",
                            records.len(),
                            placed.len()
                        );
                        assert_eq!(records, expected_prefix(&placed, position), "{at}");
                    }
                }
            }
        }
    }
    assert!(refused > 0);
    assert_eq!(group_byte_flips, placed.len() * GROUP_ID_BYTES.len());
}

#[test]
fn a_flipped_segment_header_byte_is_damage() {
    let (_template, paths, _placed) = template();
    for segment in 0..paths.len() {
        for byte in 0..SEGMENT_HEADER_BYTES {
            let (_dir, target, result) =
                reopen_damaged(&paths, segment, |bytes| bytes[byte] ^= 0x01);
            match result {
                Err(StorageError::Damaged(report)) => assert_eq!(report.damage.path, target),
                other => panic!(
                    "segment {segment} header byte {byte}: {:?}",
                    other.map(|r| r.len())
                ),
            }
        }
    }
}

#[test]
fn every_truncation_or_zeroed_tail_keeps_every_record_wholly_before_the_cut() {
    let (_template, paths, placed) = template();
    let newest = paths.len() - 1;
    let newest_len = std::fs::metadata(&paths[newest]).expect("stat").len() as usize;
    let sealed_records = placed.iter().filter(|p| p.segment != newest).count();
    let newest_bytes = std::fs::read(&paths[newest]).expect("read");
    for cut in 0..newest_len {
        let kept = placed
            .iter()
            .filter(|p| p.segment != newest || p.end <= cut)
            .count();
        // Zeroing bytes that were zero already (a payload's trailing zeros) changes nothing.
        let kept_when_zeroed = placed
            .iter()
            .filter(|p| {
                p.segment != newest
                    || p.end <= cut
                    || (p.start <= cut && newest_bytes[cut..p.end].iter().all(|&b| b == 0))
            })
            .count();
        // A short file: the write's later blocks never reached the disk and neither did its size.
        let (_dir, _, truncated) = reopen_damaged(&paths, newest, |bytes| bytes.truncate(cut));
        // The size reached the disk but the data from `cut` on did not: zeros.
        let (_dir, _, zeroed) = reopen_damaged(&paths, newest, |bytes| bytes[cut..].fill(0));
        for (how, result, kept) in [
            ("truncated", truncated, kept),
            ("zero-filled", zeroed, kept_when_zeroed),
        ] {
            let records = result.unwrap_or_else(|e| panic!("{how} at {cut}: {e}"));
            let expected = if cut < SEGMENT_HEADER_BYTES {
                sealed_records
            } else {
                kept
            };
            assert_eq!(
                records,
                expected_prefix(&placed, expected),
                "{how} at {cut}"
            );
        }
    }
}

#[test]
fn a_repair_cuts_at_the_damage_and_reports_it() {
    let (_template, paths, placed) = template();
    let victim = &placed[2];
    let dir = scratch();
    for path in &paths {
        std::fs::copy(path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    let target = dir
        .path()
        .join(paths[victim.segment].file_name().expect("name"));
    let mut bytes = std::fs::read(&target).expect("read");
    bytes[victim.start + RECORD_HEADER_BYTES] ^= 0x01;
    std::fs::write(&target, &bytes).expect("write");

    let inspection = Wal::inspect(&StdFs, dir.path(), &options()).expect("inspect");
    assert_eq!(inspection.damage.as_ref().map(|d| d.lsn), Some(victim.lsn));
    assert_eq!(
        inspection.checksummed.len(),
        placed.len() - 1,
        "every record but the damaged one passes its checksum"
    );

    let repairing = WalOptions {
        repair: true,
        ..options()
    };
    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir.path(), repairing).expect("repair");
    assert_eq!(recovered.records, expected_prefix(&placed, 2));
    assert_eq!(recovered.repaired.map(|d| d.lsn), Some(victim.lsn));
    assert_eq!(wal.next_lsn(), victim.lsn);
    wal.append(7, &[b"after the repair".to_vec()])
        .expect("append after repair");
    drop(wal);
    let (_, again) = Wal::open(StdFs::shared(), dir.path(), options()).expect("sound again");
    let mut expected = expected_prefix(&placed, 2);
    expected.push(WalRecord {
        lsn: victim.lsn,
        group: 7,
        payload: b"after the repair".to_vec(),
    });
    assert_eq!(again.records, expected);
}
