//! Power loss under the shared log, on turmoil's simulated disk: 3 groups append acknowledged
//! batches while they take turns snapshotting on small segments (so compaction rewrites hard
//! states and deletes segments), then write batches nobody syncs, and the machine crashes
//! (unsynced writes dropped or torn at 512-byte blocks). After the crash every group has its
//! snapshot and every acknowledged entry and hard state, and what survives of the unsynced
//! batches is a prefix of them in log order, across groups.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use storage::fs::SimFs;
use storage::shared_log::StoredGroupWrite;
use storage::{GroupId, HardState, SharedLog, SnapshotPoint, StoredEntry, SyncPolicy, WalOptions};

const DIR: &str = "/data";
const GROUPS: [GroupId; 3] = [1, 2, 3];

fn options(sync: SyncPolicy) -> WalOptions {
    WalOptions {
        segment_max_bytes: 512,
        sync,
        ..WalOptions::default()
    }
}

fn entry(group: GroupId, index: u64) -> StoredEntry {
    let len = 10 + (index * 31 + group * 7) % 90;
    StoredEntry {
        index,
        term: 1,
        payload: (0..len).map(|j| (j + index + group) as u8 | 1).collect(),
    }
}

fn state(commit: u64) -> HardState {
    HardState {
        term: 1,
        vote: Some(1),
        commit,
    }
}

/// One batch: every group's entry at `index` and its hard state committing it.
fn append_round(log: &mut SharedLog, index: u64) -> storage::Result<()> {
    let entries: Vec<[StoredEntry; 1]> = GROUPS.iter().map(|&g| [entry(g, index)]).collect();
    let batch: Vec<StoredGroupWrite<'_>> = GROUPS
        .iter()
        .zip(&entries)
        .map(|(&group, entries)| StoredGroupWrite {
            group,
            hard_state: Some(state(index)),
            entries,
        })
        .collect();
    log.append_stored_batch(&batch)
}

/// A group's log as recovered, in plain data.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    hard_state: HardState,
    snapshot: Option<(SnapshotPoint, Vec<u8>)>,
    entries: Vec<StoredEntry>,
}

#[derive(Default)]
struct Observed {
    /// Each group's snapshot when the acknowledged phase ended.
    snapshots: BTreeMap<GroupId, (SnapshotPoint, Vec<u8>)>,
    /// The last index every group had acknowledged.
    acknowledged: u64,
    /// How many unsynced rounds were written after it.
    unsynced_rounds: u64,
    segments_deleted: bool,
    recovered: Option<BTreeMap<GroupId, Group>>,
}

