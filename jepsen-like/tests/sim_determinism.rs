//! A seed replays its run exactly: the same history, byte for byte, and the same faults at the
//! same simulated instants. Everything else about reproducing a failure rests on this.

use jepsen_like::sim::{run, SimOptions};

#[test]
fn same_seed_same_history() {
    for seed in [3, 41] {
        let options = SimOptions::new(seed);
        let first = run(&options).expect("first run");
        let second = run(&options).expect("second run");
        assert!(!first.history_jsonl.is_empty());
        if let Some((line, (a, b))) = first
            .history_jsonl
            .lines()
            .zip(second.history_jsonl.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
        {
            panic!(
                "seed {seed}: the histories differ first at line {}:\n  {a}\n  {b}\nfaults:\n{}\n{}",
                line + 1,
                first.fault_log(),
                second.fault_log()
            );
        }
        assert_eq!(
            first.history_jsonl.len(),
            second.history_jsonl.len(),
            "seed {seed}: one history is a prefix of the other"
        );
        assert_eq!(first.faults, second.faults, "seed {seed}: different faults");
        assert_eq!(first.recovery, second.recovery, "seed {seed}");
        assert_eq!(first.sim_elapsed, second.sim_elapsed, "seed {seed}");
    }
}

#[test]
fn different_seeds_different_histories() {
    let a = run(&SimOptions::new(5)).expect("run");
    let b = run(&SimOptions::new(6)).expect("run");
    assert_ne!(a.history_jsonl, b.history_jsonl);
}
