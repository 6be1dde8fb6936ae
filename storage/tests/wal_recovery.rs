//! Recovery of the WAL from damaged files on the real disk: every truncation of the tail is a
//! torn write that recovery cuts away, every flipped bit anywhere but in the last record is damage
//! that open reports with the file and offset (`wal_damage.rs` covers the rule exhaustively).

use std::path::{Path, PathBuf};

use storage::record::RECORD_HEADER_BYTES;
use storage::wal::{Lsn, SEGMENT_HEADER_BYTES};
use storage::{StdFs, StorageError, SyncPolicy, Wal, WalOptions, GROUP_ZERO};

/// A scratch directory on tmpfs when there is one: the bit-flip test reopens the log thousands of
/// times, each with fsyncs.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

fn options(segment_max_bytes: u64) -> WalOptions {
    WalOptions {
        segment_max_bytes,
        max_record_bytes: 1 << 20,
        sync: SyncPolicy::Always,
        repair: false,
    }
}

/// Payloads with no zero byte, so a zero-filled region never looks like data.
fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((i * 31 + j * 7) % 251 + 1) as u8)
        .collect()
}

fn write_log(dir: &Path, batches: &[Vec<Vec<u8>>], segment_max_bytes: u64) {
    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir, options(segment_max_bytes)).unwrap();
    assert!(recovered.records.is_empty());
    for batch in batches {
        wal.append(GROUP_ZERO, batch).unwrap();
    }
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    paths.sort();
    paths
}

/// A reopened log, the records it recovered, and the offset of a torn tail it cut.
type Reopened = (Wal, Vec<(Lsn, Vec<u8>)>, Option<u64>);

fn reopen(dir: &Path) -> Result<Reopened, StorageError> {
    let (wal, recovered) = Wal::open(StdFs::shared(), dir, options(4096))?;
    let torn = recovered.torn_tail.map(|t| t.offset);
    let records = recovered
        .records
        .into_iter()
        .map(|record| {
            assert_eq!(record.group, GROUP_ZERO, "LSN {}", record.lsn);
            (record.lsn, record.payload)
        })
        .collect();
    Ok((wal, records, torn))
}

