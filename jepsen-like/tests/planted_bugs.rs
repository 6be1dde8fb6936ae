//! The planted-bug catalogue (`ringleader_node::planted::CATALOGUE`) is caught: for every
//! catalogued bug, runs seeds from 0 until one fails (any verdict other than `Linearizable`;
//! for the floor fault, a shortfall of successful operations) and asserts it is caught within
//! the bug's seed budget, printing the seeds it needed. The real code must then pass the seed
//! that caught the bug, so a catch is the bug's doing and not a flaky simulation.
//!
//! These tests need the `planted-bugs` feature, which this crate's dev-dependencies turn on.
//! `PLANTED_BUGS_MAX_SEEDS=200 cargo test -p jepsen-like --test planted_bugs -- --nocapture`
//! searches up to 200 seeds instead of each budget (to measure what a bug needs).

use jepsen_like::sim::{parse_nemeses, run, Floors, SimOptions, SimReport, Verdict};
use ringleader_node::planted::{Entry, Kind, PlantedBug, CATALOGUE, ENABLED};

/// The options `entry`'s bug is searched with: `SimOptions::new`'s defaults, with the
/// catalogue's nemeses; `bug` is the bug itself or, to check a seed, none.
fn options(entry: &Entry, bug: PlantedBug, seed: u64) -> SimOptions {
    SimOptions {
        nemeses: parse_nemeses(entry.nemeses).expect("the catalogue names known nemeses"),
        planted_bug: bug,
        ..SimOptions::new(seed)
    }
}

/// Why the run failed, if it did: its verdict, or for a floor fault its shortfalls.
fn failure(report: &SimReport, kind: Kind) -> Option<String> {
    if report.verdict != Verdict::Linearizable {
        return Some(format!("{:?}", report.verdict));
    }
    let shortfalls = report.floor_shortfalls(&Floors::default());
    (kind == Kind::FloorFault && !shortfalls.is_empty()).then(|| shortfalls.join("; "))
}

fn assert_caught(bug: PlantedBug) {
    const { assert!(ENABLED, "the planted bugs need the `planted-bugs` feature") };
    let entry = bug.entry().expect("a catalogued bug");
    let budget = std::env::var("PLANTED_BUGS_MAX_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(entry.seed_budget);
    let mut caught = None;
    for seed in 0..budget {
        let report = run(&options(entry, bug, seed)).expect("the simulation could not run");
        if let Some(reason) = failure(&report, entry.kind) {
            if matches!(report.verdict, Verdict::Violation { .. }) {
                assert!(
                    report.html_report.is_some(),
                    "a violation comes with its report"
                );
            }
            println!("{}\n{}", report.summary(), report.fault_log());
            caught = Some((seed, reason));
            break;
        }
    }
    let Some((seed, reason)) = caught else {
        panic!(
            "{}: not caught in seeds 0..{budget} (its budget is {})",
            entry.name, entry.seed_budget
        );
    };
    println!(
        "PLANTED {}: caught at seed {seed}, {} seeds needed (budget {}): {reason}",
        entry.name,
        seed + 1,
        entry.seed_budget
    );
    // The same seed on the real code: nothing wrong, floors met.
    let real = run(&options(entry, PlantedBug::None, seed)).expect("the simulation could not run");
    let shortfalls = real.floor_shortfalls(&Floors::default());
    assert!(
        real.passed() && shortfalls.is_empty(),
        "seed {seed} caught {} but fails on the real code too: {}\n{}",
        entry.name,
        real.summary(),
        shortfalls.join("\n")
    );
}

macro_rules! catalogue_tests {
    ($($test:ident: $bug:ident,)*) => {
        $(
            #[test]
            fn $test() {
                assert_caught(PlantedBug::$bug);
            }
        )*

        /// Every bug and floor fault of the catalogue has its test above.
        #[test]
        fn every_catalogued_bug_has_a_test() {
            let tested = [$(PlantedBug::$bug),*];
            for entry in CATALOGUE {
                if matches!(entry.kind, Kind::Bug | Kind::FloorFault) {
                    assert!(tested.contains(&entry.bug), "no test for {}", entry.name);
                }
            }
        }
    };
}

catalogue_tests! {
    local_reads: LocalReads,
    divergent_apply: DivergentApply,
    ack_before_fsync: AckBeforeFsync,
    commit_old_term: CommitOldTerm,
    commit_beyond_last_new: CommitBeyondLastNew,
    read_before_first_commit: ReadBeforeFirstCommit,
    unconfirmed_reads: UnconfirmedReads,
    double_vote: DoubleVote,
    vote_not_persisted: VoteNotPersisted,
    truncate_matching_log: TruncateMatchingLog,
    stale_snapshot: StaleSnapshot,
    session_outcome_not_cached: SessionOutcomeNotCached,
    majority_off_by_one: MajorityOffByOne,
    never_send_snapshot: NeverSendSnapshot,
    refuse_writes: RefuseWrites,
}
