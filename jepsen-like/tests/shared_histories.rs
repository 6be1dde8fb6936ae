//! The public histories with known verdicts in `test-data/histories` (see its README.md and
//! verdicts.tsv): every linearizability verdict there must be reproduced. Wall time per file
//! is printed (run with `--nocapture` to see it), never asserted.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use jepsen_like::checker::{
    check, check_partitions, shrink_partition_violation, CheckOptions, CheckReport, Partition,
    PartitionOutcome, Verdict,
};
use jepsen_like::formats::knossos::{
    multi_register_partition, mutex_partition, register_history, RegisterHistory,
};
use jepsen_like::formats::porcupine::kv_partitions;
use jepsen_like::formats::{edn, pair_operations};
use jepsen_like::history::{parse_jsonl, History, Input, Outcome, ParseError, Value};
use jepsen_like::model::{KvModel, Model, MutexModel};

const MAX_STEPS_PER_PARTITION: u64 = 1_000_000;

/// Root of the public histories, vendored into this crate (sources and licences in its README).
fn histories_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/test-data/histories"))
}

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

fn entries(path: &str) -> Vec<edn::Entry> {
    edn::parse_history(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `true` iff every partition is linearizable; the library stops at the first violation (see
/// `check_partitions`), and a run out of budget fails the test.
fn all_linearizable<M: Model>(model: &M, partitions: &[Partition<M::Input, M::Output>]) -> bool {
    let report = check_partitions(model, partitions, MAX_STEPS_PER_PARTITION);
    assert_ne!(report.verdict, Verdict::Unknown, "step budget exhausted");
    report.verdict == Verdict::Linearizable
}

fn check_register(history: &History) -> CheckReport {
    let report = check(history, &CheckOptions::default());
    assert_ne!(report.verdict, Verdict::Unknown, "step budget exhausted");
    report
}

fn knossos_register(path: &str) -> RegisterHistory {
    let entries = entries(path);
    let ops = pair_operations(&entries).unwrap_or_else(|e| panic!("{path}: {e}"));
    register_history(&ops).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fail<T>(path: &str, error: ParseError) -> T {
    panic!("{path}: {error}")
}

/// Runs one verdicts.tsv row; `None` if its model is not a linearizability model we handle.
fn run(row: &Row) -> Option<bool> {
    if row.model.starts_with("elle") {
        return None; // transactional histories, not vendored (see test-data/histories/README.md)
    }
    let entries = entries(&row.path);
    let ops = pair_operations(&entries).unwrap_or_else(|e| panic!("{}: {e}", row.path));
    if row.model.starts_with("kv get/put/append") {
        let partitions = kv_partitions(&ops).unwrap_or_else(|e| fail(&row.path, e));
        Some(all_linearizable(&KvModel, &partitions))
    } else if row.model.starts_with("knossos cas-register") {
        let history = register_history(&ops)
            .unwrap_or_else(|e| fail(&row.path, e))
            .history;
        Some(check_register(&history).verdict == Verdict::Linearizable)
    } else if row.model.starts_with("knossos multi-register") {
        let (model, partition) =
            multi_register_partition(&ops).unwrap_or_else(|e| fail(&row.path, e));
        let initial: Vec<(&str, i64)> = model
            .initial
            .iter()
            .map(|(r, v)| (r.as_str(), *v))
            .collect();
        assert_eq!(
            initial,
            [("x", 0), ("y", 0)],
            "Knossos's (multi-register {{:x 0 :y 0}})"
        );
        Some(all_linearizable(&model, &[partition]))
    } else if row.model.starts_with("knossos mutex") {
        let partition = mutex_partition(&ops).unwrap_or_else(|e| fail(&row.path, e));
        Some(all_linearizable(&MutexModel, &[partition]))
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
    let RegisterHistory {
        history,
        completion_index,
    } = knossos_register(path);
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
        let history = knossos_register(&row.path).history;
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
    // Sanity that the per-key split finds the bad key and not all keys: each key on its own.
    let entries = entries("porcupine/test_data/kv/c10-bad.txt");
    let partitions = kv_partitions(&pair_operations(&entries).expect("pairs")).expect("kv");
    let verdicts: Vec<Verdict> = partitions
        .iter()
        .map(|p| {
            check_partitions(&KvModel, std::slice::from_ref(p), MAX_STEPS_PER_PARTITION).verdict
        })
        .collect();
    assert!(verdicts.contains(&Verdict::Linearizable));
    assert!(verdicts.contains(&Verdict::NotLinearizable));
    assert!(!verdicts.contains(&Verdict::Unknown));
    // The whole history stops at the first bad key.
    let report = check_partitions(&KvModel, &partitions, MAX_STEPS_PER_PARTITION);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert!(matches!(
        report.per_partition.last().map(|r| &r.outcome),
        Some(PartitionOutcome::Violation { .. })
    ));
}

#[test]
fn kv_violations_shrink_within_their_bounds() {
    // c50-bad: 50 clients; its bad key's violation shrinks far, given iterations.
    let entries = entries("porcupine/test_data/kv/c50-bad.txt");
    let partitions = kv_partitions(&pair_operations(&entries).expect("pairs")).expect("kv");
    let report = check_partitions(&KvModel, &partitions, MAX_STEPS_PER_PARTITION);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let options = CheckOptions::default();
    let (index, shrunk) =
        shrink_partition_violation(&KvModel, &partitions, &report, &options).expect("a violation");
    let key_ops = partitions[index].ops.len();
    assert!(
        shrunk.kept.len() < key_ops,
        "{} of {key_ops}",
        shrunk.kept.len()
    );
    assert!(shrunk.kept.contains(&shrunk.failed_op));
    assert!(shrunk.steps <= options.max_shrink_steps);
    // A bound of a few hundred iterations stops it early: a witness all the same, never
    // larger than the key's history.
    let tight = CheckOptions {
        max_shrink_steps: 300,
        ..CheckOptions::default()
    };
    let (_, bounded) =
        shrink_partition_violation(&KvModel, &partitions, &report, &tight).expect("a violation");
    assert!(bounded.steps <= 300, "{}", bounded.steps);
    assert!(bounded.kept.len() > shrunk.kept.len());
    assert!(bounded.kept.len() <= key_ops);
    assert!(bounded.kept.contains(&bounded.failed_op));
}
