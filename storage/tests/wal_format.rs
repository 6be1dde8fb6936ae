//! The WAL's segment formats across an upgrade.
//! - Format 3 (written): every record carries a Raft group id, which comes back on recovery.
//! - Format 2 (written before group ids, 20-byte record headers): read, every record as group 0,
//!   by the WAL and by the `LogStore` on top; the first write after the upgrade goes into a new
//!   format-3 segment (or, when the newest format-2 segment holds no record, its header is
//!   replaced), so a log may hold format-2 segments followed by format-3 ones. The torn-tail rule
//!   and damage reports work on format-2 segments too.
//! - Format 1 is refused with a message naming the version and what to do.
//!
//! - Entries appended borrowed (`LogStore::append_borrowed`, the node's path: each payload encoded
//!   once, straight into its record) are written byte for byte as the owned path writes them, so
//!   that change needed no format version.
//!
//! The format-2 fixtures are framed by hand here, as the previous build wrote them: production
//! code keeps no format-2 writer.

use std::path::{Path, PathBuf};

use storage::codec;
use storage::log_store::LogRecord;
use storage::wal::WalRecord;
use storage::{
    GroupId, HardState, LogStore, StdFs, StorageError, StoredEntry, StoredEntryRef, SyncPolicy,
    Wal, WalOptions, GROUP_ZERO,
};

fn options() -> WalOptions {
    WalOptions {
        segment_max_bytes: 1 << 20,
        max_record_bytes: 1 << 16,
        sync: SyncPolicy::Always,
        repair: false,
    }
}

/// A segment header as any version wrote it: magic, version, first LSN, reserved, CRC.
fn segment_header(version: u8, first_lsn: u64) -> Vec<u8> {
    let mut header = [0u8; 24];
    header[0..7].copy_from_slice(b"RLGWAL\0");
    header[7] = version;
    header[8..16].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header.to_vec()
}

/// A format-2 record: length, payload CRC, durability stamp, header CRC, payload.
fn v2_record(payload: &[u8], durable_before: u64, out: &mut Vec<u8>) {
    let mut header = [0u8; 20];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[4..8].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    header[8..16].copy_from_slice(&durable_before.to_le_bytes());
    let crc = crc32fast::hash(&header[0..16]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Writes a format-2 segment holding `batches` (each batch stamped as synced before it), starting
/// at `first_lsn`. Returns the path and the LSN after its last record.
fn write_v2_segment(dir: &Path, first_lsn: u64, batches: &[Vec<Vec<u8>>]) -> (PathBuf, u64) {
    std::fs::create_dir_all(dir).expect("create dir");
    let path = dir.join(format!("{first_lsn:020}.wal"));
    let mut bytes = segment_header(2, first_lsn);
    let mut lsn = first_lsn;
    for batch in batches {
        let durable_before = lsn;
        for payload in batch {
            v2_record(payload, durable_before, &mut bytes);
            lsn += 1;
        }
    }
    std::fs::write(&path, bytes).expect("write segment");
    (path, lsn)
}

fn segment_version(path: &Path) -> u8 {
    std::fs::read(path).expect("read segment")[7]
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

fn record(lsn: u64, group: GroupId, payload: &[u8]) -> WalRecord {
    WalRecord {
        lsn,
        group,
        payload: payload.to_vec(),
    }
}

#[test]
fn group_ids_round_trip_through_a_format_3_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = WalOptions {
        segment_max_bytes: 120,
        ..options()
    };
    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir.path(), small.clone()).expect("open");
    assert!(recovered.records.is_empty());
    let groups = [0, 1, 7, u32::MAX as u64 + 1, u64::MAX];
    let mut expected = Vec::new();
    for (i, &group) in groups.iter().enumerate() {
        let payload = format!("record {i} of group {group}").into_bytes();
        let lsns = wal
            .append(group, std::slice::from_ref(&payload))
            .expect("append");
        expected.push(record(*lsns.start(), group, &payload));
    }
    let mixed: Vec<(GroupId, Vec<u8>)> = vec![(9, b"nine".to_vec()), (0, b"zero".to_vec())];
    let lsns = wal.append_mixed(&mixed).expect("mixed batch");
    expected.push(record(*lsns.start(), 9, b"nine"));
    expected.push(record(*lsns.end(), 0, b"zero"));
    drop(wal);
    let paths = segments(dir.path());
    assert!(paths.len() > 1, "the records span segments");
    assert!(paths.iter().all(|p| segment_version(p) == 3));
    let (_, recovered) = Wal::open(StdFs::shared(), dir.path(), small).expect("reopen");
    assert_eq!(recovered.records, expected);
}

#[test]
fn a_format_2_log_is_read_as_group_zero_and_continues_in_format_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sealed, next) = write_v2_segment(
        dir.path(),
        1,
        &[
            vec![b"one".to_vec(), b"two".to_vec()],
            vec![b"three".to_vec()],
        ],
    );
    let (newest, next) = write_v2_segment(dir.path(), next, &[vec![b"four\0".to_vec()]]);
    assert_eq!(next, 5);
    let old = vec![
        record(1, GROUP_ZERO, b"one"),
        record(2, GROUP_ZERO, b"two"),
        record(3, GROUP_ZERO, b"three"),
        record(4, GROUP_ZERO, b"four\0"),
    ];

    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).expect("open v2");
    assert_eq!(recovered.records, old);
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(wal.next_lsn(), 5);
    wal.append(4, &[b"five".to_vec()])
        .expect("append after upgrade");
    wal.append(GROUP_ZERO, &[b"six".to_vec()]).expect("append");
    drop(wal);

    let paths = segments(dir.path());
    assert_eq!(paths.len(), 3, "the format-2 newest segment was sealed");
    assert_eq!(paths[0], sealed);
    assert_eq!(paths[1], newest);
    assert_eq!(segment_version(&paths[0]), 2);
    assert_eq!(
        segment_version(&paths[1]),
        2,
        "old segments are not rewritten"
    );
    assert_eq!(segment_version(&paths[2]), 3);
    let (_, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).expect("reopen");
    let mut expected = old;
    expected.push(record(5, 4, b"five"));
    expected.push(record(6, GROUP_ZERO, b"six"));
    assert_eq!(recovered.records, expected);
}

