//! Storage failure paths that `disk_full.rs`, `wal_damage.rs` and `wal_recovery.rs` leave open:
//! - after a failed fsync the log is poisoned at every entry point, not only `Wal::append`:
//!   `Wal::sync` (the `SyncPolicy::Interval` path), `LogStore::append` with entries or with a
//!   hard state only, `LogStore::sync` and `LogStore::save_snapshot`;
//! - an older, sealed segment cut short or zero-filled from any offset is damage, refused with
//!   the file named (the existing tests cut or zero only the newest segment, where it is a torn
//!   tail, and flip bits in sealed ones);
//! - a hard-state-only write (`LogStore::append(Some(hs), &[])`, what Raft persists when it only
//!   votes or learns a commit index) is durable, survives reopen, and the last one written wins
//!   over earlier ones whatever their values, also across segments and a snapshot.

use std::path::{Path, PathBuf};

use storage::fault::FaultyFs;
use storage::record::RECORD_HEADER_BYTES;
use storage::wal::SEGMENT_HEADER_BYTES;
use storage::{
    HardState, LogStore, SnapshotPoint, StdFs, StorageError, StoredEntry, SyncPolicy, Wal,
    WalOptions, GROUP_ZERO,
};

fn entry(index: u64, term: u64) -> StoredEntry {
    StoredEntry {
        index,
        term,
        // No zero byte, so a zero-filled region never reads as payload.
        payload: vec![(index % 250) as u8 + 1; 24],
    }
}

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<StoredEntry> {
    range.map(|index| entry(index, term)).collect()
}

fn small_segments() -> WalOptions {
    WalOptions {
        segment_max_bytes: 200,
        ..WalOptions::default()
    }
}

/// Bytes in the files of `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum()
}

fn assert_poisoned<T: std::fmt::Debug>(result: Result<T, StorageError>, dir: &Path, what: &str) {
    match result {
        Err(StorageError::Poisoned { dir: reported }) => {
            assert_eq!(reported, dir, "{what}: the error names the log's directory")
        }
        other => panic!("{what} after a failed fsync: expected Poisoned, got {other:?}"),
    }
}

#[test]
fn after_a_failed_fsync_every_log_store_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wal_dir = dir.path().join("wal");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut log, _) = LogStore::open(fs.clone(), dir.path(), WalOptions::default()).expect("open");
    let before = HardState {
        term: 1,
        vote: Some(1),
        commit: 2,
    };
    log.append(Some(before), &entries(1..=3, 1))
        .expect("append");

    fault.set_failing_sync(true);
    let failed = log.append(
        Some(HardState {
            term: 2,
            vote: None,
            commit: 3,
        }),
        &entries(4..=5, 2),
    );
    assert!(
        matches!(
            failed,
            Err(StorageError::Io {
                action: "fdatasync",
                ..
            })
        ),
        "{failed:?}"
    );
    assert_eq!(log.hard_state(), before, "a failed write is not adopted");
    assert_eq!(log.last_index(), 3, "a failed write is not adopted");
    // The disk looks healthy again; the log must not believe it (a retried fsync can lie).
    fault.set_failing_sync(false);
    assert!(log.wal().is_poisoned());
    let wal_bytes = bytes_under(&wal_dir);
    assert_poisoned(log.append(None, &entries(4..=4, 2)), &wal_dir, "append");
    assert_poisoned(
        log.append(
            Some(HardState {
                term: 3,
                vote: Some(2),
                commit: 3,
            }),
            &[],
        ),
        &wal_dir,
        "hard-state-only append",
    );
    assert_poisoned(log.sync(), &wal_dir, "sync");
    assert_poisoned(
        log.save_snapshot(
            SnapshotPoint {
                last_index: 3,
                last_term: 1,
            },
            b"state",
            false,
        ),
        &wal_dir,
        "save_snapshot",
    );
    assert_eq!(log.hard_state(), before);
    assert_eq!(
        bytes_under(&wal_dir),
        wal_bytes,
        "a refused write leaves nothing in the log"
    );
    drop(log);

    // Reopening is the way back: what was acknowledged is there, and the log writes again.
    let (mut log, recovered) =
        LogStore::open(fs, dir.path(), WalOptions::default()).expect("reopen");
    // Every acknowledged entry is back, in the snapshot or the log. (The snapshot file is written
    // before the WAL is asked, so a poisoned log's `save_snapshot` may leave one behind.)
    let snapshot_index = recovered
        .snapshot
        .as_ref()
        .map_or(0, |s| s.point.last_index);
    let recovered_up_to = recovered.entries.last().map_or(snapshot_index, |e| e.index);
    assert!(recovered_up_to >= 3, "entries up to {recovered_up_to}");
    for acknowledged in entries(snapshot_index + 1..=3, 1) {
        assert!(
            recovered.entries.contains(&acknowledged),
            "{acknowledged:?}"
        );
    }
    log.append(None, &entries(4..=4, 3))
        .expect("a reopened log accepts writes");
}

