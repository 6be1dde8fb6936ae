//! Shrinking a non-linearizable history to a smaller one that is still non-linearizable, so a
//! human can read the witness.
//!
//! Only transformations that *cannot turn a linearizable history into a non-linearizable one*
//! are used, so the shrunk history is a genuine witness of the original's violation (a naive
//! "drop any op while it still fails" is not: dropping the write a read observed makes any
//! history fail):
//! 1. **Cut after the failing op returns.** With `cut` = the return position of the op the
//!    search could not place, drop every op invoked after `cut` and turn every op still running
//!    at `cut` into an unknown-outcome op. Any linearization of the original, restricted to the
//!    ops linearized before `cut`, linearizes the cut history (ops finished by `cut` are among
//!    them; running ops may or may not have happened), so if the cut history fails, so did the
//!    original. Unknown-outcome observers (reads) are then dropped: they never constrain.
//! 2. **Drop observers.** An op that never changes the state ([`Model::is_observer`]: reads,
//!    cas mismatches) only adds constraints; removing it keeps every linearization valid. Tried
//!    greedily in chunks (halving, as in delta debugging), each removal kept only if the search
//!    still proves a violation within the step budget.
//!
//! Writes are never dropped.
//!
//! Bounded, deterministically, by [`ShrinkLimits`]: at most `max_checks` searches, and at most
//! `max_total_steps` search iterations summed over them (no clock), so shrinking a violation
//! never costs more than a stated multiple of finding it. At the bound it stops and returns
//! the smallest witness proven so far: at worst the history it was given, whose violation the
//! caller already proved (the verdict never waits for, nor depends on, shrinking).

use crate::model::Model;
use crate::search::{search, ModelOp, SearchOutcome};

/// How much work [`shrink`] may do. Both bounds count work, not time, so a shrink is
/// reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShrinkLimits {
    /// Searches (candidate sub-histories tried) at most.
    pub max_checks: usize,
    /// Search iterations per search at most (a search out of budget counts as "no violation
    /// proven": the candidate is not taken).
    pub max_steps_per_check: u64,
    /// Search iterations summed over all searches at most.
    pub max_total_steps: u64,
}

/// A smaller witness. Operation numbers index the slice given to [`shrink`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shrunk {
    /// Operations kept, ascending.
    pub kept: Vec<usize>,
    /// If set, kept operations returning after this position are treated as unknown-outcome.
    pub cut: Option<u64>,
    /// The deepest partial linearization of the shrunk history, in order.
    pub longest_prefix: Vec<usize>,
    /// The op that could not be placed after `longest_prefix` in the shrunk history.
    pub failed_op: usize,
    /// Searches run while shrinking.
    pub checks: usize,
    /// Search iterations used while shrinking, over all its searches.
    pub steps: u64,
}

/// Shrinks `ops`, proven non-linearizable by a search that reached `longest_prefix` and could
/// not place `failed_op` (as in [`SearchOutcome::NotLinearizable`]); that proof is reused, not
/// searched again. Always returns a witness: the smallest proven within `limits`, `ops` itself
/// if no smaller one was.
pub fn shrink<M>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    longest_prefix: &[usize],
    failed_op: usize,
    limits: ShrinkLimits,
) -> Shrunk
where
    M: Model,
    M::Input: Clone,
    M::Output: Clone,
{
    let mut shrinker = Shrinker {
        model,
        ops,
        cut: None,
        checks: 0,
        steps: 0,
        limits,
    };
    let mut kept: Vec<usize> = (0..ops.len()).collect();
    let mut verdict = (longest_prefix.to_vec(), failed_op);

    if let Some(cut) = ops[failed_op].ret() {
        let before_cut: Vec<usize> = kept
            .iter()
            .copied()
            .filter(|&i| ops[i].call <= cut)
            .filter(|&i| {
                let unknown_after_cut = ops[i].ret().is_none_or(|ret| ret > cut);
                !(unknown_after_cut && model.is_observer(&ops[i].input, None))
            })
            .collect();
        shrinker.cut = Some(cut);
        match shrinker.failure(&before_cut) {
            Some(found) => {
                kept = before_cut;
                verdict = found;
            }
            None => shrinker.cut = None,
        }
    }

    let mut chunk = kept.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < kept.len() && !shrinker.exhausted() {
            let end = (start + chunk).min(kept.len());
            let observers: Vec<usize> = kept[start..end]
                .iter()
                .copied()
                .filter(|&i| model.is_observer(&ops[i].input, shrinker.output(i)))
                .collect();
            if observers.is_empty() {
                start = end;
                continue;
            }
            let candidate: Vec<usize> = kept
                .iter()
                .copied()
                .filter(|i| !observers.contains(i))
                .collect();
            match shrinker.failure(&candidate) {
                Some(found) => {
                    kept = candidate;
                    verdict = found;
                    // `start` now points at the ops after the removed ones.
                    start = end - observers.len();
                }
                None => start = end,
            }
        }
        if chunk == 1 || shrinker.exhausted() {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let (longest_prefix, failed) = verdict;
    debug_assert!(shrinker.checks <= limits.max_checks);
    debug_assert!(shrinker.steps <= limits.max_total_steps);
    Shrunk {
        longest_prefix: longest_prefix.iter().map(|&i| kept[i]).collect(),
        failed_op: kept[failed],
        kept,
        cut: shrinker.cut,
        checks: shrinker.checks,
        steps: shrinker.steps,
    }
}

struct Shrinker<'a, M: Model> {
    model: &'a M,
    ops: &'a [ModelOp<M::Input, M::Output>],
    cut: Option<u64>,
    checks: usize,
    steps: u64,
    limits: ShrinkLimits,
}