#[test]
fn an_empty_format_2_segment_gets_a_format_3_header_before_the_first_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sealed, next) = write_v2_segment(dir.path(), 1, &[vec![b"one".to_vec()]]);
    let (empty, _) = write_v2_segment(dir.path(), next, &[]);
    let (mut wal, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).expect("open");
    assert_eq!(recovered.records, vec![record(1, GROUP_ZERO, b"one")]);
    wal.append(3, &[b"two".to_vec()]).expect("append");
    drop(wal);
    assert_eq!(segments(dir.path()), vec![sealed.clone(), empty.clone()]);
    assert_eq!(segment_version(&sealed), 2);
    assert_eq!(segment_version(&empty), 3);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    let (_, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).expect("reopen");
    assert_eq!(
        recovered.records,
        vec![record(1, GROUP_ZERO, b"one"), record(2, 3, b"two")]
    );
}

#[test]
fn a_torn_tail_and_damage_in_format_2_segments_are_told_apart_as_before() {
    // A torn last batch of the newest format-2 segment is truncated.
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_v2_segment(
        dir.path(),
        1,
        &[vec![b"kept".to_vec()], vec![b"torn one".to_vec()]],
    );
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).expect("write");
    let (_, recovered) = Wal::open(StdFs::shared(), dir.path(), options()).expect("torn tail");
    assert_eq!(recovered.records, vec![record(1, GROUP_ZERO, b"kept")]);
    assert!(recovered.torn_tail.is_some());

    // A flipped byte in a record synced before a later one is damage, named by file and LSN.
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_v2_segment(
        dir.path(),
        1,
        &[
            vec![b"first".to_vec()],
            vec![b"damaged".to_vec()],
            vec![b"later".to_vec()],
        ],
    );
    let mut bytes = std::fs::read(&path).expect("read");
    let damaged_at = 24 + 20 + 5;
    bytes[damaged_at + 20] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    match Wal::open(StdFs::shared(), dir.path(), options()) {
        Err(StorageError::Damaged(report)) => {
            assert_eq!(report.damage.path, path);
            assert_eq!(report.damage.offset, damaged_at as u64);
            assert_eq!(report.damage.lsn, 2);
        }
        other => panic!("expected damage, got {:?}", other.map(|(_, r)| r.records)),
    }
}

