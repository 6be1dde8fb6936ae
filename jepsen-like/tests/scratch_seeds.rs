use jepsen_like::levels::Level;
use jepsen_like::sim::{run, Consistency, Nemesis, SimOptions};

#[test]
fn scan_leader_loss_seeds() {
    for seed in 0..45 {
        let options = SimOptions {
            ops: 1000,
            consistency: Consistency::Mix,
            nemeses: vec![Nemesis::Leader],
            ..SimOptions::new(seed)
        };
        let report = run(&options).expect("run");
        let lost = report.lost_writes.get(&Level::Leader).map_or(0, |l| l.lost);
        let not_on_all = report.history_jsonl.matches("committed, not yet on every replica").count();
        println!("seed {seed}: verdict {:?} leader lost {lost} not_on_all {not_on_all}", report.verdict);
    }
}