impl<M> Shrinker<'_, M>
where
    M: Model,
    M::Input: Clone,
    M::Output: Clone,
{
    /// The output of op `i` in the (possibly cut) history.
    fn output(&self, i: usize) -> Option<&M::Output> {
        let op = &self.ops[i];
        match (op.ret(), self.cut) {
            (Some(ret), Some(cut)) if ret > cut => None,
            _ => op.output(),
        }
    }

    /// Whether either bound is used up.
    fn exhausted(&self) -> bool {
        self.checks >= self.limits.max_checks || self.steps >= self.limits.max_total_steps
    }

    /// Searches the sub-history `kept`; `Some((prefix, failed))`, in positions of `kept`, if it
    /// is proven non-linearizable. `None` once the limits are used up.
    fn failure(&mut self, kept: &[usize]) -> Option<(Vec<usize>, usize)> {
        if self.exhausted() {
            return None;
        }
        self.checks += 1;
        let budget = self
            .limits
            .max_steps_per_check
            .min(self.limits.max_total_steps - self.steps);
        let sub: Vec<ModelOp<M::Input, M::Output>> = kept
            .iter()
            .map(|&i| {
                let op = &self.ops[i];
                match self.output(i) {
                    Some(_) => op.clone(),
                    None => ModelOp::unknown(op.call, op.input.clone()),
                }
            })
            .collect();
        let searched = search(self.model, &sub, budget);
        self.steps += searched.steps;
        match searched.outcome {
            SearchOutcome::NotLinearizable {
                longest_prefix,
                failed_op,
            } => Some((longest_prefix, failed_op)),
            SearchOutcome::Linearizable { .. } | SearchOutcome::Unknown { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RegisterInput as In, RegisterModel, RegisterOutput as Out};

    #[test]
    fn keeps_writes_and_drops_irrelevant_reads() {
        // w1; many reads of 1; a write of 2 that a later read contradicts by seeing 1.
        let mut ops = vec![ModelOp::completed(0, 1, In::Write(1), Out::Done)];
        for i in 0..20 {
            ops.push(ModelOp::completed(
                2 + 2 * i,
                3 + 2 * i,
                In::Read,
                Out::Read(Some(1)),
            ));
        }
        ops.push(ModelOp::completed(100, 101, In::Write(2), Out::Done));
        ops.push(ModelOp::completed(102, 103, In::Read, Out::Read(Some(1))));
        ops.push(ModelOp::completed(104, 105, In::Read, Out::Read(Some(2))));
        let (prefix, failed) = match search(&RegisterModel, &ops, 10_000).outcome {
            SearchOutcome::NotLinearizable {
                longest_prefix,
                failed_op,
            } => (longest_prefix, failed_op),
            other => panic!("{other:?}"),
        };
        assert_eq!(failed, 22);
        let limits = ShrinkLimits {
            max_checks: 100,
            max_steps_per_check: 10_000,
            max_total_steps: 100_000,
        };
        let shrunk = shrink(&RegisterModel, &ops, &prefix, failed, limits);
        assert_eq!(shrunk.kept, vec![0, 21, 22]);
        assert_eq!(shrunk.cut, Some(103));
        assert_eq!(shrunk.failed_op, 22);
        assert_eq!(shrunk.longest_prefix, vec![0, 21]);
    }
}