#[test]
fn records_survive_reopen_across_segments() {
    let dir = scratch();
    let batches: Vec<Vec<Vec<u8>>> = (0..20)
        .map(|b| (0..5).map(|i| payload(b * 5 + i, 100 + i)).collect())
        .collect();
    write_log(dir.path(), &batches, 2048);
    assert!(
        segments(dir.path()).len() > 3,
        "the log rolled into several segments"
    );
    let (_, records, torn) = reopen(dir.path()).unwrap();
    let expected: Vec<Vec<u8>> = batches.concat();
    assert_eq!(
        records.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(
        records.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<_>>()
    );
    assert_eq!(torn, None);
}

#[test]
fn truncation_at_every_offset_of_the_last_records_recovers_the_complete_prefix() {
    let template = scratch();
    let records: Vec<Vec<u8>> = (0..6).map(|i| payload(i, 40 + i * 13)).collect();
    // Three batches of two: the cut can fall in any of the last records.
    let batches: Vec<Vec<Vec<u8>>> = records.chunks(2).map(|c| c.to_vec()).collect();
    write_log(template.path(), &batches, 1 << 20);
    let segment = segments(template.path()).pop().unwrap();
    let full = std::fs::read(&segment).unwrap();
    // Offsets at which each record ends.
    let mut ends = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    for record in &records {
        at += RECORD_HEADER_BYTES + record.len();
        ends.push(at);
    }
    let cut_from = ends[2]; // every byte of the last three records
    for cut in cut_from..=full.len() {
        let dir = scratch();
        let copy = dir.path().join(segment.file_name().unwrap());
        std::fs::write(&copy, &full[..cut]).unwrap();
        let (mut wal, recovered, torn) =
            reopen(dir.path()).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        assert_eq!(recovered.len(), complete, "cut at {cut}");
        assert_eq!(
            recovered.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>(),
            records[..complete]
        );
        let at_boundary = ends.contains(&cut);
        assert_eq!(
            torn.is_some(),
            !at_boundary,
            "cut at {cut}: torn tail reported iff mid-record"
        );
        assert_eq!(
            std::fs::metadata(&copy).unwrap().len() as usize,
            ends[complete - 1],
            "tail truncated on disk"
        );
        // The log is usable again: a new record lands after the prefix and survives reopen.
        wal.append(GROUP_ZERO, &[b"after recovery".to_vec()])
            .unwrap();
        drop(wal);
        let (_, again, torn) = reopen(dir.path()).unwrap();
        assert_eq!(again.len(), complete + 1);
        assert_eq!(again.last().unwrap().1, b"after recovery");
        assert_eq!(torn, None);
    }
}

#[test]
fn a_zero_filled_tail_is_torn_not_corrupt() {
    let dir = scratch();
    write_log(
        dir.path(),
        &[vec![payload(1, 50)], vec![payload(2, 2000)]],
        1 << 20,
    );
    let segment = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    // The file's length reached the disk but the second record's later sectors did not.
    let second_start = SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 50;
    let boundary = (second_start + 100).next_multiple_of(512);
    bytes[boundary..].fill(0);
    std::fs::write(&segment, &bytes).unwrap();
    let (_, records, torn) = reopen(dir.path()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(torn, Some(second_start as u64));
}

#[test]
fn every_flipped_bit_is_detected_as_corruption_naming_file_and_offset() {
    let template = scratch();
    // Small segments: the flips land in sealed segments and in the newest one.
    let batches: Vec<Vec<Vec<u8>>> = (0..6)
        .map(|b| vec![payload(b * 2, 60), payload(b * 2 + 1, 70)])
        .collect();
    write_log(template.path(), &batches, 300);
    let paths = segments(template.path());
    assert!(paths.len() >= 3);
    for (segment_position, segment) in paths.iter().enumerate() {
        let clean = std::fs::read(segment).unwrap();
        for bit in 0..clean.len() * 8 {
            let dir = scratch();
            for other in &paths {
                std::fs::copy(other, dir.path().join(other.file_name().unwrap())).unwrap();
            }
            let mut damaged = clean.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let target = dir.path().join(segment.file_name().unwrap());
            std::fs::write(&target, &damaged).unwrap();
            let in_last_batch = segment_position + 1 == paths.len()
                && bit / 8 >= clean.len() - (2 * RECORD_HEADER_BYTES + 60 + 70);
            match reopen(dir.path()) {
                // A flip in the last batch is indistinguishable from a torn write of it.
                Ok((_, records, Some(_))) if in_last_batch => {
                    let in_second = bit / 8 >= clean.len() - (RECORD_HEADER_BYTES + 70);
                    let kept = if in_second { 11 } else { 10 };
                    assert_eq!(records.len(), kept, "bit {bit}: the flip on is dropped");
                }
                Err(StorageError::Damaged(report)) => {
                    let (path, offset) = (&report.damage.path, report.damage.offset);
                    assert_eq!(path, &target, "segment {segment_position} bit {bit}");
                    // The reported offset is the start of the record (or header) holding the bit.
                    assert!(
                        offset as usize <= bit / 8,
                        "offset {offset} after the flipped byte {}",
                        bit / 8
                    );
                }
                Err(other) => {
                    panic!("segment {segment_position} bit {bit}: unexpected error {other}")
                }
                Ok((_, records, _)) => panic!(
                    "segment {segment_position} bit {bit}: flip not detected, {} records recovered",
                    records.len()
                ),
            }
        }
    }
}

#[test]
fn a_missing_middle_segment_is_corruption() {
    let dir = scratch();
    let batches: Vec<Vec<Vec<u8>>> = (0..8).map(|b| vec![payload(b, 120)]).collect();
    write_log(dir.path(), &batches, 300);
    let paths = segments(dir.path());
    assert!(paths.len() >= 3);
    std::fs::remove_file(&paths[1]).unwrap();
    let error = reopen(dir.path()).err().expect("a gap must not open");
    assert!(matches!(error, StorageError::Damaged(_)), "{error}");
    assert!(error.to_string().contains("gap"), "{error}");
}

#[test]
fn oversized_and_empty_records_are_refused_and_lose_nothing() {
    let dir = scratch();
    let (mut wal, _) = Wal::open(StdFs::shared(), dir.path(), options(1 << 20)).unwrap();
    wal.append(GROUP_ZERO, &[b"kept".to_vec()]).unwrap();
    let too_big = vec![1u8; (1 << 20) + 1];
    assert!(matches!(
        wal.append(GROUP_ZERO, &[b"x".to_vec(), too_big]),
        Err(StorageError::RecordTooLarge { .. })
    ));
    assert!(matches!(
        wal.append(GROUP_ZERO, &[Vec::<u8>::new()]),
        Err(StorageError::RecordTooLarge { len: 0, .. })
    ));
    wal.append(GROUP_ZERO, &[b"also kept".to_vec()]).unwrap();
    drop(wal);
    let (_, records, _) = reopen(dir.path()).unwrap();
    assert_eq!(
        records,
        vec![(1, b"kept".to_vec()), (2, b"also kept".to_vec())]
    );
}

#[test]
fn purge_removes_only_segments_wholly_below_the_lsn() {
    let dir = scratch();
    let (mut wal, _) = Wal::open(StdFs::shared(), dir.path(), options(300)).unwrap();
    for i in 0..10 {
        wal.append(GROUP_ZERO, &[payload(i, 120)]).unwrap();
    }
    let before = wal.segment_count();
    let removed = wal.purge_before(6).unwrap();
    assert!(removed > 0 && wal.segment_count() == before - removed);
    drop(wal);
    let (_, records, _) = reopen(dir.path()).unwrap();
    assert!(
        records.first().unwrap().0 <= 6,
        "records from LSN 6 on are kept"
    );
    assert_eq!(records.last().unwrap().0, 10);
}

#[test]
fn a_torn_new_segment_header_makes_the_previous_segment_active_again() {
    let dir = scratch();
    let options = || WalOptions {
        segment_max_bytes: 300,
        max_record_bytes: 1 << 20,
        sync: SyncPolicy::Always,
        repair: false,
    };
    let (mut wal, _) = Wal::open(StdFs::shared(), dir.path(), options()).unwrap();
    for i in 0..4 {
        wal.append(GROUP_ZERO, &[payload(i, 100)]).unwrap(); // two records fill a 300-byte segment
    }
    assert_eq!(wal.segment_count(), 2);
    let next = wal.next_lsn();
    drop(wal);
    // A crash right after creating the next segment: its header never reached the disk.
    std::fs::write(dir.path().join(format!("{next:020}.wal")), [0u8; 10]).unwrap();
    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).unwrap();
    assert_eq!(recovered.records.len(), 4);
    assert_eq!(wal.segment_count(), 2, "the torn segment is gone");
    // The previous segment is full: the next record must start a new segment, not grow it.
    wal.append(GROUP_ZERO, &[payload(9, 100)]).unwrap();
    assert_eq!(wal.segment_count(), 3);
    let on_disk: u64 = segments(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(wal.size_bytes(), on_disk);
}