#[test]
fn a_format_1_log_is_refused_naming_the_version_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = segment_header(1, 1);
    v2_record(b"from long ago", 1, &mut bytes);
    std::fs::write(dir.path().join(format!("{:020}.wal", 1)), bytes).expect("write");
    let error = match Wal::open(StdFs::shared(), dir.path(), options()) {
        Err(error) => error.to_string(),
        Ok((_, recovered)) => panic!("opened a format-1 log: {:?}", recovered.records),
    };
    assert!(error.contains("segment format version 1"), "{error}");
    assert!(error.contains("empty data directory"), "{error}");
}

fn entry(index: u64, term: u64) -> StoredEntry {
    StoredEntry {
        index,
        term,
        payload: format!("entry {index}").into_bytes(),
    }
}

fn encoded(record: &LogRecord) -> Vec<u8> {
    codec::encode(record, "log record").expect("encode")
}

#[test]
fn a_log_store_written_in_format_2_opens_and_keeps_working_after_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = HardState {
        term: 2,
        vote: Some(1),
        commit: 2,
    };
    let (_, next) = write_v2_segment(
        &dir.path().join("wal"),
        1,
        &[
            vec![
                encoded(&LogRecord::Entry(entry(1, 1))),
                encoded(&LogRecord::Entry(entry(2, 1))),
            ],
            vec![encoded(&LogRecord::HardState(state))],
            vec![encoded(&LogRecord::Entry(entry(3, 2)))],
        ],
    );
    assert_eq!(next, 5);
    let (mut log, recovered) =
        LogStore::open(StdFs::shared(), dir.path(), options()).expect("open v2 log store");
    assert_eq!(log.group(), GROUP_ZERO);
    assert_eq!(recovered.hard_state, state);
    assert_eq!(
        recovered.entries,
        vec![entry(1, 1), entry(2, 1), entry(3, 2)]
    );
    let newer = HardState { commit: 4, ..state };
    log.append(Some(newer), &[entry(4, 2)]).expect("append");
    drop(log);
    let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).expect("reopen");
    assert_eq!(recovered.hard_state, newer);
    assert_eq!(
        recovered.entries,
        vec![entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]
    );
    let versions: Vec<u8> = segments(&dir.path().join("wal"))
        .iter()
        .map(|p| segment_version(p))
        .collect();
    assert_eq!(versions, vec![2, 3]);
}

#[test]
fn a_log_store_refuses_a_record_of_another_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut wal, _) =
        Wal::open(StdFs::shared(), &dir.path().join("wal"), options()).expect("open");
    wal.append(GROUP_ZERO, &[encoded(&LogRecord::Entry(entry(1, 1)))])
        .expect("append");
    wal.append(5, &[encoded(&LogRecord::Entry(entry(2, 1)))])
        .expect("append");
    drop(wal);
    match LogStore::open(StdFs::shared(), dir.path(), options()) {
        Err(StorageError::Corrupt { reason, .. }) => {
            assert!(
                reason.contains("record #2 belongs to Raft group 5"),
                "{reason}"
            )
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok((_, recovered)) => panic!("replayed another group's entries: {:?}", recovered.entries),
    }
}

#[test]
fn a_repair_marker_written_before_the_upgrade_is_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_v2_segment(
        &dir.path().join("wal"),
        1,
        &[vec![encoded(&LogRecord::Entry(entry(1, 1)))]],
    );
    // The marker's fields in order (until, term, vote), encoded as the struct is, framed as a
    // format-2 record as the previous build framed it.
    let marker = codec::encode(&(9u64, 3u64, Some(2u64)), "repair marker").expect("encode");
    let mut bytes = Vec::new();
    v2_record(&marker, 0, &mut bytes);
    std::fs::write(dir.path().join("repair.marker"), bytes).expect("write marker");
    let (log, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).expect("open");
    assert_eq!(recovered.repair_until, Some(9));
    // The marker's term and vote were restored over the log's (older) hard state.
    assert_eq!(log.hard_state().term, 3);
    assert_eq!(log.hard_state().vote, Some(2));
}

