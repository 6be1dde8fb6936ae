//! Checks a parsed [`History`] of ringleader's key-value operations for linearizability.
//!
//! Linearizability is compositional (Herlihy & Wing's locality, "P-compositionality" in
//! Porcupine): a history of independent keys is linearizable iff each key's sub-history is. So
//! the history is split by key and each key is checked on its own against [`RegisterModel`]
//! with [`crate::search`], which turns one exponential search into many small ones.
//!
//! How outcomes map to the model (see `crate::history` for the file format):
//! - `ok` ops must be linearized between their invocation and completion;
//! - a cas `fail` with `mismatch` happened: it is a read asserting "value != expected";
//! - other `fail`s did not happen and are dropped;
//! - `info` ops (and ops never completed) may be linearized anywhere after their invocation, or
//!   not at all; unknown-outcome reads constrain nothing and are dropped.
//!
//! Other models (the public histories' key-value store, mutex, multi-register; see
//! [`crate::formats`]) come as [`Partition`]s of search operations and go through
//! [`check_partitions`].
//!
//! Both stop at the first violation (it decides the verdict), and search keys in turns of
//! growing budgets, resuming each search where it stopped, so the cheapest refutation is found
//! first and a non-linearizable history is not slower to judge than a linearizable one (see
//! [`judge`]; `cargo run --release -p jepsen-like --example checker_timing` measures both).
//!
//! The verdict comes first, from the search alone ([`judge`]); shrinking the counterexample
//! is a separate, optional step ([`shrink_first_violation`]) bounded by searches and search
//! iterations, so a non-linearizable history costs its search plus at most that bound.
//! [`check`] does both. The report counts the work of each ([`CheckWork`]).
//!
//! Per-key verdicts are deterministic: the search and the shrinking are bounded by step
//! budgets, not a clock, so the same history and options always give the same report. The
//! report carries wall times too, but only as information: they compare equal whatever they
//! hold ([`WallTime`]) and never decide anything.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::history::{History, Input, OpId, Outcome, Value};
use crate::model::{Interner, Model, RegisterInput, RegisterModel, RegisterOutput, ValueId};
use crate::search::{ModelOp, ResumableSearch, SearchOutcome};
use crate::shrink::{shrink, ShrinkLimits};

/// Knobs for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search iterations allowed per key before giving up with [`KeyOutcome::Unknown`].
    pub max_steps_per_key: u64,
    /// Shrink the first violation (the one reports show) to a smaller witness (see
    /// `crate::shrink`) after the verdict. `false` skips that step entirely.
    pub shrink: bool,
    /// Searches the shrinker may run.
    pub max_shrink_checks: usize,
    /// Search iterations the shrinker may use, summed over its searches; each of its searches
    /// also gets at most `max_steps_per_key`.
    pub max_shrink_steps: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: 10_000_000,
            shrink: true,
            max_shrink_checks: 200,
            max_shrink_steps: 300_000,
        }
    }
}

impl CheckOptions {
    /// The shrinker's bounds under these options.
    pub fn shrink_limits(&self) -> ShrinkLimits {
        ShrinkLimits {
            max_checks: self.max_shrink_checks,
            max_steps_per_check: self.max_steps_per_key,
            max_total_steps: self.max_shrink_steps,
        }
    }
}

/// A wall-clock duration kept for information only: it compares equal to every other, so two
/// reports of the same history under the same options are equal however fast the machine was.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallTime(pub Duration);

impl PartialEq for WallTime {
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for WallTime {}

/// The work a check took, split between reaching the verdict and shrinking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckWork {
    /// Search iterations over every key searched for the verdict.
    pub search_steps: u64,
    /// Searches the shrinker ran (0 when shrinking is off or there was no violation).
    pub shrink_checks: usize,
    /// Search iterations the shrinker used, over all its searches.
    pub shrink_steps: u64,
    /// Wall time to the verdict (informational).
    pub search_wall_time: WallTime,
    /// Wall time of the shrinking (informational).
    pub shrink_wall_time: WallTime,
}

