//! The shared log ([`SharedLog`]): many Raft groups in one WAL. Each group recovers exactly its
//! own entries, hard state and snapshot; a batch of several groups is one fsync; a segment goes
//! only when no group needs it, and an idle group that pins the log is named until it snapshots;
//! a torn tail, damage, a full disk and data directories of the single-group `LogStore` are
//! handled as the single-group log handles them.

use std::collections::BTreeMap;
use std::path::Path;

use storage::fault::FaultyFs;
use storage::shared_log::{snapshot_dir, StoredGroupWrite};
use storage::{
    codec, GroupId, GroupWrite, HardState, LogStore, RecoveredLog, SharedLog, SnapshotPoint, StdFs,
    StorageError, StoredEntry, StoredEntryRef, WalOptions,
};

fn entry(group: GroupId, index: u64, term: u64) -> StoredEntry {
    StoredEntry {
        index,
        term,
        payload: format!("group {group} entry {index} term {term}").into_bytes(),
    }
}

fn state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: Some(term % 3),
        commit,
    }
}

fn point(last_index: u64, last_term: u64) -> SnapshotPoint {
    SnapshotPoint {
        last_index,
        last_term,
    }
}

/// Small segments, so that a few batches span several of them.
fn small_segments() -> WalOptions {
    WalOptions {
        segment_max_bytes: 400,
        ..WalOptions::default()
    }
}

fn open(dir: &Path, groups: &[GroupId]) -> (SharedLog, BTreeMap<GroupId, RecoveredLog>) {
    SharedLog::open(StdFs::shared(), dir, small_segments(), groups).expect("open the shared log")
}

fn indexes(entries: &[StoredEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

/// Entries `from..=to` of `group`, all of `term`.
fn run(group: GroupId, from: u64, to: u64, term: u64) -> Vec<StoredEntry> {
    (from..=to).map(|index| entry(group, index, term)).collect()
}

#[test]
fn interleaved_groups_each_recover_exactly_their_own_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, recovered) = open(dir.path(), &[0, 7, 1 << 40]);
        assert!(recovered.values().all(|r| r.entries.is_empty()));
        for round in 0..6u64 {
            let a = run(0, round * 2 + 1, round * 2 + 2, 1);
            let b = run(7, round + 1, round + 1, 2);
            let c = run(1 << 40, round * 3 + 1, round * 3 + 3, 3);
            log.append_stored_batch(&[
                StoredGroupWrite {
                    group: 0,
                    hard_state: Some(state(1, round * 2)),
                    entries: &a,
                },
                StoredGroupWrite {
                    group: 1 << 40,
                    hard_state: None,
                    entries: &c,
                },
                StoredGroupWrite {
                    group: 7,
                    hard_state: Some(state(2, round)),
                    entries: &b,
                },
            ])
            .expect("append a batch of three groups");
        }
        // Group 7: a new leader overwrites its last two entries in term 4.
        log.append(7, Some(state(4, 3)), &run(7, 5, 5, 4))
            .expect("overwrite");
        log.save_snapshot(0, point(8, 1), b"group 0 at 8", false)
            .expect("snapshot of group 0");
        assert!(log.wal().segment_count() > 1, "several segments");
    }
    let (log, recovered) = open(dir.path(), &[0, 7, 1 << 40]);
    let zero = &recovered[&0];
    assert_eq!(zero.hard_state, state(1, 10));
    assert_eq!(
        zero.snapshot.as_ref().map(|s| (s.point, s.data().to_vec())),
        Some((point(8, 1), b"group 0 at 8".to_vec()))
    );
    assert_eq!(zero.entries, run(0, 9, 12, 1));
    let seven = &recovered[&7];
    assert_eq!(seven.hard_state, state(4, 3));
    assert!(seven.snapshot.is_none());
    let mut expected_seven = run(7, 1, 4, 2);
    expected_seven.push(entry(7, 5, 4));
    assert_eq!(
        seven.entries, expected_seven,
        "entry 5 replaced, entry 6 gone"
    );
    let big = &recovered[&(1 << 40)];
    assert_eq!(big.hard_state, HardState::default(), "never written");
    assert_eq!(big.entries, run(1 << 40, 1, 18, 3));
    assert_eq!(log.last_index(7), 5);
    assert_eq!(log.last_index(0), 12);
    assert_eq!(log.snapshot_point(0), point(8, 1));
    assert!(dir.path().join("snap").is_dir(), "group 0 keeps snap/");
    assert_eq!(snapshot_dir(dir.path(), 7), dir.path().join("snap-7"));
}

