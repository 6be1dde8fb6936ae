//! The shared log against an in-memory model: random interleaved appends (new leaders
//! overwriting suffixes), hard states alone, local snapshots and snapshots installed from a
//! leader across 3 groups, on small segments so that compaction deletes segments all the time,
//! reopened at random points. After every reopen each group must recover exactly the model's
//! hard state, snapshot and entries after it, and a tail that is a contiguous run of the model's
//! current history ending at the snapshot.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use storage::shared_log::StoredGroupWrite;
use storage::{
    GroupId, HardState, RecoveredLog, SharedLog, SnapshotPoint, StdFs, StoredEntry, WalOptions,
};

const GROUPS: [GroupId; 3] = [0, 3, 1 << 33];

#[derive(Debug, Clone)]
enum Op {
    /// One batch: for each listed group, entries from `last - back + 1` (a new leader, one
    /// term up, when `back > 0`) and maybe a hard state.
    Batch(Vec<(usize, u8, u8, bool)>),
    /// A local snapshot of a group at `ahead` entries past its snapshot (modulo what it has).
    Snapshot(usize, u8),
    /// A snapshot from the leader, `ahead` past the group's last index.
    Install(usize, u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..3usize, 0..3u8, 0..4u8, any::<bool>()), 1..4).prop_map(Op::Batch),
        2 => (0..3usize, any::<u8>()).prop_map(|(g, a)| Op::Snapshot(g, a)),
        1 => (0..3usize, 0..3u8).prop_map(|(g, a)| Op::Install(g, a)),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default, Clone)]
struct Model {
    hard_state: HardState,
    /// The group's current history, snapshot or not (for checking tails).
    history: BTreeMap<u64, StoredEntry>,
    snapshot: Option<(SnapshotPoint, Vec<u8>)>,
    last_index: u64,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |(p, _)| p.last_index)
    }
}

fn options() -> WalOptions {
    WalOptions {
        segment_max_bytes: 300,
        ..WalOptions::default()
    }
}

fn open(dir: &Path) -> (SharedLog, BTreeMap<GroupId, RecoveredLog>) {
    let (mut log, recovered) =
        SharedLog::open(StdFs::shared(), dir, options(), &GROUPS).expect("open");
    log.set_compaction_tail_entries(2);
    (log, recovered)
}

fn check(models: &[Model], recovered: &BTreeMap<GroupId, RecoveredLog>) {
    for (model, group) in models.iter().zip(GROUPS) {
        let got = &recovered[&group];
        assert_eq!(
            got.hard_state, model.hard_state,
            "group {group}: hard state"
        );
        assert_eq!(
            got.snapshot.as_ref().map(|s| (s.point, s.data().to_vec())),
            model.snapshot.clone(),
            "group {group}: snapshot"
        );
        let after: Vec<StoredEntry> = model
            .history
            .range(model.snapshot_index() + 1..)
            .map(|(_, e)| e.clone())
            .collect();
        assert_eq!(got.entries, after, "group {group}: entries");
        if let Some(first) = got.tail_entries.first() {
            assert_eq!(
                got.tail_entries.last().map(|e| e.index),
                Some(model.snapshot_index()),
                "group {group}: the tail ends at the snapshot"
            );
            for (offset, entry) in got.tail_entries.iter().enumerate() {
                assert_eq!(entry.index, first.index + offset as u64, "contiguous");
                assert_eq!(
                    model.history.get(&entry.index),
                    Some(entry),
                    "group {group}: a tail entry of the current history"
                );
            }
        }
    }
}

fn run_ops(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut models = vec![Model::default(); GROUPS.len()];
    let (log, recovered) = open(dir.path());
    check(&models, &recovered);
    // In an `Option` so that a reopen can drop it (releasing the files) before opening again.
    let mut log = Some(log);
    for op in ops {
        let current = log.as_mut().expect("open");
        match op {
            Op::Batch(writes) => {
                let mut owned: Vec<(GroupId, Option<HardState>, Vec<StoredEntry>)> = Vec::new();
                let mut staged = models.clone();
                for (slot, back, count, with_state) in writes {
                    let model = &mut staged[slot];
                    let back = u64::from(back).min(model.last_index - model.snapshot_index());
                    let term = model.hard_state.term.max(1) + u64::from(back > 0);
                    let from = model.last_index + 1 - back;
                    let entries: Vec<StoredEntry> = (from..from + u64::from(count))
                        .map(|index| StoredEntry {
                            index,
                            term,
                            payload: format!("{slot}:{index}:{term}").into_bytes(),
                        })
                        .collect();
                    let state =
                        (with_state || term != model.hard_state.term).then_some(HardState {
                            term,
                            vote: Some(slot as u64),
                            commit: model.snapshot_index(),
                        });
                    if let Some(first) = entries.first() {
                        model.history.split_off(&first.index);
                    }
                    for entry in &entries {
                        model.history.insert(entry.index, entry.clone());
                        model.last_index = entry.index;
                    }
                    if let Some(state) = state {
                        model.hard_state = state;
                    }
                    owned.push((GROUPS[slot], state, entries));
                }
                let batch: Vec<StoredGroupWrite<'_>> = owned
                    .iter()
                    .map(|(group, hard_state, entries)| StoredGroupWrite {
                        group: *group,
                        hard_state: *hard_state,
                        entries,
                    })
                    .collect();
                current.append_stored_batch(&batch).expect("append");
                models = staged;
            }
            Op::Snapshot(slot, ahead) => {
                let model = &mut models[slot];
                let have = model.last_index - model.snapshot_index();
                if have == 0 {
                    continue;
                }
                let index = model.snapshot_index() + 1 + u64::from(ahead) % have;
                let term = model.history[&index].term;
                let at = SnapshotPoint {
                    last_index: index,
                    last_term: term,
                };
                let data = format!("{slot} at {index}").into_bytes();
                current
                    .save_snapshot(GROUPS[slot], at, &data, false)
                    .expect("snapshot");
                model.snapshot = Some((at, data));
            }
            Op::Install(slot, ahead) => {
                let model = &mut models[slot];
                let index = model.last_index + 1 + u64::from(ahead);
                let term = model.hard_state.term.max(1);
                let at = SnapshotPoint {
                    last_index: index,
                    last_term: term,
                };
                let data = format!("{slot} installed at {index}").into_bytes();
                current
                    .save_snapshot(GROUPS[slot], at, &data, true)
                    .expect("install");
                model.snapshot = Some((at, data));
                model.history.clear();
                model.last_index = index;
            }
            Op::Reopen => {
                drop(log.take());
                let (reopened, recovered) = open(dir.path());
                check(&models, &recovered);
                log = Some(reopened);
            }
        }
        let current = log.as_ref().expect("open");
        for (model, group) in models.iter().zip(GROUPS) {
            assert_eq!(current.last_index(group), model.last_index);
            assert_eq!(current.hard_state(group), model.hard_state);
        }
    }
    drop(log.take());
    let (_, recovered) = open(dir.path());
    check(&models, &recovered);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn interleaved_groups_recover_exactly_what_the_model_holds(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run_ops(ops);
    }
}