/// Overall verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// At least one key has a proven violation.
    NotLinearizable,
    /// No violation found, but at least one key ran out of budget.
    Unknown,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub verdict: Verdict,
    /// One entry per key, keys in lexicographic order.
    pub per_key: Vec<KeyResult>,
    /// Operations handed to the search (after dropping failed ops and unknown reads).
    pub ops_checked: usize,
    pub work: CheckWork,
}

impl CheckReport {
    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.per_key.iter().filter_map(|k| match &k.outcome {
            KeyOutcome::Violation(v) => Some(v),
            _ => None,
        })
    }
}

/// The verdict for one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyResult {
    pub key: String,
    /// Operations of this key handed to the search.
    pub ops_checked: usize,
    /// Search iterations used (not counting shrinking).
    pub steps: u64,
    pub outcome: KeyOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyOutcome {
    Linearizable,
    Violation(Violation),
    /// The step budget ran out: neither proven nor refuted.
    Unknown,
    /// Not searched to a verdict: another key's violation had already decided the history
    /// (see [`judge`]).
    Skipped,
}

/// A proven violation on one key. All ids index [`History::ops`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub key: String,
    /// Every operation on the key, dropped ones included, in invocation order.
    pub ops: Vec<OpId>,
    /// The deepest partial linearization found, in linearization order.
    pub longest_prefix: Vec<OpId>,
    /// The operation that had to come next after `longest_prefix` and could not be placed.
    pub failed_op: OpId,
    /// A smaller (or, if the shrinking bound stopped it at once, equal) witness, once
    /// [`shrink_first_violation`] ran; only the first violating key is shrunk.
    pub shrunk: Option<ShrunkViolation>,
}

/// A shrunk witness (see `crate::shrink`): the ops `ops`, of which those completing after
/// `cut_seq` are treated as unknown-outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShrunkViolation {
    pub ops: Vec<OpId>,
    pub cut_seq: Option<u64>,
    pub longest_prefix: Vec<OpId>,
    pub failed_op: OpId,
}

/// Checks every key of `history`: [`judge`], then, if `options.shrink`,
/// [`shrink_first_violation`].
pub fn check(history: &History, options: &CheckOptions) -> CheckReport {
    let mut report = judge(history, options);
    if options.shrink {
        shrink_first_violation(history, &mut report, options);
    }
    report
}

/// The verdict of `history`, from the search alone: violations come without a shrunk witness,
/// whatever `options.shrink` says.
///
/// Keys are searched in turns ([`crate::search::ResumableSearch`]): each undecided key runs
/// until [`FIRST_SLICE_STEPS`] iterations in all, then ten times that, and so on up to
/// `max_steps_per_key`, each turn resuming where the last stopped (nothing is searched twice).
/// The first violation ends the check, since it decides the verdict: keys not yet decided then
/// are [`KeyOutcome::Skipped`]. Why: when several keys are wrong, refuting one can take
/// thousands of times longer than another (a simulated run with reads served from local
/// state: 52 search iterations for one key, 744,437 for the next), and searching every key to
/// the end, in order, made a non-linearizable history slower to judge than a linearizable one.
/// Turns find the cheap refutation first, deterministically, and cost a linearizable history
/// nothing extra. Memory: the memo of every key still undecided is held at once.
pub fn judge(history: &History, options: &CheckOptions) -> CheckReport {
    let started = Instant::now();
    let max_steps = options.max_steps_per_key;
    let keys: Vec<(&str, Vec<OpId>, KeyOps)> = history
        .by_key()
        .into_iter()
        .map(|(key, ids)| {
            let ops = register_ops(history, &ids);
            (key, ids, ops)
        })
        .collect();
    let mut per_key: Vec<KeyResult> = keys
        .iter()
        .map(|(key, _, (ops, _))| KeyResult {
            key: key.to_string(),
            ops_checked: ops.len(),
            steps: 0,
            outcome: KeyOutcome::Unknown,
        })
        .collect();
    // The searches of the keys still undecided; `None` once decided (its memo freed).
    let mut searches: Vec<Option<ResumableSearch<'_, RegisterModel>>> = keys
        .iter()
        .map(|(_, _, (ops, _))| Some(ResumableSearch::new(&RegisterModel, ops)))
        .collect();
    let mut limit = max_steps.min(FIRST_SLICE_STEPS);
    let mut violation = false;
    'turns: loop {
        for (((key, ids, (_, origin)), result), slot) in
            keys.iter().zip(per_key.iter_mut()).zip(searches.iter_mut())
        {
            let Some(searching) = slot else {
                continue;
            };
            let outcome = searching.resume(limit);
            result.steps = searching.steps();
            result.outcome = match outcome {
                SearchOutcome::Unknown { .. } => continue,
                SearchOutcome::Linearizable { .. } => KeyOutcome::Linearizable,
                SearchOutcome::NotLinearizable {
                    longest_prefix,
                    failed_op,
                } => KeyOutcome::Violation(Violation {
                    key: key.to_string(),
                    ops: ids.clone(),
                    longest_prefix: longest_prefix.iter().map(|&i| origin[i]).collect(),
                    failed_op: origin[failed_op],
                    shrunk: None,
                }),
            };
            *slot = None;
            if matches!(result.outcome, KeyOutcome::Violation(_)) {
                violation = true;
                break 'turns;
            }
        }
        if limit >= max_steps {
            break;
        }
        limit = limit.saturating_mul(10).min(max_steps);
    }
    if violation {
        for result in &mut per_key {
            if result.outcome == KeyOutcome::Unknown {
                result.outcome = KeyOutcome::Skipped;
            }
        }
    }
    let verdict = if violation {
        Verdict::NotLinearizable
    } else if per_key
        .iter()
        .any(|k| matches!(k.outcome, KeyOutcome::Unknown))
    {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    CheckReport {
        verdict,
        ops_checked: per_key.iter().map(|k| k.ops_checked).sum(),
        work: CheckWork {
            search_steps: per_key.iter().map(|k| k.steps).sum(),
            search_wall_time: WallTime(started.elapsed()),
            ..CheckWork::default()
        },
        per_key,
    }
}