#[test]
fn one_batch_of_three_groups_is_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut log, _) =
        SharedLog::open(fs, dir.path(), WalOptions::default(), &[1, 2, 3]).expect("open");
    let payloads: Vec<Vec<u8>> = (0..3).map(|i| vec![i; 100]).collect();
    let borrowed: Vec<Vec<StoredEntryRef<&Vec<u8>>>> = (0..3)
        .map(|group| {
            (1..=4)
                .map(|index| StoredEntryRef {
                    index,
                    term: 1,
                    payload: &payloads[group],
                })
                .collect()
        })
        .collect();
    let syncs_before = fault.file_syncs();
    let batch: Vec<GroupWrite<'_, &Vec<u8>>> = (0..3)
        .map(|group| GroupWrite {
            group: group as GroupId + 1,
            hard_state: Some(state(1, 0)),
            entries: &borrowed[group],
        })
        .collect();
    log.append_batch(&batch).expect("append");
    assert_eq!(
        fault.file_syncs() - syncs_before,
        1,
        "one fsync for the whole batch"
    );
    for group in 1..=3 {
        assert_eq!(log.last_index(group), 4);
        assert_eq!(log.hard_state(group), state(1, 0));
    }
    drop(log);
    let (_, recovered) = open(dir.path(), &[1, 2, 3]);
    for group in 1..=3u64 {
        let entries = &recovered[&group].entries;
        assert_eq!(indexes(entries), vec![1, 2, 3, 4]);
        let payload = codec::encode(&payloads[group as usize - 1], "payload").expect("encode");
        assert!(entries.iter().all(|e| e.payload == payload));
    }
}

#[test]
fn a_commit_index_alone_is_written_without_a_sync_and_rides_the_next_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut log, _) =
        SharedLog::open(fs, dir.path(), WalOptions::default(), &[1, 2]).expect("open");
    let no_entries: Vec<StoredEntryRef<&Vec<u8>>> = Vec::new();
    let write = |group: GroupId, hard_state: HardState| GroupWrite {
        group,
        hard_state: Some(hard_state),
        entries: &no_entries,
    };
    log.append_batch(&[write(1, state(2, 0)), write(2, state(2, 0))])
        .expect("a new term, synced");
    let syncs = fault.file_syncs();
    log.append_batch_without_sync(&[write(1, state(2, 7))])
        .expect("a commit index alone");
    assert_eq!(fault.file_syncs(), syncs, "no fsync of its own");
    assert_eq!(log.hard_state(1), state(2, 7));
    log.append_batch(&[write(2, state(3, 0))])
        .expect("a new term");
    assert_eq!(fault.file_syncs(), syncs + 1);
    drop(log);
    let (_, recovered) = open(dir.path(), &[1, 2]);
    assert_eq!(
        recovered[&1].hard_state,
        state(2, 7),
        "written with the later sync"
    );
    assert_eq!(recovered[&2].hard_state, state(3, 0));
}

/// Group 1 is busy and snapshots often, group 2 wrote a few entries once and went idle.
#[test]
fn an_idle_group_pins_the_log_until_it_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), &[1, 2]);
    log.append(2, Some(state(1, 2)), &run(2, 1, 3, 1))
        .expect("idle group's only writes");
    for index in 1..=60 {
        log.append(1, Some(state(1, index)), &run(1, index, index, 1))
            .expect("busy group");
    }
    assert!(log.wal().segment_count() > 4);
    log.save_snapshot(1, point(60, 1), b"busy at 60", false)
        .expect("busy group snapshots");
    let first_segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
    assert!(
        first_segment.exists(),
        "the idle group's entries keep the first segment"
    );
    assert_eq!(log.groups_pinning_the_log(), vec![2]);
    let pinned_segments = log.wal().segment_count();
    assert!(pinned_segments > 2, "every later segment is kept with it");

    log.save_snapshot(2, point(3, 1), b"idle at 3", false)
        .expect("idle group snapshots when asked");
    assert!(!first_segment.exists(), "the pinned segment is gone");
    assert!(log.wal().segment_count() < pinned_segments);
    assert_eq!(log.groups_pinning_the_log(), Vec::<GroupId>::new());
    drop(log);

    let (_, recovered) = open(dir.path(), &[1, 2]);
    assert_eq!(recovered[&1].hard_state, state(1, 60));
    assert_eq!(recovered[&2].hard_state, state(1, 2), "rewritten, not lost");
    assert_eq!(
        recovered[&2].snapshot.as_ref().map(|s| s.data().to_vec()),
        Some(b"idle at 3".to_vec())
    );
    assert!(recovered[&1].entries.is_empty() && recovered[&2].entries.is_empty());
}

