//! The real node under every nemesis at once: for a fixed set of seeds, each run must be
//! linearizable, recover after the heal (a write succeeds and every node reaches the same
//! applied index within the bound) and end with identical state-machine digests.
//!
//! A failure prints the seed and the run's summary; replay it with
//! `cargo run --release -p jepsen-like --example sim_soak -- SEED 1 OPS NODES all DIR`, which
//! writes the history, the fault log and the HTML report to DIR/seed-SEED/.
//! The long run is `long_run_many_seeds` (ignored; see its doc).

use jepsen_like::sim::{run, write_outputs, Nemesis, SimOptions, SimReport};

fn assert_passes(options: &SimOptions) -> SimReport {
    let report = run(options).expect("the simulation could not run");
    if !report.passed() {
        let dir = std::env::temp_dir().join(format!("ringleader-sim-seed-{}", options.seed));
        let written = write_outputs(&report, &dir).map(|_| dir.display().to_string());
        panic!(
            "{}\nfaults:\n{}files: {written:?}",
            report.summary(),
            report.fault_log()
        );
    }
    assert!(report.digests_match, "{}", report.summary());
    assert!(
        report.faults.iter().any(|f| f.starts),
        "seed {}: no fault was injected",
        options.seed
    );
    report
}

// Sized for CI (`cargo test --workspace`, test profile, two cores): about half a second per run
// of 500 operations and ~30 simulated seconds. The seed set is split in two tests so they run
// in parallel.

#[test]
fn five_nodes_every_nemesis() {
    for seed in 0..30 {
        let report = assert_passes(&SimOptions::new(seed));
        println!("{}", report.summary());
    }
}

#[test]
fn five_nodes_every_nemesis_more_seeds() {
    for seed in 30..60 {
        let report = assert_passes(&SimOptions::new(seed));
        println!("{}", report.summary());
    }
}

#[test]
fn three_nodes_every_nemesis() {
    for seed in 100..130 {
        let report = assert_passes(&SimOptions {
            nodes: 3,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary());
    }
}

/// Each nemesis alone, so that a failure names its fault.
#[test]
fn each_nemesis_alone() {
    for (i, nemesis) in Nemesis::ALL.into_iter().enumerate() {
        for seed in (200 + 10 * i as u64)..(204 + 10 * i as u64) {
            let report = assert_passes(&SimOptions {
                nemeses: vec![nemesis],
                ..SimOptions::new(seed)
            });
            println!("{nemesis}: {}", report.summary());
        }
    }
}

/// The long run: `SIM_SEEDS` seeds (default 200) from `SIM_FIRST_SEED` (default 1000), with
/// `SIM_OPS` operations each (default 1000), every nemesis, five nodes.
///
/// `SIM_SEEDS=200 cargo test --release -p jepsen-like --test sim_nemeses -- --ignored --nocapture`
#[test]
#[ignore]
fn long_run_many_seeds() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let first = var("SIM_FIRST_SEED", 1000);
    let seeds = var("SIM_SEEDS", 200);
    let ops = var("SIM_OPS", 1000) as usize;
    for seed in first..first + seeds {
        let report = assert_passes(&SimOptions {
            ops,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary().replace('\n', " | "));
    }
}