/// A key's register operations and, for each, the [`OpId`] it came from.
type KeyOps = (Vec<ModelOp<RegisterInput, RegisterOutput>>, Vec<OpId>);

/// Shrinks the first violation of `report` (the one reports show), within
/// [`CheckOptions::shrink_limits`], and records the work in `report.work`. Does nothing if
/// there is no violation or it was already shrunk. The verdict is never changed: at the bound
/// the witness is simply less small.
pub fn shrink_first_violation(history: &History, report: &mut CheckReport, options: &CheckOptions) {
    let started = Instant::now();
    let Some(violation) = report
        .per_key
        .iter_mut()
        .find_map(|k| match &mut k.outcome {
            KeyOutcome::Violation(v) => Some(v),
            _ => None,
        })
    else {
        return;
    };
    if violation.shrunk.is_some() {
        return;
    }
    let (ops, origin) = register_ops(history, &violation.ops);
    // The search's proof, in positions of `ops`, so the shrinker does not search it again.
    let positions: std::collections::HashMap<OpId, usize> =
        origin.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let position = |id: OpId| positions.get(&id).copied();
    let prefix: Option<Vec<usize>> = violation
        .longest_prefix
        .iter()
        .map(|&id| position(id))
        .collect();
    let (Some(prefix), Some(failed)) = (prefix, position(violation.failed_op)) else {
        debug_assert!(false, "a violation's ops come from its key's ops");
        return;
    };
    let s = shrink(
        &RegisterModel,
        &ops,
        &prefix,
        failed,
        options.shrink_limits(),
    );
    violation.shrunk = Some(ShrunkViolation {
        ops: s.kept.iter().map(|&i| origin[i]).collect(),
        cut_seq: s.cut,
        longest_prefix: s.longest_prefix.iter().map(|&i| origin[i]).collect(),
        failed_op: origin[s.failed_op],
    });
    report.work.shrink_checks += s.checks;
    report.work.shrink_steps += s.steps;
    report.work.shrink_wall_time = WallTime(report.work.shrink_wall_time.0 + started.elapsed());
}

