//! A full disk while appending loses nothing and leaves the log valid: the failed batch is rolled
//! back whole (even after a short write), the log keeps accepting writes once space is back, and
//! a reopen finds exactly the acknowledged records. A failed fsync, by contrast, poisons the log.
//!
//! Found here: a segment created (not reopened) was written at the file cursor, not in append
//! mode, so after a rollback the next record landed past a hole of zeros and a reopen cut it away
//! as a torn tail, silently losing an acknowledged write.

use storage::fault::FaultyFs;
use storage::{StdFs, StorageError, Wal, WalOptions, GROUP_ZERO};

#[test]
fn a_write_refused_for_lack_of_space_is_rolled_back_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut wal, _) = Wal::open(fs.clone(), dir.path(), WalOptions::default()).expect("open");
    wal.append(GROUP_ZERO, &[b"one".to_vec(), b"two".to_vec()])
        .expect("append");
    fault.set_full(true);
    let error = wal
        .append(
            GROUP_ZERO,
            &[b"refused, a longer record so that half of it lands".to_vec()],
        )
        .expect_err("the disk is full");
    assert!(error.is_disk_full(), "{error}");
    assert!(!wal.is_poisoned(), "a full disk does not poison the log");
    fault.set_full(false);
    wal.append(GROUP_ZERO, &[b"three".to_vec()])
        .expect("append once space is back");
    drop(wal);
    let (_, recovered) = Wal::open(fs, dir.path(), WalOptions::default()).expect("reopen");
    let payloads: Vec<Vec<u8>> = recovered.records.into_iter().map(|r| r.payload).collect();
    assert_eq!(
        payloads,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
}

#[test]
fn a_failed_fsync_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut wal, _) = Wal::open(fs, dir.path(), WalOptions::default()).expect("open");
    fault.set_failing_sync(true);
    assert!(wal.append(GROUP_ZERO, &[b"x".to_vec()]).is_err());
    fault.set_failing_sync(false);
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.append(GROUP_ZERO, &[b"y".to_vec()]),
        Err(StorageError::Poisoned { .. })
    ));
}

#[test]
fn no_room_for_the_next_segment_is_a_full_disk_not_a_poisoned_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let options = || WalOptions {
        segment_max_bytes: 200,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(fs.clone(), dir.path(), options()).expect("open");
    wal.append(GROUP_ZERO, &[vec![1u8; 150]])
        .expect("fills the first segment");
    fault.set_full(true);
    let error = wal
        .append(GROUP_ZERO, &[vec![2u8; 150]])
        .expect_err("the next segment cannot be created");
    assert!(error.is_disk_full(), "{error}");
    assert!(
        !wal.is_poisoned(),
        "the sealed segment is intact: not poisoned"
    );
    fault.set_full(false);
    wal.append(GROUP_ZERO, &[vec![3u8; 150]])
        .expect("rolls once space is back");
    drop(wal);
    let (_, recovered) = Wal::open(fs, dir.path(), options()).expect("reopen");
    let payloads: Vec<Vec<u8>> = recovered.records.into_iter().map(|r| r.payload).collect();
    assert_eq!(payloads, vec![vec![1u8; 150], vec![3u8; 150]]);
}