#[test]
fn a_hard_state_alone_never_pins_the_log_and_survives_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open(dir.path(), &[1, 2]);
    // Group 2 only ever voted.
    log.append(2, Some(state(5, 0)), &[]).expect("a vote");
    for index in 1..=40 {
        log.append(1, None, &run(1, index, index, 1))
            .expect("busy group");
    }
    assert_eq!(
        log.groups_pinning_the_log(),
        vec![1],
        "group 1's unsnapshotted entries hold the old segments, which group 2 needs only for \
         its hard state: that is rewritten, so group 2 is not asked for a snapshot"
    );
    log.save_snapshot(1, point(40, 1), b"busy at 40", false)
        .expect("snapshot");
    assert_eq!(log.wal().segment_count(), 1, "every sealed segment is gone");
    drop(log);
    let (_, recovered) = open(dir.path(), &[1, 2]);
    assert_eq!(recovered[&2].hard_state, state(5, 0), "the vote survives");
}

#[test]
fn a_lone_group_keeps_its_tail_and_an_idle_tail_does_not_pin_the_others() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path(), &[0]);
        log.set_compaction_tail_entries(5);
        for index in 1..=30 {
            log.append(0, None, &run(0, index, index, 1))
                .expect("append");
        }
        log.save_snapshot(0, point(30, 1), b"at 30", false)
            .expect("snapshot");
    }
    let (_, recovered) = open(dir.path(), &[0]);
    let tail = indexes(&recovered[&0].tail_entries);
    assert!(
        tail.first().is_some_and(|&first| first <= 26) && tail.last() == Some(&30),
        "a lone group keeps its tail, as LogStore does: {tail:?}"
    );

    // Now group 1 shares the log and writes on; group 0 stays idle with its tail.
    let (mut log, _) = open(dir.path(), &[0, 1]);
    log.set_compaction_tail_entries(5);
    for index in 1..=40 {
        log.append(1, None, &run(1, index, index, 1))
            .expect("append");
    }
    let segments = log.wal().segment_count();
    assert_eq!(
        log.groups_pinning_the_log(),
        vec![1],
        "group 0's tail is not asked to snapshot (it is released); group 1's own entries are \
         what holds the old segments now"
    );
    log.save_snapshot(1, point(30, 1), b"group 1 at 30", false)
        .expect("snapshot");
    assert!(
        log.wal().segment_count() < segments,
        "group 0's idle tail did not keep the old segments"
    );
    drop(log);
    let (_, recovered) = open(dir.path(), &[0, 1]);
    assert!(
        recovered[&0].tail_entries.is_empty(),
        "group 0 gave its tail up"
    );
    let tail = indexes(&recovered[&1].tail_entries);
    assert!(
        tail.first().is_some_and(|&first| first <= 26) && tail.last() == Some(&30),
        "the active group keeps its own: {tail:?}"
    );
    assert_eq!(
        indexes(&recovered[&1].entries),
        (31..=40).collect::<Vec<_>>()
    );
}