/// Converts one key's operations to register-model operations. Returns them with, for each,
/// the [`OpId`] it came from.
///
/// A value written but never observed (no successful read returns it, no compare-and-set
/// expects it) is interned as one shared [`UNOBSERVED`] value: every operation behaves the same
/// whichever unobserved value the register holds (a read or a cas expecting a value fails
/// against all of them alike), so the states are equivalent, and merging them lets the search's
/// memo recognise them as one. Unknown-outcome writes of it then have equal inputs, which the
/// search linearizes only in call order ([`Model::interchangeable`]): a history with dozens of
/// timed-out writes no one read is no longer a search through every subset of them.
pub fn register_ops(
    history: &History,
    ids: &[OpId],
) -> (Vec<ModelOp<RegisterInput, RegisterOutput>>, Vec<OpId>) {
    let mut observed: HashSet<&Value> = HashSet::new();
    for &id in ids {
        let op = &history.ops[id];
        match (&op.input, &op.outcome) {
            (_, Outcome::Failed { .. }) => {}
            (Input::Read, Outcome::Ok { read: Some(v) }) => {
                observed.insert(v);
            }
            (
                Input::Cas {
                    expected: Some(v), ..
                },
                _,
            ) => {
                observed.insert(v);
            }
            _ => {}
        }
    }
    let mut interner = Interner::default();
    let written = |v: &Value, interner: &mut Interner| {
        if observed.contains(v) {
            interner.intern(v)
        } else {
            UNOBSERVED
        }
    };
    let mut ops = Vec::with_capacity(ids.len());
    let mut origin = Vec::with_capacity(ids.len());
    for &id in ids {
        let op = &history.ops[id];
        let input = match &op.input {
            Input::Read => RegisterInput::Read,
            Input::Write(v) => RegisterInput::Write(written(v, &mut interner)),
            Input::Cas { expected, new } => RegisterInput::Cas {
                expected: expected.as_ref().map(|v| interner.intern(v)),
                new: written(new, &mut interner),
            },
        };
        let output = match (&op.outcome, input) {
            (Outcome::Failed { .. }, _) => continue,
            (Outcome::Unknown { .. }, RegisterInput::Read) => continue,
            (Outcome::Unknown { .. }, _) => None,
            (Outcome::CasMismatch, _) => Some(RegisterOutput::CasMismatch),
            (Outcome::Ok { read }, RegisterInput::Read) => Some(RegisterOutput::Read(
                read.as_ref().map(|v| interner.intern(v)),
            )),
            (Outcome::Ok { .. }, _) => Some(RegisterOutput::Done),
        };
        let model_op = match (output, op.complete_seq) {
            (Some(output), Some(ret)) => ModelOp::completed(op.invoke_seq, ret, input, output),
            _ => ModelOp::unknown(op.invoke_seq, input),
        };
        ops.push(model_op);
        origin.push(id);
    }
    (ops, origin)
}

/// The one value every written-but-never-observed value is interned as (see [`register_ops`]);
/// the interner never hands it out (it numbers values from 0).
pub const UNOBSERVED: ValueId = ValueId::MAX;

/// One independently checked part of a history for a model other than the register: a key's
/// operations (or the whole history, for a single object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition<I, O> {
    pub key: String,
    pub ops: Vec<ModelOp<I, O>>,
    /// The 1-based file line of each op's invocation, for reports.
    pub lines: Vec<usize>,
}

/// The result of [`check_partitions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionsReport {
    pub verdict: Verdict,
    /// One entry per partition, in the order given; after a violation, the partitions that
    /// follow it are left out (some were never searched).
    pub per_partition: Vec<PartitionResult>,
    pub ops_checked: usize,
}

/// The verdict for one [`Partition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionResult {
    pub key: String,
    /// Index of the partition in the slice given to [`check_partitions`].
    pub partition: usize,
    pub steps: u64,
    pub outcome: PartitionOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionOutcome {
    Linearizable,
    /// Indexes into the partition's `ops`, as in [`SearchOutcome::NotLinearizable`].
    Violation {
        longest_prefix: Vec<usize>,
        failed_op: usize,
    },
    Unknown,
}

/// Search iterations each key gets in the first turn of [`judge`] and [`check_partitions`].
pub const FIRST_SLICE_STEPS: u64 = 1_000;

