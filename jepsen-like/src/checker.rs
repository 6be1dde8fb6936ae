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
//! Per-key verdicts are deterministic: the search is bounded by a step budget, not a clock, so
//! the same history and options always give the same report. Timing is the caller's business.

use crate::history::{History, Input, OpId, Outcome};
use crate::model::{Interner, RegisterInput, RegisterModel, RegisterOutput};
use crate::search::{search, ModelOp, SearchOutcome};
use crate::shrink::shrink;

/// Knobs for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search iterations allowed per key before giving up with [`KeyOutcome::Unknown`].
    pub max_steps_per_key: u64,
    /// Shrink each violation to a smaller witness (see `crate::shrink`).
    pub shrink: bool,
    /// Searches the shrinker may run per violating key.
    pub max_shrink_checks: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: 10_000_000,
            shrink: true,
            max_shrink_checks: 200,
        }
    }
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
    /// A smaller witness, if shrinking was asked for and succeeded.
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

/// Checks every key of `history`.
pub fn check(history: &History, options: &CheckOptions) -> CheckReport {
    let mut per_key = Vec::new();
    let mut ops_checked = 0;
    for (key, ids) in history.by_key() {
        let result = check_key(history, key, &ids, options);
        ops_checked += result.ops_checked;
        per_key.push(result);
    }
    let verdict = if per_key
        .iter()
        .any(|k| matches!(k.outcome, KeyOutcome::Violation(_)))
    {
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
        per_key,
        ops_checked,
    }
}

/// Converts one key's operations to register-model operations. Returns them with, for each,
/// the [`OpId`] it came from.
pub fn register_ops(
    history: &History,
    ids: &[OpId],
) -> (Vec<ModelOp<RegisterInput, RegisterOutput>>, Vec<OpId>) {
    let mut interner = Interner::default();
    let mut ops = Vec::with_capacity(ids.len());
    let mut origin = Vec::with_capacity(ids.len());
    for &id in ids {
        let op = &history.ops[id];
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

fn check_key(history: &History, key: &str, ids: &[OpId], options: &CheckOptions) -> KeyResult {
    let (ops, origin) = register_ops(history, ids);
    let result = search(&RegisterModel, &ops, options.max_steps_per_key);
    let outcome = match result.outcome {
        SearchOutcome::Linearizable { .. } => KeyOutcome::Linearizable,
        SearchOutcome::Unknown { .. } => KeyOutcome::Unknown,
        SearchOutcome::NotLinearizable {
            longest_prefix,
            failed_op,
        } => {
            let shrunk = if options.shrink {
                shrink(
                    &RegisterModel,
                    &ops,
                    failed_op,
                    options.max_shrink_checks,
                    options.max_steps_per_key,
                )
                .map(|s| ShrunkViolation {
                    ops: s.kept.iter().map(|&i| origin[i]).collect(),
                    cut_seq: s.cut,
                    longest_prefix: s.longest_prefix.iter().map(|&i| origin[i]).collect(),
                    failed_op: origin[s.failed_op],
                })
            } else {
                None
            };
            KeyOutcome::Violation(Violation {
                key: key.to_string(),
                ops: ids.to_vec(),
                longest_prefix: longest_prefix.iter().map(|&i| origin[i]).collect(),
                failed_op: origin[failed_op],
                shrunk,
            })
        }
    };
    KeyResult {
        key: key.to_string(),
        ops_checked: ops.len(),
        steps: result.steps,
        outcome,
    }
}