#[test]
fn a_torn_tail_recovers_every_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = WalOptions::default(); // one segment
    {
        let (mut log, _) =
            SharedLog::open(StdFs::shared(), dir.path(), options.clone(), &[1, 2, 3])
                .expect("open");
        for batch in 1..=3u64 {
            let writes: Vec<Vec<StoredEntry>> = (1..=3).map(|g| run(g, batch, batch, 1)).collect();
            let batch_writes: Vec<StoredGroupWrite<'_>> = (1..=3u64)
                .map(|g| StoredGroupWrite {
                    group: g,
                    hard_state: Some(state(1, batch - 1)),
                    entries: &writes[g as usize - 1],
                })
                .collect();
            log.append_stored_batch(&batch_writes).expect("append");
        }
    }
    // The last batch's write was cut short by a crash.
    let segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
    let bytes = std::fs::read(&segment).expect("read segment");
    std::fs::write(&segment, &bytes[..bytes.len() - 30]).expect("tear");
    let (mut log, recovered) =
        SharedLog::open(StdFs::shared(), dir.path(), options, &[1, 2, 3]).expect("reopen");
    for group in 1..=3u64 {
        let recovered = &recovered[&group];
        assert!(recovered.torn_tail_bytes.is_some());
        // Batch 3 holds, per group in order, an entry then a hard state: the tear took group
        // 3's hard state; every record before it is back.
        assert_eq!(indexes(&recovered.entries), vec![1, 2, 3], "group {group}");
    }
    assert_eq!(recovered[&3].hard_state, state(1, 1), "batch 2's");
    assert_eq!(recovered[&1].hard_state, state(1, 2), "batch 3's");
    log.append(3, Some(state(1, 2)), &run(3, 4, 4, 1))
        .expect("writes go on");
}

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported_as_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path(), &[1, 2]);
        for turn in 1..=20u64 {
            let (group, index) = (1 + turn % 2, turn.div_ceil(2));
            log.append(group, None, &run(group, index, index, 1))
                .expect("append");
        }
        assert!(log.wal().segment_count() > 2);
    }
    let segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
    let mut bytes = std::fs::read(&segment).expect("read");
    let offset = 24 + 28 + 5; // in the first record's payload
    bytes[offset] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("flip");
    match SharedLog::open(StdFs::shared(), dir.path(), small_segments(), &[1, 2]) {
        Err(StorageError::Damaged(report)) => {
            assert_eq!(report.damage.offset, 24);
            assert_eq!(report.damage.lsn, 1);
        }
        Err(other) => panic!("expected damage, got {other}"),
        Ok(_) => panic!("a damaged log opened"),
    }
}

#[test]
fn repair_cuts_the_log_and_marks_every_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path(), &[0, 1]);
        for index in 1..=20 {
            log.append_stored_batch(&[
                StoredGroupWrite {
                    group: 0,
                    hard_state: Some(state(2, index)),
                    entries: &run(0, index, index, 2),
                },
                StoredGroupWrite {
                    group: 1,
                    hard_state: Some(state(3, index)),
                    entries: &run(1, index, index, 3),
                },
            ])
            .expect("append");
        }
    }
    let segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[24 + 28 + 5] ^= 0x40;
    std::fs::write(&segment, &bytes).expect("flip");
    let repair = WalOptions {
        repair: true,
        ..small_segments()
    };
    let (mut log, recovered) =
        SharedLog::open(StdFs::shared(), dir.path(), repair.clone(), &[0, 1]).expect("repair");
    for group in [0, 1] {
        let recovered = &recovered[&group];
        assert_eq!(
            recovered.repair_until,
            Some(20),
            "group {group}: the newest commit seen anywhere"
        );
        assert!(recovered.entries.is_empty(), "cut at the first record");
        assert_eq!(
            recovered.hard_state.term,
            2 + group,
            "the term is never forgotten"
        );
        assert_eq!(
            recovered.hard_state.commit, 0,
            "no commit beyond the log kept"
        );
    }
    assert!(dir.path().join("repair.marker").exists());
    assert!(dir.path().join("repair-1.marker").exists());
    log.finish_repair(1).expect("group 1 caught up");
    assert!(!dir.path().join("repair-1.marker").exists());
    drop(log);
    let (_, recovered) =
        SharedLog::open(StdFs::shared(), dir.path(), small_segments(), &[0, 1]).expect("reopen");
    assert_eq!(recovered[&0].repair_until, Some(20), "still repairing");
    assert_eq!(recovered[&1].repair_until, None, "done");
}

#[test]
fn a_log_store_data_dir_opens_as_group_zero_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut store, _) =
            LogStore::open(StdFs::shared(), dir.path(), small_segments()).expect("open");
        store
            .append(Some(state(3, 5)), &run(0, 1, 12, 3))
            .expect("append");
        store
            .save_snapshot(point(6, 3), b"single group at 6", false)
            .expect("snapshot");
        store
            .append(None, &run(0, 13, 14, 3))
            .expect("append after");
    }
    {
        let (mut log, recovered) = open(dir.path(), &[0, 5]);
        let zero = &recovered[&0];
        assert_eq!(zero.hard_state, state(3, 5));
        assert_eq!(
            zero.snapshot.as_ref().map(|s| s.data().to_vec()),
            Some(b"single group at 6".to_vec())
        );
        assert_eq!(zero.entries, run(0, 7, 14, 3));
        assert!(recovered[&5].entries.is_empty(), "a new group");
        log.append(0, Some(state(4, 14)), &run(0, 15, 15, 4))
            .expect("append as group 0");
    }
    // Back: only group 0 has records, so the single-group store reads it.
    let (_, recovered) =
        LogStore::open(StdFs::shared(), dir.path(), small_segments()).expect("LogStore again");
    assert_eq!(recovered.hard_state, state(4, 14));
    assert_eq!(indexes(&recovered.entries), (7..=15).collect::<Vec<_>>());
}

