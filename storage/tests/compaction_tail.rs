//! The compaction tail on disk: a local snapshot keeps the last entries it covers (so Raft can
//! send them to a follower a little behind instead of the snapshot), deletes only the segments
//! wholly before them, and a reopen returns them as `RecoveredLog::tail_entries`.

use std::path::Path;

use storage::{LogStore, SnapshotPoint, StdFs, StoredEntry, WalOptions};

fn entry(index: u64, term: u64) -> StoredEntry {
    StoredEntry {
        index,
        term,
        payload: vec![index as u8; 40],
    }
}

/// Small segments, so that a snapshot has whole segments to delete.
fn options() -> WalOptions {
    WalOptions {
        segment_max_bytes: 300,
        ..WalOptions::default()
    }
}

fn indexes(entries: &[StoredEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

/// Writes entries 1..=`last` (term 1), one batch each, with the given tail.
fn write_entries(dir: &Path, last: u64, tail_entries: u64) -> LogStore {
    let (mut log, _) = LogStore::open(StdFs::shared(), dir, options()).unwrap();
    log.set_compaction_tail_entries(tail_entries);
    for index in 1..=last {
        log.append(None, &[entry(index, 1)]).unwrap();
    }
    log
}

fn point(last_index: u64, last_term: u64) -> SnapshotPoint {
    SnapshotPoint {
        last_index,
        last_term,
    }
}

#[test]
fn a_log_with_a_snapshot_and_a_tail_reopens_with_the_tail_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = write_entries(dir.path(), 100, 10);
        let segments_before = log.wal().segment_count();
        log.save_snapshot(point(80, 1), b"state at 80", false)
            .unwrap();
        assert!(
            log.wal().segment_count() < segments_before,
            "segments wholly before the tail are deleted"
        );
    }
    let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
    assert_eq!(recovered.snapshot.unwrap().point, point(80, 1));
    assert_eq!(indexes(&recovered.entries), (81..=100).collect::<Vec<_>>());
    let tail = indexes(&recovered.tail_entries);
    assert_eq!(tail.last(), Some(&80), "the tail ends at the snapshot");
    assert!(
        tail.first().is_some_and(|&first| first <= 71),
        "at least the 10 tail entries are kept: {tail:?}"
    );
    assert!(
        tail.first().is_some_and(|&first| first > 1),
        "the segments before the tail are gone: {tail:?}"
    );
    assert!(
        tail.windows(2).all(|w| w[0] + 1 == w[1]),
        "contiguous: {tail:?}"
    );
    assert!(recovered
        .tail_entries
        .iter()
        .all(|e| *e == entry(e.index, 1)));
}

#[test]
fn without_a_tail_a_snapshot_keeps_only_what_shares_a_segment_with_later_entries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = write_entries(dir.path(), 100, 0);
        log.save_snapshot(point(80, 1), b"state", false).unwrap();
    }
    let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
    assert_eq!(indexes(&recovered.entries), (81..=100).collect::<Vec<_>>());
    // Only what happens to share the oldest kept segment with entry 81 survives.
    assert!(
        recovered.tail_entries.len() < 10,
        "{:?}",
        indexes(&recovered.tail_entries)
    );
}

#[test]
fn the_tail_survives_a_reopen_and_the_next_snapshot_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = write_entries(dir.path(), 60, 10);
        log.save_snapshot(point(50, 1), b"state at 50", false)
            .unwrap();
    }
    {
        // Reopened: the tail entries' segments are still tracked, and the next snapshot with
        // the tail purges what falls out of it.
        let (mut log, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
        assert_eq!(recovered.tail_entries.last().map(|e| e.index), Some(50));
        log.set_compaction_tail_entries(10);
        for index in 61..=120 {
            log.append(None, &[entry(index, 1)]).unwrap();
        }
        log.save_snapshot(point(110, 1), b"state at 110", false)
            .unwrap();
    }
    let (_, recovered) = LogStore::open(StdFs::shared(), dir.path(), options()).unwrap();
    let tail = indexes(&recovered.tail_entries);
    assert_eq!(tail.last(), Some(&110));
    assert!(
        tail.first().is_some_and(|&f| f > 50 && f <= 101),
        "{tail:?}"
    );
    assert_eq!(indexes(&recovered.entries), (111..=120).collect::<Vec<_>>());
}

#[test]
fn a_log_replaced_by_a_leaders_snapshot_is_not_returned_as_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        // One segment: nothing is purged, so the replaced entries are replayed and must be
        // recognized as another history.
        let (mut log, _) =
            LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
        log.set_compaction_tail_entries(100);
        // Entries 1..=10 of term 1; the leader's history has term 2 from index 6 on, and its
        // snapshot at 8 replaces this log.
        for index in 1..=10 {
            log.append(None, &[entry(index, 1)]).unwrap();
        }
        log.save_snapshot(point(8, 2), b"leader state", true)
            .unwrap();
        log.append(None, &[entry(9, 2)]).unwrap();
    }
    let (log, recovered) =
        LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
    assert_eq!(log.wal().segment_count(), 1);
    assert!(
        recovered.tail_entries.is_empty(),
        "entries at or below 8 are another history: {:?}",
        indexes(&recovered.tail_entries)
    );
    assert_eq!(recovered.entries, vec![entry(9, 2)]);
}

#[test]
fn a_later_tail_does_not_run_on_into_a_log_a_leaders_snapshot_replaced() {
    let dir = tempfile::tempdir().unwrap();
    {
        // One segment, so nothing is purged and the replaced entries are all replayed.
        let (mut log, _) =
            LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
        log.set_compaction_tail_entries(100);
        for index in 1..=10 {
            log.append(None, &[entry(index, 1)]).unwrap();
        }
        // The leader's snapshot at 8 (term 2) replaces 1..=10; then its entries follow and a
        // local snapshot at 18 keeps a tail long enough to reach below 8.
        log.save_snapshot(point(8, 2), b"leader state", true)
            .unwrap();
        for index in 9..=20 {
            log.append(None, &[entry(index, 2)]).unwrap();
        }
        log.save_snapshot(point(18, 2), b"state at 18", false)
            .unwrap();
    }
    let (_, recovered) =
        LogStore::open(StdFs::shared(), dir.path(), WalOptions::default()).unwrap();
    assert_eq!(
        indexes(&recovered.tail_entries),
        (9..=18).collect::<Vec<_>>(),
        "the tail stops where the leader's snapshot began the log"
    );
    assert!(recovered.tail_entries.iter().all(|e| e.term == 2));
    assert_eq!(indexes(&recovered.entries), vec![19, 20]);
}
