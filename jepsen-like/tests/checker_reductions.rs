//! The two reductions that keep histories with many unknown-outcome writes cheap to check
//! (`checker::register_ops` merges values no one observed; the search linearizes
//! interchangeable unknown-outcome operations only in call order) must never change a verdict:
//! on random small histories full of timed-out writes, compare-and-set mismatches and reads,
//! the checker agrees with a plain search that has neither. And they must pay: a history with
//! dozens of timed-out writes per key is judged in few iterations.

use jepsen_like::checker::{check, register_ops, CheckOptions, Verdict};
use jepsen_like::history::{
    CompletionType, Function, History, HistoryRecorder, Input, Outcome, Value,
};
use jepsen_like::model::{Interner, Model, RegisterInput, RegisterModel, RegisterOutput};
use jepsen_like::search::{search, ModelOp, SearchOutcome};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;

/// The register model without the symmetry rule.
struct PlainRegister;

impl Model for PlainRegister {
    type State = <RegisterModel as Model>::State;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Self::State {
        RegisterModel.init()
    }

    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State> {
        RegisterModel.step(state, input, output)
    }

    fn is_observer(&self, input: &Self::Input, output: Option<&Self::Output>) -> bool {
        RegisterModel.is_observer(input, output)
    }
}

/// The key's operations with every value interned as itself (no merging).
fn plain_ops(history: &History) -> Vec<ModelOp<RegisterInput, RegisterOutput>> {
    let mut interner = Interner::default();
    let mut ops = Vec::new();
    for op in &history.ops {
        let input = match &op.input {
            Input::Read => RegisterInput::Read,
            Input::Write(v) => RegisterInput::Write(interner.intern(v)),
            Input::Cas { expected, new } => RegisterInput::Cas {
                expected: expected.as_ref().map(|v| interner.intern(v)),
                new: interner.intern(new),
            },
        };
        let output = match (&op.outcome, input) {
            (Outcome::Failed { .. }, _) => continue,
            (Outcome::Unknown { .. }, RegisterInput::Read) => continue,
            (Outcome::Unknown { .. }, _) => None,
            (Outcome::CasMismatch, _) => Some(RegisterOutput::CasMismatch),
            (Outcome::Ok { read }, RegisterInput::Read) => Some(RegisterOutput::Read(
                read.as_ref().map(|v: &Value| interner.intern(v)),
            )),
            (Outcome::Ok { .. }, _) => Some(RegisterOutput::Done),
        };
        ops.push(match (output, op.complete_seq) {
            (Some(output), Some(ret)) => ModelOp::completed(op.invoke_seq, ret, input, output),
            _ => ModelOp::unknown(op.invoke_seq, input),
        });
    }
    ops
}

/// A random single-key history: `processes` clients each doing a few operations whose
/// intervals overlap at random; writes of fresh values (some time out), compare-and-sets that
/// swap, mismatch or time out, reads of random values (often impossible ones).
fn random_history(seed: u64, processes: u64, ops_per_process: usize) -> History {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut recorder = HistoryRecorder::new();
    let mut open: Vec<(u64, usize, u8)> = Vec::new(); // (process, op id, kind)
    let mut left: Vec<usize> = vec![ops_per_process; processes as usize];
    let mut next_value = 1i64;
    let mut time = 0u64;
    loop {
        time += 1;
        let idle: Vec<u64> = (0..processes)
            .filter(|p| left[*p as usize] > 0 && !open.iter().any(|(q, _, _)| q == p))
            .collect();
        if idle.is_empty() && open.is_empty() {
            break;
        }
        if !idle.is_empty() && (open.is_empty() || rng.random_bool(0.5)) {
            let process = idle[rng.random_range(0..idle.len())];
            left[process as usize] -= 1;
            let kind = rng.random_range(0..3u8);
            let (function, value) = match kind {
                0 => (Function::Read, Json::Null),
                1 => {
                    next_value += 1;
                    (Function::Write, Json::from(next_value))
                }
                _ => {
                    next_value += 1;
                    let expected = if rng.random_bool(0.7) {
                        (next_value - 1 - rng.random_range(0..2)).max(0)
                    } else {
                        rng.random_range(0..next_value)
                    };
                    let expected = if expected == 0 {
                        Json::Null
                    } else {
                        Json::from(expected)
                    };
                    (
                        Function::Cas,
                        Json::Array(vec![expected, Json::from(next_value)]),
                    )
                }
            };
            let id = recorder.invoke_at(process, function, "k", value, time);
            open.push((process, id, kind));
        } else {
            let (_, id, kind) = open.remove(rng.random_range(0..open.len()));
            use CompletionType::{Fail, Info, Ok};
            match kind {
                0 => {
                    // Mostly a value written lately (often possible), sometimes any.
                    let seen = if rng.random_bool(0.8) {
                        (next_value - rng.random_range(0..3)).max(0)
                    } else {
                        rng.random_range(0..=next_value)
                    };
                    let value = if seen == 0 {
                        Json::Null
                    } else {
                        Json::from(seen)
                    };
                    recorder.complete_at(id, Ok, value, None, time);
                }
                1 if rng.random_bool(0.5) => recorder.complete_at(id, Info, Json::Null, None, time),
                1 => recorder.complete_at(id, Ok, Json::Null, None, time),
                _ => match rng.random_range(0..3u8) {
                    0 => recorder.complete_at(id, Info, Json::Null, None, time),
                    1 => recorder.complete_at(id, Fail, Json::Null, Some("mismatch"), time),
                    _ => recorder.complete_at(id, Ok, Json::Null, None, time),
                },
            }
        }
    }
    recorder.to_history().expect("a recorded history parses")
}