#[test]
fn records_of_a_group_not_hosted_refuse_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path(), &[1, 2]);
        log.append(2, Some(state(1, 0)), &run(2, 1, 2, 1))
            .expect("append");
    }
    match SharedLog::open(StdFs::shared(), dir.path(), small_segments(), &[1, 3]) {
        Err(StorageError::UnknownGroup { group, reason, .. }) => {
            assert_eq!(group, 2);
            assert!(reason.contains("group 2 (3 records from #1)"), "{reason}");
        }
        Err(other) => panic!("expected an unknown group, got {other}"),
        Ok(_) => panic!("opened with another group's records"),
    }
    let (mut log, _) = open(dir.path(), &[1, 2]);
    let next = log.wal().next_lsn();
    assert!(matches!(
        log.append_stored_batch(&[
            StoredGroupWrite {
                group: 1,
                hard_state: None,
                entries: &run(1, 1, 1, 1),
            },
            StoredGroupWrite {
                group: 9,
                hard_state: None,
                entries: &run(9, 1, 1, 1),
            },
        ]),
        Err(StorageError::UnknownGroup { group: 9, .. })
    ));
    assert_eq!(log.wal().next_lsn(), next, "nothing of the batch written");
    assert_eq!(log.last_index(1), 0);
}

#[test]
fn a_full_disk_leaves_every_group_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fs, fault) = FaultyFs::wrap(StdFs::shared());
    let (mut log, _) =
        SharedLog::open(fs.clone(), dir.path(), small_segments(), &[1, 2]).expect("open");
    log.append(1, Some(state(1, 0)), &run(1, 1, 2, 1))
        .expect("append");
    fault.set_full(true);
    let error = log
        .append_stored_batch(&[
            StoredGroupWrite {
                group: 1,
                hard_state: Some(state(2, 2)),
                entries: &run(1, 3, 3, 2),
            },
            StoredGroupWrite {
                group: 2,
                hard_state: Some(state(2, 0)),
                entries: &run(2, 1, 1, 2),
            },
        ])
        .expect_err("the disk is full");
    assert!(error.is_disk_full(), "{error}");
    assert!(!log.wal().is_poisoned());
    assert_eq!(log.last_index(1), 2);
    assert_eq!(log.hard_state(1), state(1, 0));
    assert_eq!(log.last_index(2), 0);
    assert_eq!(log.hard_state(2), HardState::default());
    fault.set_full(false);
    log.append(2, Some(state(1, 0)), &run(2, 1, 1, 1))
        .expect("space is back");
    drop(log);
    let (_, recovered) =
        SharedLog::open(fs, dir.path(), small_segments(), &[1, 2]).expect("reopen");
    assert_eq!(recovered[&1].entries, run(1, 1, 2, 1));
    assert_eq!(recovered[&1].hard_state, state(1, 0));
    assert_eq!(recovered[&2].entries, run(2, 1, 1, 1));
}

#[test]
fn a_snapshot_from_the_leader_replaces_only_its_groups_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _) = open(dir.path(), &[1, 2]);
        log.append(1, Some(state(1, 0)), &run(1, 1, 10, 1))
            .expect("append");
        log.append(2, Some(state(1, 0)), &run(2, 1, 10, 1))
            .expect("append");
        log.save_snapshot(1, point(20, 3), b"from the leader", true)
            .expect("install");
        log.append(1, Some(state(3, 21)), &run(1, 21, 22, 3))
            .expect("after the install");
        assert_eq!(log.last_index(1), 22);
    }
    let (_, recovered) = open(dir.path(), &[1, 2]);
    assert_eq!(recovered[&1].entries, run(1, 21, 22, 3));
    assert!(recovered[&1].tail_entries.is_empty());
    assert_eq!(recovered[&2].entries, run(2, 1, 10, 1), "untouched");
}
