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
//! Writes are never dropped. Bounded by `max_checks` searches of at most `max_steps` each.

use crate::model::Model;
use crate::search::{search, ModelOp, SearchOutcome};

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
}

/// Shrinks `ops`, known to be non-linearizable with `failed_op` the op that could not be
/// placed. Returns `None` if not even the starting point could be re-proven within budget.
pub fn shrink<M>(
    model: &M,
    ops: &[ModelOp<M::Input, M::Output>],
    failed_op: usize,
    max_checks: usize,
    max_steps: u64,
) -> Option<Shrunk>
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
        max_checks,
        max_steps,
    };
    let mut kept: Vec<usize> = (0..ops.len()).collect();
    let mut verdict = shrinker.failure(&kept)?;

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
        while start < kept.len() && shrinker.checks < max_checks {
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
        if chunk == 1 || shrinker.checks >= max_checks {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let (longest_prefix, failed) = verdict;
    Some(Shrunk {
        longest_prefix: longest_prefix.iter().map(|&i| kept[i]).collect(),
        failed_op: kept[failed],
        kept,
        cut: shrinker.cut,
        checks: shrinker.checks,
    })
}

struct Shrinker<'a, M: Model> {
    model: &'a M,
    ops: &'a [ModelOp<M::Input, M::Output>],
    cut: Option<u64>,
    checks: usize,
    max_checks: usize,
    max_steps: u64,
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

    /// Searches the sub-history `kept`; `Some((prefix, failed))`, in positions of `kept`, if it
    /// is proven non-linearizable.
    fn failure(&mut self, kept: &[usize]) -> Option<(Vec<usize>, usize)> {
        if self.checks >= self.max_checks {
            return None;
        }
        self.checks += 1;
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
        match search(self.model, &sub, self.max_steps).outcome {
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
        let failed = match search(&RegisterModel, &ops, 10_000).outcome {
            SearchOutcome::NotLinearizable { failed_op, .. } => failed_op,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed, 22);
        let shrunk = shrink(&RegisterModel, &ops, failed, 100, 10_000).unwrap();
        assert_eq!(shrunk.kept, vec![0, 21, 22]);
        assert_eq!(shrunk.cut, Some(103));
        assert_eq!(shrunk.failed_op, 22);
        assert_eq!(shrunk.longest_prefix, vec![0, 21]);
    }
}