/// Runs one crash; returns (unsynced rounds written, per-group unsynced entries recovered).
fn run(seed: u64) -> (u64, Vec<u64>) {
    let mut builder = turmoil::Builder::new();
    builder.rng_seed(seed).fs().block_size(512);
    let mut sim = builder.build();
    let observed = Arc::new(Mutex::new(Observed::default()));
    let phase_two = Arc::new(Mutex::new(false));
    let (host_observed, host_phase) = (observed.clone(), phase_two.clone());
    sim.host("node", move || {
        let observed = host_observed.clone();
        let phase_two = host_phase.clone();
        async move {
            let dir = Path::new(DIR);
            if *phase_two.lock().unwrap() {
                let (_, recovered) =
                    SharedLog::open(SimFs::shared(), dir, options(SyncPolicy::Always), &GROUPS)?;
                let groups = recovered
                    .into_iter()
                    .map(|(group, log)| {
                        let snapshot = log.snapshot.map(|s| (s.point, s.data().to_vec()));
                        let plain = Group {
                            hard_state: log.hard_state,
                            snapshot,
                            entries: log.entries,
                        };
                        (group, plain)
                    })
                    .collect();
                observed.lock().unwrap().recovered = Some(groups);
            } else {
                let (mut log, _) =
                    SharedLog::open(SimFs::shared(), dir, options(SyncPolicy::Always), &GROUPS)?;
                log.set_compaction_tail_entries(1);
                let rounds = 6 + seed % 6;
                let mut segments_deleted = false;
                for index in 1..=rounds {
                    append_round(&mut log, index)?;
                    if index % 2 == 0 {
                        // The groups take turns: each snapshot one round behind.
                        let group = GROUPS[(index as usize / 2) % GROUPS.len()];
                        let at = SnapshotPoint {
                            last_index: index - 1,
                            last_term: 1,
                        };
                        let data = format!("group {group} at {}", index - 1).into_bytes();
                        let before = log.wal().segment_count();
                        log.save_snapshot(group, at, &data, false)?;
                        segments_deleted |= log.wal().segment_count() < before;
                        observed.lock().unwrap().snapshots.insert(group, (at, data));
                    }
                }
                {
                    let mut seen = observed.lock().unwrap();
                    seen.acknowledged = rounds;
                    seen.segments_deleted = segments_deleted;
                }
                drop(log);
                // Then rounds that nobody syncs: a crash may keep any prefix of them, torn or not.
                let (mut lazy, _) =
                    SharedLog::open(SimFs::shared(), dir, options(SyncPolicy::Never), &GROUPS)?;
                let unsynced = 1 + seed % 4;
                for index in rounds + 1..=rounds + unsynced {
                    append_round(&mut lazy, index)?;
                }
                observed.lock().unwrap().unsynced_rounds = unsynced;
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    let done = observed.clone();
    sim.client("wait-write", async move {
        while done.lock().unwrap().unsynced_rounds == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();
    sim.crash("node");
    *phase_two.lock().unwrap() = true;
    sim.bounce("node");
    let done = observed.clone();
    sim.client("wait-recover", async move {
        while done.lock().unwrap().recovered.is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(())
    });
    sim.run().unwrap();

    let observed = observed.lock().unwrap();
    assert!(observed.segments_deleted, "seed {seed}: compaction ran");
    let recovered = observed.recovered.as_ref().unwrap();
    let acknowledged = observed.acknowledged;
    let mut extra_per_group = Vec::new();
    for group in GROUPS {
        let got = &recovered[&group];
        let snapshot = observed.snapshots.get(&group);
        assert_eq!(got.snapshot.as_ref(), snapshot, "seed {seed} group {group}");
        let from = snapshot.map_or(1, |(at, _)| at.last_index + 1);
        let last = got.entries.last().map_or(from - 1, |e| e.index);
        assert!(
            last >= acknowledged,
            "seed {seed} group {group}: lost acknowledged entries (last {last})"
        );
        let expected: Vec<StoredEntry> = (from..=last).map(|i| entry(group, i)).collect();
        assert_eq!(got.entries, expected, "seed {seed} group {group}");
        assert!(
            got.hard_state.commit >= acknowledged
                && (got.hard_state.commit == last || got.hard_state.commit + 1 == last),
            "seed {seed} group {group}: hard state {:?} with last entry {last}",
            got.hard_state
        );
        extra_per_group.push(last - acknowledged);
    }
    // Records are in log order group 1, 2, 3 within a round: survivors are a prefix.
    let first = extra_per_group[0];
    assert!(
        extra_per_group
            .windows(2)
            .all(|w| w[0] >= w[1] && w[1] + 1 >= first),
        "seed {seed}: unsynced survivors {extra_per_group:?} are not a prefix of the log"
    );
    (observed.unsynced_rounds, extra_per_group)
}

#[test]
fn a_crash_loses_only_unacknowledged_rounds_in_every_group() {
    let outcomes: Vec<(u64, Vec<u64>)> = (0..24).map(run).collect();
    assert!(
        outcomes
            .iter()
            .any(|(written, kept)| kept.iter().any(|k| k < written)),
        "no crash lost anything"
    );
    assert!(
        outcomes.iter().any(|(_, kept)| kept.iter().any(|&k| k > 0)),
        "no crash kept an unsynced record"
    );
}