#[test]
fn a_failed_interval_sync_poisons_the_wal_for_sync_and_append() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let options = WalOptions {
        sync: SyncPolicy::Interval(std::time::Duration::from_millis(10)),
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(fs, dir.path(), options).expect("open");
    wal.append(GROUP_ZERO, &[b"one".to_vec()])
        .expect("append, not synced yet");
    fault.set_failing_sync(true);
    assert!(matches!(
        wal.sync(),
        Err(StorageError::Io {
            action: "fdatasync",
            ..
        })
    ));
    fault.set_failing_sync(false);
    assert!(wal.is_poisoned());
    // Nothing new was appended since: a sync that found "nothing to do" would report the lost
    // record as durable.
    assert_poisoned(wal.sync(), dir.path(), "sync");
    assert_poisoned(
        wal.append(GROUP_ZERO, &[b"two".to_vec()]),
        dir.path(),
        "append",
    );
    assert_poisoned(wal.sync(), dir.path(), "sync after a refused append");
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

/// Bytes of one record of [`sealed_template`]: its header and a 40-byte payload.
const RECORD_BYTES: usize = RECORD_HEADER_BYTES + 40;

/// A log of one-record batches over several sealed segments; returns its segment files.
fn sealed_template(dir: &Path) -> Vec<PathBuf> {
    let (mut wal, _) = Wal::open(StdFs::shared(), dir, small_segments()).expect("open");
    for i in 0..12u8 {
        wal.append(GROUP_ZERO, &[vec![i + 1; 40]]).expect("append");
    }
    drop(wal);
    let paths = segments(dir);
    assert!(paths.len() >= 4, "sealed segments and a newest one");
    paths
}

/// A scratch directory on tmpfs when there is one (hundreds of reopens).
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn a_sealed_segment_cut_short_or_zero_filled_is_damage_naming_the_file() {
    let template = tempfile::tempdir().expect("tempdir");
    let paths = sealed_template(template.path());
    // The oldest sealed segment and the one sealed last (two suffice: every sealed segment is
    // scanned alike); each cut at every offset, or zeroed from it on.
    for victim in [0, paths.len() - 2] {
        let clean = std::fs::read(&paths[victim]).expect("read");
        let name = paths[victim].file_name().expect("name").to_owned();
        for cut in 0..clean.len() {
            for how in ["cut short", "zero-filled"] {
                let dir = scratch();
                for path in &paths {
                    std::fs::copy(path, dir.path().join(path.file_name().expect("name")))
                        .expect("copy");
                }
                let mut bytes = clean.clone();
                if how == "cut short" {
                    bytes.truncate(cut);
                } else {
                    bytes[cut..].fill(0);
                }
                let target = dir.path().join(&name);
                std::fs::write(&target, &bytes).expect("write");
                match Wal::open(StdFs::shared(), dir.path(), small_segments()) {
                    Err(StorageError::Damaged(report)) => {
                        let message = report.to_string();
                        assert!(
                            message.contains(&*name.to_string_lossy()),
                            "segment {victim} {how} at {cut}: the report names {}: {message}",
                            name.to_string_lossy()
                        );
                        // Cut exactly between records, the segment itself reads as whole: the
                        // damage is the gap before the next segment (whose report names this
                        // one too). Anywhere else the damage is found in this very file.
                        let between_records = how == "cut short"
                            && cut >= SEGMENT_HEADER_BYTES
                            && (cut - SEGMENT_HEADER_BYTES).is_multiple_of(RECORD_BYTES);
                        if !between_records {
                            assert_eq!(
                                report.damage.path, target,
                                "segment {victim} {how} at {cut}: {message}"
                            );
                        }
                    }
                    Err(other) => panic!("segment {victim} {how} at {cut}: {other}"),
                    Ok((_, recovered)) => panic!(
                        "segment {victim} {how} at {cut}: opened with {} records, torn tail {:?}",
                        recovered.records.len(),
                        recovered.torn_tail.map(|t| t.offset)
                    ),
                }
            }
        }
        assert!(clean.len() > SEGMENT_HEADER_BYTES);
    }
}

#[test]
fn a_hard_state_only_write_survives_reopen_and_the_last_one_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reopen = || LogStore::open(StdFs::shared(), dir.path(), small_segments()).expect("open");
    let first = HardState {
        term: 1,
        vote: Some(3),
        commit: 0,
    };
    {
        let (mut log, recovered) = reopen();
        assert_eq!(recovered.hard_state, HardState::default());
        log.append(Some(first), &[]).expect("hard state only");
        assert_eq!(log.hard_state(), first);
    }
    let (mut log, recovered) = reopen();
    assert_eq!(
        recovered.hard_state, first,
        "a hard-state-only write is durable"
    );
    assert!(recovered.entries.is_empty());

    // Entries with a hard state, then hard states alone whose values go every way (the commit
    // index falls, the vote goes back to none): replay keeps the last, not the largest or first.
    let with_entries = HardState {
        term: 2,
        vote: Some(1),
        commit: 4,
    };
    log.append(Some(with_entries), &entries(1..=6, 2))
        .expect("append");
    let states = [
        HardState {
            term: 2,
            vote: Some(1),
            commit: 6,
        },
        HardState {
            term: 5,
            vote: None,
            commit: 2,
        },
        HardState {
            term: 5,
            vote: Some(2),
            commit: 1,
        },
    ];
    for (round, state) in states.iter().enumerate() {
        log.append(Some(*state), &[]).expect("hard state only");
        drop(log);
        let reopened = reopen();
        log = reopened.0;
        assert_eq!(reopened.1.hard_state, *state, "round {round}");
        assert_eq!(reopened.1.entries, entries(1..=6, 2), "round {round}");
    }
    // Enough hard-state-only writes to roll segments, the last of them followed by entries alone,
    // then a snapshot that purges every segment holding a hard state: the last still wins (the
    // snapshot writes it again before purging).
    for commit in 0..20 {
        log.append(
            Some(HardState {
                term: 6,
                vote: Some(3),
                commit,
            }),
            &[],
        )
        .expect("hard state only");
    }
    let last = HardState {
        term: 7,
        vote: None,
        commit: 5,
    };
    log.append(Some(last), &[]).expect("hard state only");
    let segments_before = log.wal().segment_count();
    log.append(None, &entries(7..=30, 7))
        .expect("entries alone");
    log.save_snapshot(
        SnapshotPoint {
            last_index: 28,
            last_term: 7,
        },
        b"state",
        false,
    )
    .expect("snapshot");
    assert!(
        log.wal().segment_count() < segments_before,
        "the snapshot purged the segments holding every earlier hard state"
    );
    drop(log);
    let (_, recovered) = reopen();
    assert_eq!(recovered.hard_state, last);
    assert_eq!(recovered.entries, entries(29..=30, 7));
}
