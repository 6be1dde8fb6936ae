//! The planted-bug catalogue (`ringleader_node::planted::CATALOGUE`) is caught: for every
//! catalogued bug, runs seeds from 0 until one fails (any verdict other than `Linearizable`;
//! for the floor fault, a shortfall of successful operations) and asserts it is caught within
//! the bug's seed budget, printing the seeds it needed. The real code must then pass the seed
//! that caught the bug, so a catch is the bug's doing and not a flaky simulation.
//!
//! Seeds needed on main 21b055d (test profile; each budget is about 2.5 times that, at most
//! 200): local-reads 1, divergent-apply 1, ack-before-fsync 2, double-vote 2,
//! never-send-snapshot 1, refuse-writes 1, read-before-first-commit 3, stale-snapshot 3,
//! majority-off-by-one 7, session-outcome-not-cached 22, heartbeat-commit-unclamped 26,
//! vote-not-persisted 28, truncate-matching-log 34, unconfirmed-reads 130; and on sim15 (with
//! `--consistency session`, the level it breaks) session-index-ignored 1. The whole file takes
//! about 90 s of CPU, most of it unconfirmed-reads' 130 runs.
//!
//! These tests need the `planted-bugs` feature, which this crate's dev-dependencies turn on.
//! `PLANTED_BUGS_MAX_SEEDS=200 cargo test -p jepsen-like --test planted_bugs -- --nocapture`
//! searches up to 200 seeds instead of each budget (to measure what a bug needs).

use jepsen_like::sim::{parse_nemeses, run, Consistency, Floors, SimOptions, SimReport, Verdict};
use ringleader_node::planted::{Entry, Kind, PlantedBug, CATALOGUE, ENABLED};

/// The options `entry`'s bug is searched with: `SimOptions::new`'s defaults, with the
/// catalogue's nemeses and swarm setting; `bug` is the bug itself or, to check a seed, none.
fn options(entry: &Entry, bug: PlantedBug, seed: u64) -> SimOptions {
    SimOptions {
        nemeses: parse_nemeses(entry.nemeses).expect("the catalogue names known nemeses"),
        swarm: entry.swarm,
        consistency: entry
            .consistency
            .parse::<Consistency>()
            .expect("the catalogue names known levels"),
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
                match entry.kind {
                    Kind::Bug | Kind::FloorFault => {
                        assert!(tested.contains(&entry.bug), "no test for {}", entry.name);
                        assert!(entry.seed_budget > 0, "{} has no budget", entry.name);
                    }
                    Kind::NotCaught => {
                        assert!(NOT_CAUGHT.contains(&entry.bug), "no test for {}", entry.name)
                    }
                    Kind::Regression => {}
                }
            }
        }
    };
}

catalogue_tests! {
    local_reads: LocalReads,
    divergent_apply: DivergentApply,
    ack_before_fsync: AckBeforeFsync,
    heartbeat_commit_unclamped: HeartbeatCommitUnclamped,
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
    session_index_ignored: SessionIndexIgnored,
}

/// Planted, but not caught within 200 seeds by the simulation as it is: kept (and measured
/// again with `PLANTED_BUGS_MAX_SEEDS=200 cargo test -p jepsen-like --test planted_bugs --
/// --ignored --nocapture`) for a stronger simulation to catch.
const NOT_CAUGHT: [PlantedBug; 2] = [PlantedBug::CommitOldTerm, PlantedBug::CommitBeyondLastNew];

/// Raft §5.4.2, Figure 8. Not caught in seeds 0..200 with `SimOptions::new`'s defaults (5
/// nodes, 2000 ops, 10 clients, every nemesis with swarm testing; on main 48604ba and again on
/// 21b055d), nor with 3 nodes, nor with only the leader, messages, crash and power-loss
/// nemeses without swarm (48604ba). Why: a new leader
/// appends its no-op at once and sends it in the same AppendEntries as the older entries, so
/// an older-term entry is committed alone only when a batch (64 entries) ends before the no-op
/// and the leader is then lost before the no-op commits.
#[test]
#[ignore]
fn commit_old_term() {
    assert_caught(PlantedBug::CommitOldTerm);
}

/// Raft Figure 2, AppendEntries rule 5. Not caught in seeds 0..200 with the same three sets
/// of options as `commit_old_term`. Why: a follower truncates at the first conflict, so a
/// stale suffix survives past the request's last new entry only when the request's batch ends
/// before the point where the follower's log diverges, which fast backtracking makes rare. The
/// leader-side form of the same rule, `heartbeat-commit-unclamped`, is caught.
#[test]
#[ignore]
fn commit_beyond_last_new() {
    assert_caught(PlantedBug::CommitBeyondLastNew);
}
