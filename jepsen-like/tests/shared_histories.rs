//! The public histories with known verdicts in `../shared/histories` (see its README.md and
//! verdicts.tsv): every linearizability verdict there must be reproduced. Wall time per file
//! is printed (run with `--nocapture` to see it), never asserted.

mod support;

use std::fs;
use std::time::Instant;

use jepsen_like::checker::{check, CheckOptions, CheckReport, KeyOutcome, Verdict};
use jepsen_like::history::{parse_jsonl, History, Input, Outcome, Value};
use jepsen_like::model::Model;
use jepsen_like::search::{search, ModelOp, SearchOutcome};
use support::*;

const MAX_STEPS: u64 = 10_000_000;
const MAX_STEPS_PER_PARTITION: u64 = 1_000_000;

struct Row {
    path: String,
    model: String,
    linearizable: bool,
}

fn verdicts() -> Vec<Row> {
    let text = fs::read_to_string(histories_dir().join("verdicts.tsv")).expect("verdicts.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            Row {
                path: cols[0].to_string(),
                model: cols[1].to_string(),
                linearizable: cols[2] == "linearizable",
            }
        })
        .collect()
}

fn read(path: &str) -> String {
    fs::read_to_string(histories_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Checks partitions with the generic search; `true` iff all are linearizable. Like Porcupine,
/// stops at the first partition proven non-linearizable: proving a violation only needs one,
/// and some failing partitions of c50-bad are expensive to refute exhaustively (Porcupine
/// never finishes them either: it cancels the other partitions on the first failure).
fn all_linearizable<M: Model>(model: &M, partitions: &[Vec<ModelOp<M::Input, M::Output>>]) -> bool {
    let mut undecided = 0;
    for ops in partitions {
        match search(model, ops, MAX_STEPS_PER_PARTITION).outcome {
            SearchOutcome::Linearizable { .. } => {}
            SearchOutcome::NotLinearizable { .. } => return false,
            SearchOutcome::Unknown { .. } => undecided += 1,
        }
    }
    assert_eq!(
        undecided, 0,
        "step budget exhausted on a history with no violation found"
    );
    true
}

fn check_register(history: &History) -> CheckReport {
    let report = check(history, &CheckOptions::default());
    assert_ne!(report.verdict, Verdict::Unknown, "step budget exhausted");
    report
}

/// Runs one verdicts.tsv row; `None` if its model is not a linearizability model we handle.
fn run(row: &Row) -> Option<bool> {
    let text = read(&row.path);
    let entries = || edn_history(&text);
    if row.model.starts_with("kv get/put/append") {
        let partitions: Vec<_> = porcupine_kv(&entries()).into_values().collect();
        Some(all_linearizable(&KvModel, &partitions))
    } else if row.model.starts_with("knossos cas-register") {
        let (history, _) = knossos_register_history(&entries());
        Some(check_register(&history).verdict == Verdict::Linearizable)
    } else if row.model.starts_with("knossos multi-register") {
        let model = MultiRegisterModel {
            initial: [("x".to_string(), 0), ("y".to_string(), 0)].into(),
        };
        Some(all_linearizable(
            &model,
            &[knossos_multi_register(&entries())],
        ))
    } else if row.model.starts_with("knossos mutex") {
        Some(all_linearizable(&MutexModel, &[knossos_mutex(&entries())]))
    } else {
        None
    }
}

#[test]
fn every_linearizability_verdict_agrees() {
    let rows = verdicts();
    assert!(rows.len() > 120, "verdicts.tsv has {} rows", rows.len());
    let mut checked = 0;
    let mut wrong = Vec::new();
    for row in &rows {
        let started = Instant::now();
        let Some(linearizable) = run(row) else {
            println!(
                "skipped (not a linearizability model: {}) {}",
                row.model, row.path
            );
            continue;
        };
        checked += 1;
        println!(
            "{:>8.1} ms  {:<5} {}",
            started.elapsed().as_secs_f64() * 1e3,
            if linearizable { "ok" } else { "bad" },
            row.path
        );
        if linearizable != row.linearizable {
            wrong.push(row.path.clone());
        }
    }
    assert!(wrong.is_empty(), "verdicts disagree for {wrong:?}");
    assert_eq!(checked, 6 + 120 + 1 + 1);
}

fn violation_of(
    path: &str,
) -> (
    History,
    std::collections::BTreeMap<usize, usize>,
    jepsen_like::checker::Violation,
) {
    let (history, completion_index) = knossos_register_history(&edn_history(&read(path)));
    let report = check_register(&history);
    let violation = report.violations().next().expect("a violation").clone();
    (history, completion_index, violation)
}

#[test]
fn immediate_failure_fails_at_the_read_of_3() {
    // Knossos asserts the failure is op index 3: the read of 3 (the write of 3 failed).
    let (history, completion_index, violation) =
        violation_of("knossos/data/cas-register/bad/immediate-failure.edn");
    let failed = &history.ops[violation.failed_op];
    assert_eq!(failed.input, Input::Read);
    assert_eq!(
        failed.outcome,
        Outcome::Ok {
            read: Some(Value::Int(3))
        }
    );
    assert_eq!(completion_index[&violation.failed_op], 3);
}

#[test]
fn cas_failure_fails_at_the_stale_read_of_process_70() {
    // Knossos' linear_test.clj: fails at {:f :read :process 70 :value 0 :index 491}.
    let (history, completion_index, violation) =
        violation_of("knossos/data/cas-register/bad/cas-failure.edn");
    let failed = &history.ops[violation.failed_op];
    assert_eq!(failed.process, 70);
    assert_eq!(
        failed.outcome,
        Outcome::Ok {
            read: Some(Value::Int(0))
        }
    );
    assert_eq!(completion_index[&violation.failed_op], 491);
    let shrunk = violation.shrunk.expect("shrunk");
    assert!(
        shrunk.ops.len() < violation.ops.len(),
        "{} ops",
        shrunk.ops.len()
    );
    println!(
        "cas-failure: {} ops shrunk to {}",
        violation.ops.len(),
        shrunk.ops.len()
    );
}

#[test]
fn rethink_fail_minimal_blames_the_concurrent_read_not_the_later_one() {
    let (history, _, violation) =
        violation_of("knossos/data/cas-register/bad/rethink-fail-minimal.edn");
    let failed = &history.ops[violation.failed_op];
    assert_eq!(failed.process, 1);
    assert_eq!(
        failed.outcome,
        Outcome::Ok {
            read: Some(Value::Int(3))
        }
    );
}

/// Our JSONL format round trip: a Knossos file converted to JSONL and parsed back is the same
/// history and gets the same verdict.
#[test]
fn knossos_histories_round_trip_through_jsonl() {
    let rows = verdicts();
    let mut files = 0;
    for row in rows
        .iter()
        .filter(|r| r.model.starts_with("knossos cas-register"))
    {
        let (history, _) = knossos_register_history(&edn_history(&read(&row.path)));
        let jsonl = history.to_jsonl();
        let reparsed = parse_jsonl(&jsonl).unwrap_or_else(|e| panic!("{}: {e}", row.path));
        assert_eq!(reparsed, history, "{}", row.path);
        let verdict = check_register(&reparsed).verdict;
        assert_eq!(
            verdict == Verdict::Linearizable,
            row.linearizable,
            "{}",
            row.path
        );
        files += 1;
    }
    assert_eq!(files, 120);
}

#[test]
fn bad_kv_histories_report_a_failed_key() {
    // Sanity that the per-key split finds the bad key and not all keys.
    let entries = edn_history(&read("porcupine/test_data/kv/c10-bad.txt"));
    let outcomes: Vec<bool> = porcupine_kv(&entries)
        .values()
        .map(|ops| {
            matches!(
                search(&KvModel, ops, MAX_STEPS).outcome,
                SearchOutcome::Linearizable { .. }
            )
        })
        .collect();
    assert!(outcomes.iter().any(|&ok| ok));
    assert!(outcomes.iter().any(|&ok| !ok));
    let _ = KeyOutcome::Linearizable;
}