#[test]
fn the_reductions_never_change_a_verdict() {
    let (mut linearizable, mut not) = (0, 0);
    for seed in 0..12_000 {
        let history = random_history(seed, 3, 4);
        let plain = search(&PlainRegister, &plain_ops(&history), 10_000_000).outcome;
        let reduced = check(&history, &CheckOptions::default()).verdict;
        let expected = match plain {
            SearchOutcome::Linearizable { .. } => Verdict::Linearizable,
            SearchOutcome::NotLinearizable { .. } => Verdict::NotLinearizable,
            SearchOutcome::Unknown { .. } => panic!("seed {seed}: the plain search gave up"),
        };
        assert_eq!(
            reduced,
            expected,
            "seed {seed}:\n{}",
            history_text(&history)
        );
        match expected {
            Verdict::Linearizable => linearizable += 1,
            _ => not += 1,
        }
    }
    // Both verdicts are well represented, so the agreement means something.
    assert!(linearizable > 600 && not > 600, "{linearizable} vs {not}");
}

fn history_text(history: &History) -> String {
    history
        .ops
        .iter()
        .map(|op| format!("{op:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A timed-out write whose value no one read, with a compare-and-set mismatch that needs the
/// register to hold *something* other than the old value: merging the value must keep the
/// history linearizable, and must not make a real violation disappear.
#[test]
fn a_merged_value_still_satisfies_and_still_refutes_mismatches() {
    let mut recorder = HistoryRecorder::new();
    let w1 = recorder.invoke_at(1, Function::Write, "k", Json::from(1), 1);
    recorder.complete_at(w1, CompletionType::Ok, Json::Null, None, 2);
    let w2 = recorder.invoke_at(2, Function::Write, "k", Json::from(2), 3);
    recorder.complete_at(w2, CompletionType::Info, Json::Null, None, 20);
    let cas = recorder.invoke_at(
        3,
        Function::Cas,
        "k",
        Json::Array(vec![Json::from(1), Json::from(3)]),
        4,
    );
    recorder.complete_at(cas, CompletionType::Fail, Json::Null, Some("mismatch"), 5);
    let history = recorder.to_history().unwrap();
    assert_eq!(
        check(&history, &CheckOptions::default()).verdict,
        Verdict::Linearizable,
        "the timed-out write explains the mismatch"
    );
    // Then a read of 1 after the mismatch: impossible (nothing wrote 1 again).
    let read = recorder.invoke_at(4, Function::Read, "k", Json::Null, 6);
    recorder.complete_at(read, CompletionType::Ok, Json::from(1), None, 7);
    let history = recorder.to_history().unwrap();
    assert_eq!(
        check(&history, &CheckOptions::default()).verdict,
        Verdict::NotLinearizable
    );
}

/// 60 timed-out writes no one read: in each of three rounds a write succeeds, twenty writes
/// time out, and then a read still returns the first write's value. The search must leave the
/// timed-out writes out (or put them after the read); a search that tries them in every subset
/// (2^20 per round) runs out of budget. The checker needs a few iterations per operation.
#[test]
fn many_timed_out_writes_are_cheap_to_judge() {
    let mut recorder = HistoryRecorder::new();
    let mut time = 0;
    let mut value = 0i64;
    let mut lost_process = 1_000;
    for _round in 0..3 {
        value += 1;
        let kept = value;
        time += 1;
        let write = recorder.invoke_at(1, Function::Write, "k", Json::from(kept), time);
        time += 1;
        recorder.complete_at(write, CompletionType::Ok, Json::Null, None, time);
        for _ in 0..20 {
            value += 1;
            lost_process += 1;
            time += 1;
            let lost =
                recorder.invoke_at(lost_process, Function::Write, "k", Json::from(value), time);
            recorder.complete_at(lost, CompletionType::Info, Json::Null, None, time);
        }
        time += 1;
        let read = recorder.invoke_at(2, Function::Read, "k", Json::Null, time);
        time += 1;
        recorder.complete_at(read, CompletionType::Ok, Json::from(kept), None, time);
    }
    let history = recorder.to_history().unwrap();
    let report = check(&history, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    let ops = register_ops(&history, &(0..history.ops.len()).collect::<Vec<_>>()).0;
    assert!(
        report.work.search_steps < 20 * ops.len() as u64,
        "{} iterations for {} operations",
        report.work.search_steps,
        ops.len()
    );
}
