//! What the simulation tests share: running a seed and failing with its files written.

use jepsen_like::sim::{run, write_outputs, Floors, SimOptions, SimReport};

/// Runs `options` and asserts the run found nothing wrong (every checker, the recovery, the
/// floors); returns its report. On failure the history and report are written to a temporary
/// directory named by `label` and the seed, and the panic says where.
pub fn assert_passes(options: &SimOptions, label: &str) -> SimReport {
    let report = run(options).expect("the simulation could not run");
    let shortfalls = report.floor_shortfalls(&Floors::default());
    if !report.passed() || !shortfalls.is_empty() {
        let dir =
            std::env::temp_dir().join(format!("ringleader-sim-{label}-seed-{}", options.seed));
        let written = write_outputs(&report, &dir).map(|_| dir.display().to_string());
        panic!(
            "{}\nbelow the floors:\n  {}\nfaults:\n{}files: {written:?}",
            report.summary(),
            shortfalls.join("\n  "),
            report.fault_log()
        );
    }
    println!("{}", report.summary());
    report
}
