//! Snapshot files: atomic replacement, checksummed reads, damage reported rather than skipped.

use std::path::PathBuf;

use storage::snapshot::{SnapshotPoint, SnapshotStore};
use storage::{StdFs, StorageError};

fn snapshot_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn the_newest_snapshot_replaces_older_ones_and_reads_back_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(StdFs::shared(), dir.path()).unwrap();
    assert!(store.load_latest().unwrap().is_none());
    store
        .save(
            SnapshotPoint {
                last_index: 10,
                last_term: 2,
            },
            b"ten",
        )
        .unwrap();
    store
        .save(
            SnapshotPoint {
                last_index: 20,
                last_term: 3,
            },
            &vec![5u8; 100_000],
        )
        .unwrap();
    let loaded = store.load_latest().unwrap().unwrap();
    assert_eq!(
        loaded.point,
        SnapshotPoint {
            last_index: 20,
            last_term: 3
        }
    );
    assert_eq!(loaded.data(), &vec![5u8; 100_000][..]);
    assert_eq!(
        snapshot_files(dir.path()).len(),
        1,
        "older snapshots are deleted"
    );
}

#[test]
fn a_leftover_temporary_file_is_removed_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(StdFs::shared(), dir.path()).unwrap();
    store
        .save(
            SnapshotPoint {
                last_index: 1,
                last_term: 1,
            },
            b"one",
        )
        .unwrap();
    // A crash during the next save left its temporary file behind.
    std::fs::write(
        dir.path().join("snap-00000000000000000002.snap.tmp"),
        b"half",
    )
    .unwrap();
    let store = SnapshotStore::open(StdFs::shared(), dir.path()).unwrap();
    assert_eq!(store.load_latest().unwrap().unwrap().data(), b"one");
    assert_eq!(snapshot_files(dir.path()).len(), 1);
}

#[test]
fn any_flipped_bit_in_a_snapshot_is_reported_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(StdFs::shared(), dir.path()).unwrap();
    store
        .save(
            SnapshotPoint {
                last_index: 7,
                last_term: 1,
            },
            b"snapshot payload",
        )
        .unwrap();
    let path = snapshot_files(dir.path()).pop().unwrap();
    let clean = std::fs::read(&path).unwrap();
    for bit in 0..clean.len() * 8 {
        let mut damaged = clean.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &damaged).unwrap();
        match store.load_latest() {
            Err(StorageError::Corrupt { path: reported, .. }) => assert_eq!(reported, path),
            Err(other) => panic!("bit {bit}: unexpected error {other}"),
            Ok(_) => panic!("bit {bit}: damage not detected"),
        }
    }
}
