//! Runs many simulation seeds and prints one line per seed: the long run behind the CI seed set.
//!
//! ```text
//! cargo run --release -p jepsen-like --example sim_soak -- [FIRST_SEED] [SEEDS] [OPS] [NODES] [NEMESES] [OUT_DIR] [CLIENTS] [KEYS]
//! cargo run --release -p jepsen-like --example sim_soak -- 0 200 300 5 all target/sim-soak
//! ```
//!
//! A failing seed's history, fault log and (on a violation) HTML report go to OUT_DIR/seed-N/.
//! Exits non-zero if any seed failed. With `RUST_LOG` set (e.g. `RUST_LOG=info`), the nodes'
//! logs are printed, each line tagged with its simulated host.

use std::path::PathBuf;
use std::time::Instant;

use jepsen_like::sim::{parse_nemeses, run, write_outputs, SimOptions};

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let first: u64 = arg(0, "0").parse().expect("FIRST_SEED");
    let count: u64 = arg(1, "20").parse().expect("SEEDS");
    let ops: usize = arg(2, "300").parse().expect("OPS");
    let nodes: usize = arg(3, "5").parse().expect("NODES");
    let nemeses = parse_nemeses(&arg(4, "all")).expect("NEMESES");
    let out_dir = PathBuf::from(arg(5, "target/sim-soak"));
    let defaults = SimOptions::new(0);
    let clients: usize = arg(6, &defaults.clients.to_string())
        .parse()
        .expect("CLIENTS");
    let keys: usize = arg(7, &defaults.keys.to_string()).parse().expect("KEYS");

    let started = Instant::now();
    let mut failed = Vec::new();
    let mut total_ops = 0;
    let mut check_time = std::time::Duration::ZERO;
    for seed in first..first + count {
        let options = SimOptions {
            ops,
            nodes,
            clients,
            keys,
            nemeses: nemeses.clone(),
            ..SimOptions::new(seed)
        };
        let seed_started = Instant::now();
        let report = run(&options).expect("the simulation could not run");
        total_ops += report.counts.ok + report.counts.fail + report.counts.info;
        check_time += report.check_wall_time;
        println!(
            "seed {seed:>5}: {:<14} ok {:>4} fail {:>4} info {:>4} faults {:>3} sim {:>6.1}s \
             recovered {:?}/{:?} ms wall {:?} (check {:?})",
            match &report.verdict {
                jepsen_like::sim::Verdict::Linearizable => "linearizable".to_string(),
                other => format!("{other:?}").chars().take(14).collect(),
            },
            report.counts.ok,
            report.counts.fail,
            report.counts.info,
            report.faults.iter().filter(|f| f.starts).count(),
            report.sim_elapsed.as_secs_f64(),
            report.recovery.write_after_ms,
            report.recovery.converged_after_ms,
            seed_started.elapsed(),
            report.check_wall_time,
        );
        // As the tests judge a run: linearizable and recovered, and above the floors of
        // successful operations (a run that served nothing is not a pass).
        let shortfalls = report.floor_shortfalls(&jepsen_like::sim::Floors::default());
        if !report.passed() || !shortfalls.is_empty() {
            let dir = out_dir.join(format!("seed-{seed}"));
            write_outputs(&report, &dir).expect("write the failing run's files");
            println!(
                "{}\n  below the floors: {shortfalls:?}\n  -> {}",
                report.summary(),
                dir.display()
            );
            failed.push(seed);
        }
    }
    println!(
        "{count} seeds, {total_ops} ops, {} failed {failed:?}, wall {:?}, checking {check_time:?}",
        failed.len(),
        started.elapsed()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
