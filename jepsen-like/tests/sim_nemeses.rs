//! The real node under every nemesis at once: for a fixed set of seeds, each run must be
//! linearizable, recover after the heal (a write succeeds and every node reaches the same
//! applied index within the bound), end with identical state-machine digests, and have served
//! something: a history of failures and timeouts is trivially linearizable, so each run must
//! also meet the [`Floors`] (successful operations and writes in the run and in each quarter of
//! the workload, and two successful writes by every client after the heal).
//!
//! A failure prints the seed and the run's summary; replay it with
//! `cargo run --release -p jepsen-like --example sim_soak -- SEED 1 OPS NODES all DIR`, which
//! writes the history, the fault log and the HTML report to DIR/seed-SEED/.
//! The long run is `long_run_many_seeds` (ignored; see its doc).

mod common;

use jepsen_like::sim::{Nemesis, SimOptions, SimReport};

fn assert_passes(options: &SimOptions) -> SimReport {
    let report = common::assert_passes(options, "nemeses");
    assert!(report.digests_match, "{}", report.summary());
    assert!(
        report.faults.iter().any(|f| f.starts),
        "seed {}: no fault was injected",
        options.seed
    );
    println!("HEADROOM {}", headroom(&report));
    report
}

/// The run's lowest shares against the floors: ok in the run, ok in a workload quarter, and
/// successful writes in a quarter, in percent (`grep HEADROOM` in `--nocapture` output).
fn headroom(report: &SimReport) -> String {
    let percent = |part: usize, whole: usize| part * 100 / whole.max(1);
    let c = &report.counts;
    let run_ok = percent(c.ok, c.ok + c.fail + c.info);
    let quarters = report.phases.iter().filter(|p| p.under_faults);
    let (mut quarter_ok, mut quarter_writes) = (100, 100);
    for q in quarters {
        let done = q.counts.ok + q.counts.fail + q.counts.info;
        quarter_ok = quarter_ok.min(percent(q.counts.ok, done));
        quarter_writes = quarter_writes.min(percent(q.counts.ok_writes, done));
    }
    format!("{run_ok} {quarter_ok} {quarter_writes}")
}

/// Operations per CI run: fewer than the default 2000 (the same ten clients and density, a
/// shorter run), so the CI seeds fit the budget. The long run uses the default.
const CI_OPS: usize = 1000;

// Sized for CI (`cargo test --workspace`, test profile, two cores): a quarter of a second per
// run of 1000 operations. The seed set is split in tests so they run in parallel.
//
// The floors (`Floors::default()`) against what these seeds reach: over the 248 runs of this
// file (1000 operations, 10 clients, swarm testing over every nemesis), the lowest share of
// successful operations in a run was 56% (floor 40%), in a workload quarter 35% (floor 25%), of
// successful writes in a quarter 13% (floor 5%), and every client made both its after-heal
// writes (floor 2). `cargo test -p jepsen-like --test sim_nemeses -- --nocapture | grep
// HEADROOM` prints each run's three figures.

#[test]
fn five_nodes_every_nemesis() {
    for seed in 0..80 {
        let report = assert_passes(&SimOptions {
            ops: CI_OPS,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary());
    }
}

#[test]
fn five_nodes_every_nemesis_more_seeds() {
    for seed in 80..160 {
        let report = assert_passes(&SimOptions {
            ops: CI_OPS,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary());
    }
}

#[test]
fn three_nodes_every_nemesis() {
    for seed in 300..360 {
        let report = assert_passes(&SimOptions {
            nodes: 3,
            ops: CI_OPS,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary());
    }
}

/// Each nemesis alone, so that a failure names its fault.
#[test]
fn each_nemesis_alone() {
    for (i, nemesis) in Nemesis::ALL.into_iter().enumerate() {
        let mut messages = jepsen_like::sim::MessageStats::default();
        for seed in (200 + 10 * i as u64)..(203 + 10 * i as u64) {
            let report = assert_passes(&SimOptions {
                nemeses: vec![nemesis],
                ops: CI_OPS,
                ..SimOptions::new(seed)
            });
            println!("{nemesis}: {}", report.summary());
            assert_eq!(report.plan.nemeses, vec![nemesis]);
            let m = report.messages;
            messages.dropped += m.dropped;
            messages.duplicated += m.duplicated;
            messages.reordered += m.reordered;
            messages.stale += m.stale;
            // The aimed nemeses hit what they aim at.
            let described = |needle: &str| {
                report
                    .faults
                    .iter()
                    .any(|f| f.starts && f.description.contains(needle))
            };
            match nemesis {
                Nemesis::Leader => assert!(described("leader"), "{}", report.fault_log()),
                Nemesis::Clients => assert!(described("clients on c"), "{}", report.fault_log()),
                _ => {}
            }
        }
        // The message-level nemeses really changed messages (the seam is wired in).
        match nemesis {
            Nemesis::Messages => assert!(
                messages.dropped > 0
                    && messages.duplicated > 0
                    && messages.reordered > 0
                    && messages.stale > 0,
                "{messages:?}"
            ),
            Nemesis::OneWay => assert!(messages.dropped > 0, "{messages:?}"),
            _ => assert_eq!(
                messages.dropped + messages.duplicated + messages.reordered + messages.stale,
                0,
                "{nemesis} touched messages at the seam"
            ),
        }
    }
}

/// The long run's shape (the default 2000 operations per seed, seeds from 1000) on a few seeds,
/// so CI runs it. `long_run_many_seeds` runs many of them.
#[test]
fn long_run_ci_size() {
    for seed in 1000..1003 {
        let report = assert_passes(&SimOptions::new(seed));
        println!("{}", report.summary().replace('\n', " | "));
    }
}

/// The long run: `SIM_SEEDS` seeds (default 200) from `SIM_FIRST_SEED` (default 1000), with
/// `SIM_OPS` operations each (default 2000), every nemesis, five nodes.
///
/// `SIM_SEEDS=200 cargo test --release -p jepsen-like --test sim_nemeses -- --ignored --nocapture`
/// (a few minutes in release; see the README). `long_run_ci_size` is its CI-sized sample.
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
    let ops = var("SIM_OPS", 2000) as usize;
    for seed in first..first + seeds {
        let report = assert_passes(&SimOptions {
            ops,
            ..SimOptions::new(seed)
        });
        println!("{}", report.summary().replace('\n', " | "));
    }
}