/// Checks each partition against `model` with at most `max_steps_per_partition` search steps
/// each, stopping at the first violation: one proves the history is not linearizable, and
/// refuting every other failing partition can cost far more (Porcupine cancels the rest too).
///
/// Partitions take turns as keys do in [`judge`]: [`FIRST_SLICE_STEPS`] each, then ten times
/// more for those still undecided, each turn resuming its search where it stopped. Porcupine
/// checks partitions in parallel and the first to fail wins; turns give that effect
/// deterministically: in its c50-bad kv file, key "0" exhausts ten million steps while key "1"
/// fails in thousands. A linearizable history pays nothing extra; the memos of the partitions
/// still undecided are held at once.
pub fn check_partitions<M: Model>(
    model: &M,
    partitions: &[Partition<M::Input, M::Output>],
    max_steps_per_partition: u64,
) -> PartitionsReport {
    let mut per_partition: Vec<PartitionResult> = partitions
        .iter()
        .enumerate()
        .map(|(index, partition)| PartitionResult {
            key: partition.key.clone(),
            partition: index,
            steps: 0,
            outcome: PartitionOutcome::Unknown,
        })
        .collect();
    // The searches of the partitions still undecided; `None` once decided (its memo freed).
    let mut searches: Vec<Option<ResumableSearch<'_, M>>> = partitions
        .iter()
        .map(|partition| Some(ResumableSearch::new(model, &partition.ops)))
        .collect();
    let mut limit = max_steps_per_partition.min(FIRST_SLICE_STEPS);
    let mut violation = None;
    'turns: loop {
        for (index, partition) in partitions.iter().enumerate() {
            debug_assert_eq!(partition.ops.len(), partition.lines.len());
            let Some(searching) = &mut searches[index] else {
                continue;
            };
            let outcome = searching.resume(limit);
            let result = &mut per_partition[index];
            result.steps = searching.steps();
            result.outcome = match outcome {
                SearchOutcome::Unknown { .. } => continue,
                SearchOutcome::Linearizable { .. } => PartitionOutcome::Linearizable,
                SearchOutcome::NotLinearizable {
                    longest_prefix,
                    failed_op,
                } => {
                    violation = Some(index);
                    PartitionOutcome::Violation {
                        longest_prefix,
                        failed_op,
                    }
                }
            };
            searches[index] = None;
            if violation.is_some() {
                break 'turns;
            }
        }
        if limit >= max_steps_per_partition {
            break;
        }
        limit = limit.saturating_mul(10).min(max_steps_per_partition);
    }
    // Partitions after the violation were not necessarily searched: leave them out.
    if let Some(index) = violation {
        per_partition.truncate(index + 1);
    }
    let outcomes = || per_partition.iter().map(|r| &r.outcome);
    let verdict = if violation.is_some() {
        Verdict::NotLinearizable
    } else if outcomes().any(|o| *o == PartitionOutcome::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    let ops_checked = per_partition
        .iter()
        .map(|r| partitions[r.partition].ops.len())
        .sum();
    PartitionsReport {
        verdict,
        per_partition,
        ops_checked,
    }
}

/// Shrinks the violation of a [`check_partitions`] report (its last partition), within
/// [`CheckOptions::shrink_limits`]; `None` if the report has no violation. The step after the
/// verdict, as [`shrink_first_violation`] is for register histories: operation numbers in the
/// result index that partition's `ops`.
pub fn shrink_partition_violation<M>(
    model: &M,
    partitions: &[Partition<M::Input, M::Output>],
    report: &PartitionsReport,
    options: &CheckOptions,
) -> Option<(usize, crate::shrink::Shrunk)>
where
    M: Model,
    M::Input: Clone,
    M::Output: Clone,
{
    report
        .per_partition
        .iter()
        .find_map(|result| match &result.outcome {
            PartitionOutcome::Violation {
                longest_prefix,
                failed_op,
            } => {
                let ops = &partitions.get(result.partition)?.ops;
                let shrunk = shrink(
                    model,
                    ops,
                    longest_prefix,
                    *failed_op,
                    options.shrink_limits(),
                );
                Some((result.partition, shrunk))
            }
            _ => None,
        })
}