/// Shaped like `consensus::EntryPayload` (what the node stores), with its bytes serialized one
/// by one (serde's `Vec<u8>`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Payload {
    Noop,
    Command(Vec<u8>),
}

/// The same shape borrowed, its bytes serialized in one piece (the node's mirror in mapping.rs).
#[derive(serde::Serialize)]
#[serde(rename = "Payload")]
enum PayloadRef<'a> {
    Noop,
    Command(codec::Bytes<'a>),
}

#[test]
fn borrowed_entries_are_written_byte_for_byte_as_owned_ones_and_replay_the_same() {
    let command = |i: u64| vec![i as u8; 300 * i as usize];
    let payloads: Vec<Payload> = (1..=6)
        .map(|i| match i % 3 {
            0 => Payload::Noop,
            _ => Payload::Command(command(i)),
        })
        .collect();
    let hard_state = HardState {
        term: 2,
        vote: Some(1),
        commit: 3,
    };
    // Owned: each payload encoded first, as the node did before.
    let owned_dir = tempfile::tempdir().expect("tempdir");
    let owned: Vec<StoredEntry> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| StoredEntry {
            index: i as u64 + 1,
            term: 2,
            payload: codec::encode(payload, "payload").expect("encode"),
        })
        .collect();
    {
        let (mut store, _) =
            LogStore::open(StdFs::shared(), owned_dir.path(), options()).expect("open");
        store.append(Some(hard_state), &owned[..4]).expect("append");
        store.append(None, &owned[4..]).expect("append");
    }
    // Borrowed, both through the per-byte shape and through the one-piece mirror.
    let borrowed_dir = tempfile::tempdir().expect("tempdir");
    let mirrored_dir = tempfile::tempdir().expect("tempdir");
    {
        let refs: Vec<StoredEntryRef<&Payload>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| StoredEntryRef {
                index: i as u64 + 1,
                term: 2,
                payload,
            })
            .collect();
        let (mut store, _) =
            LogStore::open(StdFs::shared(), borrowed_dir.path(), options()).expect("open");
        store
            .append_borrowed(Some(hard_state), &refs[..4])
            .expect("append");
        store.append_borrowed(None, &refs[4..]).expect("append");
        let refs: Vec<StoredEntryRef<PayloadRef<'_>>> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| StoredEntryRef {
                index: i as u64 + 1,
                term: 2,
                payload: match payload {
                    Payload::Noop => PayloadRef::Noop,
                    Payload::Command(bytes) => PayloadRef::Command(codec::Bytes(bytes)),
                },
            })
            .collect();
        let (mut store, _) =
            LogStore::open(StdFs::shared(), mirrored_dir.path(), options()).expect("open");
        store
            .append_borrowed(Some(hard_state), &refs[..4])
            .expect("append");
        store.append_borrowed(None, &refs[4..]).expect("append");
    }
    let bytes_of = |dir: &Path| -> Vec<Vec<u8>> {
        segments(&dir.join("wal"))
            .iter()
            .map(|path| std::fs::read(path).expect("read segment"))
            .collect()
    };
    let owned_bytes = bytes_of(owned_dir.path());
    assert!(
        !owned_bytes.is_empty(),
        "segments under {:?}",
        owned_dir.path()
    );
    assert!(
        bytes_of(borrowed_dir.path()) == owned_bytes,
        "the borrowed path writes other bytes"
    );
    assert!(
        bytes_of(mirrored_dir.path()) == owned_bytes,
        "the one-piece mirror writes other bytes"
    );
    // Replay gives back each payload's encoding, which decodes to the payload.
    let (_, recovered) =
        LogStore::open(StdFs::shared(), mirrored_dir.path(), options()).expect("reopen");
    assert_eq!(recovered.hard_state, hard_state);
    assert_eq!(recovered.entries, owned);
    let decoded: Vec<Payload> = recovered
        .entries
        .iter()
        .map(|e| codec::decode(&e.payload, "payload").expect("decode"))
        .collect();
    assert_eq!(decoded, payloads);
}
